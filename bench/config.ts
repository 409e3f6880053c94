/**
 * The suite's sizes, from the environment, with the defaults.
 * FERRY_BENCH_QUICK=1 shrinks every case so a development run takes a
 * couple of minutes; an explicit size variable still wins over quick mode.
 */
const quick = process.env.FERRY_BENCH_QUICK === "1";

function size(name: string, full: number, small: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return quick ? small : full;
  const n = Number(raw);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`${name}=${raw}: expected a positive number`);
  return n;
}

export const config = {
  quick,
  runs: size("FERRY_BENCH_RUNS", 3, 1),
  small: size("FERRY_BENCH_SMALL", 20_000, 3_000),
  serial: size("FERRY_BENCH_SERIAL", 20_000, 200),
  medium: size("FERRY_BENCH_MEDIUM", 400, 40),
  largeMb: size("FERRY_BENCH_LARGE_MB", 1024, 64),
  fanout: size("FERRY_BENCH_FANOUT", 10, 3),
  fanoutMessages: size("FERRY_BENCH_FANOUT_MESSAGES", 5_000, 500),
  connectors: size("FERRY_BENCH_CONNECTORS", 1_000, 40),
  queued: size("FERRY_BENCH_QUEUED", 1_000_000, 20_000),
  /**
   * One unrecorded round of the small windowed case (a tenth of its size)
   * through every system before the first measured run: workerd's and the
   * bench process's JavaScript start cold, and the first run of a case used
   * to read a quarter lower than the next. FERRY_BENCH_WARMUP=0 skips it.
   */
  warmup: process.env.FERRY_BENCH_WARMUP !== "0",
  /** Only these cases (comma-separated names), for development; all by default. */
  only: (process.env.FERRY_BENCH_ONLY ?? "").split(",").map((s) => s.trim()).filter(Boolean),
};

export const KIB = 1024;
export const MIB = 1024 * 1024;
/** Message sizes of the cases. */
export const SMALL_BYTES = KIB;
export const MEDIUM_BYTES = 256 * KIB;

export function wanted(name: string): boolean {
  return config.only.length === 0 || config.only.includes(name);
}
