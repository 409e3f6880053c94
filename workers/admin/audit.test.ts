import { env, runInDurableObject } from "cloudflare:test";
import { exports } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import type { PubMessage } from "../../wire/index.ts";
import { batchFilter, eventFilter } from "./messages.ts";
import { batchWalkSql, chainBatchesSql, fieldLookupSql, messageLookupSql } from "../event-log.ts";
import { purgeLogRows } from "../retention.ts";

const SELF = (exports as unknown as { default: Fetcher }).default;
const ADMIN = { authorization: "Bearer test-admin-token-0123456789abcdef" };
const TENANT = "default";

async function get(path: string) {
  const res = await SELF.fetch(`http://edge.test${path}`, { headers: ADMIN });
  return { status: res.status, type: res.headers.get("content-type"), text: await res.text() };
}

/** Copies what a channel object's log has staged to D1 now (its flush, without waiting for the timer). */
const flushLog = (stub: DurableObjectStub) => runInDurableObject(stub, (obj) => (obj as unknown as { events: { flush(): Promise<void> } }).events.flush());

/** Drives a channel object directly: publish `n` messages (`frame` to a publish), acknowledge them (in `acks` cumulative acks), flush the log. */
async function traffic(
  source: string,
  n: number,
  filename: (i: number) => string | null = (i) => `file-${i}.csv`,
  o: { createdAt?: (i: number) => number; frame?: number; acks?: number; receipt?: string; flushEach?: boolean } = {},
) {
  const frame = o.frame ?? 500;
  const acks = o.acks ?? 1;
  const stub = env.CHANNEL.get(env.CHANNEL.idFromName(`${TENANT}:${source}`));
  await stub.configure(TENANT, source, [{ destination: "sink/in", ttlSeconds: 3600, protection: "none", archive: false }]);
  const msgs: PubMessage[] = [];
  const payloads: Uint8Array[] = [];
  for (let i = 1; i <= n; i++) {
    const p = new TextEncoder().encode(`m${i}`);
    msgs.push({ seq: i, id: `${source.replace(/\W/g, "")}-${i}-xxxxxxxx`, createdAt: o.createdAt?.(i) ?? 1, contentType: "text/csv", size: p.byteLength, sha256: "a".repeat(64), ...(filename(i) === null ? {} : { fields: { filename: filename(i) as string } }) });
    payloads.push(p);
  }
  const flush = () => flushLog(stub);
  // flushEach: a flush after every publish and ack, as when traffic is spread out in time (one flush's rows share batches).
  for (let i = 0; i < n; i += frame) {
    await stub.publish({ tenant: TENANT, source, epoch: "epoch-aaaaaaaa", msgs: msgs.slice(i, i + frame), payloads: payloads.slice(i, i + frame) });
    if (o.flushEach) await flush();
  }
  for (let a = 1; a <= acks; a++) {
    await stub.ack(TENANT, source, "sink/in", Math.ceil((n * a) / acks), o.receipt);
    if (o.flushEach) await flush();
  }
  await flush();
  return stub;
}

