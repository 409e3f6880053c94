import { canonicalDigest, canonicalEvent, GENESIS_HASH } from "../../wire/index.ts";
import { eventDb } from "../../workers/region.ts";
import { BATCH_MAX, BATCHED_TYPES, batchTypeOf } from "../../workers/event-log.ts";
import { newUsage, type Usage } from "../usage.ts";

/** One lifecycle event as the channel object records it. */
export type LoggedEvent = {
  messageId: string;
  type: "captured" | "accepted" | "delivered" | "receipt" | "attempt" | "expired" | "rejected" | "redriven" | "discarded" | "archived" | "purged";
  at: number;
  seq: number | null;
  /** The message's position in this channel: lifecycle events that have one are logged in batches (workers/event-log.ts). */
  mseq?: number;
  size: number | null;
  sha256: string | null;
  destination: string | null;
  /** The envelope's channel fields (file name, partner reference...). */
  fields?: Record<string, string> | null;
  detail: unknown;
};

/**
 * A flush waits this long for more to stage: one message at a time, a flush
 * per publish and per ack cost more of the object's CPU than the message
 * itself (and a D1 write each); under load the drain is busy anyway.
 */
const FLUSH_DELAY_MS = 100;
/** Outbox rows (each one staging call, often hundreds of events) copied per D1 batch. */
const FLUSH_ROWS = 8;
/**
 * Small rows (messages one at a time: two events a publish, two an ack)
 * gather up to this many rows and characters per flush instead: a flush's
 * rows make one batch per type, so D1 writes a batch's index rows per
 * flush, not per message.
 */
const SMALL_FLUSH_ROWS = 256;
const SMALL_FLUSH_CHARS = 256 * 1024;
/** Columns in the order of a canonical event (wire/audit.ts), then the hash. */
const COLUMNS = ["chain", "chain_seq", "prev_hash", "tenant", "message_id", "type", "at", "place", "source", "destination", "seq", "size", "sha256", "fields", "detail", "hash"];
/**
 * The events of a flush travel as ONE parameter per statement, a JSON array
 * of rows that SQLite unpacks itself (json_each, in array order): binding
 * sixteen parameters per event cost more CPU in the object than everything
 * else a message does (docs/performance.md), and D1 binds at most 100. Each
 * row is the canonical event that was hashed, with its hash appended: one
 * serialisation per event.
 */
const INSERT_EVENTS = `INSERT OR IGNORE INTO events (${COLUMNS.join(", ")}) SELECT ${COLUMNS.map((_, i) => `json_extract(value, '$[${i}]')`).join(", ")} FROM json_each(?) ORDER BY key`;
/** Characters of JSON per statement: well under D1's 2 MB per value. */
const STATEMENT_CHARS = 512 * 1024;
/** Characters of one batch's events: half D1's 2 MB per row (fewer batches, fewer index rows). */
const BATCH_CHARS = 1024 * 1024;
/** Format 2 (migration 0014): what the batch shares is in its columns, each event is [chain_seq, id, type, at, seq, size, sha256, fields, detail, hash]. */
const INSERT_BATCH =
  "INSERT OR IGNORE INTO event_batches (chain, chain_seq, last_seq, tenant, source, destination, type, at_lo, at_hi, mseq_lo, mseq_hi, n, events, format, prev_hash, place) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 2, ?, ?)";
/** Accepted messages' lookup rows: [id, mseq] pairs, one parameter. */
const INSERT_INDEX = "INSERT OR IGNORE INTO message_index (tenant, message_id, chain, mseq) SELECT ?1, json_extract(value, '$[0]'), ?2, json_extract(value, '$[1]') FROM json_each(?3)";
/** Accepted messages' recorded fields: [name, value, mseq, id], one parameter. */
const INSERT_FIELDS = "INSERT OR IGNORE INTO message_fields (tenant, name, value, chain, mseq, message_id) SELECT ?1, json_extract(value, '$[0]'), json_extract(value, '$[1]'), ?2, json_extract(value, '$[2]'), json_extract(value, '$[3]') FROM json_each(?3)";

