import { createHash } from "node:crypto";
import { spawnSync } from "node:child_process";
import { mkdir, mkdtemp, readdir, readFile, rename, rm, stat, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LocalEdge } from "../helpers/edge.ts";
import { ConnectorProcess, ferry } from "../helpers/cli.ts";
import { ChaosProxy } from "../helpers/proxy.ts";
import { waitFor } from "../helpers/wait.ts";
import { makeFile, sha256File } from "../helpers/files.ts";
import { peakRssMiB } from "../../bench/proc.ts";

const MiB = 1024 * 1024;
const CHUNK = 8 * MiB;
/** "Hundreds of MiB": big enough that holding it in memory would show in a connector's peak RSS. */
const BIG = Number(process.env.FERRY_E2E_BIG_MB ?? 256) * MiB;

type Line = Record<string, unknown>;
/** `relay: false`: the receiver declines relays, so payloads go through the edge's store (R2) even while it is online. */
type PairOptions = { inbox?: string; route?: string[]; relay?: boolean };
const progress = (p: ConnectorProcess, msg: string, id?: string) => p.lines.filter((l) => l.msg === msg && (!id || l.id === id)) as (Line & { have: number; parts: number; part: number })[];

/**
 * A sender and a receiver, each reaching the edge through its own proxy, so
 * a test can cut the upload's link or the download's link alone.
 */
class Pair {
  a!: ConnectorProcess;
  b!: ConnectorProcess;
  readonly aProxy: ChaosProxy;
  readonly bProxy: ChaosProxy;

  constructor(
    readonly dir: string,
    edge: LocalEdge,
    readonly inbox: string,
  ) {
    this.aProxy = new ChaosProxy({ host: "127.0.0.1", port: edge.port });
    this.bProxy = new ChaosProxy({ host: "127.0.0.1", port: edge.port });
  }

  static async create(edge: LocalEdge, env: Record<string, string>, tag: string, opts: PairOptions = {}): Promise<Pair> {
    const dir = await mkdtemp(join(tmpdir(), `ferry-large-${tag}-`));
    const p = new Pair(dir, edge, opts.inbox ?? join(dir, "b-in"));
    await p.aProxy.listen();
    await p.bProxy.listen();
    for (const side of ["a", "b"] as const) {
      const add = ferry(["admin", "connector", "add", `${tag}-${side}`, "--json"], env);
      expect(add.code, add.stderr).toBe(0);
      const token = (JSON.parse(add.stdout) as { enrolToken: string }).enrolToken;
      const enrol = ferry(["connector", "enroll", "--edge", edge.url, "--token", token, "--state", join(dir, `${side}-state`), "--json"], env);
      expect(enrol.code, enrol.stderr).toBe(0);
      const proxy = side === "a" ? p.aProxy : p.bProxy;
      const box = side === "a" ? `outbox = "./a-out"` : `inbox = "${p.inbox}"`;
      await writeFile(
        join(dir, `${side}.toml`),
        `state = "./${side}-state"\nlog = "json"\nedges = ["${proxy.url}"]\nheartbeat_seconds = 2\n${side === "b" && opts.relay === false ? "relay = false\n" : ""}\n[[channels]]\nname = "files"\nprotocol = "file"\n${box}\npoll_ms = 50\n`,
      );
    }
    const route = ferry(["admin", "route", "add", `${tag}-a/files`, `${tag}-b/files`, ...(opts.route ?? []), "--json"], env);
    expect(route.code, route.stderr).toBe(0);
    await p.startA();
    await p.startB();
    return p;
  }

  async startA(): Promise<void> {
    this.a = new ConnectorProcess(join(this.dir, "a.toml"));
    await this.a.connected();
  }

  async startB(): Promise<void> {
    this.b = new ConnectorProcess(join(this.dir, "b.toml"));
    await this.b.connected();
  }

  /** Drops a file the way applications should: written elsewhere, renamed in. */
  async drop(name: string, size: number): Promise<string> {
    await mkdir(join(this.dir, "a-out"), { recursive: true });
    const tmp = join(this.dir, "a-out", `.${name}.tmp`);
    const sha = await makeFile(tmp, size);
    await rename(tmp, join(this.dir, "a-out", name));
    return sha;
  }