describe("event log: hash chain", () => {
  it("chains every event of a channel and verifies it", async () => {
    await traffic("chain-a/out", 3);
    const v = JSON.parse((await get("/api/log/verify?source=chain-a/out")).text) as { ok: boolean; chains: { events: number; broken: unknown }[] };
    expect(v).toMatchObject({ ok: true, chains: [{ chain: "default:chain-a/out", events: 9, from: 1, to: 9, broken: null }] });
  });

  it("reports the first broken link when an event is altered, deleted or reordered, inside a batch or as a row", async () => {
    type Verified = { ok: boolean; chains: { broken: { chainSeq: number; reason: string } | null }[] };
    const verify = async (source: string) => JSON.parse((await get(`/api/log/verify?source=${source}`)).text) as Verified;
    // Edits the JSON of the batch holding chain position `pos` (as anyone with write access to D1 could); `$i` is its index there.
    const inBatch = (chain: string, pos: number, set: string) =>
      env.DB.prepare(`UPDATE event_batches SET events = ${set.replaceAll("$i", `(${pos} - chain_seq)`)} WHERE chain = ? AND chain_seq <= ? AND last_seq >= ?`).bind(`${TENANT}:${chain}`, pos, pos).run();
    await traffic("chain-b/out", 3);
    await inBatch("chain-b/out", 2, "json_set(events, '$[' || $i || '][5]', 999)");
    let v = await verify("chain-b/out");
    expect(v.ok).toBe(false);
    expect(v.chains[0]?.broken).toMatchObject({ chainSeq: 2, reason: expect.stringContaining("altered") });

    await traffic("chain-c/out", 3);
    await inBatch("chain-c/out", 4, "json_remove(events, '$[' || $i || ']')");
    v = await verify("chain-c/out");
    expect(v.chains[0]?.broken).toMatchObject({ chainSeq: 5, reason: expect.stringContaining("missing") });

    await traffic("chain-r/out", 3);
    // Positions 7 and 8 trade places (each event keeps its content and hash).
    await inBatch("chain-r/out", 7, "json_set(events, '$[0][0]', 8, '$[1][0]', 7)");
    v = await verify("chain-r/out");
    expect(v.ok).toBe(false);
    expect(v.chains[0]?.broken?.chainSeq).toBe(7);

    // Exceptions stay rows of `events`: a refused message (no route) altered there breaks the chain too.
    const stub = env.CHANNEL.get(env.CHANNEL.idFromName(`${TENANT}:chain-e/out`));
    const p = new TextEncoder().encode("x");
    await stub.publish({ tenant: TENANT, source: "chain-e/out", epoch: "epoch-aaaaaaaa", msgs: [1, 2].map((seq) => ({ seq, id: `chain-e-${seq}-xxxxxxxx`, createdAt: 1, contentType: "text/plain", size: 1, sha256: "a".repeat(64) })), payloads: [p, p] });
    await flushLog(stub);
    expect((await verify("chain-e/out")).ok).toBe(true);
    await env.DB.prepare("UPDATE events SET detail = '{}' WHERE chain = 'default:chain-e/out' AND chain_seq = 2").run();
    expect((await verify("chain-e/out")).chains[0]?.broken).toMatchObject({ chainSeq: 2, reason: expect.stringContaining("altered") });

    // Without a source, every chain of the tenant is checked.
    const all = JSON.parse((await get("/api/log/verify")).text) as { ok: boolean; chains: { chain: string; broken: unknown }[] };
    expect(all.ok).toBe(false);
    expect(all.chains.find((c) => c.chain === "default:chain-a/out")?.broken).toBeNull();
  });

  it("keeps each batched event once, without what its batch holds, and reads batches of the older format as before", async () => {
    await traffic("compact-a/out", 3);
    type Verified = { ok: boolean; chains: { events: number; broken: unknown }[] };
    const verify = async () => JSON.parse((await get("/api/log/verify?source=compact-a/out")).text) as Verified;
    const chain = `${TENANT}:compact-a/out`;
    const batches = await env.DB.prepare("SELECT format, prev_hash, place, events FROM event_batches WHERE chain = ? ORDER BY chain_seq").bind(chain).all<{ format: number; prev_hash: string; place: string; events: string }>();
    expect(batches.results.length).toBeGreaterThan(0);
    for (const b of batches.results) {
      expect(b.format).toBe(2);
      // Ten values per event: the chain, tenant, source, place, destination and previous hash are the batch's.
      for (const e of JSON.parse(b.events) as unknown[][]) expect(e).toHaveLength(10);
      expect(b.events).not.toContain("compact-a/out");
    }
    const timeline = async () => JSON.parse((await get("/api/messages?source=compact-a/out&limit=100")).text) as { events: Record<string, unknown>[] };
    const before = await timeline();
    const view = async () => (await env.DB.prepare("SELECT * FROM event_log WHERE chain = ? ORDER BY chain_seq").bind(chain).all()).results;
    const viewed = await view();
    expect(viewed).toHaveLength(9);
    expect(viewed.map((r) => r.prev_hash).slice(1)).toEqual(viewed.map((r) => r.hash).slice(0, -1));
    expect(await verify()).toMatchObject({ ok: true, chains: [{ events: 9, broken: null }] });
    // What the batch holds once is hashed into every event rebuilt from it: an edited column is reported.
    const first = (await env.DB.prepare("SELECT chain_seq, prev_hash, destination FROM event_batches WHERE chain = ? AND type = 'delivered' ORDER BY chain_seq LIMIT 1").bind(chain).first<{ chain_seq: number; prev_hash: string; destination: string }>()) as { chain_seq: number; prev_hash: string; destination: string };
    const edit = (set: string, value: string) => env.DB.prepare(`UPDATE event_batches SET ${set} = ? WHERE chain = ? AND chain_seq = ?`).bind(value, chain, first.chain_seq).run();
    await edit("prev_hash", "0".repeat(64));
    expect((await verify()).chains[0]?.broken).toMatchObject({ chainSeq: first.chain_seq, reason: expect.stringContaining("previous-hash link") });
    await edit("prev_hash", first.prev_hash);
    await edit("destination", "elsewhere/in");
    expect((await verify()).chains[0]?.broken).toMatchObject({ chainSeq: first.chain_seq, reason: expect.stringContaining("altered") });
    await edit("destination", first.destination);
    expect(await verify()).toMatchObject({ ok: true, chains: [{ events: 9, broken: null }] });
    // Rewritten as a batch from before migration 0014 holds them (the whole canonical row and its hash per event): the same log.
    await env.DB.prepare(
      `UPDATE event_batches SET format = 1, prev_hash = NULL, place = NULL, events = (
         SELECT json_group_array(json_array(chain, chain_seq, prev_hash, tenant, message_id, type, at, place, source, destination, seq, size, sha256, fields, detail, hash))
         FROM (SELECT * FROM event_log AS l WHERE l.chain = event_batches.chain AND l.chain_seq BETWEEN event_batches.chain_seq AND event_batches.last_seq ORDER BY l.chain_seq))
       WHERE chain = ?`,
    ).bind(chain).run();
    expect((await env.DB.prepare("SELECT DISTINCT format FROM event_batches WHERE chain = ?").bind(chain).all()).results).toEqual([{ format: 1 }]);
    expect(await view()).toEqual(viewed);
    expect(await timeline()).toEqual(before);
    expect(await verify()).toMatchObject({ ok: true, chains: [{ events: 9, broken: null }] });
  });

  it("never duplicates or skips a position when a flush is repeated after a crash", async () => {
    const stub = await traffic("chain-d/out", 2);
    const count = async () => (await env.DB.prepare("SELECT count(*) AS n FROM event_log WHERE chain = 'default:chain-d/out'").first<{ n: number }>())?.n;
    const before = await count();
    // Simulate the crash window: D1 has the events, but the object forgot it wrote them, so positions
    // from 1 are sent again: as a batch (a lifecycle event with its stream position) and as a row (one without).
    // Staged here as keyed objects, the shape an older edge left in its outbox (this one stages arrays): both are read.
    const accepted = { messageId: "chain-dout-1-xxxxxxxx", type: "accepted", at: 1, seq: 1, size: 2, sha256: "a".repeat(64), destination: null, fields: { filename: "file-1.csv" }, detail: null };
    for (const event of [{ ...accepted, mseq: 1 }, accepted]) {
      await runInDurableObject(stub, (_o, state) => {
        state.storage.sql.exec("DELETE FROM meta WHERE k IN ('chain_head', 'chain_seq', 'chain_hash')");
        state.storage.sql.exec("INSERT INTO event_outbox (event) VALUES (?)", JSON.stringify([event]));
      });
      await flushLog(stub);
      expect(await count()).toBe(before);
    }
    const v = JSON.parse((await get("/api/log/verify?source=chain-d/out")).text) as { ok: boolean };
    expect(v.ok).toBe(true);
  });

  it("gathers messages sent one at a time into one batch per type, and re-sends a flush cut short as the same batches", async () => {
    const source = "chain-g/out";
    const chain = `${TENANT}:${source}`;
    const stub = await traffic(source, 1);
    const flush = () => flushLog(stub);
    const sql = <T>(q: string, ...args: (string | number)[]) => runInDurableObject(stub, (_o, state) => state.storage.sql.exec(q, ...args).toArray() as T[]);
    const batches = async () => (await env.DB.prepare("SELECT count(*) AS n FROM event_batches WHERE chain = ?").bind(chain).first<{ n: number }>())?.n ?? 0;
    const events = async () => (await env.DB.prepare("SELECT count(*) AS n FROM event_log WHERE chain = ?").bind(chain).first<{ n: number }>())?.n ?? 0;
    // What one publish of one message stages: its captured and accepted events, as the object stages them (one group, events.ts).
    const publishRow = (i: number) => JSON.stringify({ accepted: [1000 + i, "site:chain-g", ["chain-h/in"]], m: [[`chain-g-${i}-xxxxxxxx`, i, i, 2, "a".repeat(64), null, 900 + i, "text/plain"]] });
    const stage = (rows: string[]) => sql("INSERT INTO event_outbox (event) VALUES " + rows.map(() => "(?)").join(", "), ...rows);
    const verified = async () => (JSON.parse((await get(`/api/log/verify?source=${source}`)).text) as { ok: boolean }).ok;

    // Six messages one at a time: one captured and one accepted batch, not twelve batches.
    const before = await batches();
    await stage([2, 3, 4, 5, 6, 7].map(publishRow));
    await flush();
    expect((await batches()) - before).toBe(2);
    expect(await verified()).toBe(true);

    // A flush that wrote D1 and was cut off before the object recorded it: its rows come back, pinned, with the old chain head,
    // and another message was staged since. Sent again, the pinned rows make the same batches (ignored), the new one follows.
    const [head] = await sql<{ v: string }>("SELECT v FROM meta WHERE k = 'chain_head'");
    await stage([8, 9].map(publishRow));
    const taken = await sql<{ id: number; event: string }>("SELECT id, event FROM event_outbox ORDER BY id");
    await flush();
    const written = await events();
    for (const r of taken) await sql("INSERT INTO event_outbox (id, event) VALUES (?, ?)", r.id, r.event);
    await sql("INSERT OR REPLACE INTO meta (k, v) VALUES ('chain_head', ?), ('flush_to', ?)", head?.v as string, (taken.at(-1) as { id: number }).id);
    await stage([publishRow(10)]);
    await flush();
    expect(await events()).toBe(written + 2);
    expect(await verified()).toBe(true);
    expect(await sql("SELECT * FROM meta WHERE k = 'flush_to'")).toEqual([]);
  });
});

