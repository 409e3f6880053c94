import { z } from "zod";
import { Address, Name } from "./address.ts";
import { ErrorCode, WireError } from "./errors.ts";

/**
 * Ferry's wire protocol: the only definition of what crosses the connector's
 * WebSocket. Both the edge and the connector import this module; it imports
 * nothing of either side.
 *
 * A frame is a binary WebSocket message:
 *
 *   [u8 version=1][u32 BE header length][header: UTF-8 JSON][payload bytes]
 *
 * The header is validated with the schemas below. Frames that carry messages
 * (`pub`, `deliver`) list each message's metadata in the header with its
 * payload `size`; the payloads follow the header back to back, in order, so
 * payload bytes are never JSON-encoded or copied into strings. Text frames
 * are used only for the heartbeat (`ping` -> `pong`), which the edge answers
 * without waking a hibernated object.
 */
export const PROTOCOL_VERSION = 1;

export const Limits = {
  /** Whole frame; workerd accepts up to 32 MiB per WebSocket message. */
  MAX_FRAME_BYTES: 16 * 1024 * 1024,
  /** Header JSON. */
  MAX_HEADER_BYTES: 1024 * 1024,
  /** Messages carried by one frame. */
  MAX_MESSAGES_PER_FRAME: 2048,
  /**
   * One inline payload as captured. A Durable Object's SQLite row is capped
   * at 2 MB in production; larger payloads go through R2 (claim check).
   */
  MAX_INLINE_PAYLOAD: 1024 * 1024,
  /** On the wire: room for an encrypted payload (JWE JSON, base64url: about 4/3 of the plaintext). */
  MAX_WIRE_PAYLOAD: 1536 * 1024,
} as const;

export const FrameType = {
  WELCOME: "welcome",
  PUB: "pub",
  PUBACK: "puback",
  DELIVER: "deliver",
  ACK: "ack",
  RESEND: "resend",
  RECEIPT: "receipt",
  ERROR: "error",
} as const;

const Seq = z.number().int().positive().max(Number.MAX_SAFE_INTEGER);
const SeqOrZero = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);
export const MessageId = z.string().regex(/^[0-9A-Za-z_-]{8,64}$/, "8-64 of 0-9 A-Z a-z _ -");
const Sha256Hex = z.string().regex(/^[0-9a-f]{64}$/, "64 lower-case hex digits");
/** A spool incarnation: new spool, new epoch, sequence restarts at 1. */
const Epoch = z.string().regex(/^[0-9a-zA-Z_-]{8,64}$/);

/** Channel fields captured into the envelope (file name, mtime, partner ref). */
export const Fields = z.record(z.string().regex(/^[a-zA-Z][a-zA-Z0-9_.-]{0,63}$/), z.string().max(4096));

/** What the sender says about one message. */
export const PubMessage = z.strictObject({
  seq: Seq,
  id: MessageId,
  createdAt: z.number().int().nonnegative(),
  contentType: z.string().min(1).max(255),
  size: z.number().int().nonnegative().max(Limits.MAX_WIRE_PAYLOAD),
  sha256: Sha256Hex,
  fields: Fields.optional(),
  /** How the sender protected it: `sign` carries `sig`; `encrypt` is a JWE payload and carries `sig`. */
  protection: z.enum(["none", "sign", "encrypt"]).optional(),
  /** Compact JWS (EdDSA) by the sending connector over the envelope (see connector/protection). */
  sig: z.string().max(4096).optional(),
});
export type PubMessage = z.infer<typeof PubMessage>;

/**
 * Compatibility rule: what connectors send is validated strictly (an edge
 * knows every field a connector may send); what the edge sends is parsed
 * leniently (unknown fields are ignored), so a connector one version older
 * keeps working when a newer edge adds optional fields.
 */

/** What the receiver is told about one message: the envelope as stored. */
export const DeliverMessage = z.object({
  dseq: Seq,
  id: MessageId,
  source: Address,
  seq: Seq,
  createdAt: z.number().int().nonnegative(),
  acceptedAt: z.number().int().nonnegative(),
  expiresAt: z.number().int().nonnegative().nullable(),
  contentType: z.string().min(1).max(255),
  size: z.number().int().nonnegative().max(Limits.MAX_WIRE_PAYLOAD),
  sha256: Sha256Hex,
  fields: Fields.optional(),
  /** Set when this stream position was pushed before and not acknowledged. */
  redelivered: z.boolean().optional(),
  protection: z.enum(["none", "sign", "encrypt"]).optional(),
  sig: z.string().max(4096).optional(),
});
export type DeliverMessage = z.infer<typeof DeliverMessage>;

