import { createCipheriv, createDecipheriv, createHash } from "node:crypto";
import { CompactSign, compactVerify, generalDecrypt, GeneralEncrypt, type JWK } from "jose";
import { importKey } from "../../wire/keys.ts";
import type { DeliverMessage } from "../../wire/index.ts";

export type Protection = "none" | "sign" | "encrypt";

export class ProtectionError extends Error {
  override readonly name = "ProtectionError";
  constructor(
    readonly code: "FORGED" | "UNDECRYPTABLE" | "NO_KEY",
    message: string,
  ) {
    super(message);
  }
}

/** The part of an envelope a signature covers: everything a receiver acts on. */
type Signed = { id: string; source: string; createdAt: number; contentType: string; size: number; sha256: string; fields: Record<string, string> | null; protection: Protection };

const enc = new TextEncoder();
const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
const SIG_TYPE = "ferry-msg+jws";
/** Marks an encrypted payload; its real type travels inside. */
export const ENCRYPTED_CONTENT_TYPE = "application/jose+json";

function canonical(s: Signed): Uint8Array {
  return enc.encode(JSON.stringify([s.id, s.source, s.createdAt, s.contentType, s.size, s.sha256, s.fields, s.protection]));
}

export type Outgoing = { id: string; createdAt: number; contentType: string; size: number; sha256: string; fields?: Record<string, string> };
export type Protected = Outgoing & { protection: Protection; sig?: string; payload: Uint8Array };

/**
 * Protects a message for a route. `sign`: a JWS (EdDSA, the sending
 * connector's enrolled key) over the envelope, payload digest included.
 * `encrypt`: the payload, its type and its fields are encrypted end to end
 * (JWE, ECDH-ES+A256KW to each destination connector's X25519 key, A256GCM);
 * the edge sees ciphertext and a signed envelope that names no file.
 */
export async function protect(
  m: Outgoing,
  payload: Uint8Array,
  opts: { protection: Protection; source: string; signingJwk: JWK; recipients: { name: string; jwk: JWK }[] },
): Promise<Protected> {
  if (opts.protection === "none") return { ...m, protection: "none", payload };
  let out: Outgoing = m;
  let body = payload;
  if (opts.protection === "encrypt") {
    if (opts.recipients.length === 0) throw new ProtectionError("NO_KEY", "no destination encryption key is known yet");
    const inner = enc.encode(JSON.stringify({ contentType: m.contentType, fields: m.fields ?? null, sha256: m.sha256 }));
    const plain = new Uint8Array(4 + inner.byteLength + payload.byteLength);
    new DataView(plain.buffer).setUint32(0, inner.byteLength);
    plain.set(inner, 4);
    plain.set(payload, 4 + inner.byteLength);
    const jwe = new GeneralEncrypt(plain).setProtectedHeader({ enc: "A256GCM", cty: "ferry-msg" });
    for (const r of opts.recipients) jwe.addRecipient(await importKey(r.jwk, "ECDH-ES+A256KW")).setUnprotectedHeader({ alg: "ECDH-ES+A256KW", kid: r.name });
    body = enc.encode(JSON.stringify(await jwe.encrypt()));
    out = { id: m.id, createdAt: m.createdAt, contentType: ENCRYPTED_CONTENT_TYPE, size: body.byteLength, sha256: sha256(body) };
  }
  return { ...out, protection: opts.protection, sig: await signEnvelope(out, opts), payload: body };
}

/** The sender's JWS over an envelope as it travels (for `encrypt`, the ciphertext's). */
export async function signEnvelope(out: Outgoing, opts: { protection: Protection; source: string; signingJwk: JWK }): Promise<string> {
  const signed: Signed = { ...out, source: opts.source, fields: out.fields ?? null, protection: opts.protection };
  return new CompactSign(canonical(signed)).setProtectedHeader({ alg: "Ed25519", typ: SIG_TYPE }).sign(await importKey(opts.signingJwk, "Ed25519"));
}

export type Unprotected = { payload: Uint8Array; contentType: string; fields: Record<string, string> | undefined; sha256: string; size: number };

