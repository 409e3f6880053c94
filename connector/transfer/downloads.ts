import { createHash, type Hash } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { mkdir, open, readdir, readFile, stat, unlink, type FileHandle } from "node:fs/promises";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";
import { createGunzip } from "node:zlib";
import { encodeFrame, ErrorCode, partLength, type DeliverMessage, type ErrorFrame, type PartFrame, type RelayFrame, type RelayedFrame } from "../../wire/index.ts";
import { fsyncPath, writeAll, writeFileAtomic } from "../core/durable-fs.ts";
import { hashTap } from "../core/hash-tap.ts";
import type { Logger } from "../core/log.ts";
import type { TransferProgress } from "./progress.ts";
import { keepMemoryUnder, TRANSFER_RSS_LIMIT } from "../core/memory.ts";
import { openPart, ProtectionError, SEAL_OVERHEAD } from "../protection/protection.ts";

/** Parts asked for ahead of what is written. */
const WINDOW = 2;
/** Parts written between two fsyncs of the partial file (and of the count beside it). */
const SYNC_EVERY = 4;
/** A part that fails its digest this often in a row fails the transfer (it is corrupt at rest, not on the way). */
const MAX_PART_RETRIES = 5;
/** Bytes of the progress record (JSON padded with spaces). */
const PROGRESS_RECORD = 256;
/**
 * A payload's files untouched this long are deleted when the connector
 * starts: a day past the edge's 7 days for an upload nobody sent, and longer
 * than any download sits between two parts.
 */
export const SWEEP_AFTER_MS = 8 * 86_400_000;

/** `verified`: the whole payload was written, fsynced and its SHA-256 checked as it was written (a relay). */
type Progress = { have: number; size: number; sha256: string; chunk: number; verified?: boolean };

/** A relayed payload being received (docs/decisions.md D19): written where its download would be. */
type Relay = {
  key: string;
  progressFh?: FileHandle;
  src: string;
  dst: string;
  id: string;
  size: number;
  sha256: string;
  chunk: number;
  parts: number;
  /** The file's name, if its sender gave one (else the id is shown until the claim check names it). */
  name?: string;
  fh: FileHandle;
  hash: Hash;
  have: number;
  lastAt: number;
};

type RelayAnswer = Pick<RelayedFrame, "ok" | "have" | "code" | "message">;

/** Bytes of a payload in its first `have` parts. */
const heldBytes = (have: number, chunk: number, size: number) => Math.min(size, have * chunk);

function progressRecord(p: Progress): Buffer {
  const buf = Buffer.alloc(PROGRESS_RECORD, " ");
  buf.write(JSON.stringify(p));
  return buf;
}

/** The name of a payload's files: one source's message may reach two channels of this connector. */
function keyOf(dst: string, id: string): string {
  return `${id}-${createHash("sha256").update(dst).digest("hex").slice(0, 12)}`;
}

/** Why a large payload could not be fetched; `retry` says whether trying later can help. */
export class TransferError extends Error {
  override readonly name = "TransferError";
  constructor(
    message: string,
    readonly retry: boolean,
  ) {
    super(message);
  }
}

type Download = {
  /** The progress record, open for updates in place. */
  progressFh?: FileHandle;
  /** Names its files: the message id and the destination (one source may fan out to two channels here). */
  key: string;
  src: string;
  dst: string;
  meta: DeliverMessage & { blob: NonNullable<DeliverMessage["blob"]> };
  path: string;
  fh: FileHandle;
  hash: Hash;
  have: number;
  /** Written, fsynced and checked whole by a relay: not hashed again. */
  verified: boolean;
  /** The next part to ask for. */
  next: number;
  arrived: Map<number, Uint8Array>;
  retries: Map<number, number>;
  writing: boolean;
  lastProgress: number;
  resolve: (path: string) => void;
  reject: (e: Error) => void;
};

export type DownloadDeps = {
  /** Where partial payloads are kept (the state folder's `downloads/`). */
  dir: string;
  send: (frame: Uint8Array) => boolean;
  connected: () => boolean;
  log: Logger;
  /** Large payloads fetched at the same time. */
  limit: number;
  onProgress: (p: TransferProgress) => void;
};

