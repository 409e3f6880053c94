import { env, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { toHex, type PubMessage } from "../../wire/index.ts";
import type { ChannelObject } from "./channel.ts";
import { ABANDON_AFTER_MS, RelayMode, Transfers } from "./transfers.ts";

const TENANT = "t1";
const MiB = 1024 * 1024;
/** The smallest chunk R2 allows for all but the last part. */
const CHUNK = 5 * MiB;
let n = 0;

function fresh() {
  const source = `big${++n}-${crypto.randomUUID().slice(0, 8)}/files`;
  const stub = env.CHANNEL.get(env.CHANNEL.idFromName(`${TENANT}:${source}`));
  return { source, stub };
}

const route = (destination: string) => ({ destination, ttlSeconds: 3600, protection: "none", archive: false });
const sha = async (b: Uint8Array) => toHex(await crypto.subtle.digest("SHA-256", b));

/** A payload of two parts (one chunk and 10 bytes), filled so that parts differ. */
function payload(): Uint8Array {
  const b = new Uint8Array(CHUNK + 10);
  for (let i = 0; i < b.length; i += 4096) b[i] = (i / 4096) & 0xff;
  return b;
}

async function claim(id: string, body: Uint8Array): Promise<PubMessage> {
  return { seq: 1, id, createdAt: 1, contentType: "application/octet-stream", size: body.byteLength, sha256: await sha(body), blob: { chunk: CHUNK, parts: 2 }, fields: { filename: "big.bin" } };
}

async function tables(stub: DurableObjectStub<ChannelObject>) {
  return runInDurableObject(stub, (_o, state) => ({
    uploads: state.storage.sql.exec<{ id: string; have: number }>("SELECT id, have FROM uploads").toArray(),
    gc: state.storage.sql.exec<{ key: string }>("SELECT key FROM blob_gc").toArray(),
  }));
}

describe("channel object: large payloads (claim check)", () => {
  it("takes parts in order with their digests, accepts the claim check only once whole, serves parts to its destination alone, and deletes the payload when acknowledged", async () => {
    const { source, stub } = fresh();
    await stub.configure(TENANT, source, [route("b/files")]);
    const body = payload();
    const [p1, p2] = [body.subarray(0, CHUNK), body.subarray(CHUNK)];
    const id = "bigfile-00000001";
    const msg = await claim(id, body);
    expect(await stub.openUpload(TENANT, source, { t: "upload", ch: "files", id, size: body.byteLength, sha256: msg.sha256, chunk: CHUNK, parts: 2 })).toEqual({ ok: true, have: 0, parts: 2 });

    // Out of order, damaged, or the wrong length: refused, nothing held.
    expect(await stub.putPart(TENANT, source, id, 2, p2, await sha(p2))).toMatchObject({ ok: false, code: "BAD_CHUNK", have: 0 });
    const damaged = p1.slice();
    damaged[100] = (damaged[100] as number) ^ 1;
    expect(await stub.putPart(TENANT, source, id, 1, damaged, await sha(p1))).toMatchObject({ ok: false, code: "BAD_CHUNK", message: expect.stringContaining("SHA-256") });
    expect(await stub.putPart(TENANT, source, id, 1, p1.subarray(1), await sha(p1.subarray(1)))).toMatchObject({ ok: false, code: "BAD_CHUNK" });
    expect(await stub.putPart(TENANT, source, id, 1, p1, await sha(p1))).toEqual({ ok: true, have: 1, parts: 2 });
    // A resend of a part already held is acknowledged again; a re-open says where the upload stands.
    expect(await stub.putPart(TENANT, source, id, 1, p1, await sha(p1))).toEqual({ ok: true, have: 1, parts: 2 });
    expect(await stub.openUpload(TENANT, source, { t: "upload", ch: "files", id, size: body.byteLength, sha256: msg.sha256, chunk: CHUNK, parts: 2 })).toEqual({ ok: true, have: 1, parts: 2 });

    // A claim check before the payload is whole stops the batch there.
    const early = await stub.publish({ tenant: TENANT, source, epoch: "epoch-bbbbbbbb", msgs: [msg], payloads: [new Uint8Array(0)] });
    expect(early).toMatchObject({ ok: true, upTo: 0, accepted: 0, incomplete: { id } });

    expect(await stub.putPart(TENANT, source, id, 2, p2, await sha(p2))).toEqual({ ok: true, have: 2, parts: 2 });
    const key = `transfers/${TENANT}/${source}/${id}`;
    expect((await env.ARCHIVE.head(key))?.size).toBe(body.byteLength);
    expect(await stub.publish({ tenant: TENANT, source, epoch: "epoch-bbbbbbbb", msgs: [msg], payloads: [new Uint8Array(0)] })).toMatchObject({ ok: true, upTo: 1, accepted: 1 });

    // The destination may fetch its parts; nobody else may.
    const got = await stub.getPart(TENANT, source, "b/files", id, 2);
    expect(got.ok && [...got.bytes]).toEqual([...p2]);
    expect(got.ok && got.sha256).toBe(await sha(p2));
    expect(await stub.getPart(TENANT, source, "mallory/files", id, 1)).toMatchObject({ ok: false, code: "UNKNOWN_STREAM" });
    const listed = await stub.transferList(TENANT, source);
    expect(listed).toEqual([expect.objectContaining({ id, filename: "big.bin", uploaded: 2, parts: 2, downloads: [{ destination: "b/files", fetched: 2 }] })]);

    // Acknowledged by its only destination: the payload leaves R2.
    expect(await stub.ack(TENANT, source, "b/files", 1)).toEqual({ ok: true, acked: 1 });
    await runInDurableObject(stub, (obj) => (obj as unknown as { transfers: { collect(): Promise<void> } }).transfers.collect());
    expect(await env.ARCHIVE.head(key)).toBeNull();
    expect(await tables(stub)).toEqual({ uploads: [], gc: [] });
    expect(await stub.transferList(TENANT, source)).toEqual([]);
  });

  it("refuses an upload to a source with no route, and one that reuses an id with another size", async () => {
    const { source, stub } = fresh();
    const body = payload();
    const frame = { t: "upload" as const, ch: "files", id: "bigfile-00000002", size: body.byteLength, sha256: await sha(body), chunk: CHUNK, parts: 2 };
    expect(await stub.openUpload(TENANT, source, frame)).toMatchObject({ ok: false, code: "NO_ROUTE" });
    await stub.configure(TENANT, source, [route("b/files")]);
    expect(await stub.openUpload(TENANT, source, frame)).toMatchObject({ ok: true, have: 0 });
    expect(await stub.openUpload(TENANT, source, { ...frame, size: frame.size + 1 })).toMatchObject({ ok: false, code: "BAD_FRAME" });
  });

  it("deletes an upload that nobody finished or referred to when it is abandoned", async () => {
    const { source, stub } = fresh();
    await stub.configure(TENANT, source, [route("b/files")]);
    const body = payload();
    const id = "bigfile-00000003";
    await stub.openUpload(TENANT, source, { t: "upload", ch: "files", id, size: body.byteLength, sha256: await sha(body), chunk: CHUNK, parts: 2 });
    await stub.putPart(TENANT, source, id, 1, body.subarray(0, CHUNK), await sha(body.subarray(0, CHUNK)));
    // Not yet abandoned: the alarm leaves it.
    await runInDurableObject(stub, (_o, state) => state.storage.setAlarm(Date.now()));
    await runDurableObjectAlarm(stub);
    expect((await tables(stub)).uploads).toEqual([{ id, have: 1 }]);
    // Seven days without progress: the alarm aborts it.
    await runInDurableObject(stub, (_o, state) => {
      state.storage.sql.exec("UPDATE uploads SET updated_at = ?", Date.now() - ABANDON_AFTER_MS - 1000);
      return state.storage.setAlarm(Date.now());
    });
    await runDurableObjectAlarm(stub);
    expect(await tables(stub)).toEqual({ uploads: [], gc: [] });
  });

  it("keeps a relay's count without an R2 object, refuses its claim check to a destination it did not reach, and stores it from part 1 when asked", async () => {
    const { source, stub } = fresh();
    const body = payload();
    const id = "relayed-00000001";
    const digest = await sha(body);
    await runInDurableObject(stub, async (_o, state) => {
      const t = new Transfers(state, env, state.storage.sql);
      const f = { t: "upload", ch: "files", id, size: body.byteLength, sha256: digest, chunk: CHUNK, parts: 2 } as const;
      expect(t.openRelay(TENANT, source, null, f, ["b/files"])).toEqual({ ok: true, have: 0, parts: 2 });
      expect(t.openRelay(TENANT, source, null, f, ["b/files"])).toBeNull();
      t.relayed(id, 1);
      expect(t.row(id)).toMatchObject({ have: 1, done: 0, relay: RelayMode.RELAYING, upload_id: "" });
      // Nothing to serve: the bytes went to the destination's disk.
      expect(await t.part(id, 1)).toMatchObject({ ok: false, code: "UNKNOWN_STREAM", message: expect.stringMatching(/relayed to its destination's disk/) });
      expect(t.bind(id, body.byteLength, digest, 9, ["b/files"])).toMatch(/holds 1 of 2 parts/);
      t.relayed(id, 2);
      expect(t.row(id)).toMatchObject({ have: 2, done: 1, relay: RelayMode.RELAYED });
      // A route added since, or one that keeps a copy at the edge: the claim check is refused, nothing bound.
      expect(t.bind(id, body.byteLength, digest, 9, ["b/files", "c/files"])).toMatch(/not to c\/files \(a route added since\)/);
      expect(t.bind(id, body.byteLength, digest, 9, null)).toMatch(/keep a copy at the edge/);
      expect(t.row(id)?.mseq).toBeNull();
      // Stored instead: an R2 multipart upload from part 1, then taken and bound like any other.
      expect(await t.toStore(id)).toBe(true);
      expect(await t.toStore(id)).toBe(false);
      expect(t.row(id)).toMatchObject({ have: 0, done: 0, relay: RelayMode.STORE, relay_to: null, upload_id: expect.stringMatching(/./) });
      expect(await t.put(id, 1, body.subarray(0, CHUNK), await sha(body.subarray(0, CHUNK)))).toEqual({ ok: true, have: 1, parts: 2 });
      expect(await t.put(id, 2, body.subarray(CHUNK), await sha(body.subarray(CHUNK)))).toEqual({ ok: true, have: 2, parts: 2 });
      expect(t.bind(id, body.byteLength, digest, 9, null)).toEqual({ key: expect.stringContaining(id), chunk: CHUNK, parts: 2 });
      const stored = await t.part(id, 2);
      expect(stored.ok && (await sha(stored.bytes))).toBe(await sha(body.subarray(CHUNK)));
    });
  });

  it("gives the uploads of an object from before relays their columns: each is a stored upload", async () => {
    const { stub } = fresh();
    await runInDurableObject(stub, (_o, state) => {
      state.storage.sql.exec("DROP TABLE uploads");
      state.storage.sql.exec(`CREATE TABLE uploads (id TEXT PRIMARY KEY, key TEXT NOT NULL, bucket TEXT NOT NULL, upload_id TEXT NOT NULL, size INTEGER NOT NULL, sha256 TEXT NOT NULL,
        chunk INTEGER NOT NULL, parts INTEGER NOT NULL, have INTEGER NOT NULL, done INTEGER NOT NULL, mseq INTEGER, updated_at INTEGER NOT NULL)`);
      state.storage.sql.exec("INSERT INTO uploads VALUES ('old-upload-01', 'transfers/k', 'ARCHIVE', 'mpu-1', 10, ?, ?, 1, 0, 0, NULL, 1)", "a".repeat(64), CHUNK);
      const t = new Transfers(state, env, state.storage.sql);
      expect(t.row("old-upload-01")).toMatchObject({ upload_id: "mpu-1", relay: RelayMode.STORE, relay_to: null, name: null });
    });
  });

  it("gives the uploads of an object from before names their column, and shows a named upload by its name before its claim check", async () => {
    const { source, stub } = fresh();
    await runInDurableObject(stub, (_o, state) => {
      state.storage.sql.exec("DROP TABLE uploads");
      state.storage.sql.exec(`CREATE TABLE uploads (id TEXT PRIMARY KEY, key TEXT NOT NULL, bucket TEXT NOT NULL, upload_id TEXT NOT NULL, size INTEGER NOT NULL, sha256 TEXT NOT NULL,
        chunk INTEGER NOT NULL, parts INTEGER NOT NULL, have INTEGER NOT NULL, done INTEGER NOT NULL, mseq INTEGER, updated_at INTEGER NOT NULL, relay INTEGER NOT NULL DEFAULT 0, relay_to TEXT)`);
      state.storage.sql.exec("INSERT INTO uploads VALUES ('old-upload-02', 'transfers/k', 'ARCHIVE', 'mpu-1', 10, ?, ?, 1, 0, 0, NULL, 1, 0, NULL)", "a".repeat(64), CHUNK);
      const t = new Transfers(state, env, state.storage.sql);
      expect(t.row("old-upload-02")).toMatchObject({ relay: RelayMode.STORE, name: null });
      const f = { t: "upload", ch: "files", id: "named-upload-01", size: CHUNK + 10, sha256: "b".repeat(64), chunk: CHUNK, parts: 2, name: "export 2026-12.csv" } as const;
      expect(t.openRelay(TENANT, source, null, f, ["dst/files"])).toMatchObject({ ok: true, have: 0 });
      const shown = t.list(source, () => 0, () => null);
      expect(shown.find((v) => v.id === "named-upload-01")).toMatchObject({ filename: "export 2026-12.csv", relayed: true });
      expect(shown.find((v) => v.id === "old-upload-02")).toMatchObject({ filename: null });
    });
  });
});
