import { env, evictDurableObject, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { decodeFrame, type DeliverFrame, type PubMessage } from "../../wire/index.ts";
import type { ChannelObject } from "./channel.ts";
import { decodeSegment } from "./segments.ts";

const TENANT = "t1";
let n = 0;

/** A fresh channel object per test: unique source address. */
function fresh() {
  const source = `src${++n}-${crypto.randomUUID().slice(0, 8)}/orders`;
  const stub = env.CHANNEL.get(env.CHANNEL.idFromName(`${TENANT}:${source}`));
  return { source, stub };
}

const route = (destination: string) => ({ destination, ttlSeconds: 3600, protection: "none", archive: false });

function msgs(from: number, to: number): { msgs: PubMessage[]; payloads: Uint8Array[] } {
  const out: PubMessage[] = [];
  const payloads: Uint8Array[] = [];
  for (let s = from; s <= to; s++) {
    const p = new TextEncoder().encode(`message ${s}`);
    out.push({ seq: s, id: `msg-${s}-xxxxxxxx`, createdAt: 1, contentType: "text/plain", size: p.byteLength, sha256: "0".repeat(64) });
    payloads.push(p);
  }
  return { msgs: out, payloads };
}

/** Seqs of the messages the object stores (read from its SQLite, not from its cache). */
async function stored(stub: DurableObjectStub<ChannelObject>): Promise<number[]> {
  return runInDurableObject(stub, (_obj, state) => {
    const out: number[] = [];
    const rows = state.storage.sql.exec<{ first_mseq: number; data: ArrayBuffer }>(
      "SELECT s.first_mseq, coalesce(s.data, d.data) AS data FROM segments s LEFT JOIN segment_data d ON d.first_mseq = s.first_mseq ORDER BY s.first_mseq",
    );
    for (const r of rows) {
      out.push(...decodeSegment(r.first_mseq, r.data).msgs.map((m) => m.seq));
    }
    return out;
  });
}

const usage = (stub: DurableObjectStub<ChannelObject>) => stub.usage();

/**
 * Flushes the event outbox and holds its next flush (until the object is
 * evicted): the rows a step writes are then counted without a flush's,
 * which would otherwise land in the count whenever the step took longer
 * than the flush's delay.
 */
const holdFlushes = (stub: DurableObjectStub<ChannelObject>) =>
  runInDurableObject(stub, async (obj) => {
    const events = (obj as unknown as { events: { flush(): Promise<void>; flushSoon(): void; soon: ReturnType<typeof setTimeout> | null } }).events;
    await events.flush();
    if (events.soon) clearTimeout(events.soon);
    events.soon = null;
    events.flushSoon = () => {};
  });

describe("channel object: storage", () => {
  it("stores a batch as one segment and queues it as one run per destination: well under a row written per message, end to end", async () => {
    const { source, stub } = fresh();
    await stub.configure(TENANT, source, [{ ...route("b/orders"), log: "exceptions" }]);
    const before = await usage(stub);
    // Two frames of 1,000, as a windowed sender sends them, each acknowledged in two cumulative acks.
    await stub.publish({ tenant: TENANT, source, epoch: "epoch-aaaaaaaa", ...msgs(1, 1000) });
    await stub.publish({ tenant: TENANT, source, epoch: "epoch-aaaaaaaa", ...msgs(1001, 2000) });
    for (const upTo of [500, 1000, 1500, 2000]) expect(await stub.ack(TENANT, source, "b/orders", upTo)).toEqual({ ok: true, acked: upTo });
    expect(await stored(stub)).toEqual([]);
    const after = await usage(stub);
    const perMessage = (after.sqlRowsWritten - before.sqlRowsWritten) / 2000;
    // A row per message (and more per destination) before segments: 7 per message.
    expect(perMessage).toBeLessThan(0.05);
    expect(perMessage).toBeGreaterThan(0);
  });

  it("keeps a segment's bytes in its count's row when one destination holds it, apart when several do; both read back after eviction and go when done", async () => {
    const one = fresh();
    const two = fresh();
    // Routes that log exceptions only: no outbox rows (nor flushes) among the rows counted.
    await one.stub.configure(TENANT, one.source, [{ ...route("b/orders"), log: "exceptions" }]);
    await two.stub.configure(TENANT, two.source, ["b/orders", "c/orders"].map((d) => ({ ...route(d), log: "exceptions" })));
    const layout = (stub: DurableObjectStub<ChannelObject>) =>
      runInDurableObject(stub, (_obj, state) => ({
        inline: state.storage.sql.exec<{ n: number }>("SELECT count(*) AS n FROM segments WHERE data IS NOT NULL").one().n,
        apart: state.storage.sql.exec<{ n: number }>("SELECT count(*) AS n FROM segment_data").one().n,
      }));
    for (const { source, stub } of [one, two]) {
      // (The first publish also records the stream's epoch.)
      await stub.publish({ tenant: TENANT, source, epoch: "epoch-aaaaaaaa", ...msgs(1, 1) });
      const before = await usage(stub);
      await stub.publish({ tenant: TENANT, source, epoch: "epoch-aaaaaaaa", ...msgs(2, 3) });
      const written = (await usage(stub)).sqlRowsWritten - before.sqlRowsWritten;
      // One destination: the segment row, the run and its index entry, the position row. Two: the bytes' row and a second run.
      expect(written).toBe(stub === one.stub ? 4 : 7);
      await evictDurableObject(stub);
    }
    expect(await layout(one.stub)).toEqual({ inline: 2, apart: 0 });
    expect(await layout(two.stub)).toEqual({ inline: 0, apart: 2 });
    // Read back from SQLite (the cache went with the eviction): the same messages, delivered in order.
    for (const { source, stub } of [one, two]) {
      expect(await stored(stub)).toEqual([1, 2, 3]);
      const delivered = await runInDurableObject(stub, async (obj) => {
        const got: [number, string][] = [];
        (obj as unknown as { session: () => unknown }).session = () => ({
          deliver: async (bytes: Uint8Array) => {
            const d = decodeFrame(bytes);
            (d.frame as DeliverFrame).msgs.forEach((m, i) => got.push([m.seq, new TextDecoder().decode(d.payloads[i])]));
            return true;
          },
          notify: async () => true,
        });
        await obj.attach(TENANT, source, ["b/orders"]);
        for (let i = 0; i < 500 && got.length < 3; i++) await new Promise((r) => setTimeout(r, 2));
        return got;
      });
      expect(delivered).toEqual([1, 2, 3].map((s) => [s, `message ${s}`]));
    }
    const before = await usage(one.stub);
    expect(await one.stub.ack(TENANT, one.source, "b/orders", 3)).toEqual({ ok: true, acked: 3 });
    // The cursor, two runs and two segments deleted: no bytes rows to delete.
    expect((await usage(one.stub)).sqlRowsWritten - before.sqlRowsWritten).toBe(5);
    expect(await stored(one.stub)).toEqual([]);
    await two.stub.ack(TENANT, two.source, "b/orders", 3);
    expect(await stored(two.stub)).toEqual([1, 2, 3]);
    await two.stub.ack(TENANT, two.source, "c/orders", 3);
    expect(await stored(two.stub)).toEqual([]);
    expect(await layout(one.stub)).toEqual({ inline: 0, apart: 0 });
    expect(await layout(two.stub)).toEqual({ inline: 0, apart: 0 });
  });

  it("cuts segments at their size and gives a claim check one of its own; delivery order and stream positions stay exact", async () => {
    const { source, stub } = fresh();
    await stub.configure(TENANT, source, [route("b/orders")]);
    const batch = msgs(1, 5);
    // Three of 400 KiB share a segment up to 1 MiB, so the third starts a second one.
    for (const i of [0, 1, 2]) {
      batch.payloads[i] = new Uint8Array(400 * 1024).fill(i + 1);
      (batch.msgs[i] as PubMessage).size = 400 * 1024;
    }
    await stub.publish({ tenant: TENANT, source, epoch: "epoch-aaaaaaaa", ...batch });
    const layout = await runInDurableObject(stub, (_obj, state) => ({
      segments: state.storage.sql.exec<{ first_mseq: number; count: number; refs: number }>("SELECT * FROM segments ORDER BY first_mseq").toArray(),
      runs: state.storage.sql.exec<{ start_dseq: number; end_dseq: number; mseq: number }>("SELECT start_dseq, end_dseq, mseq FROM runs ORDER BY end_dseq").toArray(),
    }));
    expect(layout.segments.map((s) => [s.first_mseq, s.count, s.refs])).toEqual([[1, 2, 1], [3, 3, 1]]);
    expect(layout.runs.map((r) => [r.start_dseq, r.end_dseq, r.mseq])).toEqual([[1, 2, 1], [3, 5, 3]]);
    const frames = await runInDurableObject(stub, async (obj) => {
      const got: DeliverFrame[] = [];
      const payloads: Uint8Array[] = [];
      (obj as unknown as { session: () => unknown }).session = () => ({
        deliver: async (bytes: Uint8Array) => {
          const d = decodeFrame(bytes);
          got.push(d.frame as DeliverFrame);
          payloads.push(...d.payloads);
          return true;
        },
        notify: async () => true,
      });
      await obj.attach(TENANT, source, ["b/orders"]);
      for (let i = 0; i < 500 && got.flatMap((f) => f.msgs).length < 5; i++) await new Promise((r) => setTimeout(r, 2));
      return { msgs: got.flatMap((f) => f.msgs.map((m) => [m.dseq, m.seq])), sizes: payloads.map((p) => [p.byteLength, p[0]]) };
    });
    expect(frames.msgs).toEqual([[1, 1], [2, 2], [3, 3], [4, 4], [5, 5]]);
    expect(frames.sizes.slice(0, 3)).toEqual([[400 * 1024, 1], [400 * 1024, 2], [400 * 1024, 3]]);
    // Acknowledged to the middle of the second segment: the first goes, the second stays whole.
    await stub.ack(TENANT, source, "b/orders", 4);
    expect(await stored(stub)).toEqual([3, 4, 5]);
    expect((await stub.status()).streams[0]).toMatchObject({ acked: 4, queued: 1 });
  });

  it("counts envelopes into a segment's size: a batch of large fields and signatures is cut well under the 2 MB row limit", async () => {
    const { source, stub } = fresh();
    await stub.configure(TENANT, source, [route("b/orders")]);
    const batch = msgs(1, 400);
    for (const m of batch.msgs) m.fields = { note: "n".repeat(4000) };
    expect(await stub.publish({ tenant: TENANT, source, epoch: "epoch-aaaaaaaa", ...batch })).toMatchObject({ ok: true, accepted: 400 });
    const rows = await runInDurableObject(stub, (_obj, state) =>
      state.storage.sql.exec<{ n: number; bytes: number }>("SELECT count(*) AS n, max(length(coalesce(s.data, d.data))) AS bytes FROM segments s LEFT JOIN segment_data d ON d.first_mseq = s.first_mseq").one(),
    );
    expect(rows.n).toBeGreaterThanOrEqual(2);
    expect(rows.bytes).toBeLessThan(1.2 * 1024 * 1024);
    expect(await stored(stub)).toEqual(Array.from({ length: 400 }, (_, i) => i + 1));
  });

  it("pushes a backlog that arrived one message at a time in full frames (a run per message, 512 to a frame)", async () => {
    const { source, stub } = fresh();
    await stub.configure(TENANT, source, [route("b/orders")]);
    for (let s = 1; s <= 600; s++) await stub.publish({ tenant: TENANT, source, epoch: "epoch-aaaaaaaa", ...msgs(s, s) });
    const frames = await runInDurableObject(stub, async (obj) => {
      const sizes: number[] = [];
      (obj as unknown as { session: () => unknown }).session = () => ({
        deliver: async (bytes: Uint8Array) => {
          sizes.push((decodeFrame(bytes).frame as DeliverFrame).msgs.length);
          return true;
        },
        notify: async () => true,
      });
      await obj.attach(TENANT, source, ["b/orders"]);
      for (let i = 0; i < 500 && sizes.reduce((a, b) => a + b, 0) < 600; i++) await new Promise((r) => setTimeout(r, 2));
      return sizes;
    });
    expect(frames).toEqual([512, 88]);
  });

  it("moves an object's messages stored a row each (before segments) into segments, and delivers them exactly as before", async () => {
    const { source, stub } = fresh();
    await stub.configure(TENANT, source, [route("b/orders"), route("c/orders")]);
    await runInDurableObject(stub, (_obj, state) => {
      const sql = state.storage.sql;
      // The old schema, with three messages: 1 acknowledged by b, 2 dead for c, 3 waiting for both.
      sql.exec(`CREATE TABLE messages (mseq INTEGER PRIMARY KEY, id TEXT NOT NULL, seq INTEGER NOT NULL, created_at INTEGER NOT NULL,
        accepted_at INTEGER NOT NULL, expires_at INTEGER, content_type TEXT NOT NULL, size INTEGER NOT NULL,
        sha256 TEXT NOT NULL, fields TEXT, payload BLOB NOT NULL, pending INTEGER NOT NULL, protection TEXT, sig TEXT, blob TEXT)`);
      sql.exec("CREATE TABLE outq (destination TEXT NOT NULL, dseq INTEGER NOT NULL, mseq INTEGER NOT NULL, expires_at INTEGER NOT NULL, PRIMARY KEY (destination, dseq)) WITHOUT ROWID");
      for (const s of [1, 2, 3]) {
        sql.exec("INSERT INTO messages VALUES (?, ?, ?, 1, 2, NULL, 'text/plain', 9, ?, ?, ?, 1, 'none', NULL, NULL)", s, `msg-${s}-xxxxxxxx`, s, "0".repeat(64), s === 3 ? '{"filename":"c.txt"}' : null, new TextEncoder().encode(`message ${s}`).buffer);
      }
      const far = Date.now() + 3_600_000;
      sql.exec("INSERT INTO outq VALUES ('c/orders', 1, 1, ?), ('b/orders', 2, 2, ?), ('b/orders', 3, 3, ?), ('c/orders', 3, 3, ?)", far, far, far, far);
      sql.exec("INSERT INTO dead_letters VALUES ('c/orders', 2, 2, 'expired', 5)");
      sql.exec("UPDATE cursors SET next_dseq = 4, acked = CASE destination WHEN 'b/orders' THEN 1 ELSE 0 END");
    });
    await evictDurableObject(stub);
    expect(await stored(stub)).toEqual([1, 2, 3]);
    expect((await stub.deadLetters(TENANT, source)).map((d) => [d.destination, d.seq])).toEqual([["c/orders", 2]]);
    expect(await stub.ack(TENANT, source, "b/orders", 3)).toEqual({ ok: true, acked: 3 });
    expect(await stored(stub)).toEqual([1, 2, 3]);
    expect(await stub.ack(TENANT, source, "c/orders", 3)).toEqual({ ok: true, acked: 3 });
    // 1 and 3 are done everywhere; 2 stays for its dead letter.
    expect(await stored(stub)).toEqual([2]);
    expect(await stub.handleDeadLetters(TENANT, source, "discard")).toBe(1);
    expect(await stored(stub)).toEqual([]);
  });
});

describe("channel object: accepting", () => {
  it("refuses to accept without a route, stores nothing, and logs each refused message once", async () => {
    const { source, stub } = fresh();
    const res = await stub.publish({ tenant: TENANT, source, epoch: "epoch-aaaaaaaa", ...msgs(1, 2) });
    expect(res).toMatchObject({ ok: false, code: "NO_ROUTE" });
    await stub.publish({ tenant: TENANT, source, epoch: "epoch-aaaaaaaa", ...msgs(1, 3) });
    expect(await stored(stub)).toEqual([]);
    await runInDurableObject(stub, (obj) => (obj as unknown as { events: { flush(): Promise<void> } }).events.flush());
    const { results } = await env.DB.prepare("SELECT seq, detail FROM events WHERE source = ? AND type = 'rejected' ORDER BY seq").bind(source).all<{ seq: number; detail: string }>();
    expect(results.map((r) => r.seq)).toEqual([1, 2, 3]);
    expect(JSON.parse(results[0]?.detail as string)).toMatchObject({ code: "NO_ROUTE" });
  });

  it("accepts each sequence exactly once: a replayed batch is acknowledged but not stored again", async () => {
    const { source, stub } = fresh();
    await stub.configure(TENANT, source, [route("b/orders")]);
    const first = await stub.publish({ tenant: TENANT, source, epoch: "epoch-aaaaaaaa", ...msgs(1, 3) });
    expect(first).toEqual({ ok: true, upTo: 3, accepted: 3, duplicates: 0 });
    const replay = await stub.publish({ tenant: TENANT, source, epoch: "epoch-aaaaaaaa", ...msgs(1, 3) });
    expect(replay).toEqual({ ok: true, upTo: 3, accepted: 0, duplicates: 3 });
    const overlap = await stub.publish({ tenant: TENANT, source, epoch: "epoch-aaaaaaaa", ...msgs(2, 5) });
    expect(overlap).toEqual({ ok: true, upTo: 5, accepted: 2, duplicates: 2 });
    expect(await stored(stub)).toEqual([1, 2, 3, 4, 5]);
  });

  it("stops at a gap and says where to resend from; nothing after the gap is stored", async () => {
    const { source, stub } = fresh();
    await stub.configure(TENANT, source, [route("b/orders")]);
    await stub.publish({ tenant: TENANT, source, epoch: "epoch-aaaaaaaa", ...msgs(1, 2) });
    const a = msgs(3, 3);
    const b = msgs(5, 6);
    const res = await stub.publish({ tenant: TENANT, source, epoch: "epoch-aaaaaaaa", msgs: [...a.msgs, ...b.msgs], payloads: [...a.payloads, ...b.payloads] });
    expect(res).toMatchObject({ ok: true, upTo: 3, accepted: 1, gap: { expected: 4 } });
    expect(await stored(stub)).toEqual([1, 2, 3]);
  });

  it("keeps dedup state across eviction (hibernation) of the object", async () => {
    const { source, stub } = fresh();
    await stub.configure(TENANT, source, [route("b/orders")]);
    await stub.publish({ tenant: TENANT, source, epoch: "epoch-aaaaaaaa", ...msgs(1, 4) });
    await evictDurableObject(stub);
    const replay = await stub.publish({ tenant: TENANT, source, epoch: "epoch-aaaaaaaa", ...msgs(3, 5) });
    expect(replay).toEqual({ ok: true, upTo: 5, accepted: 1, duplicates: 2 });
    expect(await stored(stub)).toEqual([1, 2, 3, 4, 5]);
  });

  it("accepts one message at a time to three destinations with one position row: its segment's two rows, a run and its index entry per destination, and the position", async () => {
    const { source, stub } = fresh();
    await stub.configure(TENANT, source, ["b/orders", "c/orders", "d/orders"].map((d) => ({ ...route(d), log: "exceptions" })));
    await stub.publish({ tenant: TENANT, source, epoch: "epoch-aaaaaaaa", ...msgs(1, 1) });
    const before = await usage(stub);
    expect(await stub.publish({ tenant: TENANT, source, epoch: "epoch-aaaaaaaa", ...msgs(2, 2) })).toMatchObject({ ok: true, accepted: 1 });
    // 2 + 3 x 2 + 1; with a meta key per number (each replaced: two rows) and a cursor row per destination it was 2 + 6 + 4 + 3.
    expect((await usage(stub)).sqlRowsWritten - before.sqlRowsWritten).toBe(9);
  });

  it("keeps every stream's position across eviction, and moves an older object's position keys into the position row", async () => {
    const { source, stub } = fresh();
    await stub.configure(TENANT, source, [route("b/orders"), route("c/orders")]);
    await stub.publish({ tenant: TENANT, source, epoch: "epoch-aaaaaaaa", ...msgs(1, 3) });
    // As an object from before the position row left it: a key per number, each destination's next position in its cursor row.
    await runInDurableObject(stub, (_obj, state) => {
      state.storage.sql.exec("DELETE FROM meta WHERE k = 'pos'");
      state.storage.sql.exec("INSERT INTO meta (k, v) VALUES ('hwm', '3'), ('next_mseq', '4')");
      state.storage.sql.exec("UPDATE cursors SET next_dseq = 4");
    });
    await evictDurableObject(stub);
    expect(await stub.publish({ tenant: TENANT, source, epoch: "epoch-aaaaaaaa", ...msgs(3, 4) })).toEqual({ ok: true, upTo: 4, accepted: 1, duplicates: 1 });
    const keys = await runInDurableObject(stub, (_obj, state) => state.storage.sql.exec<{ k: string }>("SELECT k FROM meta WHERE k IN ('pos', 'hwm', 'next_mseq')").toArray().map((r) => r.k));
    expect(keys).toEqual(["pos"]);
    // A cursor row behind the position row (as one written before it) does not move a stream back.
    await runInDurableObject(stub, (_obj, state) => state.storage.sql.exec("UPDATE cursors SET next_dseq = 1"));
    await evictDurableObject(stub);
    expect(await stub.publish({ tenant: TENANT, source, epoch: "epoch-aaaaaaaa", ...msgs(5, 5) })).toEqual({ ok: true, upTo: 5, accepted: 1, duplicates: 0 });
    const runs = await runInDurableObject(stub, (_obj, state) =>
      state.storage.sql.exec<{ destination: string; start_dseq: number; end_dseq: number; mseq: number }>("SELECT destination, start_dseq, end_dseq, mseq FROM runs ORDER BY destination, start_dseq").toArray().map((r) => ({ ...r })),
    );
    expect(runs).toEqual(
      ["b/orders", "c/orders"].flatMap((destination) => [
        { destination, start_dseq: 1, end_dseq: 3, mseq: 1 },
        { destination, start_dseq: 4, end_dseq: 4, mseq: 4 },
        { destination, start_dseq: 5, end_dseq: 5, mseq: 5 },
      ]),
    );
    expect(await stub.ack(TENANT, source, "b/orders", 5)).toEqual({ ok: true, acked: 5 });
    expect(await stored(stub)).toEqual([1, 2, 3, 4, 5]);
    expect(await stub.ack(TENANT, source, "c/orders", 5)).toEqual({ ok: true, acked: 5 });
    expect(await stored(stub)).toEqual([]);
  });

  it("starts a new stream for a new spool epoch and refuses the retired one", async () => {
    const { source, stub } = fresh();
    await stub.configure(TENANT, source, [route("b/orders")]);
    await stub.publish({ tenant: TENANT, source, epoch: "epoch-old-aaaa", ...msgs(1, 3) });
    const notFromOne = await stub.publish({ tenant: TENANT, source, epoch: "epoch-new-bbbb", ...msgs(2, 2) });
    expect(notFromOne).toMatchObject({ ok: false, code: "STALE_EPOCH" });
    const renewed = await stub.publish({ tenant: TENANT, source, epoch: "epoch-new-bbbb", ...msgs(1, 2) });
    expect(renewed).toMatchObject({ ok: true, upTo: 2, accepted: 2 });
    const stale = await stub.publish({ tenant: TENANT, source, epoch: "epoch-old-aaaa", ...msgs(4, 4) });
    expect(stale).toMatchObject({ ok: false, code: "STALE_EPOCH" });
  });
});

describe("channel object: acknowledging and fan-out", () => {
  it("rejects acks for streams it does not have and for messages never sent", async () => {
    const { source, stub } = fresh();
    await stub.configure(TENANT, source, [route("b/orders")]);
    await stub.publish({ tenant: TENANT, source, epoch: "epoch-aaaaaaaa", ...msgs(1, 2) });
    expect(await stub.ack(TENANT, source, "c/orders", 1)).toMatchObject({ ok: false, code: "UNKNOWN_STREAM" });
    expect(await stub.ack(TENANT, source, "b/orders", 3)).toMatchObject({ ok: false, code: "BAD_ACK" });
    expect(await stored(stub)).toEqual([1, 2]);
  });

  it("keeps a message until every destination acknowledged it; each destination has its own sequence", async () => {
    const { source, stub } = fresh();
    await stub.configure(TENANT, source, [route("b/orders"), route("c/orders")]);
    await stub.publish({ tenant: TENANT, source, epoch: "epoch-aaaaaaaa", ...msgs(1, 3) });
    expect(await stub.ack(TENANT, source, "b/orders", 3)).toEqual({ ok: true, acked: 3 });
    expect(await stored(stub)).toEqual([1, 2, 3]);
    expect(await stub.ack(TENANT, source, "c/orders", 2)).toEqual({ ok: true, acked: 2 });
    // The batch is stored as one segment: it goes when every message of it is done.
    expect(await stored(stub)).toEqual([1, 2, 3]);
    expect((await stub.status()).streams.find((s) => s.destination === "c/orders")).toMatchObject({ acked: 2, queued: 1 });
    expect(await stub.ack(TENANT, source, "c/orders", 3)).toEqual({ ok: true, acked: 3 });
    expect(await stored(stub)).toEqual([]);
    // A stale (lower) ack changes nothing.
    expect(await stub.ack(TENANT, source, "c/orders", 1)).toEqual({ ok: true, acked: 3 });
    const st = await stub.status();
    expect(st.streams.find((s) => s.destination === "b/orders")).toMatchObject({ acked: 3, queued: 0 });
    expect(st.streams.find((s) => s.destination === "c/orders")).toMatchObject({ acked: 3, queued: 0 });
  });

  it("logs captured, accepted and delivered events to D1 through its outbox", async () => {
    const { source, stub } = fresh();
    await stub.configure(TENANT, source, [route("b/orders")]);
    await stub.publish({ tenant: TENANT, source, epoch: "epoch-aaaaaaaa", ...msgs(1, 2) });
    await stub.ack(TENANT, source, "b/orders", 2);
    await runInDurableObject(stub, (obj) => (obj as unknown as { events: { flush(): Promise<void> } }).events.flush());
    // Chained type by type within each staged group (D21), every event once.
    const { results } = await env.DB.prepare("SELECT type, seq, destination, chain_seq FROM event_log WHERE source = ? ORDER BY chain_seq").bind(source).all();
    expect(results).toEqual([
      { type: "captured", seq: 1, destination: null, chain_seq: 1 },
      { type: "captured", seq: 2, destination: null, chain_seq: 2 },
      { type: "accepted", seq: 1, destination: null, chain_seq: 3 },
      { type: "accepted", seq: 2, destination: null, chain_seq: 4 },
      { type: "delivered", seq: 1, destination: "b/orders", chain_seq: 5 },
      { type: "delivered", seq: 2, destination: "b/orders", chain_seq: 6 },
    ]);
    // As three batches (one D1 row each, not one per event) and one lookup row per message.
    const batches = await env.DB.prepare("SELECT type, chain_seq, last_seq, mseq_lo, mseq_hi, n FROM event_batches WHERE source = ? ORDER BY chain_seq").bind(source).all();
    expect(batches.results).toEqual([
      { type: "captured", chain_seq: 1, last_seq: 2, mseq_lo: 1, mseq_hi: 2, n: 2 },
      { type: "accepted", chain_seq: 3, last_seq: 4, mseq_lo: 1, mseq_hi: 2, n: 2 },
      { type: "delivered", chain_seq: 5, last_seq: 6, mseq_lo: 1, mseq_hi: 2, n: 2 },
    ]);
    expect((await env.DB.prepare("SELECT count(*) AS n FROM events WHERE source = ?").bind(source).first<{ n: number }>())?.n).toBe(0);
    expect((await env.DB.prepare("SELECT mseq FROM message_index WHERE chain = ? ORDER BY mseq").bind(`${TENANT}:${source}`).all()).results).toEqual([{ mseq: 1 }, { mseq: 2 }]);
  });

  it("stages a transaction's events in one outbox row written once: an outbox from before (AUTOINCREMENT) keeps its rows, and is made again once empty", async () => {
    const { source, stub } = fresh();
    await stub.configure(TENANT, source, [route("b/orders")]);
    await stub.publish({ tenant: TENANT, source, epoch: "epoch-aaaaaaaa", ...msgs(1, 1) });
    await holdFlushes(stub);
    const before = await usage(stub);
    await stub.publish({ tenant: TENANT, source, epoch: "epoch-aaaaaaaa", ...msgs(2, 2) });
    // Its segment (its bytes in the same row: it is held once), the run and its index entry, the position row, the outbox row: no counter row beside it.
    expect((await usage(stub)).sqlRowsWritten - before.sqlRowsWritten).toBe(5);
    const outbox = () => runInDurableObject(stub, (_obj, state) => state.storage.sql.exec<{ sql: string }>("SELECT sql FROM sqlite_master WHERE name = 'event_outbox'").one().sql);
    // As an object from before left it: the same rows waiting, in a table made with AUTOINCREMENT.
    await runInDurableObject(stub, (_obj, state) => {
      state.storage.sql.exec(`ALTER TABLE event_outbox RENAME TO outbox_was;
        CREATE TABLE event_outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, event TEXT NOT NULL);
        INSERT INTO event_outbox (id, event) SELECT id, event FROM outbox_was;
        DROP TABLE outbox_was;`);
    });
    await evictDurableObject(stub);
    await stub.ack(TENANT, source, "b/orders", 2);
    expect(await outbox()).toContain("AUTOINCREMENT");
    await runInDurableObject(stub, (obj) => (obj as unknown as { events: { flush(): Promise<void> } }).events.flush());
    await evictDurableObject(stub);
    await stub.publish({ tenant: TENANT, source, epoch: "epoch-aaaaaaaa", ...msgs(3, 3) });
    expect(await outbox()).not.toContain("AUTOINCREMENT");
    await runInDurableObject(stub, (obj) => (obj as unknown as { events: { flush(): Promise<void> } }).events.flush());
    const { results } = await env.DB.prepare("SELECT type, seq FROM event_log WHERE source = ? ORDER BY chain_seq").bind(source).all();
    // The first message's events flushed before the count; then the rows left in the old table, then the new table's.
    expect(results).toEqual([
      { type: "captured", seq: 1 },
      { type: "accepted", seq: 1 },
      { type: "captured", seq: 2 },
      { type: "accepted", seq: 2 },
      ...[1, 2].map((seq) => ({ type: "delivered", seq })),
      { type: "captured", seq: 3 },
      { type: "accepted", seq: 3 },
    ]);
  });
});

describe("channel object: time to live and dead letters", () => {
  async function expiredAfterTtl(stub: DurableObjectStub<ChannelObject>, source: string) {
    // The TTL is one second of real time: wait for the alarm to have expired them (bounded).
    const deadline = Date.now() + 10_000;
    for (;;) {
      await runDurableObjectAlarm(stub);
      const dead = await stub.deadLetters(TENANT, source);
      if (dead.length > 0 || Date.now() > deadline) return dead;
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  it("expires undelivered messages into dead letters, logs them, and leaves other destinations alone", async () => {
    const { source, stub } = fresh();
    await stub.configure(TENANT, source, [{ ...route("slow/orders"), ttlSeconds: 1 }, route("fast/orders")]);
    await stub.publish({ tenant: TENANT, source, epoch: "epoch-aaaaaaaa", ...msgs(1, 3) });
    const dead = await expiredAfterTtl(stub, source);
    expect(dead.map((d) => [d.destination, d.seq, d.reason])).toEqual([
      ["slow/orders", 1, "expired"],
      ["slow/orders", 2, "expired"],
      ["slow/orders", 3, "expired"],
    ]);
    const st = await stub.status();
    expect(st.streams.find((s) => s.destination === "fast/orders")).toMatchObject({ queued: 3 });
    // The fast destination still gets and acknowledges all three; the payloads stay for the dead letters.
    expect(await stub.ack(TENANT, source, "fast/orders", 3)).toEqual({ ok: true, acked: 3 });
    expect(await stored(stub)).toEqual([1, 2, 3]);
    await runInDurableObject(stub, (obj) => (obj as unknown as { events: { flush(): Promise<void> } }).events.flush());
    const { results } = await env.DB.prepare("SELECT count(*) AS n FROM events WHERE source = ? AND type = 'expired'").bind(source).all<{ n: number }>();
    expect(results[0]?.n).toBe(3);
  });

  it("expires only what is left of a batch acknowledged in part; its segment stays for the dead letters, then goes", async () => {
    const { source, stub } = fresh();
    await stub.configure(TENANT, source, [{ ...route("b/orders"), ttlSeconds: 1 }]);
    await stub.publish({ tenant: TENANT, source, epoch: "epoch-aaaaaaaa", ...msgs(1, 3) });
    expect(await stub.ack(TENANT, source, "b/orders", 1)).toEqual({ ok: true, acked: 1 });
    const dead = await expiredAfterTtl(stub, source);
    expect(dead.map((d) => [d.seq, d.reason])).toEqual([[2, "expired"], [3, "expired"]]);
    expect((await stub.status()).streams[0]).toMatchObject({ acked: 1, queued: 0 });
    expect(await stored(stub)).toEqual([1, 2, 3]);
    expect(await stub.handleDeadLetters(TENANT, source, "discard", "b/orders", ["msg-2-xxxxxxxx"])).toBe(1);
    expect(await stored(stub)).toEqual([1, 2, 3]);
    expect(await stub.handleDeadLetters(TENANT, source, "discard")).toBe(1);
    expect(await stored(stub)).toEqual([]);
  });

  it("re-drives dead letters to the end of the stream with a fresh TTL, and discards them on request", async () => {
    const { source, stub } = fresh();
    await stub.configure(TENANT, source, [{ ...route("b/orders"), ttlSeconds: 1 }]);
    await stub.publish({ tenant: TENANT, source, epoch: "epoch-aaaaaaaa", ...msgs(1, 2) });
    await expiredAfterTtl(stub, source);
    await stub.configure(TENANT, source, [route("b/orders")]);
    const first = (await stub.deadLetters(TENANT, source))[0];
    expect(await stub.handleDeadLetters(TENANT, source, "redrive", "b/orders", [first?.id as string])).toBe(1);
    const outq = await runInDurableObject(stub, (_o, state) => state.storage.sql.exec<{ dseq: number }>("SELECT end_dseq AS dseq FROM runs ORDER BY end_dseq").toArray().map((r) => r.dseq));
    expect(outq).toEqual([3]);
    expect(await stub.handleDeadLetters(TENANT, source, "discard")).toBe(1);
    expect(await stub.deadLetters(TENANT, source)).toEqual([]);
    expect(await stub.ack(TENANT, source, "b/orders", 3)).toEqual({ ok: true, acked: 3 });
    expect(await stored(stub)).toEqual([]);
  });
});

describe("channel object: pushing", () => {
  it("honours a resend that arrives while a push is on its way (the pump does not run past the rewind)", async () => {
    const { source, stub } = fresh();
    await stub.configure(TENANT, source, [route("b/orders")]);
    const pushes = await runInDurableObject(stub, async (obj) => {
      // The destination's session, held at its second push until the resend is in.
      const pushed: [number, number][] = [];
      let release = () => {};
      const held = new Promise<void>((r) => (release = r));
      (obj as unknown as { session: () => unknown }).session = () => ({
        deliver: async (bytes: Uint8Array) => {
          const f = decodeFrame(bytes).frame as DeliverFrame;
          pushed.push([f.msgs[0]?.dseq ?? 0, f.msgs[f.msgs.length - 1]?.dseq ?? 0]);
          if (pushed.length === 2) await held;
          return true;
        },
        notify: async () => true,
      });
      await obj.publish({ tenant: TENANT, source, epoch: "epoch-aaaaaaaa", ...msgs(1, 1100) });
      for (let i = 0; i < 500 && pushed.length < 2; i++) await new Promise((r) => setTimeout(r, 2));
      expect(pushed.length).toBe(2);
      // The receiver lost the first push: it asks again from 100 while the second is still on its way.
      await obj.resend(TENANT, source, "b/orders", 100);
      release();
      for (let i = 0; i < 500 && !pushed.some(([from]) => from === 100); i++) await new Promise((r) => setTimeout(r, 2));
      return pushed;
    });
    expect(pushes.slice(0, 2)).toEqual([[1, 512], [513, 1024]]);
    expect(pushes.map(([from]) => from)).toContain(100);
  });
});
