import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { join } from "node:path";
import { ROOT } from "./edge.ts";
import { waitFor } from "./wait.ts";

/**
 * The connector runs at partners' sites on Node >= 20: tests run the CLI on
 * the machine's own Node (not the project's Node 22) to keep that promise.
 */
const PATH_WITHOUT_PROJECT_NODE = (process.env.PATH ?? "")
  .split(":")
  .filter((p) => !p.includes("node_modules"))
  .join(":");
export const CLI = join(ROOT, "bin/ferry.js");

export function cliEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return { ...process.env, PATH: PATH_WITHOUT_PROJECT_NODE, ...extra };
}

export type CliResult = { code: number; stdout: string; stderr: string };

/** Runs `ferry ARGS…` to completion. */
export function ferry(args: string[], env: Record<string, string> = {}, cwd = ROOT): CliResult {
  const r = spawnSync("node", [CLI, ...args], { cwd, env: cliEnv(env), encoding: "utf8", timeout: 60_000 });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/**
 * A running `ferry connector run --config FILE` process, with its JSON log
 * lines; `cli` runs another build of the CLI (e.g. a previous release).
 */
export class ConnectorProcess {
  readonly lines: Record<string, unknown>[] = [];
  private buf = "";
  readonly proc: ChildProcess;

  constructor(
    readonly config: string,
    env: Record<string, string> = {},
    readonly cli: string = CLI,
  ) {
    this.proc = spawn("node", [cli, "connector", "run", "--config", config], { env: cliEnv({ FERRY_LOG_LEVEL: "debug", ...env }), stdio: ["ignore", "pipe", "pipe"] });
    const onData = (d: Buffer) => {
      this.buf += d.toString();
      let i: number;
      while ((i = this.buf.indexOf("\n")) >= 0) {
        const line = this.buf.slice(0, i);
        this.buf = this.buf.slice(i + 1);
        try {
          this.lines.push(JSON.parse(line) as Record<string, unknown>);
        } catch {
          this.lines.push({ msg: line, raw: true });
        }
      }
    };
    this.proc.stderr?.on("data", onData);
    this.proc.stdout?.on("data", onData);
  }

  count(msg: string): number {
    return this.lines.filter((l) => l.msg === msg).length;
  }

  /** Waits until the connector has connected `times` times in all (a reconnect is the second). */
  async connected(times = 1, timeoutMs = 30_000): Promise<void> {
    await waitFor(`${this.config} to connect (${times})`, () => {
      if (this.proc.exitCode !== null) throw new Error(`connector exited ${this.proc.exitCode}: ${JSON.stringify(this.lines.slice(-5))}`);
      return this.count("connected") >= times;
    }, timeoutMs);
  }

  /** `ferry connector status --json` of the same CLI (each release reads its own status file). */
  status<T = { connected: boolean; receipts: { count: number }[]; channels: Record<string, { backlog: { count: number } }> }>(): T {
    const r = spawnSync("node", [this.cli, "connector", "status", "--config", this.config, "--json"], { env: cliEnv(), encoding: "utf8", timeout: 30_000 });
    if (r.status !== 0) throw new Error(`status of ${this.config} failed: ${r.stderr}`);
    return JSON.parse(r.stdout) as T;
  }

  async stop(signal: NodeJS.Signals = "SIGTERM"): Promise<number | null> {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return this.proc.exitCode;
    const exited = new Promise<number | null>((r) => this.proc.once("exit", (code) => r(code)));
    this.proc.kill(signal);
    return exited;
  }
}
