/**
 * The event log's two shapes and how to read them as one (docs/decisions.md
 * D21, migrations/0013). A message's lifecycle events (captured, accepted,
 * delivered) are written per batch: one `event_batches` row holds a group's
 * canonical rows as JSON, and `message_index` finds a message's chain and
 * stream position. Every other event is a row of `events`. Readers here
 * expand batches into the same rows `events` returns, so the API, the
 * portal and the audit verification see one log.
 */
import type { EventRow } from "./admin/messages.ts";

/** Events inside a batch are numbered from here (rows of `events` count from 1): id = base + batch * MAX + position. */
export const BATCH_ID_BASE = 2 ** 40;
/** At most this many events in a batch, and its messages' stream positions less than this apart (bounds the lookup by position). */
export const BATCH_MAX = 4096;
/** The event types written in batches when the object knows the message's stream position. */
export const BATCHED_TYPES: ReadonlySet<string> = new Set(["captured", "accepted", "delivered", "receipt"]);
/**
 * The batch an event type goes in: an ack's signed receipt ends the batch of
 * the delivered events it covers (a row of its own would cost as many D1
 * rows as the whole batch). Every other batched type has batches of its own.
 */
export const batchTypeOf = (type: string): string => (type === "receipt" ? "delivered" : type);

/** What a batch's events are read with: the JSON and, for format 2 (migration 0014), the values its events share. */
export type BatchRow = {
  id: number;
  events: string;
  format: number;
  chain: string;
  chain_seq: number;
  tenant: string;
  source: string;
  destination: string | null;
  prev_hash: string | null;
  place: string | null;
};

/** Where each format keeps an event's values inside its JSON array (format 1: the canonical row and its hash). */
const POSITIONS = { at: [6, 3], type: [5, 2], size: [11, 5] } as const;

/** SQL for one value of a batched event `j` (a json_each row) of batch `b`, in either format. */
export const batchedValueSql = (value: keyof typeof POSITIONS, j = "j", b = "b") =>
  `json_extract(${j}.value, CASE ${b}.format WHEN 2 THEN '$[${POSITIONS[value][1]}]' ELSE '$[${POSITIONS[value][0]}]' END)`;

/** The columns of BatchRow, for a SELECT (`alias.` before each when given). */
export const batchColumns = (alias = "") =>
  ["id", "events", "format", "chain", "chain_seq", "tenant", "source", "destination", "prev_hash", "place"].map((c) => (alias ? `${alias}.${c}` : c)).join(", ");

/**
 * A batch's events as rows of `events`: every value the event was hashed
 * with, as stored, so verification checks what is there. Format 1 holds each
 * event's whole canonical row; format 2 holds what differs per event and
 * takes the rest from the batch's columns, each event's previous hash from
 * the event before it (the first from `prev_hash`).
 */
export function expandBatch(b: BatchRow): EventRow[] {
  const rows = JSON.parse(b.events) as unknown[][];
  if (b.format === 2) {
    let prev = b.prev_hash ?? "";
    return rows.map((r, i) => {
      const hash = r[9] as string;
      const e: EventRow = {
        id: BATCH_ID_BASE + b.id * BATCH_MAX + i,
        chain: b.chain,
        chain_seq: r[0] as number,
        prev_hash: prev,
        tenant: b.tenant,
        message_id: r[1] as string,
        type: r[2] as string,
        at: r[3] as number,
        place: b.place ?? "",
        source: b.source,
        destination: b.destination,
        seq: r[4] as number | null,
        size: r[5] as number | null,
        sha256: r[6] as string | null,
        fields: r[7] as string | null,
        detail: r[8] as string | null,
        hash,
      };
      prev = hash;
      return e;
    });
  }
  return rows.map((r, i) => ({
    id: BATCH_ID_BASE + b.id * BATCH_MAX + i,
    chain: r[0] as string,
    chain_seq: r[1] as number,
    prev_hash: r[2] as string,
    tenant: r[3] as string,
    message_id: r[4] as string,
    type: r[5] as string,
    at: r[6] as number,
    place: r[7] as string,
    source: r[8] as string,
    destination: r[9] as string | null,
    seq: r[10] as number | null,
    size: r[11] as number | null,
    sha256: r[12] as string | null,
    fields: r[13] as string | null,
    detail: r[14] as string | null,
    hash: r[15] as string,
  }));
}

const byTime = (a: EventRow, b: EventRow) => a.at - b.at || a.id - b.id;
/** The API's page order: newest first by (at, id). */
export const newestFirst = (a: EventRow, b: EventRow) => byTime(b, a);

