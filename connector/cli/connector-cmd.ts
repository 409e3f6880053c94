import { readFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { loadConfig } from "../config/config.ts";
import { enroll } from "../identity/identity.ts";
import { Connector } from "../core/connector.ts";
import { Agent, STATUS_FILE } from "../agent/agent.ts";
import { ProgressBars } from "../transfer/progress.ts";
import { describeSend, sendOnce } from "./send.ts";
import { doctor } from "./doctor.ts";
import { CliError, DEFAULT_EDGE } from "./admin-client.ts";
import { printJsonOr, type Out } from "./output.ts";

export const CONNECTOR_HELP = `ferry connector — the site agent

Usage:
  ferry connector enroll --edge URL --token T --state DIR
                         generate this site's key pair and enrol it with a one-time token
  ferry connector run --config FILE
                         run the channels of a TOML config until SIGTERM/SIGINT
  ferry connector status --config FILE | --state DIR
                         connection, per-channel backlog, last deliveries, receipts
  ferry connector send --config FILE --channel NAME [FILE|-] [--name N] [--content-type T]
                         send one message from the shell (from stdin with -)
  ferry connector doctor --config FILE
                         check config, folders, permissions, clock, edge and enrolment
  ferry connector rotate-keys --config FILE
                         new signing and encryption keys (a running connector: kill -USR2 PID)

Options:
  --json                 machine-readable output (not for run: it prints logs;
                         set log = "json" in its config for JSON lines)
  -h, --help             this help

Minimal config (TOML):
  state = "./a-state"
  [[channels]]
  name = "orders"
  protocol = "file"
  outbox = "./a-out"
  inbox = "./a-in"
`;


export async function connectorCommand(argv: string[], out: Out): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    strict: true,
    options: {
      edge: { type: "string" },
      token: { type: "string" },
      state: { type: "string" },
      config: { type: "string", short: "c" },
      force: { type: "boolean", default: false },
      channel: { type: "string" },
      name: { type: "string" },
      "content-type": { type: "string" },
      timeout: { type: "string", default: "30" },
      json: { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  const [verb] = positionals;
  if (values.help || !verb) {
    out.stdout(CONNECTOR_HELP);
    return values.help ? 0 : 2;
  }
  switch (verb) {
    case "enroll":
    case "enrol": {
      if (!values.token) throw new CliError("--token: required (the one-time token from 'ferry admin connector add NAME')", 2);
      if (!values.state) throw new CliError("--state: required (the folder that will hold this connector's identity and spool)", 2);
      const edge = values.edge ?? process.env.FERRY_EDGE ?? DEFAULT_EDGE;
      const id = await enroll({ edge, token: values.token, stateDir: resolve(values.state), force: values.force });
      printJsonOr(out, values.json, { tenant: id.tenant, connector: id.connector, connectorId: id.connectorId, edges: id.edges, state: resolve(values.state) }, () =>
        `enrolled connector '${id.connector}' (tenant ${id.tenant}); identity stored in ${resolve(values.state as string)}/identity.json (mode 0600)`,
      );
      return 0;
    }
    case "run": {
      if (!values.config) throw new CliError("--config: required (a TOML file; see 'ferry connector --help')", 2);
      // Refused rather than ignored: someone asking for JSON from a long-running
      // process wants JSON logs, and silently getting pretty lines would surprise.
      if (values.json) throw new CliError(`--json: 'run' prints logs, not a result; for JSON lines set log = "json" in ${values.config} (they are also JSON whenever stderr is not a terminal)`, 2);
      return run(values.config);
    }
    case "status": {
      let stateDir = values.state;
      if (!stateDir && values.config) stateDir = (await loadConfig(values.config)).state;
      if (!stateDir) throw new CliError("--config or --state: required", 2);
      const status = await readStatus(stateDir);
      printJsonOr(out, values.json, status, () => renderStatus(status));
      return 0;
    }
    case "send": {
      if (!values.config) throw new CliError("--config: required", 2);
      if (!values.channel) throw new CliError("--channel: required (the local channel to send on)", 2);
      const timeout = Number(values.timeout);
      if (!Number.isFinite(timeout) || timeout <= 0) throw new CliError("--timeout: seconds, a positive number", 2);
      const r = await sendOnce({
        config: values.config,
        channel: values.channel,
        ...(positionals[1] ? { file: positionals[1] } : {}),
        ...(values.name ? { name: values.name } : {}),
        ...(values["content-type"] ? { contentType: values["content-type"] } : {}),
        timeoutMs: timeout * 1000,
      });
      printJsonOr(out, values.json, r, () => describeSend(r));
      return r.via === "spool" && !r.accepted ? 4 : 0;
    }
    case "rotate-keys": {
      if (!values.config) throw new CliError("--config: required", 2);
      const cfg = await loadConfig(values.config);
      let connector: Connector;
      try {
        connector = await Connector.open({ stateDir: cfg.state, log: () => undefined, ...(cfg.edges ? { edges: cfg.edges } : {}) });
      } catch (e) {
        if ((e as { code?: string }).code === "LOCKED") {
          const st = await readStatus(cfg.state);
          throw new CliError(`the connector is running (pid ${st.pid}); rotate its keys in place with: kill -USR2 ${st.pid}`);
        }
        throw e;
      }
      try {
        const before = connector.identity.publicJwk.x;
        await connector.rotateKeys();
        printJsonOr(out, values.json, { connector: connector.name, rotated: true, previousKey: before, key: connector.identity.publicJwk.x }, () => `keys of '${connector.name}' rotated; the previous key no longer works at the edge`);
      } finally {
        await connector.stop();
      }
      return 0;
    }
    case "doctor": {
      if (!values.config) throw new CliError("--config: required", 2);
      const checks = await doctor(values.config);
      printJsonOr(out, values.json, { ok: checks.every((c) => c.ok), checks }, () =>
        checks.map((c) => `${c.ok ? "ok  " : "FAIL"} ${c.check.padEnd(18)} ${c.detail}${c.fix ? `\n     fix: ${c.fix}` : ""}`).join("\n"),
      );
      return checks.every((c) => c.ok) ? 0 : 1;
    }
    default:
      throw new CliError(`unknown command 'connector ${verb}'; see 'ferry connector --help'`, 2);
  }
}

type StatusFile = ReturnType<Connector["status"]> & { pid: number; updatedAt: number; running?: boolean };

async function readStatus(stateDir: string): Promise<StatusFile> {
  let status: StatusFile;
  try {
    status = JSON.parse(await readFile(join(stateDir, STATUS_FILE), "utf8")) as StatusFile;
  } catch {
    throw new CliError(`no status in ${stateDir}: the connector has not run there yet ('ferry connector run --config FILE')`);
  }
  let running = true;
  try {
    process.kill(status.pid, 0);
  } catch {
    running = false;
  }
  return { ...status, running, connected: running && status.connected };
}

function renderStatus(s: StatusFile): string {
  const lines = [
    `connector  ${s.connector} (tenant ${s.tenant})`,
    `process    ${s.running ? `running, pid ${s.pid}` : "not running"}`,
    `edge       ${s.connected ? `connected to ${s.edge}` : "not connected"}${s.fatal ? ` (refused: ${s.fatal.reason})` : ""}`,
    `updated    ${new Date(s.updatedAt).toISOString()}`,
    "channels:",
  ];
  for (const [name, c] of Object.entries(s.channels)) {
    const ch = c as { backlog: { count: number; bytes: number }; lastSeq: number; acked: number };
    lines.push(`  ${name.padEnd(16)} backlog ${ch.backlog.count} (${ch.backlog.bytes} B)  sent ${ch.lastSeq}  accepted ${ch.acked}`);
  }
  const streams = Object.entries(s.streams);
  if (streams.length > 0) lines.push("deliveries:");
  for (const [stream, d] of streams) lines.push(`  ${stream.padEnd(32)} up to ${d.upTo} at ${new Date(d.at).toISOString()}`);
  if (s.receipts.length > 0) lines.push("recent receipts:");
  for (const r of s.receipts) lines.push(`  ${r.channel} -> ${r.destination}: ${r.count} ${r.status} at ${new Date(r.at).toISOString()}`);
  return lines.join("\n");
}

/** Runs until SIGTERM/SIGINT; a graceful stop finishes captures in progress, nothing is lost. */
async function run(configFile: string): Promise<number> {
  const agent = await Agent.start(configFile);
  // In a terminal, large transfers show a progress bar each (the logs stay the record).
  if (process.stderr.isTTY) {
    const bars = new ProgressBars(process.stderr);
    agent.connector.on("transfer", (p) => bars.update(p));
  }
  return new Promise<number>((resolvePromise) => {
    const stop = (signal: string, code: number) => void agent.stop(signal).then(() => resolvePromise(code));
    process.on("SIGTERM", () => stop("SIGTERM", 0));
    process.on("SIGINT", () => stop("SIGINT", 0));
    process.on("SIGHUP", () => void agent.reload().catch(() => undefined));
    process.on("SIGUSR2", () => void agent.connector.rotateKeys().catch((e: unknown) => agent.log("error", "key rotation failed; the old keys stay in use", { error: (e as Error).message })));
    // Revoked: nothing more to do here, and saying so beats retrying forever.
    const fatalCheck = setInterval(() => {
      const st = agent.connector.status();
      if (st.fatal) {
        clearInterval(fatalCheck);
        agent.log("error", "the edge refused this connector for good; exiting", { reason: st.fatal.reason });
        stop("revoked", 3);
      }
    }, 500);
    fatalCheck.unref();
  });
}
