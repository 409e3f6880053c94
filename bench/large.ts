/**
 * A large file through the file channel, with the connectors as real
 * processes (`ferry connector run --config`, on the machine's own Node, as
 * at a site): the file is written beside the outbox, moved in atomically,
 * and timed until it is complete in the receiver's inbox; its SHA-256 is
 * checked. Peak RSS of each connector process and of workerd.
 */
import { createHash, randomBytes } from "node:crypto";
import { createReadStream, createWriteStream, readdirSync, statSync } from "node:fs";
import { mkdir, mkdtemp, rename, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { once } from "node:events";
import type { LocalEdge } from "../test/helpers/edge.ts";
import { ROOT } from "../test/helpers/edge.ts";
import { ConnectorProcess } from "../test/helpers/cli.ts";
import { addConnector, api, type Place } from "./ferry.ts";
import { MIB } from "./config.ts";
import { PeakWatch, peakRssMiB, removeQuietly, workerdOf } from "./proc.ts";
import type { Sample } from "./stats.ts";

/** Writes `bytes` of random data to `file` in 1 MiB chunks; returns its SHA-256. */
async function randomFile(file: string, bytes: number): Promise<string> {
  const hash = createHash("sha256");
  const out = createWriteStream(file);
  for (let left = bytes; left > 0; left -= MIB) {
    const chunk = randomBytes(Math.min(MIB, left));
    hash.update(chunk);
    if (!out.write(chunk)) await once(out, "drain");
  }
  out.end();
  await once(out, "finish");
  return hash.digest("hex");
}

async function sha256(file: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest("hex");
}

/** The CLI bundle is built on install; a bundle older than the connector sources runs stale code. */
export function staleBundle(): string | null {
  const built = statSync(join(ROOT, "dist", "ferry.mjs"), { throwIfNoEntry: false })?.mtimeMs ?? 0;
  const newest = (dir: string): number => {
    let t = 0;
    for (const e of readdirSync(join(ROOT, dir), { withFileTypes: true, recursive: true })) {
      if (e.isFile() && e.name.endsWith(".ts")) t = Math.max(t, statSync(join(e.parentPath, e.name)).mtimeMs);
    }
    return t;
  };
  const src = Math.max(newest("connector"), newest("wire"));
  return src > built ? "dist/ferry.mjs is older than connector/ or wire/ sources: run `npm run build` first" : null;
}

const firstError = (p: ConnectorProcess) => p.lines.find((l) => l.level === "error" || l.level === "fatal");

/**
 * `relay`: the receiver takes relays (the default: while it is online the
 * payload goes straight to its disk, D19); false: it declines them, so the
 * payload is stored in the edge's R2 and fetched from there.
 */
export async function ferryLarge(edge: LocalEdge, place: Place, tag: string, megabytes: number, relay = true): Promise<Sample> {
  const bytes = Math.round(megabytes * MIB);
  await mkdir(place.root, { recursive: true });
  const dir = await mkdtemp(join(place.root, `${tag}-`));
  const procs: ConnectorProcess[] = [];
  try {
    for (const side of ["a", "b"]) {
      await addConnector(edge, `${tag}-${side}`, join(dir, `${side}-state`));
      await writeFile(
        join(dir, `${side}.toml`),
        `state = "./${side}-state"\nlog = "json"\n${relay ? "" : "relay = false\n"}\n[[channels]]\nname = "files"\nprotocol = "file"\noutbox = "./${side}-out"\ninbox = "./${side}-in"\npoll_ms = 50\n`,
      );
    }
    await api(edge, "POST", "/api/routes", { source: `${tag}-a/files`, destination: `${tag}-b/files` });
    for (const side of ["a", "b"]) procs.push(new ConnectorProcess(join(dir, `${side}.toml`), { FERRY_LOG_LEVEL: "info" }));
    await Promise.all(procs.map((p) => p.connected()));
    const [sender, receiver] = procs as [ConnectorProcess, ConnectorProcess];

    const name = `large-${megabytes}MiB.bin`;
    const staged = join(dir, `.${name}.tmp`);
    const digest = await randomFile(staged, bytes);
    const watch = new PeakWatch(() => workerdOf(edge.stateDir));
    const t0 = performance.now();
    await rename(staged, join(dir, "a-out", name));
    const arrived = join(dir, "b-in", name);
    // Bound: a slow 2 MB/s plus a minute; an error logged by either connector ends it at once.
    const deadline = Date.now() + 60_000 + bytes / (2 * 1e6) * 1000;
    for (;;) {
      const s = await stat(arrived).catch(() => null);
      if (s && s.size === bytes) break;
      for (const p of procs) {
        const err = firstError(p);
        if (err) throw new Error(`${p === sender ? "sender" : "receiver"} logged: ${String(err.msg)}${err.size ? ` (size ${String(err.size)}, limit ${String(err.limit)})` : ""}`);
        if (p.proc.exitCode !== null) throw new Error(`${p === sender ? "sender" : "receiver"} exited ${p.proc.exitCode}`);
      }
      if (Date.now() > deadline) throw new Error(`not complete in the inbox after ${Math.round((performance.now() - t0) / 1000)} s`);
      await new Promise((r) => setTimeout(r, 20));
    }
    const secs = (performance.now() - t0) / 1000;
    const rss = { sender: peakRssMiB(sender.proc.pid as number), receiver: peakRssMiB(receiver.proc.pid as number), workerd: watch.stop() };
    if ((await sha256(arrived)) !== digest) throw new Error("SHA-256 of the delivered file differs from the original");
    return { rate: bytes / MIB / secs, rssMiB: rss, extra: { seconds: secs, megabytes } };
  } finally {
    await Promise.allSettled(procs.map((p) => p.stop()));
    await removeQuietly(dir);
  }
}
