/**
 * Scale: many connectors on one local edge exchanging messages (and how
 * the edge's memory grows with them), and a channel holding a large backlog
 * queued while its receiver was away, then drained at full speed.
 */
import { mkdtemp } from "node:fs/promises";
import { join } from "node:path";
import { Agent, getGlobalDispatcher, setGlobalDispatcher } from "undici";
import { CallbackReceiver, Connector, silentLogger } from "../connector/index.ts";
import type { LocalEdge } from "../test/helpers/edge.ts";
import { addConnector, api, CHANNEL, network, payload, SendClock, sendAll, Tally, type Place } from "./ferry.ts";
import { MIB } from "./config.ts";
import { PeakWatch, removeQuietly, rssMiB, workerdOf } from "./proc.ts";
import { latency, type Sample } from "./stats.ts";

/** Admin API budget: 600 requests a minute per tenant (wrangler.toml); 100 connectors and their routes fit in one. */
const PER_TENANT = 100;
/** Enrolment: 30 attempts a minute per client address (ENROLL_LIMITER); stay under it per address. */
const ENROLS_PER_ADDRESS = 25;

/**
 * Enrols from a different loopback source address every ENROLS_PER_ADDRESS
 * connectors, as many sites would: the edge's limiter counts per address and
 * LocalEdge offers no knob to lift it. All of 127.0.0.0/8 is loopback.
 */
async function withSourceAddress<T>(index: number, fn: () => Promise<T>): Promise<T> {
  const previous = getGlobalDispatcher();
  const octet = 2 + Math.floor(index / ENROLS_PER_ADDRESS);
  const agent = new Agent({ localAddress: `127.0.${Math.floor(octet / 250)}.${2 + (octet % 250)}` });
  setGlobalDispatcher(agent);
  try {
    return await fn();
  } finally {
    setGlobalDispatcher(previous);
    await agent.close();
  }
}

const workerdRss = (edge: LocalEdge) => workerdOf(edge.stateDir).reduce((n, p) => n + rssMiB(p), 0);

/** Least-squares slope and the worst relative deviation from the line. */
function fit(points: { x: number; y: number }[]): { slope: number; intercept: number; worst: number } {
  const n = points.length;
  const mx = points.reduce((s, p) => s + p.x, 0) / n;
  const my = points.reduce((s, p) => s + p.y, 0) / n;
  const sxx = points.reduce((s, p) => s + (p.x - mx) ** 2, 0);
  const slope = sxx === 0 ? 0 : points.reduce((s, p) => s + (p.x - mx) * (p.y - my), 0) / sxx;
  const intercept = my - slope * mx;
  const worst = Math.max(...points.map((p) => Math.abs(p.y - (intercept + slope * p.x)) / Math.max(1, p.y)));
  return { slope, intercept, worst };
}

/**
 * `count` connectors in pairs (each sends `messages` 1 KiB messages to its
 * partner, and receives as many), in tenants of PER_TENANT. Connected in
 * ten steps; the edge's RSS after each step gives MiB per connector.
 */
