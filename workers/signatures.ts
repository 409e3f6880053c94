import { createHmac } from "node:crypto";
import { toHex } from "../wire/index.ts";

const enc = new TextEncoder();

/** Compares secrets in constant time so a token cannot be guessed byte by byte. */
export function sameSecret(a: string, b: string): boolean {
  const x = enc.encode(a);
  const y = enc.encode(b);
  return x.byteLength === y.byteLength && crypto.subtle.timingSafeEqual(x, y);
}

/**
 * The webhook signature both ways (hosted ingress checks it, hosted egress
 * sends it): hex HMAC-SHA256 with the channel's secret over `<t>.<body>`,
 * `t` in Unix seconds, sent as `Ferry-Signature: t=<t>,v1=<hex>`.
 */
export async function webhookSignature(secret: string, t: number, body: Uint8Array): Promise<string> {
  const key = await crypto.subtle.importKey("raw", enc.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  const prefix = enc.encode(`${t}.`);
  const data = new Uint8Array(prefix.byteLength + body.byteLength);
  data.set(prefix);
  data.set(body, prefix.byteLength);
  return toHex(await crypto.subtle.sign("HMAC", key, data));
}

/**
 * The same signature over a body read as a stream (hosted egress of a large
 * payload, never whole in memory): WebCrypto's HMAC takes its input whole,
 * node:crypto's (native in workerd too) takes it piece by piece.
 */
export async function webhookSignatureOfStream(secret: string, t: number, body: ReadableStream<Uint8Array>): Promise<string> {
  const hmac = createHmac("sha256", secret).update(`${t}.`);
  const reader = body.getReader();
  for (let r = await reader.read(); !r.done; r = await reader.read()) hmac.update(r.value);
  return hmac.digest("hex");
}
