import { Hono } from "hono";
import { z } from "zod";
import { Address, Name, verifyReceipt, type EventView } from "../../wire/index.ts";
import { ApiError, invalid } from "../http/problem.ts";
import type { AppEnv } from "../env.ts";
import { envelopeXml } from "./envelope-xml.ts";
import { eventStores } from "../region.ts";
import { BATCHED_TYPES, batchPage, batchTypeOf, fieldEvents, messageBatchEvents, messageEvents, newestFirst, receiptOf, type BatchFilter } from "../event-log.ts";
import type { LoggedEvent } from "../../durable-objects/channel/events.ts";

export type EventRow = {
  id: number;
  tenant: string;
  message_id: string;
  type: string;
  at: number;
  place: string;
  source: string;
  destination: string | null;
  seq: number | null;
  size: number | null;
  sha256: string | null;
  fields: string | null;
  detail: string | null;
  chain: string | null;
  chain_seq: number | null;
  prev_hash: string | null;
  hash: string | null;
};

export function presentEvent(r: EventRow & { store?: number }): EventView {
  return {
    id: r.id,
    messageId: r.message_id,
    type: r.type,
    at: r.at,
    time: new Date(r.at).toISOString(),
    place: r.place,
    source: r.source,
    destination: r.destination,
    seq: r.seq,
    size: r.size,
    sha256: r.sha256,
    fields: r.fields === null ? null : (JSON.parse(r.fields) as Record<string, string>),
    detail: r.detail === null ? null : (JSON.parse(r.detail) as unknown),
    chain: r.chain,
    chainSeq: r.chain_seq,
    prevHash: r.prev_hash,
    hash: r.hash,
  };
}

/**
 * A time as ISO 8601 or epoch milliseconds. The union's own message would be
 * a bare "Invalid input" (neither branch's message survives), so it names
 * both accepted forms itself.
 */
const Time = z.union([z.coerce.number().int().nonnegative(), z.iso.datetime({ offset: true }).transform((s) => Date.parse(s))], {
  error: "use an ISO time like 2026-11-25T08:00:00Z or a Unix time in ms",
});

/** Every event type the channel objects log (hosted egress logs each `attempt`). */
export const EVENT_TYPES = ["captured", "accepted", "delivered", "receipt", "attempt", "expired", "rejected", "redriven", "discarded", "archived", "purged"] as const;
// Both directions: a type logged but not queryable (or the reverse) fails the type check.
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const eventTypesMatchTheLog: Same<(typeof EVENT_TYPES)[number], LoggedEvent["type"]> = true;
void eventTypesMatchTheLog;

const Query = z.strictObject({
  limit: z.coerce.number().int().min(1).max(1000).default(100),
  /** Opaque cursor from the previous page's `nextCursor`. */
  cursor: z.string().regex(/^\d+\.\d+\.\d+$/, "use the nextCursor of the previous page").optional(),
  from: Time.optional(),
  to: Time.optional(),
  source: Address.optional(),
  destination: Address.optional(),
  /** Either end of the message's path. */
  connector: Name.optional(),
  type: z.enum(EVENT_TYPES).optional(),
  id: z.string().max(64).optional(),
  /** A route's id: its source's events, and those bound for its destination. */
  route: z.string().max(64).optional(),
  /** Metadata field, e.g. `field=filename:invoice-7.csv`. */
  field: z.string().regex(/^[a-zA-Z][a-zA-Z0-9_.-]{0,63}:.{0,1024}$/, "write field=NAME:VALUE, e.g. field=filename:invoice.csv").optional(),
  format: z.enum(["json", "jsonl", "csv"]).default("json"),
});
type Query = z.infer<typeof Query> & { routeDestination?: string };

/** `NAME:VALUE` (the query's `field`) as its two parts; the value may hold colons. */
const fieldOf = (f: string): [string, string] => [f.slice(0, f.indexOf(":")), f.slice(f.indexOf(":") + 1)];

/**
 * The WHERE clause for a query. Every filter is a bound parameter (never
 * spliced into SQL), and each common filter is served by an index that
 * starts with the tenant (see migrations/0002, 0008 and the EXPLAIN test).
 */
