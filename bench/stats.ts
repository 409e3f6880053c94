/** Percentiles, medians and the shape of one measured figure. */

export function pct(xs: number[], q: number): number {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((x, y) => x - y);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))] as number;
}

/** The middle value; with an even count (a run failed), the mean of the two middle ones. */
export function median(xs: number[]): number {
  const s = xs.filter((x) => Number.isFinite(x)).sort((x, y) => x - y);
  if (s.length === 0) return Number.NaN;
  const m = s.length >> 1;
  return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
}

/** A latency sample set, in milliseconds. */
export type Latency = { p50: number; p99: number };
export const latency = (ms: number[]): Latency => ({ p50: pct(ms, 0.5), p99: pct(ms, 0.99) });

/**
 * What one case run yields: throughput in its unit, optional latency and
 * peak memory, or the reason it could not run. Several runs are reduced to
 * their medians by `reduce`.
 */
export type Sample = {
  /** msgs/s or MB/s, see `unit`. */
  rate?: number;
  p50?: number;
  p99?: number;
  /** Peak RSS, MiB, per process role ("sender", "receiver", "workerd", ...). */
  rssMiB?: Record<string, number>;
  /** Anything else worth keeping in the JSON. */
  extra?: Record<string, number | string>;
  failed?: string;
  skipped?: string;
};

export type Figure = Sample & { runs: number; failures: string[] };

export function reduce(samples: Sample[]): Figure {
  const ok = samples.filter((s) => !s.failed && !s.skipped);
  const failures = samples.filter((s) => s.failed).map((s) => s.failed as string);
  const skipped = samples.find((s) => s.skipped)?.skipped;
  if (ok.length === 0) {
    return { runs: samples.length, failures, ...(skipped ? { skipped } : { failed: failures[0] ?? "no run" }) };
  }
  const med = (pick: (s: Sample) => number | undefined) => {
    const xs = ok.map(pick).filter((x): x is number => x !== undefined);
    return xs.length ? median(xs) : undefined;
  };
  const roles = [...new Set(ok.flatMap((s) => Object.keys(s.rssMiB ?? {})))];
  const extraKeys = [...new Set(ok.flatMap((s) => Object.keys(s.extra ?? {})))];
  const fig: Figure = { runs: ok.length, failures };
  const rate = med((s) => s.rate);
  const p50 = med((s) => s.p50);
  const p99 = med((s) => s.p99);
  if (rate !== undefined) fig.rate = rate;
  if (p50 !== undefined) fig.p50 = p50;
  if (p99 !== undefined) fig.p99 = p99;
  if (roles.length) fig.rssMiB = Object.fromEntries(roles.map((r) => [r, med((s) => s.rssMiB?.[r]) as number]));
  if (extraKeys.length) {
    fig.extra = Object.fromEntries(
      extraKeys.map((k) => {
        const vals = ok.map((s) => s.extra?.[k]).filter((v) => v !== undefined);
        return [k, typeof vals[0] === "number" ? median(vals as number[]) : String(vals[vals.length - 1])];
      }),
    );
  }
  return fig;
}

/** Runs `fn`, turning a throw into a failed sample: one case never stops the others. */
export async function guarded(what: string, fn: () => Promise<Sample>): Promise<Sample> {
  try {
    return await fn();
  } catch (e) {
    const msg = (e as Error).message?.split("\n")[0] ?? String(e);
    console.error(`  ${what}: failed: ${msg}`);
    return { failed: msg.slice(0, 300) };
  }
}
