import { createHash, randomBytes } from "node:crypto";
import { writeFileAtomic } from "./durable-fs.ts";
import { ReceiptLog } from "./receipt-log.ts";
import { Acks } from "./acks.ts";
import { EventEmitter } from "node:events";
import { join } from "node:path";
import {
  decodeFrame,
  encodeFrame,
  EdgeFeature,
  ErrorCode,
  Limits,
  newMessageId,
  partLength,
  partsOf,
  splitAddress,
  WireError,
  type DeliverFrame,
  type DeliverMessage,
  type ErrorFrame,
  type PubAckFrame,
  type PubMessage,
  type ReceiptFrame,
} from "../../wire/index.ts";
import { Spool, type SpoolItem, type SpoolRecord } from "../spool/spool.ts";
import { connectAssertion, encryptionKeys, identityPath, loadIdentity, type Identity } from "../identity/identity.ts";
import { ENCRYPTED_CONTENT_TYPE, protect, ProtectionError, SEAL_OVERHEAD, sealPart, signEnvelope, unprotect, unwrapKey, wrapKey } from "../protection/protection.ts";
import { Policies } from "./policies.ts";
import { edgeFetch } from "./edge-http.ts";
import { writeDeadLetter } from "./dead-letters.ts";
import { ROTATE_PROOF_TYPE, signReceipt, verifyReceipt } from "../../wire/index.ts";
import { CompactSign, exportJWK, generateKeyPair } from "jose";
import { open, readFile, stat } from "node:fs/promises";
import { Transport } from "./transport.ts";
import { createLogger, type Logger } from "./log.ts";
import { Backoff } from "./backoff.ts";
import { Uploads, type UploadPlan } from "../transfer/uploads.ts";
import { Downloads, TransferError } from "../transfer/downloads.ts";
import type { TransferProgress } from "../transfer/progress.ts";

/** Messages in flight to the edge per channel, unacknowledged (the send window). */
const SEND_WINDOW = 8192;
const FRAME_MESSAGES = 1024;
const FRAME_BYTES = 4 * 1024 * 1024;
/** Stop producing while the socket holds this much unsent. */
const MAX_BUFFERED = 16 * 1024 * 1024;
/** No puback progress for this long with messages in flight: the link is bad, redial. */
const ACK_TIMEOUT_MS = 30_000;
/** Deliver frames held per stream while its receiver is busy. */
const MAX_QUEUED_FRAMES = 8;

/**
 * What the receiver gets of a compressed payload: the original's size and
 * digest (the fetch inflated and checked it); the wire's describe the gzip.
 */
function inflated(m: Incoming): Incoming {
  const b = m.meta.blob;
  if (!m.file || b?.encoding !== "gzip" || b.plainSize === undefined || !b.plainSha256) return m;
  return { ...m, meta: { ...m.meta, size: b.plainSize, sha256: b.plainSha256 } };
}

/** What is kept beside a large payload sent on an `encrypt` route (its seal). */
type SealFile = { cek: string; key: string; size: number; sha256: string };

/**
 * A message handed to a receiver, with its envelope. A large payload is not
 * in memory: `file` is the verified file on disk (`payload` is empty), which
 * the receiver may move (the connector deletes it if it is still there).
 */
export type Incoming = { meta: DeliverMessage; payload: Uint8Array; file?: string };

/**
 * A channel's receiving side. `deliver` gets messages of one stream in dseq
 * order, the first one right after `hwm(stream)`, and resolves with the new
 * high-water mark once they are durably delivered (only then is the edge
 * told). Redeliveries below the mark never reach it.
 */
export interface Receiver {
  hwm(stream: string): number;
  deliver(stream: string, msgs: Incoming[]): Promise<number>;
  /** Durably moves the mark to `upTo` without delivering (positions that expired at the edge). */
  skip(stream: string, upTo: number): Promise<void>;
}

export type SendOptions = { contentType?: string; fields?: Record<string, string>; id?: string; origin?: SpoolItem["origin"] };

export type ConnectorEvents = {
  /** The edge's config was refreshed (its edge addresses given). */
  config: [edges: string[]];
  /** Messages are in the spool on disk. */
  captured: [channel: string, count: number, bytes: number];
  connected: [edge: string];
  disconnected: [code: number, reason: string];
  /** The edge committed everything up to `upTo` on `channel`. */
  accepted: [channel: string, upTo: number];
  /** Messages were durably delivered here and acknowledged to the edge. */
  delivered: [stream: string, upTo: number, count: number];
  receipt: [receipt: ReceiptFrame];
  /** The edge reported an error; `frame.code` says which. */
  edgeError: [frame: ErrorFrame];
  /** A large payload moved further (uploaded to, or fetched from, the edge). */
  transfer: [progress: TransferProgress];
};

type SendState = { next: number; lastProgress: number; pausedUntil: number; backoff: Backoff; warned: boolean };

export type ConnectorOptions = {
  stateDir: string;
  /** Edge URLs to use instead of the ones learnt at enrolment. */
  edges?: string[];
  log?: Logger;
  /** Seconds between heartbeats (default 15); two silent intervals mean the link is dead. */
  heartbeatSeconds?: number;
  /** Large payloads uploaded, and fetched, at the same time (default 2 each way). */
  transfers?: number;
  /** Take large payloads relayed from their sender while online (default true; docs/decisions.md D19). */
  relay?: boolean;
};

/**
 * The connector's core, as a typed library: the CLI runs it, and benchmarks
 * and tests drive it directly. It owns the spool (captured = on disk), the
 * send window to the edge, and hands incoming streams to receivers in order,
 * acknowledging only after they say the delivery is durable.
 */