export function eventFilter(tenant: string, q: Omit<Query, "limit" | "format">, store = 0): { where: string; args: (string | number)[] } {
  // With a field filter, the unary `+` keeps SQLite from walking the tenant's
  // time index (it would, to skip the sort, reading every event of the
  // tenant): the few events event_fields names are fetched by id and sorted.
  const where = [q.field ? "+tenant = ?" : "tenant = ?"];
  const args: (string | number)[] = [tenant];
  if (q.from !== undefined) where.push("at >= ?"), args.push(q.from);
  if (q.to !== undefined) where.push("at < ?"), args.push(q.to);
  if (q.source) where.push("source = ?"), args.push(q.source);
  if (q.destination) where.push("destination = ?"), args.push(q.destination);
  if (q.routeDestination) where.push("(destination IS NULL OR destination = ?)"), args.push(q.routeDestination);
  if (q.connector) {
    where.push("(source >= ? AND source < ? OR destination >= ? AND destination < ?)");
    args.push(`${q.connector}/`, `${q.connector}0`, `${q.connector}/`, `${q.connector}0`);
  }
  if (q.type) where.push("type = ?"), args.push(q.type);
  if (q.id) where.push("message_id = ?"), args.push(q.id);
  if (q.field) {
    // event_fields (migrations/0008, filled by a trigger on insert) indexes
    // each channel field by (tenant, name, value): the matching rows are found
    // by key, never by reading every event's JSON.
    where.push("id IN (SELECT event_id FROM event_fields WHERE tenant = ? AND name = ? AND value = ?)");
    args.push(tenant, ...fieldOf(q.field));
  }
  if (q.cursor) {
    // Pages run newest first over (at, store, id); `store` is this query's store.
    const [at, cstore, id] = q.cursor.split(".").map(Number) as [number, number, number];
    if (store < cstore) where.push("at <= ?"), args.push(at);
    else if (store > cstore) where.push("at < ?"), args.push(at);
    else where.push("(at < ? OR (at = ? AND id < ?))"), args.push(at, at, id);
  }
  return { where: where.join(" AND "), args };
}

/** Finds a message's archive through its `archived` event (which names bucket and key; always a row of `events`, never batched). */
async function archived(env: Env, tenant: string, id: string, suffix: string): Promise<R2ObjectBody> {
  let ev: { detail: string } | null = null;
  for (const { db } of eventStores(env)) {
    ev ??= await db.prepare("SELECT detail FROM events WHERE tenant = ? AND message_id = ? AND type = 'archived' ORDER BY at DESC LIMIT 1").bind(tenant, id).first<{ detail: string }>();
  }
  if (!ev) throw new ApiError(404, "Not found", `message '${id}' has no archive (its route does not archive, or it was purged)`);
  const d = JSON.parse(ev.detail) as { key: string; bucket: string };
  const bucket = d.bucket === "ARCHIVE_EU" ? env.ARCHIVE_EU : env.ARCHIVE;
  const obj = await bucket.get(`${d.key}${suffix}`);
  if (!obj) throw new ApiError(410, "Gone", `the archive of message '${id}' was purged at the end of its retention`);
  return obj;
}

const CSV_COLUMNS = ["time", "type", "messageId", "source", "destination", "seq", "size", "sha256", "place", "fields", "chain", "chainSeq", "hash"] as const;

function csvCell(v: unknown): string {
  const s = v === null || v === undefined ? "" : typeof v === "object" ? JSON.stringify(v) : String(v);
  // Quote always; a leading = + - @ could be run as a formula by a spreadsheet.
  return `"${(/^[=+\-@]/.test(s) ? `'${s}` : s).replace(/"/g, '""')}"`;
}

/** `route=ID` becomes its source (and destination, for per-destination events). */
async function resolveRoute(env: Env, tenant: string, q: Query): Promise<Query> {
  if (!q.route) return q;
  const r = await env.DB.prepare("SELECT source, destination FROM routes WHERE tenant = ? AND id = ?").bind(tenant, q.route).first<{ source: string; destination: string }>();
  if (!r) throw new ApiError(404, "Not found", `query: route: no route with id '${q.route}'`);
  return { ...q, source: r.source, routeDestination: r.destination };
}

type StoredRow = EventRow & { store: number };

/**
 * The same query for batched events (workers/event-log.ts): each event is
 * tested in full here, and what a batch has in common (its chain, type,
 * destination, time range) narrows which batches are read at all.
 */
