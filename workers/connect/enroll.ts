import { Hono } from "hono";
import { compactVerify, importJWK } from "jose";
import { EnrollRequest, ENROLL_PROOF_TYPE, type EnrollResponse } from "../../wire/index.ts";
import { ApiError, parseBody } from "../http/problem.ts";
import { now, type AppEnv } from "../env.ts";
import { hashToken } from "../db.ts";

type TokenRow = { connector_id: string; expires_at: number; used_at: number | null; tenant: string; name: string; status: string };

/**
 * Enrolment: a one-time token plus proof of possession of the key pair the
 * connector just generated. The private key never leaves the site; the edge
 * keeps only the public key.
 */
export const enroll = new Hono<AppEnv>().post("/", async (c) => {
  // Token guessing is slowed per client address.
  const limited = await c.env.ENROLL_LIMITER?.limit({ key: c.req.header("cf-connecting-ip") ?? "local" });
  if (limited && !limited.success) throw new ApiError(429, "Too many requests", "too many enrolment attempts from this address; wait a minute");
  const body = await parseBody(c, EnrollRequest, "enrolment");
  const row = await c.env.DB.prepare(
    `SELECT t.connector_id, t.expires_at, t.used_at, c.tenant, c.name, c.status
       FROM enrol_tokens t JOIN connectors c ON c.id = t.connector_id WHERE t.token_hash = ?`,
  )
    .bind(await hashToken(body.token))
    .first<TokenRow>();
  // One answer for unknown, used and expired tokens: a guesser learns nothing.
  if (!row || row.used_at !== null || row.expires_at < now() || row.status === "revoked") {
    throw new ApiError(401, "Unauthorized", "the enrolment token is unknown, used or expired; ask an administrator for a new one");
  }
  try {
    const key = await importJWK(body.publicKey, "Ed25519");
    const { payload, protectedHeader } = await compactVerify(body.proof, key, { algorithms: ["EdDSA", "Ed25519"] });
    if (protectedHeader.typ !== ENROLL_PROOF_TYPE || new TextDecoder().decode(payload) !== body.token) throw new Error("proof mismatch");
  } catch {
    throw new ApiError(400, "Invalid request", "enrolment: proof: must be a JWS over the token, signed with the enrolled key");
  }
  // Mark the token used first, conditionally, so two racing enrolments cannot both win.
  const used = await c.env.DB.prepare("UPDATE enrol_tokens SET used_at = ? WHERE token_hash = ? AND used_at IS NULL")
    .bind(now(), await hashToken(body.token))
    .run();
  if (used.meta.changes !== 1) throw new ApiError(401, "Unauthorized", "the enrolment token was used concurrently");
  await c.env.DB.prepare("UPDATE connectors SET status = 'active', public_jwk = ?, enc_jwk = ?, enrolled_at = ? WHERE id = ?")
    .bind(
      JSON.stringify({ kty: "OKP", crv: "Ed25519", x: body.publicKey.x }),
      body.encryptionKey ? JSON.stringify({ kty: "OKP", crv: "X25519", x: body.encryptionKey.x }) : null,
      now(),
      row.connector_id,
    )
    .run();
  const origin = new URL(c.req.url).origin;
  const res: EnrollResponse = { tenant: row.tenant, connector: row.name, connectorId: row.connector_id, edges: [origin] };
  return c.json(res, 201);
});