export class Connector extends EventEmitter<ConnectorEvents> {
  readonly log: Logger;
  private readonly transport: Transport;
  private readonly sendState = new Map<string, SendState>();
  /** Per channel: the highest seq whose source was released and may be sent. */
  private readonly sendable = new Map<string, number>();
  private readonly receivers = new Map<string, Receiver>();
  private readonly sending = new Set<string>();
  private readonly sendAgain = new Set<string>();
  private readonly streamChains = new Map<string, Promise<void>>();
  private readonly streamQueued = new Map<string, number>();
  /** Streams that dropped a push while busy (asked for again once drained). */
  private readonly streamDropped = new Map<string, { src: string; dst: string }>();
  private readonly resendAsked = new Map<string, { from: number; at: number }>();
  private readonly lastDelivery = new Map<string, { at: number; upTo: number }>();
  private readonly receipts: ReceiptFrame[] = [];
  /** Signed receipts kept at this site (state/receipts.jsonl, bounded). */
  private readonly receiptLog: ReceiptLog;
  /** Acknowledgements of deliveries, a few frames at a time (D27). */
  private readonly acks: Acks;
  private generation = 0;
  private ackTimer: NodeJS.Timeout | null = null;
  private connectedEdge: string | null = null;
  /** What the edge of this connection said it takes (its welcome); none until it has said. */
  private edgeFeatures = new Set<string>();
  private readonly heartbeatSeconds: number;

  /** Routes and peers' keys from the edge: how each channel must be protected. */
  readonly policies: Policies;
  /** Where large payloads being fetched are kept until delivered. */
  get downloadsDir(): string {
    return join(this.stateDir, "downloads");
  }
  private keyRegistered: boolean;
  private readonly waitingForPolicy = new Set<string>();
  private readonly policyBackoff = new Backoff(2000, 60_000);
  private policyTimer: NodeJS.Timeout | null = null;
  private refreshing: Promise<void> | null = null;
  private readonly uploads: Uploads;
  private readonly downloads: Downloads;

  private constructor(
    readonly identity: Identity,
    readonly spool: Spool,
    readonly stateDir: string,
    opts: ConnectorOptions,
    log: Logger,
    policies: Policies,
    keyRegistered: boolean,
  ) {
    super();
    this.policies = policies;
    this.keyRegistered = keyRegistered;
    this.log = log;
    this.heartbeatSeconds = opts.heartbeatSeconds ?? 15;
    this.receiptLog = new ReceiptLog(join(stateDir, "receipts.jsonl"));
    this.acks = new Acks({
      send: (f) => this.transport.send(f),
      sign: (src, dst, messages) => signReceipt(identity.privateJwk, { typ: "ferry-receipt", src, dst, at: Date.now(), messages }),
      onError: (e) => this.log("error", "could not acknowledge deliveries; the edge sends them again", { error: (e as Error).message }),
    });
    this.transport = new Transport({
      edges: opts.edges ?? identity.edges,
      authorize: () => connectAssertion(identity),
      log,
      heartbeatSeconds: opts.heartbeatSeconds ?? 15,
      features: opts.relay === false ? [] : ["relay"],
      events: {
        open: (edge) => this.onOpen(edge),
        close: (code, reason) => this.onClose(code, reason),
        frame: (data) => this.onFrame(data),
      },
    });
    const transfers = Math.max(1, opts.transfers ?? 2);
    this.uploads = new Uploads({
      spool,
      send: (f, written) => this.transport.send(f, written),
      buffered: () => this.transport.buffered,
      connected: () => this.transport.status === "open",
      log,
      limit: transfers,
      onReady: (ch) => this.kickSend(ch),
      onProgress: (p) => this.emit("transfer", p),
      plan: (rec) => this.uploadPlan(rec),
      namesFiles: () => this.edgeFeatures.has(EdgeFeature.UPLOAD_NAME),
    });
    this.downloads = new Downloads({
      dir: join(stateDir, "downloads"),
      send: (f) => this.transport.send(f),
      connected: () => this.transport.status === "open",
      log,
      limit: transfers,
      onProgress: (p) => this.emit("transfer", p),
    });
    // Whatever the spool held at start was captured by an earlier run; its
    // sources were released (or are, before start(), by the channels).
    for (const ch of spool.channels()) this.sendable.set(ch, spool.lastSeq(ch));
  }

  /** Opens the identity and spool in `stateDir`; call `start()` to connect. */
  static async open(opts: ConnectorOptions): Promise<Connector> {
    const log = opts.log ?? createLogger();
    let identity = await loadIdentity(opts.stateDir);
    let keyRegistered = true;
    if (!identity.encPrivateJwk) {
      // Enrolled before encryption existed: make the key now, register it on connect.
      identity = { ...identity, ...(await encryptionKeys()) };
      await writeFileAtomic(identityPath(opts.stateDir), JSON.stringify(identity, null, 2));
      keyRegistered = false;
    }
    const spool = await Spool.open(join(opts.stateDir, "spool"));
    await Downloads.sweep(join(opts.stateDir, "downloads"), log);
    const policies = new Policies(opts.stateDir);
    await policies.load();
    return new Connector(identity, spool, opts.stateDir, opts, log, policies, keyRegistered);
  }

  get name(): string {
    return this.identity.connector;
  }

  /** The edge this connector is connected to, if any. */
  get currentEdge(): string | null {
    return this.connectedEdge;
  }

  /** Edge addresses learnt from the edge; used from the next reconnect. */
  useEdges(edges: string[]): void {
    this.transport.setEdges(edges);
  }

  start(): void {
    this.transport.start();
    this.ackTimer = setInterval(() => this.checkAckTimeouts(), 1000);
    this.ackTimer.unref();
  }