export const WelcomeFrame = z.object({
  t: z.literal(FrameType.WELCOME),
  v: z.literal(PROTOCOL_VERSION),
  tenant: Name,
  connector: Name,
  /** Seconds between the connector's pings; two missed pongs mean dead. */
  heartbeat: z.number().int().positive(),
  region: z.string().max(64),
});
export const PubFrame = z.strictObject({
  t: z.literal(FrameType.PUB),
  ch: Name,
  epoch: Epoch,
  msgs: z.array(PubMessage).min(1).max(Limits.MAX_MESSAGES_PER_FRAME),
});
export const PubAckFrame = z.object({
  t: z.literal(FrameType.PUBACK),
  ch: Name,
  epoch: Epoch,
  /** Cumulative: every seq <= upTo is committed at the edge. */
  upTo: SeqOrZero,
});
export const DeliverFrame = z.object({
  t: z.literal(FrameType.DELIVER),
  src: Address,
  dst: Address,
  /**
   * The channel object's storage incarnation. Stream positions are only
   * comparable within one; a receiver seeing a new one starts that stream's
   * mark afresh (the edge lost its state: nothing left to dedup against).
   */
  gen: z.string().regex(/^[0-9a-zA-Z_-]{1,64}$/),
  /**
   * The stream position before the first message that is still to be
   * delivered. Positions in between expired (they are dead letters at the
   * edge): a receiver whose mark is at or past `after` skips them; one below
   * it has missed messages and asks for a resend.
   */
  after: SeqOrZero,
  msgs: z.array(DeliverMessage).min(1).max(Limits.MAX_MESSAGES_PER_FRAME),
});
export const AckFrame = z.strictObject({
  t: z.literal(FrameType.ACK),
  src: Address,
  dst: Address,
  /** Cumulative: every dseq <= upTo is durably delivered. */
  upTo: Seq,
  /**
   * The receiver's signed receipt for what this ack newly covers: a compact
   * JWS (its enrolled Ed25519 key) over a `ReceiptClaims` JSON document.
   */
  receipt: z.string().max(4 * 1024 * 1024).optional(),
});

/** What a signed receipt says: who received which messages (id and digest), when. */
export const ReceiptClaims = z.strictObject({
  typ: z.literal("ferry-receipt"),
  src: Address,
  dst: Address,
  at: z.number().int().nonnegative(),
  messages: z.array(z.strictObject({ id: MessageId, sha256: Sha256Hex })).min(1).max(Limits.MAX_MESSAGES_PER_FRAME),
});
export type ReceiptClaims = z.infer<typeof ReceiptClaims>;
export const RECEIPT_JWS_TYPE = "ferry-receipt+jws";
export const ResendFrame = z.strictObject({
  t: z.literal(FrameType.RESEND),
  src: Address,
  dst: Address,
  from: Seq,
});
export const ReceiptFrame = z.object({
  t: z.literal(FrameType.RECEIPT),
  ch: Name,
  dst: Address,
  status: z.enum(["delivered", "expired"]),
  ids: z.array(MessageId).min(1).max(Limits.MAX_MESSAGES_PER_FRAME),
  at: z.number().int().nonnegative(),
  /** The destination connector's signed receipt (see AckFrame.receipt), when it gave one. */
  signed: z.string().max(4 * 1024 * 1024).optional(),
  /** The edge's signed statement of this receipt (a JWT, keys at /.well-known/jwks.json). */
  edge: z.string().max(1024 * 1024).optional(),
});
export const ErrorFrame = z.object({
  t: z.literal(FrameType.ERROR),
  /** One of ErrorCode; a newer edge may add codes, which older connectors treat as retryable. */
  code: z.string().regex(/^[A-Z_]{1,64}$/),
  message: z.string().max(2048),
  ch: Name.optional(),
  src: Address.optional(),
  dst: Address.optional(),
  /** For SEQ_GAP: the next sequence the edge expects. */
  expected: Seq.optional(),
});

export const Frame = z.discriminatedUnion("t", [
  WelcomeFrame,
  PubFrame,
  PubAckFrame,
  DeliverFrame,
  AckFrame,
  ResendFrame,
  ReceiptFrame,
  ErrorFrame,
]);
export type Frame = z.infer<typeof Frame>;
export type WelcomeFrame = z.infer<typeof WelcomeFrame>;
export type PubFrame = z.infer<typeof PubFrame>;
export type PubAckFrame = z.infer<typeof PubAckFrame>;
export type DeliverFrame = z.infer<typeof DeliverFrame>;
export type AckFrame = z.infer<typeof AckFrame>;
export type ResendFrame = z.infer<typeof ResendFrame>;
export type ReceiptFrame = z.infer<typeof ReceiptFrame>;
export type ErrorFrame = z.infer<typeof ErrorFrame>;

/** A decoded frame with the payloads of its messages, in message order. */
export type Decoded<F extends Frame = Frame> = { frame: F; payloads: Uint8Array[] };

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: false });

