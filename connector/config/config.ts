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
 *
 * The messages come from FIELD_HELP (below), not from zod: zod knows the
 * type a field lacks ("expected array, received string"), not what a person
 * should write there. Every field has an entry, with an example; the tests
 * walk the schema and fail for a field without one.
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
const LoopbackListen = z.string().regex(/^(127\.\d{1,3}\.\d{1,3}\.\d{1,3}|localhost|\[::1\]):\d{1,5}$/);

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

/** What a shell accepts as a variable name. */
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

const ExecChannel = z.strictObject({
  name: Name,
  protocol: z.literal("exec"),
  /** The program and its arguments; each message is written to its stdin. Exit 0 means delivered. */
  command: z.array(z.string().min(1)).min(1),
  /** Working directory of the command (default: the config's folder). */
  cwd: z.string().min(1).optional(),
  /**
   * Variables the command needs, e.g. env = { DB_URL = "postgres://localhost/app" }.
   * The command does not inherit the connector's environment (it may hold
   * secrets, such as an admin token): it gets PATH, HOME, LANG, LC_*, TZ and
   * TMPDIR from it, the FERRY_* envelope variables, and these (which may
   * override the inherited ones, not the FERRY_* ones).
   */
  env: z.record(z.string().regex(ENV_NAME), z.string()).default({}),
  ...Retry,
});

const Channel = z.discriminatedUnion("protocol", [FileChannel, HttpChannel, ExecChannel]);
export type FileChannelConfig = z.infer<typeof FileChannel>;
export type HttpChannelConfig = z.infer<typeof HttpChannel>;
export type ExecChannelConfig = z.infer<typeof ExecChannel>;
export type ChannelConfig = z.infer<typeof Channel>;

/** The variants by protocol: which keys each kind of channel takes. */
export const CHANNEL_SCHEMAS = { file: FileChannel, http: HttpChannel, exec: ExecChannel } as const;

export const ConfigSchema = z.strictObject({
  /** Folder with the identity from `ferry connector enroll`, the spool and the delivery log. */
  state: z.string().min(1),
  /** Edge URLs to use instead of those learnt at enrolment (first is preferred). */
  edges: z.array(z.url({ protocol: /^https?$/ })).min(1).optional(),
  log: z.enum(["pretty", "json"]).optional(),
  /** Seconds between heartbeats; the edge may ask for a shorter interval, never a longer one. */
  heartbeat_seconds: z.number().int().min(1).max(300).default(15),
  /** Large files (over 1 MiB) uploaded, and fetched, at the same time. */
  transfers: z.number().int().min(1).max(16).default(2),
  /**
   * Take large files relayed straight from their sender while this connector
   * is online (the edge stores none of their bytes; this disk holds them),
   * instead of fetching them from the edge's store afterwards.
   */
  relay: z.boolean().default(true),
  /** Local health, readiness and Prometheus endpoint, e.g. "127.0.0.1:9464". */
  health: LoopbackListen.optional(),
  channels: z.array(Channel).min(1),
});
export type ConnectorConfig = z.infer<typeof ConfigSchema>;

/**
 * What each field holds, with an example: the message for any mistake in
 * it (a missing required field gets "required: " in front, a wrong value
 * gets what was found after). Top-level fields and channel fields are
 * separate, since a channel field is reported as channels[i].FIELD.
 */
