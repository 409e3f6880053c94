import { randomBytes } from "node:crypto";
import { copyFile, link, readFile, stat, unlink, writeFile } from "node:fs/promises";
import { ErrorCode, Limits, type ErrorFrame } from "../../wire/index.ts";
import { ProgressBars } from "../transfer/progress.ts";
import { basename, join } from "node:path";
import { loadConfig, type ChannelConfig, type FileChannelConfig } from "../config/config.ts";
import { Connector } from "../core/connector.ts";
import { fsyncPath } from "../core/durable-fs.ts";
import type { Logger } from "../core/log.ts";
import { SpoolError } from "../spool/spool.ts";
import { CliError } from "./admin-client.ts";

export type SendResult = {
  channel: string;
  via: "spool" | "outbox" | "ingress";
  id: string | null;
  seq: number | null;
  accepted: boolean;
  /** The file name the message carries: through an outbox, "NAME (1)" when NAME was still waiting there. */
  name: string;
  /** The name asked for, when another was used. */
  renamedFrom?: string;
  /** Not accepted: why, as far as this process could tell (the edge's answer, or the connection's failure). */
  reason?: string;
  /** Not accepted: the edge's error code (NO_ROUTE, FORBIDDEN...), or NOT_CONNECTED, or TIMEOUT. */
  code?: string;
  /** The edge's last error frame about this message's channel, code and message as the edge sent them. */
  edgeError?: { code: string; message: string };
};

/** One line for a person; `--json` prints the SendResult itself. */
export function describeSend(r: SendResult): string {
  const as = r.renamedFrom ? `as '${r.name}' ('${r.renamedFrom}' was still waiting to be sent)` : `as '${r.name}'`;
  switch (r.via) {
    case "spool":
      return r.accepted
        ? `sent: message ${r.id} seq ${r.seq} on ${r.channel} ${as}`
        : `captured, not yet accepted by the edge: ${r.reason ?? "no answer"}\nmessage ${r.id} seq ${r.seq} on ${r.channel} stays in the spool and goes with the next run`;
    case "outbox":
      return `handed to the running connector through its outbox ${as}`;
    case "ingress":
      return `handed to the running connector through its ingress ${as}${r.id ? `, message ${r.id}` : ""}`;
  }
}

async function readInput(file: string | undefined): Promise<Buffer> {
  if (!file || file === "-") {
    const chunks: Buffer[] = [];
    for await (const c of process.stdin) chunks.push(c as Buffer);
    return Buffer.concat(chunks);
  }
  return readFile(file).catch((e: NodeJS.ErrnoException) => {
    throw new CliError(`cannot read ${file}: ${e.code ?? e.message}`, 2);
  });
}

/** A file given by path is never read whole: it is captured (or copied into an outbox) from disk. */
type Input = { file: string; size: number } | { body: Buffer };

async function input(file: string | undefined): Promise<Input> {
  if (!file || file === "-") return { body: await readInput(file) };
  const st = await stat(file).catch((e: NodeJS.ErrnoException) => {
    throw new CliError(`cannot read ${file}: ${e.code ?? e.message}`, 2);
  });
  if (!st.isFile()) throw new CliError(`${file} is not a regular file`, 2);
  return { file, size: st.size };
}

/** Names the outbox scanner passes over (files still being written): a file handed over under one would never be sent. */
function checkOutboxName(name: string): void {
  if (name.includes("/") || name.includes("\\")) throw new CliError(`--name: '${name}' is a path; give a file name (the outbox is flat here)`, 2);
  if (name.startsWith(".") || /\.(tmp|part|done)$/i.test(name)) {
    throw new CliError(`--name: the outbox passes over names starting with '.' or ending in .tmp, .part or .done (files still being written), so '${name}' would never be sent; choose another --name`, 2);
  }
}

/** "report.csv" -> "report (1).csv": the same rule as the inbox's collision suffix. */
function suffixed(name: string, i: number): string {
  const dot = name.lastIndexOf(".");
  return dot > 0 ? `${name.slice(0, dot)} (${i})${name.slice(dot)}` : `${name} (${i})`;
}

/**
 * Into a running connector's outbox, never replacing a file that waits
 * there: a rename would silently replace a pending file of the same name
 * (that message lost), so the complete, fsynced temporary file is hard-linked
 * to its name (link fails with EEXIST instead of replacing) and then
 * unlinked. A taken name gets the inbox's suffix: NAME (1), NAME (2)...
 */
