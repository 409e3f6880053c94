import { mkdtemp, readdir, readFile, readlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { ReceiptLog } from "./receipt-log.ts";

const lines = async (file: string) => (await readFile(file, "utf8")).split("\n").filter(Boolean);

describe("the receipts a sender keeps", () => {
  it("appends in order through one handle, and goes on from a file an earlier run wrote", async () => {
    const dir = await mkdtemp(join(tmpdir(), "ferry-receipts-"));
    const file = join(dir, "receipts.jsonl");
    await writeFile(file, '{"n":0}\n');
    const log = new ReceiptLog(file);
    await Promise.all(Array.from({ length: 50 }, (_, i) => log.append(JSON.stringify({ n: i + 1 }))));
    const open = (await Promise.all((await readdir("/proc/self/fd")).map((fd) => readlink(`/proc/self/fd/${fd}`).catch(() => "")))).filter((t) => t === file);
    expect(open).toHaveLength(1);
    await log.close();
    expect((await lines(file)).map((l) => (JSON.parse(l) as { n: number }).n)).toEqual(Array.from({ length: 51 }, (_, i) => i));
  });

  it("moves a full file aside and keeps a bounded number of them, newest first", async () => {
    const dir = await mkdtemp(join(tmpdir(), "ferry-receipts-"));
    const file = join(dir, "receipts.jsonl");
    // Lines of 100 bytes with the newline; 1,000 bytes a file, two files moved aside at most.
    const log = new ReceiptLog(file, 1000, 2);
    const line = (i: number) => JSON.stringify({ n: i, pad: "x".repeat(99 - JSON.stringify({ n: i, pad: "" }).length) });
    for (let i = 1; i <= 45; i++) await log.append(line(i));
    await log.close();
    expect((await readdir(dir)).sort()).toEqual(["receipts.jsonl", "receipts.jsonl.1", "receipts.jsonl.2"]);
    const n = async (f: string) => (await lines(join(dir, f))).map((l) => (JSON.parse(l) as { n: number }).n);
    expect(await n("receipts.jsonl.2")).toEqual([21, 22, 23, 24, 25, 26, 27, 28, 29, 30]);
    expect(await n("receipts.jsonl.1")).toEqual([31, 32, 33, 34, 35, 36, 37, 38, 39, 40]);
    expect(await n("receipts.jsonl")).toEqual([41, 42, 43, 44, 45]);
    for (const f of await readdir(dir)) expect((await readFile(join(dir, f), "utf8")).length).toBeLessThanOrEqual(1000);
  });
});
