import { once } from "node:events";
import type { AddressInfo } from "node:net";
import { describe, expect, it } from "vitest";
import WebSocket, { WebSocketServer } from "ws";
import { maskFor, zeroMask } from "./transport.ts";

/** A real loopback server that also keeps the raw bytes its socket received after the upgrade. */
async function server(): Promise<{ url: string; raw: () => Buffer; received: Promise<Buffer>; close: () => Promise<void> }> {
  const wss = new WebSocketServer({ host: "127.0.0.1", port: 0 });
  await once(wss, "listening");
  const chunks: Buffer[] = [];
  const received = new Promise<Buffer>((resolve) =>
    wss.on("connection", (ws, req) => {
      // First, and a copy: ws unmasks what it reads in place.
      req.socket.prependListener("data", (d: Buffer) => chunks.push(Buffer.from(d)));
      ws.on("message", (m: Buffer) => resolve(m));
    }),
  );
  return {
    url: `ws://127.0.0.1:${(wss.address() as AddressInfo).port}/v1/connect`,
    raw: () => Buffer.concat(chunks),
    received,
    close: () => new Promise((r) => wss.close(() => r())),
  };
}

/** Sends one binary frame with the connector's masking policy; returns the frame as it crossed the socket. */
async function sendOne(url: string, payload: Buffer) {
  const s = await server();
  const generateMask = maskFor(new URL(url), false);
  const ws = new WebSocket(s.url, { perMessageDeflate: false, ...(generateMask ? { generateMask } : {}) });
  await once(ws, "open");
  ws.send(payload);
  const got = await s.received;
  ws.close();
  await s.close();
  const frame = s.raw();
  // [FIN|opcode][MASK|len 126][u16 len][4-byte key][payload]
  return { got, masked: ((frame[1] as number) & 0x80) !== 0, key: frame.subarray(4, 8), onWire: frame.subarray(8, 8 + payload.byteLength) };
}

describe("the connector's frame masking", () => {
  const payload = Buffer.from("a payload that would be XORed with a random key".repeat(10));
  it("sends frames to a loopback edge with an all-zero key: the payload crosses as written, and the server reads it", async () => {
    for (const url of ["http://127.0.0.1:8787", "http://localhost:8787", "http://[::1]:8787"]) {
      const ws = new URL("/v1/connect", url);
      ws.protocol = "ws:";
      const f = await sendOne(ws.toString(), payload);
      expect(f.masked, url).toBe(true);
      expect([...f.key], url).toEqual([0, 0, 0, 0]);
      expect(f.onWire.equals(payload), url).toBe(true);
      expect(f.got.equals(payload), url).toBe(true);
    }
  });

  it("skips masking over TLS (no intermediary sees the bytes), even through a proxy's tunnel", () => {
    expect(maskFor(new URL("wss://edge.example.com/v1/connect"), false)).toBe(zeroMask);
    expect(maskFor(new URL("wss://edge.example.com/v1/connect"), true)).toBe(zeroMask);
  });

  it("masks with random keys on plain ws:// beyond this machine, and on loopback through a proxy", async () => {
    expect(maskFor(new URL("ws://edge.example.com/v1/connect"), false)).toBeUndefined();
    expect(maskFor(new URL("ws://10.0.0.5:8787/v1/connect"), false)).toBeUndefined();
    expect(maskFor(new URL("ws://127.0.0.1:8787/v1/connect"), true)).toBeUndefined();
    const f = await sendOne("ws://edge.example.com/v1/connect", payload);
    expect(f.masked).toBe(true);
    expect([...f.key]).not.toEqual([0, 0, 0, 0]);
    expect(f.onWire.equals(payload)).toBe(false);
    expect(f.got.equals(payload)).toBe(true);
  });
});
