/**
 * What one message costs on Cloudflare at list prices, counted from the
 * code (ANALYTIC: local workerd exposes no billing counters; see the
 * report for the hooks that would let the bench measure them). The path is
 * one source to one destination; `batch` is how many messages share a pub
 * frame, a SQLite transaction, a deliver frame and an ack (1 for one at a
 * time; the connector sends up to 1,024 per frame, the channel object
 * delivers up to 512 per frame). Every count names the code it comes from.
 */

/** Cloudflare list prices, USD, as published (docs/performance.md cites the pages). */
export const PRICES = {
  /** Durable Objects: requests (HTTP, RPC sessions, alarms), per million; incoming WebSocket messages count 20:1. */
  doRequestPerM: 0.15,
  wsMessagesPerRequest: 20,
  /** Durable Objects duration, per million GB-s (128 MB per active object). */
  doGbSecondPerM: 12.5,
  objectGb: 0.128,
  /** SQLite in Durable Objects, and D1: per million rows. */
  sqliteRowReadPerM: 0.001,
  sqliteRowWrittenPerM: 1.0,
  d1RowReadPerM: 0.001,
  d1RowWrittenPerM: 1.0,
  /** R2 standard: Class A (writes) and Class B (reads), per million. */
  r2ClassAPerM: 4.5,
  r2ClassBPerM: 0.36,
  /** Workers Standard: requests, per million. */
  workerRequestPerM: 0.3,
} as const;

/**
 * event_batches (migration 0013): a batch's row, its unique chain position
 * and three indexes (time, source, stream position): five rows; six for
 * delivered batches (the partial destination index), which also hold the
 * ack's signed receipt. Exceptions are rows of `events`, none per message.
 */
const D1_ROWS_PER_BATCH = 5;
/** message_index: one row per accepted message (WITHOUT ROWID, no other index). */
const D1_ROWS_PER_MESSAGE = 1;
/** The channel object's deliver frames carry at most 512 messages (channel.ts BATCH_MESSAGES). */
const DELIVER_BATCH = 512;

export type Ops = {
  doRequests: number;
  wsMessagesIn: number;
  sqliteRowsRead: number;
  sqliteRowsWritten: number;
  d1RowsRead: number;
  d1RowsWritten: number;
  r2ClassA: number;
  r2ClassB: number;
  workerRequests: number;
};

/**
 * Billable operations per message. `log`: the per-message event log
 * (captured, accepted, delivered; the receipt) staged in the channel
 * object's outbox and copied to D1. `queued`: messages held by the channel
 * object (a backlog larger than a batch is read back from SQLite, a row per
 * segment). `fields`:
 * recorded channel fields per message (a file carries its name): one
 * message_fields row per field of each accepted message (migration 0013).
 */