/**
 * Encodes a frame. `payloads` must match the frame's messages one to one
 * (their `size` fields are checked), and be empty for other frames.
 */
export function encodeFrame(frame: Frame, payloads: readonly Uint8Array[] = []): Uint8Array {
  const msgs = frame.t === "pub" || frame.t === "deliver" ? frame.msgs : [];
  if (msgs.length !== payloads.length) {
    throw new WireError(ErrorCode.BAD_FRAME, `frame ${frame.t} has ${msgs.length} messages but ${payloads.length} payloads`);
  }
  let body = 0;
  for (let i = 0; i < msgs.length; i++) {
    const m = msgs[i];
    const p = payloads[i];
    if (m === undefined || p === undefined || m.size !== p.byteLength) {
      throw new WireError(ErrorCode.BAD_FRAME, `message ${i} declares size ${m?.size} but has ${p?.byteLength} bytes`);
    }
    body += p.byteLength;
  }
  const header = encoder.encode(JSON.stringify(frame));
  const total = 5 + header.byteLength + body;
  if (total > Limits.MAX_FRAME_BYTES) {
    throw new WireError(ErrorCode.TOO_LARGE, `frame of ${total} bytes exceeds ${Limits.MAX_FRAME_BYTES}`);
  }
  const out = new Uint8Array(total);
  const view = new DataView(out.buffer);
  out[0] = PROTOCOL_VERSION;
  view.setUint32(1, header.byteLength);
  out.set(header, 5);
  let at = 5 + header.byteLength;
  for (const p of payloads) {
    out.set(p, at);
    at += p.byteLength;
  }
  return out;
}

/**
 * Decodes and validates untrusted bytes into a frame. Throws a WireError
 * naming what is wrong; never returns a frame that was not validated.
 * Payloads are views into `raw`, not copies.
 */
export function decodeFrame(raw: ArrayBuffer | Uint8Array): Decoded {
  const bytes = raw instanceof Uint8Array ? raw : new Uint8Array(raw);
  if (bytes.byteLength > Limits.MAX_FRAME_BYTES) {
    throw new WireError(ErrorCode.TOO_LARGE, `frame of ${bytes.byteLength} bytes exceeds ${Limits.MAX_FRAME_BYTES}`);
  }
  if (bytes.byteLength < 5) throw new WireError(ErrorCode.BAD_FRAME, "frame shorter than its 5-byte prefix");
  if (bytes[0] !== PROTOCOL_VERSION) {
    throw new WireError(ErrorCode.BAD_FRAME, `unsupported protocol version ${bytes[0]}; this side speaks ${PROTOCOL_VERSION}`);
  }
  const headerLen = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(1);
  if (headerLen > Limits.MAX_HEADER_BYTES || 5 + headerLen > bytes.byteLength) {
    throw new WireError(ErrorCode.BAD_FRAME, `header length ${headerLen} does not fit the frame`);
  }
  let json: unknown;
  try {
    json = JSON.parse(decoder.decode(bytes.subarray(5, 5 + headerLen)));
  } catch (e) {
    throw new WireError(ErrorCode.BAD_FRAME, `header is not UTF-8 JSON: ${(e as Error).message}`);
  }
  const parsed = Frame.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const path = issue?.path.join(".") || "(frame)";
    throw new WireError(ErrorCode.BAD_FRAME, `invalid frame: ${path}: ${issue?.message ?? "invalid"}`);
  }
  const frame = parsed.data;
  const msgs = frame.t === "pub" || frame.t === "deliver" ? frame.msgs : [];
  const payloads: Uint8Array[] = [];
  let at = 5 + headerLen;
  for (const m of msgs) {
    if (at + m.size > bytes.byteLength) {
      throw new WireError(ErrorCode.BAD_FRAME, `payload of message seq ${"seq" in m ? m.seq : "?"} runs past the frame end`);
    }
    payloads.push(bytes.subarray(at, at + m.size));
    at += m.size;
  }
  if (at !== bytes.byteLength) {
    throw new WireError(ErrorCode.BAD_FRAME, `${bytes.byteLength - at} trailing bytes after the last payload`);
  }
  return { frame, payloads };
}

/** Convenience for frames without payloads. */
export function encodeControl(frame: Exclude<Frame, PubFrame | DeliverFrame>): Uint8Array {
  return encodeFrame(frame);
}

export function errorFrame(code: ErrorCode, message: string, extra: Partial<Omit<ErrorFrame, "t" | "code" | "message">> = {}): Uint8Array {
  return encodeFrame({ t: "error", code, message: message.slice(0, 2048), ...extra });
}

export const HEARTBEAT_PING = "ping";
export const HEARTBEAT_PONG = "pong";