  /** Stops sending and closes the connection; everything captured stays in the spool. */
  async stop(): Promise<void> {
    if (this.ackTimer) clearInterval(this.ackTimer);
    if (this.policyTimer) clearTimeout(this.policyTimer);
    // What is delivered is acknowledged before the connection closes (its receipts with it).
    await this.acks.flushAll();
    await this.transport.stop();
    await Promise.allSettled([...this.streamChains.values()]);
    await this.spool.close();
    await this.receiptLog.close();
  }

  /** Registers (or replaces) the receiving side of a local channel. */
  receive(channel: string, receiver: Receiver): void {
    this.receivers.set(channel, receiver);
  }

  /** Stops receiving on a channel; its deliveries wait at the edge. */
  unreceive(channel: string): void {
    this.receivers.delete(channel);
  }

  /**
   * Captures messages on a channel: resolves once they are in the spool on
   * disk (fsync), the moment a source may be released. Delivery follows.
   */
  async sendMany(
    channel: string,
    items: (SendOptions & { payload: Uint8Array })[],
    afterCapture?: (recs: SpoolRecord[]) => Promise<void>,
  ): Promise<SpoolRecord[]> {
    for (const it of items) {
      if (it.payload.byteLength > Limits.MAX_INLINE_PAYLOAD) {
        throw new WireError(ErrorCode.TOO_LARGE, `payload of ${it.payload.byteLength} bytes exceeds ${Limits.MAX_INLINE_PAYLOAD} in memory; send large payloads from a file with sendFile()`);
      }
    }
    const recs = await this.spool.append(
      channel,
      items.map((it) => ({
        id: it.id ?? newMessageId(),
        createdAt: Date.now(),
        contentType: it.contentType ?? "application/octet-stream",
        payload: it.payload,
        sha256: createHash("sha256").update(it.payload).digest("hex"),
        ...(it.fields ? { fields: it.fields } : {}),
        ...(it.origin ? { origin: it.origin } : {}),
      })),
    );
    this.emit("captured", channel, recs.length, recs.reduce((n, r) => n + r.size, 0));
    // A source is released (`afterCapture`) before its messages may leave:
    // so after a crash, a record the edge never saw still names its origin.
    try {
      if (afterCapture) await afterCapture(recs);
    } finally {
      // Captured is captured: even if releasing a source failed, the messages go.
      const last = recs[recs.length - 1];
      if (last) this.sendable.set(channel, Math.max(this.sendable.get(channel) ?? 0, last.seq));
      this.kickSend(channel);
    }
    return recs;
  }

  /**
   * Captures a file of any size without reading it into memory: the spool
   * keeps it (a hard link where it can, else a copy, fsynced) and the record
   * is appended; resolves once both are on disk. `afterCapture` releases the
   * source, as with `sendMany`. Files above Limits.MAX_INLINE_PAYLOAD travel
   * in chunks through the edge's R2; smaller ones inline.
   */
  async sendFile(channel: string, path: string, opts: SendOptions = {}, afterCapture?: (rec: SpoolRecord) => Promise<void>): Promise<SpoolRecord> {
    const id = opts.id ?? newMessageId();
    if ((await stat(path)).size <= Limits.MAX_INLINE_PAYLOAD) {
      const [rec] = await this.sendMany(channel, [{ ...opts, id, payload: await readFile(path) }], async (recs) => afterCapture?.(recs[0] as SpoolRecord));
      return rec as SpoolRecord;
    }
    // Compressed when the route asks for it (as far as this connector knows its routes now) and a sample shows it pays.
    // Never on `encrypt` routes: a compressed size says something about the plaintext.
    const policy = this.policies.sending(this.identity.connector, channel);
    const kept = await this.spool.adoptBlob(path, id, { gzip: policy?.compress === "gzip" && policy.protection !== "encrypt" });
    if (kept.gzip) this.log("info", "compressed for the route", { channel, id, size: kept.gzip.size, compressed: kept.size });
    const [rec] = await this.spool.append(channel, [
      {
        id, createdAt: Date.now(), contentType: opts.contentType ?? "application/octet-stream", payload: new Uint8Array(0), sha256: kept.sha256,
        blob: { file: kept.file, size: kept.size, ...(kept.gzip ? { gzip: kept.gzip } : {}) },
        ...(opts.fields ? { fields: opts.fields } : {}), ...(opts.origin ? { origin: opts.origin } : {}),
      },
    ]);
    const r = rec as SpoolRecord;
    this.emit("captured", channel, 1, r.size);
    try {
      if (afterCapture) await afterCapture(r);
    } finally {
      this.sendable.set(channel, Math.max(this.sendable.get(channel) ?? 0, r.seq));
      this.uploads.want();
      this.kickSend(channel);
    }
    return r;
  }

  async send(channel: string, payload: Uint8Array, opts: SendOptions = {}): Promise<SpoolRecord> {
    const [rec] = await this.sendMany(channel, [{ ...opts, payload }]);
    return rec as SpoolRecord;
  }

  status() {
    const channels: Record<string, unknown> = {};
    for (const ch of new Set([...this.spool.channels(), ...this.receivers.keys()])) {
      channels[ch] = { backlog: this.spool.backlog(ch), lastSeq: this.spool.lastSeq(ch), acked: this.spool.acked(ch) };
    }
    return {
      connector: this.identity.connector,
      tenant: this.identity.tenant,
      connected: this.transport.status === "open",
      edge: this.connectedEdge,
      fatal: this.transport.fatal,
      channels,
      streams: Object.fromEntries(this.lastDelivery),
      receipts: this.receipts.slice(-20).map((r) => ({ channel: r.ch, destination: r.dst, status: r.status, count: r.ids.length, at: r.at })),
      transfers: [...this.uploads.active(), ...this.downloads.list()],
    };
  }

  // ---- sending ----