export function opsPerMessage(batch: number, log: boolean, queued = batch, fields = 0, perFlush = batch): Ops {
  const b = Math.max(1, batch);
  const d = Math.min(b, DELIVER_BATCH);
  // Messages whose events share a flush (and so its batches): at least a frame's.
  const f = Math.max(b, perFlush);
  // Staging calls (one outbox row each): publish once per batch; ack once (its delivered events and the receipt).
  const stagings = log ? 1 / b + 1 / d : 0;
  // Each row is read and deleted once; per flush the chain head is read and moved and the flush's range recorded and cleared.
  const flushWritten = log ? stagings + 3 / f : 0;
  const flushRead = log ? stagings + 2 / f : 0;
  return {
    // session.onPub -> channel.publish; channel.pump -> session.deliver; session.onAck -> channel.ack; channel.receipt -> session.notify.
    doRequests: 1 / b + 1 / d + 1 / d + 1 / d,
    // The pub frame into the sender's session object, the ack frame into the receiver's.
    wsMessagesIn: 1 / b + 1 / d,
    sqliteRowsRead:
      // pump: a few runs and the live position before the frame, once per frame (segments are read from memory while cached)
      3 / d +
      // ack: the runs acknowledged, then each finished segment's reference count
      1 / d + 1 / b +
      // ensureAlarm after each publish: min(expires_at) via the index, count(*) of the outbox
      (1 + (log ? 1 : 0)) / b +
      // a segment read back from SQLite once it has left the cache (a backlog): one row per segment
      (queued > b ? 1 / b : 0) +
      flushRead,
    sqliteRowsWritten:
      // publish, once per batch (one segment per MiB of payload): the segment's row (its bytes in it: one destination
      // holds it; with more, a second row); the destination's run and its expiry index entry; the position row (D28)
      (1 + 2 + 1) / b +
      // ack, once per frame: the cursor; once per segment done: its run deleted (workerd counts the index entry's
      // deletion in no row) and its row (the count is read, not written, when it reaches zero)
      1 / d + (1 + 1) / b +
      // the event outbox: rows staged, then deleted and the chain head moved when flushed
      stagings + flushWritten,
    // The log: each insert checks its chain positions are not taken (a lookup or two by index; migration 0013's triggers).
    d1RowsRead: log ? (2 * 2 + 2) / f : 0,
    // A captured, an accepted and a delivered batch (with the receipts) per flush; a lookup row (and a row per field) per message.
    d1RowsWritten: log ? (2 * D1_ROWS_PER_BATCH + D1_ROWS_PER_BATCH + 1) / f + D1_ROWS_PER_MESSAGE + fields : 0,
    // Inline payloads (<= 1 MiB) never touch R2 unless the route archives; no Worker request per message (one WebSocket per connection).
    r2ClassA: 0,
    r2ClassB: 0,
    workerRequests: 0,
  };
}

export type Priced = Ops & { usdPerMillion: number; breakdown: Record<string, number> };

/**
 * $ per million messages. `activeObjectSeconds`: wall time the path's
 * objects (two sessions, one channel) were active per message; under load
 * they never hibernate, so it is 3 / throughput.
 */
export function price(ops: Ops, msgsPerSec: number): Priced {
  const p = PRICES;
  const durationGbS = msgsPerSec > 0 ? (3 / msgsPerSec) * p.objectGb : 0;
  const breakdown = {
    "DO requests": (ops.doRequests + ops.wsMessagesIn / p.wsMessagesPerRequest) * p.doRequestPerM,
    "DO duration": durationGbS * p.doGbSecondPerM,
    "DO SQLite rows read": ops.sqliteRowsRead * p.sqliteRowReadPerM,
    "DO SQLite rows written": ops.sqliteRowsWritten * p.sqliteRowWrittenPerM,
    "D1 rows": ops.d1RowsRead * p.d1RowReadPerM + ops.d1RowsWritten * p.d1RowWrittenPerM,
    R2: ops.r2ClassA * p.r2ClassAPerM + ops.r2ClassB * p.r2ClassBPerM,
    "Worker requests": ops.workerRequests * p.workerRequestPerM,
  };
  // Each term is "per message x price per million" = $ per million messages.
  return { ...ops, usdPerMillion: Object.values(breakdown).reduce((a, b) => a + b, 0), breakdown };
}

/**
 * An idle connector for a 30-day month: its socket hibernates (no duration);
 * a heartbeat ping every 15 s answered by the runtime's auto-response
 * (counted here as an incoming WebSocket message, the worst case), and the
 * CLI agent's config refresh every 10 minutes (a Worker request reading
 * its routes and peers' keys from D1, a handful of rows).
 */
export function idleConnectorPerMonth(heartbeatSeconds = 15, refreshSeconds = 600, d1RowsPerRefresh = 10): { usd: number; breakdown: Record<string, number> } {
  const month = 30 * 24 * 3600;
  const pings = month / heartbeatSeconds;
  const refreshes = month / refreshSeconds;
  const p = PRICES;
  const breakdown = {
    "heartbeats (incoming WebSocket messages, 20:1)": (pings / p.wsMessagesPerRequest / 1e6) * p.doRequestPerM,
    "config refresh (Worker requests)": (refreshes / 1e6) * p.workerRequestPerM,
    "config refresh (D1 rows read)": ((refreshes * d1RowsPerRefresh) / 1e6) * p.d1RowReadPerM,
    "duration (hibernated)": 0,
  };
  return { usd: Object.values(breakdown).reduce((a, b) => a + b, 0), breakdown };
}
