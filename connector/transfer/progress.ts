import { CONTROL } from "../core/log.ts";

/** Where a large transfer stands; the connector emits it as `transfer` events. */
export type TransferProgress = { direction: "up" | "down"; channel: string; id: string; name: string; done: number; total: number };

const MiB = 1024 * 1024;
/** Every control character of a name (the class the logs escape). */
const CONTROLS = new RegExp(CONTROL.source, "g");

function duration(s: number): string {
  if (!Number.isFinite(s)) return "--:--";
  const m = Math.floor(s / 60);
  return m >= 60 ? `${Math.floor(m / 60)}h${String(m % 60).padStart(2, "0")}m` : `${String(m).padStart(2, "0")}:${String(Math.floor(s % 60)).padStart(2, "0")}`;
}

/**
 * One line per transfer on a terminal: a bar, percent, rate and ETA,
 * redrawn in place at most a few times a second. Only used when the
 * stream is a TTY; logs stay the record.
 */
export class ProgressBars {
  private readonly rows = new Map<string, { p: TransferProgress; start: number; startBytes: number }>();
  private drawn = 0;
  private last = 0;

  constructor(
    private readonly out: NodeJS.WriteStream,
    private readonly now: () => number = Date.now,
  ) {}

  update(p: TransferProgress): void {
    const key = `${p.direction}:${p.id}`;
    const row = this.rows.get(key);
    if (row) row.p = p;
    else this.rows.set(key, { p, start: this.now(), startBytes: p.done });
    const finished = p.done >= p.total;
    if (finished || this.now() - this.last > 200) this.draw();
    if (finished) this.rows.delete(key);
  }

  /** The lines as drawn now (also what tests read). */
  lines(): string[] {
    const width = 24;
    return [...this.rows.values()].map(({ p, start, startBytes }) => {
      const frac = p.total > 0 ? Math.min(1, p.done / p.total) : 1;
      const secs = Math.max(0.001, (this.now() - start) / 1000);
      const rate = (p.done - startBytes) / secs;
      const eta = rate > 0 ? (p.total - p.done) / rate : Number.POSITIVE_INFINITY;
      const filled = Math.round(frac * width);
      // A partner's file name may hold control characters (an escape sequence would drive this terminal): shown as "?".
      const shown = p.name.replace(CONTROLS, "?");
      const name = shown.length > 28 ? `…${shown.slice(-27)}` : shown.padEnd(28);
      return `${p.direction === "up" ? "↑" : "↓"} ${name} [${"#".repeat(filled)}${"-".repeat(width - filled)}] ${(frac * 100).toFixed(0).padStart(3)}% ${(rate / MiB).toFixed(1).padStart(6)} MiB/s ETA ${duration(eta)}`;
    });
  }

  private draw(): void {
    this.last = this.now();
    const lines = this.lines();
    // Move up over what was drawn before, and redraw.
    let s = this.drawn > 0 ? `\x1b[${this.drawn}F` : "";
    for (const l of lines) s += `\x1b[2K${l}\n`;
    for (let i = lines.length; i < this.drawn; i++) s += "\x1b[2K\n";
    this.out.write(s);
    this.drawn = Math.max(lines.length, this.drawn);
  }
}
