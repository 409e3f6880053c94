import { Backoff } from "../core/backoff.ts";
import type { Logger } from "../core/log.ts";

export class AbortedError extends Error {
  override readonly name = "AbortedError";
  readonly code = "ABORTED";
}

function pause(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(new AbortedError("stopped"));
    const t = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(new AbortedError("stopped"));
    };
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

/**
 * Tries a delivery until it succeeds, backing off with jitter up to
 * `maxBackoffMs` between attempts. Only stopping the channel ends it early
 * (the message is then not acknowledged, and the edge redelivers it later).
 */
export async function untilDelivered(
  what: string,
  attempt: (signal: AbortSignal) => Promise<void>,
  opts: { maxBackoffMs: number; timeoutMs: number; signal: AbortSignal; log: Logger; fields: Record<string, unknown> },
): Promise<void> {
  const backoff = new Backoff(200, opts.maxBackoffMs);
  for (let n = 1; ; n++) {
    if (opts.signal.aborted) throw new AbortedError("stopped");
    const timeout = AbortSignal.timeout(opts.timeoutMs);
    try {
      await attempt(AbortSignal.any([opts.signal, timeout]));
      if (n > 1) opts.log("info", `${what} succeeded after ${n} attempts`, opts.fields);
      return;
    } catch (e) {
      if (opts.signal.aborted) throw new AbortedError("stopped");
      const delay = backoff.next() + 100;
      opts.log(n === 1 ? "warn" : "debug", `${what} failed; retrying`, { ...opts.fields, attempt: n, retryInMs: delay, error: timeout.aborted ? `timed out after ${opts.timeoutMs} ms` : (e as Error).message });
      await pause(delay, opts.signal);
    }
  }
}