export const FIELD_HELP: { top: Record<string, string>; channel: Record<string, string> } = {
  top: {
    state: `the folder made by 'ferry connector enroll', e.g. state = "./a-state"`,
    edges: `a list of http(s) edge URLs, the first preferred, e.g. edges = ["https://edge-1.example", "https://edge-2.example"]`,
    log: `"json" (JSON lines) or "pretty" (one readable line per event), e.g. log = "json"`,
    heartbeat_seconds: `seconds between heartbeats, an integer 1-300, e.g. heartbeat_seconds = 15`,
    transfers: `large files moved at the same time (each way), an integer 1-16, e.g. transfers = 2`,
    relay: `true (take large files relayed straight from their sender while online) or false (always fetch them from the edge's store), e.g. relay = false`,
    health: `listen on loopback only, e.g. health = "127.0.0.1:9464" (Ferry opens no port beyond this machine)`,
    channels: `declare at least one [[channels]] table, e.g. [[channels]] name = "orders" protocol = "file" outbox = "./a-out" (one key per line)`,
  },
  channel: {
    name: `use 1-64 of a-z 0-9 . _ - starting with a letter or digit, e.g. name = "orders" (the address is <connector>/orders)`,
    protocol: `supported protocols: file, http, exec, e.g. protocol = "file"`,
    outbox: `the folder whose complete files are sent, e.g. outbox = "./a-out"`,
    inbox: `the folder delivered files are placed in, e.g. inbox = "./a-in"`,
    pickup: `"stable" (size and time unchanged across polls) or "done-marker" (X is sent once X.done exists), e.g. pickup = "done-marker"`,
    recursive: `true or false (send files in subfolders, keeping the subfolder in the name), e.g. recursive = true`,
    collisions: `"suffix" ("report (1).csv"), "overwrite" or "fail", e.g. collisions = "suffix"`,
    poll_ms: `milliseconds between outbox scans, an integer 20-60000, e.g. poll_ms = 250`,
    content_type: `a media type of at most 255 characters, e.g. content_type = "text/csv"`,
    listen: `listen on loopback only, e.g. 127.0.0.1:8081 (Ferry opens no port beyond this machine)`,
    webhook: `an http:// or https:// URL each delivery is POSTed to, e.g. webhook = "http://127.0.0.1:9000/ferry"`,
    timeout_ms: `milliseconds before one attempt is given up, an integer 100-600000, e.g. timeout_ms = 30000`,
    max_backoff_ms: `the longest pause between attempts in milliseconds, an integer 10-600000, e.g. max_backoff_ms = 60000`,
    command: `a list of program and arguments, e.g. command = ["/usr/local/bin/import", "--stdin"]`,
    cwd: `the command's working folder, e.g. cwd = "/srv/import"`,
    env: `a table of variables the command needs (names of A-Z a-z 0-9 _, string values), e.g. env = { DB_URL = "postgres://localhost/app" }`,
  },
};

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

/** A value as the person wrote it, short: what was found, next to what is expected. */
function shown(v: unknown): string {
  if (Array.isArray(v)) return "a list";
  if (v !== null && typeof v === "object") return "a table";
  const s = typeof v === "string" ? JSON.stringify(v) : String(v);
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
}

/** Edit distance, to suggest the key a typo meant. */
function distance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0] as number;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const cur = row[j] as number;
      row[j] = Math.min(cur + 1, (row[j - 1] as number) + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = cur;
    }
  }
  return row[b.length] as number;
}

function unknownKey(key: string, known: string[], where: string, elsewhere = ""): string {
  const k = key.toLowerCase();
  // A near spelling ("outbx"), or a shortened one ("heartbeat" for heartbeat_seconds).
  const near = known.map((c) => [c, c.startsWith(k) || k.startsWith(c) ? 0 : distance(k, c)] as const).sort((x, y) => x[1] - y[1])[0];
  const guess = near && near[1] <= Math.max(1, Math.floor(key.length / 3)) ? ` (did you mean "${near[0]}"?)` : "";
  return `Unrecognized key "${key}"${guess}${elsewhere}; ${where} takes: ${known.join(", ")}`;
}

function at(raw: unknown, path: PropertyKey[]): unknown {
  let v = raw;
  for (const p of path) v = v !== null && typeof v === "object" ? (v as Record<PropertyKey, unknown>)[p] : undefined;
  return v;
}

/** The message for one zod issue: what the field holds and an example, never zod's type jargon. */
function explain(issue: z.core.$ZodIssue, raw: unknown): string {
  const path = issue.path;
  const inChannel = path[0] === "channels" && typeof path[1] === "number";
  if (issue.code === "unrecognized_keys") {
    const key = issue.keys[0] ?? "";
    if (!inChannel) return unknownKey(key, Object.keys(ConfigSchema.shape), "the top level");
    const protocol = at(raw, [...path, "protocol"]);
    const schema = CHANNEL_SCHEMAS[protocol as keyof typeof CHANNEL_SCHEMAS];
    if (!schema) return `Unrecognized key "${key}"`;
    // A key of another kind of channel ("webhook" in a file channel): say which.
    const owners = Object.entries(CHANNEL_SCHEMAS).filter(([p, s]) => p !== protocol && key in s.shape).map(([p]) => p);
    const elsewhere = owners.length > 0 ? ` ("${key}" belongs to ${owners.join(" and ")} channels)` : "";
    return unknownKey(key, Object.keys(schema.shape), `a ${String(protocol)} channel`, elsewhere);
  }
  // The entry itself: [[channels]] written as [channels], or a list of strings.
  if (path.length === 1 && path[0] === "channels" && issue.code === "invalid_type" && at(raw, path) !== undefined && !Array.isArray(at(raw, path))) {
    return `write each channel as a [[channels]] table (double brackets), e.g. [[channels]] name = "orders" protocol = "file" outbox = "./a-out"`;
  }
  if (inChannel && path.length === 2) return `each [[channels]] entry is a table with a name and a protocol, e.g. [[channels]] name = "orders" protocol = "file" outbox = "./a-out" (found ${shown(at(raw, path))})`;
  const field = inChannel ? path[2] : path[0];
  const help = typeof field === "string" ? (inChannel ? FIELD_HELP.channel[field] : FIELD_HELP.top[field]) : undefined;
  if (!help) return issue.message;
  if (at(raw, inChannel ? path.slice(0, 3) : path.slice(0, 1)) === undefined) return `required: ${help}`;
  const found = at(raw, path);
  if (field === "env" && path.length === 4) {
    const key = String(path[3]);
    return ENV_NAME.test(key)
      ? `the value of ${key} must be a string (quote it), e.g. env = { ${key} = "${typeof found === "number" || typeof found === "boolean" ? String(found) : "value"}" }`
      : `"${key}" is not a variable name: use A-Z a-z 0-9 _ not starting with a digit, e.g. env = { DB_URL = "postgres://localhost/app" }`;
  }
  // An empty list: "found a list" says nothing; what is missing is an entry.
  if (issue.code === "too_small" && Array.isArray(found)) return help;
  return `${help} (found ${shown(found)})`;
}

