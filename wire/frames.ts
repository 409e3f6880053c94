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
  /**
   * Large payloads (above MAX_INLINE_PAYLOAD) travel in chunks of one size
   * (the last may be shorter) into an R2 multipart upload: R2 wants parts of
   * at least 5 MiB, all of one size but the last, at most 10,000 of them.
   */
  CHUNK_BYTES: 8 * 1024 * 1024,
  MIN_CHUNK_BYTES: 5 * 1024 * 1024,
  /** A large file's name as `upload` and `relay` frames carry it (a longer one is left out: the claim check still names the file). */
  MAX_TRANSFER_NAME: 255,
  MAX_CHUNK_BYTES: 12 * 1024 * 1024,
  MAX_PARTS: 10_000,
} as const;

/** The largest payload: 10,000 parts of the largest chunk (about 117 GiB). */
export const MAX_BLOB_BYTES = Limits.MAX_PARTS * Limits.MAX_CHUNK_BYTES;

export const FrameType = {
  WELCOME: "welcome",
  PUB: "pub",
  PUBACK: "puback",
  DELIVER: "deliver",
  ACK: "ack",
  RESEND: "resend",
  RECEIPT: "receipt",
  ERROR: "error",
  UPLOAD: "upload",
  UPLOADED: "uploaded",
  CHUNK: "chunk",
  GET: "get",
  PART: "part",
  RELAY: "relay",
  RELAYED: "relayed",
} as const;

const Seq = z.number().int().positive().max(Number.MAX_SAFE_INTEGER);
const SeqOrZero = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);
export const MessageId = z.string().regex(/^[0-9A-Za-z_-]{8,64}$/, "8-64 of 0-9 A-Z a-z _ -");
const Sha256Hex = z.string().regex(/^[0-9a-f]{64}$/, "64 lower-case hex digits");
/** A spool incarnation: new spool, new epoch, sequence restarts at 1. */
const Epoch = z.string().regex(/^[0-9a-zA-Z_-]{8,64}$/);

const Part = z.number().int().positive().max(Limits.MAX_PARTS);
const ChunkLen = z.number().int().nonnegative().max(Limits.MAX_CHUNK_BYTES);

/**
 * A claim check: the payload is not in the frame but in the edge's R2,
 * uploaded beforehand in `parts` chunks of `chunk` bytes (the last shorter).
 * `size` and `sha256` of the message are those of the whole stored payload.
 */
export const BlobRef = z.object({
  chunk: z.number().int().min(Limits.MIN_CHUNK_BYTES).max(Limits.MAX_CHUNK_BYTES),
  parts: Part,
  /**
   * "gzip": the stored bytes are the sender's gzip of the original, whose
   * size and SHA-256 follow; the receiver inflates and checks them.
   */
  encoding: z.literal("gzip").optional(),
  plainSize: z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER).optional(),
  plainSha256: Sha256Hex.optional(),
  /** On `encrypt` routes: the parts' content key and the original's envelope, as a JWE (JSON) to the destinations. */
  key: z.string().max(16 * 1024).optional(),
});
export type BlobRef = z.infer<typeof BlobRef>;

/** How many chunks a payload of `size` bytes takes. */
export function partsOf(size: number, chunk: number): number {
  return Math.max(1, Math.ceil(size / chunk));
}

/** The byte length of one part. */
export function partLength(size: number, chunk: number, part: number): number {
  return Math.max(0, Math.min(chunk, size - (part - 1) * chunk));
}

/** Inline payloads stay small; a claim check's parts must add up to its size. */
function checkSize(m: { size: number; blob?: BlobRef | undefined }, ctx: z.RefinementCtx): void {
  if (!m.blob) {
    if (m.size > Limits.MAX_WIRE_PAYLOAD) ctx.addIssue({ code: "custom", path: ["size"], message: `an inline payload is at most ${Limits.MAX_WIRE_PAYLOAD} bytes; larger ones travel as chunks (blob)` });
    return;
  }
  if (m.size <= 0 || partsOf(m.size, m.blob.chunk) !== m.blob.parts) {
    ctx.addIssue({ code: "custom", path: ["blob", "parts"], message: `a payload of ${m.size} bytes in chunks of ${m.blob.chunk} has ${partsOf(m.size, m.blob.chunk)} parts, not ${m.blob.parts}` });
  }
}

