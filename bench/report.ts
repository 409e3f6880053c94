/** The terminal table and the JSON file. */
import type { Figure } from "./stats.ts";

export type Row = { case: string; system: string; unit: string; figure: Figure };
export type Ratio = { name: string; value: number | null; target: string; met: boolean | null; note?: string };

const num = (x: number | undefined, digits = 0) =>
  x === undefined || !Number.isFinite(x) ? "-" : x >= 100 || digits === 0 ? Math.round(x).toLocaleString("en-US") : x.toFixed(digits);
const ms = (x: number | undefined) => (x === undefined || !Number.isFinite(x) ? "-" : x < 10 ? `${x.toFixed(2)} ms` : `${Math.round(x).toLocaleString("en-US")} ms`);

function table(head: string[], rows: string[][]): string {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i] as number)).join("  ").trimEnd();
  return [line(head), line(widths.map((w) => "-".repeat(w))), ...rows.map(line)].join("\n");
}

export function figuresTable(rows: Row[]): string {
  return table(
    ["case", "system", "throughput", "p50", "p99", "peak RSS MiB"],
    rows.map((r) => {
      const f = r.figure;
      const status = f.skipped ? `skipped: ${f.skipped}` : f.failed ? `failed: ${f.failed}` : null;
      const rss = f.rssMiB ? Object.entries(f.rssMiB).map(([k, v]) => `${k} ${num(v)}`).join(", ") : "";
      return [r.case, r.system, status ?? `${num(f.rate, 1)} ${r.unit}`, status ? "" : ms(f.p50), status ? "" : ms(f.p99), status ? "" : rss];
    }),
  );
}

export function ratiosTable(ratios: Ratio[]): string {
  return table(
    ["ratio (Ferry / comparator)", "value", "target", "met"],
    ratios.map((r) => [r.name, r.value === null ? "-" : r.value.toFixed(2), r.target, r.met === null ? (r.note ?? "n/a") : r.met ? "yes" : `NO${r.note ? ` (${r.note})` : ""}`]),
  );
}

export function costTable(rows: { path: string; usdPerMillion: number; breakdown: Record<string, number>; target: string; met: boolean }[]): string {
  return table(
    ["cost (list prices; analytic unless MEASURED)", "$ / million msgs", "largest terms", "target", "met"],
    rows.map((r) => [
      r.path,
      r.usdPerMillion.toFixed(3),
      Object.entries(r.breakdown)
        .sort((a, b) => b[1] - a[1])
        .slice(0, 3)
        .map(([k, v]) => `${k} ${v.toFixed(3)}`)
        .join("; "),
      r.target,
      r.met ? "yes" : "NO",
    ]),
  );
}
