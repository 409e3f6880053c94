import { env, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { decodeFrame, toHex, type Frame } from "../../wire/index.ts";
import type { ConnectorSession } from "../session/session.ts";
import { pushPart, Relays } from "./relay.ts";
import { RelayMode, Transfers } from "./transfers.ts";

const TENANT = "t1";
const CHUNK = 5 * 1024 * 1024;
const sha = async (b: Uint8Array) => toHex(await crypto.subtle.digest("SHA-256", b));
let n = 0;

/** Session objects as the relay sees them: what it pushes to destinations and tells the sender, decoded. */
function sessions() {
  const pushed: { connector: string; frame: Frame }[] = [];
  const told: Frame[] = [];
  const state = { online: true };
  const session = (connector: string) =>
    ({
      deliver: async (f: Uint8Array) => {
        if (!state.online) return false;
        pushed.push({ connector, frame: decodeFrame(f).frame });
        return true;
      },
      notify: async (f: Uint8Array) => {
        told.push(decodeFrame(f).frame);
        return true;
      },
      relayReady: async () => state.online,
    }) as unknown as DurableObjectStub<ConnectorSession>;
  return { pushed, told, state, session };
}

/** A relay over the object's own storage, with the session objects replaced by recorders. */
function relayIn(state: DurableObjectState) {
  const s = sessions();
  const transfers = new Transfers(state, env, state.storage.sql);
  return { s, transfers, relays: new Relays({ transfers, session: s.session }) };
}

/** Waits (bounded) for the relay's notices, which it sends one after another in the background. */
async function until(what: string, cond: () => boolean): Promise<void> {
  for (let i = 0; i < 500 && !cond(); i++) await new Promise((r) => setTimeout(r, 2));
  if (!cond()) throw new Error(`timed out waiting for ${what}`);
}

async function setup(parts: number) {
  const source = `relay${++n}-${crypto.randomUUID().slice(0, 8)}/files`;
  const stub = env.CHANNEL.get(env.CHANNEL.idFromName(`${TENANT}:${source}`));
  const body = new Uint8Array(CHUNK * (parts - 1) + 7).map((_, i) => i % 251);
  const id = `relay-test-${n}-0000`;
  const frame = { t: "upload", ch: "files", id, size: body.byteLength, sha256: await sha(body), chunk: CHUNK, parts } as const;
  const part = (p: number) => body.subarray((p - 1) * CHUNK, Math.min(body.byteLength, p * CHUNK));
  return { source, stub, id, frame, part };
}

describe("channel object: relays (D19)", () => {
  it("goes on after a resume while answers to parts sent before it are still coming", async () => {
    const { source, stub, id, frame, part } = await setup(3);
    await runInDurableObject(stub, async (_o, state) => {
      const { s, transfers, relays } = relayIn(state);
      expect(await relays.open(TENANT, source, null, frame, ["b/files"])).toEqual({ ok: true, have: 0, parts: 3 });
      for (const p of [1, 2]) expect(await relays.put(id, transfers.row(id)?.have ?? 0, p, part(p), await sha(part(p)))).toMatchObject({ ok: true, relaying: true });
      expect(s.pushed.map((x) => [x.connector, x.frame.t, (x.frame as { part: number }).part])).toEqual([["b", "relay", 1], ["b", "relay", 2]]);
      await relays.answer({ t: "relayed", src: source, dst: "b/files", id, part: 1, have: 1, ok: true });
      // The sender reconnects and asks where it stands: 1. Then part 2's answer, sent before, arrives.
      expect(await relays.resume(id, 1)).toBe(true);
      await relays.answer({ t: "relayed", src: source, dst: "b/files", id, part: 2, have: 2, ok: true });
      await until("two notices", () => s.told.length === 2);
      expect(s.told).toEqual([expect.objectContaining({ t: "uploaded", have: 1 }), expect.objectContaining({ t: "uploaded", have: 2 })]);
      // The sender, told 2, sends part 3: passed on, not refused as ahead of what was sent since the resume.
      expect(await relays.put(id, transfers.row(id)?.have ?? 0, 3, part(3), await sha(part(3)))).toMatchObject({ ok: true, relaying: true });
      await relays.answer({ t: "relayed", src: source, dst: "b/files", id, part: 3, have: 3, ok: true });
      expect(transfers.row(id)).toMatchObject({ have: 3, done: 1, relay: RelayMode.RELAYED });
    });
  });

  it("passes a damaged part's refusal to the sender, and stores the upload when a destination cannot go on or goes offline", async () => {
    const { source, stub, id, frame, part } = await setup(2);
    await runInDurableObject(stub, async (_o, state) => {
      const { s, transfers, relays } = relayIn(state);
      await relays.open(TENANT, source, null, frame, ["b/files", "c/files"]);
      await relays.put(id, 0, 1, part(1), await sha(part(1)));
      // One destination found part 1 damaged: the sender hears BAD_CHUNK for it, with what every destination holds.
      await relays.answer({ t: "relayed", src: source, dst: "c/files", id, part: 1, have: 0, ok: false, code: "BAD_CHUNK", message: "damaged" });
      await until("the refusal", () => s.told.length === 1);
      expect(s.told[0]).toMatchObject({ t: "error", code: "BAD_CHUNK", part: 1, have: 0, id });
      // Its disk is full: the relay ends and the upload is stored from part 1.
      await relays.answer({ t: "relayed", src: source, dst: "c/files", id, part: 1, have: 0, ok: false, code: "STORAGE", message: "disk full" });
      await until("the end of the relay", () => s.told.length === 2);
      expect(s.told[1]).toMatchObject({ t: "error", code: "UPLOAD_INCOMPLETE", id, message: expect.stringMatching(/c\/files: disk full/) });
      expect(transfers.row(id)).toMatchObject({ relay: RelayMode.STORE, have: 0, upload_id: expect.stringMatching(/./) });

      // Another upload, its only destination offline when a part comes: stored at once, the sender told by the answer.
      const second = { ...frame, id: `${id}-2` };
      await relays.open(TENANT, source, null, second, ["b/files"]);
      s.state.online = false;
      expect(await relays.put(second.id, 0, 1, part(1), await sha(part(1)))).toMatchObject({ ok: false, code: "UPLOAD_INCOMPLETE", message: expect.stringMatching(/b\/files went offline/) });
      expect(transfers.row(second.id)).toMatchObject({ relay: RelayMode.STORE });
      // And no relay is opened while a destination is away.
      expect(await relays.open(TENANT, source, null, { ...frame, id: `${id}-3` }, ["b/files"])).toBeNull();
    });
  });

  it("lets the sender's session pass a part on itself: checked and counted here, pushed there, ended here when a destination cannot take it", async () => {
    const { source, stub, id, frame, part } = await setup(3);
    await runInDurableObject(stub, async (_o, state) => {
      const { s, transfers, relays } = relayIn(state);
      await relays.open(TENANT, source, null, frame, ["b/files", "c/files"]);
      const p1 = await sha(part(1));
      // Ahead of what was passed on, or of the wrong length: refused with what is held; nothing to push.
      expect(await relays.take(id, 0, 2, part(2).byteLength, p1)).toMatchObject({ answer: { ok: false, code: "BAD_CHUNK", have: 0 } });
      expect(await relays.take(id, 0, 1, 5, p1)).toMatchObject({ answer: { ok: false, code: "BAD_CHUNK", message: expect.stringMatching(/has 5 bytes/) } });
      const step = await relays.take(id, 0, 1, part(1).byteLength, p1);
      expect(step).toEqual({ push: { frame: { t: "relay", src: source, id, part: 1, parts: 3, size: frame.size, sha256: frame.sha256, chunk: CHUNK, len: part(1).byteLength, psha: p1 }, destinations: ["b/files", "c/files"] } });
      if (!("push" in step)) throw new Error("no push");
      // The session pushes the bytes itself: each destination gets the relay frame addressed to it.
      expect(await pushPart(step.push, part(1), s.session)).toEqual([]);
      expect(s.pushed.map((x) => [x.connector, (x.frame as { dst: string }).dst, (x.frame as { part: number }).part])).toEqual([["b", "b/files", 1], ["c", "c/files", 1]]);
      // Answered by both: the sender is told, as when the channel object pushed.
      for (const dst of ["b/files", "c/files"]) await relays.answer({ t: "relayed", src: source, dst, id, part: 1, have: 1, ok: true });
      await until("the notice", () => s.told.length === 1);
      expect(s.told[0]).toMatchObject({ t: "uploaded", have: 1 });
      // A part the destinations hold already is answered as held.
      expect(await relays.take(id, 1, 1, part(1).byteLength, p1)).toEqual({ answer: { ok: true, have: 1, parts: 3 } });
      // Part 2: one destination is gone when the session pushes it; the relay ends and the upload is stored.
      const two = await relays.take(id, 1, 2, part(2).byteLength, await sha(part(2)));
      if (!("push" in two)) throw new Error("no push");
      s.state.online = false;
      const missed = await pushPart(two.push, part(2), s.session);
      expect(missed).toEqual(["b/files", "c/files"]);
      expect(await relays.gone(id, missed)).toMatchObject({ ok: false, code: "UPLOAD_INCOMPLETE", message: expect.stringMatching(/went offline/) });
      expect(transfers.row(id)).toMatchObject({ relay: RelayMode.STORE });
    });
  });
});
