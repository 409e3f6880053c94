import type { DeadLetterView, ErrorCode, PubMessage } from "../../wire/index.ts";

/** A route as the channel object keeps it (its own copy of D1's row). */
export type ChannelRoute = {
  destination: string;
  ttlSeconds: number;
  protection: string;
  archive: boolean;
  /** How long archives (and their log rows) are kept; null: the default. */
  retentionSeconds?: number | null;
  /** Jurisdiction the source is pinned to (all its routes share it). */
  region?: string | null;
  /** Suspends purging of this source's archives. */
  legalHold?: boolean;
  /** Channel fields this route records in the event log (null or absent: all). */
  fields?: string[] | null;
  /** "exceptions": no per-message lifecycle events (captured, accepted, delivered, receipts) for this route. */
  log?: "full" | "exceptions";
  /** A hosted destination: the edge itself delivers by HTTPS POST. */
  egress?: { url: string; secret: string | null } | null;
};

export type PublishRequest = {
  tenant: string;
  source: string;
  epoch: string;
  msgs: PubMessage[];
  payloads: Uint8Array[];
};

/** A message POSTed to a hosted ingress address (the edge is its connector). */
export type IngestRequest = {
  tenant: string;
  source: string;
  body: Uint8Array;
  contentType: string;
  fields?: Record<string, string>;
  /** Retries of the same POST with this key are answered with the first message. */
  idempotencyKey?: string;
};

/** `firstSha256`: for a duplicate, the digest of the body first sent with the key (null for keys kept before digests were). */
export type IngestResult = { ok: true; id: string; seq: number; duplicate: boolean; firstSha256?: string | null } | { ok: false; code: ErrorCode; message: string };

/**
 * `upTo` is the cumulative high-water mark after this call: everything at or
 * below it is committed. `gap` is set when the batch skipped ahead;
 * `incomplete` when it stopped at a claim check whose payload the edge does
 * not hold whole (the sender uploads it, then resends from there).
 */
export type PublishResult =
  | { ok: true; upTo: number; accepted: number; duplicates: number; gap?: { expected: number }; incomplete?: { id: string; message: string } }
  | { ok: false; code: ErrorCode; message: string; upTo?: number };

export type AckResult = { ok: true; acked: number } | { ok: false; code: ErrorCode; message: string };

export type StreamStatus = {
  destination: string;
  nextDseq: number;
  acked: number;
  queued: number;
  online: boolean;
};

/** A dead letter as its channel object knows it (the API adds the source). */
export type DeadLetter = Omit<DeadLetterView, "source">;