/** Channel fields captured into the envelope (file name, mtime, partner ref). */
export const Fields = z.record(z.string().regex(/^[a-zA-Z][a-zA-Z0-9_.-]{0,63}$/), z.string().max(4096));

/** What the sender says about one message. */
export const PubMessage = z.strictObject({
  seq: Seq,
  id: MessageId,
  createdAt: z.number().int().nonnegative(),
  contentType: z.string().min(1).max(255),
  size: z.number().int().nonnegative().max(MAX_BLOB_BYTES),
  sha256: Sha256Hex,
  fields: Fields.optional(),
  /** How the sender protected it: `sign` carries `sig`; `encrypt` is a JWE payload and carries `sig`. */
  protection: z.enum(["none", "sign", "encrypt"]).optional(),
  /** Compact JWS (EdDSA) by the sending connector over the envelope (see connector/protection). */
  sig: z.string().max(4096).optional(),
  /** Set for a large payload uploaded in chunks beforehand: no payload bytes follow in the frame. */
  blob: BlobRef.strict().optional(),
}).superRefine(checkSize);
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
  size: z.number().int().nonnegative().max(MAX_BLOB_BYTES),
  sha256: Sha256Hex,
  fields: Fields.optional(),
  /** Set when this stream position was pushed before and not acknowledged. */
  redelivered: z.boolean().optional(),
  protection: z.enum(["none", "sign", "encrypt"]).optional(),
  sig: z.string().max(4096).optional(),
  /** A large payload: fetch its parts with `get` frames; no payload bytes follow in the frame. */
  blob: BlobRef.optional(),
}).superRefine(checkSize);
export type DeliverMessage = z.infer<typeof DeliverMessage>;

export const WelcomeFrame = z.object({
  t: z.literal(FrameType.WELCOME),
  v: z.literal(PROTOCOL_VERSION),
  tenant: Name,
  connector: Name,
  /** Seconds between the connector's pings; two missed pongs mean dead. */
  heartbeat: z.number().int().positive(),
  region: z.string().max(64),
  /**
   * What this edge takes beyond the base protocol. `upload-name`: an
   * `upload` frame may name its file (an older edge refuses the field, so a
   * connector sends it only when told).
   */
  features: z.array(z.string().max(32)).max(32).optional(),
});
/** Edge features a connector may use (WelcomeFrame.features). */
export const EdgeFeature = { UPLOAD_NAME: "upload-name" } as const;
/** A file's name as an upload or a relay shows it while it travels (its `filename` field, which the claim check carries too). */
const TransferName = z.string().min(1).max(Limits.MAX_TRANSFER_NAME);
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
  /** For errors about one large payload's transfer: its message id, and the part concerned. */
  id: MessageId.optional(),
  part: Part.optional(),
  /** For BAD_CHUNK: the parts the edge holds in order (send again from the next). */
  have: z.number().int().nonnegative().max(Limits.MAX_PARTS).optional(),
});

/**
 * Large payloads, sender side: `upload` opens (or resumes) the transfer of
 * one message's payload; the edge answers `uploaded` with how many parts it
 * holds (contiguously from part 1), then each `chunk` (one part's bytes,
 * with their SHA-256) is answered the same way. Once `have == parts` the
 * payload is stored whole and a `pub` may refer to it with `blob`.
 */
