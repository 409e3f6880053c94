/**
 * Ferry through the connector library: a source connector and one or more
 * destination connectors enrolled on a local edge, a route from the source
 * channel to each, and receivers that check every message arrives exactly
 * once and in order. The whole path: spool (fsync) -> edge Worker ->
 * session object -> channel object (SQLite commit, puback) -> session
 * object -> receiving connector (delivery log, fsync) -> ack.
 */
import { mkdir, mkdtemp } from "node:fs/promises";
import { join } from "node:path";
import { CallbackReceiver, Connector, enroll, silentLogger } from "../connector/index.ts";
import type { LocalEdge } from "../test/helpers/edge.ts";
import { latency, type Sample } from "./stats.ts";
import type { Ops } from "./cost.ts";
import type { Usage, UsageView } from "../wire/admin-types.ts";
import { MIB } from "./config.ts";
import { PeakWatch, removeQuietly, workerdOf } from "./proc.ts";

export const CHANNEL = "bench";
/** The route's event log: every message's lifecycle, or only what went wrong. */
export type LogLevel = "full" | "exceptions";

/** Where an edge and its connectors keep their state: on disk, or on tmpfs. */
export type Place = { name: "disk" | "tmpfs"; root: string };

/** The admin API, optionally as the platform operator acting for another tenant. */
export async function api<T = Record<string, unknown>>(edge: LocalEdge, method: string, path: string, body?: unknown, tenant?: string): Promise<T> {
  const res = await fetch(`${edge.url}${path}`, {
    method,
    headers: {
      authorization: `Bearer ${edge.adminToken}`,
      ...(tenant ? { "x-ferry-tenant": tenant } : {}),
      ...(body === undefined ? {} : { "content-type": "application/json" }),
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const json = (await res.json().catch(() => ({}))) as T & { detail?: string };
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${json.detail ?? ""}`);
  return json;
}

/** Adds a connector and enrols it into `stateDir`. */
export async function addConnector(edge: LocalEdge, name: string, stateDir: string, tenant?: string): Promise<void> {
  const r = await api<{ enrolToken: string }>(edge, "POST", "/api/connectors", { name }, tenant);
  await enroll({ edge: edge.url, token: r.enrolToken, stateDir });
}

/** Messages carry their position (u32 at offset 0) so receivers check order and uniqueness. */
export function payload(size: number, seq: number): Uint8Array {
  const b = Buffer.alloc(size, seq & 0xff);
  b.writeUInt32LE(seq, 0);
  return b;
}

/**
 * When each message was handed to the sender (performance.now(), by
 * position): senders and receivers share this process, so latency from
 * send to delivery is measured to the microsecond on one clock.
 */
export class SendClock {
  private readonly at: Float64Array;
  constructor(count: number) {
    this.at = new Float64Array(count + 1);
  }
  mark(from: number, n = 1): void {
    const t = performance.now();
    for (let i = from; i < from + n; i++) this.at[i] = t;
  }
  since(seq: number): number {
    return performance.now() - (this.at[seq] ?? Number.NaN);
  }
}

/** One destination's view: what arrived, in which order, how late. */
export class Tally {
  count = 0;
  bytes = 0;
  readonly latencies: number[] = [];
  error: string | null = null;
  private waiters: { n: number; resolve: () => void }[] = [];

  constructor(private readonly clock: SendClock) {}

  /** Records one delivery; `seq` must be exactly the next one. */
  add(seq: number, size: number): void {
    if (seq !== this.count + 1) this.error ??= `expected message ${this.count + 1}, got ${seq} (duplicate or out of order)`;
    this.count++;
    this.bytes += size;
    this.latencies.push(this.clock.since(seq));
    this.waiters = this.waiters.filter((w) => (this.count >= w.n ? (w.resolve(), false) : true));
  }

  until(n: number, timeoutMs: number, what: string): Promise<void> {
    if (this.count >= n) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms: ${what}: ${this.count} of ${n} delivered`)), timeoutMs);
      this.waiters.push({ n, resolve: () => (clearTimeout(t), resolve()) });
    });
  }
}

