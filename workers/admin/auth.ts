import { createMiddleware } from "hono/factory";
import { createLocalJWKSet, createRemoteJWKSet, jwtVerify, type JWTVerifyGetKey } from "jose";
import { NAME_RE } from "../../wire/index.ts";
import { ApiError } from "../http/problem.ts";
import { DEFAULT_TENANT, type AppEnv, type Scope } from "../env.ts";
import { hashToken } from "../db.ts";
import { sameSecret } from "../signatures.ts";

type AccessEnv = { ACCESS_AUD?: string; ACCESS_TEAM_DOMAIN?: string; ACCESS_JWKS?: string; ACCESS_TENANT?: string; ACCESS_SCOPE?: string };

let accessKeys: { source: string; keys: JWTVerifyGetKey } | null = null;

/** The team's signing keys: an inline JWKS (tests, air-gapped setups) or the team's certs URL. */
function accessKeySet(env: AccessEnv): JWTVerifyGetKey | null {
  const source = env.ACCESS_JWKS ?? (env.ACCESS_TEAM_DOMAIN ? `https://${env.ACCESS_TEAM_DOMAIN}/cdn-cgi/access/certs` : null);
  if (!source) return null;
  if (accessKeys?.source !== source) {
    accessKeys = { source, keys: env.ACCESS_JWKS ? createLocalJWKSet(JSON.parse(env.ACCESS_JWKS)) : createRemoteJWKSet(new URL(source)) };
  }
  return accessKeys.keys;
}

const deny = () => new ApiError(401, "Unauthorized", "send an admin token as 'Authorization: Bearer <token>' (or sign in through Cloudflare Access)");

/**
 * Who is calling the admin API, and what they may do:
 * - the deployment's own token (ADMIN_TOKEN; locally the dev token): the
 *   platform operator, owner of any tenant (chosen with `X-Ferry-Tenant`,
 *   default "default") and the only one who may create tenants;
 * - a scoped admin token (`fat_…`): one tenant, read-only, operator or owner;
 * - in production, a Cloudflare Access JWT, verified with jose against the
 *   team's keys, mapped to ACCESS_TENANT with ACCESS_SCOPE.
 */
export const adminAuth = createMiddleware<AppEnv>(async (c, next) => {
  const bearer = /^Bearer\s+(\S+)$/i.exec(c.req.header("authorization") ?? "")?.[1];
  const platformToken = c.env.ADMIN_TOKEN;
  if (bearer && platformToken && sameSecret(bearer, platformToken)) {
    const tenant = c.req.header("x-ferry-tenant") ?? DEFAULT_TENANT;
    if (!NAME_RE.test(tenant)) throw new ApiError(400, "Invalid request", "X-Ferry-Tenant: a tenant id (a-z 0-9 . _ -)");
    c.set("tenant", tenant);
    c.set("actor", "platform");
    c.set("scope", "owner");
    c.set("platform", true);
    return next();
  }
  if (bearer?.startsWith("fat_")) {
    const row = await c.env.DB.prepare("SELECT tenant, name, scope FROM admin_tokens WHERE token_hash = ? AND revoked_at IS NULL")
      .bind(await hashToken(bearer))
      .first<{ tenant: string; name: string; scope: Scope }>();
    if (!row) throw deny();
    // A tenant's token acts in its own tenant only, whatever headers say.
    if (c.req.header("x-ferry-tenant") && c.req.header("x-ferry-tenant") !== row.tenant) {
      throw new ApiError(403, "Forbidden", "this token belongs to another tenant");
    }
    c.set("tenant", row.tenant);
    c.set("actor", `token:${row.name}`);
    c.set("scope", row.scope);
    c.set("platform", false);
    return next();
  }
  const access = c.req.header("cf-access-jwt-assertion");
  const aenv = c.env as AccessEnv;
  const keys = accessKeySet(aenv);
  if (access && keys && aenv.ACCESS_AUD && aenv.ACCESS_TENANT) {
    try {
      const { payload } = await jwtVerify(access, keys, {
        audience: aenv.ACCESS_AUD,
        ...(aenv.ACCESS_TEAM_DOMAIN ? { issuer: `https://${aenv.ACCESS_TEAM_DOMAIN}` } : {}),
      });
      c.set("tenant", aenv.ACCESS_TENANT);
      c.set("actor", `access:${String(payload.email ?? payload.sub)}`);
      c.set("scope", (["read", "operator", "owner"].includes(aenv.ACCESS_SCOPE ?? "") ? aenv.ACCESS_SCOPE : "operator") as Scope);
      c.set("platform", false);
      return next();
    } catch {
      throw deny();
    }
  }
  throw deny();
});

const RANK: Record<Scope, number> = { read: 0, operator: 1, owner: 2 };

/** Reading needs `read`; any change needs `operator`; tokens need `owner`. */
export const requireScope = (need: Scope | "by-method") =>
  createMiddleware<AppEnv>(async (c, next) => {
    const wanted: Scope = need === "by-method" ? (c.req.method === "GET" || c.req.method === "HEAD" ? "read" : "operator") : need;
    if (RANK[c.get("scope")] < RANK[wanted]) {
      throw new ApiError(403, "Forbidden", `this needs the '${wanted}' scope; the token has '${c.get("scope")}'`);
    }
    await next();
  });

/** Per-tenant admin request budget (the platform's Rate Limiting binding, where configured). */
export const adminRateLimit = createMiddleware<AppEnv>(async (c, next) => {
  const limiter = (c.env as { ADMIN_LIMITER?: RateLimit }).ADMIN_LIMITER;
  if (limiter) {
    const { success } = await limiter.limit({ key: c.get("tenant") });
    if (!success) throw new ApiError(429, "Too many requests", "the admin API allows 600 requests a minute per tenant; slow down and retry", {});
  }
  await next();
});