/**
 * The receiver's half of large payloads: parts are fetched a few ahead,
 * each checked against the digest the edge took on upload (a corrupt one is
 * fetched again, not the whole file), written in order to
 * `downloads/<key>.part` and fsynced every SYNC_EVERY parts, with the count
 * of parts durably written kept beside it, so a cut connection or a restart
 * resumes from there. The whole payload's SHA-256 is checked before it is handed on:
 * a wrong file is never delivered.
 */
export class Downloads {
  private readonly active = new Map<string, Download>();
  private readonly relays = new Map<string, Relay>();
  /** Per payload: relayed parts are handled one after another, in the order they came. */
  private readonly relayChains = new Map<string, Promise<void>>();
  private readonly waiting: (() => void)[] = [];

  constructor(private readonly d: DownloadDeps) {}

  /**
   * Deletes the files of payloads nobody asked for in SWEEP_AFTER_MS (a
   * download whose message expired at the edge, a relay that broke off and
   * was never fetched): run at start, before any transfer, so nothing here
   * is in use. A download asked for again later starts over; nothing is
   * lost, since the edge holds what it delivers. A relayed payload written
   * whole stays however old (D19: it is held nowhere else until its claim
   * check comes). Returns how many payloads went.
   */
  static async sweep(dir: string, log: Logger, now = Date.now()): Promise<number> {
    const byKey = new Map<string, string[]>();
    for (const name of await readdir(dir).catch(() => [] as string[])) {
      const key = /^(.+)\.(part|json|plain)$/.exec(name)?.[1];
      if (key) byKey.set(key, [...(byKey.get(key) ?? []), name]);
    }
    let gone = 0;
    for (const [key, names] of byKey) {
      const touched = await Promise.all(names.map((n) => stat(join(dir, n)).then((s) => s.mtimeMs, () => now)));
      if (now - Math.max(...touched) < SWEEP_AFTER_MS) continue;
      const record = await readFile(join(dir, `${key}.json`), "utf8").then((t) => JSON.parse(t) as Progress, () => null);
      if (record?.verified) continue;
      await Promise.all(names.map((n) => unlink(join(dir, n)).catch(() => undefined)));
      log("info", "deleted a partial large payload nobody asked for in 8 days", { key, files: names });
      gone++;
    }
    return gone;
  }

  private paths(key: string): { part: string; progress: string; plain: string } {
    return { part: join(this.d.dir, `${key}.part`), progress: join(this.d.dir, `${key}.json`), plain: join(this.d.dir, `${key}.plain`) };
  }

  list(): TransferProgress[] {
    return [
      ...[...this.active.values()].map((x) => this.progress(x)),
      ...[...this.relays.values()].map((r) => this.relayProgress(r)),
    ];
  }

  /** Fetches a delivered message's payload; resolves with the path of the verified file. */
  async fetch(src: string, dst: string, meta: DeliverMessage): Promise<string> {
    const blob = meta.blob;
    if (!blob) throw new TransferError(`message ${meta.id} has no large payload`, false);
    const key = keyOf(dst, meta.id);
    if (this.active.has(key)) throw new TransferError(`message ${meta.id} is already being fetched for ${dst}`, true);
    while (this.active.size >= this.d.limit) await new Promise<void>((r) => this.waiting.push(r));
    try {
      return await this.run(key, src, dst, { ...meta, blob });
    } finally {
      this.waiting.shift()?.();
    }
  }

