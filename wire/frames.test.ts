import { describe, expect, it } from "vitest";
import { decodeFrame, encodeFrame, encodeFrameParts, Limits, WireError, type PubMessage } from "./index.ts";

const msg = (seq: number, size: number): PubMessage => ({ seq, id: `id-${seq}-aaaaaaaa`, createdAt: 1, contentType: "text/plain", size, sha256: "a".repeat(64) });

function header(json: unknown, tail: Uint8Array = new Uint8Array()): Uint8Array {
  const h = new TextEncoder().encode(JSON.stringify(json));
  const out = new Uint8Array(5 + h.byteLength + tail.byteLength);
  out[0] = 1;
  new DataView(out.buffer).setUint32(1, h.byteLength);
  out.set(h, 5);
  out.set(tail, 5 + h.byteLength);
  return out;
}

function code(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(WireError);
    return `${(e as WireError).code}: ${(e as WireError).message}`;
  }
  throw new Error("did not throw");
}

describe("wire frames", () => {
  it("sends a chunk in fragments that join into exactly the frame encodeFrame makes, the payload not copied", () => {
    const bytes = new Uint8Array(5 * 1024 * 1024 + 3).fill(7);
    const frame = { t: "chunk", ch: "files", id: "file-aaaaaaaa", part: 2, len: bytes.byteLength, sha256: "b".repeat(64) } as const;
    const parts = encodeFrameParts(frame, [bytes]);
    expect(parts[1]).toBe(bytes);
    const joined = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
    let at = 0;
    for (const p of parts) {
      joined.set(p, at);
      at += p.byteLength;
    }
    expect(joined).toEqual(encodeFrame(frame, [bytes]));
    expect(decodeFrame(joined).frame).toEqual(frame);
    expect(code(() => encodeFrameParts({ ...frame, len: 10 }, [bytes]))).toMatch(/^BAD_FRAME: payload 0 of a chunk frame declares 10 bytes/);
  });

  it("validates relay frames and their answers", () => {
    const relay = { t: "relay", src: "a/files", dst: "b/files", id: "file-aaaaaaaa", part: 1, parts: 2, size: 6 * 1024 * 1024, sha256: "c".repeat(64), chunk: 5 * 1024 * 1024, len: 3, psha: "d".repeat(64) } as const;
    const d = decodeFrame(encodeFrame(relay, [new Uint8Array([1, 2, 3])]));
    expect(d.frame).toEqual(relay);
    expect(d.payloads[0]).toEqual(new Uint8Array([1, 2, 3]));
    expect(code(() => decodeFrame(header({ ...relay, psha: "nothex" }, new Uint8Array(3))))).toMatch(/^BAD_FRAME: invalid frame: psha:/);
    const answer = { t: "relayed", src: "a/files", dst: "b/files", id: "file-aaaaaaaa", part: 1, have: 0, ok: false, code: "BAD_CHUNK", message: "damaged" } as const;
    expect(decodeFrame(encodeFrame(answer)).frame).toEqual(answer);
    expect(code(() => decodeFrame(header({ ...answer, extra: 1 })))).toMatch(/^BAD_FRAME: invalid frame/);
  });

  it("carries a large file's name in upload and relay frames, where the edge said it takes one", () => {
    const upload = { t: "upload", ch: "files", id: "file-aaaaaaaa", size: 6 * 1024 * 1024, sha256: "c".repeat(64), chunk: 5 * 1024 * 1024, parts: 2, name: "export 2026-12.csv" } as const;
    expect(decodeFrame(encodeFrame(upload)).frame).toEqual(upload);
    expect(code(() => decodeFrame(header({ ...upload, name: "" })))).toMatch(/^BAD_FRAME: invalid frame: name:/);
    expect(code(() => decodeFrame(header({ ...upload, name: "x".repeat(256) })))).toMatch(/^BAD_FRAME: invalid frame: name:/);
    const relay = { t: "relay", src: "a/files", dst: "b/files", id: "file-aaaaaaaa", part: 1, parts: 2, size: 6 * 1024 * 1024, sha256: "c".repeat(64), chunk: 5 * 1024 * 1024, len: 0, psha: "d".repeat(64), name: "export 2026-12.csv" } as const;
    expect(decodeFrame(encodeFrame(relay, [new Uint8Array(0)])).frame).toEqual(relay);
    const welcome = { t: "welcome", v: 1, tenant: "acme", connector: "erp", heartbeat: 15, region: "local" } as const;
    // An older edge says nothing of features: the connector then sends no names.
    expect(decodeFrame(encodeFrame(welcome)).frame).toEqual(welcome);
    expect(decodeFrame(encodeFrame({ ...welcome, features: ["upload-name"] })).frame).toEqual({ ...welcome, features: ["upload-name"] });
  });

  it("round-trips a pub frame with payloads as views, not copies", () => {
    const payloads = [new Uint8Array([1, 2, 3]), new Uint8Array(0), new Uint8Array([9])];
    const bytes = encodeFrame({ t: "pub", ch: "orders", epoch: "epoch-aaaaaaaa", msgs: [msg(1, 3), msg(2, 0), msg(3, 1)] }, payloads);
    const d = decodeFrame(bytes);
    expect(d.frame).toMatchObject({ t: "pub", ch: "orders" });
    expect(d.payloads.map((p) => [...p])).toEqual([[1, 2, 3], [], [9]]);
    expect(d.payloads[0]?.buffer).toBe(bytes.buffer);
  });

  it("refuses to encode payloads that disagree with their declared sizes", () => {
    expect(code(() => encodeFrame({ t: "pub", ch: "orders", epoch: "epoch-aaaaaaaa", msgs: [msg(1, 5)] }, [new Uint8Array(4)]))).toMatch(/^BAD_FRAME: payload 0 of a pub frame declares 5 bytes but has 4/);
  });

  it("carries claim checks without payload bytes, and chunks and parts with theirs", () => {
    const MiB = 1024 * 1024;
    const big: PubMessage = { ...msg(2, 20 * MiB), blob: { chunk: 8 * MiB, parts: 3 } };
    const d = decodeFrame(encodeFrame({ t: "pub", ch: "files", epoch: "epoch-aaaaaaaa", msgs: [msg(1, 2), big] }, [new Uint8Array([7, 8]), new Uint8Array(0)]));
    expect(d.payloads.map((p) => p.byteLength)).toEqual([2, 0]);
    expect(d.frame).toMatchObject({ msgs: [{ seq: 1 }, { seq: 2, size: 20 * MiB, blob: { chunk: 8 * MiB, parts: 3 } }] });
    const part = new Uint8Array([1, 2, 3, 4]);
    const c = decodeFrame(encodeFrame({ t: "chunk", ch: "files", id: "id-2-aaaaaaaa", part: 3, len: 4, sha256: "b".repeat(64) }, [part]));
    expect([...(c.payloads[0] as Uint8Array)]).toEqual([1, 2, 3, 4]);
    expect(decodeFrame(encodeFrame({ t: "get", src: "a/files", dst: "b/files", id: "id-2-aaaaaaaa", part: 1 })).frame).toMatchObject({ t: "get", part: 1 });
  });

  it("refuses large payloads inline, claim checks whose parts do not add up, and chunks of the wrong length", () => {
    const MiB = 1024 * 1024;
    expect(code(() => decodeFrame(header({ t: "pub", ch: "files", epoch: "epoch-aaaaaaaa", msgs: [msg(1, 2 * MiB)] })))).toMatch(/msgs\.0\.size: an inline payload is at most/);
    expect(code(() => decodeFrame(header({ t: "pub", ch: "files", epoch: "epoch-aaaaaaaa", msgs: [{ ...msg(1, 20 * MiB), blob: { chunk: 8 * MiB, parts: 2 } }] })))).toMatch(/blob\.parts: a payload of 20971520 bytes in chunks of 8388608 has 3 parts, not 2/);
    expect(code(() => decodeFrame(header({ t: "pub", ch: "files", epoch: "epoch-aaaaaaaa", msgs: [{ ...msg(1, 20 * MiB), blob: { chunk: 1024, parts: 20480 } }] })))).toMatch(/blob\.chunk/);
    expect(code(() => decodeFrame(header({ t: "chunk", ch: "files", id: "id-2-aaaaaaaa", part: 1, len: 4, sha256: "b".repeat(64) }, new Uint8Array(3))))).toMatch(/runs past the frame end/);
    expect(code(() => decodeFrame(header({ t: "chunk", ch: "files", id: "id-2-aaaaaaaa", part: 0, len: 0, sha256: "b".repeat(64) })))).toMatch(/part/);
  });

  it("names what is wrong with untrusted bytes", () => {
    expect(code(() => decodeFrame(new Uint8Array([1, 0])))).toMatch(/^BAD_FRAME: frame shorter/);
    expect(code(() => decodeFrame(new Uint8Array([2, 0, 0, 0, 0])))).toMatch(/unsupported protocol version 2/);
    expect(code(() => decodeFrame(new Uint8Array([1, 0, 0, 1, 0, 123])))).toMatch(/header length 256 does not fit/);
    expect(code(() => decodeFrame(header("not-an-object")))).toMatch(/invalid frame/);
    expect(code(() => decodeFrame(header({ t: "pub", ch: "Orders!", epoch: "epoch-aaaaaaaa", msgs: [msg(1, 0)] })))).toMatch(/invalid frame: ch:/);
    expect(code(() => decodeFrame(header({ t: "pub", ch: "orders", epoch: "epoch-aaaaaaaa", msgs: [{ ...msg(0, 0) }] })))).toMatch(/msgs\.0\.seq/);
    expect(code(() => decodeFrame(header({ t: "ack", src: "a/b", dst: "c/d", upTo: 1, extra: 1 })))).toMatch(/invalid frame/);
    expect(code(() => decodeFrame(header({ t: "bogus" })))).toMatch(/invalid frame: t/);
    // A payload that runs past the end, and bytes nobody declared.
    expect(code(() => decodeFrame(header({ t: "pub", ch: "orders", epoch: "epoch-aaaaaaaa", msgs: [msg(1, 10)] }, new Uint8Array(3))))).toMatch(/runs past the frame end/);
    expect(code(() => decodeFrame(header({ t: "pub", ch: "orders", epoch: "epoch-aaaaaaaa", msgs: [msg(1, 1)] }, new Uint8Array(3))))).toMatch(/2 trailing bytes/);
    expect(code(() => decodeFrame(new Uint8Array(Limits.MAX_FRAME_BYTES + 1)))).toMatch(/^TOO_LARGE/);
    expect(code(() => decodeFrame(new Uint8Array([1, 0, 0, 0, 2, 0xff, 0xfe])))).toMatch(/not UTF-8 JSON/);
  });

  it("caps messages per frame and the inline payload size", () => {
    expect(code(() => decodeFrame(header({ t: "pub", ch: "orders", epoch: "epoch-aaaaaaaa", msgs: [msg(1, Limits.MAX_WIRE_PAYLOAD + 1)] })))).toMatch(/size/);
    const many = Array.from({ length: Limits.MAX_MESSAGES_PER_FRAME + 1 }, (_, i) => msg(i + 1, 0));
    expect(code(() => decodeFrame(header({ t: "pub", ch: "orders", epoch: "epoch-aaaaaaaa", msgs: many })))).toMatch(/msgs/);
  });
});

