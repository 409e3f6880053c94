import { Hono } from "hono";
import { decodeJwt, importJWK, jwtVerify } from "jose";
import { CONNECT_AUDIENCE, Ed25519PublicJwk } from "../../wire/index.ts";
import { ApiError } from "../http/problem.ts";
import type { AppEnv } from "../env.ts";
import { sessionStub } from "../stubs.ts";

type ConnectorAuthRow = { id: string; tenant: string; name: string; status: string; public_jwk: string | null };

/** Headers the Worker sets for the session object after authenticating. */
export const TENANT_HEADER = "x-ferry-tenant";
export const CONNECTOR_HEADER = "x-ferry-connector";

/**
 * Verifies the connector's session assertion: a JWT it signed with its own
 * Ed25519 key (sub = connector id, aud = ferry:connect, at most 5 minutes
 * old). Returns who it is, or throws 401.
 */
export async function verifyAssertion(env: Env, token: string): Promise<ConnectorAuthRow> {
  let sub: string | undefined;
  try {
    sub = decodeJwt(token).sub;
  } catch {
    sub = undefined;
  }
  const deny = new ApiError(401, "Unauthorized", "the connector assertion is missing, malformed, expired or not signed by an enrolled key");
  if (!sub) throw deny;
  const row = await env.DB.prepare("SELECT id, tenant, name, status, public_jwk FROM connectors WHERE id = ?").bind(sub).first<ConnectorAuthRow>();
  if (!row || row.status !== "active" || !row.public_jwk) throw deny;
  const jwk = Ed25519PublicJwk.parse(JSON.parse(row.public_jwk));
  try {
    await jwtVerify(token, await importJWK(jwk, "Ed25519"), {
      audience: CONNECT_AUDIENCE,
      subject: row.id,
      algorithms: ["EdDSA", "Ed25519"],
      maxTokenAge: "5m",
      requiredClaims: ["exp", "iat"],
      clockTolerance: 30,
    });
  } catch {
    throw deny;
  }
  return row;
}

/**
 * The connector endpoint. The Worker authenticates and routes; the session
 * object accepts the socket (so it can hibernate) and owns it from then on.
 */
export const connect = new Hono<AppEnv>().get("/", async (c) => {
  if (c.req.header("upgrade")?.toLowerCase() !== "websocket") {
    throw new ApiError(426, "Upgrade required", "/v1/connect speaks WebSocket only", {});
  }
  const m = /^Bearer\s+(\S+)$/i.exec(c.req.header("authorization") ?? "");
  if (!m?.[1]) throw new ApiError(401, "Unauthorized", "send the connector assertion as 'Authorization: Bearer <jwt>'");
  const who = await verifyAssertion(c.env, m[1]);
  await c.env.DB.prepare("UPDATE connectors SET last_seen_at = ? WHERE id = ?").bind(Date.now(), who.id).run();
  const headers = new Headers(c.req.raw.headers);
  headers.set(TENANT_HEADER, who.tenant);
  headers.set(CONNECTOR_HEADER, who.name);
  return sessionStub(c.env, who.tenant, who.name).fetch(new Request(c.req.raw.url, { headers }));
});
