import { createReadStream } from "node:fs";
import { spawn } from "node:child_process";
import { join } from "node:path";
import type { ExecChannelConfig } from "../../config/config.ts";
import type { Connector } from "../../core/connector.ts";
import { CallbackReceiver, type Delivery } from "../../core/callback-receiver.ts";
import type { Channel } from "../channel.ts";
import { untilDelivered } from "../retry.ts";

const KEEP_OUTPUT = 4096;

/** What a command may take from the connector's environment: how to find programs, where home and temp are, locale and time zone. */
const INHERITED = /^(PATH|HOME|LANG|LANGUAGE|LC_[A-Z_]+|TZ|TMPDIR)$/;

/**
 * The command's environment. Not the connector's whole environment: that may
 * hold secrets the command has no business with (an admin token, proxy
 * credentials). The channel's `env` table adds what the command needs and
 * may override the inherited variables; the FERRY_* envelope comes last, so
 * nothing overrides it (the config refuses FERRY_* names anyway).
 */
export function commandEnv(parent: NodeJS.ProcessEnv, channelEnv: Record<string, string>, envelope: Record<`FERRY_${string}`, string>): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(parent)) if (v !== undefined && INHERITED.test(k)) env[k] = v;
  return { ...env, ...channelEnv, ...envelope };
}

/**
 * The `exec` channel, for legacy systems: each delivered message is written
 * to the stdin of `command`; exit status 0 means delivered, anything else
 * is retried with backoff. The envelope comes as environment variables
 * (FERRY_MESSAGE_ID, the idempotency key; FERRY_REDELIVERY=true when this
 * may be a repeat after a connector crash). The command gets a minimal
 * environment (see commandEnv), plus the channel's `env` table.
 */
export class ExecChannel implements Channel {
  private readonly abort = new AbortController();

  constructor(
    readonly cfg: ExecChannelConfig,
    private readonly connector: Connector,
    private readonly stateDir: string,
  ) {}

  get name(): string {
    return this.cfg.name;
  }

  async open(): Promise<void> {
    const receiver = await CallbackReceiver.open(join(this.stateDir, `delivered-${this.cfg.name}.json`), (d) => this.run(d));
    this.connector.receive(this.cfg.name, receiver);
  }

  start(): void {}

  private async run(d: Delivery): Promise<void> {
    const [program, ...args] = this.cfg.command as [string, ...string[]];
    await untilDelivered(
      "command",
      (signal) =>
        new Promise<void>((resolve, reject) => {
          const child = spawn(program, args, {
            cwd: this.cfg.cwd,
            signal,
            stdio: ["pipe", "pipe", "pipe"],
            env: commandEnv(process.env, this.cfg.env, {
              FERRY_MESSAGE_ID: d.meta.id,
              FERRY_SOURCE: d.meta.source,
              FERRY_SEQUENCE: String(d.meta.dseq),
              FERRY_CONTENT_TYPE: d.meta.contentType,
              FERRY_SHA256: d.meta.sha256,
              FERRY_SIZE: String(d.meta.size),
              FERRY_FILENAME: d.meta.fields?.filename ?? "",
              FERRY_REDELIVERY: String(d.redelivery),
            }),
          });
          let output = "";
          const keep = (b: Buffer) => {
            if (output.length < KEEP_OUTPUT) output += b.toString().slice(0, KEEP_OUTPUT - output.length);
          };
          child.stdout.on("data", keep);
          child.stderr.on("data", keep);
          // A command that exits without reading its input is judged by its exit status, not by EPIPE.
          child.stdin.on("error", () => undefined);
          if (d.file) createReadStream(d.file).on("error", () => child.stdin.destroy()).pipe(child.stdin);
          else child.stdin.end(d.payload);
          child.once("error", (e: NodeJS.ErrnoException) => reject(new Error(`cannot run ${program}: ${e.code ?? e.message}`)));
          child.once("close", (code, sig) => {
            if (code === 0) resolve();
            else reject(new Error(`${program} ${sig ? `was killed by ${sig}` : `exited ${code}`}${output ? `: ${output.trim().slice(0, 500)}` : ""}`));
          });
        }),
      { maxBackoffMs: this.cfg.max_backoff_ms, timeoutMs: this.cfg.timeout_ms, signal: this.abort.signal, log: this.connector.log, fields: { channel: this.cfg.name, id: d.meta.id, command: program } },
    );
    this.connector.log("info", "delivered", { channel: this.cfg.name, dseq: d.meta.dseq, id: d.meta.id, command: program, redelivery: d.redelivery });
  }

  async stop(): Promise<void> {
    this.abort.abort();
  }
}
