import { DurableObject } from "cloudflare:workers";
import {
  encodeFrame,
  ErrorCode,
  Limits,
  newMessageId,
  splitAddress,
  toHex,
  type DeliverMessage,
  type PubMessage,
  type RelayedFrame,
  type TransferView,
  type UploadFrame,
} from "../../wire/index.ts";
import type { AckResult, ChannelRoute, DeadLetter, IngestRequest, IngestResult, PublishRequest, PublishResult, StreamStatus } from "./types.ts";
import { EventOutbox, type LoggedEvent, type StagedMessage } from "./events.ts";
import { Archiver } from "./archive.ts";
import { ABANDON_AFTER_MS, RelayMode, Transfers, type PartResult, type UploadState } from "./transfers.ts";
import { ReceiptOutbox } from "./receipts.ts";
import { Relays, type RelayStep } from "./relay.ts";
import { edgeSign } from "../../workers/edge-keys.ts";
import { meteredSql, newUsage, type Usage } from "../usage.ts";
import { encodeSegment, migrateLegacy, SEGMENT_BYTES, Segments, type Segment, type StoredMessage } from "./segments.ts";
import { webhookSignature, webhookSignatureOfStream } from "../../workers/signatures.ts";

/** Unacknowledged messages in flight to one destination (the credit window). */
const WINDOW_MESSAGES = 4096;
const WINDOW_BYTES = 16 * 1024 * 1024;
/** One deliver frame carries at most this much. */
const BATCH_MESSAGES = 512;
const BATCH_BYTES = 4 * 1024 * 1024;
/** Without ack progress for this long, in-flight messages are pushed again. */
const REDELIVER_AFTER_MS = 30_000;
const ALARM_EVERY_MS = 30_000;
/** The spool epoch of messages a hosted ingress takes in (this object is their sender). */
const HOSTED_EPOCH = "hosted-ingress";
/** Idempotency keys of hosted ingress are remembered this long. */
const INGEST_KEY_TTL_MS = 7 * 86_400_000;
/** Hosted egress: one attempt's time limit, and the longest pause between attempts. */
const EGRESS_TIMEOUT_MS = 30_000;
const EGRESS_MAX_BACKOFF_MS = 5 * 60_000;
/** Archive retention when the route names none. */
const DEFAULT_RETENTION_S = 30 * 86400;

type Cursor = { next: number; acked: number };
/** The meta row 'pos' (see position()). */
type Position = { hwm: number; mseq: number; next: Record<string, number> };

/** Durable Object SQL binds at most 100 parameters per statement. */
const MAX_BOUND_PARAMETERS = 100;
/**
 * One destination's queue, as runs: dseqs start..end are the consecutive
 * messages mseq.. of one segment (seg), all expiring together. A batch is
 * one run per destination, not a row per message.
 */
type Run = { end_dseq: number; start_dseq: number; mseq: number; seg: number };
const RUN_COLUMNS = "end_dseq, start_dseq, mseq, seg";
/** A message at its place in one destination's stream. */
type QueuedMessage = StoredMessage & { dseq: number; mseq: number; seg: number; payload: Uint8Array };

/** About what a message's envelope takes in a segment's header (JSON), without serialising it. */
function envelopeBytes(m: PubMessage): number {
  let n = 128 + m.id.length + m.contentType.length + (m.sig?.length ?? 0) + (m.blob ? 512 + (m.blob.key?.length ?? 0) : 0);
  if (m.fields) for (const k in m.fields) n += k.length + (m.fields[k]?.length ?? 0) + 6;
  return n;
}

/** A hosted endpoint must take a large payload at least this fast (bytes per second), on top of EGRESS_TIMEOUT_MS. */
const EGRESS_MIN_RATE = 2 * 1024 * 1024;

/**
 * The channel object: one per source address (`tenant:connector/channel`).
 * It sequences and dedups what the source sends (exact, by the sender's
 * sequence high-water mark per spool epoch), stores each message once in
 * SQLite and acknowledges only after the commit, then fans it out: every
 * destination has its own stream sequence (`dseq`), cursor and credit
 * window, so a slow or offline destination never holds another back.
 */
