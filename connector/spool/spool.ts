import { createHash, randomBytes } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { copyFile, link, mkdir, open, readdir, readFile, unlink, type FileHandle } from "node:fs/promises";
import { fsyncPath, JournaledState, writeAll } from "../core/durable-fs.ts";
import { hashTap } from "../core/hash-tap.ts";
import { join } from "node:path";
import { crc32, createGzip, gzipSync } from "node:zlib";
import { pipeline } from "node:stream/promises";

export type Origin = { path: string; ino: number; size: number; mtimeMs: number };
/** A large payload kept beside the journal, in `blobs/<file>` (see `adoptBlob`); `gzip`: kept compressed, of an original this size and digest. */
export type BlobFile = { file: string; size: number; gzip?: { size: number; sha256: string } };
/** Compress only when a sample of the start shrinks below this ratio. */
const GZIP_PAYS = 0.9;
export type SpoolItem = { id: string; createdAt: number; contentType: string; payload: Uint8Array; sha256: string; fields?: Record<string, string>; origin?: Origin; blob?: BlobFile };
export type SpoolRecord = {
  channel: string; seq: number; id: string; createdAt: number; contentType: string; size: number; sha256: string;
  fields?: Record<string, string>; origin?: Origin;
  /** Set for a large payload: its bytes are in `blobs/<blob>`, not in the journal. */
  blob?: string;
  /** The blob is the gzip of an original of this size and SHA-256. */
  gzip?: { size: number; sha256: string };
};

/** Bytes read per step when a kept blob is digested (one buffer, reused). */
const DIGEST_READ_BYTES = 2 * 1024 * 1024;

/** Size and SHA-256 of an open file, read through one reused buffer (no garbage per step). */
async function digestOf(fh: FileHandle): Promise<{ size: number; sha256: string }> {
  const hash = createHash("sha256");
  const buf = Buffer.allocUnsafe(DIGEST_READ_BYTES);
  let size = 0;
  for (;;) {
    const { bytesRead } = await fh.read(buf, 0, buf.byteLength, size);
    if (bytesRead === 0) return { size, sha256: hash.digest("hex") };
    hash.update(buf.subarray(0, bytesRead));
    size += bytesRead;
  }
}

export class SpoolError extends Error {
  override readonly name = "SpoolError";
  constructor(
    readonly code: "CORRUPT" | "CLOSED" | "IO" | "LOCKED",
    message: string,
  ) {
    super(message);
  }
}

type Loc = { segment: number; offset: number; length: number };
/** `bytes`: the payload as just written (a view of the commit's buffer), while the spool's cache allows. */
type Entry = SpoolRecord & { loc: Loc; bytes?: Buffer };
type ChannelState = { acked: number; lastSeq: number };
type StateFile = { epoch: string; channels: Record<string, ChannelState> };
type Pending = { channel: string; items: SpoolItem[]; resolve: (r: SpoolRecord[]) => void; reject: (e: unknown) => void };

const HEADER = 8;
/**
 * Payloads appended recently are kept in memory (views of the buffer that
 * was written, no copy) up to this many bytes, so the sender does not read
 * back what it has just written: one read per message cost more than the
 * rest of the send path. Older ones, and all after a restart, come from disk.
 */
const CACHE_BYTES = 32 * 1024 * 1024;
const segName = (n: number) => `${String(n).padStart(8, "0")}.seg`;

/**
 * The durable send spool: an append-only journal of CRC-checked records in
 * segment files, with group commit (one write + fsync for all appends that
 * arrive while the previous commit is in flight). Only an index is kept in
 * memory, with the payloads of recent appends (CACHE_BYTES); the rest are
 * read back from disk when sent.
 *
 * Record: [u32 body length][u32 crc32(body)][body], body = [u32 meta length][meta JSON][payload].
 *
 * Large payloads are not copied into the journal: `adoptBlob` hard-links (or,
 * across file systems, copies and fsyncs) the file into `blobs/`, and the
 * record names it. A blob goes when its record is acknowledged; one no record
 * names (a crash between adopting and appending) is deleted at open.
 */
