import { createHmac } from "node:crypto";

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
  return webhookHmac(secret, t).update(body).digest("hex");
}

/**
 * The same signature over a body read as a stream (hosted egress of a large
 * payload, never whole in memory). node:crypto's HMAC (native in workerd
 * too) takes its input piece by piece, WebCrypto's only whole: both
 * functions use it, so the two cannot drift apart.
 */
export async function webhookSignatureOfStream(secret: string, t: number, body: ReadableStream<Uint8Array>): Promise<string> {
  const hmac = webhookHmac(secret, t);
  const reader = body.getReader();
  for (let r = await reader.read(); !r.done; r = await reader.read()) hmac.update(r.value);
  return hmac.digest("hex");
}

/** HMAC-SHA256 with the secret, fed `<t>.` already: the body follows. */
function webhookHmac(secret: string, t: number) {
  return createHmac("sha256", secret).update(`${t}.`);
}
