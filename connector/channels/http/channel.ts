import { createReadStream } from "node:fs";
import { Readable } from "node:stream";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { join } from "node:path";
import { Limits } from "../../../wire/index.ts";
import type { HttpChannelConfig } from "../../config/config.ts";
import type { Connector } from "../../core/connector.ts";
import { CallbackReceiver, type Delivery } from "../../core/callback-receiver.ts";
import type { Channel } from "../channel.ts";
import { untilDelivered } from "../retry.ts";

/** How many idempotency keys the ingress remembers beyond the spool's pending messages. */
const REMEMBERED_KEYS = 10_000;

function problem(res: ServerResponse, status: number, title: string, detail: string): void {
  res.writeHead(status, { "content-type": "application/problem+json" });
  res.end(JSON.stringify({ type: "about:blank", title, status, detail }));
}

/** Reads a request body, refusing it as soon as it passes `limit` bytes. */
async function readBody(req: IncomingMessage, limit: number): Promise<Buffer | null> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).byteLength;
    if (size > limit) return null;
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

/**
 * The `http` channel. Sending: a local ingress on loopback; a POSTed body is
 * answered (202, with the message id) only once it is captured in the spool.
 * An `Idempotency-Key` header makes retries of the same POST safe.
 * Receiving: each message is POSTed to the application's webhook, retried
 * with backoff until it answers 2xx; every delivery carries the message id
 * as `Idempotency-Key`, and a possible repeat after a connector crash says
 * `Ferry-Redelivery: true`.
 */
export class HttpChannel implements Channel {
  private server: Server | null = null;
  private readonly abort = new AbortController();
  private readonly keys = new Map<string, { id: string; seq: number }>();

  constructor(
    readonly cfg: HttpChannelConfig,
    private readonly connector: Connector,
    private readonly stateDir: string,
  ) {}

  get name(): string {
    return this.cfg.name;
  }

  async open(): Promise<void> {
    if (this.cfg.webhook) {
      const receiver = await CallbackReceiver.open(join(this.stateDir, `delivered-${this.cfg.name}.json`), (d) => this.post(d));
      this.connector.receive(this.cfg.name, receiver);
    }
    for (const r of this.connector.spool.pending(this.cfg.name)) {
      const key = r.fields?.idempotencyKey;
      if (key) this.remember(key, { id: r.id, seq: r.seq });
    }
  }

  private remember(key: string, v: { id: string; seq: number }): void {
    this.keys.delete(key);
    this.keys.set(key, v);
    if (this.keys.size > REMEMBERED_KEYS) this.keys.delete(this.keys.keys().next().value as string);
  }

  async start(): Promise<void> {
    if (!this.cfg.listen) return;
    const i = this.cfg.listen.lastIndexOf(":");
    const host = this.cfg.listen.slice(0, i).replace(/^\[|\]$/g, "");
    const port = Number(this.cfg.listen.slice(i + 1));
    const server = createServer((req, res) => {
      this.ingress(req, res).catch((e: unknown) => {
        this.connector.log("error", "ingress failed", { channel: this.cfg.name, error: (e as Error).message });
        if (!res.headersSent) problem(res, 503, "Not captured", "the message could not be stored; nothing was sent, retry");
      });
    });
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once("error", (e: NodeJS.ErrnoException) =>
        reject(new Error(`channel ${this.cfg.name}: cannot listen on ${this.cfg.listen}: ${e.code === "EADDRINUSE" ? "the port is in use; choose another listen address" : e.message}`)),
      );
      server.listen(port, host, () => resolve());
    });
    this.connector.log("info", "http ingress listening", { channel: this.cfg.name, url: `http://${this.cfg.listen}/` });
  }

  private async ingress(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (req.method !== "POST") {
      res.setHeader("allow", "POST");
      return problem(res, 405, "Method not allowed", `POST the message body to http://${this.cfg.listen}/`);
    }
    const key = req.headers["idempotency-key"];
    if (typeof key === "string" && key.length > 255) return problem(res, 400, "Invalid request", "Idempotency-Key: at most 255 characters");
    const known = typeof key === "string" ? this.keys.get(key) : undefined;
    if (known) {
      await readBody(req, Limits.MAX_INLINE_PAYLOAD);
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ id: known.id, seq: known.seq, channel: this.cfg.name, duplicate: true }));
      return;
    }
    const body = await readBody(req, Limits.MAX_INLINE_PAYLOAD);
    if (!body) return problem(res, 413, "Payload too large", `a message is at most ${Limits.MAX_INLINE_PAYLOAD} bytes`);
    const fields: Record<string, string> = {};
    const filename = req.headers["ferry-filename"];
    if (typeof filename === "string") fields.filename = filename;
    if (typeof key === "string") fields.idempotencyKey = key;
    const rec = await this.connector.send(this.cfg.name, body, {
      contentType: req.headers["content-type"] ?? this.cfg.content_type,
      ...(Object.keys(fields).length > 0 ? { fields } : {}),
    });
    if (typeof key === "string") this.remember(key, { id: rec.id, seq: rec.seq });
    this.connector.log("info", "captured", { channel: this.cfg.name, id: rec.id, seq: rec.seq, size: rec.size, sha256: rec.sha256 });
    res.writeHead(202, { "content-type": "application/json", location: `ferry:message/${rec.id}` });
    res.end(JSON.stringify({ id: rec.id, seq: rec.seq, channel: this.cfg.name }));
  }

  private async post(d: Delivery): Promise<void> {
    const url = this.cfg.webhook as string;
    await untilDelivered(
      "webhook delivery",
      async (signal) => {
        const headers: Record<string, string> = {
          "content-type": d.meta.contentType,
          "idempotency-key": d.meta.id,
          "ferry-message-id": d.meta.id,
          "ferry-source": d.meta.source,
          "ferry-sequence": String(d.meta.dseq),
          "ferry-sha256": d.meta.sha256,
          "ferry-redelivery": String(d.redelivery),
        };
        if (d.meta.fields?.filename) headers["ferry-filename"] = encodeURIComponent(d.meta.fields.filename);
        if (d.file) headers["content-length"] = String(d.meta.size);
        // A large payload streams from its file: never whole in memory.
        const body = d.file ? (Readable.toWeb(createReadStream(d.file)) as ReadableStream<Uint8Array>) : d.payload;
        const res = await fetch(url, { method: "POST", headers, body, signal, ...(d.file ? { duplex: "half" } : {}) } as RequestInit);
        await res.arrayBuffer().catch(() => undefined);
        if (res.status < 200 || res.status > 299) throw new Error(`the webhook answered ${res.status}`);
      },
      { maxBackoffMs: this.cfg.max_backoff_ms, timeoutMs: this.cfg.timeout_ms, signal: this.abort.signal, log: this.connector.log, fields: { channel: this.cfg.name, id: d.meta.id, url } },
    );
    this.connector.log("info", "delivered", { channel: this.cfg.name, dseq: d.meta.dseq, id: d.meta.id, url, redelivery: d.redelivery });
  }

  async stop(): Promise<void> {
    this.abort.abort();
    const server = this.server;
    if (!server) return;
    // In-flight POSTs finish (their messages are being captured); new ones are refused.
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeIdleConnections();
    });
  }
}