/** A staged event, positionally: messageId, type, at, seq, mseq, size, sha256, destination, fields, detail. */
export type Staged = [string, LoggedEvent["type"], number, number | null, number | null, number | null, string | null, string | null, Record<string, string> | null, unknown];

/** A message as a publish or an ack stages it: id, seq, mseq, size, sha256, fields, then (accepted only) createdAt and contentType. */
export type StagedMessage = [string, number, number, number, string, Record<string, string> | null, number?, string?];
/**
 * A publish's captured and accepted events, or an ack's delivered events
 * (and the receipt that closes them), as one staged row: what the events
 * share (the time, the place, the destinations, the receipt) is written
 * once, each message once, not twice (captured and accepted) with the
 * shared parts repeated: about half the bytes to write, parse back and
 * delete per message. `unstage` expands it into exactly the events the
 * positional form held.
 */
export type StagedGroup =
  | { accepted: [at: number, site: string, destinations: string[]]; m: StagedMessage[] }
  | { delivered: [at: number, destination: string, detail: unknown]; m: StagedMessage[]; receipt?: Staged };

const positional = (e: Staged): LoggedEvent => ({ messageId: e[0], type: e[1], at: e[2], seq: e[3], ...(e[4] === null ? {} : { mseq: e[4] }), size: e[5], sha256: e[6], destination: e[7], fields: e[8], detail: e[9] });

/** A staged outbox row's events: a group, positional arrays, or (staged before either) keyed objects, one or many. */
export function unstage(parsed: StagedGroup | Staged[] | LoggedEvent[] | LoggedEvent): LoggedEvent[] {
  if (Array.isArray(parsed)) return parsed.map((e) => (Array.isArray(e) ? positional(e) : e));
  if ("accepted" in parsed) {
    const [at, site, destinations] = parsed.accepted;
    return parsed.m.flatMap(([messageId, seq, mseq, size, sha256, fields, createdAt, contentType]): LoggedEvent[] => [
      // Captured at the site before it was sent: its time and place come from the sender.
      { messageId, type: "captured", at: createdAt as number, seq, mseq, size, sha256, destination: null, fields, detail: { place: site } },
      { messageId, type: "accepted", at, seq, mseq, size, sha256, destination: null, fields, detail: { createdAt, contentType, destinations } },
    ]);
  }
  if ("delivered" in parsed) {
    const [at, destination, detail] = parsed.delivered;
    const out = parsed.m.map(([messageId, seq, mseq, size, sha256, fields]): LoggedEvent => ({ messageId, type: "delivered", at, seq, mseq, size, sha256, destination, fields, detail }));
    if (parsed.receipt) out.push(positional(parsed.receipt));
    return out;
  }
  return [parsed];
}

/** A staged outbox row: one staging call's events, as JSON. */
type OutboxRow = { id: number; event: string };

/** One group of consecutive lifecycle events of one type (and destination), on its way to one event_batches row. */
type Batch = { type: string; destination: string | null; first: number; last: number; prevHash: string; atLo: number; atHi: number; lo: number; hi: number; rows: string[]; chars: number };

/** Splits JSON rows into statement-sized arrays (one parameter each). */
function chunked(rows: string[]): string[] {
  const out: string[] = [];
  let cur: string[] = [];
  let chars = 0;
  for (const r of rows) {
    if (chars + r.length > STATEMENT_CHARS && cur.length > 0) out.push(`[${cur.join(",")}]`), (cur = []), (chars = 0);
    cur.push(r);
    chars += r.length + 1;
  }
  if (cur.length > 0) out.push(`[${cur.join(",")}]`);
  return out;
}

/**
 * The object's own outbox for the D1 event log. Events are staged in the
 * same SQLite transaction as the state change they describe, then copied to
 * D1 in batches off the delivery path. If D1 is unavailable nothing is lost:
 * they stay here and the object's alarm retries.
 */
export class EventOutbox {
  private readonly sql: SqlStorage;
  private tenant = "";
  private source = "";
  private flushing: Promise<void> | null = null;
  /** A flush waiting for FLUSH_DELAY_MS (the alarm still covers an eviction before it runs). */
  private soon: ReturnType<typeof setTimeout> | null = null;

