import { describe, expect, it } from "vitest";
import { decodeFrame, type Frame } from "../../wire/index.ts";
import { Acks, type Received } from "./acks.ts";

type Ack = Extract<Frame, { t: "ack" }>;
const r = (...ns: number[]): Received[] => ns.map((n) => ({ id: `m-${n}`, sha256: "ab".repeat(32) }));

function harness(opts: { delayMs?: number; batch?: number; slowSign?: () => Promise<void> } = {}) {
  const sent: Ack[] = [];
  const signed: string[][] = [];
  const state = { online: true };
  const errors: unknown[] = [];
  const acks = new Acks({
    send: (f) => {
      if (!state.online) return false;
      sent.push(decodeFrame(f).frame as Ack);
      return true;
    },
    sign: async (_src, _dst, received) => {
      await opts.slowSign?.();
      signed.push(received.map((m) => m.id));
      return `receipt-${signed.length}`;
    },
    onError: (e) => errors.push(e),
    ...(opts.delayMs !== undefined ? { delayMs: opts.delayMs } : {}),
    ...(opts.batch !== undefined ? { batch: opts.batch } : {}),
  });
  return { acks, sent, signed, state, errors };
}

async function until(what: string, cond: () => boolean): Promise<void> {
  for (let i = 0; i < 1000 && !cond(); i++) await new Promise((res) => setTimeout(res, 2));
  if (!cond()) throw new Error(`timed out waiting for ${what}`);
}

describe("acknowledgements a few frames at a time (D27)", () => {
  it("acknowledges the frames that come within the delay in one ack, with one receipt for all of them", async () => {
    const { acks, sent, signed } = harness({ delayMs: 20 });
    acks.add("s", "a/ch", "b/ch", 1, r(1));
    acks.add("s", "a/ch", "b/ch", 2, r(2));
    acks.add("s", "a/ch", "b/ch", 3, r(3));
    expect(sent).toEqual([]);
    await until("the ack", () => sent.length > 0);
    expect(sent).toEqual([{ t: "ack", src: "a/ch", dst: "b/ch", upTo: 3, receipt: "receipt-1" }]);
    expect(signed).toEqual([["m-1", "m-2", "m-3"]]);
  });

  it("sends a frame's worth at once, without waiting", async () => {
    const { acks, sent } = harness({ delayMs: 60_000, batch: 4 });
    acks.add("s", "a/ch", "b/ch", 4, r(1, 2, 3, 4));
    await until("the ack", () => sent.length > 0);
    expect(sent[0]).toMatchObject({ upTo: 4 });
  });

  it("keeps an ack that finds no connection and sends it first on the next, with what came after", async () => {
    const { acks, sent, signed, state } = harness({ delayMs: 1 });
    state.online = false;
    acks.add("s", "a/ch", "b/ch", 2, r(1, 2));
    await acks.flush("s");
    expect(sent).toEqual([]);
    expect(acks.waiting).toBe(2);
    acks.add("s", "a/ch", "b/ch", 3, r(3));
    state.online = true;
    await acks.flushAll();
    expect(sent).toEqual([{ t: "ack", src: "a/ch", dst: "b/ch", upTo: 3, receipt: expect.any(String) }]);
    // Every delivered message is in a receipt that reached the edge.
    expect(signed.at(-1)).toEqual(["m-1", "m-2", "m-3"]);
    expect(acks.waiting).toBe(0);
  });

  it("answers a frame delivered before at once, with a receipt for it (its ack may have been lost in a crash), merged with the pending ack", async () => {
    const { acks, sent, signed } = harness({ delayMs: 60_000 });
    acks.add("s", "a/ch", "b/ch", 5, r(4, 5));
    await acks.again("s", "a/ch", "b/ch", 5, r(3, 4, 5));
    expect(sent).toEqual([{ t: "ack", src: "a/ch", dst: "b/ch", upTo: 5, receipt: "receipt-1" }]);
    expect(signed[0]).toEqual(["m-4", "m-5", "m-3"]);
    // Nothing pending: the frame's messages get a receipt of their own.
    await acks.again("s", "a/ch", "b/ch", 5, r(4, 5));
    expect(sent[1]).toEqual({ t: "ack", src: "a/ch", dst: "b/ch", upTo: 5, receipt: "receipt-2" });
    expect(signed[1]).toEqual(["m-4", "m-5"]);
  });

  it("never lets a later ack overtake an earlier one whose receipt is still being signed", async () => {
    let release: (() => void) | null = null;
    let first = true;
    const { acks, sent } = harness({
      delayMs: 60_000,
      slowSign: async () => {
        if (!first) return;
        first = false;
        await new Promise<void>((res) => (release = res));
      },
    });
    acks.add("s", "a/ch", "b/ch", 1, r(1));
    void acks.flush("s");
    acks.add("s", "a/ch", "b/ch", 2, r(2));
    const second = acks.flush("s");
    await until("the first signature", () => release !== null);
    (release as unknown as () => void)();
    await second;
    expect(sent.map((a) => a.upTo)).toEqual([1, 2]);
  });
});
