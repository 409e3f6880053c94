import { ErrorCode, partLength, toHex, type UploadFrame } from "../../wire/index.ts";
import { archiveBinding, archiveBucket } from "../../workers/region.ts";

/** An upload nobody completed or referred to for this long is abandoned: its parts are deleted. */
export const ABANDON_AFTER_MS = 7 * 86_400_000;
/** Transfer objects live beside the archives of the source's region, under this prefix. */
const PREFIX = "transfers";

import type { TransferView } from "../../wire/index.ts";

/** `relaying`: the part went on to the destinations (D19); it is answered when they answer. */
export type UploadState = { ok: true; have: number; parts: number; relaying?: boolean } | { ok: false; code: ErrorCode; message: string; have?: number };
export type PartResult = { ok: true; bytes: Uint8Array; sha256: string } | { ok: false; code: ErrorCode; message: string };

type UploadRow = {
  id: string;
  key: string;
  bucket: string;
  upload_id: string;
  size: number;
  sha256: string;
  chunk: number;
  parts: number;
  have: number;
  done: number;
  mseq: number | null;
  updated_at: number;
  /** 0: stored in R2; 1: being relayed to `relay_to` (no R2 object); 2: relayed whole, held by `relay_to`. */
  relay: number;
  relay_to: string | null;
  /** The file's name as the sender's `upload` gave it (null: none given; the bound message's fields say it then). */
  name: string | null;
};

export const RelayMode = { STORE: 0, RELAYING: 1, RELAYED: 2 } as const;

/** The destinations a relayed upload went to. */
const relayTargets = (u: UploadRow): string[] => JSON.parse(u.relay_to ?? "[]") as string[];

/**
 * Large payloads of one source (the claim check). The channel object owns
 * them like its messages: each upload is an R2 multipart upload in the
 * source region's bucket, taken part by part in order (so "what the edge
 * holds" is one number, and a cut transfer resumes from it), each part's
 * SHA-256 checked on arrival and kept for the receiver. Completed, the
 * object is what a `pub` with `blob` refers to; it is deleted when every
 * destination acknowledged (unless archived), when its dead letter is
 * discarded, or when an upload is abandoned.
 */
export class Transfers {
  private readonly sql: SqlStorage;
  private collecting: Promise<void> | null = null;

  constructor(
    private readonly ctx: DurableObjectState,
    private readonly env: Env,
    /** The object's SQLite (metered by the channel object). */
    sql: SqlStorage = ctx.storage.sql,
  ) {
    this.sql = sql;
    this.sql.exec(`
      CREATE TABLE IF NOT EXISTS uploads (
        id TEXT PRIMARY KEY, key TEXT NOT NULL, bucket TEXT NOT NULL, upload_id TEXT NOT NULL, size INTEGER NOT NULL, sha256 TEXT NOT NULL,
        chunk INTEGER NOT NULL, parts INTEGER NOT NULL, have INTEGER NOT NULL, done INTEGER NOT NULL, mseq INTEGER, updated_at INTEGER NOT NULL);
      CREATE TABLE IF NOT EXISTS upload_parts (id TEXT NOT NULL, part INTEGER NOT NULL, etag TEXT NOT NULL, sha256 TEXT NOT NULL, PRIMARY KEY (id, part)) WITHOUT ROWID;
      CREATE TABLE IF NOT EXISTS blob_gc (key TEXT PRIMARY KEY, bucket TEXT NOT NULL, upload_id TEXT, done INTEGER NOT NULL);
    `);
    // Objects from before relays (D19) get their columns: every upload they hold is stored.
    const cols = this.sql.exec<{ name: string }>("SELECT name FROM pragma_table_info('uploads')").toArray().map((c) => c.name);
    if (!cols.includes("relay")) {
      this.sql.exec("ALTER TABLE uploads ADD COLUMN relay INTEGER NOT NULL DEFAULT 0");
      this.sql.exec("ALTER TABLE uploads ADD COLUMN relay_to TEXT");
    }
    // And from before uploads were named.
    if (!cols.includes("name")) this.sql.exec("ALTER TABLE uploads ADD COLUMN name TEXT");
  }

  private bucket(name: string): R2Bucket {
    return this.env[name as "ARCHIVE" | "ARCHIVE_EU"];
  }

  row(id: string): UploadRow | undefined {
    return this.sql.exec<UploadRow>("SELECT * FROM uploads WHERE id = ?", id).toArray()[0];
  }

