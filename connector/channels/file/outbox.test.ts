import { appendFile, mkdir, mkdtemp, readdir, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { OutboxScanner } from "./outbox.ts";

const tmp = () => mkdtemp(join(tmpdir(), "ferry-outbox-"));
const names = (files: { name: string }[]) => files.map((f) => f.name);

describe("outbox scanner", () => {
  it("stable rule: a file is ready only after it stayed the same across two scans", async () => {
    const dir = await tmp();
    const s = new OutboxScanner({ dir });
    await writeFile(join(dir, "a.csv"), "1");
    expect(names(await s.scan())).toEqual([]);
    expect(names(await s.scan())).toEqual(["a.csv"]);
    // Still being written: it grows between scans and is not picked up.
    await writeFile(join(dir, "b.csv"), "1");
    await s.scan();
    await appendFile(join(dir, "b.csv"), "2");
    expect(names(await s.scan())).toEqual(["a.csv"]);
    expect(names(await s.scan())).toEqual(["a.csv", "b.csv"]);
  });

  it("ignores temporary names, dot-files, folders (unless recursive) and symlinks", async () => {
    const dir = await tmp();
    const outside = await tmp();
    await writeFile(join(outside, "secret"), "s");
    for (const n of [".x.tmp", "y.part", "z.tmp", ".hidden"]) await writeFile(join(dir, n), "x");
    await symlink(join(outside, "secret"), join(dir, "link"));
    await mkdir(join(dir, "sub"));
    await writeFile(join(dir, "sub", "deep.csv"), "d");
    await writeFile(join(dir, "top.csv"), "t");
    const flat = new OutboxScanner({ dir });
    await flat.scan();
    expect(names(await flat.scan())).toEqual(["top.csv"]);
    const deep = new OutboxScanner({ dir, recursive: true });
    await deep.scan();
    expect(names(await deep.scan()).sort()).toEqual(["sub/deep.csv", "top.csv"]);
  });

  it("done-marker rule: X is ready when X.done exists; release removes both", async () => {
    const dir = await tmp();
    const s = new OutboxScanner({ dir, rule: "done-marker" });
    await writeFile(join(dir, "x.bin"), "data");
    expect(names(await s.scan())).toEqual([]);
    await writeFile(join(dir, "x.bin.done"), "");
    const ready = await s.scan();
    expect(names(ready)).toEqual(["x.bin"]);
    await s.release(ready[0] as { path: string });
    expect(await readdir(dir)).toEqual([]);
  });
});