export class Spool {
  private readonly index = new Map<string, Entry[]>();
  private segment = 0;
  private fh: FileHandle | null = null;
  private size = 0;
  private readonly readers = new Map<number, FileHandle>();
  private queue: Pending[] = [];
  private committing: Promise<void> | null = null;
  private closed = false;
  /** Records per segment not yet acknowledged; a segment at 0 (and not active) is deleted. */
  private readonly live = new Map<number, number>();
  /** Bytes of payload held in entries' `bytes`. */
  private cached = 0;

  private constructor(
    private readonly dir: string,
    /** state.json: the epoch and each channel's marks. */
    private readonly store: JournaledState<StateFile>,
    private readonly segmentBytes: number,
  ) {}

  private get state(): StateFile {
    return this.store.state;
  }

  get epoch(): string {
    return this.state.epoch;
  }

  static async open(dir: string, opts: { segmentBytes?: number } = {}): Promise<Spool> {
    await mkdir(join(dir, "segments"), { recursive: true });
    await lock(dir);
    let state: JournaledState<StateFile>;
    try {
      state = await JournaledState.open<StateFile>(join(dir, "state.json"), () => ({ epoch: randomBytes(12).toString("base64url"), channels: {} }));
    } catch (e) {
      throw new SpoolError("CORRUPT", `${join(dir, "state.json")} is unreadable: ${(e as Error).message}`);
    }
    // A new spool's epoch is durable before anything is sent under it.
    if (!state.existed) await state.save();
    const spool = new Spool(dir, state, opts.segmentBytes ?? 64 * 1024 * 1024);
    await spool.recover();
    return spool;
  }

  private async recover(): Promise<void> {
    const segDir = join(this.dir, "segments");
    const segs = (await readdir(segDir)).filter((n) => /^\d{8}\.seg$/.test(n)).map((n) => Number(n.slice(0, 8))).sort((a, b) => a - b);
    for (let i = 0; i < segs.length; i++) {
      const n = segs[i] as number;
      const last = i === segs.length - 1;
      const buf = await readFile(join(segDir, segName(n)));
      let off = 0;
      while (off < buf.byteLength) {
        const ok = off + HEADER <= buf.byteLength;
        const len = ok ? buf.readUInt32BE(off) : 0;
        const end = off + HEADER + len;
        const intact = ok && end <= buf.byteLength && crc32(buf.subarray(off + HEADER, end)) === buf.readUInt32BE(off + 4);
        if (!intact) {
          if (!last) throw new SpoolError("CORRUPT", `${join(segDir, segName(n))} is corrupt at offset ${off}`);
          // A torn tail from a crash mid-append: that record was never acknowledged as captured.
          const fh = await open(join(segDir, segName(n)), "r+");
          await fh.truncate(off);
          await fh.sync();
          await fh.close();
          break;
        }
        const body = buf.subarray(off + HEADER, end);
        const metaLen = body.readUInt32BE(0);
        const meta = JSON.parse(body.subarray(4, 4 + metaLen).toString("utf8")) as SpoolRecord;
        const st = this.channelState(meta.channel);
        if (meta.seq > st.acked) {
          this.addEntry({ ...meta, loc: { segment: n, offset: off + HEADER + 4 + metaLen, length: meta.blob ? 0 : meta.size } });
        }
        st.lastSeq = Math.max(st.lastSeq, meta.seq);
        off = end;
      }
      this.segment = n;
    }
    await this.openActive(this.segment === 0 ? 1 : this.segment);
    for (const n of segs) if (n !== this.segment && !this.live.get(n)) await this.dropSegment(n);
    await mkdir(join(this.dir, "blobs"), { recursive: true });
    const named = new Set([...this.index.values()].flat().flatMap((e) => (e.blob ? [e.blob] : [])));
    for (const f of await readdir(join(this.dir, "blobs"))) {
      if (!named.has(f) && !named.has(f.replace(/\.seal\.json$/, ""))) await unlink(join(this.dir, "blobs", f)).catch(() => undefined);
    }
  }