  private st(channel: string): SendState {
    let s = this.sendState.get(channel);
    if (!s) {
      s = { next: this.spool.acked(channel) + 1, lastProgress: Date.now(), pausedUntil: 0, backoff: new Backoff(500, 30_000), warned: false };
      this.sendState.set(channel, s);
    }
    return s;
  }

  private kickSend(channel: string): void {
    this.pumpSend(channel).catch((e: unknown) => this.log("error", "send pump failed", { channel, error: (e as Error).message }));
  }

  /**
   * Sends unacknowledged spool records oldest first, many per frame, while
   * the window and the socket's buffer allow. One pump per channel.
   */
  private async pumpSend(channel: string): Promise<void> {
    if (this.sending.has(channel)) {
      this.sendAgain.add(channel);
      return;
    }
    this.sending.add(channel);
    try {
      const gen = this.generation;
      const s = this.st(channel);
      // Fail closed: nothing leaves before the channel's protection is known.
      const policy = this.policies.sending(this.identity.connector, channel);
      if (!policy || policy.missingKeys.length > 0) {
        if (!this.waitingForPolicy.has(channel)) {
          this.waitingForPolicy.add(channel);
          const known = this.policies.current !== null;
          this.log(policy || known ? "warn" : "info", policy ? "waiting for the encryption keys of destinations before sending" : known ? "no route leaves this channel yet; its messages stay in the spool until an administrator adds one" : "waiting for the edge's channel policies before sending", {
            channel,
            backlog: this.spool.backlog(channel).count,
            ...(policy ? { missing: policy.missingKeys } : {}),
          });
        }
        // Ask the edge again soon (backing off): a route added meanwhile is learnt in seconds, not at the next periodic refresh.
        this.schedulePolicyRetry();
        return;
      }
      this.waitingForPolicy.delete(channel);
      this.policyBackoff.reset();
      while (this.transport.status === "open" && gen === this.generation) {
        const now = Date.now();
        if (s.pausedUntil > now) {
          setTimeout(() => this.kickSend(channel), s.pausedUntil - now).unref();
          return;
        }
        if (this.transport.buffered > MAX_BUFFERED) {
          setTimeout(() => this.kickSend(channel), 20).unref();
          return;
        }
        const acked = this.spool.acked(channel);
        s.next = Math.max(s.next, acked + 1);
        const room = SEND_WINDOW - (s.next - 1 - acked);
        if (room <= 0) return;
        const limit = this.sendable.get(channel) ?? 0;
        const recs = this.spool.pending(channel, s.next, Math.min(room, FRAME_MESSAGES)).filter((r) => r.seq <= limit);
        if (recs.length === 0) return;
        const msgs: PubMessage[] = [];
        const payloads: Uint8Array[] = [];
        let bytes = 0;
        let blocked = false;
        for (const r of recs) {
          if (r.blob) {
            // A large payload is referred to only once the edge holds it whole; later records wait (order).
            if (!this.uploads.isDone(r.id)) {
              blocked = true;
              this.uploads.want();
              break;
            }
            const plan = this.uploads.planOf(r.id);
            if (!plan) {
              blocked = true;
              break;
            }
            // On `encrypt` the envelope describes the ciphertext and names no file; type and fields travel in the sealed key.
            const sealed = plan.key !== undefined;
            const env = sealed
              ? { id: r.id, createdAt: r.createdAt, contentType: ENCRYPTED_CONTENT_TYPE, size: plan.size, sha256: plan.sha256 }
              : { id: r.id, createdAt: r.createdAt, contentType: r.contentType, size: r.size, sha256: r.sha256, ...(r.fields ? { fields: r.fields } : {}) };
            const sig = policy.protection === "none" ? undefined : await signEnvelope(env, { protection: policy.protection, source: `${this.identity.connector}/${channel}`, signingJwk: this.identity.privateJwk });
            payloads.push(new Uint8Array(0));
            msgs.push({
              seq: r.seq, ...env,
              blob: {
                chunk: plan.chunk, parts: plan.parts,
                ...(plan.key ? { key: plan.key } : {}),
                ...(r.gzip && !sealed ? { encoding: "gzip" as const, plainSize: r.gzip.size, plainSha256: r.gzip.sha256 } : {}),
              },
              ...(policy.protection !== "none" ? { protection: policy.protection } : {}),
              ...(sig ? { sig } : {}),
            });
            continue;
          }
          if (msgs.length > 0 && bytes + r.size > FRAME_BYTES) break;
          const raw = await this.spool.readPayload(r);
          const p = await protect({ id: r.id, createdAt: r.createdAt, contentType: r.contentType, size: r.size, sha256: r.sha256, ...(r.fields ? { fields: r.fields } : {}) }, raw, {
            protection: policy.protection,
            source: `${this.identity.connector}/${channel}`,
            signingJwk: this.identity.privateJwk,
            recipients: policy.recipients,
          });
          payloads.push(p.payload);
          msgs.push({
            seq: r.seq, id: r.id, createdAt: r.createdAt, contentType: p.contentType, size: p.size, sha256: p.sha256,
            ...(p.fields ? { fields: p.fields } : {}),
            ...(p.protection !== "none" ? { protection: p.protection } : {}),
            ...(p.sig ? { sig: p.sig } : {}),
          });
          bytes += p.size;
        }
        if (gen !== this.generation) break;
        if (msgs.length === 0) return;
        if (s.next - 1 === acked) s.lastProgress = Date.now();
        if (!this.transport.send(encodeFrame({ t: "pub", ch: channel, epoch: this.spool.epoch, msgs }, payloads))) return;
        s.next = (msgs[msgs.length - 1] as PubMessage).seq + 1;
        if (blocked) return;
      }
    } finally {
      this.sending.delete(channel);
      if (this.sendAgain.delete(channel)) this.kickSend(channel);
    }
  }

