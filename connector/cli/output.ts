/** Where the CLI writes; tests pass their own. */
export type Out = { stdout(s: string): void; stderr(s: string): void };

export const processOut: Out = {
  stdout: (s) => process.stdout.write(s.endsWith("\n") ? s : `${s}\n`),
  stderr: (s) => process.stderr.write(s.endsWith("\n") ? s : `${s}\n`),
};

/** `--json` prints the API's JSON as is; otherwise a readable rendering. */
export function printJsonOr(out: Out, json: boolean, value: unknown, human: () => string): void {
  out.stdout(json ? JSON.stringify(value, null, 2) : human());
}

export function table(head: string[], rows: string[][]): string {
  if (rows.length === 0) return "(none)";
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (r: string[]) => r.map((c, i) => c.padEnd(widths[i] ?? 0)).join("  ").trimEnd();
  return [line(head), ...rows.map(line)].join("\n");
}