  constructor(
    private readonly ctx: DurableObjectState,
    private readonly env: Env,
    /** The source's region: its log rows stay in that region's store. */
    private readonly region: () => string | null,
    /** Which channel fields the routes record (the rest never reach the log). */
    private readonly keepFields: (f: Record<string, string> | null | undefined) => Record<string, string> | null = (f) => f ?? null,
    /** The object's SQLite and what it counts (metered by the channel object). */
    sql: SqlStorage = ctx.storage.sql,
    private readonly usage: Usage = newUsage(),
  ) {
    this.sql = sql;
    // Ids need only grow while rows wait (a flush's pin names the last it took, and goes with them), so no
    // AUTOINCREMENT: its counter row was written again by every insert, a second billed row per staging.
    // An outbox made with it is made again the next time this object starts with it empty.
    const made = this.sql.exec<{ sql: string }>("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'event_outbox'").toArray()[0]?.sql;
    if (made?.includes("AUTOINCREMENT") && this.sql.exec<{ n: number }>("SELECT count(*) AS n FROM event_outbox").one().n === 0) this.sql.exec("DROP TABLE event_outbox");
    this.sql.exec("CREATE TABLE IF NOT EXISTS event_outbox (id INTEGER PRIMARY KEY, event TEXT NOT NULL)");
    for (const r of this.sql.exec<{ k: string; v: string }>("SELECT k, v FROM meta WHERE k IN ('tenant', 'source')")) {
      if (r.k === "tenant") this.tenant = r.v;
      else this.source = r.v;
    }
  }

  identify(tenant: string, source: string): void {
    this.tenant = tenant;
    this.source = source;
  }

  /** Call inside the transaction that makes the change. */
  stage(events: LoggedEvent[]): void {
    // One row per call, not per event: the accepting transaction stays small.
    // Each event as a positional array (Staged): a third fewer bytes to write here, and to parse back, than keyed objects.
    if (events.length > 0) this.insert(events.map((e) => this.staged(e)));
  }

  /** A publish's captured and accepted events (one per accepted message, in order), as one group; inside its transaction. */
  stageAccepted(at: number, site: string, destinations: string[], msgs: StagedMessage[]): void {
    if (msgs.length > 0) this.stageGroup({ accepted: [at, site, destinations], m: msgs });
  }

  /** An ack's delivered events and the receipt event that closes them, as one group; inside its transaction. */
  stageDelivered(at: number, destination: string, detail: unknown, msgs: StagedMessage[], receipt?: LoggedEvent): void {
    if (msgs.length > 0 || receipt) this.stageGroup({ delivered: [at, destination, detail ?? null], m: msgs, ...(receipt ? { receipt: this.staged(receipt) } : {}) });
  }

  private stageGroup(g: StagedGroup): void {
    for (const m of g.m) m[5] = this.keepFields(m[5]);
    this.insert(g);
  }

  private insert(row: StagedGroup | Staged[]): void {
    this.sql.exec("INSERT INTO event_outbox (event) VALUES (?)", JSON.stringify(row));
  }

  private staged(e: LoggedEvent): Staged {
    return [e.messageId, e.type, e.at, e.seq, e.mseq ?? null, e.size, e.sha256, e.destination, this.keepFields(e.fields), e.detail ?? null];
  }

  pending(): number {
    return this.sql.exec<{ n: number }>("SELECT count(*) AS n FROM event_outbox").one().n;
  }

  flushSoon(): void {
    if (this.soon) return;
    this.soon = setTimeout(() => {
      this.soon = null;
      this.flush().catch((e: unknown) => console.warn("event log flush deferred to the alarm", e));
    }, FLUSH_DELAY_MS);
  }

  /** Copies staged events to D1, oldest first; one flush at a time. */
  flush(): Promise<void> {
    this.flushing ??= this.drain().finally(() => {
      this.flushing = null;
    });
    return this.flushing;
  }