export async function ferryScale(edge: LocalEdge, place: Place, tag: string, count: number, messages: number): Promise<Sample> {
  const n = count - (count % 2);
  const dir = await mkdtemp(join(place.root, `${tag}-`));
  const conns: Connector[] = [];
  const tallies: Tally[] = [];
  const clocks: SendClock[] = [];
  try {
    const t0 = performance.now();
    for (let i = 0; i < n; i++) {
      const tenant = `${tag}-t${Math.floor(i / PER_TENANT)}`;
      if (i % PER_TENANT === 0) await api(edge, "POST", "/api/tenants", { id: tenant });
      await withSourceAddress(i, () => addConnector(edge, `c${i}`, join(dir, `c${i}`), tenant));
      if (i % 2 === 1) {
        await api(edge, "POST", "/api/routes", { source: `c${i - 1}/${CHANNEL}`, destination: `c${i}/${CHANNEL}` }, tenant);
        await api(edge, "POST", "/api/routes", { source: `c${i}/${CHANNEL}`, destination: `c${i - 1}/${CHANNEL}` }, tenant);
      }
    }
    const setupSecs = (performance.now() - t0) / 1000;
    for (let i = 0; i < n; i++) {
      const c = await Connector.open({ stateDir: join(dir, `c${i}`), log: silentLogger });
      const clock = new SendClock(messages);
      const tally = new Tally(clock);
      c.receive(CHANNEL, await CallbackReceiver.open(join(dir, `c${i}`, "delivered.json"), async (m) => tally.add(Buffer.from(m.payload.buffer, m.payload.byteOffset, 4).readUInt32LE(0), m.payload.byteLength)));
      conns.push(c);
      tallies.push(tally);
      clocks.push(clock);
    }
    // Memory as connectors come online, in ten steps.
    const points = [{ x: 0, y: workerdRss(edge) }];
    const selfBase = rssMiB(process.pid);
    const step = Math.max(2, Math.ceil(n / 10));
    for (let from = 0; from < n; from += step) {
      const batch = conns.slice(from, from + step);
      const ups = batch.map((c) => new Promise<void>((r) => c.once("connected", () => r())));
      for (const c of batch) c.start();
      await Promise.all(ups);
      await new Promise((r) => setTimeout(r, 1000));
      points.push({ x: Math.min(n, from + step), y: workerdRss(edge) });
    }
    const f = fit(points);
    const selfPer = (rssMiB(process.pid) - selfBase) / n;
    // Everyone sends to its partner at once.
    const watch = new PeakWatch(() => workerdOf(edge.stateDir));
    const t1 = performance.now();
    await Promise.all(conns.map(async (c, i) => {
      (clocks[i ^ 1] as SendClock).mark(1, messages);
      await c.sendMany(CHANNEL, Array.from({ length: messages }, (_, k) => ({ payload: payload(1024, k + 1) })));
    }));
    await Promise.all(tallies.map((t, i) => t.until(messages, 300_000, `connector c${i}`)));
    const secs = (performance.now() - t1) / 1000;
    for (const [i, t] of tallies.entries()) if (t.error) throw new Error(`c${i}: ${t.error}`);
    const l = latency(tallies.flatMap((t) => t.latencies));
    return {
      rate: (n * messages) / secs,
      p50: l.p50,
      p99: l.p99,
      rssMiB: { "workerd (all connected, peak while exchanging)": watch.stop() },
      extra: {
        connectors: n,
        workerdMiBPerConnector: f.slope,
        workerdBaseMiB: points[0]?.y ?? 0,
        workerdAtAllMiB: points[points.length - 1]?.y ?? 0,
        worstDeviationFromLinear: f.worst,
        benchProcessMiBPerConnector: selfPer,
        setupSeconds: setupSecs,
        memoryCurve: points.map((p) => `${p.x}:${p.y.toFixed(0)}`).join(" "),
      },
    };
  } finally {
    await Promise.allSettled(conns.map((c) => c.stop()));
    await removeQuietly(dir);
  }
}

/**
 * `count` 1 KiB messages accepted by the edge while the receiver is away,
 * then the receiver connects: the drain rate from its connection to the
 * last delivery (exactly once, in order).
 */
export async function ferryBacklog(edge: LocalEdge, place: Place, tag: string, count: number): Promise<Sample> {
  const net = await network(edge, place, tag, count, 1, { startReceivers: false });
  try {
    const accepted = new Promise<void>((resolve) =>
      net.source.on("accepted", (_ch, upTo) => {
        if (upTo >= count) resolve();
      }),
    );
    const t0 = performance.now();
    await sendAll(net.source, net.clock, 1024, count);
    await accepted;
    const queueSecs = (performance.now() - t0) / 1000;
    const watch = new PeakWatch(() => workerdOf(edge.stateDir));
    const t1 = performance.now();
    await net.startReceivers();
    const tally = net.tallies[0] as Tally;
    await tally.until(count, 600_000 + count, "the backlog to drain");
    const secs = (performance.now() - t1) / 1000;
    if (tally.error) throw new Error(tally.error);
    return {
      rate: count / secs,
      rssMiB: { workerd: watch.stop() },
      extra: { queued: count, queueSeconds: queueSecs, acceptedPerSec: count / queueSecs, drainSeconds: secs, mbPerSec: (count * 1024) / MIB / secs },
    };
  } finally {
    await net.close();
  }
}
