import { readFile } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { parse as parseToml, TomlError } from "smol-toml";
import { z } from "zod";
import { Name } from "../../wire/index.ts";

/**
 * The connector's TOML config. Every field is validated at start; an error
 * names the file, the field and what to write instead. Relative paths are
 * resolved against the config file's folder, so a config works wherever the
 * agent is started from.
 */
const FileChannel = z.strictObject({
  name: Name,
  protocol: z.literal("file"),
  /** Folder whose complete files are sent. Omit for a receive-only channel. */
  outbox: z.string().min(1).optional(),
  /** Folder that delivered files are placed in. Omit for a send-only channel. */
  inbox: z.string().min(1).optional(),
  /** When a file in the outbox is complete: size and mtime unchanged across polls, or a NAME.done marker. */
  pickup: z.enum(["stable", "done-marker"]).default("stable"),
  /** Send files in subfolders too, with the subfolder as part of the name. */
  recursive: z.boolean().default(false),
  /** What to do when a delivered name exists in the inbox. */
  collisions: z.enum(["suffix", "overwrite", "fail"]).default("suffix"),
  poll_ms: z.number().int().min(20).max(60_000).default(250),
  content_type: z.string().min(1).max(255).default("application/octet-stream"),
});

/** host:port on loopback only: the ingress must never open a port beyond this machine. */
const LoopbackListen = z
  .string()
  .regex(/^(127\.\d{1,3}\.\d{1,3}\.\d{1,3}|localhost|\[::1\]):\d{1,5}$/, "listen on loopback only, e.g. 127.0.0.1:8081 (Ferry opens no port beyond this machine)");

const Retry = {
  /** Give up on one attempt after this long. */
  timeout_ms: z.number().int().min(100).max(600_000).default(30_000),
  /** Longest pause between attempts (they back off with jitter up to this). */
  max_backoff_ms: z.number().int().min(10).max(600_000).default(60_000),
};

const HttpChannel = z.strictObject({
  name: Name,
  protocol: z.literal("http"),
  /** Local ingress: POST a body to http://LISTEN/ to send it. Omit for a receive-only channel. */
  listen: LoopbackListen.optional(),
  /** Delivery: each message is POSTed here; retried until the application answers 2xx. */
  webhook: z.url({ protocol: /^https?$/ }).optional(),
  content_type: z.string().min(1).max(255).default("application/octet-stream"),
  ...Retry,
});

const ExecChannel = z.strictObject({
  name: Name,
  protocol: z.literal("exec"),
  /** The program and its arguments; each message is written to its stdin. Exit 0 means delivered. */
  command: z.array(z.string().min(1)).min(1, "give the program to run, e.g. command = [\"/usr/local/bin/import\", \"--stdin\"]"),
  /** Working directory of the command (default: the config's folder). */
  cwd: z.string().min(1).optional(),
  ...Retry,
});

const Channel = z.discriminatedUnion("protocol", [FileChannel, HttpChannel, ExecChannel]);
export type FileChannelConfig = z.infer<typeof FileChannel>;
export type HttpChannelConfig = z.infer<typeof HttpChannel>;
export type ExecChannelConfig = z.infer<typeof ExecChannel>;
export type ChannelConfig = z.infer<typeof Channel>;

const ConfigSchema = z.strictObject({
  /** Folder with the identity from `ferry connector enroll`, the spool and the delivery log. */
  state: z.string().min(1),
  /** Edge URLs to use instead of those learnt at enrolment (first is preferred). */
  edges: z.array(z.url({ protocol: /^https?$/ })).min(1).optional(),
  log: z.enum(["pretty", "json"]).optional(),
  /** Seconds between heartbeats; the edge may ask for a shorter interval, never a longer one. */
  heartbeat_seconds: z.number().int().min(1).max(300).default(15),
  /** Large files (over 1 MiB) uploaded, and fetched, at the same time. */
  transfers: z.number().int().min(1).max(16).default(2),
  /** Local health, readiness and Prometheus endpoint, e.g. "127.0.0.1:9464". */
  health: LoopbackListen.optional(),
  channels: z.array(Channel).min(1, "declare at least one [[channels]] table"),
});
export type ConnectorConfig = z.infer<typeof ConfigSchema>;

export class ConfigError extends Error {
  override readonly name = "ConfigError";
  readonly code = "CONFIG";
  constructor(
    readonly file: string,
    readonly field: string,
    message: string,
  ) {
    super(`${file}: ${field}: ${message}`);
  }
}

function hint(path: PropertyKey[], message: string): string {
  const field = path.at(-1);
  if (message.startsWith("Unrecognized key")) return `${message}; check the spelling against the README's config reference`;
  if (field === "protocol") return `${message}; supported protocols: file, http, exec`;
  return message;
}

export function validateConfig(raw: unknown, file: string): ConnectorConfig {
  const r = ConfigSchema.safeParse(raw);
  if (!r.success) {
    const issue = r.error.issues[0];
    const path = issue?.path ?? [];
    const field = path.map((p, i) => (typeof p === "number" ? `[${p}]` : i === 0 ? String(p) : `.${String(p)}`)).join("") || "(top level)";
    throw new ConfigError(file, field, hint(path, issue?.message ?? "invalid"));
  }
  const cfg = r.data;
  const seen = new Set<string>();
  cfg.channels.forEach((ch, i) => {
    if (seen.has(ch.name)) throw new ConfigError(file, `channels[${i}].name`, `channel '${ch.name}' is declared twice`);
    seen.add(ch.name);
    if (ch.protocol === "file" && !ch.outbox && !ch.inbox) {
      throw new ConfigError(file, `channels[${i}]`, "a file channel needs an outbox (to send), an inbox (to receive) or both");
    }
    if (ch.protocol === "http" && !ch.listen && !ch.webhook) {
      throw new ConfigError(file, `channels[${i}]`, "an http channel needs listen (to send), webhook (to receive) or both");
    }
  });
  const listens = cfg.channels.flatMap((ch, i) => (ch.protocol === "http" && ch.listen ? [[ch.listen, i] as const] : []));
  for (const [l, i] of listens) {
    if (listens.filter(([x]) => x === l).length > 1) throw new ConfigError(file, `channels[${i}].listen`, `${l} is used by two channels`);
  }
  const base = dirname(resolve(file));
  return {
    ...cfg,
    state: resolve(base, cfg.state),
    channels: cfg.channels.map((ch) => {
      switch (ch.protocol) {
        case "file":
          return { ...ch, ...(ch.outbox ? { outbox: resolve(base, ch.outbox) } : {}), ...(ch.inbox ? { inbox: resolve(base, ch.inbox) } : {}) };
        case "exec":
          return { ...ch, cwd: resolve(base, ch.cwd ?? ".") };
        default:
          return ch;
      }
    }),
  };
}

export async function loadConfig(file: string): Promise<ConnectorConfig> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (e) {
    throw new ConfigError(file, "(file)", `cannot read the config file: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  let raw: unknown;
  try {
    raw = parseToml(text);
  } catch (e) {
    const where = e instanceof TomlError ? `line ${e.line}, column ${e.column}` : "(syntax)";
    throw new ConfigError(file, where, `not valid TOML: ${(e as Error).message.split("\n")[0]}`);
  }
  return validateConfig(raw, file);
}