async function batchedPage(db: D1Database, tenant: string, q: Omit<Query, "format">, store: number): Promise<EventRow[]> {
  if (q.type && !BATCHED_TYPES.has(q.type)) return [];
  const filter = batchFilter(tenant, q, store);
  const newest = (rows: EventRow[]) => rows.filter(filter.keep).sort(newestFirst).slice(0, q.limit);
  // A message, or the messages with a field, are found by key; anything else is a walk over the batches by time.
  if (q.id) return newest(await messageBatchEvents(db, tenant, q.id));
  if (q.field) return newest(await fieldEvents(db, tenant, ...fieldOf(q.field)));
  return batchPage(db, tenant, filter, q.limit);
}

/** The test of each batched event for a query, and what narrows the batches walked (see the EXPLAIN test). */
export function batchFilter(tenant: string, q: Omit<Query, "limit" | "format">, store = 0): BatchFilter {
  const where: string[] = [];
  const args: (string | number)[] = [];
  const cursor = q.cursor ? (q.cursor.split(".").map(Number) as [number, number, number]) : null;
  const field = q.field ? fieldOf(q.field) : null;
  const inConnector = (a: string | null) => q.connector !== undefined && a !== null && a >= `${q.connector}/` && a < `${q.connector}0`;
  const keep = (e: EventRow): boolean =>
    (q.from === undefined || e.at >= q.from) &&
    (q.to === undefined || e.at < q.to) &&
    (!q.source || e.source === q.source) &&
    (!q.destination || e.destination === q.destination) &&
    (!q.routeDestination || e.destination === null || e.destination === q.routeDestination) &&
    (!q.connector || inConnector(e.source) || inConnector(e.destination)) &&
    (!q.type || e.type === q.type) &&
    (!q.id || e.message_id === q.id) &&
    (!field || (e.fields !== null && (JSON.parse(e.fields) as Record<string, unknown>)[field[0]] === field[1])) &&
    // Pages run newest first over (at, store, id), as for rows.
    (!cursor || (store < cursor[1] ? e.at <= cursor[0] : store > cursor[1] ? e.at < cursor[0] : e.at < cursor[0] || (e.at === cursor[0] && e.id < cursor[2])));
  if (q.from !== undefined) where.push("at_hi >= ?"), args.push(q.from);
  if (q.to !== undefined) where.push("at_lo < ?"), args.push(q.to);
  if (cursor) where.push("at_lo <= ?"), args.push(cursor[0]);
  if (q.source) where.push("chain = ?"), args.push(`${tenant}:${q.source}`);
  if (q.destination) where.push("destination = ?"), args.push(q.destination);
  if (q.routeDestination) where.push("(destination IS NULL OR destination = ?)"), args.push(q.routeDestination);
  if (q.connector) {
    where.push("(source >= ? AND source < ? OR destination >= ? AND destination < ?)");
    args.push(`${q.connector}/`, `${q.connector}0`, `${q.connector}/`, `${q.connector}0`);
  }
  if (q.type) where.push("type = ?"), args.push(batchTypeOf(q.type));
  return { where, args, keep };
}

/**
 * One page across every event-log store (regions keep their own), merged
 * newest first by (at, store, id) so the cursor is exact across stores.
 */
async function page(env: Env, tenant: string, q: Omit<Query, "format">): Promise<StoredRow[]> {
  const parts = await Promise.all(
    eventStores(env).map(async ({ store, db }) => {
      const { where, args } = eventFilter(tenant, q, store);
      const [{ results }, batched] = await Promise.all([
        db.prepare(`SELECT * FROM events WHERE ${where} ORDER BY at DESC, id DESC LIMIT ?`).bind(...args, q.limit).all<EventRow>(),
        batchedPage(db, tenant, q, store),
      ]);
      return [...results, ...batched].map((r) => ({ ...r, store }));
    }),
  );
  return parts
    .flat()
    .sort((a, b) => b.at - a.at || b.store - a.store || b.id - a.id)
    .slice(0, q.limit);
}

const cursorOf = (r: StoredRow) => `${r.at}.${r.store}.${r.id}`;

/** Streams every matching event, newest first, page by page: constant memory however many. */
function exportStream(env: Env, tenant: string, q: Query): ReadableStream<Uint8Array> {
  const enc = new TextEncoder();
  let cursor = q.cursor;
  let first = true;
  return new ReadableStream({
    async pull(controller) {
      if (first && q.format === "csv") controller.enqueue(enc.encode(`${CSV_COLUMNS.join(",")}\n`));
      first = false;
      const rows = await page(env, tenant, { ...q, limit: 1000, ...(cursor ? { cursor } : {}) });
      const lines = rows.map((r) => {
        const e = presentEvent(r);
        return q.format === "csv" ? CSV_COLUMNS.map((c) => csvCell(e[c])).join(",") : JSON.stringify(e);
      });
      if (lines.length > 0) controller.enqueue(enc.encode(`${lines.join("\n")}\n`));
      const last = rows.at(-1);
      if (rows.length < 1000 || !last) controller.close();
      else cursor = cursorOf(last);
    },
  });
}