  /** The oldest staged rows a new flush takes: FLUSH_ROWS, more while they are small (up to SMALL_FLUSH_ROWS and SMALL_FLUSH_CHARS). */
  private take(): OutboxRow[] {
    const rows: OutboxRow[] = [];
    let chars = 0;
    for (;;) {
      const more = this.sql.exec<OutboxRow>("SELECT id, event FROM event_outbox WHERE id > ? ORDER BY id LIMIT ?", rows.at(-1)?.id ?? 0, FLUSH_ROWS).toArray();
      rows.push(...more);
      chars += more.reduce((n, r) => n + r.event.length, 0);
      if (more.length < FLUSH_ROWS || rows.length >= SMALL_FLUSH_ROWS || chars >= SMALL_FLUSH_CHARS) return rows;
    }
  }

  /** The chain's head: position and hash of the last event written to D1. */
  private head(): { seq: number; hash: string } {
    // One row, "seq:hash" (each written row is billed); objects from before kept two.
    const rows = this.sql.exec<{ k: string; v: string }>("SELECT k, v FROM meta WHERE k IN ('chain_head', 'chain_seq', 'chain_hash')").toArray();
    const m = new Map(rows.map((r) => [r.k, r.v]));
    const head = m.get("chain_head");
    if (head) return { seq: Number(head.slice(0, head.indexOf(":"))), hash: head.slice(head.indexOf(":") + 1) };
    return { seq: Number(m.get("chain_seq") ?? 0), hash: m.get("chain_hash") ?? GENESIS_HASH };
  }

