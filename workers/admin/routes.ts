import { Hono } from "hono";
import { RouteCreate, splitAddress } from "../../wire/index.ts";
import { ApiError, parseBody } from "../http/problem.ts";
import { now, randomId, type AppEnv } from "../env.ts";
import { audit, ensureTenant, routesFrom, type RouteRow } from "../db.ts";
import { channelStub } from "../stubs.ts";
import type { ChannelRoute } from "../../durable-objects/channel/types.ts";

export function presentRoute(r: RouteRow) {
  return {
    id: r.id,
    source: r.source,
    destination: r.destination,
    protection: r.protection,
    ttl: r.ttl_seconds,
    archive: r.archive === 1,
    retention: r.retention_seconds,
    region: r.region,
    createdAt: r.created_at,
  };
}

function toChannelRoute(r: RouteRow): ChannelRoute {
  return { destination: r.destination, ttlSeconds: r.ttl_seconds, protection: r.protection, archive: r.archive === 1 };
}

/** The channel object keeps its own copy of its routes so publishing never reads D1. */
async function pushRoutes(env: Env, tenant: string, source: string): Promise<void> {
  const rows = await routesFrom(env, tenant, source);
  await channelStub(env, tenant, source).configure(tenant, source, rows.map(toChannelRoute));
}

export const routes = new Hono<AppEnv>()
  .get("/", async (c) => {
    const { results } = await c.env.DB.prepare("SELECT * FROM routes WHERE tenant = ? ORDER BY source, destination")
      .bind(c.get("tenant"))
      .all<RouteRow>();
    return c.json({ routes: results.map(presentRoute) });
  })
  .post("/", async (c) => {
    const body = await parseBody(c, RouteCreate, "route");
    const tenant = c.get("tenant");
    if (body.source === body.destination) throw new ApiError(400, "Invalid request", "route: destination: a route cannot loop back to its source");
    if (body.protection !== "none") {
      throw new ApiError(501, "Not implemented", `route: protection: '${body.protection}' is not available yet; use 'none'`);
    }
    await ensureTenant(c.env, tenant);
    const id = `rte_${randomId(12)}`;
    const res = await c.env.DB.prepare(
      `INSERT INTO routes (id, tenant, source, destination, source_connector, destination_connector, protection,
         ttl_seconds, archive, retention_seconds, region, created_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (tenant, source, destination) DO NOTHING`,
    )
      .bind(
        id,
        tenant,
        body.source,
        body.destination,
        splitAddress(body.source).connector,
        splitAddress(body.destination).connector,
        body.protection,
        body.ttl,
        body.archive ? 1 : 0,
        body.retention ?? null,
        body.region ?? null,
        now(),
      )
      .run();
    if (res.meta.changes !== 1) throw new ApiError(409, "Conflict", `a route ${body.source} -> ${body.destination} exists`);
    await pushRoutes(c.env, tenant, body.source);
    await audit(c.env, c.get("actor"), "route.add", `${body.source} -> ${body.destination}`, body);
    const row = await c.env.DB.prepare("SELECT * FROM routes WHERE id = ?").bind(id).first<RouteRow>();
    if (!row) throw new ApiError(500, "Internal error", "route vanished after insert");
    return c.json({ route: presentRoute(row) }, 201);
  })
  .delete("/:id", async (c) => {
    const tenant = c.get("tenant");
    const row = await c.env.DB.prepare("SELECT * FROM routes WHERE tenant = ? AND id = ?").bind(tenant, c.req.param("id")).first<RouteRow>();
    if (!row) throw new ApiError(404, "Not found", `no route with id '${c.req.param("id")}'`);
    await c.env.DB.prepare("DELETE FROM routes WHERE id = ?").bind(row.id).run();
    await pushRoutes(c.env, tenant, row.source);
    await audit(c.env, c.get("actor"), "route.remove", `${row.source} -> ${row.destination}`);
    return c.json({ route: presentRoute(row), removed: true });
  });