  private async run(key: string, src: string, dst: string, meta: Download["meta"]): Promise<string> {
    await mkdir(this.d.dir, { recursive: true });
    // A relay of this payload ended (whole) or broke off: what it wrote is where this resumes.
    await this.settleRelay(key);
    const { part: path, progress } = this.paths(key);
    // Resume from what an earlier run wrote, if it was fetching this very payload.
    // A torn record (power lost mid-write) reads as none: the download starts over, never resumes wrongly.
    const prior = await readFile(progress, "utf8").then((t) => JSON.parse(t) as Progress, () => null);
    let have = prior && prior.size === meta.size && prior.sha256 === meta.sha256 && prior.chunk === meta.blob.chunk ? Math.min(prior.have, meta.blob.parts) : 0;
    const verified = prior?.verified === true && have === meta.blob.parts;
    const fh = await open(path, have > 0 ? "r+" : "w", 0o600).catch(async () => {
      have = 0;
      return open(path, "w", 0o600);
    });
    const hash = createHash("sha256");
    try {
      // Bytes past the last recorded part may be torn: cut them, and hash what stays
      // (a payload a relay wrote and checked whole is not read again).
      const held = heldBytes(have, meta.blob.chunk, meta.size);
      await fh.truncate(held);
      if (have > 0 && !verified) {
        for await (const c of createReadStream(path, { start: 0, end: held - 1, highWaterMark: 1024 * 1024 })) hash.update(c as Buffer);
        this.d.log("info", "resuming a large payload", { id: meta.id, file: meta.fields?.filename, parts: `${have}/${meta.blob.parts}` });
      }
      // The progress record's space is taken now, while there is some: updates then overwrite it in place.
      if (!prior || have === 0) await writeFileAtomic(progress, progressRecord({ have: 0, size: meta.size, sha256: meta.sha256, chunk: meta.blob.chunk }));
    } catch (e) {
      await fh.close();
      const full = (e as NodeJS.ErrnoException).code === "ENOSPC";
      throw new TransferError(full ? `the disk holding ${this.d.dir} is full; it is tried again` : `cannot prepare ${path}: ${(e as Error).message}`, true);
    }
    return new Promise<string>((resolve, reject) => {
      const x: Download = {
        key, src, dst, meta, path, fh, hash, have, verified, next: have + 1, arrived: new Map(), retries: new Map(), writing: false, lastProgress: Date.now(),
        resolve, reject,
      };
      this.active.set(key, x);
      this.d.onProgress(this.progress(x));
      if (have >= meta.blob.parts) void this.drain(x);
      else this.ask(x);
    });
  }

  private ask(x: Download): void {
    if (!this.d.connected()) return;
    while (x.next <= x.meta.blob.parts && x.next - x.have <= WINDOW) {
      if (!this.d.send(encodeFrame({ t: "get", src: x.src, dst: x.dst, id: x.meta.id, part: x.next }))) return;
      x.next++;
    }
  }

  /** A new connection: ask again for everything not written. */
  onOpen(): void {
    for (const x of this.active.values()) {
      x.arrived.clear();
      x.next = x.have + 1;
      x.lastProgress = Date.now();
      this.ask(x);
    }
  }

  onPart(f: PartFrame, bytes: Uint8Array): void {
    const x = this.active.get(keyOf(f.dst, f.id));
    if (!x || f.src !== x.src || f.part <= x.have || x.arrived.has(f.part)) return;
    const want = partLength(x.meta.size, x.meta.blob.chunk, f.part);
    const digest = createHash("sha256").update(bytes).digest("hex");
    if (bytes.byteLength !== want || digest !== f.sha256) {
      const n = (x.retries.get(f.part) ?? 0) + 1;
      x.retries.set(f.part, n);
      if (n > MAX_PART_RETRIES) {
        this.fail(x, new TransferError(`part ${f.part} of ${x.meta.id} failed its digest ${n} times; the stored copy is damaged`, false));
        return;
      }
      this.d.log("warn", "a part arrived damaged; fetching it again", { id: x.meta.id, part: f.part, attempt: n });
      this.d.send(encodeFrame({ t: "get", src: x.src, dst: x.dst, id: x.meta.id, part: f.part }));
      return;
    }
    // A view into the frame's own buffer, which the socket allocated for this message alone.
    x.arrived.set(f.part, bytes);
    x.lastProgress = Date.now();
    void this.drain(x);
  }