export const UploadFrame = z.strictObject({
  t: z.literal(FrameType.UPLOAD),
  ch: Name,
  id: MessageId,
  size: z.number().int().positive().max(MAX_BLOB_BYTES),
  sha256: Sha256Hex,
  chunk: BlobRef.shape.chunk,
  parts: Part,
  /** The file's name, shown while it travels (never on `encrypt` routes, where fields are sealed); only to edges with `upload-name`. */
  name: TransferName.optional(),
}).superRefine((f, ctx) => checkSize({ size: f.size, blob: { chunk: f.chunk, parts: f.parts } }, ctx));
export const UploadedFrame = z.object({
  t: z.literal(FrameType.UPLOADED),
  ch: Name,
  id: MessageId,
  have: z.number().int().nonnegative().max(Limits.MAX_PARTS),
  parts: Part,
});
export const ChunkFrame = z.strictObject({
  t: z.literal(FrameType.CHUNK),
  ch: Name,
  id: MessageId,
  part: Part,
  /** Bytes of this part that follow the header. */
  len: ChunkLen,
  sha256: Sha256Hex,
});
/** Large payloads, receiver side: ask for one part of a delivered message's payload. */
export const GetFrame = z.strictObject({
  t: z.literal(FrameType.GET),
  src: Address,
  dst: Address,
  id: MessageId,
  part: Part,
});
/** One part, with the digest the edge checked when it was uploaded. */
export const PartFrame = z.object({
  t: z.literal(FrameType.PART),
  src: Address,
  dst: Address,
  id: MessageId,
  part: Part,
  len: ChunkLen,
  sha256: Sha256Hex,
});

/**
 * Large payloads relayed (docs/decisions.md D19): while every destination is
 * online, the edge pushes each uploaded part straight to them instead of
 * storing it. `size`, `sha256`, `chunk` and `parts` describe the whole
 * payload (as in `upload`), `psha` this part; the receiver writes the part
 * where a download of the same message would, checks it, and answers
 * `relayed`. The sender's part is acknowledged only once every destination
 * wrote it, and its last part only once each fsynced the whole payload and
 * checked its SHA-256: the destinations hold the payload, not the edge.
 */
export const RelayFrame = z.object({
  t: z.literal(FrameType.RELAY),
  src: Address,
  dst: Address,
  id: MessageId,
  part: Part,
  parts: Part,
  size: z.number().int().positive().max(MAX_BLOB_BYTES),
  sha256: Sha256Hex,
  chunk: BlobRef.shape.chunk,
  len: ChunkLen,
  psha: Sha256Hex,
  /** The file's name, when its sender gave one: the receiver shows it before the claim check comes. */
  name: TransferName.optional(),
});
/**
 * The receiver's answer to one relayed part. `have`: the parts it holds in
 * order. Not ok with BAD_CHUNK: resend from `have + 1` (a damaged or
 * out-of-order part); with any other code the relay ends and the edge stores
 * the payload instead (disk full, no relay of that payload in progress).
 */
export const RelayedFrame = z.strictObject({
  t: z.literal(FrameType.RELAYED),
  src: Address,
  dst: Address,
  id: MessageId,
  part: Part,
  have: z.number().int().nonnegative().max(Limits.MAX_PARTS),
  ok: z.boolean(),
  code: z.string().regex(/^[A-Z_]{1,64}$/).optional(),
  message: z.string().max(2048).optional(),
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
  UploadFrame,
  UploadedFrame,
  ChunkFrame,
  GetFrame,
  PartFrame,
  RelayFrame,
  RelayedFrame,
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
export type UploadFrame = z.infer<typeof UploadFrame>;
export type UploadedFrame = z.infer<typeof UploadedFrame>;
export type ChunkFrame = z.infer<typeof ChunkFrame>;
export type GetFrame = z.infer<typeof GetFrame>;
export type PartFrame = z.infer<typeof PartFrame>;
export type RelayFrame = z.infer<typeof RelayFrame>;
export type RelayedFrame = z.infer<typeof RelayedFrame>;

/** Frames whose payload bytes follow the header. */
type WithPayload = PubFrame | DeliverFrame | ChunkFrame | PartFrame | RelayFrame;

/** The byte length of each payload a frame carries, in order (claim checks carry none). */
function payloadSizes(frame: Frame): number[] {
  switch (frame.t) {
    case "pub":
    case "deliver":
      return frame.msgs.map((m) => (m.blob ? 0 : m.size));
    case "chunk":
    case "part":
    case "relay":
      return [frame.len];
    default:
      return [];
  }
}

/** A decoded frame with the payloads of its messages, in message order. */
export type Decoded<F extends Frame = Frame> = { frame: F; payloads: Uint8Array[] };

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: false });