  /**
   * How a large payload is uploaded: as kept, or on an `encrypt` route
   * sealed part by part. The seal (content key, wrapped key, ciphertext
   * digest) is made once and kept beside the spool's copy, so a resume after
   * a crash uploads the very same ciphertext. Null while the route's
   * protection (or a destination's key) is not known yet.
   */
  private async uploadPlan(rec: SpoolRecord): Promise<UploadPlan | null> {
    const parts = partsOf(rec.size, Limits.CHUNK_BYTES);
    const policy = this.policies.sending(this.identity.connector, rec.channel);
    if (!policy || policy.missingKeys.length > 0) return null;
    if (policy.protection !== "encrypt") return { size: rec.size, sha256: rec.sha256, chunk: Limits.CHUNK_BYTES, parts };
    const sidecar = `${this.spool.blobPath(rec)}.seal.json`;
    let seal = await readFile(sidecar, "utf8").then((t) => JSON.parse(t) as SealFile, () => null);
    if (!seal) {
      const cek = randomBytes(32);
      const key = await wrapKey(cek, { contentType: rec.contentType, fields: rec.fields ?? null, sha256: rec.sha256, size: rec.size, chunk: Limits.CHUNK_BYTES }, policy.recipients);
      // One pass to learn the ciphertext's digest, which the upload and the signed envelope name.
      const hash = createHash("sha256");
      const fh = await open(this.spool.blobPath(rec), "r");
      try {
        const buf = Buffer.allocUnsafe(Limits.CHUNK_BYTES);
        for (let part = 1; part <= parts; part++) {
          const len = partLength(rec.size, Limits.CHUNK_BYTES, part);
          await fh.read(buf, 0, len, (part - 1) * Limits.CHUNK_BYTES);
          hash.update(sealPart(cek, part, buf.subarray(0, len)));
        }
      } finally {
        await fh.close();
      }
      seal = { cek: cek.toString("base64url"), key, size: rec.size + SEAL_OVERHEAD * parts, sha256: hash.digest("hex") };
      await writeFileAtomic(sidecar, JSON.stringify(seal));
    }
    const cek = Buffer.from(seal.cek, "base64url");
    return { size: seal.size, sha256: seal.sha256, chunk: Limits.CHUNK_BYTES + SEAL_OVERHEAD, parts, key: seal.key, seal: (part, plain) => sealPart(cek, part, plain) };
  }

  private async onPubAck(f: PubAckFrame): Promise<void> {
    if (f.epoch !== this.spool.epoch) return;
    if (f.upTo > this.spool.lastSeq(f.ch)) {
      this.log("error", "the edge acknowledged messages this spool never sent", { channel: f.ch, upTo: f.upTo, lastSeq: this.spool.lastSeq(f.ch) });
      return;
    }
    const before = this.spool.acked(f.ch);
    if (f.upTo > before) {
      await this.spool.ack(f.ch, f.upTo);
      const s = this.st(f.ch);
      s.lastProgress = Date.now();
      s.backoff.reset();
      s.warned = false;
      this.emit("accepted", f.ch, f.upTo);
    }
    this.kickSend(f.ch);
  }

  private checkAckTimeouts(): void {
    if (this.transport.status !== "open") return;
    const now = Date.now();
    if (this.uploads.stalled(now, ACK_TIMEOUT_MS) || this.downloads.stalled(now, ACK_TIMEOUT_MS)) {
      this.transport.recycle(`a large transfer got no answer in ${ACK_TIMEOUT_MS / 1000}s`);
      return;
    }
    for (const [ch, s] of this.sendState) {
      const inflight = s.next - 1 - this.spool.acked(ch);
      if (inflight > 0 && s.pausedUntil <= now && now - s.lastProgress > ACK_TIMEOUT_MS) {
        s.lastProgress = now;
        this.transport.recycle(`no acknowledgement for ${inflight} messages on ${ch} in ${ACK_TIMEOUT_MS / 1000}s`);
        return;
      }
    }
  }

  private onSendError(f: ErrorFrame & { ch: string }): void {
    const s = this.st(f.ch);
    const acked = this.spool.acked(f.ch);
    switch (f.code) {
      case ErrorCode.SEQ_GAP: {
        const expected = f.expected ?? acked + 1;
        if (expected <= acked) {
          this.log("error", "the edge expects messages it acknowledged before; its state was lost", { channel: f.ch, expected, acked });
        }
        s.next = Math.max(expected, acked + 1);
        this.kickSend(f.ch);
        return;
      }
      default: {
        // A route (or its protection) may have changed: learn it before retrying.
        if (f.code === ErrorCode.FORBIDDEN || f.code === ErrorCode.NO_ROUTE) void this.refreshConfig();
        // NO_ROUTE, STORAGE, INTERNAL, STALE_EPOCH...: nothing after `acked`
        // is trusted; keep everything and retry later from there.
        s.next = acked + 1;
        const delay = s.backoff.next() + 500;
        s.pausedUntil = Date.now() + delay;
        if (!s.warned || f.code !== ErrorCode.NO_ROUTE) {
          this.log("warn", "the edge did not accept messages; keeping them and retrying", { channel: f.ch, code: f.code, message: f.message, retryInMs: delay, backlog: this.spool.backlog(f.ch).count });
        }
        s.warned = true;
        setTimeout(() => this.kickSend(f.ch), delay).unref();
      }
    }
  }

  // ---- receiving ----