  /** Writes arrived parts in order, durably, then checks the whole payload. */
  private async drain(x: Download): Promise<void> {
    if (x.writing) return;
    x.writing = true;
    try {
      for (let bytes = x.arrived.get(x.have + 1); bytes; bytes = x.arrived.get(x.have + 1)) {
        const part = x.have + 1;
        x.arrived.delete(part);
        try {
          const writing = writeAll(x.fh, bytes, (part - 1) * x.meta.blob.chunk);
          // Digested while the thread pool writes it (a failed write fails this download; a retry digests what is on disk).
          x.hash.update(bytes);
          await writing;
          // The count on disk moves only after an fsync of what it counts; every few parts, not each
          // (two fsyncs per 8 MiB part cost more than the write): a crash re-fetches at most SYNC_EVERY - 1 parts.
          if (part % SYNC_EVERY === 0 || part === x.meta.blob.parts) {
            await x.fh.sync();
            await this.record(x, part);
          }
        } catch (e) {
          const code = (e as NodeJS.ErrnoException).code;
          const why = code === "ENOSPC" ? `the disk holding ${this.d.dir} is full` : (e as Error).message;
          // Keep what was written whole: cut the torn part, fsync, count it (best effort: the disk may refuse even that).
          await this.checkpoint(x).catch(() => undefined);
          this.fail(x, new TransferError(`cannot write part ${part} of ${x.meta.id}: ${why}; it resumes from part ${x.have + 1} when retried`, true));
          return;
        }
        x.have = part;
        x.retries.delete(part);
        keepMemoryUnder(TRANSFER_RSS_LIMIT);
        this.d.onProgress(this.progress(x));
        this.d.log("debug", "download progress", { id: x.meta.id, have: part, parts: x.meta.blob.parts });
        this.ask(x);
      }
      if (x.have >= x.meta.blob.parts) {
        const digest = x.verified ? x.meta.sha256 : x.hash.digest("hex");
        if (digest !== x.meta.sha256) {
          await this.remove(x.key);
          this.fail(x, new TransferError(`the payload of ${x.meta.id} has SHA-256 ${digest}, not the ${x.meta.sha256} its sender computed`, false));
          return;
        }
        await x.fh.close().catch(() => undefined);
        let path = x.path;
        if (x.meta.blob.encoding === "gzip") {
          try {
            path = await this.inflate(x);
          } catch (e) {
            this.fail(x, e instanceof TransferError ? e : new TransferError(`cannot inflate ${x.meta.id}: ${(e as Error).message}`, true));
            return;
          }
        }
        this.active.delete(x.key);
        await x.progressFh?.close().catch(() => undefined);
        x.resolve(path);
      }
    } finally {
      x.writing = false;
    }
  }

  /**
   * A payload sealed part by part (an `encrypt` route), fetched and verified
   * as ciphertext: each part opened into `<id>.plain`, and the original's
   * size and digest checked. A part that does not open is a forgery.
   */
  async open(dst: string, id: string, sealed: string, blob: NonNullable<DeliverMessage["blob"]>, info: { cek: Buffer; chunk: number; size: number; sha256: string }): Promise<string> {
    const out = this.paths(keyOf(dst, id)).plain;
    const hash = createHash("sha256");
    const from = await open(sealed, "r");
    const to = await open(out, "w", 0o600);
    try {
      const buf = Buffer.allocUnsafe(blob.chunk);
      let size = 0;
      for (let part = 1; part <= blob.parts; part++) {
        const len = partLength(info.size + SEAL_OVERHEAD * blob.parts, blob.chunk, part);
        await from.read(buf, 0, len, (part - 1) * blob.chunk);
        const plain = openPart(info.cek, part, buf.subarray(0, len));
        await writeAll(to, plain, size);
        hash.update(plain);
        size += plain.byteLength;
      }
      await to.sync();
      if (size !== info.size || hash.digest("hex") !== info.sha256) throw new ProtectionError("FORGED", `${id} decrypts to another file than its sender sealed`);
    } catch (e) {
      await unlink(out).catch(() => undefined);
      throw e;
    } finally {
      await from.close();
      await to.close();
    }
    await unlink(sealed).catch(() => undefined);
    return out;
  }

