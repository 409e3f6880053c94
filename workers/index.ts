import { Hono } from "hono";
import type { AppEnv } from "./env.ts";
import { ApiError, problem } from "./http/problem.ts";
import { bodyLimit } from "hono/body-limit";
import { cors } from "hono/cors";
import { adminAuth, adminRateLimit, requireScope } from "./admin/auth.ts";
import { tenants, tokens } from "./admin/tokens.ts";
import { connectors } from "./admin/connectors.ts";
import { routes } from "./admin/routes.ts";
import { messages } from "./admin/messages.ts";
import { deadLetters } from "./admin/dead-letters.ts";
import { audit } from "./admin/audit.ts";
import { adminLog, overview } from "./admin/overview.ts";
import { transfers } from "./admin/transfers.ts";
import { usage } from "./admin/usage.ts";
import { enroll } from "./connect/enroll.ts";
import { connect } from "./connect/connect.ts";
import { config, keys } from "./connect/config.ts";
import { hostedIngress } from "./connect/hosted-ingress.ts";
import { hosted } from "./admin/hosted.ts";
import { purgeLogRows } from "./retention.ts";
import { edgeKeys } from "./edge-keys.ts";

export { ConnectorSession } from "../durable-objects/session/session.ts";
export { ChannelObject } from "../durable-objects/channel/channel.ts";

/**
 * The Ferry edge Worker: authenticates and routes. State lives in the
 * Durable Objects; configuration and the event log in D1.
 */
export const app = new Hono<AppEnv>()
  .get("/healthz", async (c) => {
    // Ready means the database answers, not just that the isolate is up.
    await c.env.DB.prepare("SELECT 1").first();
    // `time` lets connectors measure their clock skew (assertions allow 30 s).
    return c.json({ ok: true, service: "ferry-edge", version: c.env.FERRY_VERSION, region: c.env.FERRY_REGION, time: Date.now() });
  })
  .get("/.well-known/jwks.json", async (c) => {
    // The edge's public signing keys, current and previous (rotation overlap).
    const keys = await edgeKeys(c.env);
    return c.json(keys?.jwks ?? { keys: [] }, 200, { "cache-control": "public, max-age=300" });
  })
  .route("/v1/enroll", enroll)
  .route("/v1/connect", connect)
  .route("/v1/config", config)
  .route("/v1/keys", keys)
  .route("/v1/hosted", hostedIngress)
  // A portal served from another origin (Cloudflare Pages) may call the API; it sends a Bearer token, no cookies.
  .use("/api/*", async (c, next) => {
    // A var (wrangler.toml; "" = same origin only). `wrangler types` types it as the
    // literal each environment sets, so widen it: deployments set their own.
    const origin: string = c.env.PORTAL_ORIGIN;
    if (!origin) return next();
    return cors({ origin, allowHeaders: ["authorization", "content-type", "x-ferry-tenant"], allowMethods: ["GET", "POST", "PATCH", "DELETE"], maxAge: 600 })(c, next);
  })
  .use("/api/*", adminAuth)
  .use("/api/*", adminRateLimit)
  // Admin requests are small JSON documents; anything bigger is refused before it is read.
  .use("/api/*", bodyLimit({ maxSize: 64 * 1024, onError: () => { throw new ApiError(413, "Payload too large", "admin API requests are at most 64 KiB"); } }))
  .use("/api/*", requireScope("by-method"))
  .route("/api/tokens", tokens)
  .route("/api/tenants", tenants)
  .route("/api/hosted", hosted)
  .route("/api/connectors", connectors)
  .route("/api/routes", routes)
  .route("/api/messages", messages)
  .route("/api/dead-letters", deadLetters)
  .route("/api/log", audit)
  .route("/api/overview", overview)
  .route("/api/admin-log", adminLog)
  .route("/api/transfers", transfers)
  .route("/api/debug/usage", usage)
  .all("/api/*", (c) => {
    throw new ApiError(404, "Not found", `no admin API at ${new URL(c.req.url).pathname}`);
  })
  .all("/v1/*", (c) => {
    throw new ApiError(404, "Not found", `no connector endpoint at ${new URL(c.req.url).pathname}`);
  });

app.onError((err, c) => problem(c, err));

export type AdminApp = typeof app;

export default {
  fetch: app.fetch,
  async scheduled(_controller, env, ctx) {
    ctx.waitUntil(purgeLogRows(env));
  },
} satisfies ExportedHandler<Env>;
