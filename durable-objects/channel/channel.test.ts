import { env, evictDurableObject, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { decodeFrame, type DeliverFrame, type PubMessage } from "../../wire/index.ts";
import type { ChannelObject } from "./channel.ts";

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

async function stored(stub: DurableObjectStub<ChannelObject>): Promise<number[]> {
  return runInDurableObject(stub, (_obj, state) =>
    state.storage.sql.exec<{ seq: number }>("SELECT seq FROM messages ORDER BY mseq").toArray().map((r) => r.seq),
  );
}

describe("channel object: storage plans", () => {
  it("finds the messages every destination is done with through an index, never by scanning rows that carry payloads", async () => {
    const { source, stub } = fresh();
    await stub.configure(TENANT, source, [route("b/orders")]);
    const plan = await runInDurableObject(stub, (_obj, state) =>
      state.storage.sql.exec<{ detail: string }>("EXPLAIN QUERY PLAN DELETE FROM messages WHERE pending <= 0 AND mseq NOT IN (SELECT mseq FROM dead_letters)").toArray().map((r) => r.detail),
    );
    expect(plan.join("\n")).toMatch(/messages_done/);
    expect(plan.join("\n")).not.toMatch(/SCAN messages\b(?! USING)/);
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
    expect(await stored(stub)).toEqual([3]);
    // A stale (lower) ack changes nothing.
    expect(await stub.ack(TENANT, source, "c/orders", 1)).toEqual({ ok: true, acked: 2 });
    const st = await stub.status();
    expect(st.streams.find((s) => s.destination === "b/orders")).toMatchObject({ acked: 3, queued: 0 });
    expect(st.streams.find((s) => s.destination === "c/orders")).toMatchObject({ acked: 2, queued: 1 });
  });

  it("logs captured, accepted and delivered events to D1 through its outbox", async () => {
    const { source, stub } = fresh();
    await stub.configure(TENANT, source, [route("b/orders")]);
    await stub.publish({ tenant: TENANT, source, epoch: "epoch-aaaaaaaa", ...msgs(1, 2) });
    await stub.ack(TENANT, source, "b/orders", 2);
    await runInDurableObject(stub, (obj) => (obj as unknown as { events: { flush(): Promise<void> } }).events.flush());
    const { results } = await env.DB.prepare("SELECT type, seq, destination FROM events WHERE source = ? ORDER BY id").bind(source).all();
    expect(results).toEqual([
      { type: "captured", seq: 1, destination: null },
      { type: "accepted", seq: 1, destination: null },
      { type: "captured", seq: 2, destination: null },
      { type: "accepted", seq: 2, destination: null },
      { type: "delivered", seq: 1, destination: "b/orders" },
      { type: "delivered", seq: 2, destination: "b/orders" },
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

  it("re-drives dead letters to the end of the stream with a fresh TTL, and discards them on request", async () => {
    const { source, stub } = fresh();
    await stub.configure(TENANT, source, [{ ...route("b/orders"), ttlSeconds: 1 }]);
    await stub.publish({ tenant: TENANT, source, epoch: "epoch-aaaaaaaa", ...msgs(1, 2) });
    await expiredAfterTtl(stub, source);
    await stub.configure(TENANT, source, [route("b/orders")]);
    const first = (await stub.deadLetters(TENANT, source))[0];
    expect(await stub.handleDeadLetters(TENANT, source, "redrive", "b/orders", [first?.id as string])).toBe(1);
    const outq = await runInDurableObject(stub, (_o, state) => state.storage.sql.exec<{ dseq: number }>("SELECT dseq FROM outq ORDER BY dseq").toArray().map((r) => r.dseq));
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
