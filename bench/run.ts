/**
 * `npm run bench`: Ferry's whole path on the local network — sender
 * connector -> edge Worker -> channel Durable Object (stored, acknowledged)
 * -> receiving connector (delivered durably, acknowledged) — driven through
 * the connector library. Prints a table and writes bench/results/latest.json.
 * Figures are medians of the runs; the machine is shared and noisy.
 */
import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CallbackReceiver, Connector, enroll, silentLogger } from "../connector/index.ts";
import { LocalEdge, ROOT } from "../test/helpers/edge.ts";

const SMALL = Number(process.env.FERRY_BENCH_SMALL ?? 20_000);
const SERIAL = Number(process.env.FERRY_BENCH_SERIAL ?? 300);
const RUNS = Number(process.env.FERRY_BENCH_RUNS ?? 3);

type Pair = { a: Connector; b: Connector; delivered: Map<string, number>; onDelivered: (() => void) | null; close(): Promise<void> };

async function pair(edge: LocalEdge, tag: string): Promise<Pair> {
  const dir = await mkdtemp(join(tmpdir(), "ferry-bench-"));
  const ids: Record<string, string> = {};
  for (const side of ["a", "b"]) {
    const r = await edge.api<{ enrolToken: string }>("POST", "/api/connectors", { name: `${tag}-${side}` });
    await enroll({ edge: edge.url, token: r.body.enrolToken, stateDir: join(dir, side) });
    ids[side] = `${tag}-${side}`;
  }
  await edge.api("POST", "/api/routes", { source: `${ids.a}/bench`, destination: `${ids.b}/bench` });
  const a = await Connector.open({ stateDir: join(dir, "a"), log: silentLogger });
  const b = await Connector.open({ stateDir: join(dir, "b"), log: silentLogger });
  const p: Pair = {
    a,
    b,
    delivered: new Map(),
    onDelivered: null,
    close: async () => {
      await a.stop();
      await b.stop();
    },
  };
  b.receive(
    "bench",
    await CallbackReceiver.open(join(dir, "b", "delivered.json"), async (d) => {
      p.delivered.set(d.meta.id, Date.now() - d.meta.createdAt);
    }),
  );
  b.on("delivered", () => p.onDelivered?.());
  a.start();
  b.start();
  await Promise.all([a, b].map((c) => new Promise((r) => c.once("connected", r))));
  return p;
}

function until(p: Pair, n: number): Promise<void> {
  return new Promise((resolve) => {
    const check = () => {
      if (p.delivered.size >= n) {
        p.onDelivered = null;
        resolve();
      }
    };
    p.onDelivered = check;
    check();
  });
}

const pct = (xs: number[], q: number) => {
  const s = [...xs].sort((x, y) => x - y);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))] ?? NaN;
};
const median = (xs: number[]) => pct(xs, 0.5);

async function windowed(edge: LocalEdge, run: number) {
  const p = await pair(edge, `w${run}`);
  const body = randomBytes(1024);
  const t0 = performance.now();
  for (let i = 0; i < SMALL; i += 500) {
    await p.a.sendMany("bench", Array.from({ length: Math.min(500, SMALL - i) }, () => ({ payload: body })));
  }
  await until(p, SMALL);
  const secs = (performance.now() - t0) / 1000;
  const lat = [...p.delivered.values()];
  await p.close();
  return { msgsPerSec: SMALL / secs, p50: pct(lat, 0.5), p99: pct(lat, 0.99) };
}

async function serial(edge: LocalEdge, run: number) {
  const p = await pair(edge, `s${run}`);
  const body = randomBytes(1024);
  for (let i = 0; i < SERIAL; i++) {
    await p.a.send("bench", body);
    await until(p, i + 1);
  }
  const lat = [...p.delivered.values()];
  await p.close();
  return { p50: pct(lat, 0.5), p99: pct(lat, 0.99) };
}

async function main() {
  const edge = await LocalEdge.start();
  const w: Awaited<ReturnType<typeof windowed>>[] = [];
  const s: Awaited<ReturnType<typeof serial>>[] = [];
  try {
    for (let r = 0; r < RUNS; r++) {
      w.push(await windowed(edge, r));
      s.push(await serial(edge, r));
      console.error(`run ${r + 1}/${RUNS}: windowed ${w[r]?.msgsPerSec.toFixed(0)} msg/s, one-at-a-time p50 ${s[r]?.p50} ms`);
    }
  } finally {
    await edge.close();
  }
  const result = {
    machine: `${process.platform} ${process.arch}, node ${process.version}`,
    at: new Date().toISOString(),
    runs: RUNS,
    small: { messages: SMALL, size: 1024, msgsPerSec: median(w.map((x) => x.msgsPerSec)), p50ms: median(w.map((x) => x.p50)), p99ms: median(w.map((x) => x.p99)) },
    serial: { messages: SERIAL, size: 1024, p50ms: median(s.map((x) => x.p50)), p99ms: median(s.map((x) => x.p99)) },
    comparators: "not yet run (NATS JetStream and the raw WebSocket ceiling arrive with the performance work)",
  };
  console.log(`
case                               figure (median of ${RUNS})
small 1 KiB x ${SMALL}, windowed      ${result.small.msgsPerSec.toFixed(0)} msg/s   p50 ${result.small.p50ms} ms   p99 ${result.small.p99ms} ms
one at a time, 1 KiB x ${SERIAL}        p50 ${result.serial.p50ms} ms   p99 ${result.serial.p99ms} ms
(state on disk: every acknowledged message fsynced at the edge and at both connectors)`);
  await mkdir(join(ROOT, "bench", "results"), { recursive: true });
  await writeFile(join(ROOT, "bench", "results", "latest.json"), JSON.stringify(result, null, 2));
}

await main();
