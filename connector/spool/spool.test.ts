import { spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { appendFile, mkdtemp, readdir, readFile, stat, truncate, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { Spool, SpoolError, type SpoolItem } from "./spool.ts";

const tmp = () => mkdtemp(join(tmpdir(), "ferry-spool-"));

function item(body: string | Uint8Array, extra: Partial<SpoolItem> = {}): SpoolItem {
  const payload = typeof body === "string" ? new TextEncoder().encode(body) : body;
  return { id: `id-${randomBytes(6).toString("hex")}`, createdAt: 1, contentType: "text/plain", payload, sha256: createHash("sha256").update(payload).digest("hex"), ...extra };
}

async function segments(dir: string): Promise<string[]> {
  return (await readdir(join(dir, "segments"))).sort();
}

describe("spool", () => {
  it("keeps records, sequences, payload bytes and the epoch across a reopen", async () => {
    const dir = await tmp();
    const s = await Spool.open(dir);
    const recs = await s.append("orders", [item("one"), item(""), item(randomBytes(70_000))]);
    expect(recs.map((r) => r.seq)).toEqual([1, 2, 3]);
    const payloads = await Promise.all(s.pending("orders").map((r) => s.readPayload(r)));
    const epoch = s.epoch;
    await s.close();

    const again = await Spool.open(dir);
    expect(again.epoch).toBe(epoch);
    expect(again.pending("orders").map((r) => [r.seq, r.id, r.size])).toEqual(recs.map((r) => [r.seq, r.id, r.size]));
    for (const [i, r] of again.pending("orders").entries()) expect(Buffer.from(await again.readPayload(r)).equals(Buffer.from(payloads[i] as Uint8Array))).toBe(true);
    expect((await again.append("orders", [item("four")]))[0]?.seq).toBe(4);
    expect(again.pending("orders", 3, 1).map((r) => r.seq)).toEqual([3]);
    await again.close();
  });

  it("takes many acknowledgements at once: every one recorded, the newest state on disk", async () => {
    const dir = await tmp();
    const s = await Spool.open(dir);
    await s.append("orders", Array.from({ length: 64 }, (_, i) => item(`m${i}`)));
    // Pubacks arrive faster than the state is saved: concurrent acks used to rename each other's temporary file away.
    await Promise.all(Array.from({ length: 64 }, (_, i) => s.ack("orders", i + 1)));
    expect(s.pending("orders")).toEqual([]);
    await s.close();
    expect((await readdir(dir)).filter((f) => f.includes(".tmp"))).toEqual([]);
    // The newest state is what a reopened spool reads (from the journal, or the snapshot it replaces at open).
    const again = await Spool.open(dir);
    expect(again.acked("orders")).toBe(64);
    expect(JSON.parse(await readFile(join(dir, "state.json"), "utf8")).channels.orders.acked).toBe(64);
    await again.close();
  });

  it("reads back payloads it holds in memory and those only on disk alike", async () => {
    const dir = await tmp();
    const s = await Spool.open(dir);
    // Over the in-memory allowance (32 MiB): the first ones are read from disk, the rest from memory.
    const big = Array.from({ length: 40 }, (_, i) => item(randomBytes(1024 * 1024 - 7 * i)));
    await s.append("orders", big);
    const back = await Promise.all(s.pending("orders").map((r) => s.readPayload(r)));
    for (const [i, b] of back.entries()) expect(Buffer.from(b).equals(Buffer.from(big[i]?.payload as Uint8Array))).toBe(true);
    await s.close();
  });

  it("prunes acknowledged segments and never restarts sequences, even with every segment gone", async () => {
    const dir = await tmp();
    const s = await Spool.open(dir, { segmentBytes: 200 });
    for (let i = 0; i < 10; i++) await s.append("orders", [item(`message ${i} `.repeat(10))]);
    expect((await segments(dir)).length).toBeGreaterThan(5);
    await s.ack("orders", 10);
    expect((await segments(dir)).length).toBe(1); // only the active one
    expect(s.backlog("orders")).toEqual({ count: 0, bytes: 0 });
    await s.close();
    const again = await Spool.open(dir, { segmentBytes: 200 });
    expect(again.acked("orders")).toBe(10);
    expect(again.pending("orders")).toEqual([]);
    expect((await again.append("orders", [item("next")]))[0]?.seq).toBe(11);
    await again.close();
  });

  it("treats acks as cumulative and idempotent, and refuses acks beyond what was captured", async () => {
    const s = await Spool.open(await tmp());
    await s.append("a", [item("1"), item("2"), item("3")]);
    await s.ack("a", 2);
    await s.ack("a", 1);
    expect(s.acked("a")).toBe(2);
    expect(s.pending("a").map((r) => r.seq)).toEqual([3]);
    await expect(s.ack("a", 4)).rejects.toBeInstanceOf(SpoolError);
    await s.close();
  });

  it("drops only a torn record at the tail after a crash mid-append", async () => {
    const dir = await tmp();
    const s = await Spool.open(dir);
    await s.append("orders", [item("kept 1"), item("kept 2")]);
    await s.close();
    const seg = join(dir, "segments", (await segments(dir))[0] as string);
    const size = (await stat(seg)).size;
    // Half a record: a header that promises more than is there.
    await appendFile(seg, Buffer.from([0, 0, 1, 0, 1, 2, 3, 4, 5, 6]));
    const again = await Spool.open(dir);
    expect(again.pending("orders").map((r) => r.seq)).toEqual([1, 2]);
    expect((await stat(seg)).size).toBe(size);
    expect((await again.append("orders", [item("3")]))[0]?.seq).toBe(3);
    await again.close();

    // A torn last record (cut inside it) is dropped too.
    await truncate(seg, (await stat(seg)).size - 2);
    const third = await Spool.open(dir);
    expect(third.pending("orders").map((r) => r.seq)).toEqual([1, 2]);
    await third.close();
  });

  it("refuses to open over corruption in the middle of an older segment, naming file and offset", async () => {
    const dir = await tmp();
    const s = await Spool.open(dir, { segmentBytes: 100 });
    for (let i = 0; i < 4; i++) await s.append("orders", [item(`x${i}`.repeat(40))]);
    await s.close();
    const first = join(dir, "segments", (await segments(dir))[0] as string);
    const buf = await readFile(first);
    buf[20] = (buf[20] as number) ^ 0xff;
    await writeFile(first, buf);
    const err = await Spool.open(dir).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SpoolError);
    expect((err as SpoolError).code).toBe("CORRUPT");
    expect((err as Error).message).toContain("00000001.seg is corrupt at offset 0");
  });

  it("group-commits concurrent appends from several channels, each sequenced on its own", async () => {
    const s = await Spool.open(await tmp());
    const results = await Promise.all(Array.from({ length: 60 }, (_, i) => s.append(i % 2 ? "odd" : "even", [item(`m${i}`)])));
    expect(results.flat().filter((r) => r.channel === "odd").map((r) => r.seq).sort((a, b) => a - b)).toEqual(Array.from({ length: 30 }, (_, i) => i + 1));
    expect(s.pending("even").map((r) => r.seq)).toEqual(Array.from({ length: 30 }, (_, i) => i + 1));
    await s.close();
  });

  it("captured is durable: every append a killed writer reported survives kill -9, bytes intact", async () => {
    const dir = await tmp();
    const child = spawn(process.execPath, ["--no-experimental-strip-types", "--import", "tsx", fileURLToPath(new URL("./spool-writer.fixture.ts", import.meta.url)), dir], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    const reported: number[] = [];
    let buf = "";
    await new Promise<void>((resolve) => {
      child.stdout?.on("data", (d: Buffer) => {
        buf += d.toString();
        const lines = buf.split("\n");
        buf = lines.pop() ?? "";
        for (const l of lines) if (l) reported.push(Number(l));
        if (reported.length >= 200 && child.exitCode === null) {
          child.kill("SIGKILL");
        }
      });
      child.on("exit", () => resolve());
    });
    expect(reported.length).toBeGreaterThanOrEqual(200);
    const s = await Spool.open(dir);
    const seqs = new Set(s.pending("orders").map((r) => r.seq));
    for (const seq of reported) expect(seqs.has(seq), `seq ${seq}`).toBe(true);
    for (const r of s.pending("orders")) {
      const p = await s.readPayload(r);
      expect(createHash("sha256").update(p).digest("hex")).toBe(r.sha256);
    }
    await s.close();
  });
});

describe("spool lock", () => {
  it("refuses a second process while the first holds the spool, and takes over a dead one's lock", async () => {
    const dir = await tmp();
    // A live process (this test's parent) holding the lock.
    await writeFile(join(dir, "lock"), String(process.ppid));
    const err = await Spool.open(dir).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: "LOCKED" });
    expect((err as Error).message).toContain(`in use by process ${process.ppid}`);
    // A dead one: pid far beyond any live process.
    await writeFile(join(dir, "lock"), "4194000");
    const s = await Spool.open(dir);
    expect(await readFile(join(dir, "lock"), "utf8")).toBe(String(process.pid));
    await s.close();
    await expect(readFile(join(dir, "lock"))).rejects.toThrow();
  });
});
