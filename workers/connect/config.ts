import { Hono } from "hono";
import { ApiError } from "../http/problem.ts";
import type { AppEnv } from "../env.ts";
import type { RouteRow } from "../db.ts";
import { presentRoute } from "../admin/routes.ts";
import { verifyAssertion } from "./connect.ts";
import { KeysRequest, ROTATE_PROOF_TYPE, splitAddress, type EdgeConfigResponse } from "../../wire/index.ts";
import { compactVerify, importJWK } from "jose";
import { audit } from "../db.ts";
import { parseBody } from "../http/problem.ts";
import { HEARTBEAT_SECONDS } from "../../durable-objects/session/session.ts";

/**
 * What a connector learns from the edge at start and on each refresh: the
 * well-known edge addresses (enrolment's URL is only the first contact) and
 * the policies of its channels (where its sources go, what comes in).
 */
export const config = new Hono<AppEnv>().get("/", async (c) => {
  const m = /^Bearer\s+(\S+)$/i.exec(c.req.header("authorization") ?? "");
  if (!m?.[1]) throw new ApiError(401, "Unauthorized", "send the connector assertion as 'Authorization: Bearer <jwt>'");
  const who = await verifyAssertion(c.env, m[1]);
  const { results } = await c.env.DB.prepare(
    "SELECT * FROM routes WHERE tenant = ? AND (source_connector = ? OR destination_connector = ?) ORDER BY source, destination",
  )
    .bind(who.tenant, who.name, who.name)
    .all<RouteRow & { source_connector: string; destination_connector: string }>();
  const configured = (c.env as { FERRY_EDGES?: string }).FERRY_EDGES;
  const edges = configured ? configured.split(",").map((e) => e.trim()).filter(Boolean) : [new URL(c.req.url).origin];
  // The keys of the connectors at the other end: to encrypt to, and to verify signatures from.
  const peers = [...new Set(results.flatMap((r) => [splitAddress(r.source).connector, splitAddress(r.destination).connector]))];
  const keys: EdgeConfigResponse["keys"] = {};
  if (peers.length > 0) {
    const rows = await c.env.DB.prepare(`SELECT name, public_jwk, enc_jwk FROM connectors WHERE tenant = ? AND status = 'active' AND name IN (SELECT value FROM json_each(?))`)
      .bind(who.tenant, JSON.stringify(peers))
      .all<{ name: string; public_jwk: string; enc_jwk: string | null }>();
    for (const r of rows.results) keys[r.name] = { sign: JSON.parse(r.public_jwk), encrypt: r.enc_jwk ? JSON.parse(r.enc_jwk) : null };
  }
  const route = (r: RouteRow) => {
    const p = presentRoute(r);
    return { source: p.source, destination: p.destination, protection: p.protection as "none" | "sign" | "encrypt", compress: (p.compress ?? "none") as "none" | "gzip" };
  };
  const body: EdgeConfigResponse = {
    tenant: who.tenant,
    connector: who.name,
    edges,
    heartbeat: HEARTBEAT_SECONDS,
    outgoing: results.filter((r) => r.source_connector === who.name).map(route),
    incoming: results.filter((r) => r.destination_connector === who.name).map(route),
    keys,
    refreshSeconds: 600,
  };
  return c.json(body);
});

/** A connector registers (or rotates) its encryption key; it proves who it is with its signing key. */
export const keys = new Hono<AppEnv>().post("/", async (c) => {
  const m = /^Bearer\s+(\S+)$/i.exec(c.req.header("authorization") ?? "");
  if (!m?.[1]) throw new ApiError(401, "Unauthorized", "send the connector assertion as 'Authorization: Bearer <jwt>'");
  const who = await verifyAssertion(c.env, m[1]);
  const body = await parseBody(c, KeysRequest, "keys");
  const enc = JSON.stringify({ kty: "OKP", crv: "X25519", x: body.encryptionKey.x });
  if (body.signingKey) {
    try {
      const { payload, protectedHeader } = await compactVerify(body.proof ?? "", await importJWK(body.signingKey, "Ed25519"), { algorithms: ["Ed25519", "EdDSA"] });
      if (protectedHeader.typ !== ROTATE_PROOF_TYPE || new TextDecoder().decode(payload) !== `rotate:${who.id}`) throw new Error("proof mismatch");
    } catch {
      throw new ApiError(400, "Invalid request", "keys: proof: must be a JWS over 'rotate:<connector id>' made with the new signing key");
    }
    await c.env.DB.prepare("UPDATE connectors SET public_jwk = ?, enc_jwk = ? WHERE id = ?").bind(JSON.stringify({ kty: "OKP", crv: "Ed25519", x: body.signingKey.x }), enc, who.id).run();
    await audit(c.env, `connector:${who.name}`, "connector.rotate-keys", who.name, undefined, who.tenant);
    return c.json({ connector: who.name, signingKey: "rotated", encryptionKey: "registered" });
  }
  await c.env.DB.prepare("UPDATE connectors SET enc_jwk = ? WHERE id = ?").bind(enc, who.id).run();
  return c.json({ connector: who.name, encryptionKey: "registered" });
});