export class ChannelObject extends DurableObject<Env> {
  private readonly sql: SqlStorage;
  private readonly events: EventOutbox;
  private readonly archiver: Archiver;
  private readonly transfers: Transfers;
  private readonly relays: Relays;
  private readonly segments: Segments;
  private tenant = "";
  private source = "";
  private epoch = "";
  private hwm = 0;
  private nextMseq = 1;
  /** Random per object lifetime of storage: receivers start a stream afresh if it changes. */
  private incarnation = "";
  private routes: ChannelRoute[] = [];
  /** The source's region pin, kept even when its routes are removed (its log stays there). */
  private region: string | null = null;
  private cursors = new Map<string, Cursor>();
  // In memory only: what was pushed and not yet acknowledged. Lost on
  // eviction, which only means a harmless redelivery the receiver dedups.
  private sent = new Map<string, number>();
  /**
   * Per destination: bumped whenever `sent` is moved back (a resend, an
   * attach, a redelivery). A pump that was awaiting a push meanwhile must not
   * move `sent` past the rewind, or the frames asked for again never go.
   */
  private rewinds = new Map<string, number>();
  private lastProgress = new Map<string, number>();
  private offline = new Set<string>();
  private pumping = new Set<string>();
  private again = new Set<string>();
  /** Per spool epoch: the highest seq already logged as rejected (memory only: at worst logged again). */
  private rejectedUpTo = new Map<string, number>();
  /** Hosted egress backoff, per destination (memory only: after eviction it simply tries again). */
  private egressRetryAt = new Map<string, number>();
  private egressFailures = new Map<string, number>();
  /** Per destination and large payload: the highest part fetched (memory only; a progress view). */
  private fetched = new Map<string, number>();
  private alarmChain: Promise<void> = Promise.resolve();
  private readonly receipts = new ReceiptOutbox((frames) => this.session(splitAddress(this.source).connector).notify(frames));
  /** Billable operations since this object started (see usage()). */
  private readonly usageNow = newUsage();
  private readonly settleSql: () => void;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    // Every statement through the meter: the bench reads what a message costs (usage()).
    const metered = meteredSql(ctx.storage.sql, this.usageNow);
    this.sql = metered.sql;
    this.settleSql = metered.settle;
    this.sql.exec(`
      CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
      CREATE TABLE IF NOT EXISTS retired_epochs (epoch TEXT PRIMARY KEY);
      CREATE TABLE IF NOT EXISTS cursors (destination TEXT PRIMARY KEY, next_dseq INTEGER NOT NULL, acked INTEGER NOT NULL);
      CREATE TABLE IF NOT EXISTS runs (
        destination TEXT NOT NULL, end_dseq INTEGER NOT NULL, start_dseq INTEGER NOT NULL, mseq INTEGER NOT NULL, seg INTEGER NOT NULL,
        expires_at INTEGER NOT NULL, claim INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (destination, end_dseq)) WITHOUT ROWID;
      CREATE INDEX IF NOT EXISTS runs_by_expiry ON runs (expires_at);
      CREATE INDEX IF NOT EXISTS runs_of_claim_checks ON runs (seg) WHERE claim = 1;
      CREATE TABLE IF NOT EXISTS ingest_keys (key TEXT PRIMARY KEY, id TEXT NOT NULL, seq INTEGER NOT NULL, at INTEGER NOT NULL);
      CREATE TABLE IF NOT EXISTS dead_letters (destination TEXT NOT NULL, dseq INTEGER NOT NULL, mseq INTEGER NOT NULL, reason TEXT NOT NULL, at INTEGER NOT NULL, PRIMARY KEY (destination, dseq)) WITHOUT ROWID;
    `);
    // Objects created before idempotency digests existed get their column.
    try {
      this.sql.exec("ALTER TABLE ingest_keys ADD COLUMN sha256 TEXT");
    } catch {
      // the column exists
    }
    this.segments = new Segments(this.sql);
    this.events = new EventOutbox(ctx, env, () => this.region, (f) => this.loggedFields(f), this.sql, this.usageNow);
    this.archiver = new Archiver(ctx, env, this.events, this.segments, (mseq) => this.unref(mseq), (mseq) => this.transfers.location(mseq), this.sql);
    this.transfers = new Transfers(ctx, env, this.sql);
    this.relays = new Relays({ transfers: this.transfers, session: (connector) => this.session(connector) });
    const migrated = migrateLegacy(this.sql, (f) => this.ctx.storage.transactionSync(f));
    if (migrated > 0) console.log(`${ctx.id.toString()}: moved ${migrated} stored messages into segments`);
    this.load();
  }

  /** (Re)reads the in-memory view from SQLite: at start, and after a failed transaction. */
  private load(): void {
    const meta = new Map(this.sql.exec<{ k: string; v: string }>("SELECT k, v FROM meta").toArray().map((r) => [r.k, r.v]));
    this.tenant = meta.get("tenant") ?? "";
    this.source = meta.get("source") ?? "";
    this.epoch = meta.get("epoch") ?? "";
    this.incarnation = meta.get("incarnation") ?? "";
    if (this.incarnation === "") {
      this.incarnation = crypto.randomUUID().replace(/-/g, "").slice(0, 16);
      this.sql.exec("INSERT OR REPLACE INTO meta (k, v) VALUES ('incarnation', ?)", this.incarnation);
    }
    this.routes = JSON.parse(meta.get("routes") ?? "[]") as ChannelRoute[];
    this.region = meta.get("region") || null;
    this.cursors = new Map(
      this.sql
        .exec<{ destination: string; next_dseq: number; acked: number }>("SELECT * FROM cursors")
        .toArray()
        .map((r) => [r.destination, { next: r.next_dseq, acked: r.acked }]),
    );
    const pos = meta.get("pos");
    if (pos !== undefined) {
      const p = JSON.parse(pos) as Position;
      this.hwm = p.hwm;
      this.nextMseq = p.mseq;
      // Positions only grow: a cursor row is as new as the position row, or older.
      for (const [d, next] of Object.entries(p.next)) {
        const c = this.cursors.get(d);
        if (c) c.next = Math.max(c.next, next);
      }
    } else {
      this.hwm = Number(meta.get("hwm") ?? 0);
      this.nextMseq = Number(meta.get("next_mseq") ?? 1);
      // An object from before the position row: its separate keys move into it once. (A new object writes the row when it first accepts.)
      if (meta.has("hwm") || meta.has("next_mseq")) {
        this.ctx.storage.transactionSync(() => {
          this.writePosition();
          this.sql.exec("DELETE FROM meta WHERE k IN ('hwm', 'next_mseq')");
        });
      }
    }
  }

  /**
   * Where the streams stand: the source's high-water mark, the next message
   * number and each destination's next position, as one meta row. Every
   * accepting transaction rewrites it: one row written, where a key per
   * number and a cursor row per destination were four rows and one per
   * destination (rows written are billed; one at a time, a message is a
   * transaction). The cursor rows keep what was acknowledged.
   */
  private position(): string {
    const p: Position = { hwm: this.hwm, mseq: this.nextMseq, next: Object.fromEntries([...this.cursors].map(([d, c]) => [d, c.next])) };
    return JSON.stringify(p);
  }

  private writePosition(): void {
    // An upsert, not INSERT OR REPLACE: replacing an existing row is billed as two rows (deleted, inserted).
    this.sql.exec("INSERT INTO meta (k, v) VALUES ('pos', ?) ON CONFLICT (k) DO UPDATE SET v = excluded.v", this.position());
  }

  private identify(tenant: string, source: string): void {
    if (this.tenant === tenant && this.source === source) return;
    if (this.tenant !== "" && (this.tenant !== tenant || this.source !== source)) {
      // Names are derived from tenant and source, so this is a routing bug, never a user error.
      throw new Error(`channel object of ${this.tenant}:${this.source} addressed as ${tenant}:${source}`);
    }
    this.sql.exec("INSERT OR REPLACE INTO meta (k, v) VALUES ('tenant', ?), ('source', ?)", tenant, source);
    this.tenant = tenant;
    this.source = source;
    this.events.identify(tenant, source);
  }

  /** Replaces this source's routes (pushed by the admin API after D1 changes). */
  async configure(tenant: string, source: string, routes: ChannelRoute[]): Promise<void> {
    this.usageNow.requests++;
    this.identify(tenant, source);
    this.ctx.storage.transactionSync(() => {
      // Routes are few and read whole: one JSON value, no table to migrate as they grow fields.
      this.sql.exec("INSERT OR REPLACE INTO meta (k, v) VALUES ('routes', ?)", JSON.stringify([...routes].sort((a, b) => (a.destination < b.destination ? -1 : 1))));
      for (const r of routes) this.sql.exec("INSERT OR IGNORE INTO cursors VALUES (?, 1, 0)", r.destination);
      if (routes[0]) this.sql.exec("INSERT OR REPLACE INTO meta (k, v) VALUES ('region', ?)", routes[0].region ?? "");
    });
    this.load();
  }

  /**
   * A message POSTed to a hosted ingress address: the edge is its connector,
   * so this object numbers it itself (its own spool epoch) and honours the
   * request's idempotency key exactly, in the same transaction that stores it.
   */
  async ingest(req: IngestRequest): Promise<IngestResult> {
    this.usageNow.requests++;
    const sha256 = toHex(await crypto.subtle.digest("SHA-256", req.body));
    this.identify(req.tenant, req.source);
    if (req.idempotencyKey) {
      const prior = this.sql.exec<{ id: string; seq: number; sha256: string | null }>("SELECT id, seq, sha256 FROM ingest_keys WHERE key = ?", req.idempotencyKey).toArray()[0];
      if (prior) return { ok: true, id: prior.id, seq: prior.seq, duplicate: true, firstSha256: prior.sha256 };
    }
    const id = newMessageId();
    const seq = (this.epoch === HOSTED_EPOCH ? this.hwm : 0) + 1;
    const msg: PubMessage = { seq, id, createdAt: Date.now(), contentType: req.contentType, size: req.body.byteLength, sha256, ...(req.fields ? { fields: req.fields } : {}) };
    const res = await this.accept({ tenant: req.tenant, source: req.source, epoch: HOSTED_EPOCH, msgs: [msg], payloads: [req.body] }, req.idempotencyKey);
    if (!res.ok) return { ok: false, code: res.code, message: res.message };
    return { ok: true, id, seq, duplicate: false };
  }

  /**
   * Accepts a batch from the source connector. Exactly once: seq <= hwm is a
   * duplicate (acknowledged again, stored nothing), seq == hwm + 1 is stored,
   * anything further ahead stops the batch with a gap. All of one batch is one
   * transaction, so one commit (one fsync) for many messages.
   */
  async publish(req: PublishRequest): Promise<PublishResult> {
    this.usageNow.requests++;
    return this.accept(req);
  }

  /** publish's work, also for hosted ingress (one request, not two: the usage meter counts RPCs). */
  private async accept(req: PublishRequest, ingestKey?: string): Promise<PublishResult> {
    this.identify(req.tenant, req.source);
    if (this.routes.length === 0) {
      return this.reject(req, ErrorCode.NO_ROUTE, `no route from ${req.source}; the connector keeps the messages and retries`);
    }
    if (req.epoch !== this.epoch) {
      const retired = this.sql.exec("SELECT 1 FROM retired_epochs WHERE epoch = ?", req.epoch).toArray().length > 0;
      if (retired) return { ok: false, code: ErrorCode.STALE_EPOCH, message: `spool epoch ${req.epoch} was replaced by a newer one` };
      const first = req.msgs[0];
      if (this.epoch !== "" && first?.seq !== 1) {
        return { ok: false, code: ErrorCode.STALE_EPOCH, message: `a new spool epoch must start at seq 1, got ${first?.seq}` };
      }
    }
    // The route's protection is enforced here too: a stale or hostile sender cannot downgrade it.
    const required = this.routes[0]?.protection ?? "none";
    const weak = req.msgs.find((m) => (m.protection ?? "none") !== required || (required !== "none" && !m.sig));
    if (weak) {
      return this.reject(req, ErrorCode.FORBIDDEN, `routes from ${req.source} require '${required}' protection; message seq ${weak.seq} is '${weak.protection ?? "none"}'${required !== "none" && !weak.sig ? " without a signature" : ""}`);
    }
    const now = Date.now();
    const archiving = this.routes.filter((r) => r.archive);
    const retainUntil = now + Math.max(...archiving.map((r) => r.retentionSeconds ?? DEFAULT_RETENTION_S), 0) * 1000;
    let accepted = 0;
    let duplicates = 0;
    let gap: { expected: number } | undefined;
    let incomplete: { id: string; message: string } | undefined;
    const logged: StagedMessage[] = [];
    const ttl = Math.min(...this.routes.map((r) => r.ttlSeconds));
    // Segments gathered in the loop and written, with their runs, many rows per statement at its end (same transaction).
    const segments: { seg: Segment; data: Uint8Array }[] = [];
    let open: Segment | null = null;
    const expiresAt = now + ttl * 1000;
    const close = () => {
      if (open && open.msgs.length > 0) {
        const data = encodeSegment(now, expiresAt, open.msgs, open.payloads);
        // Views of the stored bytes, as a segment read back has them: the frame's buffer is not kept.
        let at = data.byteLength;
        for (let i = open.payloads.length - 1; i >= 0; i--) {
          const n = (open.payloads[i] as Uint8Array).byteLength;
          at -= n;
          open.payloads[i] = data.subarray(at, at + n);
        }
        segments.push({ seg: { ...open, bytes: data.byteLength }, data });
      }
      open = null;
    };
    // Captured and accepted are logged unless every route from here logs exceptions only.
    const lifecycle = this.routes.some((r) => r.log !== "exceptions");
    const site = `site:${splitAddress(this.source).connector}`;
    const destinations = this.routes.map((r) => r.destination);
    let epochChanged = false;
    try {
      this.ctx.storage.transactionSync(() => {
        if (req.epoch !== this.epoch) {
          epochChanged = true;
          if (this.epoch !== "") this.sql.exec("INSERT OR IGNORE INTO retired_epochs VALUES (?)", this.epoch);
          // A channel object that never saw this source adopts the stream
          // where it stands (the sender's spool may be older than this
          // object); a new epoch of a known source starts at 1 (checked above).
          this.hwm = this.epoch === "" ? Math.max(0, (req.msgs[0]?.seq ?? 1) - 1) : 0;
          this.epoch = req.epoch;
        }
        for (let i = 0; i < req.msgs.length; i++) {
          const m = req.msgs[i] as PubMessage;
          const payload = req.payloads[i] as Uint8Array;
          if (m.seq <= this.hwm) {
            duplicates++;
            continue;
          }
          if (m.seq !== this.hwm + 1) {
            gap = { expected: this.hwm + 1 };
            break;
          }
          const mseq = this.nextMseq;
          // A claim check is accepted only if its payload is stored whole; the batch stops at one that is not.
          if (m.blob) {
            const bound = this.transfers.bind(m.id, m.size, m.sha256, mseq, this.relayable() ? this.routes.map((r) => r.destination) : null);
            if (typeof bound === "string") {
              incomplete = { id: m.id, message: bound };
              break;
            }
          }
          this.nextMseq++;
          // A claim check gets a segment of its own: its R2 payload goes when it is done, not when its neighbours are.
          const current: Segment | null = open;
          // Envelopes count too: a frame's header may carry up to 1 MiB of fields and signatures.
          const size = payload.byteLength + envelopeBytes(m);
          if (m.blob || (current && current.bytes + size > SEGMENT_BYTES)) close();
          open ??= { first: mseq, acceptedAt: now, expiresAt, msgs: [], payloads: [], bytes: 0 };
          open.msgs.push({
            id: m.id, seq: m.seq, createdAt: m.createdAt, contentType: m.contentType, size: m.size, sha256: m.sha256,
            fields: m.fields ?? null, protection: m.protection ?? "none", sig: m.sig ?? null, blob: m.blob ?? null,
          });
          open.payloads.push(payload);
          open.bytes += size;
          if (m.blob) close();
          if (archiving.length > 0) this.archiver.stage(mseq, retainUntil, this.region, this.routes.map((r) => r.destination));
          this.hwm = m.seq;
          accepted++;
          if (ingestKey) this.sql.exec("INSERT INTO ingest_keys (key, id, seq, at, sha256) VALUES (?, ?, ?, ?, ?)", ingestKey, m.id, m.seq, now, m.sha256);
          // Its captured and accepted events (events.ts unstage).
          if (lifecycle) logged.push([m.id, m.seq, mseq, m.size, m.sha256, m.fields ?? null, m.createdAt, m.contentType]);
        }
        close();
        const segmentRows: SqlStorageValue[] = [];
        const dataRows: SqlStorageValue[] = [];
        const runRows: SqlStorageValue[] = [];
        for (const { seg, data } of segments) {
          // Each destination's run, and each archive job, holds the segment.
          const rows = this.segments.rows(seg, data, this.routes.length + (archiving.length > 0 ? seg.msgs.length : 0));
          segmentRows.push(...rows.meta);
          dataRows.push(...rows.data);
          for (const r of this.routes) {
            const cur = this.cursorFor(r.destination);
            runRows.push(r.destination, cur.next + seg.msgs.length - 1, cur.next, seg.first, seg.first, now + r.ttlSeconds * 1000, seg.msgs[0]?.blob ? 1 : 0);
            cur.next += seg.msgs.length;
          }
        }
        this.insertRows("INSERT INTO segments (first_mseq, count, refs, data) VALUES", 4, segmentRows);
        this.insertRows("INSERT INTO segment_data (first_mseq, data) VALUES", 2, dataRows);
        this.insertRows("INSERT INTO runs (destination, end_dseq, start_dseq, mseq, seg, expires_at, claim) VALUES", 7, runRows);
        // Rows written are billed: only what changed (a replayed batch writes nothing).
        if (epochChanged) this.sql.exec("INSERT OR REPLACE INTO meta (k, v) VALUES ('epoch', ?)", this.epoch);
        if (epochChanged || accepted > 0) this.writePosition();
        this.events.stageAccepted(now, site, destinations, logged);
      });
    } catch (e) {
      // Nothing of the batch was committed: forget what memory thinks happened.
      this.load();
      console.error("channel publish failed", e);
      return { ok: false, code: ErrorCode.STORAGE, message: `the edge could not store the batch (${(e as Error).message}); nothing was accepted, resend it` };
    }
    for (const { seg } of segments) this.segments.remember(seg);
    if (accepted > 0) {
      for (const r of this.routes) this.kick(r.destination);
      this.events.flushSoon();
      if (archiving.length > 0) this.archiver.flushSoon(this.tenant, this.source);
      await this.ensureAlarm();
    }
    return { ok: true, upTo: this.hwm, accepted, duplicates, ...(gap ? { gap } : {}), ...(incomplete ? { incomplete } : {}) };
  }

  /** Opens (or resumes) the upload of one large payload from the source connector. */
  async openUpload(tenant: string, source: string, f: UploadFrame): Promise<UploadState> {
    this.usageNow.requests++;
    this.identify(tenant, source);
    if (this.routes.length === 0) return { ok: false, code: ErrorCode.NO_ROUTE, message: `no route from ${source}; the connector keeps the file and retries` };
    const destinations = this.routes.map((r) => r.destination);
    const prior = this.transfers.row(f.id);
    if (prior?.relay === RelayMode.RELAYING && !(await this.relays.resume(f.id, prior.have))) {
      await this.relays.end(f.id, "not every destination is online to go on", false);
    } else if (prior?.relay === RelayMode.RELAYED && (!this.relayable() || this.transfers.notRelayedTo(prior, destinations))) {
      // Relayed whole, but the routes changed before the claim check came: store it for them.
      await this.transfers.toStore(f.id);
    }
    const res = (!prior && this.relayable() ? await this.relays.open(tenant, source, this.region, f, destinations) : null) ?? (await this.transfers.open(tenant, source, this.region, f));
    await this.ensureAlarm();
    return res;
  }

  /**
   * May uploads from this source be relayed (D19)? Not when a route keeps
   * a copy at the edge (archive) or delivers from it (hosted egress).
   */
  private relayable(): boolean {
    return this.routes.length > 0 && this.routes.every((r) => !r.archive && !r.egress);
  }

  /** One part of a large payload. */
  async putPart(tenant: string, source: string, id: string, part: number, bytes: Uint8Array, sha256: string): Promise<UploadState> {
    this.usageNow.requests++;
    this.identify(tenant, source);
    const row = this.transfers.row(id);
    // Sessions pass relayed parts on themselves (relayPart); one still running older code during a deploy sends them here.
    if (row?.relay === RelayMode.RELAYING) return this.relays.put(id, row.have, part, bytes, sha256);
    return this.transfers.put(id, part, bytes, sha256);
  }

  /**
   * A part the sender's session object passes on itself (it holds the
   * bytes: they need not cross to this object and back): what to push to
   * whom, or the answer now. Null: the upload is not relayed; putPart it.
   */
  async relayPart(tenant: string, source: string, id: string, part: number, len: number, psha: string): Promise<RelayStep | null> {
    this.usageNow.requests++;
    this.identify(tenant, source);
    const row = this.transfers.row(id);
    return row?.relay === RelayMode.RELAYING ? this.relays.take(id, row.have, part, len, psha) : null;
  }

  /** Destinations that did not take a part the sender's session pushed: the relay ends. */
  async relayGone(tenant: string, source: string, id: string, destinations: string[]): Promise<UploadState> {
    this.usageNow.requests++;
    this.identify(tenant, source);
    return this.relays.gone(id, destinations);
  }

  /** A destination's answer to a relayed part. */
  async relayAck(tenant: string, source: string, f: RelayedFrame): Promise<void> {
    this.usageNow.requests++;
    this.identify(tenant, source);
    await this.relays.answer(f);
  }

  /** One part of a large payload queued for `destination` (and for nobody else). */
  async getPart(tenant: string, source: string, destination: string, id: string, part: number): Promise<PartResult> {
    this.usageNow.requests++;
    this.identify(tenant, source);
    // A claim check is alone in its segment: queued for `destination` while a run of it there holds it.
    const mseq = this.transfers.mseqOf(id);
    const queued = mseq !== null && this.sql.exec("SELECT 1 FROM runs WHERE claim = 1 AND seg = ? AND destination = ? LIMIT 1", mseq, destination).toArray().length > 0;
    if (!queued) return { ok: false, code: ErrorCode.UNKNOWN_STREAM, message: `message ${id} is not queued for ${destination}` };
    // A receiver fetching parts is making progress: no redelivery while it does.
    this.lastProgress.set(destination, Date.now());
    const key = `${destination}>${id}`;
    this.fetched.set(key, Math.max(this.fetched.get(key) ?? 0, part));
    return this.transfers.part(id, part);
  }

  /** Large payloads on their way from this source (the admin API's transfers view). */
  async transferList(tenant: string, source: string): Promise<TransferView[]> {
    this.usageNow.requests++;
    this.identify(tenant, source);
    const list = this.transfers.list(source, (d, id) => this.fetched.get(`${d}>${id}`) ?? 0, (mseq) => this.segments.message(mseq)?.m.fields ?? null);
    // Progress of fetches is kept in memory only (after an eviction it reads 0 until the next part); forget finished ones.
    const live = new Set(list.map((t) => t.id));
    for (const k of this.fetched.keys()) if (!live.has(k.slice(k.indexOf(">") + 1))) this.fetched.delete(k);
    return list;
  }

  /**
   * Refuses a batch and logs each refused message once (the sender keeps it
   * and retries; its retries are not logged again while this object lives).
   * Only the id, sequence and size are logged: a refused message may be one
   * that should have been encrypted, so neither its fields nor its digest
   * (which would identify a known plaintext) reach the log.
   */
  private reject(req: PublishRequest, code: ErrorCode, message: string): PublishResult {
    const key = `${req.epoch}`;
    const seen = this.rejectedUpTo.get(key) ?? this.hwm;
    const fresh = req.msgs.filter((m) => m.seq > seen);
    if (fresh.length > 0) {
      const at = Date.now();
      this.ctx.storage.transactionSync(() =>
        this.events.stage(fresh.map((m) => ({ messageId: m.id, type: "rejected", at, seq: m.seq, size: m.size, sha256: null, destination: null, fields: null, detail: { code, reason: message } }))),
      );
      this.rejectedUpTo.set(key, Math.max(...fresh.map((m) => m.seq)));
      this.events.flushSoon();
    }
    return { ok: false, code, message };
  }

  /** The channel fields the routes ask to record: all unless every route names its own list. */
  private loggedFields(f: Record<string, string> | null | undefined): Record<string, string> | null {
    if (!f) return null;
    if (this.routes.length === 0 || this.routes.some((r) => !r.fields)) return f;
    const keep = new Set(this.routes.flatMap((r) => r.fields ?? []));
    return Object.fromEntries(Object.entries(f).filter(([k]) => keep.has(k)));
  }

  /**
   * Inserts `values` (rows of `columns` values, flat) with as many rows per
   * statement as the 100 bound parameters allow: one statement per message
   * cost more than everything else the object does to accept it.
   */
  private insertRows(insert: string, columns: number, values: SqlStorageValue[]): void {
    const perStatement = Math.floor(MAX_BOUND_PARAMETERS / columns) * columns;
    const row = `(${Array.from({ length: columns }, () => "?").join(", ")})`;
    for (let i = 0; i < values.length; i += perStatement) {
      const chunk = values.slice(i, i + perStatement);
      this.sql.exec(`${insert} ${Array.from({ length: chunk.length / columns }, () => row).join(", ")}`, ...chunk);
    }
  }

  /** The messages at dseqs from..upTo of `runs` (one destination's, in order), with their dseqs. */
  private messagesIn(runs: Run[], from: number, upTo: number): QueuedMessage[] {
    const out: QueuedMessage[] = [];
    for (const run of runs) {
      const seg = this.segment(run.seg);
      for (let d = Math.max(run.start_dseq, from); d <= Math.min(run.end_dseq, upTo); d++) {
        const mseq = run.mseq + (d - run.start_dseq);
        const i = mseq - seg.first;
        out.push({ ...(seg.msgs[i] as StoredMessage), dseq: d, mseq, seg: seg.first, payload: seg.payloads[i] as Uint8Array });
      }
    }
    return out;
  }

  /** A segment a run or dead letter refers to: missing would be a bug in the reference counts, said loudly. */
  private segment(first: number): Segment {
    const seg = this.segments.get(first);
    if (!seg) throw new Error(`${this.source}: segment ${first} is referred to but not stored`);
    return seg;
  }

  /**
   * Inside a transaction: moves segments' reference counts, deletes those
   * nothing needs any more, and queues their large payloads for deletion.
   */
  private release(deltas: [number, number][]): void {
    if (deltas.length === 0) return;
    const sum = new Map<number, number>();
    for (const [seg, d] of deltas) sum.set(seg, (sum.get(seg) ?? 0) + d);
    this.transfers.release(this.segments.release(sum));
  }

  /** Inside a transaction: one message's archive job is done with its segment. */
  private unref(mseq: number): void {
    const seg = this.segments.of(mseq);
    if (seg !== null) this.release([[seg, -1]]);
  }

  private cursorFor(destination: string): Cursor {
    let c = this.cursors.get(destination);
    if (!c) {
      c = { next: 1, acked: 0 };
      this.cursors.set(destination, c);
      this.sql.exec("INSERT OR IGNORE INTO cursors VALUES (?, 1, 0)", destination);
    }
    return c;
  }

  /** The destination connector acknowledges every dseq <= upTo as durably delivered. */
  async ack(tenant: string, source: string, destination: string, upTo: number, receipt?: string): Promise<AckResult> {
    this.usageNow.requests++;
    return this.acknowledge(tenant, source, destination, upTo, receipt);
  }

  /** ack's work, also for hosted egress's 2xx answers (`delivery`: how it was delivered). */
  private async acknowledge(tenant: string, source: string, destination: string, upTo: number, receipt?: string, delivery?: Record<string, unknown>): Promise<AckResult> {
    this.identify(tenant, source);
    const cur = this.cursors.get(destination);
    if (!cur) return { ok: false, code: ErrorCode.UNKNOWN_STREAM, message: `no stream ${source} -> ${destination}` };
    if (upTo <= cur.acked) return { ok: true, acked: cur.acked };
    if (upTo >= cur.next) {
      return { ok: false, code: ErrorCode.BAD_ACK, message: `ack up to ${upTo} but ${source} -> ${destination} has only sent up to ${cur.next - 1}` };
    }
    const from = cur.acked + 1;
    const now = Date.now();
    // The receiver's signed receipt is kept in the (hash-chained) log; its
    // delivered events point to it. It is verified when someone asks (the API).
    // A route that logs exceptions only records no delivered events (the receipt still travels to the sender).
    const lifecycle = this.routes.find((r) => r.destination === destination)?.log !== "exceptions";
    const receiptHash = receipt ? toHex(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(receipt))) : null;
    const runs = this.sql
      .exec<Run>(`SELECT ${RUN_COLUMNS} FROM runs WHERE destination = ? AND end_dseq >= ? AND start_dseq <= ? ORDER BY end_dseq`, destination, from, upTo)
      .toArray();
    const rows = this.messagesIn(runs, from, upTo);
    this.ctx.storage.transactionSync(() => {
      // Whole runs acknowledged go, and with them their hold on a segment; a run acknowledged in part stays (the cursor says how far).
      const done = runs.filter((r) => r.end_dseq <= upTo);
      this.sql.exec("DELETE FROM runs WHERE destination = ? AND end_dseq BETWEEN ? AND ?", destination, from, upTo);
      this.release(done.map((r) => [r.seg, -1]));
      this.sql.exec("UPDATE cursors SET acked = ? WHERE destination = ?", upTo, destination);
      if (lifecycle) {
        // The receipt closes the delivered events it covers, in their batch (workers/event-log.ts): no row of its own in D1.
        const closing: LoggedEvent | undefined =
          receipt && receiptHash ? { messageId: `receipt-${receiptHash.slice(0, 56)}`, type: "receipt", at: now, seq: null, mseq: rows.at(-1)?.mseq, size: receipt.length, sha256: receiptHash, destination, detail: { jws: receipt } } : undefined;
        this.events.stageDelivered(now, destination, receiptHash ? { receipt: receiptHash } : (delivery ?? null), rows.map((r): StagedMessage => [r.id, r.seq, r.mseq, r.size, r.sha256, r.fields]), closing);
      }
    });
    cur.acked = upTo;
    this.collectPayloads();
    if ((this.sent.get(destination) ?? 0) < upTo) this.sent.set(destination, upTo);
    this.lastProgress.set(destination, now);
    this.events.flushSoon();
    this.kick(destination);
    // The receipt does not hold up the receiver's ack.
    if (rows.length > 0) this.ctx.waitUntil(this.receipt(destination, rows.map((r) => r.id), now, "delivered", receipt));
    return { ok: true, acked: upTo };
  }

  /** Receipts travel back to the sender, a few frames per call (receipts.ts); best effort, the event log has the record. */
  private async receipt(destination: string, ids: string[], at: number, status: "delivered" | "expired" = "delivered", signed?: string): Promise<void> {
    const { channel } = splitAddress(this.source);
    try {
      for (let i = 0; i < ids.length; i += Limits.MAX_MESSAGES_PER_FRAME) {
        const frame = encodeFrame({ t: "receipt", ch: channel, dst: destination, status, ids: ids.slice(i, i + Limits.MAX_MESSAGES_PER_FRAME), at, ...(signed && i === 0 ? { signed } : {}), ...(await this.attest(destination, status, ids.slice(i, i + Limits.MAX_MESSAGES_PER_FRAME), at)) });
        this.receipts.push(frame);
      }
    } catch (e) {
      console.warn("receipt not sent", e);
    }
  }

  /** The edge's own signed statement of a receipt (the only proof of an expiry, which no receiver signs). */
  private async attest(destination: string, status: string, ids: string[], at: number): Promise<{ edge?: string }> {
    const jwt = await edgeSign(this.env, { src: this.source, dst: destination, status, ids, at }, `ferry:${this.tenant}:${splitAddress(this.source).connector}`);
    return jwt ? { edge: jwt } : {};
  }

  /** The receiver saw a gap (or lost a frame): push again from `from`. */
  async resend(tenant: string, source: string, destination: string, from: number): Promise<AckResult> {
    this.usageNow.requests++;
    this.identify(tenant, source);
    const cur = this.cursors.get(destination);
    if (!cur) return { ok: false, code: ErrorCode.UNKNOWN_STREAM, message: `no stream ${source} -> ${destination}` };
    this.rewind(destination, Math.max(cur.acked, Math.min(from - 1, cur.next - 1)));
    this.offline.delete(destination);
    this.kick(destination);
    return { ok: true, acked: cur.acked };
  }

  /** The destination connector (re)connected: push what it has not acknowledged. */
  async attach(tenant: string, source: string, destinations: string[]): Promise<void> {
    this.usageNow.requests++;
    this.identify(tenant, source);
    for (const d of destinations) {
      const cur = this.cursors.get(d);
      if (!cur) continue;
      this.rewind(d, cur.acked);
      this.offline.delete(d);
      this.kick(d);
      await this.relays.reattached(d);
    }
  }

  async status(): Promise<{ source: string; epoch: string; hwm: number; streams: StreamStatus[] }> {
    this.usageNow.requests++;
    // What really waits: positions that expired (dead letters) left the queue without moving `acked`.
    const queued = new Map(this.sql.exec<{ destination: string; n: number }>(`SELECT r.destination, sum(r.end_dseq - max(r.start_dseq, c.acked + 1) + 1) AS n
         FROM runs r JOIN cursors c ON c.destination = r.destination GROUP BY r.destination`).toArray().map((r) => [r.destination, r.n]));
    const streams = [...this.cursors].map(([destination, c]) => ({
      destination,
      nextDseq: c.next,
      acked: c.acked,
      queued: queued.get(destination) ?? 0,
      online: !this.offline.has(destination),
    }));
    return { source: this.source, epoch: this.epoch, hwm: this.hwm, streams };
  }

  /** Billable operations since this object started (not counted itself): the bench's measured cost. */
  async usage(): Promise<Usage> {
    this.settleSql();
    return { ...this.usageNow };
  }

  private rewind(destination: string, to: number): void {
    this.sent.set(destination, to);
    this.rewinds.set(destination, (this.rewinds.get(destination) ?? 0) + 1);
  }

  private session(connector: string) {
    return this.env.SESSION.get(this.env.SESSION.idFromName(`${this.tenant}:${connector}`));
  }

  private kick(destination: string): void {
    this.pump(destination).catch((e: unknown) => console.error("pump failed", destination, e));
  }

  /**
   * Pushes queued messages to one destination in dseq order, in frames of
   * many messages, while the credit window allows. One pump per destination
   * at a time; a kick during a pump runs it once more afterwards.
   */
  private async pump(destination: string): Promise<void> {
    if (this.pumping.has(destination)) {
      this.again.add(destination);
      return;
    }
    this.pumping.add(destination);
    try {
      const egress = this.routes.find((r) => r.destination === destination)?.egress;
      if (egress) return await this.pumpEgress(destination, egress);
      const connector = splitAddress(destination).connector;
      for (;;) {
        if (this.offline.has(destination)) return;
        const cur = this.cursors.get(destination);
        if (!cur) return;
        const sent = Math.max(this.sent.get(destination) ?? cur.acked, cur.acked);
        const room = WINDOW_MESSAGES - (sent - cur.acked);
        if (room <= 0 || sent >= cur.next - 1) return;
        const limit = Math.min(room, BATCH_MESSAGES);
        // Every run holds at least one message: no more runs than messages wanted (a backlog sent one at a time is a run each).
        const runs = this.sql
          .exec<Run>(`SELECT ${RUN_COLUMNS} FROM runs WHERE destination = ? AND end_dseq > ? ORDER BY end_dseq LIMIT ?`, destination, sent, limit)
          .toArray();
        if (runs.length === 0) return;
        const msgs: DeliverMessage[] = [];
        const payloads: Uint8Array[] = [];
        let bytes = 0;
        fill: for (const run of runs) {
          const seg = this.segment(run.seg);
          for (let d = Math.max(run.start_dseq, sent + 1); d <= run.end_dseq; d++) {
            const i = run.mseq - seg.first + (d - run.start_dseq);
            const m = seg.msgs[i] as StoredMessage;
            // A claim check carries no payload bytes: the receiver fetches its parts.
            const inline = m.blob ? 0 : m.size;
            if (msgs.length >= limit || (msgs.length > 0 && bytes + inline > Math.min(BATCH_BYTES, WINDOW_BYTES))) break fill;
            msgs.push({
              dseq: d, id: m.id, source: this.source, seq: m.seq, createdAt: m.createdAt, acceptedAt: seg.acceptedAt,
              expiresAt: seg.expiresAt, contentType: m.contentType, size: m.size, sha256: m.sha256,
              ...(m.fields ? { fields: m.fields } : {}),
              ...(m.protection !== "none" ? { protection: m.protection } : {}),
              ...(m.sig ? { sig: m.sig } : {}),
              ...(m.blob ? { blob: m.blob } : {}),
            });
            payloads.push(seg.payloads[i] as Uint8Array);
            bytes += inline;
          }
        }
        const first = msgs[0] as DeliverMessage;
        const firstRun = runs[0] as Run;
        // The live position before `first`: anything between it and `first` expired.
        const prev =
          first.dseq > firstRun.start_dseq
            ? first.dseq - 1
            : this.sql.exec<{ d: number | null }>("SELECT max(end_dseq) AS d FROM runs WHERE destination = ? AND end_dseq < ?", destination, firstRun.start_dseq).one().d;
        const after = Math.max(prev ?? 0, cur.acked);
        const frame = encodeFrame({ t: "deliver", src: this.source, dst: destination, gen: this.incarnation, after, msgs }, payloads);
        const rewound = this.rewinds.get(destination) ?? 0;
        const delivered = await this.session(connector).deliver(frame);
        if (!delivered) {
          // Store and forward: it stays queued until the destination attaches again.
          this.offline.add(destination);
          return;
        }
        const last = msgs[msgs.length - 1] as DeliverMessage;
        // Rewound while this push was on its way: go on from the rewind, not from here.
        if ((this.rewinds.get(destination) ?? 0) === rewound) this.sent.set(destination, Math.max(this.sent.get(destination) ?? 0, last.dseq));
        if (!this.lastProgress.has(destination)) this.lastProgress.set(destination, Date.now());
      }
    } finally {
      this.pumping.delete(destination);
      if (this.again.delete(destination)) this.kick(destination);
    }
  }

  /**
   * Hosted egress: this object delivers by HTTPS POST, one message at a
   * time in stream order, until the endpoint answers 2xx (then it is
   * acknowledged exactly like a connector's ack). Failures back off with
   * jitter up to five minutes (the alarm wakes it); each answer is logged.
   * Deliveries carry the message id as Idempotency-Key, and an HMAC
   * signature the receiver can check (`Ferry-Signature: t=…,v1=…`).
   */
  private async pumpEgress(destination: string, egress: { url: string; secret: string | null }): Promise<void> {
    for (;;) {
      const cur = this.cursors.get(destination);
      if (!cur || cur.next - 1 <= cur.acked) return;
      const wait = (this.egressRetryAt.get(destination) ?? 0) - Date.now();
      if (wait > 0) return;
      const run = this.sql
        .exec<Run>(`SELECT ${RUN_COLUMNS} FROM runs WHERE destination = ? AND end_dseq > ? ORDER BY end_dseq LIMIT 1`, destination, cur.acked)
        .toArray()[0];
      if (!run) return;
      const next = Math.max(run.start_dseq, cur.acked + 1);
      const row = this.messagesIn([run], next, next)[0] as QueuedMessage;
      const t = Math.floor(Date.now() / 1000);
      const sent = row.blob
        ? await this.egressBody(row.mseq, egress.secret, t)
        : { body: row.payload, signature: egress.secret ? await webhookSignature(egress.secret, t, row.payload) : null };
      const body = typeof sent === "string" ? sent : sent.body;
      const headers: Record<string, string> = {
        "content-type": row.contentType,
        "idempotency-key": row.id,
        "ferry-message-id": row.id,
        "ferry-source": this.source,
        "ferry-sequence": String(row.dseq),
        "ferry-sha256": row.sha256,
      };
      const fields = row.fields;
      if (fields?.filename) headers["ferry-filename"] = encodeURIComponent(fields.filename);
      if (typeof sent !== "string" && sent.signature) headers["ferry-signature"] = `t=${t},v1=${sent.signature}`;
      let status = 0;
      let error: string | null = null;
      try {
        if (typeof body === "string") throw new Error(body);
        const res = await fetch(egress.url, { method: "POST", headers, body, signal: AbortSignal.timeout(EGRESS_TIMEOUT_MS + Math.ceil((row.size / EGRESS_MIN_RATE) * 1000)) });
        status = res.status;
        await res.arrayBuffer().catch(() => undefined);
      } catch (e) {
        error = (e as Error).message;
      }
      if (status >= 200 && status < 300) {
        this.egressFailures.delete(destination);
        this.egressRetryAt.delete(destination);
        await this.acknowledge(this.tenant, this.source, destination, row.dseq, undefined, { http: status, url: egress.url });
        continue;
      }
      const n = (this.egressFailures.get(destination) ?? 0) + 1;
      this.egressFailures.set(destination, n);
      const delay = Math.floor(Math.random() * Math.min(EGRESS_MAX_BACKOFF_MS, 1000 * 2 ** Math.min(n, 10))) + 500;
      this.egressRetryAt.set(destination, Date.now() + delay);
      this.ctx.storage.transactionSync(() =>
        this.events.stage([{ messageId: row.id, type: "attempt", at: Date.now(), seq: row.seq, size: row.size, sha256: row.sha256, destination, fields, detail: { url: egress.url, http: status || null, error, attempt: n, retryInMs: delay } }]),
      );
      this.events.flushSoon();
      // The retry: a timer while this object lives, the alarm if it is evicted meanwhile.
      setTimeout(() => this.kick(destination), delay + 5);
      await this.ensureAlarm();
      return;
    }
  }

  /**
   * A large payload for hosted egress, streamed from R2 and never whole in
   * this object's memory (whatever its size): read once for the signature
   * (it covers every byte) when the endpoint has a secret, then again as the
   * POST's body (with its length). A string says why it cannot be sent: the
   * attempt fails, is logged, and the message ends as a dead letter at its
   * TTL like any undeliverable one.
   */
  private async egressBody(mseq: number, secret: string | null, t: number): Promise<{ body: ReadableStream<Uint8Array>; signature: string | null } | string> {
    const at = this.transfers.location(mseq);
    const bucket = at ? this.env[at.bucket as "ARCHIVE" | "ARCHIVE_EU"] : null;
    if (!at || !bucket) return "the stored payload is missing";
    let signature: string | null = null;
    if (secret) {
      const first = await bucket.get(at.key);
      if (!first) return "the stored payload is missing";
      signature = await webhookSignatureOfStream(secret, t, first.body);
    }
    const obj = await bucket.get(at.key);
    return obj ? { body: obj.body, signature } : "the stored payload is missing";
  }

  /** Deletes large payloads that nothing needs any more, off the delivery path. */
  private collectPayloads(): void {
    if (this.transfers.pendingDeletes() > 0) this.ctx.waitUntil(this.transfers.collect().catch((e: unknown) => console.warn("payload deletion deferred to the alarm", e)));
  }

  /** The alarm fires at the next expiry, and every 30 s while anything is queued or unlogged. */
  private ensureAlarm(): Promise<void> {
    // One decision at a time: two concurrent callers would each read the old
    // alarm and the later write could replace an earlier, needed wake-up.
    this.alarmChain = this.alarmChain.then(() => this.setNextAlarm()).catch((e: unknown) => console.error("could not set the alarm", e));
    return this.alarmChain;
  }

  private async setNextAlarm(): Promise<void> {
    const now = Date.now();
    const next = this.sql.exec<{ t: number | null }>("SELECT min(expires_at) AS t FROM runs").one().t;
    const queued = [...this.cursors.values()].some((c) => c.next - 1 > c.acked);
    let at = queued || this.events.pending() > 0 || this.archiver.pendingJobs() > 0 || this.transfers.pendingDeletes() > 0 ? now + ALARM_EVERY_MS : Number.POSITIVE_INFINITY;
    const abandon = this.transfers.nextAbandon();
    if (abandon !== null) at = Math.min(at, Math.max(abandon, now));
    if (next !== null) at = Math.min(at, Math.max(next, now));
    // Archives are purged when their retention ends; under a legal hold, looked at again daily.
    // Egress retries due later wake the object then; ones already due are kicked by the alarm itself.
    for (const due of this.egressRetryAt.values()) if (due > now) at = Math.min(at, due);
    const purge = this.archiver.nextExpiry();
    if (purge !== null) at = Math.min(at, Math.max(purge, this.routes.some((r) => r.legalHold) ? now + 86_400_000 : now));
    if (at === Number.POSITIVE_INFINITY) return;
    const current = await this.ctx.storage.getAlarm();
    // An alarm time in the past is the one running now: it is spent, set the next.
    if (current === null || current <= now || current > at) await this.ctx.storage.setAlarm(at);
  }

  /**
   * Nothing is silently dropped: a message not delivered within its route's
   * TTL leaves the destination's queue, becomes a dead letter (kept, with its
   * payload, until an admin re-drives or discards it), is logged as expired,
   * and the sender gets a negative receipt.
   */
  private async expire(now: number): Promise<void> {
    const due = this.sql
      .exec<Run & { destination: string }>(`SELECT destination, ${RUN_COLUMNS} FROM runs WHERE expires_at <= ? ORDER BY destination, end_dseq LIMIT 500`, now)
      .toArray();
    if (due.length === 0) return;
    // What still waits in each run (a run acknowledged in part expires only its rest), about 5,000 messages at a time.
    const rows: (QueuedMessage & { destination: string })[] = [];
    const runs: (Run & { destination: string })[] = [];
    for (const run of due) {
      if (rows.length >= 5000) break;
      runs.push(run);
      const acked = this.cursors.get(run.destination)?.acked ?? 0;
      for (const m of this.messagesIn([run], acked + 1, run.end_dseq)) rows.push({ ...m, destination: run.destination });
    }
    this.ctx.storage.transactionSync(() => {
      const dead: SqlStorageValue[] = [];
      for (const r of rows) dead.push(r.destination, r.dseq, r.mseq, "expired", now);
      this.insertRows("INSERT OR REPLACE INTO dead_letters (destination, dseq, mseq, reason, at) VALUES", 5, dead);
      for (const run of runs) this.sql.exec("DELETE FROM runs WHERE destination = ? AND end_dseq = ?", run.destination, run.end_dseq);
      // Each dead letter holds its segment, as the run did.
      this.release([...rows.map((r): [number, number] => [r.seg, 1]), ...runs.map((r): [number, number] => [r.seg, -1])]);
      this.events.stage(rows.map((r) => ({ messageId: r.id, type: "expired", at: now, seq: r.seq, size: r.size, sha256: r.sha256, destination: r.destination, fields: r.fields, detail: { reason: "ttl" } })));
    });
    const byDest = new Map<string, string[]>();
    for (const r of rows) byDest.set(r.destination, [...(byDest.get(r.destination) ?? []), r.id]);
    for (const [d, ids] of byDest) {
      await this.receipt(d, ids, now, "expired");
      this.kick(d);
    }
    this.events.flushSoon();
  }

  /** Dead letters with their messages (by segment), in stream order. */
  private deadRows(destination?: string, limit = -1): (QueuedMessage & { destination: string; reason: string; at: number })[] {
    const dead = this.sql
      .exec<{ destination: string; dseq: number; mseq: number; reason: string; at: number }>(
        "SELECT destination, dseq, mseq, reason, at FROM dead_letters WHERE (?1 IS NULL OR destination = ?1) ORDER BY destination, dseq LIMIT ?2",
        destination ?? null, limit,
      )
      .toArray();
    const out: (QueuedMessage & { destination: string; reason: string; at: number })[] = [];
    for (const d of dead) {
      const found = this.segments.message(d.mseq);
      if (!found) throw new Error(`${this.source}: dead letter ${d.destination}#${d.dseq} refers to message ${d.mseq}, which is not stored`);
      out.push({ ...found.m, dseq: d.dseq, mseq: d.mseq, seg: found.seg.first, payload: found.payload, destination: d.destination, reason: d.reason, at: d.at });
    }
    return out;
  }

  async deadLetters(tenant: string, source: string, destination?: string): Promise<DeadLetter[]> {
    this.usageNow.requests++;
    this.identify(tenant, source);
    return this.deadRows(destination, 1000).map((r) => ({ destination: r.destination, id: r.id, seq: r.seq, size: r.size, sha256: r.sha256, reason: r.reason, deadAt: r.at, createdAt: r.createdAt, fields: r.fields }));
  }

  /**
   * Re-drives dead letters (all of a destination's, or the given ids): each
   * goes to the end of its destination's stream with a fresh TTL. Or discards
   * them, logged. Returns how many were handled.
   */
  async handleDeadLetters(tenant: string, source: string, action: "redrive" | "discard", destination?: string, ids?: string[]): Promise<number> {
    this.usageNow.requests++;
    this.identify(tenant, source);
    const rows = this.deadRows(destination).filter((r) => !ids || ids.includes(r.id));
    if (rows.length === 0) return 0;
    const now = Date.now();
    this.ctx.storage.transactionSync(() => {
      const deltas: [number, number][] = [];
      for (const r of rows) {
        this.sql.exec("DELETE FROM dead_letters WHERE destination = ? AND dseq = ?", r.destination, r.dseq);
        deltas.push([r.seg, -1]);
        if (action === "redrive") {
          const ttl = this.routes.find((x) => x.destination === r.destination)?.ttlSeconds ?? 7 * 86400;
          const cur = this.cursorFor(r.destination);
          this.sql.exec("INSERT INTO runs (destination, end_dseq, start_dseq, mseq, seg, expires_at, claim) VALUES (?1, ?2, ?2, ?3, ?4, ?5, ?6)", r.destination, cur.next, r.mseq, r.seg, now + ttl * 1000, r.blob ? 1 : 0);
          deltas.push([r.seg, 1]);
          cur.next++;
        }
      }
      if (action === "redrive") this.writePosition();
      this.release(deltas);
      this.events.stage(rows.map((r) => ({ messageId: r.id, type: action === "redrive" ? "redriven" : "discarded", at: now, seq: r.seq, size: r.size, sha256: r.sha256, destination: r.destination, fields: r.fields, detail: null })));
    });
    for (const d of new Set(rows.map((r) => r.destination))) this.kick(d);
    this.collectPayloads();
    this.events.flushSoon();
    await this.ensureAlarm();
    return rows.length;
  }

  /**
   * The safety net and the clock: expires messages past their TTL, retries
   * event-log writes, and pushes again to destinations that made no progress
   * (a lost frame or a silent disconnect).
   */
  override async alarm(): Promise<void> {
    this.usageNow.requests++;
    const now = Date.now();
    this.sql.exec("DELETE FROM ingest_keys WHERE at < ?", now - INGEST_KEY_TTL_MS);
    await this.expire(now);
    await this.archiver.flush(this.tenant, this.source).catch((e: unknown) => console.warn("archive store still unavailable", e));
    await this.archiver.purgeExpired(now, this.routes.some((r) => r.legalHold));
    const abandoned = this.transfers.abandon(now);
    if (abandoned.length > 0) console.warn(`${this.source}: deleted ${abandoned.length} large-payload uploads nobody finished or sent within ${ABANDON_AFTER_MS / 86_400_000} days`, abandoned);
    await this.transfers.collect().catch((e: unknown) => console.warn("payload store still unavailable", e));
    await this.events.flush().catch((e: unknown) => console.warn("event log still unavailable", e));
    for (const [d, c] of this.cursors) {
      if (c.next - 1 <= c.acked) continue;
      const since = this.lastProgress.get(d) ?? 0;
      if (now - since >= REDELIVER_AFTER_MS) {
        this.rewind(d, c.acked);
        this.offline.delete(d);
        this.lastProgress.set(d, now);
        this.kick(d);
      }
    }
    await this.ensureAlarm();
  }
}