  /**
   * Records how many parts are durably written, in place: a record of fixed
   * size in a file made when the download began, so recording never needs
   * new disk space (it must work on a full disk) and costs one fsync.
   */
  private async record(x: Download, have: number): Promise<void> {
    await this.writeRecord(x, { have, size: x.meta.size, sha256: x.meta.sha256, chunk: x.meta.blob.chunk });
  }

  private async writeRecord(x: { key: string; progressFh?: FileHandle }, p: Progress): Promise<void> {
    const buf = progressRecord(p);
    x.progressFh ??= await open(this.paths(x.key).progress, "r+");
    await writeAll(x.progressFh, buf, 0);
    await x.progressFh.sync();
  }

  /** Makes the parts written so far durable and records their count (after a failed write). */
  private async checkpoint(x: Download): Promise<void> {
    await x.fh.truncate(x.have * x.meta.blob.chunk);
    await x.fh.sync();
    await this.record(x, x.have);
  }

  /** A compressed payload, verified as sent: inflated beside it, and checked against the original's size and digest. */
  private async inflate(x: Download): Promise<string> {
    const out = this.paths(x.key).plain;
    const hash = createHash("sha256");
    let size = 0;
    try {
      await pipeline(createReadStream(x.path), createGunzip(), hashTap(hash, (n) => (size += n)), createWriteStream(out, { mode: 0o600 }));
      // fsync through a handle of its own: on Node 20 a handle whose stream was piped into never answers sync().
      await fsyncPath(out);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      throw new TransferError(code === "ENOSPC" ? `the disk holding ${this.d.dir} is full (inflating ${x.meta.id})` : `cannot inflate ${x.meta.id}: ${(e as Error).message}`, code === "ENOSPC");
    }
    const digest = hash.digest("hex");
    if (digest !== x.meta.blob.plainSha256 || size !== x.meta.blob.plainSize) {
      await this.remove(x.key);
      throw new TransferError(`${x.meta.id} inflates to ${size} bytes with SHA-256 ${digest}, not the original its sender described`, false);
    }
    // The compressed copy is no longer needed; its progress file stays until delivery (discard), so a crash here resumes quickly.
    await unlink(x.path).catch(() => undefined);
    return out;
  }

  private fail(x: Download, e: TransferError): void {
    if (this.active.get(x.key) !== x) return;
    this.active.delete(x.key);
    void x.progressFh?.close().catch(() => undefined);
    void x.fh.close().catch(() => undefined);
    x.reject(e);
  }

  /**
   * One part of a payload the edge relays from its sender (D19), written
   * where its download would be and answered with `relayed`. Parts of one
   * payload are handled in the order they came.
   */
  relay(f: RelayFrame, bytes: Uint8Array): void {
    const key = keyOf(f.dst, f.id);
    const run = (this.relayChains.get(key) ?? Promise.resolve())
      .then(() => this.relayPart(key, f, bytes))
      .then((a) => {
        this.d.send(encodeFrame({ t: "relayed", src: f.src, dst: f.dst, id: f.id, part: f.part, ...a }));
      })
      .catch((e: unknown) => this.d.log("error", "a relayed part could not be handled", { id: f.id, part: f.part, error: (e as Error).message }));
    this.relayChains.set(key, run);
    void run.then(() => {
      if (this.relayChains.get(key) === run) this.relayChains.delete(key);
    });
  }