  private onDeliver(f: DeliverFrame, payloads: Uint8Array[]): Promise<void> {
    // Positions are only comparable within one incarnation of the edge's channel object.
    const stream = `${f.src}>${f.dst}#${f.gen}`;
    // Bounded: while a slow target holds the stream, further pushes are not
    // queued in memory without end; dropped ones come again (the edge
    // redelivers from the last acknowledged position).
    const queued = this.streamQueued.get(stream) ?? 0;
    if (queued >= MAX_QUEUED_FRAMES) {
      // Asked for again once the queue has drained: when nothing follows the
      // dropped push, no gap would ever show, and the edge's redelivery timer
      // is 30 seconds away.
      this.log("debug", "stream busy; a push was dropped and will be asked for again", { stream, queued });
      this.streamDropped.set(stream, { src: f.src, dst: f.dst });
      return Promise.resolve();
    }
    this.streamQueued.set(stream, queued + 1);
    const run = (this.streamChains.get(stream) ?? Promise.resolve()).then(() => this.deliverStream(stream, f, payloads));
    const tail = run
      .catch((e: unknown) => this.log("error", "delivery failed; the edge will redeliver", { stream, error: (e as Error).message }))
      .finally(() => {
        const left = (this.streamQueued.get(stream) ?? 1) - 1;
        this.streamQueued.set(stream, left);
        const dropped = this.streamDropped.get(stream);
        if (left === 0 && dropped) {
          this.streamDropped.delete(stream);
          const receiver = this.receivers.get(splitAddress(dropped.dst).channel);
          if (receiver) this.askResend(stream, dropped.src, dropped.dst, receiver.hwm(stream) + 1, true);
        }
      });
    this.streamChains.set(stream, tail);
    return tail;
  }

  private async deliverStream(stream: string, f: DeliverFrame, payloads: Uint8Array[]): Promise<void> {
    const { connector, channel } = splitAddress(f.dst);
    const receiver = this.receivers.get(channel);
    if (connector !== this.identity.connector || !receiver) {
      this.log("error", "a delivery arrived for a channel this connector does not receive on; add it with an inbox to the config", { destination: f.dst, source: f.src });
      return;
    }
    const hwm = receiver.hwm(stream);
    const fresh: Incoming[] = [];
    f.msgs.forEach((meta, i) => {
      if (meta.dseq > hwm) fresh.push({ meta, payload: payloads[i] as Uint8Array });
    });
    const first = fresh[0];
    if (!first) {
      // All of it was delivered before (an ack got lost): acknowledge again, with a receipt.
      void this.acks.again(stream, f.src, f.dst, hwm, f.msgs.map((m) => ({ id: m.id, sha256: m.sha256 })));
      return;
    }
    if (f.after > hwm) {
      // Something between our mark and this frame never reached us.
      this.askResend(stream, f.src, f.dst, hwm + 1);
      return;
    }
    for (const m of fresh) {
      // A large payload is checked whole when it is fetched, below.
      if (m.meta.blob) continue;
      const digest = createHash("sha256").update(m.payload).digest("hex");
      if (digest !== m.meta.sha256) {
        this.log("error", "payload digest mismatch; asking the edge to send it again", { stream, dseq: m.meta.dseq, id: m.meta.id });
        const ok = fresh.slice(0, fresh.indexOf(m));
        if (ok.length > 0) await this.commitDelivered(stream, f, receiver, ok);
        this.askResend(stream, f.src, f.dst, m.meta.dseq, true);
        return;
      }
    }
    // Large payloads are fetched in order before anything after them is delivered.
    const damaged = new Map<Incoming, string>();
    for (const [i, m] of fresh.entries()) {
      if (!m.meta.blob) continue;
      try {
        m.file = await this.downloads.fetch(f.src, f.dst, m.meta);
      } catch (e) {
        if (e instanceof TransferError && !e.retry) {
          damaged.set(m, e.message);
          continue;
        }
        // Deliver what came before it; ask for the rest again after a pause (a full disk, a cut link).
        this.log("error", "a large payload could not be fetched yet; retrying", { stream, id: m.meta.id, file: m.meta.fields?.filename, error: (e as Error).message });
        fresh.splice(i);
        const from = m.meta.dseq;
        setTimeout(() => this.askResend(stream, f.src, f.dst, from, true), 2000 + Math.floor(Math.random() * 3000)).unref();
        break;
      }
    }
    if (fresh.length === 0) return;
    // Verify (and decrypt) what the route protects; forgeries are never delivered.
    const ready: (Incoming | { dead: Incoming; reason: string })[] = [];
    for (const m of fresh) {
      const broken = damaged.get(m);
      if (broken) {
        ready.push({ dead: m, reason: broken });
        continue;
      }
      if ((m.meta.protection ?? "none") === "none") {
        ready.push(inflated(m));
        continue;
      }
      const senderJwk = this.policies.senderKey(splitAddress(m.meta.source).connector);
      try {
        const u = await unprotect(m.meta, m.payload, { senderJwk, decryptJwk: this.identity.encPrivateJwk ?? null, payloadVerified: m.file !== undefined });
        if (m.file && m.meta.blob?.key && m.meta.protection === "encrypt") {
          // The signature held for the ciphertext; now its parts are opened into the original, whose digest is checked.
          const info = await unwrapKey(m.meta.blob.key, this.identity.encPrivateJwk ?? null);
          const file = await this.downloads.open(f.dst, m.meta.id, m.file, m.meta.blob, info);
          const { fields: _sealed, blob: _b, ...rest } = m.meta;
          ready.push({ meta: { ...rest, contentType: info.contentType, size: info.size, sha256: info.sha256, ...(info.fields ? { fields: info.fields } : {}) }, payload: new Uint8Array(0), file });
          continue;
        }
        const { fields: _wire, ...rest } = m.meta;
        ready.push(inflated({ meta: { ...rest, contentType: u.contentType, size: u.size, sha256: u.sha256, ...(u.fields ? { fields: u.fields } : {}) }, payload: u.payload, ...(m.file ? { file: m.file } : {}) }));
      } catch (e) {
        if (e instanceof ProtectionError && e.code === "NO_KEY") {
          // A peer this connector has not heard of yet: learn the keys, and let the edge push again.
          this.log("warn", "no key to verify a protected message yet; refreshing the edge config", { stream, source: m.meta.source, error: e.message });
          const from = m.meta.dseq;
          void this.refreshConfig().then(() => this.askResend(stream, f.src, f.dst, from, true));
          if (ready.length > 0) break;
          return;
        }
        ready.push({ dead: m, reason: (e as Error).message });
      }
    }
    try {
      await this.commitDelivered(stream, f, receiver, ready);
    } finally {
      // Delivered large payloads were moved or copied by the receiver; refused ones were kept as dead letters.
      for (const m of fresh) if (m.meta.blob && receiver.hwm(stream) >= m.meta.dseq) await this.downloads.discard(f.dst, m.meta.id);
    }
  }

