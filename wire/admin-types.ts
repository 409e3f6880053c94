/**
 * The admin API's response shapes: the edge's presenters produce them, the
 * portal and the CLI consume them. Types only; nothing here runs.
 */
export type ConnectorView = {
  id: string;
  name: string;
  status: "pending" | "active" | "revoked" | string;
  createdAt: number;
  enrolledAt: number | null;
  lastSeenAt: number | null;
  online?: boolean;
  connectedAt?: number | null;
  /** What the connector reports it runs. */
  version?: string | null;
  /** Messages waiting at the edge for this connector (its backlog there). */
  waiting?: number;
  /** Regions its routes are pinned to. */
  regions?: string[];
};

export type RouteView = {
  id: string;
  source: string;
  destination: string;
  protection: string;
  /** "gzip": large payloads travel compressed when it pays. */
  compress?: string;
  /** "full": every message's lifecycle is logged; "exceptions": only what went wrong. */
  log?: string;
  ttl: number;
  archive: boolean;
  retention: number | null;
  region: string | null;
  legalHold: boolean;
  /** Channel fields recorded in the log; null: all of them. */
  fields: string[] | null;
  createdAt: number;
};

export type EventView = {
  id: number;
  messageId: string;
  type: string;
  at: number;
  time: string;
  place: string;
  source: string;
  destination: string | null;
  seq: number | null;
  size: number | null;
  sha256: string | null;
  fields: Record<string, string> | null;
  detail: unknown;
  chain: string | null;
  chainSeq: number | null;
  prevHash: string | null;
  hash: string | null;
};

export type DeadLetterView = {
  source: string;
  destination: string;
  id: string;
  seq: number;
  size: number;
  sha256: string;
  reason: string;
  deadAt: number;
  createdAt: number;
  fields: Record<string, string> | null;
};

export type OverviewView = {
  connectors: { total: number; online: number; pending: number; revoked: number };
  routes: number;
  deadLetters: number;
  /** Per minute over the last hour, oldest first: accepted and delivered counts and bytes. */
  perMinute: { minute: number; accepted: number; delivered: number; bytes: number }[];
  recentFailures: EventView[];
  /**
   * Messages waiting at the edge (accepted, not yet acknowledged by their
   * destination): in total and per destination address, largest first.
   * Optional: edges before this field do not send it.
   */
  backlog?: { total: number; destinations: { destination: string; queued: number }[] };
};

export type AdminLogEntry = { id: number; at: number; actor: string; action: string; target: string | null; detail: unknown };

export type Problem = { type: string; title: string; status: number; detail: string; errors?: { field: string; message: string }[] };

/**
 * A large payload on its way (`GET /api/transfers`): its upload from the
 * source connector into the edge's R2, then each destination's download.
 * Finished transfers drop out of the list once every destination has it.
 */
export type TransferView = {
  id: string;
  source: string;
  filename: string | null;
  size: number;
  parts: number;
  /** Parts the edge holds; `parts` when the upload is complete. */
  uploaded: number;
  /** Per destination: the highest part it has fetched (0: not started). */
  downloads: { destination: string; fetched: number }[];
  /** Relayed straight to its destinations while they are online: the edge stores none of it (D19). */
  relayed?: boolean;
  updatedAt: number;
};

/**
 * What an object did that Cloudflare bills, counted as it happens (memory
 * only, since the object started): GET /api/debug/usage. R2 operations are
 * not counted (none on a small message's path).
 */
export type Usage = {
  /** RPC calls and alarms handled (each a billed request). */
  requests: number;
  /** WebSocket messages received (billed 20:1). */
  webSocketMessagesIn: number;
  sqlRowsRead: number;
  sqlRowsWritten: number;
  /** As local D1 reports them in each result's `meta` (index entries included). */
  d1RowsRead: number;
  d1RowsWritten: number;
};

/** GET /api/debug/usage: a source's channel object and connectors' session objects. */
export type UsageView = { channel: Usage | null; sessions: Record<string, Usage> };