  private async relayPart(key: string, f: RelayFrame, bytes: Uint8Array): Promise<RelayAnswer> {
    let r = this.relays.get(key);
    if (r && (r.src !== f.src || r.size !== f.size || r.sha256 !== f.sha256 || r.chunk !== f.chunk)) {
      await this.settleRelay(key);
      r = undefined;
    }
    if (!r) {
      if (this.active.has(key)) return { ok: false, have: 0, code: ErrorCode.UNKNOWN_STREAM, message: `${f.id} is being fetched from the edge's store here already` };
      // A relay starts at part 1; one that finds no state here lost it (a restart): the edge stores the payload instead.
      if (f.part !== 1) return { ok: false, have: 0, code: ErrorCode.UNKNOWN_STREAM, message: `no relay of ${f.id} is in progress here (this connector restarted); store it at the edge` };
      const { part: path, progress } = this.paths(key);
      try {
        await mkdir(this.d.dir, { recursive: true });
        const fh = await open(path, "w", 0o600);
        r = { key, src: f.src, dst: f.dst, id: f.id, size: f.size, sha256: f.sha256, chunk: f.chunk, parts: f.parts, ...(f.name ? { name: f.name } : {}), fh, hash: createHash("sha256"), have: 0, lastAt: Date.now() };
        this.relays.set(key, r);
        await writeFileAtomic(progress, progressRecord({ have: 0, size: f.size, sha256: f.sha256, chunk: f.chunk }));
      } catch (e) {
        if (r) await this.settleRelay(key);
        const message = this.diskError(`cannot start receiving ${f.id}`, e);
        this.d.log("warn", "a relayed payload could not be written here; the edge stores it instead and it is fetched later", { id: f.id, have: 0, error: message });
        return { ok: false, have: 0, code: ErrorCode.STORAGE, message };
      }
      this.d.log("info", "receiving a large payload relayed from its sender", { id: f.id, ...(f.name ? { file: f.name } : {}), from: f.src, channel: f.dst, size: f.size, parts: f.parts });
    }
    r.lastAt = Date.now();
    if (f.part <= r.have) return { ok: true, have: r.have };
    if (f.part !== r.have + 1) return { ok: false, have: r.have, code: ErrorCode.BAD_CHUNK, message: `part ${f.part} of ${f.id} arrived before part ${r.have + 1}` };
    if (bytes.byteLength !== partLength(f.size, f.chunk, f.part)) return this.damaged(r, f);
    // The thread pool writes the part while this thread takes both digests of the same bytes: a
    // part's time here is the longer of the two, not their sum. What is written past `have` counts
    // for nothing until it is: a damaged part is written over by its resend, or cut when the relay
    // settles, and after a crash the record counts only what was fsynced.
    const writing = writeAll(r.fh, bytes, (f.part - 1) * f.chunk);
    if (createHash("sha256").update(bytes).digest("hex") !== f.psha) {
      await writing.catch(() => undefined);
      return this.damaged(r, f);
    }
    r.hash.update(bytes);
    try {
      await writing;
      r.have = f.part;
      if (r.have === r.parts) {
        const digest = r.hash.digest("hex");
        if (digest !== r.sha256) {
          await this.settleRelay(key);
          await this.remove(key);
          return { ok: false, have: 0, code: ErrorCode.BAD_FRAME, message: `the relayed payload of ${f.id} has SHA-256 ${digest}, not the ${r.sha256} its sender computed` };
        }
        // Whole and checked: durable before the edge may count it as held (the sender then lets go of its copy).
        await r.fh.sync();
        await this.writeRecord(r, this.relayRecord(r, true));
        await this.settleRelay(key);
        this.d.log("info", "relayed payload received whole", { id: f.id, size: f.size });
      } else if (r.have % SYNC_EVERY === 0) {
        await r.fh.sync();
        await this.writeRecord(r, this.relayRecord(r));
      }
    } catch (e) {
      const have = r.have;
      await this.settleRelay(key);
      const message = this.diskError(`cannot write part ${f.part} of ${f.id}`, e);
      this.d.log("warn", "a relayed payload could not be written here; the edge stores it instead and it is fetched later", { id: f.id, have, error: message });
      return { ok: false, have, code: ErrorCode.STORAGE, message };
    }
    keepMemoryUnder(TRANSFER_RSS_LIMIT);
    this.d.onProgress(this.relayProgress(r));
    this.d.log("debug", "relay progress", { id: f.id, have: r.have, parts: r.parts });
    return { ok: true, have: r.have };
  }

