/**
 * The Durable Object ceilings (see wrangler.toml): the same hibernatable
 * WebSocket transport as Ferry's session object, with nothing else. One
 * object per stream name; the sender connects with ?role=send, the
 * receiver with ?role=recv.
 */
import { DurableObject } from "cloudflare:workers";
import { HEADER, readAck, readHeader } from "../frame.ts";

type Env = { FORWARD: DurableObjectNamespace<Forward>; FORWARD_SQL: DurableObjectNamespace<ForwardSql>; BUCKET: R2Bucket };

const PART = 8 * 1024 * 1024;

/**
 * What local R2 allows a large payload stored and forwarded (Ferry's claim
 * check): `mb` MiB written as a multipart upload in 8 MiB parts (Ferry's
 * chunk), completed, then read back part by part. Local R2 runs on the same
 * workerd thread as the objects, so this is the most a transfer through it
 * can reach on this machine, before any socket, hashing or bookkeeping.
 */
async function r2StoreAndForward(bucket: R2Bucket, name: string, mb: number): Promise<Response> {
  const part = new Uint8Array(PART);
  crypto.getRandomValues(part.subarray(0, 65536));
  const parts = Math.ceil(mb / 8);
  const key = `ceiling/${name}`;
  const t0 = Date.now();
  const mpu = await bucket.createMultipartUpload(key);
  const uploaded: R2UploadedPart[] = [];
  for (let i = 1; i <= parts; i++) uploaded.push(await mpu.uploadPart(i, part));
  await mpu.complete(uploaded);
  const t1 = Date.now();
  let bytes = 0;
  for (let i = 0; i < parts; i++) {
    const o = await bucket.get(key, { range: { offset: i * PART, length: PART } });
    bytes += (await (o as R2ObjectBody).arrayBuffer()).byteLength;
  }
  const t2 = Date.now();
  await bucket.delete(key);
  return Response.json({ bytes, writeSeconds: (t1 - t0) / 1000, readSeconds: (t2 - t1) / 1000 });
}

export class Forward extends DurableObject<Env> {
  override async fetch(request: Request): Promise<Response> {
    const role = new URL(request.url).searchParams.get("role");
    if ((role !== "send" && role !== "recv") || request.headers.get("upgrade") !== "websocket") {
      return new Response("WebSocket with ?role=send|recv", { status: 400 });
    }
    const pair = new WebSocketPair();
    this.ctx.acceptWebSocket(pair[1], [role]);
    return new Response(null, { status: 101, webSocket: pair[0] });
  }

  /** Called with each data frame before it is forwarded (the SQL ceiling stores it). */
  protected onData(_frame: Uint8Array): void {}

  /** Called with each acknowledgement before it is passed back. */
  protected onAck(_upTo: number): void {}

  override async webSocketMessage(ws: WebSocket, message: string | ArrayBuffer): Promise<void> {
    if (typeof message === "string") return;
    const bytes = new Uint8Array(message);
    const fromSender = this.ctx.getTags(ws).includes("send");
    if (fromSender) this.onData(bytes);
    else this.onAck(readAck(bytes));
    for (const peer of this.ctx.getWebSockets(fromSender ? "recv" : "send")) peer.send(message);
  }
}

export class ForwardSql extends Forward {
  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    ctx.storage.sql.exec("CREATE TABLE IF NOT EXISTS msgs (seq INTEGER PRIMARY KEY, payload BLOB NOT NULL)");
  }

  /** One row per message, one transaction (one commit, one fsync) per frame, like Ferry's batch. */
  protected override onData(frame: Uint8Array): void {
    const h = readHeader(frame);
    this.ctx.storage.transactionSync(() => {
      for (let i = 0; i < h.count; i++) {
        const at = HEADER + i * h.size;
        this.ctx.storage.sql.exec("INSERT OR REPLACE INTO msgs (seq, payload) VALUES (?, ?)", h.first + i, frame.slice(at, at + h.size).buffer);
      }
    });
  }

  protected override onAck(upTo: number): void {
    this.ctx.storage.sql.exec("DELETE FROM msgs WHERE seq <= ?", upTo);
  }
}

export default {
  async fetch(request: Request, env: Env): Promise<Response> {
    const url = new URL(request.url);
    const [, kind, name] = url.pathname.split("/");
    if (!name) return new Response("/forward/NAME or /forward-sql/NAME", { status: 404 });
    if (kind === "forward") return env.FORWARD.get(env.FORWARD.idFromName(name)).fetch(request);
    if (kind === "forward-sql") return env.FORWARD_SQL.get(env.FORWARD_SQL.idFromName(name)).fetch(request);
    if (kind === "r2") return r2StoreAndForward(env.BUCKET, name, Number(url.searchParams.get("mb") ?? 1024));
    return new Response("not found", { status: 404 });
  },
} satisfies ExportedHandler<Env>;
