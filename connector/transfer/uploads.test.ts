import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { decodeFrame, Limits, partsOf, type ChunkFrame, type UploadFrame } from "../../wire/index.ts";
import type { Spool, SpoolRecord } from "../spool/spool.ts";
import { waitFor } from "../../test/helpers/wait.ts";
import { Uploads } from "./uploads.ts";

const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

/**
 * A socket that writes what it is given some time later, as a real one does
 * when the kernel's buffer is full: until then it holds the caller's bytes,
 * uncopied (frames are not masked, D24). What it finally writes is what
 * crosses the wire.
 */
class SlowSocket {
  readonly wire: { frame: ChunkFrame; bytes: Buffer }[] = [];
  private held: { prefix: Uint8Array; bytes: Uint8Array; written?: () => void }[] = [];

  constructor(private readonly delayMs: number) {}

  send = (f: Uint8Array | Uint8Array[], written?: () => void): boolean => {
    if (!Array.isArray(f)) return true; // `upload` and other control frames: not under test
    const [prefix, bytes] = f as [Uint8Array, Uint8Array];
    const item = { prefix, bytes, ...(written ? { written } : {}) };
    this.held.push(item);
    setTimeout(() => {
      // Written now: the bytes as they are at this moment.
      const joined = Buffer.concat([item.prefix, item.bytes]);
      this.wire.push({ frame: decodeFrame(joined).frame as ChunkFrame, bytes: Buffer.from(item.bytes) });
      this.held = this.held.filter((h) => h !== item);
      item.written?.();
    }, this.delayMs);
    return true;
  };

  buffered = (): number => this.held.reduce((n, h) => n + h.bytes.byteLength, 0) / 2; // half already taken by the kernel
}