  /**
   * Opens the relay of one message's payload to `destinations` (D19): no R2
   * object; the row counts the parts every destination has written.
   */
  openRelay(tenant: string, source: string, region: string | null, f: UploadFrame, destinations: string[]): UploadState | null {
    const binding = archiveBinding(region);
    if (!binding || this.row(f.id)) return null;
    this.sql.exec(
      "INSERT INTO uploads (id, key, bucket, upload_id, size, sha256, chunk, parts, have, done, mseq, updated_at, relay, relay_to, name) VALUES (?, ?, ?, '', ?, ?, ?, ?, 0, 0, NULL, ?, 1, ?, ?)",
      f.id, `${PREFIX}/${tenant}/${source}/${f.id}`, binding, f.size, f.sha256, f.chunk, f.parts, Date.now(), JSON.stringify(destinations), f.name ?? null,
    );
    return { ok: true, have: 0, parts: f.parts };
  }

  /** Every destination of a relay wrote parts 1..have (and, when whole, fsynced and checked the payload). */
  relayed(id: string, have: number): void {
    const u = this.row(id);
    if (!u || u.relay !== RelayMode.RELAYING || have <= u.have) return;
    const whole = have >= u.parts;
    this.sql.exec("UPDATE uploads SET have = ?, done = ?, relay = ?, updated_at = ? WHERE id = ?", have, whole ? 1 : 0, whole ? RelayMode.RELAYED : RelayMode.RELAYING, Date.now(), id);
  }

  /**
   * A relay that cannot go on becomes a stored upload from part 1 (the
   * sender still holds the payload: it lets go only once the claim check
   * is accepted). Returns false if the upload is stored already.
   */
  async toStore(id: string): Promise<boolean> {
    const u = this.row(id);
    if (!u || u.relay === RelayMode.STORE || u.mseq !== null) return false;
    const mpu = await this.bucket(u.bucket).createMultipartUpload(u.key, { customMetadata: { messageId: u.id, sha256: u.sha256 } });
    const again = this.row(id);
    if (!again || again.relay === RelayMode.STORE || again.mseq !== null) {
      await mpu.abort().catch(() => undefined);
      return false;
    }
    this.sql.exec("UPDATE uploads SET upload_id = ?, have = 0, done = 0, relay = 0, relay_to = NULL, updated_at = ? WHERE id = ?", mpu.uploadId, Date.now(), id);
    this.sql.exec("DELETE FROM upload_parts WHERE id = ?", id);
    return true;
  }

  /** Opens the transfer of one message's payload, or tells how far an earlier one got. */
  async open(tenant: string, source: string, region: string | null, f: UploadFrame): Promise<UploadState> {
    const prior = this.row(f.id);
    if (prior) {
      if (prior.size !== f.size || prior.sha256 !== f.sha256 || prior.chunk !== f.chunk) {
        return { ok: false, code: ErrorCode.BAD_FRAME, message: `message ${f.id} is already being uploaded with another size, digest or chunk size` };
      }
      return { ok: true, have: prior.have, parts: prior.parts };
    }
    const binding = archiveBinding(region);
    const bucket = archiveBucket(this.env, region);
    if (!binding || !bucket) return { ok: false, code: ErrorCode.FORBIDDEN, message: `this edge has no store for region '${region}'` };
    const key = `${PREFIX}/${tenant}/${source}/${f.id}`;
    const mpu = await bucket.createMultipartUpload(key, { customMetadata: { messageId: f.id, sha256: f.sha256 } });
    // Two opens racing (a resend after a cut) must not both create rows: the first one wins.
    const again = this.row(f.id);
    if (again) {
      await mpu.abort().catch(() => undefined);
      return { ok: true, have: again.have, parts: again.parts };
    }
    this.sql.exec(
      "INSERT INTO uploads (id, key, bucket, upload_id, size, sha256, chunk, parts, have, done, mseq, updated_at, name) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, 0, NULL, ?, ?)",
      f.id, key, binding, mpu.uploadId, f.size, f.sha256, f.chunk, f.parts, Date.now(), f.name ?? null,
    );
    return { ok: true, have: 0, parts: f.parts };
  }

  /**
   * Takes one part. Parts come in order: one already held is acknowledged
   * again (a resend), one further ahead is refused with what the edge holds.
   * The last part completes the multipart upload.
   */
  async put(id: string, part: number, bytes: Uint8Array, sha256: string): Promise<UploadState> {
    const u = this.row(id);
    if (!u) return { ok: false, code: ErrorCode.UPLOAD_INCOMPLETE, message: `no upload of message ${id} is open here; send 'upload' first` };
    if (part <= u.have) return { ok: true, have: u.have, parts: u.parts };
    if (part !== u.have + 1) return { ok: false, code: ErrorCode.BAD_CHUNK, message: `part ${part} of ${id} arrived before part ${u.have + 1}`, have: u.have };
    const want = partLength(u.size, u.chunk, part);
    if (bytes.byteLength !== want) return { ok: false, code: ErrorCode.BAD_CHUNK, message: `part ${part} of ${id} has ${bytes.byteLength} bytes, expected ${want}`, have: u.have };
    const digest = toHex(await crypto.subtle.digest("SHA-256", bytes));
    if (digest !== sha256) return { ok: false, code: ErrorCode.BAD_CHUNK, message: `part ${part} of ${id} does not match its SHA-256 (corrupted on the way); resend it`, have: u.have };
    const bucket = this.bucket(u.bucket);
    const uploaded = await bucket.resumeMultipartUpload(u.key, u.upload_id).uploadPart(part, bytes);
    // Re-read: a concurrent call may have taken this part meanwhile.
    const now = this.row(id);
    if (!now || now.have >= part) return { ok: true, have: now?.have ?? part, parts: u.parts };
    this.ctx.storage.transactionSync(() => {
      this.sql.exec("INSERT OR REPLACE INTO upload_parts VALUES (?, ?, ?, ?)", id, part, uploaded.etag, sha256);
      this.sql.exec("UPDATE uploads SET have = ?, updated_at = ? WHERE id = ?", part, Date.now(), id);
    });
    if (part === u.parts) await this.complete(id);
    return { ok: true, have: part, parts: u.parts };
  }