  /**
   * Hands contiguous runs to the receiver. Positions the edge skipped
   * (expired there, dead letters) are passed over with `skip`, so the mark
   * moves past them without delivering anything.
   */
  private async commitDelivered(stream: string, f: DeliverFrame, receiver: Receiver, msgs: (Incoming | { dead: Incoming; reason: string })[]): Promise<void> {
    let upTo = receiver.hwm(stream);
    let run: Incoming[] = [];
    const flush = async () => {
      if (run.length === 0) return;
      upTo = await receiver.deliver(stream, run);
      run = [];
    };
    const received: { id: string; sha256: string }[] = [];
    for (const item of msgs) {
      const m = "dead" in item ? item.dead : item;
      if (!("dead" in item)) received.push({ id: m.meta.id, sha256: m.meta.sha256 });
      const expected = upTo + run.length + 1;
      if (m.meta.dseq !== expected) {
        await flush();
        await receiver.skip(stream, m.meta.dseq - 1);
        this.log("warn", "positions expired at the edge were skipped (see the dead letters there)", { stream, from: upTo + 1, to: m.meta.dseq - 1 });
        upTo = m.meta.dseq - 1;
      }
      if ("dead" in item) {
        await flush();
        const kept = await writeDeadLetter(this.stateDir, splitAddress(f.dst).channel, stream, m.meta, m.file ?? m.payload, item.reason);
        this.log("error", "refused a message that failed its protection check; kept as a dead letter", { stream, dseq: m.meta.dseq, id: m.meta.id, source: m.meta.source, reason: item.reason, kept });
        await receiver.skip(stream, m.meta.dseq);
        upTo = m.meta.dseq;
        continue;
      }
      run.push(m);
    }
    await flush();
    this.resendAsked.delete(stream);
    this.lastDelivery.set(stream, { at: Date.now(), upTo });
    // Acknowledged with the stream's next frames, with a signed receipt for what was delivered (non-repudiation): the sender gets it through the edge.
    this.acks.add(stream, f.src, f.dst, upTo, received);
    this.emit("delivered", stream, upTo, msgs.length);
  }

  /** Asks for a resend once per position (frames already in flight behind a gap would each ask again). */
  private askResend(stream: string, src: string, dst: string, from: number, force = false): void {
    const prev = this.resendAsked.get(stream);
    const now = Date.now();
    if (!force && prev && prev.from === from && now - prev.at < 5000) return;
    this.resendAsked.set(stream, { from, at: now });
    this.log("info", "gap in stream; asking the edge to resend", { stream, from });
    this.transport.send(encodeFrame({ t: "resend", src, dst, from }));
  }

  /** Keeps a destination's signed receipt (state/receipts.jsonl), checked against its enrolled key. */
  private async keepReceipt(frame: ReceiptFrame): Promise<void> {
    const signer = splitAddress(frame.dst).connector;
    const verified = frame.signed ? (await verifyReceipt(frame.signed, this.policies.senderKey(signer))) !== null : null;
    // A receipt can come before the refresh that fetches the edge's keys (just after a start): wait for it.
    if (frame.edge && this.refreshing) await this.refreshing;
    const edge = frame.edge ? await this.policies.checkEdge(frame.edge, `ferry:${this.identity.tenant}:${this.identity.connector}`) : null;
    // null: not signed by the edge, or its keys could not be fetched to check (then not called false).
    const edgeVerified = edge === null || (!edge.ok && edge.why === "unknown") ? null : edge.ok;
    if (verified === false) this.log("warn", "a receipt did not verify with the destination's enrolled key", { destination: frame.dst });
    if (edgeVerified === false) this.log("warn", "a receipt's edge signature did not verify with the edge's published keys", { destination: frame.dst });
    if (edge && !edge.ok && edge.why === "unknown") this.log("warn", "could not check a receipt's edge signature", { destination: frame.dst, why: edge.detail });
    const line = { at: frame.at, channel: frame.ch, destination: frame.dst, status: frame.status, ids: frame.ids, verified, edgeVerified, jws: frame.signed ?? null, edge: frame.edge ?? null };
    await this.receiptLog.append(JSON.stringify(line)).catch((e: unknown) => this.log("warn", "could not store a receipt", { error: (e as Error).message }));
  }

  // ---- link ----