describe("wire compatibility", () => {
  it("a connector accepts frames from a newer edge that carry fields and codes it does not know", () => {
    const deliver = decodeFrame(
      header({ t: "deliver", src: "a/b", dst: "c/d", gen: "g1", after: 0, futureField: { x: 1 }, msgs: [{ dseq: 1, id: "id-1-aaaaaaaa", source: "a/b", seq: 1, createdAt: 1, acceptedAt: 1, expiresAt: null, contentType: "text/plain", size: 0, sha256: "a".repeat(64), priority: "high" }] }),
    );
    expect(deliver.frame).toMatchObject({ t: "deliver", msgs: [{ dseq: 1 }] });
    expect(decodeFrame(header({ t: "error", code: "QUOTA_EXCEEDED", message: "a code from the future" })).frame).toMatchObject({ code: "QUOTA_EXCEEDED" });
    expect(decodeFrame(header({ t: "welcome", v: 1, tenant: "t", connector: "c", heartbeat: 15, region: "x", features: ["chunks"] })).frame.t).toBe("welcome");
  });

  it("an edge refuses fields a connector may not send", () => {
    expect(code(() => decodeFrame(header({ t: "pub", ch: "orders", epoch: "epoch-aaaaaaaa", msgs: [{ ...msg(1, 0), admin: true }] })))).toMatch(/^BAD_FRAME: invalid frame/);
    expect(code(() => decodeFrame(header({ t: "ack", src: "a/b", dst: "c/d", upTo: 1, sneaky: 1 })))).toMatch(/^BAD_FRAME/);
  });
});