describe("event log: queries and exports", () => {
  it("filters by source, connector, type, metadata field and time, and pages with cursors", async () => {
    await traffic("query-a/out", 250, (i) => (i === 77 ? "invoice-77.pdf" : `file-${i}.csv`));
    const page = async (q: string) => JSON.parse((await get(`/api/messages?${q}`)).text) as { events: { messageId: string; type: string; fields: Record<string, string> }[]; nextCursor: string | null };
    const seen = new Set<string>();
    let cursor: string | null = null;
    let pages = 0;
    do {
      const p = await page(`source=query-a/out&type=accepted&limit=100${cursor ? `&cursor=${cursor}` : ""}`);
      for (const e of p.events) {
        expect(seen.has(e.messageId)).toBe(false);
        seen.add(e.messageId);
      }
      cursor = p.nextCursor;
      pages++;
    } while (cursor);
    expect(seen.size).toBe(250);
    expect(pages).toBe(3);
    const byField = await page("field=filename:invoice-77.pdf");
    expect(byField.events.map((e) => e.type).sort()).toEqual(["accepted", "captured", "delivered"]);
    expect(byField.events[0]?.fields).toEqual({ filename: "invoice-77.pdf" });
    expect((await page("connector=sink&type=delivered&limit=1000")).events.length).toBeGreaterThanOrEqual(250);
    expect((await page("from=2999-01-01T00:00:00Z")).events).toEqual([]);
    const bad = await get("/api/messages?field=oops");
    expect(bad.status).toBe(400);
    expect(JSON.parse(bad.text).detail).toMatch(/^query: field: write field=NAME:VALUE/);
  });

  it("exports CSV (spreadsheet-safe) and JSON Lines, all pages", async () => {
    await traffic("export-a/out", 3, (i) => (i === 2 ? "=HYPERLINK(\"http://evil\")" : `e-${i}.txt`));
    const csv = await get("/api/messages?source=export-a/out&format=csv");
    expect(csv.type).toContain("text/csv");
    const lines = csv.text.trim().split("\n");
    expect(lines[0]).toBe("time,type,messageId,source,destination,seq,size,sha256,place,fields,chain,chainSeq,hash");
    expect(lines).toHaveLength(10);
    expect(csv.text).not.toMatch(/,"=HYPERLINK/);
    const jsonl = await get("/api/messages?source=export-a/out&format=jsonl");
    expect(jsonl.text.trim().split("\n").map((l) => (JSON.parse(l) as { type: string }).type).sort()).toEqual(["accepted", "accepted", "accepted", "captured", "captured", "captured", "delivered", "delivered", "delivered"]);
  });

  it("serves every common filter from an index (EXPLAIN QUERY PLAN)", async () => {
    const cases: Parameters<typeof eventFilter>[1][] = [
      {},
      { from: 1, to: 2 },
      { source: "a/b" },
      { destination: "a/b" },
      { connector: "a" },
      { type: "delivered" },
      { id: "x" },
      { cursor: "1.0.2" },
    ];
    const plan = async (q: Parameters<typeof eventFilter>[1], db: D1Database = env.DB) => {
      const { where, args } = eventFilter(TENANT, q);
      const { results } = await db.prepare(`EXPLAIN QUERY PLAN SELECT * FROM events WHERE ${where} ORDER BY at DESC, id DESC LIMIT 100`).bind(...args).all<{ detail: string }>();
      return results.map((r) => r.detail).join(" | ");
    };
    for (const q of cases) {
      const p = await plan(q);
      expect(p, JSON.stringify(q)).toMatch(/USING (COVERING )?INDEX events_by_/);
      expect(p, JSON.stringify(q)).not.toMatch(/SCAN events(?! USING)/);
    }
    // A route is its source plus its destination: the source's index.
    const route = await plan({ source: "a/b", routeDestination: "c/d" });
    expect(route).toMatch(/SEARCH events USING INDEX events_by_source \(tenant=\? AND source=\?\)/);
    expect(route).not.toMatch(/SCAN /);
    // The destination index holds only events that have one (migration 0012): a query by destination can
    // still be served by it (SQLite refuses INDEXED BY when the index's WHERE does not follow from the query's).
    for (const db of [env.DB, env.DB_EU]) {
      const { where, args } = eventFilter(TENANT, { destination: "a/b", from: 1 });
      const { results } = await db.prepare(`EXPLAIN QUERY PLAN SELECT * FROM events INDEXED BY events_by_destination WHERE ${where} ORDER BY at DESC, id DESC LIMIT 100`).bind(...args).all<{ detail: string }>();
      expect(results.map((r) => r.detail).join(" | ")).toMatch(/SEARCH events USING INDEX events_by_destination \(tenant=\? AND destination=\? AND at>\?\)/);
    }
    // A metadata field: found by key in event_fields, then each event by its id;
    // never a scan of events (or of their JSON). Both stores share the schema.
    for (const db of [env.DB, env.DB_EU]) {
      for (const q of [{ field: "filename:invoice.csv" }, { field: "filename:invoice.csv", from: 1, type: "accepted" as const }]) {
        const p = await plan(q, db);
        expect(p, JSON.stringify(q)).toMatch(/SEARCH event_fields USING PRIMARY KEY \(tenant=\? AND name=\? AND value=\?\)/);
        expect(p, JSON.stringify(q)).toMatch(/SEARCH events USING INTEGER PRIMARY KEY \(rowid=\?\)/);
        expect(p, JSON.stringify(q)).not.toMatch(/SCAN /);
      }
    }
  });

  it("keeps the field index in step with the log: written on insert, removed with purged rows and batches", async () => {
    // Batched lifecycle events: one field row per message (not per event), and one lookup row, both gone with the accepted batch.
    await traffic("fidx-a/out", 2, (i) => `fidx-a${i}.csv`);
    await traffic("fidx-b/out", 2, (i) => `fidx-b${i}.csv`);
    const fields = async (value: string) => (await env.DB.prepare("SELECT count(*) AS n FROM message_fields WHERE tenant = ? AND name = 'filename' AND value = ?").bind(TENANT, value).first<{ n: number }>())?.n;
    const lookups = async (chain: string) => (await env.DB.prepare("SELECT count(*) AS n FROM message_index WHERE chain = ?").bind(`${TENANT}:${chain}`).first<{ n: number }>())?.n;
    expect([await fields("fidx-a1.csv"), await fields("fidx-b2.csv"), await lookups("fidx-a/out")]).toEqual([1, 1, 2]);
    await env.DB.prepare("DELETE FROM event_batches WHERE chain = 'default:fidx-a/out'").run();
    expect([await fields("fidx-a1.csv"), await fields("fidx-a2.csv"), await lookups("fidx-a/out")]).toEqual([0, 0, 0]);
    expect([await fields("fidx-b1.csv"), await fields("fidx-b2.csv"), await lookups("fidx-b/out")]).toEqual([1, 1, 2]);
    // Rows of `events` (exceptions, and the log before batches): a trigger per row, as before.
    const row = (id: string) =>
      env.DB.prepare("INSERT INTO events (tenant, message_id, type, at, place, source, fields) VALUES (?, ?, 'expired', 5, 'edge', 'fidx-c/out', ?)").bind(TENANT, id, JSON.stringify({ filename: `${id}.csv` })).run();
    await row("fidx-c1");
    await row("fidx-c2");
    const indexed = async (value: string) => (await env.DB.prepare("SELECT count(*) AS n FROM event_fields WHERE tenant = ? AND name = 'filename' AND value = ?").bind(TENANT, value).first<{ n: number }>())?.n;
    expect(await indexed("fidx-c1.csv")).toBe(1);
    await env.DB.prepare("DELETE FROM events WHERE message_id = 'fidx-c1'").run();
    expect([await indexed("fidx-c1.csv"), await indexed("fidx-c2.csv")]).toEqual([0, 1]);
  });

  it("queries hosted egress attempts by type", async () => {
    await env.DB.prepare("INSERT INTO events (tenant, message_id, type, at, place, source, destination) VALUES (?, 'attempt-1-xxxxxxxx', 'attempt', 5, 'edge', 'att-a/out', 'saas/inbox')").bind(TENANT).run();
    const res = await get("/api/messages?type=attempt&source=att-a/out");
    expect(res.status, res.text).toBe(200);
    expect((JSON.parse(res.text) as { events: { type: string }[] }).events.map((e) => e.type)).toEqual(["attempt"]);
  });

  it("names the accepted formats when a time does not parse", async () => {
    for (const from of ["yesterday", "2026-13-01"]) {
      const res = await get(`/api/messages?from=${from}`);
      expect(res.status).toBe(400);
      expect(JSON.parse(res.text).detail).toBe("query: from: use an ISO time like 2026-11-25T08:00:00Z or a Unix time in ms");
    }
  });
});

describe("event log: fields a route records", () => {
  it("records only the channel fields the route names, everywhere in the log", async () => {
    const res = await SELF.fetch("http://edge.test/api/routes", {
      method: "POST",
      headers: { ...ADMIN, "content-type": "application/json" },
      body: JSON.stringify({ source: "fields-a/out", destination: "sink/in", fields: ["partnerRef"] }),
    });
    expect(res.status).toBe(201);
    expect(((await res.json()) as { route: { fields: string[] } }).route.fields).toEqual(["partnerRef"]);
    const stub = env.CHANNEL.get(env.CHANNEL.idFromName(`${TENANT}:fields-a/out`));
    const p = new TextEncoder().encode("x");
    await stub.publish({ tenant: TENANT, source: "fields-a/out", epoch: "epoch-aaaaaaaa", msgs: [{ seq: 1, id: "fields-1-xxxxxxxx", createdAt: 1, contentType: "text/plain", size: 1, sha256: "a".repeat(64), fields: { filename: "private-name.txt", partnerRef: "PO-9" } }], payloads: [p] });
    await flushLog(stub);
    const rows = await env.DB.prepare("SELECT fields FROM event_log WHERE source = 'fields-a/out'").all<{ fields: string }>();
    expect(rows.results.length).toBeGreaterThan(0);
    for (const r of rows.results) expect(JSON.parse(r.fields)).toEqual({ partnerRef: "PO-9" });
  });
});

describe("event log: retention per route", () => {
  it("keeps a source's rows as long as its longest route retention, never less than LOG_RETENTION_DAYS", async () => {
    const day = 86_400_000;
    const now = Date.now();
    // In chain order, oldest first: row `seq` at position 3 * seq - 2, then a batch of two.
    const insert = (source: string, seq: number, ageDays: number) =>
      env.DB.prepare("INSERT INTO events (tenant, message_id, type, at, place, source, chain, chain_seq, prev_hash, hash) VALUES (?, ?, 'accepted', ?, 'local', ?, ?, ?, 'x', ?)")
        .bind(TENANT, `rr-${source}-${seq}`, now - ageDays * day, source, `${TENANT}:${source}`, 3 * seq - 2, `h-${source}-${seq}`)
        .run();
    // A batch of two accepted events (positions 3 * seq - 1 and 3 * seq) with its messages' lookup rows.
    const batch = async (source: string, seq: number, ageDays: number) => {
      const chain = `${TENANT}:${source}`;
      const at = now - ageDays * day;
      const ids = [0, 1].map((i) => `rb-${source}-${seq}-${i}`);
      const events = ids.map((id, i) => [chain, 3 * seq - 1 + i, "x", TENANT, id, "accepted", at, "local", source, null, seq, 1, null, null, null, `h-${id}`]);
      await env.DB.prepare("INSERT INTO event_batches (chain, chain_seq, last_seq, tenant, source, type, at_lo, at_hi, mseq_lo, mseq_hi, n, events) VALUES (?, ?, ?, ?, ?, 'accepted', ?, ?, ?, ?, 2, ?)")
        .bind(chain, 3 * seq - 1, 3 * seq, TENANT, source, at, at, 2 * seq, 2 * seq + 1, JSON.stringify(events))
        .run();
      for (const [i, id] of ids.entries()) await env.DB.prepare("INSERT INTO message_index (tenant, message_id, chain, mseq) VALUES (?, ?, ?, ?)").bind(TENANT, id, chain, 2 * seq + i).run();
    };
    const route = async (source: string, retention?: string) => {
      const res = await SELF.fetch("http://edge.test/api/routes", {
        method: "POST",
        headers: { ...ADMIN, "content-type": "application/json" },
        body: JSON.stringify({ source, destination: "rr-sink/in", ...(retention ? { archive: true, retention } : {}) }),
      });
      expect(res.status).toBe(201);
    };
    // The floor is 400 days (wrangler.toml). A 1000-day route keeps 500-day-old rows;
    // a 10-day route does not shorten the floor; no route: the floor.
    await route("rr-long/out", "1000d");
    await route("rr-short/out", "10d");
    for (const source of ["rr-long/out", "rr-short/out", "rr-none/out"]) {
      await insert(source, 1, 1200);
      await insert(source, 2, 500);
      await insert(source, 3, 100);
      await batch(source, 1, 1200);
      await batch(source, 2, 500);
      await batch(source, 3, 100);
    }
    const total = async () => {
      let n = 0;
      for (const db of [env.DB, env.DB_EU]) n += (await db.prepare("SELECT count(*) AS n FROM event_log").first<{ n: number }>())?.n ?? 0;
      return n;
    };
    const before = await total();
    // The count is of events only (not the field-index rows the trigger removes with them).
    expect(await purgeLogRows(env, now)).toBe(before - (await total()));
    const left = await env.DB.prepare("SELECT message_id FROM events WHERE message_id LIKE 'rr-%' ORDER BY message_id").all<{ message_id: string }>();
    expect(left.results.map((r) => r.message_id)).toEqual(["rr-rr-long/out-2", "rr-rr-long/out-3", "rr-rr-none/out-3", "rr-rr-short/out-3"]);
    // Batches by the same rule, whole; a purged batch's messages are no longer found by id.
    const batches = await env.DB.prepare("SELECT source, mseq_lo FROM event_batches WHERE source LIKE 'rr-%' ORDER BY source, mseq_lo").all<{ source: string; mseq_lo: number }>();
    expect(batches.results.map((r) => `${r.source}:${r.mseq_lo / 2}`)).toEqual(["rr-long/out:2", "rr-long/out:3", "rr-none/out:3", "rr-short/out:3"]);
    const found = await env.DB.prepare("SELECT message_id FROM message_index WHERE message_id LIKE 'rb-%' AND message_id LIKE '%-0' ORDER BY message_id").all<{ message_id: string }>();
    expect(found.results.map((r) => r.message_id)).toEqual(["rb-rr-long/out-2-0", "rb-rr-long/out-3-0", "rb-rr-none/out-3-0", "rb-rr-short/out-3-0"]);
    const logged = await env.DB.prepare("SELECT detail FROM admin_log WHERE action = 'log.purge' ORDER BY id DESC LIMIT 1").first<{ detail: string }>();
    expect(JSON.parse(logged?.detail ?? "{}")).toMatchObject({ longer: [{ chain: "default:rr-long/out" }] });
  });

  it("purges a chain only from its start: an old event logged after a kept one stays, and the chain still verifies", async () => {
    const source = "ret-gap/out";
    const day = 86_400_000;
    const now = Date.now();
    const stub = env.CHANNEL.get(env.CHANNEL.idFromName(`${TENANT}:${source}`));
    await stub.configure(TENANT, source, [{ destination: "sink/in", ttlSeconds: 3600, protection: "none", archive: false }]);
    const msg = (seq: number, createdAt: number): PubMessage => ({ seq, id: `retgap-${seq}-xxxxxxxx`, createdAt, contentType: "text/plain", size: 1, sha256: "a".repeat(64) });
    const x = new TextEncoder().encode("x");
    // Captured 500 days ago and accepted now; then one captured 600 days ago at a site that was offline
    // since: its captured event is logged after the first message's accepted one, with its old time.
    // (Each publish flushed on its own: the late one arrives in a later flush.)
    for (const m of [msg(1, now - 500 * day), msg(2, now - 600 * day)]) {
      await stub.publish({ tenant: TENANT, source, epoch: "epoch-aaaaaaaa", msgs: [m], payloads: [x] });
      await flushLog(stub);
    }
    const log = async () => (await env.DB.prepare("SELECT chain_seq, type, message_id FROM event_log WHERE source = ? ORDER BY chain_seq").bind(source).all<{ chain_seq: number; type: string; message_id: string }>()).results.map((r) => `${r.chain_seq}:${r.type}:${r.message_id.split("-")[1]}`);
    expect(await log()).toEqual(["1:captured:1", "2:accepted:1", "3:captured:2", "4:accepted:2"]);

    // The floor is 400 days: both captured events are older, but only the first is at the chain's start.
    await purgeLogRows(env, now);
    expect(await log()).toEqual(["2:accepted:1", "3:captured:2", "4:accepted:2"]);
    const v = JSON.parse((await get(`/api/log/verify?source=${source}`)).text) as { ok: boolean; chains: { from: number; broken: unknown }[] };
    expect(v).toMatchObject({ ok: true, chains: [{ from: 2, broken: null }] });
  });
});

describe("event log: routes that log exceptions only", () => {
  const post = (body: unknown) => SELF.fetch("http://edge.test/api/routes", { method: "POST", headers: { ...ADMIN, "content-type": "application/json" }, body: JSON.stringify(body) });
  const message = (source: string, seq: number, extra: Partial<PubMessage> = {}): PubMessage => ({ seq, id: `${source.replace(/\W/g, "")}-${seq}-xxxxxxxx`, createdAt: 1, contentType: "text/plain", size: 1, sha256: "a".repeat(64), ...extra });
  const types = async (source: string) =>
    (await env.DB.prepare("SELECT type, destination FROM event_log WHERE source = ? ORDER BY chain_seq").bind(source).all<{ type: string; destination: string | null }>()).results.map((r) => `${r.type}${r.destination ? `>${r.destination}` : ""}`);

  it("names the accepted values, and can be set on a route and changed", async () => {
    const bad = await post({ source: "quiet-x/out", destination: "sink/in", log: "none" });
    expect(bad.status).toBe(400);
    expect(await bad.text()).toContain("log is 'full' (every message's lifecycle) or 'exceptions'");
    const res = await post({ source: "quiet-x/out", destination: "sink/in", log: "exceptions" });
    const route = ((await res.json()) as { route: { id: string; log: string } }).route;
    expect(route.log).toBe("exceptions");
    const patch = (body: unknown) => SELF.fetch(`http://edge.test/api/routes/${route.id}`, { method: "PATCH", headers: { ...ADMIN, "content-type": "application/json" }, body: JSON.stringify(body) });
    const patched = await patch({ log: "full" });
    expect(((await patched.json()) as { route: { log: string } }).route.log).toBe("full");
    // What the route was created with stays: the answer says how to change it instead, and nothing changes.
    const refused = await patch({ protection: "encrypt", log: "exceptions" });
    expect(refused.status).toBe(400);
    expect(await refused.text()).toContain("route: protection: protection cannot change on an existing route (what was sent kept to it); add a route with the new protection, then remove this one");
    expect((await patch({ region: "eu" })).status).toBe(400);
    const now = ((await (await SELF.fetch("http://edge.test/api/routes", { headers: ADMIN })).json()) as { routes: { id: string; log: string; protection: string }[] }).routes.find((r) => r.id === route.id);
    expect(now).toMatchObject({ log: "full", protection: "none" });
  });

  it("logs no lifecycle of its messages, but every exception, and leaves full routes from the same source complete", async () => {
    // One source, a full route and a quiet one: captured and accepted once, delivered only where the route is full.
    expect((await post({ source: "quiet-a/out", destination: "sink/full" })).status).toBe(201);
    expect((await post({ source: "quiet-a/out", destination: "sink/quiet", log: "exceptions" })).status).toBe(201);
    const mixed = env.CHANNEL.get(env.CHANNEL.idFromName(`${TENANT}:quiet-a/out`));
    const p = new TextEncoder().encode("x");
    expect(await mixed.publish({ tenant: TENANT, source: "quiet-a/out", epoch: "epoch-aaaaaaaa", msgs: [message("quiet-a/out", 1), message("quiet-a/out", 2)], payloads: [p, p] })).toMatchObject({ ok: true, accepted: 2 });
    expect(await mixed.ack(TENANT, "quiet-a/out", "sink/full", 2)).toMatchObject({ ok: true });
    expect(await mixed.ack(TENANT, "quiet-a/out", "sink/quiet", 2)).toMatchObject({ ok: true });
    await flushLog(mixed);
    expect(await types("quiet-a/out")).toEqual(["captured", "captured", "accepted", "accepted", "delivered>sink/full", "delivered>sink/full"]);

    // Every route quiet: nothing per message, but a refused message is still logged.
    expect((await post({ source: "quiet-b/out", destination: "sink/quiet", log: "exceptions", protection: "sign" })).status).toBe(201);
    const quiet = env.CHANNEL.get(env.CHANNEL.idFromName(`${TENANT}:quiet-b/out`));
    expect(await quiet.publish({ tenant: TENANT, source: "quiet-b/out", epoch: "epoch-aaaaaaaa", msgs: [message("quiet-b/out", 1, { protection: "sign", sig: "x.y.z" })], payloads: [p] })).toMatchObject({ ok: true, accepted: 1 });
    expect(await quiet.ack(TENANT, "quiet-b/out", "sink/quiet", 1)).toMatchObject({ ok: true });
    expect(await quiet.publish({ tenant: TENANT, source: "quiet-b/out", epoch: "epoch-aaaaaaaa", msgs: [message("quiet-b/out", 2)], payloads: [p] })).toMatchObject({ ok: false, code: "FORBIDDEN" });
    await flushLog(quiet);
    expect(await types("quiet-b/out")).toEqual(["rejected"]);
  });
});

describe("usage: what objects bill, measured", () => {
  it("counts a channel object's requests, SQLite rows and D1 rows, for the platform operator only", async () => {
    const source = "usage-a/out";
    expect((await SELF.fetch("http://edge.test/api/routes", { method: "POST", headers: { ...ADMIN, "content-type": "application/json" }, body: JSON.stringify({ source, destination: "sink/in" }) })).status).toBe(201);
    const stub = env.CHANNEL.get(env.CHANNEL.idFromName(`${TENANT}:${source}`));
    const before = JSON.parse((await get(`/api/debug/usage?source=${source}`)).text) as { channel: Record<string, number> };
    const p = new TextEncoder().encode("x");
    const msgs: PubMessage[] = Array.from({ length: 10 }, (_, i) => ({ seq: i + 1, id: `usage-${i + 1}-xxxxxxxx`, createdAt: 1, contentType: "text/plain", size: 1, sha256: "a".repeat(64) }));
    expect(await stub.publish({ tenant: TENANT, source, epoch: "epoch-aaaaaaaa", msgs, payloads: msgs.map(() => p) })).toMatchObject({ ok: true, accepted: 10 });
    expect(await stub.ack(TENANT, source, "sink/in", 10)).toMatchObject({ ok: true });
    await flushLog(stub);
    type Report = { channel: Record<string, number>; sessions: Record<string, Record<string, number>> };
    const read = async () => JSON.parse((await get(`/api/debug/usage?source=${source}&connector=usage-a`)).text) as Report;
    // The receipt goes to the sender's session after the ack returns (off the ack's path): wait for it, bounded.
    let after = await read();
    for (let i = 0; i < 200 && !after.sessions["usage-a"]?.requests; i++) {
      await new Promise((r) => setTimeout(r, 5));
      after = await read();
    }
    const d = (k: string) => (after.channel[k] ?? 0) - (before.channel[k] ?? 0);
    // Two RPCs (publish, ack); the batch's segment (2 rows) and its run (2 with its index entry) written and deleted, the cursor moved;
    // in D1, its thirty events as three batches (a row and a few index entries each) and one lookup row per message.
    expect(d("requests")).toBe(2);
    expect(d("sqlRowsWritten")).toBeGreaterThanOrEqual(2 * 2 + 2 * 2 + 1);
    expect(d("sqlRowsRead")).toBeGreaterThan(0);
    expect(d("d1RowsWritten")).toBeGreaterThanOrEqual(10 + 3);
    expect(d("d1RowsWritten")).toBeLessThanOrEqual(10 + 3 * 8);
    // The sender's session got the receipt (one RPC); no connector is connected, so no WebSocket messages.
    expect(after.sessions["usage-a"]).toMatchObject({ requests: 1, webSocketMessagesIn: 0 });

    const owner = (JSON.parse((await (await SELF.fetch("http://edge.test/api/tenants", { method: "POST", headers: { ...ADMIN, "content-type": "application/json" }, body: JSON.stringify({ id: "usage-t" }) })).text())) as { ownerToken: string }).ownerToken;
    const refused = await SELF.fetch(`http://edge.test/api/debug/usage?source=${source}`, { headers: { authorization: `Bearer ${owner}` } });
    expect(refused.status).toBe(403);
    const bad = await get("/api/debug/usage?source=not-an-address");
    expect(bad.status).toBe(400);
    expect(bad.text).toContain("usage: source:");
  });
});

describe("event log: batches (D21)", () => {
  type Page = { events: { id: number; messageId: string; type: string; at: number }[]; nextCursor: string | null };
  const all = async (q: string) => {
    const ids: number[] = [];
    let cursor: string | null = null;
    do {
      const p = JSON.parse((await get(`/api/messages?${q}&limit=97${cursor ? `&cursor=${cursor}` : ""}`)).text) as Page;
      ids.push(...p.events.map((e) => e.id));
      cursor = p.nextCursor;
    } while (cursor);
    return ids;
  };

  it("pages every event exactly once, newest first, across rows and batches whose times overlap and tie", async () => {
    // Capture times scattered (batches' ranges overlap), accept and delivery times shared by hundreds, acks in three parts.
    const source = "walk-a/out";
    await traffic(source, 1300, undefined, { createdAt: (i) => ((i * 7919) % 1000) + 1, frame: 400, acks: 3, flushEach: true });
    // Exceptions are rows of `events`, at times that tie with batched ones.
    for (const at of [1, 500, 500, 1000]) {
      await env.DB.prepare("INSERT INTO events (tenant, message_id, type, at, place, source, destination) VALUES (?, ?, 'expired', ?, 'edge', ?, 'sink/in')").bind(TENANT, `walk-x-${at}-${Math.random()}`, at, source).run();
    }
    expect((await env.DB.prepare("SELECT count(*) AS n FROM event_batches WHERE source = ?").bind(source).first<{ n: number }>())?.n).toBeGreaterThanOrEqual(10);
    const truth = async (where: string, ...args: (string | number)[]) =>
      (await env.DB.prepare(`SELECT id FROM event_log WHERE source = ? ${where} ORDER BY at DESC, id DESC`).bind(source, ...args).all<{ id: number }>()).results.map((r) => r.id);
    const everything = await truth("");
    expect(everything).toHaveLength(3 * 1300 + 4);
    expect(await all(`source=${source}`)).toEqual(everything);
    expect(await all(`source=${source}&type=captured`)).toEqual(await truth("AND type = 'captured'"));
    expect(await all(`source=${source}&from=200&to=700`)).toEqual(await truth("AND at >= 200 AND at < 700"));
    expect(await all(`connector=sink&source=${source}`)).toEqual(await truth("AND destination = 'sink/in'"));
  });

  it("traces a message by id and by field through its lookup row, with its rows of `events` too", async () => {
    const source = "trace-a/out";
    await traffic(source, 1000, (i) => `t-${i % 10}.csv`, { frame: 300, acks: 2 });
    const id = "traceaout-567-xxxxxxxx";
    await env.DB.prepare("INSERT INTO events (tenant, message_id, type, at, place, source, destination) VALUES (?, ?, 'attempt', 5, 'edge', ?, 'sink/in')").bind(TENANT, id, source).run();
    const trace = JSON.parse((await get(`/api/messages/${id}`)).text) as { events: { type: string; messageId: string; seq: number }[] };
    expect(trace.events.map((e) => e.type).sort()).toEqual(["accepted", "attempt", "captured", "delivered"]);
    expect(trace.events.every((e) => e.messageId === id)).toBe(true);
    expect(trace.events.filter((e) => e.type !== "attempt").map((e) => e.seq)).toEqual([567, 567, 567]);
    expect((await all(`id=${id}`)).length).toBe(4);
    // One in ten messages has this name: 100 messages, three events each, every one found, all with the name.
    const named = JSON.parse((await get("/api/messages?field=filename:t-7.csv&limit=1000")).text) as { events: { messageId: string; fields: { filename: string } }[] };
    expect(named.events).toHaveLength(300);
    expect(new Set(named.events.map((e) => e.messageId)).size).toBe(100);
    expect(named.events.every((e) => e.fields.filename === "t-7.csv")).toBe(true);
    expect(await all("field=filename:t-7.csv")).toEqual(named.events.map((e) => (e as unknown as { id: number }).id));
  });

  it("writes about one D1 row per message with the full log, in full frames", async () => {
    const perMessage = async (source: string, filename: (i: number) => string | null) => {
      expect((await SELF.fetch("http://edge.test/api/routes", { method: "POST", headers: { ...ADMIN, "content-type": "application/json" }, body: JSON.stringify({ source, destination: "sink/in" }) })).status).toBe(201);
      const usage = async () => (JSON.parse((await get(`/api/debug/usage?source=${source}`)).text) as { channel: { d1RowsWritten?: number } }).channel.d1RowsWritten ?? 0;
      const before = await usage();
      await traffic(source, 4096, filename, { frame: 1024, acks: 4 });
      return ((await usage()) - before) / 4096;
    };
    // Three events per message: one lookup row, and each batch's row and index entries shared by 1,024 (the target allows 1.1).
    const bare = await perMessage("cost-a/out", () => null);
    expect(bare).toBeGreaterThanOrEqual(1);
    expect(bare).toBeLessThan(1.05);
    // Each recorded field is one more row per message (its index for field search).
    const named = await perMessage("cost-b/out", (i) => `f-${i}.csv`);
    expect(named).toBeGreaterThanOrEqual(2);
    expect(named).toBeLessThan(2.05);
  });

  it("keeps an ack's signed receipt in its delivered batch, found from every delivered event it covers", async () => {
    // 5,000 messages in one ack: their delivered events fill more than one batch (1 MiB of JSON at most), the receipt ends the last.
    const source = "rcpt-a/out";
    const jws = "eyJhbGciOiJFZERTQSJ9.eyJtc2dzIjpbXX0.c2ln";
    await traffic(source, 5000, () => null, { frame: 1000, receipt: jws });
    const batches = await env.DB.prepare("SELECT n, json_extract(events, '$[#-1][2]') AS last FROM event_batches WHERE source = ? AND type = 'delivered' ORDER BY chain_seq").bind(source).all<{ n: number; last: string }>();
    expect(batches.results.length).toBeGreaterThan(1);
    expect(batches.results.reduce((t, b) => t + b.n, 0)).toBe(5001);
    expect(batches.results.map((b) => b.last)).toEqual([...Array(batches.results.length - 1).fill("delivered"), "receipt"]);
    expect((await env.DB.prepare("SELECT count(*) AS n FROM events WHERE source = ?").bind(source).first<{ n: number }>())?.n).toBe(0);
    for (const id of ["rcptaout-1-xxxxxxxx", "rcptaout-5000-xxxxxxxx"]) {
      const r = JSON.parse((await get(`/api/messages/${id}/receipt`)).text) as { receipts: { destination: string; signed: boolean; jws: string | null }[] };
      expect(r.receipts, id).toMatchObject([{ destination: "sink/in", signed: true, jws }]);
    }
    // Searching by type finds it where it is.
    const listed = JSON.parse((await get(`/api/messages?source=${source}&type=receipt`)).text) as { events: { type: string; destination: string }[] };
    expect(listed.events).toMatchObject([{ type: "receipt", destination: "sink/in" }]);
  });

  it("verifies a long chain page by page across batch boundaries, and finds a break deep inside it", async () => {
    // 2,500 messages in frames of 300, acked in three parts: 7,500 events in 20 batches, checked 1,000 at a time.
    await traffic("long-a/out", 2500, () => null, { frame: 300, acks: 3 });
    type Verified = { ok: boolean; chains: { events: number; from: number; to: number; broken: { chainSeq: number; reason: string } | null }[] };
    const verify = async () => JSON.parse((await get("/api/log/verify?source=long-a/out")).text) as Verified;
    expect(await verify()).toMatchObject({ ok: true, chains: [{ events: 7500, from: 1, to: 7500, broken: null }] });
    await env.DB.prepare("UPDATE event_batches SET events = json_set(events, '$[' || (5678 - chain_seq) || '][5]', 7) WHERE chain = 'default:long-a/out' AND chain_seq <= 5678 AND last_seq >= 5678").run();
    expect((await verify()).chains[0]?.broken).toMatchObject({ chainSeq: 5678, reason: expect.stringContaining("altered") });
  });

  it("counts the overview's accepted and delivered messages per minute from batches", async () => {
    const count = async () => {
      const v = JSON.parse((await get("/api/overview")).text) as { perMinute: { accepted: number; delivered: number; bytes: number }[] };
      return v.perMinute.reduce((t, m) => ({ accepted: t.accepted + m.accepted, delivered: t.delivered + m.delivered, bytes: t.bytes + m.bytes }), { accepted: 0, delivered: 0, bytes: 0 });
    };
    const before = await count();
    await traffic("minute-a/out", 120, undefined, { frame: 50 });
    const after = await count();
    // Payloads "m1".."m120": 9 of 2 bytes, 90 of 3, 21 of 4.
    expect({ accepted: after.accepted - before.accepted, delivered: after.delivered - before.delivered, bytes: after.bytes - before.bytes }).toEqual({ accepted: 120, delivered: 120, bytes: 9 * 2 + 90 * 3 + 21 * 4 });
  });

  it("reads batches by index: the walk, a message's lookup, a field's, and the purge (EXPLAIN QUERY PLAN)", async () => {
    const plan = async (sql: string, args: unknown[], db: D1Database = env.DB) =>
      (await db.prepare(`EXPLAIN QUERY PLAN ${sql}`).bind(...args).all<{ detail: string }>()).results.map((r) => r.detail).join(" | ");
    for (const db of [env.DB, env.DB_EU]) {
      for (const q of [{}, { from: 1, to: 2 }, { source: "a/b" }, { destination: "a/b" }, { type: "delivered" as const }, { source: "a/b", routeDestination: "c/d" }, { cursor: "1.0.2" }]) {
        const f = batchFilter(TENANT, q);
        const p = await plan(batchWalkSql(f.where, true, 8), [TENANT, ...f.args, 5, 7], db);
        expect(p, JSON.stringify(q)).toMatch(/SEARCH b?\s*(event_batches )?USING (COVERING )?INDEX event_batches_by_/);
        expect(p, JSON.stringify(q)).not.toMatch(/SCAN|TEMP B-TREE/);
      }
      const byId = await plan(messageLookupSql(1), [TENANT, "x", "delivered"], db);
      expect(byId).toMatch(/SEARCH k USING PRIMARY KEY \(tenant=\? AND message_id=\?\)/);
      expect(byId).toMatch(/SEARCH b USING INDEX event_batches_by_mseq \(chain=\? AND mseq_lo>\? AND mseq_lo<\?\)/);
      expect(byId).not.toMatch(/SCAN/);
      const byField = await plan(fieldLookupSql, [TENANT, "filename", "x"], db);
      expect(byField).toMatch(/SEARCH k USING PRIMARY KEY \(tenant=\? AND name=\? AND value=\?\)/);
      expect(byField).toMatch(/SEARCH b USING INDEX event_batches_by_mseq/);
      expect(byField).not.toMatch(/SCAN/);
      // Verification pages through a chain by position, both lookups on the unique index.
      const chain = await plan(chainBatchesSql, ["default:a/b", 1000], db);
      expect(chain.match(/SEARCH event_batches USING INDEX event_batches_chain \(chain=\? AND chain_seq[<>]\?\)/g)?.length, chain).toBe(2);
      expect(chain).not.toMatch(/SCAN|TEMP B-TREE/);
    }
  });
});
