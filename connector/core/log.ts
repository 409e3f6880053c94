/**
 * Structured logs: JSON lines for machines, one readable line for a person
 * at a terminal. The core takes a Logger, so tests and embedders can pass
 * their own.
 */
export type Level = "debug" | "info" | "warn" | "error";
export type Logger = (level: Level, msg: string, fields?: Record<string, unknown>) => void;

const order: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };

/** C0 and C1 control characters: a partner's file name holding an escape sequence must not drive a terminal (also the progress bars'). */
export const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;
/** JSON, with the controls JSON leaves as they are (DEL and C1) escaped too. */
const escaped = (v: unknown): string => (JSON.stringify(v) ?? String(v)).replace(/[\u007f-\u009f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);

export function createLogger(opts: { format?: "pretty" | "json"; level?: Level; stream?: NodeJS.WritableStream } = {}): Logger {
  const stream = opts.stream ?? process.stderr;
  const format = opts.format ?? ((stream as { isTTY?: boolean }).isTTY ? "pretty" : "json");
  const min = order[opts.level ?? ((process.env.FERRY_LOG_LEVEL as Level | undefined) ?? "info")] ?? 20;
  return (level, msg, fields = {}) => {
    if (order[level] < min) return;
    if (format === "json") {
      stream.write(`${JSON.stringify({ time: new Date().toISOString(), level, msg, ...fields })}\n`);
    } else {
      const extra = Object.entries(fields)
        .map(([k, v]) => `${k}=${typeof v === "string" && !CONTROL.test(v) ? v : escaped(v)}`)
        .join(" ");
      stream.write(`${new Date().toISOString().slice(11, 23)} ${level.padEnd(5)} ${msg}${extra ? ` ${extra}` : ""}\n`);
    }
  };
}

export const silentLogger: Logger = () => undefined;
