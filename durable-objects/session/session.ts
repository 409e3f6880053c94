import { DurableObject } from "cloudflare:workers";
import {
  CloseCode,
  decodeFrame,
  EdgeFeature,
  encodeFrame,
  ErrorCode,
  errorFrame,
  HEARTBEAT_PING,
  HEARTBEAT_PONG,
  PROTOCOL_VERSION,
  splitAddress,
  WireError,
  type AckFrame,
  type ChunkFrame,
  type GetFrame,
  type PubFrame,
  type RelayedFrame,
  type ResendFrame,
  type UploadFrame,
} from "../../wire/index.ts";
import type { UploadState } from "../channel/transfers.ts";
import { newUsage, type Usage } from "../usage.ts";
import { sourceRegion } from "../../workers/db.ts";
import { channelStub, sessionStub } from "../../workers/stubs.ts";
import { pushPart } from "../channel/relay.ts";

const REGION_CACHE_MS = 60_000;

/**
 * The tenant's message budget is counted in units of TENANT_BUDGET_UNIT
 * messages (wrangler.toml: 1,000, the default here; TENANT_LIMITER allows
 * 6,000 units a minute). A limiter call per 100 messages was about a tenth
 * of workerd's CPU on a windowed stream (eleven calls per frame of 1,024);
 * per 1,000 it is one or two.
 */
const TENANT_UNIT = 1000;
const TENANT_UNITS_PER_MINUTE = 6_000;

/** Seconds between the connector's pings; told to it in the welcome frame. */
export const HEARTBEAT_SECONDS = 15;

/** `features`: what the connector said it can do beyond the base protocol (e.g. "relay"). */
type Attachment = { tenant: string; connector: string; connectedAt: number; version: string | null; features?: string[] };

/**
 * The session object: one per connector. It owns the connector's
 * hibernatable WebSocket (accepted here, so an idle connector costs nothing),
 * hands what the connector publishes to the channel objects, and pushes
 * what channel objects deliver. It keeps no message state itself.
 */
