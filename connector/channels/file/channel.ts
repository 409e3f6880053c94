import { mkdir, readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { Limits, MAX_BLOB_BYTES } from "../../../wire/index.ts";
import type { FileChannelConfig } from "../../config/config.ts";
import type { Connector, Incoming, Receiver } from "../../core/connector.ts";
import { OutboxScanner, type OutboxFile } from "./outbox.ts";
import { DeliveryLog } from "./delivery-log.ts";
import { FileInbox } from "./inbox.ts";
import { safeInboxName } from "./names.ts";
import type { Channel } from "../channel.ts";
import { writeDeadLetter } from "../../core/dead-letters.ts";

/** Files captured per spool commit: one fsync for many small files. */
const CAPTURE_BATCH_FILES = 256;
const CAPTURE_BATCH_BYTES = 8 * 1024 * 1024;

/**
 * The `file` channel: complete files in the outbox are captured into the
 * spool and only then removed; deliveries land in the inbox atomically and
 * exactly once. The file's name, size and mtime travel in the envelope's
 * fields, its SHA-256 in the envelope itself.
 */
export class FileChannel implements Receiver, Channel {
  private scanner: OutboxScanner | null = null;
  private inbox: FileInbox | null = null;
  private deliveryLog: DeliveryLog | null = null;
  private timer: NodeJS.Timeout | null = null;
  private stopped = false;
  private polling: Promise<void> = Promise.resolve();
  private readonly unreleased = new Map<string, OutboxFile>();
  private readonly oversized = new Set<string>();

  constructor(
    readonly cfg: FileChannelConfig,
    private readonly connector: Connector,
    private readonly stateDir: string,
  ) {}

  get name(): string {
    return this.cfg.name;
  }

  /** Prepares folders and recovers from a crash; call before the connector starts. */
  async open(): Promise<void> {
    if (this.cfg.inbox) {
      await mkdir(this.cfg.inbox, { recursive: true });
      this.deliveryLog = await DeliveryLog.open(join(this.stateDir, `delivered-${this.cfg.name}.json`));
      this.inbox = new FileInbox({ dir: this.cfg.inbox, log: this.deliveryLog, collisions: this.cfg.collisions });
      await this.inbox.recover();
      this.connector.receive(this.cfg.name, this);
    }
    if (this.cfg.outbox) {
      await mkdir(this.cfg.outbox, { recursive: true });
      this.scanner = new OutboxScanner({ dir: this.cfg.outbox, rule: this.cfg.pickup, recursive: this.cfg.recursive });
      await this.releaseCaptured();
    }
  }

  /** A crash between capture and removal leaves the source behind: remove it, don't send it twice. */
  private async releaseCaptured(): Promise<void> {
    for (const rec of this.connector.spool.pendingOrigins()) {
      if (rec.channel !== this.cfg.name || !rec.origin || !this.scanner) continue;
      const st = await stat(rec.origin.path).catch(() => null);
      if (st && st.ino === rec.origin.ino && st.size === rec.origin.size && st.mtimeMs === rec.origin.mtimeMs) {
        await this.scanner.release({ path: rec.origin.path });
        this.connector.log("info", "removed a source file captured before a crash", { channel: this.cfg.name, file: rec.origin.path, seq: rec.seq });
      }
    }
  }

  start(): void {
    if (!this.scanner) return;
    const tick = () => {
      if (this.stopped) return;
      this.polling = this.poll()
        .catch((e: unknown) => this.connector.log("error", "outbox scan failed", { channel: this.cfg.name, error: (e as Error).message }))
        .finally(() => {
          if (!this.stopped) this.timer = setTimeout(tick, this.cfg.poll_ms);
        });
    };
    tick();
  }

  /** Stops picking up files; a capture in progress finishes first (nothing half-captured). */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.polling;
    await this.deliveryLog?.close();
  }

  private async poll(): Promise<void> {
    const scanner = this.scanner;
    if (!scanner) return;
    await this.retryReleases(scanner);
    const ready = (await scanner.scan()).filter((f) => !this.unreleased.has(f.path));
    // In the order the files became ready (the scan's order is the stream's): large files are
    // captured one by one without being read into memory, the small ones between them many per commit.
    for (let i = 0; i < ready.length && !this.stopped; ) {
      const next = ready[i] as OutboxFile;
      if (next.size > Limits.MAX_INLINE_PAYLOAD) {
        i++;
        await this.captureLarge(scanner, next);
        continue;
      }
      const batch: { file: OutboxFile; payload: Uint8Array }[] = [];
      let bytes = 0;
      while (i < ready.length && (ready[i] as OutboxFile).size <= Limits.MAX_INLINE_PAYLOAD && batch.length < CAPTURE_BATCH_FILES && (batch.length === 0 || bytes < CAPTURE_BATCH_BYTES)) {
        const file = ready[i++] as OutboxFile;
        const payload = await readFile(file.path).catch(() => null);
        // Gone or changed since the scan: the next scan decides again.
        if (!payload || payload.byteLength !== file.size) continue;
        batch.push({ file, payload });
        bytes += payload.byteLength;
      }
      if (batch.length === 0) continue;
      const recs = await this.connector.sendMany(
        this.cfg.name,
        batch.map(({ file, payload }) => ({
          payload,
          contentType: this.cfg.content_type,
          fields: { filename: file.name, size: String(file.size), mtime: new Date(file.mtimeMs).toISOString() },
          origin: { path: file.path, ino: file.ino, size: file.size, mtimeMs: file.mtimeMs },
        })),
        async () => {
          for (const { file } of batch) await this.release(scanner, file);
        },
      );
      for (const r of recs) {
        this.connector.log("info", "captured", { channel: this.cfg.name, file: r.fields?.filename, seq: r.seq, id: r.id, size: r.size, mtime: r.fields?.mtime, sha256: r.sha256 });
      }
    }
  }

  private async captureLarge(scanner: OutboxScanner, file: OutboxFile): Promise<void> {
    if (file.size > MAX_BLOB_BYTES) {
      if (!this.oversized.has(file.path)) this.connector.log("error", "file larger than Ferry carries; it stays in the outbox", { channel: this.cfg.name, file: file.name, size: file.size, limit: MAX_BLOB_BYTES });
      this.oversized.add(file.path);
      return;
    }
    const st = await stat(file.path).catch(() => null);
    // Gone or changed since the scan: the next scan decides again.
    if (!st || st.size !== file.size || st.mtimeMs !== file.mtimeMs) return;
    const r = await this.connector.sendFile(
      this.cfg.name,
      file.path,
      {
        contentType: this.cfg.content_type,
        fields: { filename: file.name, size: String(file.size), mtime: new Date(file.mtimeMs).toISOString() },
        origin: { path: file.path, ino: file.ino, size: file.size, mtimeMs: file.mtimeMs },
      },
      () => this.release(scanner, file),
    );
    this.connector.log("info", "captured", { channel: this.cfg.name, file: r.fields?.filename, seq: r.seq, id: r.id, size: r.size, mtime: r.fields?.mtime, sha256: r.sha256 });
  }

  private async release(scanner: OutboxScanner, file: OutboxFile): Promise<void> {
    try {
      await scanner.release(file);
    } catch (e) {
      // Captured but still there: never capture it again; keep trying to remove it.
      this.unreleased.set(file.path, file);
      this.connector.log("error", "captured file could not be removed from the outbox; it will not be sent twice", { channel: this.cfg.name, file: file.name, error: (e as Error).message });
    }
  }

  /** Files captured whose removal failed: removed once possible, never captured twice. */
  private async retryReleases(scanner: OutboxScanner): Promise<void> {
    for (const [path, file] of this.unreleased) {
      const st = await stat(path).catch(() => null);
      // Gone, or replaced by a new file with the same name: either way no longer ours to hold back.
      if (!st || st.ino !== file.ino || st.size !== file.size || st.mtimeMs !== file.mtimeMs) {
        this.unreleased.delete(path);
        continue;
      }
      await scanner.release(file).then(
        () => this.unreleased.delete(path),
        () => undefined,
      );
    }
  }

  hwm(stream: string): number {
    return this.deliveryLog?.hwm(stream) ?? 0;
  }

  async skip(stream: string, upTo: number): Promise<void> {
    await this.deliveryLog?.commit(stream, upTo);
  }

  /**
   * Delivers in order. A name that would escape the inbox is never written
   * there: that message becomes a local dead letter (kept in the state
   * folder with its envelope) and the stream moves on.
   */
  async deliver(stream: string, msgs: Incoming[]): Promise<number> {
    const inbox = this.inbox;
    const log = this.deliveryLog;
    if (!inbox || !log) throw new Error(`channel ${this.cfg.name} has no inbox`);
    let run: Incoming[] = [];
    const flush = async () => {
      if (run.length === 0) return;
      const res = await inbox.deliver(
        stream,
        run.map((m) => ({ dseq: m.meta.dseq, name: m.meta.fields?.filename ?? m.meta.id, payload: m.payload, sha256: m.meta.sha256, ...(m.file ? { file: m.file } : {}) })),
      );
      // The file's metadata as the sender captured it (name, size, mtime) and its verified digest, next to where it landed.
      const byDseq = new Map(run.map((m) => [m.meta.dseq, m.meta]));
      for (const d of res.delivered) {
        const meta = byDseq.get(d.dseq);
        this.connector.log("info", "delivered", { channel: this.cfg.name, stream, dseq: d.dseq, id: meta?.id, name: meta?.fields?.filename ?? meta?.id, path: d.path, size: meta?.size, mtime: meta?.fields?.mtime, sha256: meta?.sha256 });
      }
      run = [];
    };
    for (const m of msgs) {
      try {
        safeInboxName(m.meta.fields?.filename ?? m.meta.id);
        run.push(m);
      } catch (e) {
        await flush();
        const kept = await writeDeadLetter(this.stateDir, this.cfg.name, stream, m.meta, m.file ?? m.payload, (e as Error).message);
        this.connector.log("error", "delivery refused: unsafe file name; kept as a dead letter", { channel: this.cfg.name, stream, dseq: m.meta.dseq, id: m.meta.id, name: m.meta.fields?.filename, reason: (e as Error).message, kept });
        await log.commit(stream, m.meta.dseq);
      }
    }
    await flush();
    return log.hwm(stream);
  }
}