/**
 * Joins a table of (tenant, chain, mseq) keys to the batches whose position
 * range covers each: a bounded range of the (chain, mseq_lo) index per key.
 */
const COVERING = `JOIN event_batches AS b ON b.chain = k.chain AND b.mseq_lo BETWEEN k.mseq - ${BATCH_MAX - 1} AND k.mseq AND b.mseq_hi >= k.mseq`;

/** A message's batches, by its lookup row (`types`: how many batch types to narrow to). */
export const messageLookupSql = (types = 0) =>
  `SELECT DISTINCT ${batchColumns("b")} FROM message_index AS k ${COVERING} WHERE k.tenant = ? AND k.message_id = ?${types > 0 ? ` AND b.type IN (${Array(types).fill("?").join(", ")})` : ""}`;
/** The batches of messages with a recorded field. */
export const fieldLookupSql = `SELECT DISTINCT ${batchColumns("b")} FROM message_fields AS k ${COVERING} WHERE k.tenant = ? AND k.name = ? AND k.value = ?`;
/** A tenant's batches newest first (by their latest event), narrowed by `where`, after the keyset (at_hi, id) when `keyed`. */
export const batchWalkSql = (where: string[], keyed: boolean, chunk: number) =>
  `SELECT ${batchColumns()}, at_hi FROM event_batches WHERE ${["tenant = ?", ...where, ...(keyed ? ["(at_hi, id) < (?, ?)"] : [])].join(" AND ")} ORDER BY at_hi DESC, id DESC LIMIT ${chunk}`;

/** The batched events of one message in one store (`types`: only these). */
export async function messageBatchEvents(db: D1Database, tenant: string, id: string, types?: readonly string[]): Promise<EventRow[]> {
  const wanted = types ? [...new Set(types.filter((t) => BATCHED_TYPES.has(t)).map(batchTypeOf))] : undefined;
  if (wanted?.length === 0) return [];
  const { results } = await db
    .prepare(messageLookupSql(wanted?.length))
    .bind(tenant, id, ...(wanted ?? []))
    .all<BatchRow>();
  const out: EventRow[] = [];
  for (const b of results) for (const e of expandBatch(b)) if (e.message_id === id && e.chain === b.chain && e.tenant === tenant && (!types || types.includes(e.type))) out.push(e);
  return out;
}

/**
 * The receipt event whose hash a delivered event names: a row of `events`
 * (logged before batches), or in the delivered batch, or, when an ack's
 * delivered events filled more than one batch, in one of the next ones.
 */
export async function receiptOf(db: D1Database, tenant: string, delivered: EventRow, hash: string): Promise<EventRow | null> {
  const id = `receipt-${hash.slice(0, 56)}`;
  const row = await db.prepare("SELECT * FROM events WHERE tenant = ? AND message_id = ? AND type = 'receipt'").bind(tenant, id).first<EventRow>();
  if (row || delivered.id < BATCH_ID_BASE) return row;
  // One batch at a time: an ack's batches hold consecutive positions, the receipt at the end of the last.
  type Held = BatchRow & { last_seq: number };
  const held = `SELECT ${batchColumns()}, last_seq FROM event_batches WHERE`;
  let b = await db.prepare(`${held} id = ?`).bind(Math.floor((delivered.id - BATCH_ID_BASE) / BATCH_MAX)).first<Held>();
  while (b) {
    for (const e of expandBatch(b)) if (e.type === "receipt" && e.message_id === id && e.tenant === tenant) return e;
    b = await db
      .prepare(`${held} chain = ? AND chain_seq = ? AND type = 'delivered' AND destination IS ?`)
      .bind(b.chain, b.last_seq + 1, b.destination)
      .first<Held>();
  }
  return null;
}

/** Every event of one message in one store, rows and batches, oldest first (`types`: only these). */
export async function messageEvents(db: D1Database, tenant: string, id: string, types?: readonly string[]): Promise<EventRow[]> {
  const only = types ? ` AND type IN (${types.map(() => "?").join(", ")})` : "";
  const [{ results: rows }, batched] = await Promise.all([
    db.prepare(`SELECT * FROM events WHERE tenant = ? AND message_id = ?${only} ORDER BY at, id`).bind(tenant, id, ...(types ?? [])).all<EventRow>(),
    messageBatchEvents(db, tenant, id, types),
  ]);
  return [...rows, ...batched].sort(byTime);
}

