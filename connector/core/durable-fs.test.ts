import { appendFile, mkdtemp, readdir, readFile, readlink, stat, unlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { JournaledState } from "./durable-fs.ts";

type Marks = { hwm: number; note?: string };
const fresh = (): Marks => ({ hwm: 0 });
const tmp = () => mkdtemp(join(tmpdir(), "ferry-journal-"));

describe("JournaledState", () => {
  it("reads back the newest save after a restart, and starts fresh where nothing was saved", async () => {
    const file = join(await tmp(), "marks.json");
    const a = await JournaledState.open(file, fresh);
    expect(a.existed).toBe(false);
    expect(a.state).toEqual({ hwm: 0 });
    for (let i = 1; i <= 50; i++) {
      a.state.hwm = i;
      await a.save();
    }
    // Not replaced on every save: the journal holds the saves since open.
    expect(await stat(file).catch(() => null)).toBeNull();
    const b = await JournaledState.open(file, fresh);
    expect(b.existed).toBe(true);
    expect(b.state.hwm).toBe(50);
    // Open folds the journal into the snapshot and empties it.
    expect(JSON.parse(await readFile(file, "utf8"))).toEqual({ hwm: 50 });
    expect(await readFile(`${file}.journal`, "utf8")).toBe("");
  });

  it("shares one write among saves made while another is on disk, and every caller sees its change durable", async () => {
    const file = join(await tmp(), "marks.json");
    const s = await JournaledState.open(file, fresh);
    const saves: Promise<void>[] = [];
    for (let i = 1; i <= 40; i++) {
      s.state.hwm = i;
      saves.push(s.save());
    }
    await Promise.all(saves);
    const lines = (await readFile(`${file}.journal`, "utf8")).split("\n").filter(Boolean);
    expect(lines.length).toBeLessThan(40);
    expect(JSON.parse(lines.at(-1) as string)).toEqual({ hwm: 40 });
    expect((await JournaledState.open(file, fresh)).state.hwm).toBe(40);
  });

  it("skips a line a crash cut short, and appends cleanly after it", async () => {
    const file = join(await tmp(), "marks.json");
    const s = await JournaledState.open(file, fresh);
    s.state.hwm = 7;
    await s.save();
    // A crash mid-append: half a line, never reported saved.
    await appendFile(`${file}.journal`, '{"hwm":8,"no');
    const after = await JournaledState.open(file, fresh);
    expect(after.state.hwm).toBe(7);
    after.state.hwm = 9;
    await after.save();
    expect((await JournaledState.open(file, fresh)).state.hwm).toBe(9);
  });

  it("takes the journal's last whole line over an older snapshot, and reads a snapshot written before journals", async () => {
    const dir = await tmp();
    const file = join(dir, "marks.json");
    // A state file from an older connector: the snapshot alone.
    await writeFile(file, JSON.stringify({ hwm: 3, note: "old" }));
    const s = await JournaledState.open(file, fresh);
    expect(s.state).toEqual({ hwm: 3, note: "old" });
    s.state.hwm = 4;
    await s.save();
    // A crash after a snapshot was replaced and before the journal was emptied leaves both: the journal line is never older.
    await writeFile(file, JSON.stringify({ hwm: 3 }));
    expect((await JournaledState.open(file, fresh)).state.hwm).toBe(4);
  });

  it("keeps the journal bounded: past a megabyte a save replaces the snapshot and empties it", async () => {
    const file = join(await tmp(), "marks.json");
    const s = await JournaledState.open(file, fresh);
    s.state.note = "x".repeat(100 * 1024);
    for (let i = 1; i <= 12; i++) {
      s.state.hwm = i;
      await s.save();
    }
    expect((await stat(`${file}.journal`)).size).toBeLessThan(1024 * 1024);
    expect(JSON.parse(await readFile(file, "utf8")).hwm).toBeGreaterThanOrEqual(10);
    expect((await JournaledState.open(file, fresh)).state.hwm).toBe(12);
    expect((await readdir(join(file, ".."))).filter((f) => f.includes(".tmp"))).toEqual([]);
  });

  it("fails a save loudly when its journal was removed underneath it, rather than starting an empty one", async () => {
    const file = join(await tmp(), "marks.json");
    const s = await JournaledState.open(file, fresh);
    await unlink(`${file}.journal`);
    s.state.hwm = 1;
    await expect(s.save()).rejects.toThrow(/ENOENT/);
  });

  it("fails loudly too when the journal goes between two saves (its handle stays open)", async () => {
    const file = join(await tmp(), "marks.json");
    const s = await JournaledState.open(file, fresh);
    s.state.hwm = 1;
    await s.save();
    await unlink(`${file}.journal`);
    s.state.hwm = 2;
    await expect(s.save()).rejects.toThrow(/ENOENT/);
    await s.close();
  });

  it("keeps one handle on its journal across saves, closes it on close() or after a second unused, and opens it again to save", async () => {
    const file = join(await tmp(), "marks.json");
    const journal = `${file}.journal`;
    // The process's open descriptors that point at the journal (Linux).
    const handles = async () => (await Promise.all((await readdir("/proc/self/fd")).map((fd) => readlink(`/proc/self/fd/${fd}`).catch(() => "")))).filter((t) => t === journal).length;
    const s = await JournaledState.open(file, fresh);
    expect(await handles()).toBe(0);
    for (let i = 1; i <= 20; i++) {
      s.state.hwm = i;
      await s.save();
    }
    expect(await handles()).toBe(1);
    await s.close();
    expect(await handles()).toBe(0);
    s.state.hwm = 21;
    await s.save();
    expect(await handles()).toBe(1);
    // Left alone, it closes itself (bounded wait; the idle limit is a second).
    for (let i = 0; i < 100 && (await handles()) > 0; i++) await new Promise((r) => setTimeout(r, 50));
    expect(await handles()).toBe(0);
    s.state.hwm = 22;
    await s.save();
    await s.close();
    expect((await JournaledState.open(file, fresh)).state.hwm).toBe(22);
  });

  it("names an unreadable snapshot", async () => {
    const file = join(await tmp(), "marks.json");
    await writeFile(file, "{not json");
    await expect(JournaledState.open(file, fresh)).rejects.toThrow(/JSON/);
  });
});