export const messages = new Hono<AppEnv>()
  .get("/", async (c) => {
    const parsed = Query.safeParse(c.req.query());
    if (!parsed.success) throw invalid(parsed.error, "query");
    const tenant = c.get("tenant");
    const q = { data: await resolveRoute(c.env, tenant, parsed.data) };
    if (q.data.format !== "json") {
      const type = q.data.format === "csv" ? "text/csv; charset=utf-8" : "application/x-ndjson";
      return new Response(exportStream(c.env, tenant, q.data), {
        headers: { "content-type": type, "content-disposition": `attachment; filename="ferry-events.${q.data.format}"` },
      });
    }
    const rows = await page(c.env, tenant, q.data);
    const last = rows.at(-1);
    return c.json({ events: rows.map(presentEvent), nextCursor: rows.length === q.data.limit && last ? cursorOf(last) : null });
  })
  .get("/:id/archive", async (c) => {
    const obj = await archived(c.env, c.get("tenant"), c.req.param("id"), "");
    return new Response(obj.body, {
      headers: {
        "content-type": obj.httpMetadata?.contentType ?? "application/octet-stream",
        "content-length": String(obj.size),
        "content-disposition": `attachment; filename="${c.req.param("id")}.bin"`,
        ...(obj.checksums.sha256 ? { "x-ferry-sha256": [...new Uint8Array(obj.checksums.sha256)].map((b) => b.toString(16).padStart(2, "0")).join("") } : {}),
      },
    });
  })
  .get("/:id/envelope", async (c) => {
    const format = c.req.query("format") ?? "json";
    if (format !== "json" && format !== "xml") throw new ApiError(400, "Invalid request", "query: format: json or xml");
    const obj = await archived(c.env, c.get("tenant"), c.req.param("id"), ".envelope.json");
    const envelope = (await obj.json()) as Parameters<typeof envelopeXml>[0];
    if (format === "xml") return new Response(envelopeXml(envelope), { headers: { "content-type": "application/xml; charset=utf-8" } });
    return c.json(envelope);
  })
  .get("/:id/receipt", async (c) => {
    const tenant = c.get("tenant");
    const id = c.req.param("id");
    const rows = (
      await Promise.all(eventStores(c.env).map(async ({ db }) => (await messageEvents(db, tenant, id, ["delivered"])).map((r) => ({ r, db }))))
    ).flat();
    if (rows.length === 0) throw new ApiError(404, "Not found", `message '${id}' has not been delivered (or does not exist)`);
    const receipts = await Promise.all(
      rows.map(async ({ r, db }) => {
        const hash = r.detail ? (JSON.parse(r.detail) as { receipt?: string }).receipt : undefined;
        const destination = r.destination as string;
        if (!hash) return { destination, at: r.at, signed: false as const };
        const ev = await receiptOf(db, tenant, r, hash);
        const jws = ev?.detail ? (JSON.parse(ev.detail) as { jws: string }).jws : null;
        const signer = destination.slice(0, destination.indexOf("/"));
        const key = await c.env.DB.prepare("SELECT public_jwk FROM connectors WHERE tenant = ? AND name = ?").bind(tenant, signer).first<{ public_jwk: string | null }>();
        const claims = jws && key?.public_jwk ? await verifyReceipt(jws, JSON.parse(key.public_jwk)) : null;
        const covered = claims?.messages.find((m) => m.id === id) ?? null;
        return { destination, at: r.at, signed: true as const, signer, verified: claims !== null && covered !== null && claims.dst === destination, receivedAt: claims?.at ?? null, sha256: covered?.sha256 ?? null, jws };
      }),
    );
    return c.json({ messageId: id, receipts });
  })
  .get("/:id", async (c) => {
    const results = (
      await Promise.all(
        eventStores(c.env).map(({ db }) => messageEvents(db, c.get("tenant"), c.req.param("id"))),
      )
    )
      .flat()
      .sort((a, b) => a.at - b.at || a.id - b.id);
    if (results.length === 0) throw new ApiError(404, "Not found", `no message with id '${c.req.param("id")}'`);
    return c.json({ messageId: c.req.param("id"), events: results.map(presentEvent) });
  });