/** Verifies (and decrypts) a delivered message; throws FORGED/UNDECRYPTABLE instead of delivering a bad one. */
export async function unprotect(
  meta: DeliverMessage,
  payload: Uint8Array,
  /** `payloadVerified`: a large payload whose digest the fetch already checked against `meta.sha256` (it is not in `payload`). */
  opts: { senderJwk: JWK | null; decryptJwk: JWK | null; payloadVerified?: boolean },
): Promise<Unprotected> {
  const protection = meta.protection ?? "none";
  const plain: Unprotected = { payload, contentType: meta.contentType, fields: meta.fields, sha256: meta.sha256, size: meta.size };
  if (protection === "none") return plain;
  if (!meta.sig) throw new ProtectionError("FORGED", "the message claims protection but carries no signature");
  if (!opts.senderJwk) throw new ProtectionError("NO_KEY", `no signing key is known for ${meta.source}`);
  try {
    const { payload: covered, protectedHeader } = await compactVerify(meta.sig, await importKey(opts.senderJwk, "Ed25519"), { algorithms: ["Ed25519", "EdDSA"] });
    const expected = canonical({ id: meta.id, source: meta.source, createdAt: meta.createdAt, contentType: meta.contentType, size: meta.size, sha256: meta.sha256, fields: meta.fields ?? null, protection });
    if (protectedHeader.typ !== SIG_TYPE || Buffer.compare(Buffer.from(covered), Buffer.from(expected)) !== 0) throw new Error("covers another envelope");
  } catch (e) {
    throw new ProtectionError("FORGED", `the signature does not verify with ${meta.source}'s enrolled key (${(e as Error).message})`);
  }
  if (!opts.payloadVerified && sha256(payload) !== meta.sha256) throw new ProtectionError("FORGED", "the payload does not match the signed digest");
  if (protection === "sign") return plain;
  // A large payload's parts are opened by the fetch that holds them (see `openPart`).
  if (meta.blob) return plain;
  if (!opts.decryptJwk) throw new ProtectionError("NO_KEY", "this connector has no decryption key");
  let inner: Uint8Array;
  try {
    const jwe = JSON.parse(new TextDecoder().decode(payload)) as Parameters<typeof generalDecrypt>[0];
    inner = (await generalDecrypt(jwe, await importKey(opts.decryptJwk, "ECDH-ES+A256KW"))).plaintext;
  } catch (e) {
    throw new ProtectionError("UNDECRYPTABLE", `cannot decrypt: ${(e as Error).message}`);
  }
  const metaLen = new DataView(inner.buffer, inner.byteOffset, inner.byteLength).getUint32(0);
  const info = JSON.parse(new TextDecoder().decode(inner.subarray(4, 4 + metaLen))) as { contentType: string; fields: Record<string, string> | null; sha256: string };
  const body = inner.subarray(4 + metaLen);
  if (sha256(body) !== info.sha256) throw new ProtectionError("FORGED", "the decrypted payload does not match its digest");
  return { payload: body, contentType: info.contentType, fields: info.fields ?? undefined, sha256: info.sha256, size: body.byteLength };
}

/**
 * Large payloads on `encrypt` routes: each part is sealed on its own with
 * AES-256-GCM under a per-file content key (the nonce is the part number,
 * so the ciphertext is the same on every resume), and the content key
 * travels to the destinations in a JWE (ECDH-ES+A256KW, as for small
 * messages) together with the original's type, fields, size and digest.
 * The edge holds ciphertext parts and the JWE, nothing else.
 */
export const SEAL_OVERHEAD = 16;
export type SealInfo = { contentType: string; fields: Record<string, string> | null; sha256: string; size: number; chunk: number };

function nonce(part: number): Buffer {
  const iv = Buffer.alloc(12);
  iv.writeBigUInt64BE(BigInt(part), 4);
  return iv;
}

export function sealPart(cek: Uint8Array, part: number, plain: Uint8Array): Buffer {
  const c = createCipheriv("aes-256-gcm", cek, nonce(part));
  return Buffer.concat([c.update(plain), c.final(), c.getAuthTag()]);
}

export function openPart(cek: Uint8Array, part: number, sealed: Uint8Array): Buffer {
  const d = createDecipheriv("aes-256-gcm", cek, nonce(part));
  d.setAuthTag(sealed.subarray(sealed.byteLength - SEAL_OVERHEAD));
  try {
    return Buffer.concat([d.update(sealed.subarray(0, sealed.byteLength - SEAL_OVERHEAD)), d.final()]);
  } catch {
    throw new ProtectionError("UNDECRYPTABLE", `part ${part} does not decrypt: it was altered, or sealed under another key`);
  }
}

/** The content key and what the receiver must know of the original, encrypted to each destination. */
export async function wrapKey(cek: Uint8Array, info: SealInfo, recipients: { name: string; jwk: JWK }[]): Promise<string> {
  if (recipients.length === 0) throw new ProtectionError("NO_KEY", "no destination encryption key is known yet");
  const jwe = new GeneralEncrypt(enc.encode(JSON.stringify({ cek: Buffer.from(cek).toString("base64url"), ...info }))).setProtectedHeader({ enc: "A256GCM", cty: "ferry-key" });
  for (const r of recipients) jwe.addRecipient(await importKey(r.jwk, "ECDH-ES+A256KW")).setUnprotectedHeader({ alg: "ECDH-ES+A256KW", kid: r.name });
  return JSON.stringify(await jwe.encrypt());
}

export async function unwrapKey(key: string, decryptJwk: JWK | null): Promise<SealInfo & { cek: Buffer }> {
  if (!decryptJwk) throw new ProtectionError("NO_KEY", "this connector has no decryption key");
  try {
    const { plaintext } = await generalDecrypt(JSON.parse(key) as Parameters<typeof generalDecrypt>[0], await importKey(decryptJwk, "ECDH-ES+A256KW"));
    const v = JSON.parse(new TextDecoder().decode(plaintext)) as SealInfo & { cek: string };
    return { ...v, cek: Buffer.from(v.cek, "base64url") };
  } catch (e) {
    throw new ProtectionError("UNDECRYPTABLE", `cannot unwrap the content key: ${(e as Error).message}`);
  }
}
