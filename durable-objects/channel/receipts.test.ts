import { describe, expect, it } from "vitest";
import { RECEIPT_BATCH, ReceiptOutbox } from "./receipts.ts";

const frame = (n: number) => new Uint8Array([n & 255, n >> 8]);
const numbers = (calls: Uint8Array[][]) => calls.map((c) => c.map((f) => (f[0] as number) + ((f[1] as number) << 8)));

async function until(what: string, cond: () => boolean): Promise<void> {
  for (let i = 0; i < 1000 && !cond(); i++) await new Promise((r) => setTimeout(r, 2));
  if (!cond()) throw new Error(`timed out waiting for ${what}`);
}

describe("receipts on their way to the sender (D25)", () => {
  it("sends the frames of a burst in one call, in order, after the delay", async () => {
    const calls: Uint8Array[][] = [];
    const out = new ReceiptOutbox(async (f) => void calls.push(f), 5);
    for (let i = 1; i <= 3; i++) out.push(frame(i));
    expect(calls).toEqual([]);
    await until("the call", () => calls.length > 0);
    expect(numbers(calls)).toEqual([[1, 2, 3]]);
  });

  it("does not hold more than a batch: a full one goes at once, the rest after the delay", async () => {
    const calls: Uint8Array[][] = [];
    const out = new ReceiptOutbox(async (f) => void calls.push(f), 60_000);
    for (let i = 1; i <= RECEIPT_BATCH + 2; i++) out.push(frame(i));
    await until("the full batch", () => calls.length === 1);
    expect(numbers(calls)[0]).toEqual(Array.from({ length: RECEIPT_BATCH }, (_, i) => i + 1));
    // The two left wait for the delay (a minute here), or for a flush.
    await out.flush();
    expect(numbers(calls)[1]).toEqual([RECEIPT_BATCH + 1, RECEIPT_BATCH + 2]);
  });

  it("keeps the order when a call is slow, and goes on after a call that failed", async () => {
    const calls: Uint8Array[][] = [];
    let n = 0;
    let release: (() => void) | null = null;
    const out = new ReceiptOutbox(async (f) => {
      n++;
      if (n === 1) await new Promise<void>((r) => (release = r));
      if (n === 2) throw new Error("the session object was unreachable");
      calls.push(f);
    }, 1);
    out.push(frame(1));
    void out.flush();
    out.push(frame(2));
    void out.flush();
    out.push(frame(3));
    out.push(frame(4));
    const last = out.flush();
    await until("the first call", () => release !== null);
    (release as unknown as () => void)();
    await last;
    // Each call waits for the one before; the failed call's frame is lost (best effort, as before: the event log has it).
    expect(numbers(calls)).toEqual([[1], [3, 4]]);
  });
});
