import { createHash } from "node:crypto";
import { mkdir, mkdtemp, readdir, readFile, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { DeliveryLog } from "./delivery-log.ts";
import { FileInbox, InboxError, type InboxMessage } from "./inbox.ts";
import { UnsafeNameError } from "./names.ts";

const S = "a/orders>b/orders#g1";

async function setup(collisions?: "suffix" | "overwrite" | "fail") {
  const root = await mkdtemp(join(tmpdir(), "ferry-inbox-"));
  const dir = join(root, "in");
  await mkdir(dir);
  const log = await DeliveryLog.open(join(root, "state", "delivered.json"));
  return { root, dir, log, inbox: new FileInbox({ dir, log, ...(collisions ? { collisions } : {}) }) };
}

function msg(dseq: number, name: string, body = `body ${dseq}`): InboxMessage {
  const payload = new TextEncoder().encode(body);
  return { dseq, name, payload, sha256: createHash("sha256").update(payload).digest("hex") };
}

const visible = async (dir: string) => (await readdir(dir, { recursive: true })).filter((n) => !n.startsWith(".ferry-tmp")).sort();

describe("file inbox: exactly once, atomically", () => {
  it("delivers byte-identical files and ignores a redelivered batch", async () => {
    const { dir, inbox, log } = await setup();
    const r = await inbox.deliver(S, [msg(1, "a.txt"), msg(2, "sub/b.txt")]);
    expect(r).toMatchObject({ hwm: 2, duplicates: 0 });
    expect(await readFile(join(dir, "a.txt"), "utf8")).toBe("body 1");
    expect(await readFile(join(dir, "sub", "b.txt"), "utf8")).toBe("body 2");
    const again = await inbox.deliver(S, [msg(1, "a.txt"), msg(2, "sub/b.txt")]);
    expect(again).toEqual({ hwm: 2, delivered: [], duplicates: 2 });
    const overlap = await inbox.deliver(S, [msg(2, "sub/b.txt"), msg(3, "c.txt")]);
    expect(overlap.delivered.map((d) => d.dseq)).toEqual([3]);
    expect(await visible(dir)).toEqual(["a.txt", "c.txt", "sub", "sub/b.txt"]);
    expect(log.hwm(S)).toBe(3);
    expect(await readdir(join(dir, ".ferry-tmp"))).toEqual([]);
  });

  it("refuses a gap and a wrong digest without writing anything", async () => {
    const { dir, inbox } = await setup();
    await inbox.deliver(S, [msg(1, "a.txt")]);
    const gap = await inbox.deliver(S, [msg(3, "c.txt")]).catch((e: unknown) => e);
    expect(gap).toBeInstanceOf(InboxError);
    expect(gap).toMatchObject({ code: "GAP", expected: 2 });
    const bad = { ...msg(2, "b.txt"), sha256: "0".repeat(64) };
    expect(await inbox.deliver(S, [bad]).catch((e: unknown) => e)).toMatchObject({ code: "DIGEST" });
    expect(await visible(dir)).toEqual(["a.txt"]);
  });

  it("applies the collision policy", async () => {
    const s = await setup();
    await writeFile(join(s.dir, "r.csv"), "old");
    await s.inbox.deliver(S, [msg(1, "r.csv"), msg(2, "r.csv")]);
    expect(await visible(s.dir)).toEqual(["r (1).csv", "r (2).csv", "r.csv"]);
    const o = await setup("overwrite");
    await writeFile(join(o.dir, "r.csv"), "old");
    await o.inbox.deliver(S, [msg(1, "r.csv", "new")]);
    expect(await readFile(join(o.dir, "r.csv"), "utf8")).toBe("new");
    const f = await setup("fail");
    await writeFile(join(f.dir, "r.csv"), "old");
    expect(await f.inbox.deliver(S, [msg(1, "r.csv")]).catch((e: unknown) => e)).toMatchObject({ code: "COLLISION" });
    expect(f.log.hwm(S)).toBe(0);
  });

  it("never writes outside the inbox: traversal, absolute, device names and symlinked folders", async () => {
    const { root, dir, inbox } = await setup();
    const outside = join(root, "outside");
    await mkdir(outside);
    await symlink(outside, join(dir, "link"));
    for (const name of ["../x", "/etc/passwd", "a/../../b", "CON.txt", "a\\b", "link/escaped.txt"]) {
      const e = await inbox.deliver(S, [msg(1, name)]).catch((err: unknown) => err);
      expect(e, name).toBeInstanceOf(UnsafeNameError);
    }
    expect(await readdir(outside)).toEqual([]);
    expect(await readdir(root)).toEqual(expect.arrayContaining(["in", "outside", "state"]));
  });

  it("after a crash, finishes renames that had not happened and does not redo those that had", async () => {
    const { root, dir, log } = await setup();
    const tmpDir = join(dir, ".ferry-tmp");
    await mkdir(tmpDir);
    // Crash 1: intents recorded, tmp files written, nothing renamed yet.
    await writeFile(join(tmpDir, "t1.part"), "one");
    await writeFile(join(tmpDir, "t2.part"), "two");
    await log.begin(S, [
      { dseq: 1, tmp: join(tmpDir, "t1.part"), final: join(dir, "one.txt") },
      { dseq: 2, tmp: join(tmpDir, "t2.part"), final: join(dir, "two.txt") },
    ]);
    // Crash 2 (another stream): renamed already, then the process died before commit.
    const S2 = "x/y>b/orders#g1";
    await writeFile(join(dir, "done.txt"), "done");
    await log.begin(S2, [{ dseq: 1, tmp: join(tmpDir, "gone.part"), final: join(dir, "done.txt") }]);

    const reopened = await DeliveryLog.open(join(root, "state", "delivered.json"));
    const inbox = new FileInbox({ dir, log: reopened });
    await inbox.recover();
    expect(reopened.hwm(S)).toBe(2);
    expect(reopened.hwm(S2)).toBe(1);
    expect(await visible(dir)).toEqual(["done.txt", "one.txt", "two.txt"]);
    expect(await readFile(join(dir, "two.txt"), "utf8")).toBe("two");
    // The edge redelivers the same positions: nothing is written twice.
    const again = await inbox.deliver(S, [msg(1, "one.txt"), msg(2, "two.txt")]);
    expect(again.duplicates).toBe(2);
    expect(await visible(dir)).toEqual(["done.txt", "one.txt", "two.txt"]);
  });
});
