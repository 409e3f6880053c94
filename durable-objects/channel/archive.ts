import { archiveBinding, archiveBucket } from "../../workers/region.ts";
import type { EventOutbox } from "./events.ts";
import type { Segments } from "./segments.ts";

/** What an archive holds beside the payload: the envelope, for auditors. */
export type ArchivedEnvelope = {
  id: string;
  tenant: string;
  source: string;
  destinations: string[];
  seq: number;
  createdAt: number;
  acceptedAt: number;
  contentType: string;
  size: number;
  sha256: string;
  fields: Record<string, string> | null;
  region: string | null;
  retainUntil: number;
};

const BATCH = 50;

/**
 * Archives for routes that ask for them: the payload (ciphertext, for
 * encrypted routes: the edge never sees more) and its envelope go to the R2
 * bucket of the source's region, off the delivery path, from a job staged in
 * the same transaction that accepted the message (so none is forgotten if
 * R2 is briefly down). The object remembers what it archived and purges it
 * when its retention ends, unless a legal hold is on; both are logged.
 */
export class Archiver {
  private readonly sql: SqlStorage;
  private flushing: Promise<void> | null = null;

  constructor(
    private readonly ctx: DurableObjectState,
    private readonly env: Env,
    private readonly events: EventOutbox,
    private readonly segments: Segments,
    /** Inside a transaction: the job no longer holds its message's segment. */
    private readonly unref: (mseq: number) => void,
    /** Where a large payload lies in R2: it is archived in place, never copied. */
    private readonly locate: (mseq: number) => { key: string; bucket: string } | null,
    /** The object's SQLite (metered by the channel object). */
    sql: SqlStorage = ctx.storage.sql,
  ) {
    this.sql = sql;
    this.sql.exec(`
      CREATE TABLE IF NOT EXISTS archive_jobs (mseq INTEGER PRIMARY KEY, retain_until INTEGER NOT NULL, region TEXT, destinations TEXT NOT NULL);
      CREATE TABLE IF NOT EXISTS archived (key TEXT PRIMARY KEY, message_id TEXT NOT NULL, bucket TEXT NOT NULL, retain_until INTEGER NOT NULL, size INTEGER NOT NULL, sha256 TEXT NOT NULL);
      CREATE INDEX IF NOT EXISTS archived_by_expiry ON archived (retain_until);
    `);
  }

  /** Inside the accepting transaction: the message's segment stays until the job is done (it holds a reference). */
  stage(mseq: number, retainUntil: number, region: string | null, destinations: string[]): void {
    this.sql.exec("INSERT INTO archive_jobs VALUES (?, ?, ?, ?)", mseq, retainUntil, region, JSON.stringify(destinations));
  }

  pendingJobs(): number {
    return this.sql.exec<{ n: number }>("SELECT count(*) AS n FROM archive_jobs").one().n;
  }

  nextExpiry(): number | null {
    return this.sql.exec<{ t: number | null }>("SELECT min(retain_until) AS t FROM archived").one().t;
  }

  flushSoon(tenant: string, source: string): void {
    this.flush(tenant, source).catch((e: unknown) => console.warn("archiving deferred to the alarm", e));
  }

  flush(tenant: string, source: string): Promise<void> {
    this.flushing ??= this.drain(tenant, source).finally(() => {
      this.flushing = null;
    });
    return this.flushing;
  }

  private async drain(tenant: string, source: string): Promise<void> {
    for (;;) {
      const jobs = this.sql.exec<{ mseq: number; retain_until: number; region: string | null; destinations: string }>("SELECT * FROM archive_jobs ORDER BY mseq LIMIT ?", BATCH).toArray();
      if (jobs.length === 0) return;
      for (const job of jobs) {
        const found = this.segments.message(job.mseq);
        const m = found ? { ...found.m, acceptedAt: found.seg.acceptedAt, payload: found.payload } : null;
        const stored = this.locate(job.mseq);
        const binding = stored ? (stored.bucket as "ARCHIVE" | "ARCHIVE_EU") : archiveBinding(job.region);
        const bucket = stored ? this.env[binding as "ARCHIVE" | "ARCHIVE_EU"] : archiveBucket(this.env, job.region);
        if (m && bucket && binding) {
          const key = stored ? stored.key : `${tenant}/${source}/${new Date(m.acceptedAt).toISOString().slice(0, 10)}/${m.id}`;
          const envelope: ArchivedEnvelope = {
            id: m.id, tenant, source, destinations: JSON.parse(job.destinations) as string[], seq: m.seq, createdAt: m.createdAt, acceptedAt: m.acceptedAt,
            contentType: m.contentType, size: m.size, sha256: m.sha256, fields: m.fields,
            region: job.region, retainUntil: job.retain_until,
          };
          if (!stored) await bucket.put(key, m.payload, { httpMetadata: { contentType: m.contentType }, sha256: m.sha256, customMetadata: { messageId: m.id, retainUntil: String(job.retain_until) } });
          await bucket.put(`${key}.envelope.json`, JSON.stringify(envelope), { httpMetadata: { contentType: "application/json" } });
          const now = Date.now();
          this.ctx.storage.transactionSync(() => {
            this.sql.exec("INSERT OR REPLACE INTO archived VALUES (?, ?, ?, ?, ?, ?)", key, m.id, binding, job.retain_until, m.size, m.sha256);
            this.sql.exec("DELETE FROM archive_jobs WHERE mseq = ?", job.mseq);
            this.unref(job.mseq);
            this.events.stage([{ messageId: m.id, type: "archived", at: now, seq: m.seq, size: m.size, sha256: m.sha256, destination: null, fields: envelope.fields, detail: { key, bucket: binding, region: job.region, retainUntil: job.retain_until } }]);
          });
        } else {
          // The message is gone or its region lost its bucket: drop the job, say so.
          this.ctx.storage.transactionSync(() => {
            this.sql.exec("DELETE FROM archive_jobs WHERE mseq = ?", job.mseq);
            if (m) this.unref(job.mseq);
            if (m) this.events.stage([{ messageId: m.id, type: "rejected", at: Date.now(), seq: m.seq, size: m.size, sha256: m.sha256, destination: null, detail: { reason: `no archive bucket for region '${job.region}'` } }]);
          });
        }
      }
      this.events.flushSoon();
    }
  }

  /** Deletes archives past their retention, unless `held`; logs each purge. */
  async purgeExpired(now: number, held: boolean): Promise<number> {
    if (held) return 0;
    const due = this.sql.exec<{ key: string; message_id: string; bucket: string; size: number; sha256: string }>("SELECT * FROM archived WHERE retain_until <= ? LIMIT 500", now).toArray();
    for (const d of due) {
      const bucket = this.env[d.bucket as "ARCHIVE" | "ARCHIVE_EU"];
      await bucket.delete([d.key, `${d.key}.envelope.json`]);
      this.ctx.storage.transactionSync(() => {
        this.sql.exec("DELETE FROM archived WHERE key = ?", d.key);
        this.events.stage([{ messageId: d.message_id, type: "purged", at: now, seq: null, size: d.size, sha256: d.sha256, destination: null, detail: { key: d.key, bucket: d.bucket, reason: "retention" } }]);
      });
    }
    if (due.length > 0) this.events.flushSoon();
    return due.length;
  }
}