export type Net = {
  source: Connector;
  destinations: Connector[];
  tallies: Tally[];
  clock: SendClock;
  dir: string;
  /** Starts the destination connectors (left stopped by `startReceivers: false`). */
  startReceivers(): Promise<void>;
  close(): Promise<void>;
};

const connected = (c: Connector) => new Promise<void>((r) => c.once("connected", () => r()));

/**
 * One source routed to `fanout` destinations. Connector names are unique
 * per edge (`tag`). `startReceivers: false` leaves destinations offline so
 * messages queue at the edge.
 */
export async function network(edge: LocalEdge, place: Place, tag: string, count: number, fanout = 1, opts: { startReceivers?: boolean; tenant?: string; log?: LogLevel } = {}): Promise<Net> {
  await mkdir(place.root, { recursive: true });
  const dir = await mkdtemp(join(place.root, `${tag}-`));
  const names = [`${tag}-src`, ...Array.from({ length: fanout }, (_, i) => `${tag}-dst${i}`)];
  for (const n of names) await addConnector(edge, n, join(dir, n), opts.tenant);
  for (const d of names.slice(1)) await api(edge, "POST", "/api/routes", { source: `${names[0]}/${CHANNEL}`, destination: `${d}/${CHANNEL}`, log: opts.log ?? "full" }, opts.tenant);
  const [source, ...destinations] = await Promise.all(names.map((n) => Connector.open({ stateDir: join(dir, n), log: silentLogger })));
  const clock = new SendClock(count);
  const tallies = destinations.map(() => new Tally(clock));
  for (const [i, d] of (destinations as Connector[]).entries()) {
    const tally = tallies[i] as Tally;
    d.receive(
      CHANNEL,
      await CallbackReceiver.open(join(dir, names[i + 1] as string, "delivered.json"), async (m) => {
        tally.add(Buffer.from(m.payload.buffer, m.payload.byteOffset, 4).readUInt32LE(0), m.payload.byteLength);
      }),
    );
  }
  const src = source as Connector;
  const up = connected(src);
  src.start();
  await up;
  let receiving = false;
  const net: Net = {
    source: src,
    destinations: destinations as Connector[],
    tallies,
    clock,
    dir,
    startReceivers: async () => {
      receiving = true;
      const ups = net.destinations.map(connected);
      for (const d of net.destinations) d.start();
      await Promise.all(ups);
    },
    close: async () => {
      await Promise.allSettled([src.stop(), ...(receiving ? net.destinations.map((d) => d.stop()) : [])]);
      await removeQuietly(dir);
    },
  };
  if (opts.startReceivers !== false) await net.startReceivers();
  return net;
}

/** Captures `count` messages, `chunk` per spool append (each append is one fsync). */
export async function sendAll(c: Connector, clock: SendClock, size: number, count: number, chunk = 500): Promise<void> {
  for (let i = 0; i < count; i += chunk) {
    const n = Math.min(chunk, count - i);
    clock.mark(i + 1, n);
    await c.sendMany(CHANNEL, Array.from({ length: n }, (_, k) => ({ payload: payload(size, i + k + 1) })));
  }
}

function check(tallies: Tally[], count: number): void {
  for (const [i, t] of tallies.entries()) {
    if (t.error) throw new Error(`destination ${i}: ${t.error}`);
    if (t.count !== count) throw new Error(`destination ${i}: ${t.count} of ${count} delivered`);
  }
}

/** A generous bound: never the measurement, only a guard against a hang. */
const bound = (count: number, size: number) => 120_000 + count * 2 + (count * size) / 1000;

/**
 * Windowed: everything captured as fast as the spool takes it, many
 * messages in flight. Rate counts source messages delivered to every
 * destination; latency is capture to delivery at the destination.
 */
