/**
 * The ceilings' minimal wire format, shared by the Node relay, the minimal
 * Durable Objects and the bench's client: a data frame is a 12-byte header
 * (first sequence, count, message size; u32 little-endian) and `count`
 * messages of `size` bytes; an acknowledgement is 4 bytes (every sequence
 * up to this one was received). Each message starts with its send time
 * (f64 milliseconds) so the receiver can measure latency. No JSON, no
 * per-message work: this is what the hardware and the runtime allow.
 */
export const HEADER = 12;

export type FrameHeader = { first: number; count: number; size: number };

export function readHeader(buf: Uint8Array): FrameHeader {
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  return { first: v.getUint32(0, true), count: v.getUint32(4, true), size: v.getUint32(8, true) };
}

export function writeHeader(buf: Uint8Array, h: FrameHeader): void {
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  v.setUint32(0, h.first, true);
  v.setUint32(4, h.count, true);
  v.setUint32(8, h.size, true);
}

export function ackFrame(upTo: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, upTo, true);
  return b;
}

export function readAck(buf: Uint8Array): number {
  return new DataView(buf.buffer, buf.byteOffset, buf.byteLength).getUint32(0, true);
}
