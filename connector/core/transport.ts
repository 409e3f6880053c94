import WebSocket from "ws";
import { CloseCode, HEARTBEAT_PING, HEARTBEAT_PONG } from "../../wire/index.ts";
import { Backoff } from "./backoff.ts";
import { edgeSocketAgent } from "./edge-http.ts";
import type { Logger } from "./log.ts";

export type TransportState = "connecting" | "open" | "closed" | "stopped";

export type TransportEvents = {
  /** A binary frame arrived (validated by the caller with the wire module). */
  frame(data: Uint8Array): void;
  /** The socket is open; the caller (re)sends what is unacknowledged. */
  open(edge: string): void;
  /** The socket closed; in-flight state is void. */
  close(code: number, reason: string): void;
};

export type TransportOptions = {
  /** Edge base URLs (http or https), first preferred; the next is tried when one fails. */
  edges: string[];
  /** A fresh bearer assertion for each connection attempt. */
  authorize: () => Promise<string>;
  log: Logger;
  /** Seconds between pings; the edge's welcome frame may change it. */
  heartbeatSeconds?: number;
  /** Stay up this long before the backoff is forgotten. */
  stableAfterMs?: number;
  /** What this connector can do beyond the base protocol, told to the edge at connect (e.g. "relay"). */
  features?: string[];
  events: TransportEvents;
};

declare const FERRY_VERSION: string | undefined;
/** Told to the edge at connect, for administrators (set by the bundler; "dev" from source). */
const CONNECTOR_VERSION = typeof FERRY_VERSION === "string" ? FERRY_VERSION : "dev";

const LOOPBACK = /^(127\.\d{1,3}\.\d{1,3}\.\d{1,3}|localhost|\[::1\])$/;

/** Fills a frame's masking key with zeros: ws then sends the payload as it is (no masked copy). */
export const zeroMask = (mask: Buffer): void => {
  mask.fill(0);
};

/**
 * The masking key of the connector's frames to `url`. RFC 6455 masks every
 * client frame with a random key so that bytes a script chose never cross a
 * plaintext intermediary (a proxy's cache) as written. Over TLS (wss://, as
 * every production edge is reached) no intermediary sees the bytes, and on
 * loopback without a proxy there is none: there the key is all zeros, a
 * valid key with which ws skips the masking pass, a copy and an XOR of every
 * byte sent (the largest part of a sender's CPU on a large file, D24).
 * Anywhere else (plain ws:// beyond this machine, or through a proxy) frames
 * are masked as usual (undefined: ws's random keys).
 */
export function maskFor(url: URL, proxied: boolean): ((mask: Buffer) => void) | undefined {
  if (url.protocol === "wss:") return zeroMask;
  return LOOPBACK.test(url.hostname) && !proxied ? zeroMask : undefined;
}

/** Close codes after which reconnecting cannot help. */
const FATAL = new Set<number>([CloseCode.REVOKED, CloseCode.UNAUTHORIZED]);

/**
 * The connector's only network link: an outbound WebSocket to the edge
 * (no inbound ports). Reconnects with jittered backoff, fails over across
 * edge URLs, and detects half-open connections with heartbeats: a ping every
 * `heartbeat` seconds, and a connection that answered nothing for two
 * intervals is cut and redialled.
 */
export class Transport {
  private ws: WebSocket | null = null;
  private state: TransportState = "closed";
  private edgeIndex = 0;
  private readonly backoff = new Backoff();
  private retryTimer: NodeJS.Timeout | null = null;
  private beatTimer: NodeJS.Timeout | null = null;
  private lastHeard = 0;
  private openedAt = 0;
  private heartbeatMs: number;
  /** Set when the edge refused us for good (revoked): no more reconnects. */
  fatal: { code: number; reason: string } | null = null;

  constructor(private opts: TransportOptions) {
    this.heartbeatMs = (opts.heartbeatSeconds ?? 15) * 1000;
  }

  get status(): TransportState {
    return this.state;
  }

  get edge(): string {
    return this.opts.edges[this.edgeIndex % this.opts.edges.length] as string;
  }

  start(): void {
    if (this.state === "stopped") return;
    void this.dial();
  }

  /** New edge addresses (from the edge's config); used from the next dial on. */
  setEdges(edges: string[]): void {
    if (edges.length > 0) this.opts.edges = edges;
  }

  setHeartbeat(seconds: number): void {
    this.heartbeatMs = seconds * 1000;
  }

  /**
   * Sends a frame; false when not connected (the caller keeps it and
   * resends on open). Given pieces (encodeFrameParts), they go as fragments
   * of one message, back to back: nothing can come between them.
   * Unmasked frames (D24) are not copied: the socket holds the caller's
   * buffers until it has written them, so a caller that reuses a buffer
   * waits for `written` (called once the last piece left for the kernel,
   * or the socket failed).
   */
  send(data: Uint8Array | Uint8Array[], written?: () => void): boolean {
    const ws = this.ws;
    if (!ws || this.state !== "open" || ws.readyState !== WebSocket.OPEN) return false;
    const pieces = Array.isArray(data) ? data : [data];
    pieces.forEach((piece, i) => ws.send(piece, { binary: true, fin: i === pieces.length - 1 }, i === pieces.length - 1 && written ? () => written() : undefined));
    return true;
  }

