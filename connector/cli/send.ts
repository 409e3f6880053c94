import { randomBytes } from "node:crypto";
import { copyFile, readFile, rename, stat, writeFile } from "node:fs/promises";
import { Limits } from "../../wire/index.ts";
import { ProgressBars } from "../transfer/progress.ts";
import { basename, join } from "node:path";
import { loadConfig, type ChannelConfig } from "../config/config.ts";
import { Connector } from "../core/connector.ts";
import { silentLogger } from "../core/log.ts";
import { SpoolError } from "../spool/spool.ts";
import { CliError } from "./admin-client.ts";

export type SendResult = { channel: string; via: "spool" | "outbox" | "ingress"; id: string | null; seq: number | null; accepted: boolean };

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

/** The running connector owns the spool: hand the message to it the way an application would. */
async function handOver(ch: ChannelConfig, what: Input, name: string, contentType: string | undefined): Promise<SendResult> {
  if (ch.protocol === "file" && ch.outbox) {
    const tmp = join(ch.outbox, `.ferry-send-${randomBytes(6).toString("hex")}.tmp`);
    if ("file" in what) await copyFile(what.file, tmp);
    else await writeFile(tmp, what.body);
    await rename(tmp, join(ch.outbox, name));
    return { channel: ch.name, via: "outbox", id: null, seq: null, accepted: false };
  }
  if (ch.protocol === "http" && ch.listen) {
    if ("file" in what && what.size > Limits.MAX_INLINE_PAYLOAD) {
      throw new CliError(`${what.file} is ${what.size} bytes; a running connector's http ingress takes at most ${Limits.MAX_INLINE_PAYLOAD}: send large files through a file channel's outbox, or stop the connector and send again`, 2);
    }
    const body = "file" in what ? await readInput(what.file) : what.body;
    const res = await fetch(`http://${ch.listen}/`, { method: "POST", body, headers: { "ferry-filename": name, ...(contentType ? { "content-type": contentType } : {}) } });
    const j = (await res.json()) as { id?: string; seq?: number; detail?: string };
    if (!res.ok) throw new CliError(`the running connector refused the message: ${j.detail ?? res.status}`);
    return { channel: ch.name, via: "ingress", id: j.id ?? null, seq: j.seq ?? null, accepted: false };
  }
  throw new CliError(`channel '${ch.name}' has no outbox or listen address, and a running connector holds the spool; stop it, or add an outbox/listen to the channel`);
}

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
  let connector: Connector;
  try {
    connector = await Connector.open({ stateDir: cfg.state, log: silentLogger, ...(cfg.edges ? { edges: cfg.edges } : {}) });
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
    const accepted = new Promise<boolean>((resolve) => {
      const check = () => {
        if (connector.spool.acked(ch.name) >= rec.seq) resolve(true);
      };
      connector.on("accepted", check);
      check();
      setTimeout(() => resolve(false), opts.timeoutMs).unref();
    });
    connector.start();
    return { channel: ch.name, via: "spool", id: rec.id, seq: rec.seq, accepted: await accepted };
  } finally {
    await connector.stop();
  }
}