async function intoOutbox(ch: FileChannelConfig, outbox: string, what: Input, name: string): Promise<string> {
  checkOutboxName(name);
  const tmp = join(outbox, `.ferry-send-${randomBytes(6).toString("hex")}.tmp`);
  try {
    if ("file" in what) await copyFile(what.file, tmp);
    else await writeFile(tmp, what.body);
    // Complete on disk before it has a name the connector picks up.
    await fsyncPath(tmp);
    for (let i = 0; i <= 10_000; i++) {
      const candidate = i === 0 ? name : suffixed(name, i);
      try {
        await link(tmp, join(outbox, candidate));
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === "EEXIST") continue;
        if (code === "EPERM" || code === "ENOTSUP" || code === "EOPNOTSUPP") {
          throw new CliError(`the outbox ${outbox} is on a file system without hard links, so the message cannot be handed over without risking a file of the same name; stop the connector and send again (it then captures directly), or write the file there yourself under a temporary name and rename it`);
        }
        throw e;
      }
      // The done-marker rule sends X once X.done exists: the file is whole, say so.
      if (ch.pickup === "done-marker") await writeFile(join(outbox, `${candidate}.done`), "");
      return candidate;
    }
    throw new CliError(`'${name}' and its suffixed names up to '${suffixed(name, 10_000)}' all wait in ${outbox}; is the connector picking up files?`);
  } finally {
    await unlink(tmp).catch(() => undefined);
    await fsyncPath(outbox).catch(() => undefined);
  }
}

/** The running connector owns the spool: hand the message to it the way an application would. */
async function handOver(ch: ChannelConfig, what: Input, name: string, contentType: string | undefined): Promise<SendResult> {
  if (ch.protocol === "file" && ch.outbox) {
    const used = await intoOutbox(ch, ch.outbox, what, name);
    return { channel: ch.name, via: "outbox", id: null, seq: null, accepted: false, name: used, ...(used !== name ? { renamedFrom: name } : {}) };
  }
  if (ch.protocol === "http" && ch.listen) {
    if ("file" in what && what.size > Limits.MAX_INLINE_PAYLOAD) {
      throw new CliError(`${what.file} is ${what.size} bytes; a running connector's http ingress takes at most ${Limits.MAX_INLINE_PAYLOAD}: send large files through a file channel's outbox, or stop the connector and send again`, 2);
    }
    const body = "file" in what ? await readInput(what.file) : what.body;
    const res = await fetch(`http://${ch.listen}/`, { method: "POST", body, headers: { "ferry-filename": name, ...(contentType ? { "content-type": contentType } : {}) } });
    const j = (await res.json()) as { id?: string; seq?: number; detail?: string };
    if (!res.ok) throw new CliError(`the running connector refused the message: ${j.detail ?? res.status}`);
    return { channel: ch.name, via: "ingress", id: j.id ?? null, seq: j.seq ?? null, accepted: false, name };
  }
  throw new CliError(`channel '${ch.name}' has no outbox or listen address, and a running connector holds the spool; stop it, or add an outbox/listen to the channel`);
}

/** Edge answers that waiting will not change: someone has to add a route or a permission. */
const NEEDS_AN_ADMIN = new Set<string>([ErrorCode.NO_ROUTE, ErrorCode.FORBIDDEN]);

/**
 * `ferry connector send`: a one-off send from the shell. With no connector
 * running on this state folder it captures into the spool itself, connects,
 * and waits until the edge has accepted the message (or the timeout passes:
 * the message then stays captured and goes with the next run). With one
 * running, it hands the message to it through the channel's outbox or
 * ingress.
 */