  /**
   * Takes a large payload into the spool's keeping, durably, and returns
   * what to append: a hard link when `path` is on the spool's file system
   * (no copy), otherwise a copy, fsynced. Its SHA-256 is read off the kept
   * bytes, so digest and content cannot disagree.
   */
  async adoptBlob(path: string, id: string, opts: { gzip?: boolean } = {}): Promise<BlobFile & { sha256: string }> {
    const file = `${id}.blob`;
    const kept = join(this.dir, "blobs", file);
    if (opts.gzip && (await gzipPays(path))) return this.adoptCompressed(path, file, kept);
    try {
      await link(path, kept);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== "EXDEV" && code !== "EPERM" && code !== "EMLINK") throw e;
      await copyFile(path, kept);
    }
    try {
      const fh = await open(kept, "r");
      let read: { size: number; sha256: string };
      try {
        // The fsync (the file's dirty pages written out, on the thread pool) and the digest (the
        // same pages read back, here) overlap: capture waits for the longer of the two, not both.
        [, read] = await Promise.all([fh.sync(), digestOf(fh)]);
      } finally {
        await fh.close();
      }
      await fsyncPath(join(this.dir, "blobs"));
      return { file, ...read };
    } catch (e) {
      await unlink(kept).catch(() => undefined);
      throw e;
    }
  }

  /** Keeps the gzip of `path`, fsynced, with the digests of both the original and the kept bytes. */
  private async adoptCompressed(path: string, file: string, kept: string): Promise<BlobFile & { sha256: string }> {
    const plain = createHash("sha256");
    const packed = createHash("sha256");
    let plainSize = 0;
    let size = 0;
    try {
      // Level 1: most of gzip's gain on typical exports and logs, at a speed that keeps capture quick.
      await pipeline(createReadStream(path, { highWaterMark: 1024 * 1024 }), hashTap(plain, (n) => (plainSize += n)), createGzip({ level: 1 }), hashTap(packed, (n) => (size += n)), createWriteStream(kept, { flags: "wx", mode: 0o600 }));
      await fsyncPath(kept);
      await fsyncPath(join(this.dir, "blobs"));
    } catch (e) {
      await unlink(kept).catch(() => undefined);
      throw e;
    }
    return { file, size, sha256: packed.digest("hex"), gzip: { size: plainSize, sha256: plain.digest("hex") } };
  }

  /** Where a record's large payload is kept. */
  blobPath(rec: Pick<SpoolRecord, "channel" | "seq" | "blob">): string {
    if (!rec.blob) throw new SpoolError("IO", `record ${rec.channel}#${rec.seq} has no large payload`);
    return join(this.dir, "blobs", rec.blob);
  }

  private addEntry(e: Entry): void {
    let list = this.index.get(e.channel);
    if (!list) this.index.set(e.channel, (list = []));
    list.push(e);
    this.live.set(e.loc.segment, (this.live.get(e.loc.segment) ?? 0) + 1);
  }

  private channelState(channel: string): ChannelState {
    let st = this.state.channels[channel];
    if (!st) this.state.channels[channel] = st = { acked: 0, lastSeq: 0 };
    return st;
  }

  private async openActive(n: number): Promise<void> {
    if (this.fh) await this.fh.close();
    this.segment = n;
    this.fh = await open(join(this.dir, "segments", segName(n)), "a");
    this.size = (await this.fh.stat()).size;
    await fsyncPath(join(this.dir, "segments"));
  }

  append(channel: string, items: SpoolItem[]): Promise<SpoolRecord[]> {
    if (this.closed) return Promise.reject(new SpoolError("CLOSED", "the spool is closed"));
    if (items.length === 0) return Promise.resolve([]);
    return new Promise((resolve, reject) => {
      this.queue.push({ channel, items, resolve, reject });
      if (!this.committing) this.committing = this.commitLoop();
    });
  }

  /** Group commit: everything queued while the last fsync ran goes in the next one. */
  private async commitLoop(): Promise<void> {
    try {
      while (this.queue.length > 0) {
        const batch = this.queue;
        this.queue = [];
        try {
          const out = await this.write(batch);
          batch.forEach((p, i) => p.resolve(out[i] as SpoolRecord[]));
        } catch (e) {
          for (const p of batch) p.reject(e instanceof SpoolError ? e : new SpoolError("IO", `spool write failed: ${(e as Error).message}`));
        }
      }
    } finally {
      this.committing = null;
    }
  }

  private async write(batch: Pending[]): Promise<SpoolRecord[][]> {
    if (this.size >= this.segmentBytes) await this.openActive(this.segment + 1);
    const fh = this.fh as FileHandle;
    const chunks: Uint8Array[] = [];
    /** Per record (in order): where its payload starts in the buffer written. */
    const at: number[] = [];
    const entries: Entry[][] = [];
    const base = this.size;
    let off = base;
    const next = new Map<string, number>();
    for (const p of batch) {
      const recs: Entry[] = [];
      for (const it of p.items) {
        const seq = (next.get(p.channel) ?? this.channelState(p.channel).lastSeq) + 1;
        next.set(p.channel, seq);
        const rec: SpoolRecord = {
          channel: p.channel, seq, id: it.id, createdAt: it.createdAt, contentType: it.contentType, size: it.blob ? it.blob.size : it.payload.byteLength, sha256: it.sha256,
          ...(it.fields ? { fields: it.fields } : {}), ...(it.origin ? { origin: it.origin } : {}), ...(it.blob ? { blob: it.blob.file } : {}),
          ...(it.blob?.gzip ? { gzip: it.blob.gzip } : {}),
        };
        const json = JSON.stringify(rec);
        const metaLength = Buffer.byteLength(json);
        // Header, meta and payload go to Buffer.concat as they are: one copy of the payload, not two.
        const prefix = Buffer.allocUnsafe(HEADER + 4 + metaLength);
        prefix.writeUInt32BE(4 + metaLength + it.payload.byteLength, 0);
        prefix.writeUInt32BE(metaLength, HEADER);
        prefix.write(json, HEADER + 4);
        const metaCrc = crc32(prefix.subarray(HEADER));
        // (zlib.crc32 of an empty TextEncoder output with a start value returns 0, not the start value.)
        prefix.writeUInt32BE(it.payload.byteLength > 0 ? crc32(it.payload, metaCrc) : metaCrc, 4);
        chunks.push(prefix, it.payload);
        recs.push({ ...rec, loc: { segment: this.segment, offset: off + prefix.byteLength, length: it.payload.byteLength } });
        at.push(off - base + prefix.byteLength);
        off += prefix.byteLength + it.payload.byteLength;
      }
      entries.push(recs);
    }
    const data = Buffer.concat(chunks);
    try {
      await writeAll(fh, data);
      await fh.sync();
    } catch (e) {
      // Never leave a partial record in front of later appends (a full disk,
      // say): recovery would stop at it and drop what follows.
      await fh.truncate(this.size).catch(() => undefined);
      throw e;
    }
    this.size = off;
    let r = 0;
    for (const recs of entries) {
      for (const e of recs) {
        const start = at[r++] as number;
        if (e.loc.length > 0 && this.cached + e.loc.length <= CACHE_BYTES) {
          e.bytes = data.subarray(start, start + e.loc.length);
          this.cached += e.loc.length;
        }
        this.addEntry(e);
        this.channelState(e.channel).lastSeq = e.seq;
      }
    }
    return entries.map((recs) => recs.map(({ loc: _loc, bytes: _bytes, ...r }) => r));
  }

  pending(channel: string, fromSeq?: number, limit?: number): SpoolRecord[] {
    const list = this.index.get(channel) ?? [];
    const from = fromSeq ?? 0;
    // Entries are in seq order: binary search for the first wanted one.
    let lo = 0;
    let hi = list.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((list[mid] as Entry).seq < from) lo = mid + 1;
      else hi = mid;
    }
    return list.slice(lo, limit === undefined ? undefined : lo + limit);
  }

  async readPayload(rec: SpoolRecord): Promise<Uint8Array> {
    const e = rec as Partial<Entry>;
    const entry = e.loc ? e : this.index.get(rec.channel)?.find((x) => x.seq === rec.seq);
    if (entry?.bytes) return entry.bytes;
    const loc = entry?.loc;
    if (!loc) throw new SpoolError("IO", `record ${rec.channel}#${rec.seq} is not in the spool`);
    let fh = this.readers.get(loc.segment);
    if (!fh) {
      fh = await open(join(this.dir, "segments", segName(loc.segment)), "r");
      this.readers.set(loc.segment, fh);
    }
    const buf = Buffer.allocUnsafe(loc.length);
    if (loc.length > 0) await fh.read(buf, 0, loc.length, loc.offset);
    return buf;
  }

  async ack(channel: string, upTo: number): Promise<void> {
    const st = this.channelState(channel);
    if (upTo <= st.acked) return;
    if (upTo > st.lastSeq) throw new SpoolError("IO", `ack up to ${upTo} on ${channel}, but the last captured seq is ${st.lastSeq}`);
    st.acked = upTo;
    const list = this.index.get(channel) ?? [];
    let n = 0;
    const touched = new Set<number>();
    const blobs: string[] = [];
    while (n < list.length && (list[n] as Entry).seq <= upTo) {
      const blob = (list[n] as Entry).blob;
      if (blob) blobs.push(blob);
      if ((list[n] as Entry).bytes) this.cached -= (list[n] as Entry).loc.length;
      const seg = (list[n] as Entry).loc.segment;
      this.live.set(seg, (this.live.get(seg) ?? 1) - 1);
      touched.add(seg);
      n++;
    }
    list.splice(0, n);
    // The watermark is durable before any segment goes, so seqs never restart.
    await this.saveState();
    for (const seg of touched) if (seg !== this.segment && !this.live.get(seg)) await this.dropSegment(seg);
    for (const b of blobs) {
      await unlink(join(this.dir, "blobs", b)).catch(() => undefined);
      await unlink(join(this.dir, "blobs", `${b}.seal.json`)).catch(() => undefined);
    }
  }

  /** Makes the marks as they are now durable (calls that arrive while one waits share it). */
  private saveState(): Promise<void> {
    return this.store.save();
  }

  private async dropSegment(n: number): Promise<void> {
    this.live.delete(n);
    await this.readers.get(n)?.close();
    this.readers.delete(n);
    await unlink(join(this.dir, "segments", segName(n))).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== "ENOENT") throw e;
    });
  }

  acked(channel: string): number {
    return this.state.channels[channel]?.acked ?? 0;
  }

  lastSeq(channel: string): number {
    return this.state.channels[channel]?.lastSeq ?? 0;
  }

  backlog(channel: string): { count: number; bytes: number } {
    const list = this.index.get(channel) ?? [];
    return { count: list.length, bytes: list.reduce((s, e) => s + e.size, 0) };
  }

  /** Unacknowledged records with large payloads, oldest first per channel. */
  pendingBlobs(): SpoolRecord[] {
    return [...this.index.values()].flatMap((l) => l.filter((e) => e.blob !== undefined));
  }

  channels(): string[] {
    return Object.keys(this.state.channels);
  }

  pendingOrigins(): SpoolRecord[] {
    return [...this.index.values()].flat().filter((e) => e.origin !== undefined);
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.committing;
    await this.fh?.close();
    this.fh = null;
    for (const fh of this.readers.values()) await fh.close();
    this.readers.clear();
    await this.store.close();
    await unlink(join(this.dir, "lock")).catch(() => undefined);
  }
}