/** Where the issue is, the way a person reads TOML: channels[0].poll_ms. */
function fieldName(path: PropertyKey[]): string {
  return path.map((p, i) => (typeof p === "number" ? `[${p}]` : i === 0 ? String(p) : `.${String(p)}`)).join("") || "(top level)";
}

export function validateConfig(raw: unknown, file: string): ConnectorConfig {
  const r = ConfigSchema.safeParse(raw);
  if (!r.success) {
    // An unknown key first: a typo ("stat") usually explains the missing field ("state").
    const issues = [...r.error.issues].sort((a, b) => Number(b.code === "unrecognized_keys") - Number(a.code === "unrecognized_keys"));
    const issue = issues[0];
    if (!issue) throw new ConfigError(file, "(top level)", "invalid");
    // The invalid discriminator is reported at channels[i] or channels[i].protocol depending on zod's version: name the field.
    const path = issue.code === "invalid_union" && issue.path.length === 2 ? [...issue.path, "protocol"] : issue.path;
    throw new ConfigError(file, fieldName(path), explain({ ...issue, path } as z.core.$ZodIssue, raw));
  }
  const cfg = r.data;
  const base = dirname(resolve(file));
  const seen = new Set<string>();
  /** Folder -> where it is used first: one folder with two roles sends what it receives, or mixes streams. */
  const folders = new Map<string, string>();
  const useFolder = (dir: string, field: string) => {
    const abs = resolve(base, dir);
    const other = folders.get(abs);
    if (other) throw new ConfigError(file, field, `${dir} is also ${other}; give each outbox and inbox its own folder (a folder that is both would send back what it receives)`);
    folders.set(abs, field);
  };
  cfg.channels.forEach((ch, i) => {
    if (seen.has(ch.name)) throw new ConfigError(file, `channels[${i}].name`, `channel '${ch.name}' is declared twice; give each [[channels]] table its own name`);
    seen.add(ch.name);
    if (ch.protocol === "file") {
      if (!ch.outbox && !ch.inbox) throw new ConfigError(file, `channels[${i}]`, `a file channel needs an outbox (to send), an inbox (to receive) or both, e.g. outbox = "./a-out"`);
      if (ch.outbox) useFolder(ch.outbox, `channels[${i}].outbox`);
      if (ch.inbox) useFolder(ch.inbox, `channels[${i}].inbox`);
    }
    if (ch.protocol === "http" && !ch.listen && !ch.webhook) {
      throw new ConfigError(file, `channels[${i}]`, `an http channel needs listen (to send), webhook (to receive) or both, e.g. listen = "127.0.0.1:8081"`);
    }
    if (ch.protocol === "exec") {
      const reserved = Object.keys(ch.env).find((k) => k.toUpperCase().startsWith("FERRY_"));
      if (reserved) throw new ConfigError(file, `channels[${i}].env.${reserved}`, "FERRY_* variables carry the message's envelope and are set by the connector; choose another name");
    }
  });
  const listens = [
    ...cfg.channels.flatMap((ch, i) => (ch.protocol === "http" && ch.listen ? [[ch.listen, `channels[${i}].listen`] as const] : [])),
    ...(cfg.health ? [[cfg.health, "health"] as const] : []),
  ];
  for (const [l, field] of listens) {
    const users = listens.filter(([x]) => x === l);
    if (users.length > 1) throw new ConfigError(file, field, `${l} is used by ${users.map(([, f]) => f).join(" and ")}; give each its own port`);
  }
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
