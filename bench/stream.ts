/**
 * The ceilings' client: a sender and a receiver in this process, speaking
 * the minimal format of frame.ts through a relay (the Node relay or a
 * minimal Durable Object). Windowed like Ferry's connector (messages and
 * bytes in flight bounded, many messages per frame) or one at a time. The
 * receiver checks every sequence arrives once and in order.
 */
import WebSocket from "ws";
import { ackFrame, HEADER, readAck, readHeader, writeHeader } from "./frame.ts";
import { latency, type Sample } from "./stats.ts";
import { MIB } from "./config.ts";
import { maskFor } from "../connector/core/transport.ts";

export type StreamOptions = {
  size: number;
  count: number;
  mode: "windowed" | "serial";
  /** Messages and bytes in flight, unacknowledged (Ferry's connector: 8,192 and 16 MiB). */
  windowMessages?: number;
  windowBytes?: number;
  /** Per frame (Ferry: 1,024 messages, 4 MiB). */
  frameMessages?: number;
  frameBytes?: number;
};

function open(url: string): Promise<WebSocket> {
  // Masked as the connector masks (on loopback: not at all), so the ceiling's client costs what Ferry's does.
  const generateMask = maskFor(new URL(url), false);
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { maxPayload: 64 * 1024 * 1024, perMessageDeflate: false, ...(generateMask ? { generateMask } : {}) });
    ws.binaryType = "nodebuffer";
    ws.once("open", () => resolve(ws));
    ws.once("error", reject);
  });
}

const now = () => performance.timeOrigin + performance.now();

/** Streams `count` messages from a sender to a receiver through `base` (ws://…/path). */
export async function stream(base: string, o: StreamOptions): Promise<Sample> {
  const recv = await open(`${base}?role=recv`);
  const send = await open(`${base}?role=send`);
  const windowMessages = o.mode === "serial" ? 1 : (o.windowMessages ?? 8192);
  const windowBytes = o.windowBytes ?? 16 * MIB;
  const frameMessages = o.frameMessages ?? 1024;
  const frameBytes = o.frameBytes ?? 4 * MIB;
  const lat: number[] = [];
  let received = 0;
  let acked = 0;
  let error: Error | null = null;
  let wake: (() => void) | null = null;
  const poke = () => {
    const w = wake;
    wake = null;
    w?.();
  };
  recv.on("message", (data: Buffer) => {
    const h = readHeader(data);
    if (h.first !== received + 1) error ??= new Error(`out of order: expected ${received + 1}, got ${h.first}`);
    const t = now();
    for (let i = 0; i < h.count; i++) lat.push(t - new DataView(data.buffer, data.byteOffset + HEADER + i * h.size, 8).getFloat64(0, true));
    received = h.first + h.count - 1;
    recv.send(ackFrame(received));
  });
  send.on("message", (data: Buffer) => {
    acked = Math.max(acked, readAck(data));
    poke();
  });
  for (const ws of [send, recv]) ws.on("close", () => ((error ??= new Error("relay closed the connection")), poke()));
  const t0 = performance.now();
  let next = 1;
  try {
    while (acked < o.count) {
      if (error) throw error;
      const inFlight = next - 1 - acked;
      const room = Math.min(windowMessages - inFlight, Math.floor((windowBytes - inFlight * o.size) / o.size), o.count - next + 1);
      if (room <= 0 || next > o.count) {
        await new Promise<void>((r) => (wake = r));
        continue;
      }
      const n = Math.max(1, Math.min(room, frameMessages, Math.floor(frameBytes / o.size)));
      const buf = Buffer.allocUnsafe(HEADER + n * o.size);
      writeHeader(buf, { first: next, count: n, size: o.size });
      const t = now();
      for (let i = 0; i < n; i++) buf.writeDoubleLE(t, HEADER + i * o.size);
      send.send(buf);
      next += n;
      // Let the socket drain before building more: back-pressure like the connector's.
      if (send.bufferedAmount > 16 * MIB) await new Promise((r) => setTimeout(r, 1));
    }
  } finally {
    send.close();
    recv.close();
  }
  const secs = (performance.now() - t0) / 1000;
  if (received !== o.count) throw new Error(`received ${received} of ${o.count}`);
  const l = latency(lat);
  return { rate: o.count / secs, p50: l.p50, p99: l.p99, extra: { mbPerSec: (o.count * o.size) / MIB / secs } };
}
