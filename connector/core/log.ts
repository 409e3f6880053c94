/**
 * Structured logs: JSON lines for machines, one readable line for a person
 * at a terminal. The core takes a Logger, so tests and embedders can pass
 * their own.
 */
export type Level = "debug" | "info" | "warn" | "error";
export type Logger = (level: Level, msg: string, fields?: Record<string, unknown>) => void;

const order: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };

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
        .map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`)
        .join(" ");
      stream.write(`${new Date().toISOString().slice(11, 23)} ${level.padEnd(5)} ${msg}${extra ? ` ${extra}` : ""}\n`);
    }
  };
}

export const silentLogger: Logger = () => undefined;
