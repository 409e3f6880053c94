/**
 * The comparator: NATS JetStream (Debian's nats-server), started here on
 * loopback with its store on disk. The same workload as Ferry's: a
 * file-backed stream with `Nats-Msg-Id` dedup (the sender's exactly-once),
 * publish acknowledgements awaited (windowed: many outstanding), and a
 * durable explicit-ack pull consumer per destination that checks order.
 * nats-server 2.9 acknowledges a publish before any fsync (its store syncs
 * every two minutes) and has no setting to sync every message.
 */
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AckPolicy, connect, DeliverPolicy, nanos, StorageType, type NatsConnection } from "nats";
import { freePort } from "../test/helpers/edge.ts";
import { waitFor } from "../test/helpers/wait.ts";
import { payload, SendClock, Tally } from "./ferry.ts";
import { Service } from "./services.ts";
import { latency, type Sample } from "./stats.ts";
import { MIB } from "./config.ts";
import { PeakWatch } from "./proc.ts";

const CANDIDATES = [process.env.FERRY_BENCH_NATS_SERVER, "/usr/sbin/nats-server", "/usr/bin/nats-server", "/usr/local/bin/nats-server"];
export const NATS_INSTALL = "apt-get install -y nats-server";

export function natsServerPath(): string | null {
  for (const c of CANDIDATES) if (c && existsSync(c)) return c;
  return null;
}

export function natsVersion(bin: string): string {
  return spawnSync(bin, ["--version"], { encoding: "utf8" }).stdout.trim();
}

export class JetStream {
  private n = 0;
  private constructor(
    readonly service: Service,
    readonly nc: NatsConnection,
    private readonly dir: string,
  ) {}

  static async start(bin: string): Promise<JetStream> {
    const dir = await mkdtemp(join(tmpdir(), "ferry-bench-nats-"));
    const port = await freePort();
    const service = Service.spawn(bin, ["-js", "-a", "127.0.0.1", "-p", String(port), "-sd", dir], process.env);
    const nc = await waitFor("nats-server to accept connections", async () => {
      if (service.exited) throw new Error(`nats-server exited: ${service.output.slice(-1000)}`);
      return await connect({ servers: `127.0.0.1:${port}`, maxReconnectAttempts: 0 }).catch(() => undefined);
    }, 30_000, 100);
    return new JetStream(service, nc, dir);
  }

  async close(): Promise<void> {
    await this.nc.close().catch(() => undefined);
    await this.service.stop();
    await rm(this.dir, { recursive: true, force: true });
  }

  /** A fresh stream and `consumers` durable explicit-ack consumers. */
  private async setup(consumers: number): Promise<string> {
    const name = `BENCH${++this.n}`;
    const jsm = await this.nc.jetstreamManager();
    await jsm.streams.add({ name, subjects: [`${name}.>`], storage: StorageType.File, duplicate_window: nanos(120_000), max_msg_size: 2 * MIB });
    for (let i = 0; i < consumers; i++) {
      await jsm.consumers.add(name, { durable_name: `c${i}`, ack_policy: AckPolicy.Explicit, deliver_policy: DeliverPolicy.All, max_ack_pending: 8192 });
    }
    return name;
  }

  /** Consumes on every consumer into tallies; returns a stopper. */
  private async consume(stream: string, tallies: Tally[]): Promise<() => void> {
    const js = this.nc.jetstream();
    const stops: (() => void)[] = [];
    for (const [i, tally] of tallies.entries()) {
      const c = await js.consumers.get(stream, `c${i}`);
      const msgs = await c.consume({ max_messages: 1024 });
      stops.push(() => void msgs.stop());
      void (async () => {
        for await (const m of msgs) {
          tally.add(Buffer.from(m.data.buffer, m.data.byteOffset, 4).readUInt32LE(0), m.data.byteLength);
          m.ack();
        }
      })();
    }
    return () => stops.forEach((s) => s());
  }

  /** Windowed (up to `window` publishes unacknowledged) or one at a time (`window` 1, waiting for delivery). */
  async run(size: number, count: number, opts: { fanout?: number; serial?: boolean } = {}): Promise<Sample> {
    const fanout = opts.fanout ?? 1;
    const stream = await this.setup(fanout);
    const clock = new SendClock(count);
    const tallies = Array.from({ length: fanout }, () => new Tally(clock));
    const stop = await this.consume(stream, tallies);
    const watch = new PeakWatch(() => [this.service.pid]);
    const js = this.nc.jetstream();
    const window = opts.serial ? 1 : Math.max(1, Math.min(8192, Math.floor((16 * MIB) / size)));
    const inflight = new Set<Promise<unknown>>();
    try {
      const t0 = performance.now();
      for (let i = 1; i <= count; i++) {
        clock.mark(i);
        const p = js.publish(`${stream}.m`, payload(size, i), { msgID: `${stream}-${i}` });
        inflight.add(p);
        void p.finally(() => inflight.delete(p));
        if (opts.serial) {
          await p;
          await (tallies[0] as Tally).until(i, 30_000, `message ${i}`);
        } else if (inflight.size >= window) await Promise.race(inflight);
      }
      await Promise.all(inflight);
      await Promise.all(tallies.map((t, i) => t.until(count, 120_000 + count * 2, `consumer ${i}`)));
      const secs = (performance.now() - t0) / 1000;
      for (const [i, t] of tallies.entries()) if (t.error) throw new Error(`consumer ${i}: ${t.error}`);
      const l = latency(tallies.flatMap((t) => t.latencies));
      return { rate: count / secs, p50: l.p50, p99: l.p99, rssMiB: { "nats-server": watch.stop() }, extra: { mbPerSec: (count * size) / MIB / secs } };
    } finally {
      watch.stop();
      stop();
      const jsm = await this.nc.jetstreamManager();
      await jsm.streams.delete(stream).catch(() => undefined);
    }
  }
}
