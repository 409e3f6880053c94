import { createHash, randomBytes } from "node:crypto";
import { watch, type FSWatcher } from "node:fs";
import { mkdir, mkdtemp, readdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { LocalEdge } from "./edge.ts";
import { ChaosProxy } from "./proxy.ts";
import { ConnectorProcess, ferry } from "./cli.ts";
import { waitFor } from "./wait.ts";

export type ChaosPlan = {
  /** Files dropped into A's outbox, in name order. */
  files: number;
  /** Keep the faults coming for at least this long (the soak), or until all files are written. */
  durationMs: number;
  /** Random seed: the same seed replays the same schedule. */
  seed: number;
  faults: ("kill-sender" | "kill-receiver" | "restart-edge" | "cut" | "stall")[];
  /** Milliseconds between faults (random in this range). */
  gapMs: [number, number];
  /** Every this many files, one is large (9 to 24 MiB: several chunks, relayed or stored), so faults land mid-transfer too. */
  largeEvery?: number;
  log?: (s: string) => void;
};

export type ChaosReport = {
  seed: number;
  files: number;
  delivered: number;
  missing: string[];
  duplicates: string[];
  corrupt: string[];
  /** Files that appeared in B's inbox after a file written later (exact: every arrival is observed). */
  outOfOrder: number;
  /** Arrivals observed in B's inbox; equal to `files` when the order check covered every file. */
  orderChecked: number;
  /** Delivery log lines whose stream position is not the file's index + 1 (the lines that survived the kills). */
  seqMismatch: number;
  seqChecked: number;
  deadLetters: number;
  senderBacklog: number;
  outboxLeft: number;
  faults: Record<string, number>;
  elapsedMs: number;
};

/** Small, seedable PRNG (mulberry32): a failing schedule can be replayed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const name = (i: number) => `m-${String(i).padStart(6, "0")}.dat`;
const index = (n: string): number | null => {
  const m = /^m-(\d+)\.dat$/.exec(n);
  return m ? Number(m[1]) : null;
};

/**
 * The order in which files appear under their final names in a folder,
 * exactly. The file inbox writes each delivery to a temporary file in a
 * subfolder and renames it into place, in stream order; inotify queues the
 * rename events of a folder in the order the kernel performed them, so the
 * first event for each name is its arrival, in true order. The watcher lives
 * in the test process, which no fault touches: arrivals made by a receiver
 * that is then killed -9, and those finished by its recovery on restart, are
 * all observed (a lost log line no longer hides one). File times could not
 * do this (equal within a clock tick), nor can the delivery log (it keeps
 * only the high-water mark).
 */
class Arrivals {
  readonly order: string[] = [];
  private readonly seen = new Set<string>();
  private readonly watcher: FSWatcher;
  error: string | null = null;

  constructor(dir: string) {
    this.watcher = watch(dir, (_event, file) => {
      const n = file?.toString();
      if (!n || n.startsWith(".") || this.seen.has(n)) return;
      this.seen.add(n);
      this.order.push(n);
    });
    this.watcher.on("error", (e) => (this.error = e.message));
  }

  close(): void {
    this.watcher.close();
  }
}

/**
 * Streams files from connector A to connector B through a TCP proxy while
 * faults hit every part: kill -9 of either connector, an edge restart on
 * its persisted state, connections cut and stalled (half-open). Then checks
 * at B: every file exactly once, bytes equal, arrived in the order written
 * (observed exactly, see Arrivals); nothing left in A's spool or outbox; no
 * dead letters.
 */
export async function chaosRun(plan: ChaosPlan): Promise<ChaosReport> {
  const log = plan.log ?? (() => undefined);
  const rnd = prng(plan.seed);
  const started = Date.now();
  const edge = await LocalEdge.start();
  const proxy = new ChaosProxy({ host: "127.0.0.1", port: edge.port });
  await proxy.listen();
  const dir = await mkdtemp(join(tmpdir(), "ferry-chaos-"));
  const env = { FERRY_EDGE: edge.url, FERRY_ADMIN_TOKEN: edge.adminToken };
  const procs: Record<"a" | "b", ConnectorProcess | null> = { a: null, b: null };
  const history: ConnectorProcess[] = [];
  const faults: Record<string, number> = {};
  let arrivals: Arrivals | null = null;
  try {
    for (const side of ["a", "b"] as const) {
      const add = ferry(["admin", "connector", "add", `chaos-${side}`, "--json"], env);
      if (add.code !== 0) throw new Error(add.stderr);
      const token = (JSON.parse(add.stdout) as { enrolToken: string }).enrolToken;
      const en = ferry(["connector", "enroll", "--edge", edge.url, "--token", token, "--state", join(dir, `${side}-state`)], env);
      if (en.code !== 0) throw new Error(en.stderr);
      await writeFile(
        join(dir, `${side}.toml`),
        [
          `state = "./${side}-state"`,
          `edges = ["${proxy.url}"]`,
          `log = "json"`,
          `heartbeat_seconds = 2`,
          `[[channels]]`,
          `name = "orders"`,
          `protocol = "file"`,
          side === "a" ? `outbox = "./a-out"` : `inbox = "./b-in"`,
          `poll_ms = 20`,
          ``,
        ].join("\n"),
      );
    }
    const route = ferry(["admin", "route", "add", "chaos-a/orders", "chaos-b/orders"], env);
    if (route.code !== 0) throw new Error(route.stderr);
    const startSide = (side: "a" | "b") => {
      const p = new ConnectorProcess(join(dir, `${side}.toml`));
      procs[side] = p;
      history.push(p);
      return p;
    };
    // Watching before anything can arrive: every arrival is seen.
    const inbox = join(dir, "b-in");
    await mkdir(inbox, { recursive: true });
    arrivals = new Arrivals(inbox);
    startSide("b");
    startSide("a");
    await Promise.all([procs.a?.connected(), procs.b?.connected()]);

    const digests = new Map<string, string>();
    let written = 0;
    const writer = (async () => {
      for (let i = 0; i < plan.files; i++) {
        const large = plan.largeEvery !== undefined && i % plan.largeEvery === plan.largeEvery - 1;
        const body = Buffer.concat([Buffer.from(`${i}\n`), randomBytes(large ? (9 + Math.floor(rnd() * 16)) * 1024 * 1024 : 64 + Math.floor(rnd() * 2048))]);
        digests.set(name(i), createHash("sha256").update(body).digest("hex"));
        await writeFile(join(dir, "a-out", `.${name(i)}.tmp`), body);
        await rename(join(dir, "a-out", `.${name(i)}.tmp`), join(dir, "a-out", name(i)));
        written = i + 1;
        // Spread the writes over the run so faults land mid-stream.
        if (i % 20 === 19) await new Promise((r) => setTimeout(r, Math.max(1, (plan.durationMs * 0.8) / plan.files) * 20));
      }
    })();

    const deadline = started + plan.durationMs;
    // Every kind of fault happens at least once, in a seeded order, then again in new orders.
    const order: ChaosPlan["faults"] = [];
    let k = 0;
    while (written < plan.files || Date.now() < deadline || k < plan.faults.length) {
      await new Promise((r) => setTimeout(r, plan.gapMs[0] + rnd() * (plan.gapMs[1] - plan.gapMs[0])));
      if (order.length === 0) order.push(...[...plan.faults].sort(() => rnd() - 0.5));
      const fault = order.shift();
      k++;
      if (!fault) break;
      faults[fault] = (faults[fault] ?? 0) + 1;
      log(`fault ${fault} at ${Date.now() - started} ms (written ${written}/${plan.files})`);
      switch (fault) {
        case "kill-sender":
        case "kill-receiver": {
          const side = fault === "kill-sender" ? "a" : "b";
          await procs[side]?.stop("SIGKILL");
          startSide(side);
          break;
        }
        case "restart-edge":
          await edge.down();
          await edge.up();
          break;
        case "cut":
          proxy.cut();
          break;
        case "stall":
          proxy.stall();
          // Long enough for heartbeats to declare the link dead (2 x 2 s).
          await new Promise((r) => setTimeout(r, 5000));
          proxy.resume();
          break;
      }
    }
    await writer;
    log(`all ${plan.files} files written; waiting for delivery`);

    await waitFor(
      `${plan.files} files at B`,
      async () => (await readdir(inbox).catch(() => [] as string[])).filter((n) => !n.startsWith(".")).length >= plan.files,
      180_000,
      200,
    ).catch((e: unknown) => log((e as Error).message));
    const names = (await readdir(inbox).catch(() => [] as string[])).filter((n) => !n.startsWith("."));
    const expected = new Set(digests.keys());
    const missing = [...expected].filter((n) => !names.includes(n));
    const duplicates = names.filter((n) => !expected.has(n));
    const corrupt: string[] = [];
    for (const n of names) {
      if (!expected.has(n)) continue;
      const d = createHash("sha256").update(await readFile(join(inbox, n))).digest("hex");
      if (d !== digests.get(n)) corrupt.push(n);
    }
    // Order, exactly: the files appeared in B's inbox in the order they were
    // written to A's outbox (A captures in that order: oldest first, ties by
    // name). Every file must have been seen arriving, or the check is incomplete.
    const arrived = arrivals?.order.filter((n) => expected.has(n)) ?? [];
    let outOfOrder = 0;
    let latest = -1;
    for (const n of arrived) {
      const i = index(n) as number;
      if (i < latest) outOfOrder++;
      latest = Math.max(latest, i);
    }
    if (arrivals?.error) log(`inbox watcher error: ${arrivals.error}`);
    // Sequence numbers too, where the log lines survived: position = index + 1 (nothing else goes on this stream).
    let seqMismatch = 0;
    let seqChecked = 0;
    for (const p of history) {
      for (const l of p.lines) {
        if (l.msg !== "delivered" || typeof l.path !== "string" || typeof l.dseq !== "number") continue;
        seqChecked++;
        const i = index(l.path.slice(l.path.lastIndexOf("/") + 1));
        if (i === null || i + 1 !== l.dseq) seqMismatch++;
      }
    }
    // The sender may have been restarted last: its spool drains once the edge acknowledges the resends.
    type Status = { channels?: { orders?: { backlog?: { count: number } } } };
    const backlog = () => (JSON.parse(ferry(["connector", "status", "--config", join(dir, "a.toml"), "--json"], env).stdout || "{}") as Status).channels?.orders?.backlog?.count ?? -1;
    const senderBacklog = await waitFor("the sender's spool to drain", () => (backlog() === 0 ? 0 : undefined), 60_000, 250).catch(() => backlog());
    const dead = JSON.parse(ferry(["admin", "dead-letters", "--json"], env).stdout || "{}") as { deadLetters?: unknown[] };
    return {
      seed: plan.seed,
      files: plan.files,
      delivered: names.length,
      missing,
      duplicates,
      corrupt,
      outOfOrder,
      orderChecked: arrived.length,
      seqMismatch,
      seqChecked,
      deadLetters: dead.deadLetters?.length ?? -1,
      senderBacklog,
      outboxLeft: (await readdir(join(dir, "a-out"))).filter((n) => !n.startsWith(".")).length,
      faults,
      elapsedMs: Date.now() - started,
    };
  } finally {
    arrivals?.close();
    await Promise.all([procs.a?.stop(), procs.b?.stop()]);
    await proxy.close();
    await edge.close();
    // The report holds what a failure needs; the files (hundreds of MiB with large ones) go.
    await rm(dir, { recursive: true, force: true });
  }
}
