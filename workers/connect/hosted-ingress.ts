import { Hono } from "hono";
import { Limits, sha256Hex } from "../../wire/index.ts";
import { sameSecret, webhookSignature } from "../signatures.ts";
import { ApiError } from "../http/problem.ts";
import type { AppEnv } from "../env.ts";
import { sourceRegion } from "../db.ts";
import { channelStub } from "../stubs.ts";
import { eventDb } from "../region.ts";
import { messageEvents } from "../event-log.ts";

/** Signed requests older than this are refused (replay window). */
const SIGNATURE_WINDOW_S = 300;

/**
 * `POST /v1/hosted/:tenant/:connector/:channel`: a hosted ingress. The
 * request is authenticated with the channel's secret (Bearer, or an HMAC
 * signature over the timestamp and body, as webhook providers send), and
 * answered 202 only once the channel object has committed the message; an
 * Idempotency-Key makes retries safe. Then it is routed like any other.
 */
export const hostedIngress = new Hono<AppEnv>().post("/:tenant/:connector/:channel", async (c) => {
  const tenant = c.req.param("tenant");
  const address = `${c.req.param("connector")}/${c.req.param("channel")}`;
  const row = await c.env.DB.prepare("SELECT secret FROM hosted_channels WHERE tenant = ? AND address = ? AND kind = 'ingress'").bind(tenant, address).first<{ secret: string }>();
  const deny = new ApiError(401, "Unauthorized", "send the channel's secret as 'Authorization: Bearer <secret>' or a 'Ferry-Signature: t=…,v1=…' HMAC header");
  if (!row) throw deny;
  // A flood at one hosted address (a misbehaving SaaS) must not crowd out the tenant's other traffic.
  const allowed = await c.env.INGRESS_LIMITER?.limit({ key: `${tenant}:${address}` });
  if (allowed && !allowed.success) throw new ApiError(429, "Too many requests", `${address} takes at most 6,000 messages a minute; retry after a pause (with the same Idempotency-Key, nothing is taken twice)`);
  const length = Number(c.req.header("content-length") ?? 0);
  if (length > Limits.MAX_INLINE_PAYLOAD) throw new ApiError(413, "Payload too large", `a message is at most ${Limits.MAX_INLINE_PAYLOAD} bytes`);
  const body = new Uint8Array(await c.req.arrayBuffer());
  if (body.byteLength > Limits.MAX_INLINE_PAYLOAD) throw new ApiError(413, "Payload too large", `a message is at most ${Limits.MAX_INLINE_PAYLOAD} bytes`);
  const bearer = /^Bearer\s+(\S+)$/i.exec(c.req.header("authorization") ?? "")?.[1];
  const sig = /^t=(\d+),v1=([0-9a-f]{64})$/.exec(c.req.header("ferry-signature") ?? "");
  if (bearer) {
    if (!sameSecret(bearer, row.secret)) throw deny;
  } else if (sig?.[1] && sig[2]) {
    const t = Number(sig[1]);
    if (Math.abs(Date.now() / 1000 - t) > SIGNATURE_WINDOW_S) throw new ApiError(401, "Unauthorized", "Ferry-Signature: the timestamp is outside the five-minute window (replayed or a wrong clock)");
    if (!sameSecret(await webhookSignature(row.secret, t, body), sig[2])) throw deny;
  } else throw deny;
  const key = c.req.header("idempotency-key");
  if (key && key.length > 255) throw new ApiError(400, "Invalid request", "Idempotency-Key: at most 255 characters");
  const filename = c.req.header("ferry-filename");
  const region = await sourceRegion(c.env, tenant, address);
  const res = await channelStub(c.env, tenant, address, region).ingest({
    tenant,
    source: address,
    body,
    contentType: c.req.header("content-type") ?? "application/octet-stream",
    ...(filename ? { fields: { filename: filename.slice(0, 1024) } } : {}),
    ...(key ? { idempotencyKey: key } : {}),
  });
  if (!res.ok) throw new ApiError(res.code === "NO_ROUTE" ? 409 : 503, res.code === "NO_ROUTE" ? "No route" : "Not accepted", res.message);
  if (res.duplicate && key) await sameBodyAsFirst(c.env, tenant, region, key, res.id, body, res.firstSha256 ?? null);
  return c.json({ id: res.id, seq: res.seq, duplicate: res.duplicate }, res.duplicate ? 200 : 202);
});

/**
 * A retry with an Idempotency-Key must carry the same body as the request
 * that first used the key; a different body under a used key is a client
 * bug that would otherwise be silently dropped (answered as a duplicate).
 *
 * The channel object keeps the first body's SHA-256 with the key (stored in
 * the transaction that accepted it), so the check is exact however soon the
 * retry comes. Keys kept before digests were fall back to the message's
 * `accepted` row in the event log.
 */
async function sameBodyAsFirst(env: Env, tenant: string, region: string | null, key: string, id: string, body: Uint8Array, kept: string | null): Promise<void> {
  const db = eventDb(env, region);
  const first = kept ? { sha256: kept } : db ? (await messageEvents(db, tenant, id, ["accepted"]))[0] : undefined;
  if (!first?.sha256) return;
  const sha256 = await sha256Hex(body);
  if (first.sha256 !== sha256) {
    throw new ApiError(
      422,
      "Idempotency key reused",
      `Idempotency-Key '${key}' was already used for a different body (message ${id}); send a new key for a new message, or the same body to retry`,
      { idempotencyKey: key, messageId: id },
    );
  }
}
