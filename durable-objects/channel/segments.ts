import { packWithHeader, type BlobRef } from "../../wire/index.ts";

/** One stored message's envelope (its payload lives beside it in the segment). */
export type StoredMessage = {
  id: string;
  seq: number;
  createdAt: number;
  contentType: string;
  size: number;
  sha256: string;
  fields: Record<string, string> | null;
  protection: "none" | "sign" | "encrypt";
  sig: string | null;
  blob: BlobRef | null;
};

/** A segment as the object reads it: envelopes, and payloads as views of the one stored buffer. */
export type Segment = {
  first: number;
  acceptedAt: number;
  expiresAt: number | null;
  msgs: StoredMessage[];
  payloads: Uint8Array[];
  bytes: number;
};

/**
 * Bytes per segment (payloads and envelopes). A segment is one SQLite row,
 * and production caps a row at 2 MB: a single inline payload (up to 1.5 MiB
 * on the wire) gets a segment of its own, anything else shares one up to
 * this size.
 */
export const SEGMENT_BYTES = 1024 * 1024;
/** Decoded segments kept in memory: the pump, the ack and the log read the same ones in turn. */
const CACHE_BYTES = 32 * 1024 * 1024;

type Header = { a: number; e: number | null; m: [string, number, number, string, number, string, Record<string, string> | null, StoredMessage["protection"], string | null, BlobRef | null, number][] };

/** `[u32 header length][header JSON][payloads, one after another]`: one copy of the payloads, none to read them back. */
export function encodeSegment(acceptedAt: number, expiresAt: number | null, msgs: StoredMessage[], payloads: Uint8Array[]): Uint8Array {
  const header: Header = {
    a: acceptedAt,
    e: expiresAt,
    m: msgs.map((m, i) => [m.id, m.seq, m.createdAt, m.contentType, m.size, m.sha256, m.fields, m.protection, m.sig, m.blob, (payloads[i] as Uint8Array).byteLength]),
  };
  return packWithHeader(0, new TextEncoder().encode(JSON.stringify(header)), payloads);
}

export function decodeSegment(first: number, data: ArrayBuffer): Segment {
  const length = new DataView(data).getUint32(0);
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(data, 4, length))) as Header;
  const msgs: StoredMessage[] = [];
  const payloads: Uint8Array[] = [];
  let at = 4 + length;
  for (const [id, seq, createdAt, contentType, size, sha256, fields, protection, sig, blob, n] of header.m) {
    msgs.push({ id, seq, createdAt, contentType, size, sha256, fields, protection, sig, blob });
    payloads.push(new Uint8Array(data, at, n));
    at += n;
  }
  return { first, acceptedAt: header.a, expiresAt: header.e, msgs, payloads, bytes: data.byteLength };
}

/**
 * The channel object's message store: many messages per SQLite row.
 *
 * Cloudflare bills a Durable Object's SQLite by rows written, and a row per
 * message (plus a queue row and an index entry per destination, each
 * written again to delete it) made storage the largest cost of a message
 * with the log off: about 7 rows. A segment holds the messages of one
 * accepted batch (up to SEGMENT_BYTES), its `refs` counts what still needs
 * it (one per destination's run, dead letter and archive job), and it is
 * deleted when that reaches 0. The count lives in `segments`, the bytes in
 * `segment_data`, so counting never rewrites the payloads; except for a
 * segment held once when stored (one destination, no archive), whose count
 * only goes from 1 to 0 (or, an exception, to its dead letters): its bytes
 * ride in its `segments` row, two rows written fewer (stored and deleted).
 *
 * A claim check (large payload in R2) always has a segment of its own, so
 * its R2 object is released exactly when its message is done.
 */
export class Segments {
  private readonly cache = new Map<number, Segment>();
  private cached = 0;

  constructor(private readonly sql: SqlStorage) {
    sql.exec(`
      CREATE TABLE IF NOT EXISTS segments (first_mseq INTEGER PRIMARY KEY, count INTEGER NOT NULL, refs INTEGER NOT NULL);
      CREATE TABLE IF NOT EXISTS segment_data (first_mseq INTEGER PRIMARY KEY, data BLOB NOT NULL);
    `);
    try {
      // Last, so reading a segment's count never reads its bytes.
      sql.exec("ALTER TABLE segments ADD COLUMN data BLOB");
    } catch {
      // the column exists
    }
  }

  /**
   * Inside the accepting transaction. Rows are written by the caller in bulk
   * (`segments (first_mseq, count, refs, data)` and `segment_data`, which
   * gets none for a segment held once); this returns them.
   */
  rows(seg: Segment, data: Uint8Array, refs: number): { meta: SqlStorageValue[]; data: SqlStorageValue[] } {
    if (refs === 1) return { meta: [seg.first, seg.msgs.length, refs, asBuffer(data)], data: [] };
    return { meta: [seg.first, seg.msgs.length, refs, null], data: [seg.first, asBuffer(data)] };
  }

  /** After the accepting transaction committed: readers find it without decoding it. */
  remember(seg: Segment): void {
    this.cache.delete(seg.first);
    this.cache.set(seg.first, seg);
    this.cached += seg.bytes;
    for (const [k, s] of this.cache) {
      if (this.cached <= CACHE_BYTES) break;
      this.cache.delete(k);
      this.cached -= s.bytes;
    }
  }

