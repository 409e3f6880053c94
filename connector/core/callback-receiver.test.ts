import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import type { DeliverMessage } from "../../wire/index.ts";
import { DeliveryLog } from "../channels/file/delivery-log.ts";
import { CallbackReceiver, type Delivery } from "./callback-receiver.ts";
import type { Incoming } from "./connector.ts";

const S = "a/x>b/x#g";
const incoming = (dseq: number): Incoming => ({
  meta: { dseq, id: `id-${dseq}-aaaaaaaa`, source: "a/x", seq: dseq, createdAt: 1, acceptedAt: 1, expiresAt: null, contentType: "text/plain", size: 1, sha256: "0".repeat(64) } satisfies DeliverMessage,
  payload: new Uint8Array([dseq]),
});

describe("callback receiver (targets outside the connector's control)", () => {
  it("hands each message over once and in order, recording the mark before it returns", async () => {
    const file = join(await mkdtemp(join(tmpdir(), "ferry-cb-")), "d.json");
    const seen: Delivery[] = [];
    const r = await CallbackReceiver.open(file, async (d) => void seen.push(d));
    expect(await r.deliver(S, [incoming(1), incoming(2)])).toBe(2);
    expect(seen.map((d) => [d.meta.dseq, d.redelivery])).toEqual([[1, false], [2, false]]);
    expect((await DeliveryLog.open(file)).hwm(S)).toBe(2);
  });

  it("marks the positions of a crash window as redeliveries, with the same id", async () => {
    const file = join(await mkdtemp(join(tmpdir(), "ferry-cb-")), "d.json");
    // The last run recorded its intent for 1-2 and died inside the handler.
    const crashed = await DeliveryLog.open(file);
    await crashed.begin(S, [{ dseq: 1, tmp: "", final: "" }, { dseq: 2, tmp: "", final: "" }]);
    const seen: Delivery[] = [];
    const r = await CallbackReceiver.open(file, async (d) => void seen.push(d));
    await r.deliver(S, [incoming(1), incoming(2), incoming(3)]);
    expect(seen.map((d) => [d.meta.id, d.redelivery])).toEqual([["id-1-aaaaaaaa", true], ["id-2-aaaaaaaa", true], ["id-3-aaaaaaaa", false]]);
  });

  it("stops at a failing handler and keeps what succeeded", async () => {
    const file = join(await mkdtemp(join(tmpdir(), "ferry-cb-")), "d.json");
    const r = await CallbackReceiver.open(file, async (d) => {
      if (d.meta.dseq === 2) throw new Error("target down");
    });
    await expect(r.deliver(S, [incoming(1), incoming(2), incoming(3)])).rejects.toThrow("target down");
    expect(r.hwm(S)).toBe(1);
  });
});