  private async complete(id: string): Promise<void> {
    const u = this.row(id);
    if (!u || u.done) return;
    const parts = this.sql.exec<{ part: number; etag: string }>("SELECT part, etag FROM upload_parts WHERE id = ? ORDER BY part", id).toArray();
    await this.bucket(u.bucket).resumeMultipartUpload(u.key, u.upload_id).complete(parts.map((p) => ({ partNumber: p.part, etag: p.etag })));
    this.sql.exec("UPDATE uploads SET done = 1, updated_at = ? WHERE id = ?", Date.now(), id);
  }

  /**
   * Inside the accepting transaction: is the payload of `id` stored whole, as
   * the message describes it? Then it is bound to the message's row.
   */
  bind(id: string, size: number, sha256: string, mseq: number, destinations: string[] | null): { key: string; chunk: number; parts: number } | string {
    const u = this.row(id);
    if (!u) return `no upload of message ${id} is held here`;
    if (!u.done) return `the upload of message ${id} holds ${u.have} of ${u.parts} parts`;
    if (u.size !== size || u.sha256 !== sha256) return `the upload of message ${id} has another size or digest than the message`;
    if (destinations === null && u.relay !== RelayMode.STORE) return `the payload of message ${id} was relayed to its destinations, but its routes now keep a copy at the edge (archive or hosted delivery); it is stored when uploaded again`;
    const missing = destinations && this.notRelayedTo(u, destinations);
    if (missing) return `the payload of message ${id} was relayed to its destinations of then, not to ${missing} (a route added since); it is stored at the edge when uploaded again`;
    this.sql.exec("UPDATE uploads SET mseq = ?, updated_at = ? WHERE id = ?", mseq, Date.now(), id);
    return { key: u.key, chunk: u.chunk, parts: u.parts };
  }

  /** A destination a relayed payload did not go to (routes changed since), or null. */
  notRelayedTo(u: UploadRow, destinations: string[]): string | null {
    if (u.relay === RelayMode.STORE) return null;
    const to = new Set(relayTargets(u));
    return destinations.find((d) => !to.has(d)) ?? null;
  }

  /** One part of a stored payload, with the digest it was checked against on upload. */
  async part(id: string, part: number): Promise<PartResult> {
    const u = this.row(id);
    if (u && u.relay !== RelayMode.STORE) {
      return { ok: false, code: ErrorCode.UNKNOWN_STREAM, message: `the payload of message ${id} was relayed to its destination's disk while it was online and is not stored at the edge; that copy is gone` };
    }
    if (!u?.done || part > u.parts) return { ok: false, code: ErrorCode.UNKNOWN_STREAM, message: `message ${id} has no part ${part} here` };
    const digest = this.sql.exec<{ sha256: string }>("SELECT sha256 FROM upload_parts WHERE id = ? AND part = ?", id, part).toArray()[0];
    const obj = await this.bucket(u.bucket).get(u.key, { range: { offset: (part - 1) * u.chunk, length: partLength(u.size, u.chunk, part) } });
    if (!obj || !digest) return { ok: false, code: ErrorCode.STORAGE, message: `the stored payload of message ${id} is missing` };
    return { ok: true, bytes: new Uint8Array(await obj.arrayBuffer()), sha256: digest.sha256 };
  }