  async arrived(name: string, size: number, timeoutMs = 120_000): Promise<string> {
    const path = join(this.inbox, name);
    try {
      await waitFor(`${name} (${size} bytes) in B's inbox`, async () => (await stat(path).catch(() => null))?.size === size, timeoutMs, 100);
    } catch (e) {
      // What each side last said is what explains a transfer that did not finish.
      const tail = (c: ConnectorProcess) => c.lines.filter((l) => !String(l.msg).endsWith("progress") && l.msg !== "chunk sent").slice(-8).map((l) => JSON.stringify(l)).join("\n");
      throw new Error(`${(e as Error).message}\n--- A:\n${tail(this.a)}\n--- B:\n${tail(this.b)}`);
    }
    return sha256File(path);
  }

  async inboxNames(): Promise<string[]> {
    return (await readdir(this.inbox)).filter((n) => !n.startsWith(".")).sort();
  }

  async close(): Promise<void> {
    await Promise.all([this.a?.stop(), this.b?.stop()]);
    await this.aProxy.close();
    await this.bProxy.close();
    // Each pair's folders hold a few hundred MiB of files: a run must not leave gigabytes behind.
    await rm(this.dir, { recursive: true, force: true });
  }
}

describe("large files: relayed to an online receiver or chunked through R2, resumable, verified end to end", () => {
  let edge: LocalEdge;
  let env: Record<string, string>;
  const pairs: Pair[] = [];

  beforeAll(async () => {
    edge = await LocalEdge.start();
    env = { FERRY_EDGE: edge.url, FERRY_ADMIN_TOKEN: edge.adminToken };
  });

  afterAll(async () => {
    await Promise.all(pairs.map((p) => p.close()));
    await edge?.close();
  });

  /** Bytes in the edge's local R2 (objects and multipart parts), on disk. */
  async function r2Bytes(): Promise<number> {
    let total = 0;
    const walk = async (dir: string, inR2: boolean): Promise<void> => {
      for (const e of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
        const f = join(dir, e.name);
        if (e.isDirectory()) await walk(f, inR2 || e.name === "r2");
        else if (inR2 && e.isFile()) total += (await stat(f)).size;
      }
    };
    await walk(join(edge.stateDir, "wrangler"), false);
    return total;
  }

  async function pair(tag: string, opts: PairOptions = {}): Promise<Pair> {
    const p = await Pair.create(edge, env, tag, opts);
    pairs.push(p);
    return p;
  }

  it.each([
    ["relayed", true],
    ["stored in R2", false],
  ] as const)("moves 0 B, 1 B, one chunk, one chunk + 1 byte and hundreds of MiB byte-identical, in order, in constant memory (%s)", async (mode, relay) => {
    const tag = relay ? "sizes" : "sizes-r2";
    const r2Before = await r2Bytes();
    const p = await pair(tag, { relay });
    const files: [string, number][] = [
      ["empty.bin", 0],
      ["one-byte.bin", 1],
      ["just-over-inline.bin", MiB + 1],
      ["one-chunk.bin", CHUNK],
      ["chunk-plus-one.bin", CHUNK + 1],
      ["big.bin", BIG],
    ];
    const sums = new Map<string, string>();
    for (const [name, size] of files) sums.set(name, await p.drop(name, size));
    for (const [name, size] of files) expect(await p.arrived(name, size, 240_000), name).toBe(sums.get(name));
    expect(await p.inboxNames()).toEqual(files.map(([n]) => n).sort());

    // Delivered in the order captured (one stream): B's delivery log lines follow A's capture order.
    const captured = p.a.lines.filter((l) => l.msg === "captured").map((l) => l.file);
    await waitFor("the deliveries logged", async () => p.b.lines.filter((l) => l.msg === "delivered").length >= files.length);
    const delivered = p.b.lines.filter((l) => l.msg === "delivered").map((l) => String(l.path).split("/").pop());
    expect(delivered).toEqual(captured);

    // Never whole in memory at either connector, whatever the file size.
    for (const c of [p.a, p.b]) {
      const peak = peakRssMiB(c.proc.pid as number);
      if (process.env.FERRY_E2E_REPORT) console.log(`peak RSS ${c.config}: ${peak.toFixed(1)} MiB`);
      expect(peak).toBeLessThan(150);
    }
    // No partial files left anywhere; the sender's spool let go of its copies.
    expect(await readdir(join(p.inbox, ".ferry-tmp")).catch(() => [])).toEqual([]);
    await waitFor("A's spool to drop its copies of the files", async () => (await readdir(join(p.dir, "a-state", "spool", "blobs"))).length === 0);
    expect(await readdir(join(p.dir, "b-state", "downloads")).catch(() => [])).toEqual([]);

    // The event log knows them like any message: accepted once, delivered once, with their names and sizes.
    await waitFor("every file delivered in the event log", async () => {
      const log = JSON.parse(ferry(["admin", "messages", "--source", `${tag}-a/files`, "--type", "delivered", "--json"], env).stdout) as { events: unknown[] };
      return log.events.length === files.length;
    });
    const big = JSON.parse(ferry(["admin", "messages", "--source", `${tag}-a/files`, "--field", "filename:big.bin", "--type", "accepted", "--json"], env).stdout) as { events: { size: number; sha256: string }[] };
    expect(big.events).toEqual([expect.objectContaining({ size: BIG, sha256: sums.get("big.bin") })]);

    // Relayed: the four large payloads went straight to B's disk, none through the edge's store; stored: fetched from R2.
    const large = files.filter(([, size]) => size > MiB).length;
    if (relay) {
      expect(p.b.count("relayed payload received whole")).toBe(large);
      expect(progress(p.b, "download progress")).toEqual([]);
      expect(await r2Bytes()).toBeLessThan(r2Before + MiB);
    } else {
      expect(p.b.count("receiving a large payload relayed from its sender")).toBe(0);
      expect(progress(p.b, "download progress").length).toBeGreaterThanOrEqual(BIG / CHUNK);
    }
    if (process.env.FERRY_E2E_REPORT) console.log(mode, "R2 bytes before", r2Before, "after", await r2Bytes());
  });

  /** A 12-part file whose sender's link is cut once the edge holds half: it must arrive having sent part 1 once, and few parts twice. */
  async function cutSenderAtHalf(p: Pair, name: string): Promise<void> {
    const size = 12 * CHUNK;
    const sha = await p.drop(name, size);
    await waitFor("half of the upload", () => progress(p.a, "upload progress").some((l) => l.have >= 6), 60_000, 20);
    p.aProxy.cut();
    expect(await p.arrived(name, size)).toBe(sha);
    // Resumed, not restarted: part 1 went once, and only parts in flight at the cut went twice.
    const sent = progress(p.a, "chunk sent").map((l) => l.part);
    expect(sent.filter((x) => x === 1)).toHaveLength(1);
    expect(sent.length).toBeLessThanOrEqual(12 + 4);
    expect(p.a.count("reconnecting") + p.a.count("disconnected")).toBeGreaterThan(0);
  }

  it("resumes an upload cut at 50% from the last part the edge holds", async () => {
    await cutSenderAtHalf(await pair("cutup", { relay: false }), "cut-upload.bin");
  });

  it("resumes a download cut at 50% from the last part on disk", async () => {
    const p = await pair("cutdown", { relay: false });
    const size = 12 * CHUNK;
    const sha = await p.drop("cut-download.bin", size);
    await waitFor("half of the download", () => progress(p.b, "download progress").some((l) => l.have >= 6), 60_000, 20);
    p.bProxy.cut();
    expect(await p.arrived("cut-download.bin", size)).toBe(sha);
    // Every part written exactly once: nothing fetched from the start again.
    const written = progress(p.b, "download progress").map((l) => l.have);
    expect(written).toEqual(Array.from({ length: 12 }, (_, i) => i + 1));
  });

  it("survives kill -9 of the sender mid-upload and of the receiver mid-download", async () => {
    const p = await pair("kill", { relay: false });
    const size = 12 * CHUNK;
    // B's link stalls a little past half of the download, so B is killed while it is still under way.
    p.bProxy.stallAfter("down", 6 * CHUNK + CHUNK / 2);
    const sha = await p.drop("killed.bin", size);
    await waitFor("half of the upload", () => progress(p.a, "upload progress").some((l) => l.have >= 6), 60_000, 20);
    await p.a.stop("SIGKILL");
    await p.startA();
    await waitFor("half of the download", () => progress(p.b, "download progress").some((l) => l.have >= 6), 120_000, 20);
    await p.b.stop("SIGKILL");
    p.bProxy.resume();
    await p.startB();
    expect(await p.arrived("killed.bin", size)).toBe(sha);
    // The restarted sender asked the edge where it stood instead of starting over; so did the receiver.
    const resent = progress(p.a, "chunk sent").map((l) => l.part);
    expect(Math.min(...resent)).toBeGreaterThan(1);
    expect(p.b.lines.some((l) => l.msg === "resuming a large payload")).toBe(true);
    expect(await p.inboxNames()).toEqual(["killed.bin"]);
  });

  it("continues after the edge restarts mid-upload and again mid-download, on its persisted state", async () => {
    const p = await pair("restart", { relay: false });
    const size = 12 * CHUNK;
    const sha = await p.drop("restarted.bin", size);
    await waitFor("half of the upload", () => progress(p.a, "upload progress").some((l) => l.have >= 6), 60_000, 20);
    await edge.down();
    await edge.up();
    await waitFor("half of the download", () => progress(p.b, "download progress").some((l) => l.have >= 6), 120_000, 20);
    await edge.down();
    await edge.up();
    expect(await p.arrived("restarted.bin", size)).toBe(sha);
    // The edge kept the parts it held across its restart: part 1 was uploaded once, each part written once.
    expect(progress(p.a, "chunk sent").filter((l) => l.part === 1)).toHaveLength(1);
    expect(progress(p.b, "download progress").map((l) => l.have)).toEqual(Array.from({ length: 12 }, (_, i) => i + 1));
    expect(await p.inboxNames()).toEqual(["restarted.bin"]);
  });

  it("compresses for a route that asks for it, only when it pays, and delivers the original bytes", async () => {
    const p = await pair("gzip", { route: ["--compress", "gzip"] });
    // A CSV-like export compresses well; random bytes do not.
    const rows: string[] = [];
    for (let i = 0, length = 0; length < 40 * MiB; i++) {
      const row = `${i},ACME-${i % 97},widget-${i % 13},${(i * 7919) % 100000},EUR,2026-11-${String((i % 28) + 1).padStart(2, "0")}\n`;
      rows.push(row);
      length += row.length;
    }
    const csv = Buffer.from(rows.join(""));
    const tmp = join(p.dir, "a-out", ".export.csv.tmp");
    await mkdir(join(p.dir, "a-out"), { recursive: true });
    await writeFile(tmp, csv);
    await rename(tmp, join(p.dir, "a-out", "export.csv"));
    const random = await p.drop("random.bin", 20 * MiB);
    expect(await p.arrived("export.csv", csv.byteLength)).toBe(createHash("sha256").update(csv).digest("hex"));
    expect(await p.arrived("random.bin", 20 * MiB)).toBe(random);
    // The export crossed the network compressed (a fraction of its parts); the random file as it is.
    const compressed = p.a.lines.filter((l) => l.msg === "compressed for the route") as (Line & { size: number; compressed: number })[];
    expect(compressed).toHaveLength(1);
    expect(compressed[0]?.size).toBe(csv.byteLength);
    expect(compressed[0]?.compressed).toBeLessThan(csv.byteLength / 3);
    const accepted = JSON.parse(ferry(["admin", "messages", "--source", "gzip-a/files", "--type", "accepted", "--json"], env).stdout) as { events: { size: number; fields: { filename: string } }[] };
    const bySize = new Map(accepted.events.map((e) => [e.fields.filename, e.size]));
    expect(bySize.get("export.csv")).toBe(compressed[0]?.compressed);
    expect(bySize.get("random.bin")).toBe(20 * MiB);
    // A second route from the same source cannot disagree about compression.
    expect(ferry(["admin", "route", "add", "gzip-a/files", "other/files", "--json"], env).stderr).toMatch(/shares its compression/);
  });

  it("encrypt: a large file is sealed part by part; the edge's storage, archive included, holds no byte of it in the clear", async () => {
    const p = await pair("sealed", { route: ["--protection", "encrypt", "--archive"] });
    const size = 2 * CHUNK + 12345;
    const name = "payroll-2026-11-sealed.bin";
    const sha = await p.drop(name, size);
    expect(await p.arrived(name, size)).toBe(sha);
    // Samples of the original, from each part, and its name and digest: none may be at the edge.
    const original = await readFile(join(p.inbox, name));
    const needles = [0, CHUNK + 5, 2 * CHUNK + 100].map((at) => original.subarray(at, at + 48));
    needles.push(Buffer.from(name), Buffer.from(sha));
    await waitFor("the archive event", () => (JSON.parse(ferry(["admin", "messages", "--source", "sealed-a/files", "--type", "archived", "--json"], env).stdout) as { events: unknown[] }).events.length > 0);
    let scanned = 0;
    const walk = async (dir: string): Promise<void> => {
      for (const e of await readdir(dir, { withFileTypes: true })) {
        const f = join(dir, e.name);
        if (e.isDirectory()) await walk(f);
        else if (e.isFile()) {
          const bytes = await readFile(f);
          scanned += bytes.byteLength;
          for (const n of needles) expect(bytes.includes(n), `plaintext found in ${f}`).toBe(false);
        }
      }
    };
    await walk(join(edge.stateDir, "wrangler"));
    // The archived ciphertext is there to be scanned (the payload is kept, sealed, for its retention).
    expect(scanned).toBeGreaterThan(size);
    const accepted = JSON.parse(ferry(["admin", "messages", "--source", "sealed-a/files", "--type", "accepted", "--json"], env).stdout) as { events: { fields: unknown; size: number }[] };
    expect(accepted.events).toEqual([expect.objectContaining({ fields: null, size: size + 3 * 16 })]);
  });

  /** One byte flipped a few MiB into a chunk's bytes, on the way up (file `<prefix>-up.bin`), then down (`<prefix>-down.bin`); both must arrive whole. */
  async function corruptEachWay(p: Pair, prefix: string): Promise<void> {
    const size = 4 * CHUNK;
    p.aProxy.corruptOnce("up", 3 * MiB);
    const sha = await p.drop(`${prefix}-up.bin`, size);
    expect(await p.arrived(`${prefix}-up.bin`, size)).toBe(sha);
    expect(p.a.lines.some((l) => l.code === "BAD_CHUNK")).toBe(true);
    await waitFor("the first transfer done", () => p.a.count("uploaded") >= 1);
    p.bProxy.corruptOnce("down", 3 * MiB);
    const sha2 = await p.drop(`${prefix}-down.bin`, size);
    expect(await p.arrived(`${prefix}-down.bin`, size)).toBe(sha2);
    expect(await p.inboxNames()).toEqual([`${prefix}-down.bin`, `${prefix}-up.bin`]);
  }

  it("refetches a chunk corrupted on the way, in each direction, and never delivers a wrong file", async () => {
    const p = await pair("corrupt", { relay: false });
    // Up: the edge refuses the chunk; down: the receiver fetches the part again.
    await corruptEachWay(p, "corrupt");
    expect(p.b.count("a part arrived damaged; fetching it again")).toBe(1);
  });

  it("keeps the outbox's order when large and small files become ready in the same scan", async () => {
    const p = await pair("mixed");
    // Found together (A was stopped): oldest first, whatever their sizes (the soak once saw large files jump ahead).
    await p.a.stop();
    const files: [string, number][] = [["1-small.txt", 100], ["2-large.bin", CHUNK + 5], ["3-small.txt", 200], ["4-large.bin", 2 * MiB], ["5-small.txt", 300]];
    const sums = new Map<string, string>();
    for (const [i, [name, size]] of files.entries()) {
      sums.set(name, await p.drop(name, size));
      const t = new Date(Date.now() - 60_000 + i * 1000);
      await utimes(join(p.dir, "a-out", name), t, t);
    }
    await p.startA();
    for (const [name, size] of files) expect(await p.arrived(name, size)).toBe(sums.get(name));
    await waitFor("the captures logged", async () => p.a.count("captured") >= files.length);
    expect(p.a.lines.filter((l) => l.msg === "captured").map((l) => l.file)).toEqual(files.map(([n]) => n));
    await waitFor("the deliveries logged", async () => p.b.count("delivered") >= files.length);
    expect(p.b.lines.filter((l) => l.msg === "delivered").map((l) => String(l.path).split("/").pop())).toEqual(files.map(([n]) => n));
  });

  // Relayed (D19): the receiver is online and takes relays; the edge stores nothing unless the relay breaks off.
  it("relay: goes on after the sender's link is cut at 50%, sending again only the parts in flight", async () => {
    const p = await pair("relay-cutup");
    await cutSenderAtHalf(p, "relay-cut-up.bin");
    // The relay went on: nothing stored at the edge, nothing fetched from it.
    expect(p.b.count("relayed payload received whole")).toBe(1);
    expect(progress(p.b, "download progress")).toEqual([]);
  });

  it("relay: a receiver whose link is cut at 50% gets the rest without writing any part twice", async () => {
    const p = await pair("relay-cutdown");
    const size = 12 * CHUNK;
    const sha = await p.drop("relay-cut-down.bin", size);
    await waitFor("half of the relay", () => progress(p.b, "relay progress").some((l) => l.have >= 6), 60_000, 20);
    // Before its claim check comes, the relay is shown by the file's name, at the receiver and in the admin API (the portal).
    expect(p.b.lines.find((l) => l.msg === "receiving a large payload relayed from its sender")?.file).toBe("relay-cut-down.bin");
    const res = await fetch(`${edge.url}/api/transfers`, { headers: { authorization: `Bearer ${edge.adminToken}` } });
    const { transfers } = (await res.json()) as { transfers: { source: string; filename: string | null }[] };
    // (By name whichever way it goes on: the name stays with the upload if the relay ends and it is stored.)
    expect(transfers.filter((t) => t.source === "relay-cutdown-a/files").map((t) => t.filename)).toEqual(["relay-cut-down.bin"]);
    p.bProxy.cut();
    expect(await p.arrived("relay-cut-down.bin", size)).toBe(sha);
    // Whether the relay went on over B's new connection or ended (and B fetched the rest from
    // the edge's store), each part was written once: relayed ones are never fetched again.
    const written = [...progress(p.b, "relay progress"), ...progress(p.b, "download progress")].map((l) => l.have).sort((x, y) => x - y);
    expect(written).toEqual(Array.from({ length: 12 }, (_, i) => i + 1));
    expect(await p.inboxNames()).toEqual(["relay-cut-down.bin"]);
  });

  it("relay: survives kill -9 of the sender (the relay goes on) and of the receiver (the edge stores the rest; the receiver resumes)", async () => {
    const p = await pair("relay-kill");
    const size = 12 * CHUNK;
    const sha = await p.drop("relay-killed-a.bin", size);
    await waitFor("half of the relay", () => progress(p.a, "upload progress").some((l) => l.have >= 6), 60_000, 20);
    await p.a.stop("SIGKILL");
    await p.startA();
    expect(await p.arrived("relay-killed-a.bin", size)).toBe(sha);
    // The restarted sender asked where the relay stood and went on from there.
    expect(Math.min(...progress(p.a, "chunk sent").map((l) => l.part))).toBeGreaterThan(1);
    expect(p.b.count("relayed payload received whole")).toBe(1);

    // B's link stalls a little past half (parts of 8 MiB and their headers), so the relay is still
    // under way when B dies, however fast it ran (a CI run once saw it finish before the kill).
    p.bProxy.stallAfter("down", 6 * CHUNK + CHUNK / 2);
    const sha2 = await p.drop("relay-killed-b.bin", size);
    const started = "receiving a large payload relayed from its sender";
    await waitFor("the second relay to start", () => p.b.count(started) >= 2, 60_000, 20);
    const second = String(p.b.lines.filter((l) => l.msg === started)[1]?.id);
    await waitFor("half of the second relay", () => progress(p.b, "relay progress", second).some((l) => l.have >= 6), 60_000, 20);
    await p.b.stop("SIGKILL");
    p.bProxy.resume();
    // With its receiver gone the relay ends: the sender uploads into the edge's store from part 1.
    await waitFor("the relay to end", () => p.a.count("the edge holds fewer parts than it had taken; uploading again from there") >= 1, 60_000);
    await p.startB();
    expect(await p.arrived("relay-killed-b.bin", size)).toBe(sha2);
    // B resumed from the parts it had fsynced during the relay (every fourth).
    expect(p.b.lines.some((l) => l.msg === "resuming a large payload")).toBe(true);
    expect(Math.min(...progress(p.b, "download progress").map((l) => l.have))).toBeGreaterThan(4);
    expect(await p.inboxNames()).toEqual(["relay-killed-a.bin", "relay-killed-b.bin"]);
  });

  it("relay: ends when the edge restarts mid-relay; the payload is stored from part 1 and the receiver keeps what it wrote", async () => {
    const p = await pair("relay-restart");
    const size = 12 * CHUNK;
    p.bProxy.stallAfter("down", 6 * CHUNK + CHUNK / 2);
    const sha = await p.drop("relay-restarted.bin", size);
    await waitFor("half of the relay", () => progress(p.b, "relay progress").some((l) => l.have >= 6), 60_000, 20);
    await edge.down();
    p.bProxy.resume();
    await edge.up();
    expect(await p.arrived("relay-restarted.bin", size)).toBe(sha);
    expect(p.a.count("the edge holds fewer parts than it had taken; uploading again from there")).toBeGreaterThanOrEqual(1);
    // Parts B wrote during the relay were not fetched again.
    const relayed = Math.max(...progress(p.b, "relay progress").map((l) => l.have));
    expect(Math.min(...progress(p.b, "download progress").map((l) => l.have))).toBe(relayed + 1);
    expect(await p.inboxNames()).toEqual(["relay-restarted.bin"]);
  });

  it("relay: a chunk corrupted on the way, in each direction, is caught by the receiver and sent again; never a wrong file", async () => {
    const p = await pair("relay-corrupt");
    // Both ways the receiver catches it (the edge relays without checking) and the sender sends that chunk again.
    await corruptEachWay(p, "relay-corrupt");
    expect(p.b.count("a relayed part arrived damaged; asking for it again")).toBe(2);
    // Caught and mended within the relay: nothing was stored at the edge or fetched from it.
    expect(p.b.count("relayed payload received whole")).toBe(2);
    expect(progress(p.b, "download progress")).toEqual([]);
  });

  it("relay: fans out to every destination, each writing every part; with one offline the edge stores it for both", async () => {
    const p = await pair("relay-fan");
    // A second destination, C, straight to the edge, on a second route from A's channel.
    const add = ferry(["admin", "connector", "add", "relay-fan-c", "--json"], env);
    expect(add.code, add.stderr).toBe(0);
    const enrol = ferry(["connector", "enroll", "--edge", edge.url, "--token", (JSON.parse(add.stdout) as { enrolToken: string }).enrolToken, "--state", join(p.dir, "c-state"), "--json"], env);
    expect(enrol.code, enrol.stderr).toBe(0);
    await writeFile(join(p.dir, "c.toml"), `state = "./c-state"\nlog = "json"\nheartbeat_seconds = 2\n\n[[channels]]\nname = "files"\nprotocol = "file"\ninbox = "./c-in"\npoll_ms = 50\n`);
    expect(ferry(["admin", "route", "add", "relay-fan-a/files", "relay-fan-c/files", "--json"], env).code).toBe(0);
    let c = new ConnectorProcess(join(p.dir, "c.toml"));
    await c.connected();
    const atC = async (name: string, size: number) => {
      await waitFor(`${name} in C's inbox`, async () => (await stat(join(p.dir, "c-in", name)).catch(() => null))?.size === size, 120_000, 100);
      return sha256File(join(p.dir, "c-in", name));
    };
    try {
      const size = 3 * CHUNK + 17;
      const sha = await p.drop("fan-1.bin", size);
      expect(await p.arrived("fan-1.bin", size)).toBe(sha);
      expect(await atC("fan-1.bin", size)).toBe(sha);
      for (const r of [p.b, c]) {
        expect(r.count("relayed payload received whole")).toBe(1);
        expect(progress(r, "download progress")).toEqual([]);
      }
      // C away: no relay (it needs every destination); stored, and each fetches it from the edge.
      await c.stop();
      const sha2 = await p.drop("fan-2.bin", size);
      expect(await p.arrived("fan-2.bin", size)).toBe(sha2);
      expect(p.b.count("receiving a large payload relayed from its sender")).toBe(1);
      c = new ConnectorProcess(join(p.dir, "c.toml"));
      await c.connected();
      expect(await atC("fan-2.bin", size)).toBe(sha2);
      expect(progress(c, "download progress").length).toBe(4);
    } finally {
      await c.stop();
    }
  });

  const canMount = process.getuid?.() === 0 && spawnSync("sh", ["-c", "d=$(mktemp -d) && mount -t tmpfs -o size=1m tmpfs $d && umount $d && rmdir $d"]).status === 0;
  const diskFull = (relay: boolean) => async () => {
    // The receiver's state and inbox on a real, small file system (64 MiB, most of it taken).
    const fsDir = await mkdtemp(join(tmpdir(), "ferry-full-"));
    expect(spawnSync("mount", ["-t", "tmpfs", "-o", "size=64m", "tmpfs", fsDir]).status).toBe(0);
    try {
      const inbox = join(fsDir, "in");
      const p = await pair(relay ? "full-relay" : "full", { inbox, relay });
      // B's state folder moves onto the small disk too (its downloads land there).
      await p.b.stop();
      await rename(join(p.dir, "b-state"), join(fsDir, "b-state")).catch(async () => {
        spawnSync("cp", ["-a", join(p.dir, "b-state"), join(fsDir, "b-state")]);
        await rm(join(p.dir, "b-state"), { recursive: true });
      });
      await writeFile(join(p.dir, "b.toml"), (await readFile(join(p.dir, "b.toml"), "utf8")).replace(`state = "./b-state"`, `state = "${join(fsDir, "b-state")}"`));
      await p.startB();
      const filler = join(fsDir, "filler");
      await writeFile(filler, Buffer.alloc(48 * MiB));
      const size = 3 * CHUNK - 5;
      const sha = await p.drop("too-big-for-now.bin", size);
      // Relayed, the write that fails ends the relay (the edge stores the payload); then the fetch meets the full disk too.
      await waitFor("B to report the full disk", () => p.b.lines.find((l) => String(l.error ?? "").includes("is full")), 120_000);
      expect(await p.inboxNames()).toEqual([]);
      await rm(filler);
      expect(await p.arrived("too-big-for-now.bin", size)).toBe(sha);
      // Resumed from the parts already on disk, not from the start: no part written twice.
      if (process.env.FERRY_E2E_REPORT) console.log(JSON.stringify(p.b.lines.filter((l) => /progress|resum|full|retry|relay/.test(String(l.msg) + String(l.error ?? "")))));
      const written = [...progress(p.b, "relay progress"), ...progress(p.b, "download progress")].map((l) => l.have);
      expect(written.filter((h) => h === 1)).toHaveLength(1);
      if (relay) expect(p.b.count("a relayed payload could not be written here; the edge stores it instead and it is fetched later")).toBeGreaterThanOrEqual(1);
    } finally {
      await Promise.all(pairs.filter((x) => x.inbox.startsWith(fsDir)).map((x) => x.close()));
      spawnSync("umount", ["-l", fsDir]);
      await rm(fsDir, { recursive: true, force: true });
    }
  };
  it.skipIf(!canMount)("stops with a clear error when the receiver's disk is full, and resumes when space returns (stored in R2)", diskFull(false));
  it.skipIf(!canMount)("relay: stops with a clear error when the receiver's disk is full, and resumes when space returns", diskFull(true));
});