export class ConnectorSession extends DurableObject<Env> {
  // Per source channel: publishes are handed on one after another, so a
  // batch never overtakes the one before it while an RPC is in flight.
  private chains = new Map<string, Promise<void>>();
  private regions = new Map<string, { region: string | null; at: number }>();
  private bucket = Number.POSITIVE_INFINITY;
  /** Billable operations since this object started (see usage()). */
  private readonly usageNow = newUsage();
  private bucketAt = Date.now();
  /** Messages of the tenant's budget already paid for by this connection (tenantAllows). */
  private tenantCredit = 0;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    // Answered by the runtime without waking the object: heartbeats stay free.
    ctx.setWebSocketAutoResponse(new WebSocketRequestResponsePair(HEARTBEAT_PING, HEARTBEAT_PONG));
  }

  /** The Worker forwards an authenticated upgrade here (it set the identity headers). */
  override async fetch(request: Request): Promise<Response> {
    this.usageNow.requests++;
    const tenant = request.headers.get("x-ferry-tenant");
    const connector = request.headers.get("x-ferry-connector");
    if (!tenant || !connector || request.headers.get("upgrade")?.toLowerCase() !== "websocket") {
      return new Response("session objects take authenticated WebSocket upgrades only", { status: 400 });
    }
    // One live connection per connector: the newest wins.
    for (const old of this.ctx.getWebSockets()) {
      try {
        old.close(CloseCode.REPLACED, "replaced by a newer connection of this connector");
      } catch {
        // already closing
      }
    }
    const pair = new WebSocketPair();
    const client = pair[0];
    const server = pair[1];
    this.ctx.acceptWebSocket(server);
    // What the connector says it runs (shown to admins; never trusted for anything).
    const version = request.headers.get("x-ferry-connector-version")?.slice(0, 32).replace(/[^\w.+-]/g, "") || null;
    const features = (request.headers.get("x-ferry-features") ?? "").split(",").map((f) => f.trim()).filter((f) => /^[a-z-]{1,32}$/.test(f)).slice(0, 16);
    const att: Attachment = { tenant, connector, connectedAt: Date.now(), version, features };
    server.serializeAttachment(att);
    server.send(
      encodeFrame({ t: "welcome", v: PROTOCOL_VERSION, tenant, connector, heartbeat: HEARTBEAT_SECONDS, region: this.env.FERRY_REGION, features: [EdgeFeature.UPLOAD_NAME] }),
    );
    this.ctx.waitUntil(this.attachInbound(att));
    return new Response(null, { status: 101, webSocket: client });
  }

  /** Tells every channel object that routes to this connector to push what is queued. */
  private async attachInbound(att: Attachment): Promise<void> {
    try {
      const { results } = await this.env.DB.prepare(
        "SELECT source, destination FROM routes WHERE tenant = ? AND destination_connector = ?",
      )
        .bind(att.tenant, att.connector)
        .all<{ source: string; destination: string }>();
      const bySource = new Map<string, string[]>();
      for (const r of results) bySource.set(r.source, [...(bySource.get(r.source) ?? []), r.destination]);
      await Promise.all([...bySource].map(async ([source, dsts]) => (await this.channel(att.tenant, source)).attach(att.tenant, source, dsts)));
    } catch (e) {
      // The channel objects' alarms push again on their own; this only speeds it up.
      console.warn("attach after connect failed", e);
    }
  }

  /** The channel object of a source, in its region's namespace (the pin is looked up, then cached a minute). */
  private async channel(tenant: string, source: string) {
    const cached = this.regions.get(source);
    let region: string | null;
    if (cached && Date.now() - cached.at < REGION_CACHE_MS) region = cached.region;
    else {
      region = await sourceRegion(this.env, tenant, source);
      this.regions.set(source, { region, at: Date.now() });
    }
    return channelStub(this.env, tenant, source, region);
  }

  private current(): WebSocket | undefined {
    let best: WebSocket | undefined;
    let bestAt = -1;
    for (const ws of this.ctx.getWebSockets()) {
      if (ws.readyState !== WebSocket.OPEN) continue;
      const att = ws.deserializeAttachment() as Attachment | null;
      if (att && att.connectedAt > bestAt) {
        best = ws;
        bestAt = att.connectedAt;
      }
    }
    return best;
  }

  /** A channel object pushes a deliver frame; false means the connector is offline. */
  async deliver(frame: Uint8Array): Promise<boolean> {
    this.usageNow.requests++;
    return this.push(frame);
  }

  /** Billable operations since this object started (not counted itself): the bench's measured cost. */
  async usage(): Promise<Usage> {
    return { ...this.usageNow };
  }

  private push(frame: Uint8Array): boolean {
    const ws = this.current();
    if (!ws) return false;
    try {
      ws.send(frame);
      return true;
    } catch {
      return false;
    }
  }

  /** Receipts and other notices, one frame or several in order: sent if connected, otherwise dropped (they are in the event log). */
  async notify(frames: Uint8Array | Uint8Array[]): Promise<boolean> {
    this.usageNow.requests++;
    if (!Array.isArray(frames)) return this.push(frames);
    for (const f of frames) if (!this.push(f)) return false;
    return true;
  }

  async presence(): Promise<{ online: boolean; connectedAt: number | null; version: string | null }> {
    this.usageNow.requests++;
    const ws = this.current();
    const att = ws ? (ws.deserializeAttachment() as Attachment) : null;
    return { online: ws !== undefined, connectedAt: att?.connectedAt ?? null, version: att?.version ?? null };
  }

  /**
   * Is the connector online and does it take relayed large payloads (D19)?
   * Asked by a channel object before it relays an upload instead of storing it.
   */
  async relayReady(): Promise<boolean> {
    this.usageNow.requests++;
    const ws = this.current();
    const att = ws ? (ws.deserializeAttachment() as Attachment) : null;
    return att?.features?.includes("relay") === true;
  }

  /** Revocation closes the open connection at once. */
  async revoke(): Promise<void> {
    this.usageNow.requests++;
    for (const ws of this.ctx.getWebSockets()) {
      try {
        ws.close(CloseCode.REVOKED, "connector revoked by an administrator");
      } catch {
        // already closed
      }
    }
  }

  override async webSocketMessage(ws: WebSocket, message: string | ArrayBuffer): Promise<void> {
    this.usageNow.webSocketMessagesIn++;
    const att = ws.deserializeAttachment() as Attachment;
    if (typeof message === "string") {
      ws.send(errorFrame(ErrorCode.BAD_FRAME, `text frames carry only the heartbeat '${HEARTBEAT_PING}'`));
      return;
    }
    let decoded;
    try {
      decoded = decodeFrame(message);
    } catch (e) {
      const err = e instanceof WireError ? e : new WireError(ErrorCode.BAD_FRAME, String(e));
      console.warn(`bad frame from ${att.tenant}:${att.connector}: ${err.message}`);
      ws.send(errorFrame(err.code, err.message));
      return;
    }
    const { frame, payloads } = decoded;
    switch (frame.t) {
      case "pub":
        return this.serial(frame.ch, () => this.onPub(ws, att, frame, payloads));
      case "ack":
        return this.onAck(ws, att, frame);
      case "resend":
        return this.onResend(ws, att, frame);
      // Large payloads go in order with the channel's publishes: a `pub` that
      // refers to one never overtakes the chunk that completes it.
      case "upload":
        return this.serial(frame.ch, () => this.onUpload(ws, att, frame));
      case "chunk":
        return this.serial(frame.ch, () => this.onChunk(ws, att, frame, payloads[0] as Uint8Array));
      case "get":
        return this.serial(`get:${frame.src}`, () => this.onGet(ws, att, frame));
      // In order per payload: a part's answer never overtakes the one before it.
      case "relayed":
        return this.serial(`relayed:${frame.src}`, () => this.onRelayed(ws, att, frame));
      default:
        ws.send(errorFrame(ErrorCode.BAD_FRAME, `connectors do not send '${frame.t}' frames`));
    }
  }

  private serial(key: string, task: () => Promise<void>): Promise<void> {
    const run = (this.chains.get(key) ?? Promise.resolve()).then(task);
    const tail = run.catch(() => undefined);
    this.chains.set(key, tail);
    void tail.then(() => {
      if (this.chains.get(key) === tail) this.chains.delete(key);
    });
    return run;
  }

  /**
   * Per-connector allowance (a token bucket, CONNECTOR_MSGS_PER_SECOND with
   * two seconds of burst): one connector cannot starve the others' objects.
   * Memory only: after hibernation the bucket starts full.
   */
  private allow(count: number): boolean {
    const rate = Number(this.env.CONNECTOR_MSGS_PER_SECOND) || 20_000;
    const now = Date.now();
    this.bucket = Math.min(rate * 2, this.bucket + ((now - this.bucketAt) / 1000) * rate);
    this.bucketAt = now;
    if (count > this.bucket) return false;
    this.bucket -= count;
    return true;
  }

  /** Messages per unit of the tenant's budget (the var, else TENANT_UNIT). */
  private tenantUnit(): number {
    return Number(this.env.TENANT_BUDGET_UNIT) || TENANT_UNIT;
  }

  /**
   * Takes `messages` from the tenant's budget, shared by all its connectors
   * (the rate-limiting binding, keyed by tenant). The limiter is asked for
   * whole units (tenantUnit), paid ahead: a connector sending one message
   * at a time asks once per unit, not once per frame (a call costs
   * CPU here and a round trip in production). Units paid and not yet used
   * (less than one per connection) are forgotten when this object is
   * evicted: a tenant is never let past its budget, at most charged a
   * little early.
   */
  private async tenantAllows(tenant: string, messages: number): Promise<boolean> {
    const limiter = this.env.TENANT_LIMITER;
    if (!limiter) return true;
    while (this.tenantCredit < messages) {
      if (!(await limiter.limit({ key: tenant })).success) return false;
      this.tenantCredit += this.tenantUnit();
    }
    this.tenantCredit -= messages;
    return true;
  }

  private async onPub(ws: WebSocket, att: Attachment, frame: PubFrame, payloads: Uint8Array[]): Promise<void> {
    // A connector publishes only from its own addresses.
    const source = `${att.connector}/${frame.ch}`;
    if (!this.allow(frame.msgs.length)) {
      ws.send(errorFrame(ErrorCode.RATE_LIMITED, `${att.connector} sends faster than ${Number(this.env.CONNECTOR_MSGS_PER_SECOND) || 20_000} messages a second; nothing of this frame was accepted, resend after a pause`, { ch: frame.ch }));
      return;
    }
    if (!(await this.tenantAllows(att.tenant, frame.msgs.length))) {
      console.warn(JSON.stringify({ event: "refused", status: 429, path: "/v1/connect", reason: "tenant message budget", tenant: att.tenant, connector: att.connector }));
      ws.send(errorFrame(ErrorCode.RATE_LIMITED, `tenant budget: ${att.tenant} sends more than ${TENANT_UNITS_PER_MINUTE * this.tenantUnit()} messages a minute across its connectors; nothing of this frame was accepted, resend after a pause`, { ch: frame.ch }));
      return;
    }
    let res;
    try {
      res = await (await this.channel(att.tenant, source)).publish({ tenant: att.tenant, source, epoch: frame.epoch, msgs: frame.msgs, payloads });
    } catch (e) {
      console.error("publish RPC failed", source, e);
      ws.send(errorFrame(ErrorCode.INTERNAL, `the edge could not reach the channel object of ${source}; nothing was accepted, resend`, { ch: frame.ch }));
      return;
    }
    if (!res.ok) {
      // A route may have just been added in another region: look the pin up afresh next time.
      if (res.code === ErrorCode.NO_ROUTE) this.regions.delete(source);
      ws.send(errorFrame(res.code, res.message, { ch: frame.ch }));
      return;
    }
    ws.send(encodeFrame({ t: "puback", ch: frame.ch, epoch: frame.epoch, upTo: res.upTo }));
    if (res.incomplete) {
      ws.send(errorFrame(ErrorCode.UPLOAD_INCOMPLETE, `${res.incomplete.message}; upload it, then resend`, { ch: frame.ch, id: res.incomplete.id }));
    }
    if (res.gap) {
      ws.send(errorFrame(ErrorCode.SEQ_GAP, `expected seq ${res.gap.expected} on ${source}`, { ch: frame.ch, expected: res.gap.expected }));
    }
  }

  private async onUpload(ws: WebSocket, att: Attachment, frame: UploadFrame): Promise<void> {
    const source = `${att.connector}/${frame.ch}`;
    await this.answerUpload(ws, frame.ch, frame.id, undefined, async () => (await this.channel(att.tenant, source)).openUpload(att.tenant, source, frame));
  }

  private async onChunk(ws: WebSocket, att: Attachment, frame: ChunkFrame, bytes: Uint8Array): Promise<void> {
    const source = `${att.connector}/${frame.ch}`;
    await this.answerUpload(ws, frame.ch, frame.id, frame.part, async () => {
      const channel = await this.channel(att.tenant, source);
      // A relayed part goes from here to its destinations' sessions: the channel object only checks and counts it (D19).
      const step = await channel.relayPart(att.tenant, source, frame.id, frame.part, bytes.byteLength, frame.sha256);
      if (step === null) return channel.putPart(att.tenant, source, frame.id, frame.part, bytes, frame.sha256);
      if ("answer" in step) return step.answer;
      const missed = await pushPart(step.push, bytes, (connector) => sessionStub(this.env, att.tenant, connector));
      return missed.length > 0 ? channel.relayGone(att.tenant, source, frame.id, missed) : { ok: true, have: 0, parts: step.push.frame.parts, relaying: true };
    });
  }

  /** Every upload step is answered: with what the edge holds, or an error frame naming the transfer. */
  private async answerUpload(ws: WebSocket, ch: string, id: string, part: number | undefined, step: () => Promise<UploadState>): Promise<void> {
    let res: UploadState;
    try {
      res = await step();
    } catch (e) {
      console.error("upload step failed", ch, id, e);
      res = { ok: false, code: ErrorCode.STORAGE, message: `the edge could not store part ${part ?? 0} of ${id} (${(e as Error).message}); resend it` };
    }
    // A relayed part is answered later, when its destinations answer (the channel object notifies).
    if (res.ok && res.relaying) return;
    if (res.ok) ws.send(encodeFrame({ t: "uploaded", ch, id, have: res.have, parts: res.parts }));
    else ws.send(errorFrame(res.code, res.message, { ch, id, ...(part ? { part } : {}), ...(res.have !== undefined ? { have: res.have } : {}) }));
  }

  private async onRelayed(ws: WebSocket, att: Attachment, frame: RelayedFrame): Promise<void> {
    if (splitAddress(frame.dst).connector !== att.connector) {
      ws.send(errorFrame(ErrorCode.FORBIDDEN, `${att.connector} cannot answer for ${frame.dst}`, { src: frame.src, dst: frame.dst, id: frame.id }));
      return;
    }
    try {
      await (await this.channel(att.tenant, frame.src)).relayAck(att.tenant, frame.src, frame);
    } catch (e) {
      // The relay's timeout at the channel object stores the payload instead.
      console.error("relay answer RPC failed", frame.src, frame.id, e);
    }
  }

  private async onGet(ws: WebSocket, att: Attachment, frame: GetFrame): Promise<void> {
    const ids = { src: frame.src, dst: frame.dst, id: frame.id, part: frame.part };
    if (splitAddress(frame.dst).connector !== att.connector) {
      ws.send(errorFrame(ErrorCode.FORBIDDEN, `${att.connector} cannot fetch for ${frame.dst}`, ids));
      return;
    }
    try {
      const res = await (await this.channel(att.tenant, frame.src)).getPart(att.tenant, frame.src, frame.dst, frame.id, frame.part);
      if (!res.ok) ws.send(errorFrame(res.code, res.message, ids));
      else ws.send(encodeFrame({ t: "part", src: frame.src, dst: frame.dst, id: frame.id, part: frame.part, len: res.bytes.byteLength, sha256: res.sha256 }, [res.bytes]));
    } catch (e) {
      console.error("part fetch failed", frame.src, frame.id, e);
      ws.send(errorFrame(ErrorCode.STORAGE, `the edge could not read part ${frame.part} of ${frame.id}; ask again`, ids));
    }
  }

  private async onAck(ws: WebSocket, att: Attachment, frame: AckFrame): Promise<void> {
    if (splitAddress(frame.dst).connector !== att.connector) {
      ws.send(errorFrame(ErrorCode.FORBIDDEN, `${att.connector} cannot acknowledge for ${frame.dst}`, { src: frame.src, dst: frame.dst }));
      return;
    }
    const res = await (await this.channel(att.tenant, frame.src)).ack(att.tenant, frame.src, frame.dst, frame.upTo, frame.receipt);
    if (!res.ok) ws.send(errorFrame(res.code, res.message, { src: frame.src, dst: frame.dst }));
  }

  private async onResend(ws: WebSocket, att: Attachment, frame: ResendFrame): Promise<void> {
    if (splitAddress(frame.dst).connector !== att.connector) {
      ws.send(errorFrame(ErrorCode.FORBIDDEN, `${att.connector} cannot ask for ${frame.dst}`, { src: frame.src, dst: frame.dst }));
      return;
    }
    const res = await (await this.channel(att.tenant, frame.src)).resend(att.tenant, frame.src, frame.dst, frame.from);
    if (!res.ok) ws.send(errorFrame(res.code, res.message, { src: frame.src, dst: frame.dst }));
  }

  override async webSocketClose(ws: WebSocket, code: number, reason: string): Promise<void> {
    // Reciprocate, or the client waits for a close that never comes.
    try {
      ws.close(code === 1005 || code === 1006 || code === 1015 ? 1000 : code, reason);
    } catch {
      // already closed
    }
  }

  override async webSocketError(ws: WebSocket, error: unknown): Promise<void> {
    const att = ws.deserializeAttachment() as Attachment | null;
    console.warn(`socket error for ${att?.tenant}:${att?.connector}`, error);
  }
}