/**
 * Encodes a frame. `payloads` must match the frame's messages one to one
 * (their `size` fields are checked), and be empty for other frames.
 */
export function encodeFrame(frame: Frame, payloads: readonly Uint8Array[] = []): Uint8Array {
  const { header, total } = frameHeader(frame, payloads);
  const out = packWithHeader(1, header, payloads, total);
  out[0] = PROTOCOL_VERSION;
  return out;
}

/**
 * A frame as pieces to send as one WebSocket message in fragments: the
 * prefix (version, length, header), then the payloads themselves, not
 * copied. For large chunks, where a copy of 8 MiB per part shows.
 */
export function encodeFrameParts(frame: Frame, payloads: readonly Uint8Array[]): Uint8Array[] {
  const { header } = frameHeader(frame, payloads);
  const prefix = packWithHeader(1, header, []);
  prefix[0] = PROTOCOL_VERSION;
  return [prefix, ...payloads];
}

/** Checks the payloads against the frame's declared sizes; the header's bytes and the whole frame's length. */
function frameHeader(frame: Frame, payloads: readonly Uint8Array[]): { header: Uint8Array; total: number } {
  const sizes = payloadSizes(frame);
  if (sizes.length !== payloads.length) {
    throw new WireError(ErrorCode.BAD_FRAME, `frame ${frame.t} has ${sizes.length} payloads declared but ${payloads.length} given`);
  }
  let body = 0;
  for (let i = 0; i < sizes.length; i++) {
    const p = payloads[i];
    if (p === undefined || sizes[i] !== p.byteLength) {
      throw new WireError(ErrorCode.BAD_FRAME, `payload ${i} of a ${frame.t} frame declares ${sizes[i]} bytes but has ${p?.byteLength}`);
    }
    body += p.byteLength;
  }
  const header = encoder.encode(JSON.stringify(frame));
  const total = 5 + header.byteLength + body;
  if (total > Limits.MAX_FRAME_BYTES) {
    throw new WireError(ErrorCode.TOO_LARGE, `frame of ${total} bytes exceeds ${Limits.MAX_FRAME_BYTES}`);
  }
  return { header, total };
}

/**
 * `[lead bytes][u32 header length][header][payloads, back to back]`: the
 * layout of a frame (lead: the version byte) and of the channel object's
 * stored segments (no lead). One copy of each payload. `total`: the whole
 * length, when the caller has it already.
 */
export function packWithHeader(lead: number, header: Uint8Array, payloads: readonly Uint8Array[], total?: number): Uint8Array {
  let size = total ?? lead + 4 + header.byteLength;
  if (total === undefined) for (const p of payloads) size += p.byteLength;
  const out = new Uint8Array(size);
  new DataView(out.buffer).setUint32(lead, header.byteLength);
  out.set(header, lead + 4);
  let at = lead + 4 + header.byteLength;
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
  const payloads: Uint8Array[] = [];
  let at = 5 + headerLen;
  for (const [i, size] of payloadSizes(frame).entries()) {
    if (at + size > bytes.byteLength) {
      throw new WireError(ErrorCode.BAD_FRAME, `payload ${i} of a ${frame.t} frame (${size} bytes) runs past the frame end`);
    }
    payloads.push(bytes.subarray(at, at + size));
    at += size;
  }
  if (at !== bytes.byteLength) {
    throw new WireError(ErrorCode.BAD_FRAME, `${bytes.byteLength - at} trailing bytes after the last payload`);
  }
  return { frame, payloads };
}

/** Convenience for frames without payloads. */
export function encodeControl(frame: Exclude<Frame, WithPayload>): Uint8Array {
  return encodeFrame(frame);
}

export function errorFrame(code: ErrorCode, message: string, extra: Partial<Omit<ErrorFrame, "t" | "code" | "message">> = {}): Uint8Array {
  return encodeFrame({ t: "error", code, message: message.slice(0, 2048), ...extra });
}

export const HEARTBEAT_PING = "ping";
export const HEARTBEAT_PONG = "pong";
