import { createHash } from "node:crypto";
import { open, type FileHandle } from "node:fs/promises";
import { encodeFrame, encodeFrameParts, ErrorCode, Limits, partLength, partsOf, type ErrorFrame, type UploadedFrame } from "../../wire/index.ts";
import type { Spool, SpoolRecord } from "../spool/spool.ts";
import type { Logger } from "../core/log.ts";
import { Backoff } from "../core/backoff.ts";
import type { TransferProgress } from "./progress.ts";
import { keepMemoryUnder, TRANSFER_RSS_LIMIT } from "../core/memory.ts";

/** Chunks sent and not yet answered, across all uploads: bounds the edge's memory and ours. */
const MAX_INFLIGHT_CHUNKS = 2;
/** Stop reading chunks while the socket holds this much unsent (about one chunk). */
const MAX_BUFFERED = 8 * 1024 * 1024;

/**
 * What is uploaded for a record: its bytes as kept, or (on `encrypt`
 * routes) each part sealed: then size, digest and chunk are the ciphertext's.
 */
export type UploadPlan = { size: number; sha256: string; chunk: number; parts: number; key?: string; seal?: (part: number, plain: Uint8Array) => Uint8Array };

type Upload = {
  rec: SpoolRecord;
  /** Known once the route's protection is (null: not yet). */
  plan: UploadPlan | null;
  planning: boolean;
  parts: number;
  /** Parts the edge holds (contiguously from 1), as it last said. */
  have: number;
  /** The next part to send. */
  next: number;
  opened: boolean;
  /** The `upload` frame was sent and not answered yet. */
  asked: boolean;
  done: boolean;
  fh: FileHandle | null;
  /** One read buffer per upload, reused for every chunk (sent as it is, not copied: see `written`). */
  buf: Buffer | null;
  /** Settles once the socket has written the last chunk sent from `buf`: only then is it read into again. */
  written: Promise<void>;
  lastProgress: number;
  retryAt: number;
  backoff: Backoff;
};

export type UploadDeps = {
  spool: Spool;
  /** `written`: the socket no longer holds the frame's buffers (see Transport.send). */
  send: (frame: Uint8Array | Uint8Array[], written?: () => void) => boolean;
  buffered: () => number;
  connected: () => boolean;
  log: Logger;
  /** Large payloads uploaded at the same time. */
  limit: number;
  /** An upload completed: the channel's `pub` may now refer to it. */
  onReady: (channel: string) => void;
  /** How to upload a record; null while its route's protection is not known. */
  plan: (rec: SpoolRecord) => Promise<UploadPlan | null>;
  onProgress: (p: TransferProgress) => void;
  /** Does the edge take a file's name in `upload` (EdgeFeature.UPLOAD_NAME)? */
  namesFiles: () => boolean;
};

/**
 * The sender's half of large payloads: each spool record with a blob is
 * uploaded in chunks of Limits.CHUNK_BYTES, read from the spool's copy (one
 * chunk in memory at a time), a few in flight, in order. The edge answers
 * each step with how many parts it holds, so a cut connection or a restart
 * resumes from there; nothing of a transfer is kept on disk but the blob.
 */
export class Uploads {
  private readonly uploads = new Map<string, Upload>();
  private pumping = false;
  private again = false;

  constructor(private readonly d: UploadDeps) {}

  /** Is this record's payload stored whole at the edge (as far as this connection knows)? */
  isDone(id: string): boolean {
    return this.uploads.get(id)?.done === true;
  }

  active(): TransferProgress[] {
    return [...this.uploads.values()].filter((u) => !u.done).map((u) => this.progress(u));
  }

  /** Picks up blob records that need uploading (oldest first), up to the limit. */
  want(): void {
    const live = new Set<string>();
    for (const rec of this.d.spool.pendingBlobs()) {
      live.add(rec.id);
      if (this.uploads.has(rec.id)) continue;
      if ([...this.uploads.values()].filter((u) => !u.done).length >= this.d.limit) break;
      const parts = partsOf(rec.size, Limits.CHUNK_BYTES);
      this.uploads.set(rec.id, { rec, plan: null, planning: false, parts, have: 0, next: 1, opened: false, asked: false, done: false, fh: null, buf: null, written: Promise.resolve(), lastProgress: Date.now(), retryAt: 0, backoff: new Backoff(500, 30_000) });
    }
    // Acknowledged records are gone from the spool: forget their uploads.
    for (const [id, u] of this.uploads) if (!live.has(id)) this.forget(id, u);
    this.openAll();
  }