  /**
   * Rotates this connector's keys: new Ed25519 and X25519 pairs, registered
   * with a request signed by the old key and a proof made with the new one;
   * then the identity file is replaced and the connection redialled with the
   * new key. The old key stops working at the edge at once.
   */
  async rotateKeys(): Promise<void> {
    const edge = this.connectedEdge ?? this.identity.edges[0];
    if (!edge) throw new Error("no edge to register new keys with");
    const { publicKey, privateKey } = await generateKeyPair("Ed25519", { extractable: true });
    const enc = await encryptionKeys();
    const pub = await exportJWK(publicKey);
    const proof = await new CompactSign(new TextEncoder().encode(`rotate:${this.identity.connectorId}`)).setProtectedHeader({ alg: "Ed25519", typ: ROTATE_PROOF_TYPE }).sign(privateKey);
    const res = await edgeFetch(new URL("/v1/keys", edge), {
      method: "POST",
      headers: { authorization: `Bearer ${await connectAssertion(this.identity)}`, "content-type": "application/json" },
      body: JSON.stringify({ signingKey: { kty: "OKP", crv: "Ed25519", x: pub.x }, encryptionKey: { kty: "OKP", crv: "X25519", x: enc.encPublicJwk.x }, proof }),
    });
    if (!res.ok) throw new Error(`the edge refused the new keys (${res.status}): ${((await res.json().catch(() => ({}))) as { detail?: string }).detail ?? ""}`);
    const next: Identity = { ...this.identity, privateJwk: await exportJWK(privateKey), publicJwk: pub, ...enc };
    await writeFileAtomic(identityPath(this.stateDir), JSON.stringify(next, null, 2));
    Object.assign(this.identity, next);
    this.log("info", "keys rotated; reconnecting with the new key", { connector: this.identity.connector });
    if (this.transport.status === "open") this.transport.recycle("keys rotated");
  }

  private schedulePolicyRetry(): void {
    if (this.policyTimer || this.transport.status !== "open") return;
    this.policyTimer = setTimeout(() => {
      this.policyTimer = null;
      void this.refreshConfig();
    }, 1000 + this.policyBackoff.next());
    this.policyTimer.unref();
  }

  /** Fetches routes and keys from the edge; sends that waited for them go on. */
  refreshConfig(): Promise<void> {
    this.refreshing ??= (async () => {
      const edge = this.connectedEdge ?? this.identity.edges[0];
      if (!edge) return;
      try {
        if (!this.keyRegistered) {
          const res = await edgeFetch(new URL("/v1/keys", edge), {
            method: "POST",
            headers: { authorization: `Bearer ${await connectAssertion(this.identity)}`, "content-type": "application/json" },
            body: JSON.stringify({ encryptionKey: { kty: "OKP", crv: "X25519", x: this.identity.encPublicJwk?.x } }),
          });
          if (res.ok) this.keyRegistered = true;
        }
        const conf = await this.policies.refresh(this.identity, edge);
        this.emit("config", conf.edges);
      } catch (e) {
        this.log("warn", "could not refresh the edge config; using the last one", { error: (e as Error).message });
      }
      for (const ch of this.spool.channels()) this.kickSend(ch);
    })().finally(() => {
      this.refreshing = null;
    });
    return this.refreshing;
  }

  private onOpen(edge: string): void {
    this.generation++;
    this.connectedEdge = edge;
    // Another edge (or the same one, rolled back) may take less: nothing beyond the base protocol until its welcome says so.
    this.edgeFeatures = new Set();
    void this.refreshConfig();
    this.resendAsked.clear();
    // Acks that waited for a connection go first.
    void this.acks.flushAll();
    this.uploads.onOpen();
    this.downloads.onOpen();
    for (const ch of this.spool.channels()) {
      const s = this.st(ch);
      // Everything unacknowledged goes again, oldest first; the edge dedups.
      s.next = this.spool.acked(ch) + 1;
      s.lastProgress = Date.now();
      s.pausedUntil = 0;
      this.kickSend(ch);
    }
    this.emit("connected", edge);
  }

  private onClose(code: number, reason: string): void {
    this.generation++;
    this.connectedEdge = null;
    this.log("info", "disconnected", { code, reason });
    this.emit("disconnected", code, reason);
  }

  private onFrame(data: Uint8Array): void {
    let decoded;
    try {
      decoded = decodeFrame(data);
    } catch (e) {
      this.log("error", "bad frame from the edge", { error: (e as Error).message });
      return;
    }
    const { frame, payloads } = decoded;
    switch (frame.t) {
      case "welcome":
        this.transport.setHeartbeat(Math.min(frame.heartbeat, this.heartbeatSeconds));
        this.edgeFeatures = new Set(frame.features ?? []);
        this.log("info", "session open", { tenant: frame.tenant, connector: frame.connector, region: frame.region });
        return;
      case "puback":
        this.onPubAck(frame).catch((e: unknown) => this.log("error", "could not record an acknowledgement", { error: (e as Error).message }));
        return;
      case "deliver":
        void this.onDeliver(frame, payloads);
        return;
      case "receipt":
        if (frame.signed || frame.edge) void this.keepReceipt(frame);
        this.receipts.push(frame);
        if (this.receipts.length > 100) this.receipts.shift();
        this.log("debug", "receipt", { channel: frame.ch, destination: frame.dst, status: frame.status, count: frame.ids.length });
        this.emit("receipt", frame);
        return;
      case "uploaded":
        this.uploads.onUploaded(frame);
        return;
      case "part":
        this.downloads.onPart(frame, payloads[0] as Uint8Array);
        return;
      case "relay":
        this.downloads.relay(frame, payloads[0] as Uint8Array);
        return;
      case "error":
        this.emit("edgeError", frame);
        if (frame.id && (this.uploads.onError(frame) || this.downloads.onError(frame))) {
          // A publish that stopped at an incomplete upload resends from there once it is done.
          if (frame.code === ErrorCode.UPLOAD_INCOMPLETE && frame.ch) this.st(frame.ch).next = this.spool.acked(frame.ch) + 1;
          return;
        }
        if (frame.ch && (frame.src === undefined || frame.dst === undefined)) this.onSendError({ ...frame, ch: frame.ch });
        else this.log("warn", "edge error", { code: frame.code, message: frame.message, source: frame.src, destination: frame.dst });
        return;
      default:
        this.log("warn", "unexpected frame from the edge", { type: frame.t });
    }
  }
}
