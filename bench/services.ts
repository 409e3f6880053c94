/**
 * Processes the bench starts beside the Ferry edges: the Node relay (raw
 * WebSocket ceiling) and the minimal Durable Objects (wrangler dev on the
 * ceiling worker). Loopback only, free ports, stopped with SIGTERM to their
 * process group (SIGKILL on wrangler alone would leave workerd behind).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { freePort, ROOT } from "../test/helpers/edge.ts";
import { waitFor } from "../test/helpers/wait.ts";
import { MIB } from "./config.ts";
import type { Sample } from "./stats.ts";

type LocalEnv = (root: string, extra?: Record<string, string>) => NodeJS.ProcessEnv;

/** scripts/local-env.mjs: Node 22 first on PATH, no metrics, the observability collector off. */
export async function localEnv(extra: Record<string, string> = {}): Promise<NodeJS.ProcessEnv> {
  const mod = (await import(pathToFileURL(join(ROOT, "scripts", "local-env.mjs")).href)) as { localEnv: LocalEnv };
  return mod.localEnv(ROOT, extra);
}

/** A child in its own process group, its output kept for error messages. */
export class Service {
  output = "";
  private constructor(readonly proc: ChildProcess) {
    proc.stdout?.on("data", (d: Buffer) => (this.output += d.toString()));
    proc.stderr?.on("data", (d: Buffer) => (this.output += d.toString()));
  }

  static spawn(cmd: string, args: string[], env: NodeJS.ProcessEnv, cwd = ROOT): Service {
    return new Service(spawn(cmd, args, { cwd, env, detached: true, stdio: ["ignore", "pipe", "pipe"] }));
  }

  get pid(): number {
    return this.proc.pid ?? -1;
  }

  get exited(): boolean {
    return this.proc.exitCode !== null || this.proc.signalCode !== null;
  }

  async stop(): Promise<void> {
    if (this.exited) return;
    const gone = new Promise((r) => this.proc.once("exit", r));
    try {
      process.kill(-this.pid, "SIGTERM");
    } catch {
      return;
    }
    const t = setTimeout(() => {
      try {
        process.kill(-this.pid, "SIGKILL");
      } catch {
        // already gone
      }
    }, 10_000);
    await gone;
    clearTimeout(t);
  }
}

/** The raw WebSocket relay (bench/relay.ts) in its own Node process. */
export async function startRelay(): Promise<{ url: string; service: Service }> {
  const env = await localEnv();
  const service = Service.spawn(join(ROOT, "node_modules", ".bin", "tsx"), [join(ROOT, "bench", "relay.ts")], env);
  const port = await waitFor("the relay to listen", () => {
    if (service.exited) throw new Error(`relay exited: ${service.output}`);
    const m = /^(\d+)\n/.exec(service.output);
    return m ? Number(m[1]) : undefined;
  }, 30_000);
  return { url: `ws://127.0.0.1:${port}`, service };
}

/** The minimal Durable Objects, on the same local workerd as Ferry, state on disk. */
/** The local R2 ceiling (bench/ceiling/worker.ts): MB/s for `mb` MiB written, then read back. */
export async function r2Ceiling(wsUrl: string, name: string, mb: number): Promise<Sample> {
  const res = await fetch(`${wsUrl.replace(/^ws/, "http")}/r2/${name}?mb=${mb}`);
  if (!res.ok) throw new Error(`the R2 ceiling answered ${res.status}: ${await res.text()}`);
  const r = (await res.json()) as { bytes: number; writeSeconds: number; readSeconds: number };
  return { rate: r.bytes / MIB / (r.writeSeconds + r.readSeconds), extra: { writeMBps: r.bytes / MIB / r.writeSeconds, readMBps: r.bytes / MIB / r.readSeconds } };
}

export async function startCeiling(): Promise<{ url: string; service: Service; close(): Promise<void> }> {
  const persist = await mkdtemp(join(tmpdir(), "ferry-bench-ceiling-"));
  const port = await freePort();
  const env = await localEnv({ WRANGLER_LOG_PATH: join(persist, "logs") });
  const service = Service.spawn(
    join(ROOT, "node_modules", ".bin", "wrangler"),
    ["dev", "--config", join(ROOT, "bench", "ceiling", "wrangler.toml"), "--ip", "127.0.0.1", "--port", String(port), "--persist-to", persist, "--show-interactive-dev-session=false", "--log-level", "warn"],
    env,
  );
  await waitFor("the ceiling worker to answer", async () => {
    if (service.exited) throw new Error(`wrangler exited: ${service.output.slice(-2000)}`);
    return (await fetch(`http://127.0.0.1:${port}/`)).status === 404;
  }, 120_000, 200);
  return {
    url: `ws://127.0.0.1:${port}`,
    service,
    close: async () => {
      await service.stop();
      await rm(persist, { recursive: true, force: true });
    },
  };
}