  private forget(id: string, u: Upload): void {
    void u.fh?.close().catch(() => undefined);
    this.uploads.delete(id);
  }

  private openAll(): void {
    if (!this.d.connected()) return;
    const now = Date.now();
    for (const u of this.uploads.values()) {
      if (u.opened || u.done || u.retryAt > now) continue;
      if (!u.plan) {
        this.makePlan(u);
        continue;
      }
      u.opened = this.d.send(
        encodeFrame({ t: "upload", ch: u.rec.channel, id: u.rec.id, size: u.plan.size, sha256: u.plan.sha256, chunk: u.plan.chunk, parts: u.plan.parts, ...this.nameOf(u) }),
      );
      u.asked = u.opened;
      u.lastProgress = now;
    }
  }

  /**
   * The file's name for the edge and the receivers to show while it travels:
   * only where the edge takes it, and never when the payload is sealed
   * (`encrypt`: the fields, the name among them, travel encrypted).
   */
  private nameOf(u: Upload): { name?: string } {
    const name = u.rec.fields?.filename;
    return name && name.length <= Limits.MAX_TRANSFER_NAME && !u.plan?.seal && this.d.namesFiles() ? { name } : {};
  }

  private makePlan(u: Upload): void {
    if (u.planning) return;
    u.planning = true;
    this.d
      .plan(u.rec)
      .then((plan) => {
        u.plan = plan;
        if (plan) this.openAll();
      })
      .catch((e: unknown) => this.d.log("error", "cannot prepare a large payload for upload", { channel: u.rec.channel, id: u.rec.id, error: (e as Error).message }))
      .finally(() => {
        u.planning = false;
      });
  }

  /** The plan a record was uploaded with (for its `pub`). */
  planOf(id: string): UploadPlan | null {
    return this.uploads.get(id)?.plan ?? null;
  }

  /** A new connection: every unfinished upload asks the edge where it stands. */
  onOpen(): void {
    for (const u of this.uploads.values()) {
      u.opened = false;
      u.next = u.have + 1;
      u.retryAt = 0;
      // The old socket sends nothing more: its hold on the read buffer is void.
      u.written = Promise.resolve();
    }
    this.want();
  }

  onUploaded(f: UploadedFrame): void {
    const u = this.uploads.get(f.id);
    if (!u) return;
    if (f.have > u.have) u.backoff.reset();
    if (u.asked && f.have < u.have) {
      // The answer to `upload` is where the edge stands: a relay that broke off
      // (D19) starts over into the edge's store, from part 1.
      this.fewer(u, f.have);
    }
    u.asked = false;
    u.have = Math.max(u.have, f.have);
    u.next = Math.max(u.next, u.have + 1);
    u.lastProgress = Date.now();
    this.d.onProgress(this.progress(u));
    this.d.log("debug", "upload progress", { channel: u.rec.channel, id: u.rec.id, have: u.have, parts: u.parts });
    if (u.have >= u.parts && !u.done) {
      u.done = true;
      void u.fh?.close().catch(() => undefined);
      u.fh = null;
      u.buf = null;
      this.d.log("info", "uploaded", { channel: u.rec.channel, id: u.rec.id, file: u.rec.fields?.filename, size: u.rec.size });
      this.d.onReady(u.rec.channel);
      this.want();
      return;
    }
    this.pump();
  }

  /** An error frame about an upload; false if it is not about one of ours. */
  onError(f: ErrorFrame): boolean {
    const u = f.id ? this.uploads.get(f.id) : undefined;
    if (!u || !f.id) return false;
    if (f.code === ErrorCode.UPLOAD_INCOMPLETE) {
      // The edge lost (or never finished) it: ask again where it stands.
      u.done = false;
      u.opened = false;
      this.openAll();
      return true;
    }
    if (f.code === ErrorCode.BAD_CHUNK && f.have !== undefined && f.have < u.have) {
      // The edge holds less than this side counted (a relay broke off, D19, and a chunk in flight
      // was refused before the answer to `upload` came): send again from what it holds.
      this.fewer(u, f.have);
      this.pump();
      return true;
    }
    if (f.code === ErrorCode.BAD_CHUNK && f.part !== undefined && f.part > u.have + 1) {
      // A consequence of an earlier part's refusal, already being resent.
      return true;
    }
    const delay = f.code === ErrorCode.BAD_CHUNK ? 0 : u.backoff.next() + 500;
    this.d.log(f.code === ErrorCode.BAD_CHUNK ? "warn" : "error", "the edge refused a step of an upload; resending from what it holds", {
      channel: u.rec.channel, id: f.id, part: f.part, code: f.code, message: f.message, retryInMs: delay,
    });
    u.next = u.have + 1;
    if (f.part === undefined) u.opened = false;
    u.retryAt = Date.now() + delay;
    setTimeout(() => {
      this.openAll();
      this.pump();
    }, delay).unref();
    return true;
  }