export async function sendOnce(opts: { config: string; channel: string; file?: string; name?: string; contentType?: string; timeoutMs: number }): Promise<SendResult> {
  const cfg = await loadConfig(opts.config);
  const ch = cfg.channels.find((c) => c.name === opts.channel);
  if (!ch) throw new CliError(`--channel: '${opts.channel}' is not in ${opts.config} (channels: ${cfg.channels.map((c) => c.name).join(", ")})`, 2);
  const what = await input(opts.file);
  const name = opts.name ?? (opts.file && opts.file !== "-" ? basename(opts.file) : `message-${Date.now()}.bin`);
  // Quiet, except that the last connection problem is kept: it is the reason when nothing was accepted.
  let problem: string | null = null;
  const log: Logger = (level, msg, fields = {}) => {
    if (level !== "warn" && level !== "error") return;
    const why = fields.detail ?? fields.error ?? fields.reason;
    problem = `${msg}${fields.edge ? ` (${String(fields.edge)})` : ""}${fields.status ? `: HTTP ${String(fields.status)}` : ""}${why ? `: ${String(why)}` : ""}`;
  };
  let connector: Connector;
  try {
    connector = await Connector.open({ stateDir: cfg.state, log, ...(cfg.edges ? { edges: cfg.edges } : {}) });
  } catch (e) {
    if (e instanceof SpoolError && e.code === "LOCKED") return handOver(ch, what, name, opts.contentType);
    throw e;
  }
  try {
    const meta = { contentType: opts.contentType ?? "application/octet-stream", fields: { filename: name } };
    const rec = "file" in what ? await connector.sendFile(ch.name, what.file, meta) : await connector.send(ch.name, what.body, meta);
    if (process.stderr.isTTY) {
      const bars = new ProgressBars(process.stderr);
      connector.on("transfer", (p) => bars.update(p));
    }
    let edgeError: ErrorFrame | null = null;
    let connected = false;
    type Outcome = { accepted: true } | { accepted: false; code: string; reason: string };
    const outcome = new Promise<Outcome>((resolve) => {
      const timers: NodeJS.Timeout[] = [];
      const finish = (r: Outcome) => {
        for (const t of timers) clearTimeout(t);
        resolve(r);
      };
      const check = () => {
        if (connector.spool.acked(ch.name) >= rec.seq) finish({ accepted: true });
      };
      connector.on("accepted", check);
      connector.on("connected", () => (connected = true));
      // The edge says why it did not take the message (NO_ROUTE, FORBIDDEN...): that is the answer to print.
      connector.on("edgeError", (f) => {
        if (f.ch !== ch.name && f.id !== rec.id) return;
        edgeError = f;
        if (NEEDS_AN_ADMIN.has(f.code)) finish({ accepted: false, code: f.code, reason: `the edge answered ${f.code}: ${f.message}` });
      });
      // Usually the edge is not even asked: the connector sends nothing on a
      // channel its freshly fetched routes do not list (fail closed), so the
      // edge's config is the answer, with the same code the edge would give.
      connector.on("config", () => {
        if (connector.policies.current && !connector.policies.sending(connector.name, ch.name)) {
          const source = `${connector.name}/${ch.name}`;
          finish({ accepted: false, code: ErrorCode.NO_ROUTE, reason: `NO_ROUTE: the edge has no route from ${source} yet; an administrator adds one with 'ferry admin route add ${source} CONNECTOR/CHANNEL'` });
        }
      });
      // Revoked (a fatal close): waiting longer changes nothing.
      timers.push(
        setInterval(() => {
          const fatal = connector.status().fatal;
          if (fatal) finish({ accepted: false, code: "UNAUTHORIZED", reason: `the edge ended this connector's session for good (${fatal.code} ${fatal.reason}); ask an administrator` });
        }, 250),
      );
      timers.push(
        setTimeout(() => {
          const last = edgeError as ErrorFrame | null;
          const seconds = Math.round(opts.timeoutMs / 1000);
          const why = problem as string | null;
          finish(
            last
              ? { accepted: false, code: last.code, reason: `the edge answered ${last.code}: ${last.message}` }
              : connected
                ? { accepted: false, code: "TIMEOUT", reason: `the edge did not confirm it within ${seconds} s${why ? ` (last: ${why})` : ""}` }
                : { accepted: false, code: "NOT_CONNECTED", reason: `no connection to the edge within ${seconds} s${why ? ` (last problem: ${why})` : ""}` },
          );
        }, opts.timeoutMs),
      );
      check();
    });
    connector.start();
    const r = await outcome;
    const last = edgeError as ErrorFrame | null;
    return {
      channel: ch.name,
      via: "spool",
      id: rec.id,
      seq: rec.seq,
      accepted: r.accepted,
      name,
      ...(r.accepted ? {} : { reason: r.reason, code: r.code }),
      ...(last && !r.accepted ? { edgeError: { code: last.code, message: last.message } } : {}),
    };
  } finally {
    await connector.stop();
  }
}