/** Does gzip pay for this file? Judged on its first MiB (already-compressed data does not shrink). */
async function gzipPays(path: string): Promise<boolean> {
  const fh = await open(path, "r");
  try {
    const sample = Buffer.allocUnsafe(1024 * 1024);
    const { bytesRead } = await fh.read(sample, 0, sample.byteLength, 0);
    return bytesRead > 0 && gzipSync(sample.subarray(0, bytesRead), { level: 1 }).byteLength < bytesRead * GZIP_PAYS;
  } finally {
    await fh.close();
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** One process per spool: two writers would interleave records and reuse sequence numbers. */
async function lock(dir: string): Promise<void> {
  const path = join(dir, "lock");
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fh = await open(path, "wx", 0o600);
      await fh.writeFile(String(process.pid));
      await fh.close();
      return;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
      const pid = Number(await readFile(path, "utf8").catch(() => ""));
      if (pid > 0 && pid !== process.pid && alive(pid)) {
        throw new SpoolError("LOCKED", `the spool in ${dir} is in use by process ${pid} (a running connector); stop it or use another state folder`);
      }
      // Left by a process that died (kill -9): take it over.
      await unlink(path).catch(() => undefined);
    }
  }
  throw new SpoolError("LOCKED", `could not lock the spool in ${dir}`);
}
