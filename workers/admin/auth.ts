import { createMiddleware } from "hono/factory";
import { ApiError } from "../http/problem.ts";
import { DEFAULT_TENANT, type AppEnv } from "../env.ts";

const enc = new TextEncoder();

/** Compares secrets in constant time so a token cannot be guessed byte by byte. */
function sameSecret(a: string, b: string): boolean {
  const x = enc.encode(a);
  const y = enc.encode(b);
  if (x.byteLength !== y.byteLength) return false;
  return crypto.subtle.timingSafeEqual(x, y);
}

/**
 * Admin API authentication: `Authorization: Bearer <admin token>`. Locally
 * the token is the dev admin token `npm start` generates; scoped tokens and
 * Cloudflare Access come with the identity work.
 */
export const adminAuth = createMiddleware<AppEnv>(async (c, next) => {
  const header = c.req.header("authorization") ?? "";
  const m = /^Bearer\s+(\S+)$/i.exec(header);
  const expected = c.env.ADMIN_TOKEN;
  if (!m?.[1] || !expected || !sameSecret(m[1], expected)) {
    throw new ApiError(401, "Unauthorized", "send an admin token as 'Authorization: Bearer <token>'", {});
  }
  c.set("tenant", DEFAULT_TENANT);
  c.set("actor", "admin-token");
  await next();
});