  /** Bytes queued in the socket; callers stop producing above a bound. */
  get buffered(): number {
    return this.ws?.bufferedAmount ?? 0;
  }

  /** Drops the connection and dials again (e.g. an ack timed out). */
  recycle(reason: string): void {
    this.opts.log("warn", "reconnecting", { reason });
    this.ws?.terminate();
  }

  async stop(): Promise<void> {
    this.state = "stopped";
    if (this.retryTimer) clearTimeout(this.retryTimer);
    if (this.beatTimer) clearInterval(this.beatTimer);
    const ws = this.ws;
    if (!ws || ws.readyState === WebSocket.CLOSED) return;
    await new Promise<void>((resolve) => {
      const t = setTimeout(() => {
        ws.terminate();
        resolve();
      }, 2000);
      ws.once("close", () => {
        clearTimeout(t);
        resolve();
      });
      ws.close(CloseCode.GOING_AWAY, "connector stopping");
    });
  }

  private async dial(): Promise<void> {
    if (this.state === "stopped") return;
    this.state = "connecting";
    const edge = this.edge;
    const url = new URL("/v1/connect", edge);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    let token: string;
    try {
      token = await this.opts.authorize();
    } catch (e) {
      this.opts.log("error", "cannot sign the session assertion", { error: (e as Error).message });
      this.schedule();
      return;
    }
    if (this.state !== "connecting") return;
    const agent = edgeSocketAgent(edge);
    const generateMask = maskFor(url, agent !== undefined);
    const ws = new WebSocket(url, { headers: { authorization: `Bearer ${token}`, "x-ferry-connector-version": CONNECTOR_VERSION, "x-ferry-features": (this.opts.features ?? []).join(",") }, maxPayload: 32 * 1024 * 1024, handshakeTimeout: 15_000,
      // No permessage-deflate: payloads are mostly compressed already, and deflating 8 MiB chunks costs more CPU than the link saves.
      perMessageDeflate: false, ...(agent ? { agent } : {}), ...(generateMask ? { generateMask } : {}) });
    this.ws = ws;
    ws.binaryType = "nodebuffer";
    ws.on("open", () => {
      this.state = "open";
      this.openedAt = Date.now();
      this.lastHeard = Date.now();
      this.opts.log("info", "connected", { edge });
      this.startHeartbeat(ws);
      this.opts.events.open(edge);
    });
    ws.on("message", (data: Buffer, isBinary: boolean) => {
      this.lastHeard = Date.now();
      if (!isBinary) {
        if (data.toString() !== HEARTBEAT_PONG) this.opts.log("warn", "unexpected text frame from the edge");
        return;
      }
      this.opts.events.frame(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    });
    ws.on("unexpected-response", (_req, res) => {
      let body = "";
      res.on("data", (c: Buffer) => (body += c.toString()));
      res.on("end", () => {
        const detail = (() => {
          try {
            return (JSON.parse(body) as { detail?: string }).detail ?? body;
          } catch {
            return body;
          }
        })();
        this.opts.log("error", "edge refused the connection", { edge, status: res.statusCode, detail });
        ws.terminate();
      });
    });
    ws.on("error", (err) => {
      this.opts.log("warn", "connection error", { edge, error: err.message });
    });
    ws.on("close", (code, reasonBuf) => {
      const reason = reasonBuf.toString();
      if (this.ws === ws) this.ws = null;
      if (this.beatTimer) clearInterval(this.beatTimer);
      const wasOpen = this.state === "open";
      if (this.state !== "stopped") this.state = "closed";
      if (wasOpen) this.opts.events.close(code, reason);
      if (FATAL.has(code)) {
        this.fatal = { code, reason };
        this.opts.log("error", "the edge ended this connector's session for good", { code, reason });
        this.state = "stopped";
        return;
      }
      if (wasOpen && Date.now() - this.openedAt >= (this.opts.stableAfterMs ?? 10_000)) this.backoff.reset();
      if (!wasOpen) this.edgeIndex++;
      this.schedule();
    });
  }

  private schedule(): void {
    if (this.state === "stopped") return;
    const delay = this.backoff.next();
    this.opts.log("debug", "redialling", { inMs: delay, edge: this.edge });
    this.retryTimer = setTimeout(() => void this.dial(), delay);
  }

  private startHeartbeat(ws: WebSocket): void {
    if (this.beatTimer) clearInterval(this.beatTimer);
    const tick = Math.max(100, Math.floor(this.heartbeatMs / 2));
    let lastPing = 0;
    this.beatTimer = setInterval(() => {
      const now = Date.now();
      if (now - this.lastHeard > 2 * this.heartbeatMs) {
        this.opts.log("warn", "no answer from the edge; the connection is dead", { silentMs: now - this.lastHeard });
        ws.terminate();
        return;
      }
      if (now - lastPing >= this.heartbeatMs && ws.readyState === WebSocket.OPEN) {
        lastPing = now;
        ws.send(HEARTBEAT_PING);
      }
    }, tick);
    this.beatTimer.unref();
  }
}
