import { Hono } from "hono";
import { ApiError } from "../http/problem.ts";
import type { AppEnv } from "../env.ts";
import type { RouteRow } from "../db.ts";
import { presentRoute } from "../admin/routes.ts";
import { verifyAssertion } from "./connect.ts";
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
  return c.json({
    tenant: who.tenant,
    connector: who.name,
    edges,
    heartbeat: HEARTBEAT_SECONDS,
    outgoing: results.filter((r) => r.source_connector === who.name).map(presentRoute),
    incoming: results.filter((r) => r.destination_connector === who.name).map(presentRoute),
    refreshSeconds: 600,
  });
});