  /** The edge holds fewer parts than this side counted: said once, whichever answer tells it first, and sent again from there. */
  private fewer(u: Upload, have: number): void {
    this.d.log("info", "the edge holds fewer parts than it had taken; uploading again from there", { channel: u.rec.channel, id: u.rec.id, have, was: u.have });
    u.have = have;
    u.next = have + 1;
  }

  /** An upload waited for an answer longer than `ms`: the link is bad. */
  stalled(now: number, ms: number): boolean {
    for (const u of this.uploads.values()) {
      const waiting = !u.done && u.opened && (u.asked || u.next - 1 > u.have);
      if (waiting && u.retryAt <= now && now - u.lastProgress > ms) {
        u.lastProgress = now;
        return true;
      }
    }
    return false;
  }

  private inflight(): number {
    let n = 0;
    for (const u of this.uploads.values()) if (!u.done) n += Math.max(0, u.next - 1 - u.have);
    return n;
  }

  /** Sends chunks while the window and the socket allow; one pump at a time. */
  pump(): void {
    if (this.pumping) {
      this.again = true;
      return;
    }
    this.pumping = true;
    this.sendChunks()
      .catch((e: unknown) => this.d.log("error", "reading a large payload from the spool failed", { error: (e as Error).message }))
      .finally(() => {
        this.pumping = false;
        if (this.again) {
          this.again = false;
          this.pump();
        }
      });
  }

  private async sendChunks(): Promise<void> {
    const now = Date.now();
    for (const u of this.uploads.values()) {
      while (u.plan && this.d.connected() && u.opened && !u.done && u.retryAt <= now && u.next <= u.parts && this.inflight() < MAX_INFLIGHT_CHUNKS) {
        if (this.d.buffered() > MAX_BUFFERED) {
          setTimeout(() => this.pump(), 20).unref();
          return;
        }
        const part = u.next++;
        const len = partLength(u.rec.size, Limits.CHUNK_BYTES, part);
        u.fh ??= await open(this.d.spool.blobPath(u.rec), "r");
        u.buf ??= Buffer.allocUnsafe(Limits.CHUNK_BYTES);
        // Frames go unmasked, so uncopied (D24): the socket may still be writing the last chunk out of this buffer.
        await u.written;
        const plain = u.buf.subarray(0, len);
        const { bytesRead } = await u.fh.read(plain, 0, len, (part - 1) * Limits.CHUNK_BYTES);
        if (bytesRead !== len) throw new Error(`the spool's copy of ${u.rec.id} is shorter than its record says`);
        const bytes = u.plan.seal ? u.plan.seal(part, plain) : plain;
        const sha256 = createHash("sha256").update(bytes).digest("hex");
        // In two fragments, the part's bytes straight from the read buffer (no frame-sized copy).
        let written = () => {};
        u.written = new Promise<void>((r) => (written = r));
        if (!this.d.send(encodeFrameParts({ t: "chunk", ch: u.rec.channel, id: u.rec.id, part, len: bytes.byteLength, sha256 }, [bytes]), written)) {
          written();
          u.next = part;
          return;
        }
        this.d.log("debug", "chunk sent", { channel: u.rec.channel, id: u.rec.id, part });
        keepMemoryUnder(TRANSFER_RSS_LIMIT);
      }
    }
  }

  private progress(u: Upload): TransferProgress {
    return { direction: "up", channel: u.rec.channel, id: u.rec.id, name: u.rec.fields?.filename ?? u.rec.id, done: Math.min(u.rec.size, u.have * Limits.CHUNK_BYTES), total: u.rec.size };
  }
}