  /** The segment starting at `first`, or null if it is gone. */
  get(first: number): Segment | null {
    const hit = this.cache.get(first);
    if (hit) {
      // Most recently used last: eviction takes the oldest.
      this.cache.delete(first);
      this.cache.set(first, hit);
      return hit;
    }
    const row = this.sql
      .exec<{ data: ArrayBuffer | null }>("SELECT coalesce(s.data, d.data) AS data FROM segments s LEFT JOIN segment_data d ON d.first_mseq = s.first_mseq WHERE s.first_mseq = ?", first)
      .toArray()[0];
    if (!row?.data) return null;
    const seg = decodeSegment(first, row.data);
    this.remember(seg);
    return seg;
  }

  /** The first mseq of the segment holding `mseq`. */
  of(mseq: number): number | null {
    const r = this.sql.exec<{ first_mseq: number; count: number }>("SELECT first_mseq, count FROM segments WHERE first_mseq <= ? ORDER BY first_mseq DESC LIMIT 1", mseq).toArray()[0];
    return r && mseq < r.first_mseq + r.count ? r.first_mseq : null;
  }

  /** One message with its payload, by mseq. */
  message(mseq: number): { seg: Segment; m: StoredMessage; payload: Uint8Array } | null {
    const first = this.of(mseq);
    const seg = first === null ? null : this.get(first);
    if (!seg) return null;
    const i = mseq - seg.first;
    return { seg, m: seg.msgs[i] as StoredMessage, payload: seg.payloads[i] as Uint8Array };
  }

  /**
   * Inside a transaction: moves each segment's reference count by its delta
   * and deletes those nothing refers to any more (without writing the count
   * first: rows written are billed). Returns the first mseqs deleted, whose
   * large payloads can go too.
   */
  release(deltas: Map<number, number>): number[] {
    const gone: number[] = [];
    for (const [first, delta] of deltas) {
      if (delta === 0) continue;
      const r = this.sql.exec<{ refs: number }>("SELECT refs FROM segments WHERE first_mseq = ?", first).toArray()[0];
      if (!r) continue;
      if (r.refs + delta > 0) {
        this.sql.exec("UPDATE segments SET refs = ? WHERE first_mseq = ?", r.refs + delta, first);
        continue;
      }
      this.sql.exec("DELETE FROM segments WHERE first_mseq = ?", first);
      this.sql.exec("DELETE FROM segment_data WHERE first_mseq = ?", first);
      gone.push(first);
    }
    // A rolled-back transaction only means a segment read back from SQLite once more.
    this.forget(gone);
    return gone;
  }

  /** Drops deleted segments from the cache. */
  private forget(firsts: Iterable<number>): void {
    for (const f of firsts) {
      const s = this.cache.get(f);
      if (!s) continue;
      this.cache.delete(f);
      this.cached -= s.bytes;
    }
  }
}

function asBuffer(p: Uint8Array): ArrayBuffer {
  // SQLite bindings take an ArrayBuffer; copy only when `p` is a view.
  return p.byteOffset === 0 && p.byteLength === p.buffer.byteLength ? (p.buffer as ArrayBuffer) : (p.slice().buffer as ArrayBuffer);
}

/**
 * Objects created before segments kept a row per message (`messages`) and a
 * row per destination and message (`outq`). Converts them once, in one
 * transaction: each old message becomes a segment of its own (so dead
 * letters and archive jobs, which name an mseq, stay as they are).
 */
export function migrateLegacy(sql: SqlStorage, transaction: (f: () => void) => void): number {
  const exists = sql.exec("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'messages'").toArray().length > 0;
  if (!exists) return 0;
  let n = 0;
  // Objects made before these columns existed never got them.
  for (const col of ["protection TEXT", "sig TEXT", "blob TEXT"]) {
    try {
      sql.exec(`ALTER TABLE messages ADD COLUMN ${col}`);
    } catch {
      // the column exists
    }
  }
  transaction(() => {
    type Old = { mseq: number; id: string; seq: number; created_at: number; accepted_at: number; expires_at: number | null; content_type: string; size: number; sha256: string; fields: string | null; payload: ArrayBuffer; protection: string | null; sig: string | null; blob: string | null };
    for (const r of sql.exec<Old>("SELECT * FROM messages ORDER BY mseq")) {
      const m: StoredMessage = {
        id: r.id, seq: r.seq, createdAt: r.created_at, contentType: r.content_type, size: r.size, sha256: r.sha256,
        fields: r.fields ? (JSON.parse(r.fields) as Record<string, string>) : null, protection: (r.protection ?? "none") as StoredMessage["protection"],
        sig: r.sig, blob: r.blob ? (JSON.parse(r.blob) as BlobRef) : null,
      };
      const data = encodeSegment(r.accepted_at, r.expires_at, [m], [new Uint8Array(r.payload)]);
      const refs = sql.exec<{ n: number }>(
        "SELECT (SELECT count(*) FROM outq WHERE mseq = ?1) + (SELECT count(*) FROM dead_letters WHERE mseq = ?1) + (SELECT count(*) FROM archive_jobs WHERE mseq = ?1) AS n",
        r.mseq,
      ).one().n;
      sql.exec("INSERT INTO segments (first_mseq, count, refs) VALUES (?, 1, ?)", r.mseq, refs);
      sql.exec("INSERT INTO segment_data VALUES (?, ?)", r.mseq, asBuffer(data));
      n++;
    }
    sql.exec(
      `INSERT INTO runs (destination, end_dseq, start_dseq, mseq, seg, expires_at, claim)
         SELECT o.destination, o.dseq, o.dseq, o.mseq, o.mseq, o.expires_at, m.blob IS NOT NULL FROM outq o JOIN messages m ON m.mseq = o.mseq`,
    );
    sql.exec("DROP TABLE outq");
    sql.exec("DROP TABLE messages");
  });
  return n;
}
