/**
 * `tsx bench/markdown.ts [results.json]`: the latest results as Markdown
 * tables, for docs/performance.md (figures, ratios against targets, cost).
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { ROOT } from "../test/helpers/edge.ts";
import type { Ratio, Row } from "./report.ts";

type Results = {
  at: string;
  machine: Record<string, string | number>;
  figures: Row[];
  ratios: Ratio[];
  cost: { paths: { path: string; usdPerMillion: number; breakdown: Record<string, number>; target: string; met: boolean }[]; idleConnectorPerMonth: { usd: number } };
};

const file = process.argv[2] ?? join(ROOT, "bench", "results", "latest.json");
const r = JSON.parse(await readFile(file, "utf8")) as Results;
const n = (x: number | undefined, d = 0) => (x === undefined || x === null || !Number.isFinite(x) ? "-" : x >= 100 ? Math.round(x).toLocaleString("en-US") : x.toFixed(d || (x < 10 ? 2 : 1)));
const md = (head: string[], rows: string[][]) => [`| ${head.join(" | ")} |`, `|${head.map(() => "---").join("|")}|`, ...rows.map((x) => `| ${x.join(" | ")} |`)].join("\n");

console.log(`Run of ${r.at}: ${Object.entries(r.machine).map(([k, v]) => `${k} ${v}`).join(", ")}.\n`);
console.log(
  md(
    ["case", "system", "throughput", "p50", "p99", "peak RSS (MiB)", "runs"],
    r.figures.map((f) => {
      const g = f.figure;
      const status = g.skipped ? `skipped: ${g.skipped}` : g.failed ? `failed: ${g.failed}` : null;
      return [
        f.case,
        f.system,
        status ?? `${n(g.rate, 1)} ${f.unit}`,
        status || g.p50 === undefined ? "" : `${n(g.p50)} ms`,
        status || g.p99 === undefined ? "" : `${n(g.p99)} ms`,
        g.rssMiB ? Object.entries(g.rssMiB).map(([k, v]) => `${k} ${Math.round(v)}`).join(", ") : "",
        `${g.runs}${g.failures.length ? ` (${g.failures.length} failed)` : ""}`,
      ];
    }),
  ),
);
console.log("");
console.log(md(["ratio (Ferry / comparator)", "value", "target", "met"], r.ratios.map((x) => [x.name, x.value === null ? "-" : x.value.toFixed(2), x.target, x.met === null ? (x.note ?? "-") : x.met ? "yes" : `**no**${x.note ? ` (${x.note})` : ""}`])));
console.log("");
console.log(
  md(
    ["path (analytic)", "$ per million 1 KiB messages", "largest terms", "target", "met"],
    r.cost.paths.map((p) => [
      p.path,
      p.usdPerMillion.toFixed(2),
      Object.entries(p.breakdown).sort((a, b) => b[1] - a[1]).slice(0, 3).map(([k, v]) => `${k} ${v.toFixed(3)}`).join("; "),
      p.target,
      p.met ? "yes" : "**no**",
    ]),
  ),
);
console.log(`\nIdle connector: $${r.cost.idleConnectorPerMonth.usd.toFixed(4)} per month.`);
