/**
 * Protocol errors shared by the edge and the connector. Every error a peer
 * can see carries a closed `code` so callers switch on it instead of parsing
 * messages (the shape jose and nats.js use).
 */
export const ErrorCode = {
  /** The frame could not be decoded or failed validation. */
  BAD_FRAME: "BAD_FRAME",
  /** A frame or payload is larger than the protocol allows. */
  TOO_LARGE: "TOO_LARGE",
  /** The sender may not use this address (not its own, or no ACL). */
  FORBIDDEN: "FORBIDDEN",
  /** No route leaves this source address yet; the sender keeps the messages. */
  NO_ROUTE: "NO_ROUTE",
  /** A sequence number skipped ahead; `expected` says where to resend from. */
  SEQ_GAP: "SEQ_GAP",
  /** Frames from an older spool incarnation after a newer one began. */
  STALE_EPOCH: "STALE_EPOCH",
  /** An ack for something never sent (ahead of what was delivered). */
  BAD_ACK: "BAD_ACK",
  /** The stream is unknown to this side. */
  UNKNOWN_STREAM: "UNKNOWN_STREAM",
  /** Storage failed on the edge; nothing of the frame was accepted. */
  STORAGE: "STORAGE",
  /** The connector sends faster than its allowance; it backs off and resends. */
  RATE_LIMITED: "RATE_LIMITED",
  /** Authentication failed or expired. */
  UNAUTHORIZED: "UNAUTHORIZED",
  /** Anything else on the edge; nothing was accepted. */
  INTERNAL: "INTERNAL",
  /** A chunk of a large payload failed its digest or size check; resend that part. */
  BAD_CHUNK: "BAD_CHUNK",
  /** A message refers to a large payload the edge does not hold whole; upload it (again), then resend. */
  UPLOAD_INCOMPLETE: "UPLOAD_INCOMPLETE",
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

export class WireError extends Error {
  override readonly name = "WireError";
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly detail: Record<string, unknown> = {},
  ) {
    super(message);
  }
}

/** WebSocket close codes (4000-4999 are the application's). */
export const CloseCode = {
  NORMAL: 1000,
  GOING_AWAY: 1001,
  PROTOCOL: 1002,
  TOO_BIG: 1009,
  /** A newer connection of the same connector took over. */
  REPLACED: 4000,
  UNAUTHORIZED: 4001,
  /** The connector was revoked by an administrator. */
  REVOKED: 4003,
  /** The peer sent too many bad frames; reconnect and start over. */
  BAD_PEER: 4008,
} as const;