export async function ferryWindowed(edge: LocalEdge, place: Place, tag: string, size: number, count: number, fanout = 1, log: LogLevel = "full"): Promise<Sample> {
  const net = await network(edge, place, tag, count, fanout, { log });
  const watchEdge = new PeakWatch(() => workerdOf(edge.stateDir));
  const watchSelf = new PeakWatch(() => [process.pid]);
  try {
    const t0 = performance.now();
    await sendAll(net.source, net.clock, size, count, Math.max(1, Math.min(500, Math.floor((4 * MIB) / size))));
    await Promise.all(net.tallies.map((t, i) => t.until(count, bound(count * fanout, size), `destination ${i}`)));
    const secs = (performance.now() - t0) / 1000;
    check(net.tallies, count);
    const l = latency(net.tallies.flatMap((t) => t.latencies));
    return {
      rate: count / secs,
      p50: l.p50,
      p99: l.p99,
      rssMiB: { "connectors (bench process)": watchSelf.stop(), workerd: watchEdge.stop() },
      extra: { mbPerSec: (count * size) / MIB / secs, deliveriesPerSec: (count * fanout) / secs, ...Object.fromEntries(Object.entries(await measuredOps(edge, tag, fanout, count)).map(([k, v]) => [`ops.${k}`, v])) },
    };
  } finally {
    watchEdge.stop();
    watchSelf.stop();
    await net.close();
  }
}

/**
 * Billable operations per message as the objects counted them (the edge's
 * usage meters, GET /api/debug/usage): the source's channel object and every
 * connector's session object, setup included (a route, a few attaches: small
 * against thousands of messages). Background work still running when the
 * case ends (the event log's last flush) may be missing: a lower bound.
 */
async function measuredOps(edge: LocalEdge, tag: string, fanout: number, count: number): Promise<Ops> {
  const connectors = [`${tag}-src`, ...Array.from({ length: fanout }, (_, i) => `${tag}-dst${i}`)];
  const q = new URLSearchParams([["source", `${tag}-src/${CHANNEL}`], ...connectors.map((c): [string, string] => ["connector", c])]);
  const u = await api<UsageView>(edge, "GET", `/api/debug/usage?${q}`);
  if (!u.channel) throw new Error(`no usage for ${tag}-src/${CHANNEL}`);
  const sessions = Object.values(u.sessions);
  const sum = (k: keyof Usage) => sessions.reduce((a, s) => a + s[k], 0);
  return {
    doRequests: (u.channel.requests + sum("requests")) / count,
    wsMessagesIn: sum("webSocketMessagesIn") / count,
    sqliteRowsRead: u.channel.sqlRowsRead / count,
    sqliteRowsWritten: u.channel.sqlRowsWritten / count,
    d1RowsRead: u.channel.d1RowsRead / count,
    d1RowsWritten: u.channel.d1RowsWritten / count,
    r2ClassA: 0,
    r2ClassB: 0,
    workerRequests: 0,
  };
}

/** One at a time: the next message is sent once the previous one was delivered. */
export async function ferrySerial(edge: LocalEdge, place: Place, tag: string, size: number, count: number, log: LogLevel = "full"): Promise<Sample> {
  const net = await network(edge, place, tag, count, 1, { log });
  const tally = net.tallies[0] as Tally;
  try {
    const t0 = performance.now();
    for (let i = 1; i <= count; i++) {
      net.clock.mark(i);
      await net.source.send(CHANNEL, payload(size, i));
      await tally.until(i, 30_000, `message ${i}`);
    }
    const secs = (performance.now() - t0) / 1000;
    check(net.tallies, count);
    const l = latency(tally.latencies);
    return { rate: count / secs, p50: l.p50, p99: l.p99, extra: Object.fromEntries(Object.entries(await measuredOps(edge, tag, 1, count)).map(([k, v]) => [`ops.${k}`, v])) };
  } finally {
    await net.close();
  }
}