  /**
   * Hashes staged events into this channel's chain, in the order they were
   * committed, writes them to D1, and only then moves the chain head and
   * drops them here. A crash in between re-sends the same positions with the
   * same hashes, which D1 ignores (unique chain position): no gaps, no twins.
   *
   * Lifecycle events (captured, accepted, delivered of a queued message,
   * and the receipt that ends an ack's delivered events) go as batches:
   * within one flush's rows they are chained type by type (all captured,
   * then all accepted...), so each type's events hold consecutive positions
   * and make one event_batches row; D1 then writes a handful of index
   * entries per batch instead of six or seven per event. Everything else
   * stays a row of `events`. Grouping depends only on which rows a flush
   * takes, and a flush records them (`flush_to`, synced) before it writes
   * to D1: a re-sent flush takes the same rows, so it makes the same
   * batches at the same positions (and migration 0013's triggers skip any
   * position already taken), however many rows were staged since.
   */
  private async drain(): Promise<void> {
    const place = this.env.FERRY_REGION;
    const chain = `${this.tenant}:${this.source}`;
    for (;;) {
      // A flush that was cut short (a crash, D1 unavailable) is pinned to the rows it took: sent again, they make the same batches.
      const pin = this.sql.exec<{ v: string }>("SELECT v FROM meta WHERE k = 'flush_to'").toArray()[0]?.v;
      const rows = pin === undefined ? this.take() : this.sql.exec<OutboxRow>("SELECT id, event FROM event_outbox WHERE id <= ? ORDER BY id", Number(pin)).toArray();
      if (rows.length === 0) {
        if (pin === undefined) return;
        // (Its rows are gone only if the flush finished: the pin goes with them. Never expected; harmless.)
        this.sql.exec("DELETE FROM meta WHERE k = 'flush_to'");
        continue;
      }
      const last = rows[rows.length - 1] as OutboxRow;
      if (pin === undefined) {
        // Durable before D1 sees a byte of this flush.
        this.sql.exec("INSERT OR REPLACE INTO meta (k, v) VALUES ('flush_to', ?)", String(last.id));
        await this.ctx.storage.sync();
      }
      let head = this.head();
      const db = eventDb(this.env, this.region());
      if (!db) throw new Error(`no event-log store for region '${this.region()}'`);
      const singles: string[] = [];
      const batches: Batch[] = [];
      const indexed: string[] = [];
      const fielded: string[] = [];
      // Lifecycle groups across the flush's rows, in order of first appearance, then the rest in staged order.
      const groups = new Map<string, LoggedEvent[]>();
      const rest: LoggedEvent[] = [];
      for (const r of rows) {
        for (const e of unstage(JSON.parse(r.event) as StagedGroup | Staged[] | LoggedEvent[] | LoggedEvent)) {
          if (!BATCHED_TYPES.has(e.type) || typeof e.mseq !== "number") rest.push(e);
          else {
            const k = `${batchTypeOf(e.type)}\n${e.destination ?? ""}`;
            const g = groups.get(k);
            if (g) g.push(e);
            else groups.set(k, [e]);
          }
        }
      }
      let open: Batch | null = null;
      for (const e of [...[...groups.values()].flat(), ...rest]) {
        const linked = {
          chain, chainSeq: head.seq + 1, prevHash: head.hash, tenant: this.tenant, messageId: e.messageId, type: e.type, at: e.at, place,
          source: this.source, destination: e.destination, seq: e.seq, size: e.size, sha256: e.sha256,
          fields: e.fields ? JSON.stringify(e.fields) : null, detail: e.detail === null || e.detail === undefined ? null : JSON.stringify(e.detail),
        };
        const canonical = canonicalEvent(linked);
        const hash = await canonicalDigest(canonical);
        head = { seq: linked.chainSeq, hash };
        const mseq = e.mseq;
        if (!BATCHED_TYPES.has(e.type) || mseq === undefined) {
          singles.push(`${canonical.slice(0, -1)},"${hash}"]`);
          continue;
        }
        // Without what the batch's columns hold (format 2, migration 0014).
        const row = JSON.stringify([linked.chainSeq, linked.messageId, linked.type, linked.at, linked.seq, linked.size, linked.sha256, linked.fields, linked.detail, hash]);
        const b = open as Batch | null;
        const type = batchTypeOf(e.type);
        // A batch is one type and destination, at most BATCH_MAX events whose positions lie less than BATCH_MAX apart, one D1 value.
        if (!b || b.type !== type || b.destination !== e.destination || b.rows.length >= BATCH_MAX || Math.max(b.hi, mseq) - Math.min(b.lo, mseq) >= BATCH_MAX || b.chars + row.length > BATCH_CHARS) {
          open = { type, destination: e.destination, first: linked.chainSeq, last: linked.chainSeq, prevHash: linked.prevHash, atLo: e.at, atHi: e.at, lo: mseq, hi: mseq, rows: [row], chars: row.length };
          batches.push(open);
        } else {
          b.last = linked.chainSeq;
          b.atLo = Math.min(b.atLo, e.at);
          b.atHi = Math.max(b.atHi, e.at);
          b.lo = Math.min(b.lo, mseq);
          b.hi = Math.max(b.hi, mseq);
          b.rows.push(row);
          b.chars += row.length + 1;
        }
        if (e.type === "accepted") {
          indexed.push(JSON.stringify([e.messageId, mseq]));
          for (const [name, value] of Object.entries(e.fields ?? {})) if (typeof value === "string") fielded.push(JSON.stringify([name, value, mseq, e.messageId]));
        }
      }
      const results = await db.batch([
        ...chunked(singles).map((p) => db.prepare(INSERT_EVENTS).bind(p)),
        ...batches.map((b) =>
          db.prepare(INSERT_BATCH).bind(chain, b.first, b.last, this.tenant, this.source, b.destination, b.type, b.atLo, b.atHi, b.lo, b.hi, b.rows.length, `[${b.rows.join(",")}]`, b.prevHash, place),
        ),
        ...chunked(indexed).map((p) => db.prepare(INSERT_INDEX).bind(this.tenant, chain, p)),
        ...chunked(fielded).map((p) => db.prepare(INSERT_FIELDS).bind(this.tenant, chain, p)),
      ]);
      for (const r of results) {
        this.usage.d1RowsRead += r.meta.rows_read ?? 0;
        this.usage.d1RowsWritten += r.meta.rows_written ?? 0;
      }
      const h = head;
      this.ctx.storage.transactionSync(() => {
        this.sql.exec("DELETE FROM event_outbox WHERE id <= ?", last.id);
        // An upsert: INSERT OR REPLACE of an existing row is billed as two rows written.
        this.sql.exec("INSERT INTO meta (k, v) VALUES ('chain_head', ?) ON CONFLICT (k) DO UPDATE SET v = excluded.v", `${h.seq}:${h.hash}`);
        this.sql.exec("DELETE FROM meta WHERE k = 'flush_to'");
      });
    }
  }
}
