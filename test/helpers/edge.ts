import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { waitFor } from "./wait.ts";

export const ROOT = fileURLToPath(new URL("../..", import.meta.url));

/** Ports this process has handed out: the kernel may offer a just-closed port again. */
const given = new Set<number>();

/** A loopback port free now and not handed out before by this process (two asked in a row once came back equal). */
export async function freePort(): Promise<number> {
  for (;;) {
    const port = await new Promise<number>((resolve, reject) => {
      const srv = createServer();
      srv.once("error", reject);
      srv.listen(0, "127.0.0.1", () => {
        const addr = srv.address();
        const p = typeof addr === "object" && addr ? addr.port : 0;
        srv.close(() => resolve(p));
      });
    });
    if (!given.has(port)) {
      given.add(port);
      return port;
    }
  }
}

/** The edge's port was taken between finding it free and binding it. */
class PortTaken extends Error {}

/**
 * A real local edge, started exactly as `npm start` does (wrangler dev on
 * workerd), on a free port with its own state folder, so a test can stop it
 * and start it again on the same persisted state.
 */
export class LocalEdge {
  private proc: ChildProcess | null = null;
  private output = "";
  adminToken = "";

  private constructor(
    readonly stateDir: string,
    readonly port: number,
  ) {}

  static async start(opts: { stateDir?: string; port?: number } = {}): Promise<LocalEdge> {
    const stateDir = opts.stateDir ?? (await mkdtemp(join(tmpdir(), "ferry-edge-")));
    // A port found free can be taken before wrangler binds it (other edges' workerd open ports of their
    // own meanwhile): then another port, a few times, unless the caller chose it.
    for (let attempt = 1; ; attempt++) {
      const edge = new LocalEdge(stateDir, opts.port ?? (await freePort()));
      try {
        await edge.up();
        return edge;
      } catch (e) {
        if (opts.port !== undefined || attempt >= 3 || !(e instanceof PortTaken)) throw e;
      }
    }
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  get logs(): string {
    return this.output;
  }

  async up(): Promise<void> {
    this.output = "";
    const proc = spawn(process.execPath, [join(ROOT, "scripts/start.mjs")], {
      cwd: ROOT,
      env: { ...process.env, PORT: String(this.port), FERRY_STATE_DIR: this.stateDir },
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.proc = proc;
    proc.stdout?.on("data", (d: Buffer) => (this.output += d.toString()));
    proc.stderr?.on("data", (d: Buffer) => (this.output += d.toString()));
    // Under the e2e hooks' 120 s: an edge that does not come up fails here, with what it said, not as a bare hook timeout.
    // One whose start script exited fails at once.
    const up = await waitFor(
      `the edge on port ${this.port} to be healthy`,
      async () => {
        if (proc.exitCode !== null) return "exited";
        return this.output.includes("is up") && (await fetch(`${this.url}/healthz`)).ok ? "up" : undefined;
      },
      100_000,
      100,
    ).catch((e: unknown) => {
      proc.kill("SIGTERM");
      throw new Error(`${(e as Error).message}; the edge's last output: ${this.output.slice(-2000)}`);
    });
    if (up === "exited") {
      const said = `start exited ${proc.exitCode}: ${this.output.slice(-2000)}`;
      throw this.output.includes("Address already in use") ? new PortTaken(said) : new Error(said);
    }
    this.adminToken = (await readFile(join(this.stateDir, "admin-token"), "utf8")).trim();
  }

  /** Stops the edge (SIGTERM to the start script, which stops wrangler's whole group). */
  async down(): Promise<void> {
    const proc = this.proc;
    if (!proc || proc.exitCode !== null) return;
    const exited = new Promise((r) => proc.once("exit", r));
    proc.kill("SIGTERM");
    await exited;
    // The port is free again once nothing answers there.
    await waitFor("the edge to stop answering", async () => {
      try {
        await fetch(`${this.url}/healthz`);
        return false;
      } catch {
        return true;
      }
    }, 20_000, 100);
  }

  async close(opts: { keepState?: boolean } = {}): Promise<void> {
    await this.down();
    if (!opts.keepState) await rm(this.stateDir, { recursive: true, force: true });
  }

  async api<T = Record<string, unknown>>(method: string, path: string, body?: unknown): Promise<{ status: number; body: T }> {
    const res = await fetch(`${this.url}${path}`, {
      method,
      headers: { authorization: `Bearer ${this.adminToken}`, ...(body === undefined ? {} : { "content-type": "application/json" }) },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    return { status: res.status, body: (await res.json()) as T };
  }
}