  private damaged(r: Relay, f: RelayFrame): RelayAnswer {
    this.d.log("warn", "a relayed part arrived damaged; asking for it again", { id: f.id, part: f.part });
    return { ok: false, have: r.have, code: ErrorCode.BAD_CHUNK, message: `part ${f.part} of ${f.id} does not match its size or SHA-256 (damaged on the way); resend it` };
  }

  private diskError(what: string, e: unknown): string {
    return (e as NodeJS.ErrnoException).code === "ENOSPC" ? `${what}: the disk holding ${this.d.dir} is full` : `${what}: ${(e as Error).message}`;
  }

  /**
   * Ends a relay here (whole, broken off, or idle): the parts written so far
   * are made durable and counted (best effort), so a download of the payload
   * from the edge's store resumes after them.
   */
  private async settleRelay(key: string): Promise<void> {
    const r = this.relays.get(key);
    if (!r) return;
    this.relays.delete(key);
    try {
      const held = heldBytes(r.have, r.chunk, r.size);
      if (r.have < r.parts) {
        await r.fh.truncate(held);
        await r.fh.sync();
        await this.writeRecord(r, this.relayRecord(r));
      }
    } catch {
      // The disk refused even that: the record on disk still counts only fsynced parts.
    } finally {
      await r.fh.close().catch(() => undefined);
      await r.progressFh?.close().catch(() => undefined);
    }
  }

  /** What a relay has written, as its progress record says it. */
  private relayRecord(r: Relay, verified?: true): Progress {
    return { have: r.have, size: r.size, sha256: r.sha256, chunk: r.chunk, ...(verified ? { verified } : {}) };
  }

  /** A relay shows as a download, by the name its sender gave (else by its id: the file's name comes with the claim check). */
  private relayProgress(r: Relay): TransferProgress {
    return downProgress(r.dst, r.id, r.name ?? r.id, r.have, r.chunk, r.size);
  }

  /** An error frame about a fetch; false if it is not about one of ours. */
  onError(f: ErrorFrame): boolean {
    const x = f.id && f.dst ? this.active.get(keyOf(f.dst, f.id)) : undefined;
    if (!x || f.src !== x.src) return false;
    if (f.code === ErrorCode.STORAGE && f.part) {
      setTimeout(() => {
        if (this.active.get(x.key) === x) this.d.send(encodeFrame({ t: "get", src: x.src, dst: x.dst, id: x.meta.id, part: f.part as number }));
      }, 1000).unref();
      return true;
    }
    this.fail(x, new TransferError(`the edge refused part ${f.part} of ${x.meta.id}: ${f.message}`, f.code !== ErrorCode.UNKNOWN_STREAM));
    return true;
  }

  /** A fetch waited for a part longer than `ms`: the link is bad. */
  stalled(now: number, ms: number): boolean {
    // A relay that stopped coming ended at the edge (which then stores the payload): let go of its file.
    for (const r of this.relays.values()) if (now - r.lastAt > 2 * ms) void this.settleRelay(r.key);
    for (const x of this.active.values()) {
      if (x.next - 1 > x.have && now - x.lastProgress > ms) {
        x.lastProgress = now;
        return true;
      }
    }
    return false;
  }

  /** Forgets a payload's partial or finished files for `dst` (after delivery, or when it is refused). */
  discard(dst: string, id: string): Promise<void> {
    return this.remove(keyOf(dst, id));
  }

  private async remove(key: string): Promise<void> {
    const p = this.paths(key);
    await unlink(p.part).catch(() => undefined);
    await unlink(p.plain).catch(() => undefined);
    await unlink(p.progress).catch(() => undefined);
  }

  private progress(x: Download): TransferProgress {
    return downProgress(x.dst, x.meta.id, x.meta.fields?.filename ?? x.meta.id, x.have, x.meta.blob.chunk, x.meta.size);
  }
}

function downProgress(channel: string, id: string, name: string, have: number, chunk: number, size: number): TransferProgress {
  return { direction: "down", channel, id, name, done: heldBytes(have, chunk, size), total: size };
}