/** The batched events of every message whose recorded field `name` is `value` (rows of `events` go through event_fields). */
export async function fieldEvents(db: D1Database, tenant: string, name: string, value: string): Promise<EventRow[]> {
  const { results } = await db.prepare(fieldLookupSql).bind(tenant, name, value).all<BatchRow>();
  const out: EventRow[] = [];
  for (const b of results) {
    for (const e of expandBatch(b)) {
      // The event's own recorded fields decide, as they do for rows of `events` (the batch may hold other messages).
      if (e.tenant === tenant && e.fields !== null && (JSON.parse(e.fields) as Record<string, unknown>)[name] === value) out.push(e);
    }
  }
  return out;
}

/** A chain's next batches after position ?2: from the one holding ?2 + 1 (batches never overlap), by the unique (chain, chain_seq) index, never a scan of the chain's start. */
export const chainBatchesSql = `SELECT ${batchColumns()}, last_seq FROM event_batches WHERE chain = ?1 AND chain_seq >= coalesce(
  (SELECT CASE WHEN last_seq > ?2 THEN chain_seq END FROM event_batches WHERE chain = ?1 AND chain_seq <= ?2 ORDER BY chain_seq DESC LIMIT 1), ?2 + 1)
ORDER BY chain_seq LIMIT 4`;

/** A chain's events after position `after`, in chain order: at least `limit` of them if there are (rows and batches merged). */
export async function chainEvents(db: D1Database, chain: string, after: number, limit: number): Promise<EventRow[]> {
  const { results: rows } = await db.prepare("SELECT * FROM events WHERE chain = ? AND chain_seq > ? ORDER BY chain_seq LIMIT ?").bind(chain, after, limit).all<EventRow>();
  const out: EventRow[] = [...rows];
  let from = after;
  let got = 0;
  // A few batches at a time (each may hold thousands of events), until `limit` of theirs are in hand.
  while (got < limit) {
    const { results } = await db
      .prepare(chainBatchesSql)
      .bind(chain, from)
      .all<BatchRow & { last_seq: number }>();
    for (const b of results) {
      for (const e of expandBatch(b)) if ((e.chain_seq ?? 0) > after) out.push(e), got++;
      from = b.last_seq;
    }
    if (results.length < 4) break;
  }
  return out.sort((a, b) => (a.chain_seq ?? 0) - (b.chain_seq ?? 0)).slice(0, limit);
}

/** The chains a tenant's log holds in one store (or the one named). */
export async function chainsOf(db: D1Database, tenant: string, chain?: string): Promise<string[]> {
  const { results } = chain
    ? await db.prepare("SELECT chain FROM events WHERE chain = ? UNION SELECT chain FROM event_batches WHERE chain = ?").bind(chain, chain).all<{ chain: string }>()
    : await db.prepare("SELECT DISTINCT chain FROM events WHERE tenant = ? AND chain IS NOT NULL UNION SELECT DISTINCT chain FROM event_batches WHERE tenant = ? ORDER BY chain").bind(tenant, tenant).all<{ chain: string }>();
  return results.map((r) => r.chain);
}

/** What a page of batched events is filtered by: columns a batch has in common, and a test for each of its events. */
export type BatchFilter = { where: string[]; args: (string | number)[]; keep: (e: EventRow) => boolean };

/**
 * The newest `limit` batched events that pass `filter`, newest first by
 * (at, id). Batches are walked by their latest event time, a few at a
 * time; every batch not yet read has only events at or before the last
 * one read's latest, so the walk stops once `limit` events newer than that
 * are in hand. Memory holds at most `limit` events and a few batches.
 */
export async function batchPage(db: D1Database, tenant: string, filter: BatchFilter, limit: number): Promise<EventRow[]> {
  const CHUNK = 8;
  let out: EventRow[] = [];
  let key: [number, number] | null = null;
  for (;;) {
    const { results }: { results: (BatchRow & { at_hi: number })[] } = await db
      .prepare(batchWalkSql(filter.where, key !== null, CHUNK))
      .bind(tenant, ...filter.args, ...(key ?? []))
      .all<BatchRow & { at_hi: number }>();
    for (const b of results) for (const e of expandBatch(b)) if (filter.keep(e)) out.push(e);
    out = out.sort(newestFirst).slice(0, limit);
    const last: (BatchRow & { at_hi: number }) | undefined = results.at(-1);
    if (results.length < CHUNK || !last) return out;
    if (out.length >= limit && (out.at(-1) as EventRow).at > last.at_hi) return out;
    key = [last.at_hi, last.id];
  }
}