describe("uploads: the read buffer and the socket", () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "ferry-uploads-"));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("reads the next chunk into its buffer only after the socket has written the last one: every chunk crosses as it was hashed", async () => {
    const body = randomBytes(3 * Limits.CHUNK_BYTES + 1000);
    await writeFile(join(dir, "blob"), body);
    const rec: SpoolRecord = { channel: "files", seq: 1, id: "large-file-0001", createdAt: 1, contentType: "application/octet-stream", size: body.byteLength, sha256: sha(body), blob: "blob" };
    const parts = partsOf(body.byteLength, Limits.CHUNK_BYTES);
    const socket = new SlowSocket(100);
    const spool = { pendingBlobs: () => [rec], blobPath: () => join(dir, "blob") } as unknown as Spool;
    const uploads = new Uploads({
      spool,
      send: socket.send,
      buffered: socket.buffered,
      connected: () => true,
      log: () => undefined,
      limit: 1,
      onReady: () => undefined,
      onProgress: () => undefined,
      plan: async () => ({ size: body.byteLength, sha256: rec.sha256, chunk: Limits.CHUNK_BYTES, parts }),
      namesFiles: () => false,
    });
    uploads.want();
    await waitFor("the upload's plan", () => uploads.planOf(rec.id) !== null, 5_000, 5);
    uploads.onOpen();
    // The edge holds nothing yet; after that it answers each chunk as it arrives on the wire.
    uploads.onUploaded({ t: "uploaded", ch: "files", id: rec.id, have: 0, parts });
    for (let have = 1; have <= parts; have++) {
      await waitFor(`chunk ${have} on the wire`, () => socket.wire.length >= have, 20_000, 5);
      uploads.onUploaded({ t: "uploaded", ch: "files", id: rec.id, have, parts });
    }
    expect(socket.wire.map((w) => w.frame.part)).toEqual([1, 2, 3, 4]);
    for (const w of socket.wire) {
      const want = body.subarray((w.frame.part - 1) * Limits.CHUNK_BYTES, w.frame.part * Limits.CHUNK_BYTES);
      // Fails when a chunk's buffer is read into while the socket still holds it: the bytes sent are the next chunk's.
      expect(sha(w.bytes), `part ${w.frame.part}`).toBe(w.frame.sha256);
      expect(w.bytes.equals(want), `part ${w.frame.part}`).toBe(true);
    }
    expect(uploads.isDone(rec.id)).toBe(true);
  });

  it("names the file in its `upload` only to an edge that takes names, and never when the payload is sealed", async () => {
    const body = randomBytes(1000);
    await writeFile(join(dir, "blob"), body);
    const rec: SpoolRecord = { channel: "files", seq: 1, id: "large-file-0002", createdAt: 1, contentType: "application/octet-stream", size: body.byteLength, sha256: sha(body), blob: "blob", fields: { filename: "export-2026-12.csv" } };
    const opened = async (namesFiles: boolean, sealed: boolean): Promise<UploadFrame> => {
      const sent: UploadFrame[] = [];
      const uploads = new Uploads({
        spool: { pendingBlobs: () => [rec], blobPath: () => join(dir, "blob") } as unknown as Spool,
        send: (f) => {
          if (!Array.isArray(f)) sent.push(decodeFrame(f).frame as UploadFrame);
          return true;
        },
        buffered: () => 0,
        connected: () => true,
        log: () => undefined,
        limit: 1,
        onReady: () => undefined,
        onProgress: () => undefined,
        plan: async () => ({ size: body.byteLength, sha256: rec.sha256, chunk: Limits.CHUNK_BYTES, parts: 1, ...(sealed ? { key: "k", seal: (_p: number, b: Uint8Array) => b } : {}) }),
        namesFiles: () => namesFiles,
      });
      uploads.want();
      await waitFor("the upload frame", () => sent.length > 0, 5_000, 5);
      return sent[0] as UploadFrame;
    };
    expect((await opened(true, false)).name).toBe("export-2026-12.csv");
    // An older edge refuses fields it does not know: no name unless the welcome said it takes one.
    expect((await opened(false, false)).name).toBeUndefined();
    // On `encrypt` routes the fields travel sealed: the name must not cross in the clear.
    expect((await opened(true, true)).name).toBeUndefined();
  });

  it("says once that the edge holds fewer parts when a relay broke off, whichever answer tells it first", async () => {
    const body = randomBytes(3 * Limits.CHUNK_BYTES);
    await writeFile(join(dir, "blob"), body);
    const rec: SpoolRecord = { channel: "files", seq: 1, id: "large-file-0003", createdAt: 1, contentType: "application/octet-stream", size: body.byteLength, sha256: sha(body), blob: "blob" };
    const run = async (order: "refusal first" | "answer first") => {
      const said: string[] = [];
      const chunks: number[] = [];
      const uploads = new Uploads({
        spool: { pendingBlobs: () => [rec], blobPath: () => join(dir, "blob") } as unknown as Spool,
        send: (f, written) => {
          if (Array.isArray(f)) chunks.push((decodeFrame(Buffer.concat(f)).frame as ChunkFrame).part);
          written?.();
          return true;
        },
        buffered: () => 0,
        connected: () => true,
        log: (_level, msg) => said.push(msg),
        limit: 1,
        onReady: () => undefined,
        onProgress: () => undefined,
        plan: async () => ({ size: body.byteLength, sha256: rec.sha256, chunk: Limits.CHUNK_BYTES, parts: 3 }),
        namesFiles: () => false,
      });
      uploads.want();
      await waitFor("the upload's plan", () => uploads.planOf(rec.id) !== null, 5_000, 5);
      uploads.onUploaded({ t: "uploaded", ch: "files", id: rec.id, have: 0, parts: 3 });
      await waitFor("two chunks in flight", () => chunks.length >= 2, 5_000, 5);
      uploads.onUploaded({ t: "uploaded", ch: "files", id: rec.id, have: 1, parts: 3 });
      await waitFor("the third chunk", () => chunks.length >= 3, 5_000, 5);
      // The relay ends: the edge tells the sender (which asks again where it stands) and refuses a chunk in flight.
      uploads.onError({ t: "error", code: "UPLOAD_INCOMPLETE", message: "the relay ended", ch: "files", id: rec.id });
      const refusal = { t: "error", code: "BAD_CHUNK", message: "part 3 arrived before part 1", ch: "files", id: rec.id, part: 3, have: 0 } as const;
      const answer = { t: "uploaded", ch: "files", id: rec.id, have: 0, parts: 3 } as const;
      if (order === "refusal first") {
        uploads.onError(refusal);
        uploads.onUploaded(answer);
      } else {
        uploads.onUploaded(answer);
        uploads.onError(refusal);
      }
      await waitFor("part 1 sent again", () => chunks.lastIndexOf(1) > 0, 5_000, 5);
      return said.filter((m) => m === "the edge holds fewer parts than it had taken; uploading again from there").length;
    };
    expect(await run("answer first")).toBe(1);
    // Was silent: the refusal lowered the count first, so the answer no longer looked like fewer parts.
    expect(await run("refusal first")).toBe(1);
  });
});
