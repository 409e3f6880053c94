import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, readdir, readFile, rm, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { decodeFrame, type DeliverMessage, type RelayedFrame, type RelayFrame } from "../../wire/index.ts";
import { Downloads, SWEEP_AFTER_MS } from "./downloads.ts";

const CHUNK = 5 * 1024 * 1024;
const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

/** The receiver's half on a real folder; what it sends to the edge is collected, decoded. */
function receiver(dir: string) {
  const sent: RelayedFrame[] = [];
  const logged: string[] = [];
  const downloads = new Downloads({
    dir,
    send: (f) => {
      sent.push(decodeFrame(f).frame as RelayedFrame);
      return true;
    },
    connected: () => true,
    log: (_level, msg) => logged.push(msg),
    limit: 2,
    onProgress: () => undefined,
  });
  return { downloads, sent, logged };
}

describe("downloads: relayed parts and resuming", () => {
  let dir: string;
  const body = randomBytes(2 * CHUNK + 100);
  const parts = [body.subarray(0, CHUNK), body.subarray(CHUNK, 2 * CHUNK), body.subarray(2 * CHUNK)];
  const meta: DeliverMessage = {
    dseq: 1, id: "relayed-file-01", source: "a/files", seq: 1, createdAt: 1, acceptedAt: 1, expiresAt: Date.now() + 3_600_000, contentType: "application/octet-stream",
    size: body.byteLength, sha256: sha(body), blob: { chunk: CHUNK, parts: 3 },
  };
  const relay = (part: number, bytes = parts[part - 1] as Uint8Array, psha = sha(parts[part - 1] as Uint8Array)): RelayFrame => ({
    t: "relay", src: "a/files", dst: "b/files", id: meta.id, part, parts: 3, size: body.byteLength, sha256: meta.sha256, chunk: CHUNK, len: bytes.byteLength, psha,
  });

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "ferry-downloads-"));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("takes relayed parts in order, refuses damaged and out-of-order ones with what it holds, and delivers the whole from disk", async () => {
    const { downloads, sent } = receiver(dir);
    const answers = async (n: number) => {
      for (let i = 0; i < 200 && sent.length < n; i++) await new Promise((r) => setTimeout(r, 10));
      return sent.slice(-1)[0];
    };
    downloads.relay(relay(1), parts[0] as Uint8Array);
    expect(await answers(1)).toMatchObject({ part: 1, ok: true, have: 1 });
    // Part 3 before part 2: refused, send again from 2.
    downloads.relay(relay(3), parts[2] as Uint8Array);
    expect(await answers(2)).toMatchObject({ part: 3, ok: false, code: "BAD_CHUNK", have: 1 });
    // A flipped byte: its digest does not match.
    const damaged = Buffer.from(parts[1] as Uint8Array);
    damaged[12345] = (damaged[12345] as number) ^ 0xff;
    downloads.relay(relay(2, damaged), damaged);
    expect(await answers(3)).toMatchObject({ part: 2, ok: false, code: "BAD_CHUNK", have: 1 });
    // A resend of a part it holds is answered as held.
    downloads.relay(relay(1), parts[0] as Uint8Array);
    expect(await answers(4)).toMatchObject({ part: 1, ok: true, have: 1 });
    downloads.relay(relay(2), parts[1] as Uint8Array);
    downloads.relay(relay(3), parts[2] as Uint8Array);
    expect(await answers(6)).toMatchObject({ part: 3, ok: true, have: 3 });
    // Whole, fsynced and checked: the record says so, and the claim check finds the file ready.
    const recordFile = (await readdir(dir)).find((f) => f.endsWith(".json")) as string;
    const record = JSON.parse(await readFile(join(dir, recordFile), "utf8")) as { have: number; verified?: boolean };
    expect(record).toMatchObject({ have: 3, verified: true });
    const path = await downloads.fetch("a/files", "b/files", meta);
    expect(sha(await readFile(path))).toBe(meta.sha256);
  });

  it("a relay that does not start at part 1 is refused (this side lost it): the edge stores the payload instead", async () => {
    const { downloads, sent } = receiver(dir);
    downloads.relay(relay(2), parts[1] as Uint8Array);
    for (let i = 0; i < 200 && sent.length < 1; i++) await new Promise((r) => setTimeout(r, 10));
    expect(sent[0]).toMatchObject({ part: 2, ok: false, code: "UNKNOWN_STREAM" });
  });

  it("resumes a payload whose every part is on disk (a crash before delivery) without padding it past its end", async () => {
    const { downloads } = receiver(dir);
    // What a download leaves when it is killed after its last record: the whole file and a count of all parts.
    const key = `${meta.id}-${createHash("sha256").update("b/files").digest("hex").slice(0, 12)}`;
    await writeFile(join(dir, `${key}.part`), body);
    await writeFile(join(dir, `${key}.json`), JSON.stringify({ have: 3, size: body.byteLength, sha256: meta.sha256, chunk: CHUNK }).padEnd(256, " "));
    const path = await downloads.fetch("a/files", "b/files", meta);
    const got = await readFile(path);
    expect(got.byteLength).toBe(body.byteLength);
    expect(sha(got)).toBe(meta.sha256);
  });

  it("deletes at start the partial payloads nobody asked for in 8 days, never a relayed one waiting for its claim check", async () => {
    const { downloads, sent } = receiver(dir);
    // A whole relayed payload: held nowhere else until its claim check comes.
    for (const part of [1, 2, 3]) {
      downloads.relay(relay(part), parts[part - 1] as Uint8Array);
      for (let i = 0; i < 500 && sent.length < part; i++) await new Promise((r) => setTimeout(r, 10));
    }
    expect(sent.map((f) => [f.part, f.ok])).toEqual([[1, true], [2, true], [3, true]]);
    // An old partial download (its message expired at the edge), a recent one, and a file that is not a payload's.
    const record = (have: number) => JSON.stringify({ have, size: 10, sha256: "a".repeat(64), chunk: 5 });
    await writeFile(join(dir, "old-0001.part"), "12345");
    await writeFile(join(dir, "old-0001.json"), record(1));
    await writeFile(join(dir, "new-0002.part"), "12345");
    await writeFile(join(dir, "new-0002.json"), record(1));
    await writeFile(join(dir, "notes.txt"), "kept");
    const later = Date.now() + SWEEP_AFTER_MS + 60_000;
    const recent = new Date(later - 3_600_000);
    for (const f of ["new-0002.part", "new-0002.json"]) await utimes(join(dir, f), recent, recent);
    const logged: string[] = [];
    expect(await Downloads.sweep(dir, (_l, msg) => logged.push(msg), later)).toBe(1);
    const left = (await readdir(dir)).sort();
    expect(left.filter((f) => f.startsWith("old-") || f.startsWith("new-"))).toEqual(["new-0002.json", "new-0002.part"]);
    expect(left).toContain("notes.txt");
    // The relayed payload's two files (its bytes and its record) stay.
    expect(left.filter((f) => f.startsWith(meta.id))).toHaveLength(2);
    expect(logged).toEqual(["deleted a partial large payload nobody asked for in 8 days"]);
    // A folder that does not exist yet (a new connector) is not an error.
    expect(await Downloads.sweep(join(dir, "none"), () => undefined)).toBe(0);
  });
});