  /**
   * What is on its way, for the admin API: uploads (bound to a message or
   * not yet), with the parts each destination still queued has fetched.
   */
  list(source: string, fetched: (destination: string, id: string) => number, fieldsOf: (mseq: number) => Record<string, string> | null): TransferView[] {
    const rows = this.sql.exec<UploadRow>("SELECT * FROM uploads ORDER BY updated_at DESC LIMIT 200").toArray();
    return rows.map((u) => {
      const fields = u.mseq === null ? null : fieldsOf(u.mseq);
      if (u.relay !== RelayMode.STORE) {
        // A relay's destinations hold what the row counts (every one of them has written `have` parts).
        const to = relayTargets(u);
        return {
          id: u.id, source, filename: fields?.filename ?? u.name, size: u.size, parts: u.parts, uploaded: u.have, updatedAt: u.updated_at, relayed: true,
          downloads: to.map((destination) => ({ destination, fetched: u.have })),
        };
      }
      // A claim check is alone in its segment (first mseq = its mseq): its runs are its queue places.
      const destinations = u.mseq === null ? [] : this.sql.exec<{ destination: string }>("SELECT DISTINCT destination FROM runs WHERE claim = 1 AND seg = ?", u.mseq).toArray();
      return {
        id: u.id, source, filename: fields?.filename ?? u.name, size: u.size, parts: u.parts, uploaded: u.have, updatedAt: u.updated_at,
        downloads: destinations.map((d) => ({ destination: d.destination, fetched: fetched(d.destination, u.id) })),
      };
    });
  }

  /** Where a message's payload is stored, for the archive (it is archived where it lies). */
  location(mseq: number): { key: string; bucket: string } | null {
    return this.sql.exec<{ key: string; bucket: string }>("SELECT key, bucket FROM uploads WHERE mseq = ?", mseq).toArray()[0] ?? null;
  }

  /** The mseq a finished upload was accepted as (null while it is not, or not known). */
  mseqOf(id: string): number | null {
    return this.row(id)?.mseq ?? null;
  }

  /**
   * Inside a transaction, when segments (by first mseq) are deleted: the
   * payload objects of their claim checks are queued for deletion, unless
   * kept as archives.
   */
  release(segments: number[]): void {
    if (segments.length === 0) return;
    // The common case (small messages only) pays one indexed probe, nothing more.
    if (this.sql.exec("SELECT 1 FROM uploads WHERE mseq IS NOT NULL LIMIT 1").toArray().length === 0) return;
    const gone = JSON.stringify(segments);
    this.sql.exec(
      `INSERT OR IGNORE INTO blob_gc (key, bucket, upload_id, done)
         SELECT key, bucket, upload_id, done FROM uploads WHERE mseq IN (SELECT value FROM json_each(?)) AND relay = 0 AND key NOT IN (SELECT key FROM archived)`,
      gone,
    );
    const ids = this.sql.exec<{ id: string }>("SELECT id FROM uploads WHERE mseq IN (SELECT value FROM json_each(?))", gone).toArray();
    for (const { id } of ids) {
      this.sql.exec("DELETE FROM uploads WHERE id = ?", id);
      this.sql.exec("DELETE FROM upload_parts WHERE id = ?", id);
    }
  }

  /** Uploads nobody finished or referred to within ABANDON_AFTER_MS: queued for deletion. Returns their ids. */
  abandon(now: number): string[] {
    const gone = this.sql.exec<UploadRow>("SELECT * FROM uploads WHERE mseq IS NULL AND updated_at < ?", now - ABANDON_AFTER_MS).toArray();
    if (gone.length === 0) return [];
    this.ctx.storage.transactionSync(() => {
      for (const u of gone) {
        // A relay has no R2 object to delete.
        if (u.relay === RelayMode.STORE) this.sql.exec("INSERT OR IGNORE INTO blob_gc VALUES (?, ?, ?, ?)", u.key, u.bucket, u.upload_id, u.done);
        this.sql.exec("DELETE FROM uploads WHERE id = ?", u.id);
        this.sql.exec("DELETE FROM upload_parts WHERE id = ?", u.id);
      }
    });
    return gone.map((u) => u.id);
  }

  pendingDeletes(): number {
    return this.sql.exec<{ n: number }>("SELECT count(*) AS n FROM blob_gc").one().n;
  }

  nextAbandon(): number | null {
    const t = this.sql.exec<{ t: number | null }>("SELECT min(updated_at) AS t FROM uploads WHERE mseq IS NULL").one().t;
    return t === null ? null : t + ABANDON_AFTER_MS;
  }

  /** Deletes queued payload objects from R2 (off the delivery path; the alarm retries). */
  collect(): Promise<void> {
    this.collecting ??= (async () => {
      const due = this.sql.exec<{ key: string; bucket: string; upload_id: string | null; done: number }>("SELECT * FROM blob_gc LIMIT 100").toArray();
      for (const g of due) {
        const bucket = this.bucket(g.bucket);
        if (g.done || !g.upload_id) await bucket.delete(g.key);
        else await bucket.resumeMultipartUpload(g.key, g.upload_id).abort().catch(() => undefined);
        this.sql.exec("DELETE FROM blob_gc WHERE key = ?", g.key);
      }
    })().finally(() => {
      this.collecting = null;
    });
    return this.collecting;
  }
}
