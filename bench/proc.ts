/**
 * Memory of processes, from /proc (Linux): peak RSS (VmHWM) and current RSS
 * (VmRSS), the processes started under this one, and resetting a peak so a
 * long-lived process (workerd) is measured per case.
 */
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { rm } from "node:fs/promises";

const MIB = 1024 * 1024;

function status(pid: number): Map<string, string> {
  const m = new Map<string, string>();
  for (const line of readFileSync(`/proc/${pid}/status`, "utf8").split("\n")) {
    const i = line.indexOf(":");
    if (i > 0) m.set(line.slice(0, i), line.slice(i + 1).trim());
  }
  return m;
}

const kib = (v: string | undefined) => (v ? Number(v.replace(/\s*kB$/, "")) * 1024 : 0);

/** Peak resident memory since start (or since the last `resetPeak`), MiB. */
export function peakRssMiB(pid: number): number {
  return kib(status(pid).get("VmHWM")) / MIB;
}

export function rssMiB(pid: number): number {
  return kib(status(pid).get("VmRSS")) / MIB;
}

/** Resets VmHWM to the current RSS (Linux >= 4.0, own processes). False if the kernel refused. */
export function resetPeak(pid: number): boolean {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, "5");
    return true;
  } catch {
    return false;
  }
}

function parentOf(pid: number): number {
  try {
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
  } catch {
    return -1;
  }
}

function commOf(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/comm`, "utf8").trim();
  } catch {
    return "";
  }
}

/** Every process below `root` (children, grandchildren...). */
export function descendants(root: number): number[] {
  const parents = new Map<number, number>();
  for (const d of readdirSync("/proc")) {
    const pid = Number(d);
    if (Number.isInteger(pid)) parents.set(pid, parentOf(pid));
  }
  const out: number[] = [];
  const walk = (p: number) => {
    for (const [c, pp] of parents) {
      if (pp === p) {
        out.push(c);
        walk(c);
      }
    }
  };
  walk(root);
  return out;
}

/**
 * The workerd processes this bench started for an edge whose state is in
 * `stateDir`: descendants of this process that inherited FERRY_STATE_DIR
 * (several edges may run side by side, and other people's workerd too).
 */
export function workerdOf(stateDir: string | null): number[] {
  return descendants(process.pid).filter((pid) => {
    if (commOf(pid) !== "workerd") return false;
    if (stateDir === null) return true;
    try {
      return readFileSync(`/proc/${pid}/environ`, "utf8").split("\0").includes(`FERRY_STATE_DIR=${stateDir}`);
    } catch {
      return false;
    }
  });
}

/**
 * Peak RSS of a set of processes over a stretch of work: resets their
 * peaks first and also samples VmRSS, so the figure holds even where the
 * kernel does not allow resetting (then the sampled maximum is used).
 */
export class PeakWatch {
  private readonly sampled = new Map<number, number>();
  private readonly timer: NodeJS.Timeout;
  private readonly resettable: boolean;

  constructor(private readonly pids: () => number[]) {
    this.resettable = pids().every((p) => resetPeak(p));
    this.timer = setInterval(() => this.sample(), 250);
    this.timer.unref();
    this.sample();
  }

  private sample(): void {
    for (const p of this.pids()) {
      try {
        this.sampled.set(p, Math.max(this.sampled.get(p) ?? 0, rssMiB(p)));
      } catch {
        // exited
      }
    }
  }

  /** Stops watching; the summed peak of the processes, MiB. */
  stop(): number {
    clearInterval(this.timer);
    this.sample();
    let total = 0;
    for (const [p, s] of this.sampled) {
      let peak = s;
      if (this.resettable) {
        try {
          peak = Math.max(s, peakRssMiB(p));
        } catch {
          // exited: the sampled value stands
        }
      }
      total += peak;
    }
    return total;
  }
}

/**
 * Removes a case's folder. A connector that was just stopped may still be
 * finishing a write there (ENOTEMPTY): retry, and never let cleanup turn a
 * measured case into a failure.
 */
export async function removeQuietly(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true, maxRetries: 10, retryDelay: 200 }).catch((e: unknown) => console.error(`  (left ${dir}: ${(e as Error).message})`));
}
