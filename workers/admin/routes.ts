import { Hono } from "hono";
import { Duration, LogLevel, RouteCreate, splitAddress, type RouteView } from "../../wire/index.ts";
import { ApiError, parseBody } from "../http/problem.ts";
import { now, randomId, type AppEnv } from "../env.ts";
import { audit, ensureTenant, routesFrom, type RouteRow } from "../db.ts";
import { channelStub } from "../stubs.ts";
import { archiveBinding, configuredRegions, REGIONS } from "../region.ts";
import { z } from "zod";
import type { ChannelRoute } from "../../durable-objects/channel/types.ts";

export function presentRoute(r: RouteRow): RouteView {
  return {
    id: r.id,
    source: r.source,
    destination: r.destination,
    protection: r.protection,
    compress: r.compress ?? "none",
    log: r.log ?? "full",
    ttl: r.ttl_seconds,
    archive: r.archive === 1,
    retention: r.retention_seconds,
    region: r.region,
    legalHold: r.legal_hold === 1,
    fields: r.fields === null ? null : (JSON.parse(r.fields) as string[]),
    createdAt: r.created_at,
  };
}

function toChannelRoute(r: RouteRow): ChannelRoute {
  return { destination: r.destination, ttlSeconds: r.ttl_seconds, protection: r.protection, archive: r.archive === 1, retentionSeconds: r.retention_seconds, region: r.region, legalHold: r.legal_hold === 1, fields: r.fields === null ? null : (JSON.parse(r.fields) as string[]), log: r.log === "exceptions" ? "exceptions" : "full" };
}

/** The channel object keeps its own copy of its routes (and hosted egress targets) so publishing never reads D1. */
async function pushRoutes(env: Env, tenant: string, source: string, region: string | null): Promise<void> {
  const rows = await routesFrom(env, tenant, source);
  const { results: egress } = await env.DB.prepare("SELECT address, url, secret FROM hosted_channels WHERE tenant = ? AND kind = 'egress' AND address IN (SELECT value FROM json_each(?))")
    .bind(tenant, JSON.stringify(rows.map((r) => r.destination)))
    .all<{ address: string; url: string; secret: string | null }>();
  const target = new Map(egress.map((e) => [e.address, { url: e.url, secret: e.secret }]));
  await channelStub(env, tenant, source, region).configure(tenant, source, rows.map((r) => ({ ...toChannelRoute(r), egress: target.get(r.destination) ?? null })));
}

/** Re-pushes the routes of every source that routes to `destination` (its hosted egress changed). */
export async function pushRoutesInto(env: Env, tenant: string, destination: string): Promise<void> {
  const { results } = await env.DB.prepare("SELECT DISTINCT source, region FROM routes WHERE tenant = ? AND destination = ?").bind(tenant, destination).all<{ source: string; region: string | null }>();
  for (const r of results) await pushRoutes(env, tenant, r.source, r.region);
}

/**
 * What a route was created with and keeps: its messages were sent, stored
 * and protected as it said (a route is a promise to both ends). Asked to
 * change, the API says how instead.
 */
const fixed = (what: string) => z.never({ error: `${what} cannot change on an existing route (what was sent kept to it); add a route with the new ${what}, then remove this one` }).optional();

/** What can change on a route without recreating it. */
const RouteUpdate = z.strictObject({
  source: fixed("source"),
  destination: fixed("destination"),
  protection: fixed("protection"),
  compress: fixed("compression"),
  region: fixed("region"),
  ttl: Duration.optional(),
  archive: z.boolean().optional(),
  retention: Duration.nullable().optional(),
  fields: RouteCreate.shape.fields.unwrap().nullable().optional(),
  log: LogLevel.optional(),
});

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
    // Hosted ends have no connector keys: they carry unprotected messages (HTTPS protects the hop).
    if (body.protection !== "none") {
      const hostedEnd = await c.env.DB.prepare("SELECT address FROM hosted_channels WHERE tenant = ? AND address IN (?, ?) LIMIT 1").bind(tenant, body.source, body.destination).first<{ address: string }>();
      if (hostedEnd) throw new ApiError(400, "Invalid request", `route: protection: ${hostedEnd.address} is hosted (no connector keys); use protection 'none'`);
    }
    // A message is stored once for all its destinations: one source, one protection.
    const sameSource = await c.env.DB.prepare("SELECT protection, compress FROM routes WHERE tenant = ? AND source = ? LIMIT 1").bind(tenant, body.source).first<{ protection: string; compress: string }>();
    if (sameSource && sameSource.protection !== body.protection) {
      throw new ApiError(409, "Conflict", `route: protection: routes from ${body.source} use '${sameSource.protection}'; every route from one source shares its protection`);
    }
    if (sameSource && sameSource.compress !== body.compress) {
      throw new ApiError(409, "Conflict", `route: compress: routes from ${body.source} use '${sameSource.compress}'; every route from one source shares its compression (a payload is stored once for all destinations)`);
    }
    // A source's messages live in one channel object, so every route from it shares one region.
    const pinned = await c.env.DB.prepare("SELECT region FROM routes WHERE tenant = ? AND source = ? LIMIT 1").bind(tenant, body.source).first<{ region: string | null }>();
    if (pinned && (pinned.region ?? null) !== (body.region ?? null)) {
      throw new ApiError(409, "Conflict", `route: region: ${body.source} is ${pinned.region ? `pinned to '${pinned.region}'` : "not pinned"}; every route from it must be ${pinned.region ? `pinned to '${pinned.region}'` : "unpinned"} too`);
    }
    if (body.region && !(REGIONS as readonly string[]).includes(body.region)) {
      throw new ApiError(400, "Invalid request", `route: region: '${body.region}' is not offered; choose one of ${REGIONS.join(", ")}`);
    }
    if (body.region && !configuredRegions().includes(body.region)) {
      throw new ApiError(400, "Invalid request", `route: region: this edge has no stores in '${body.region}' (wrangler.toml), so its data would leave the region; configured: ${configuredRegions().join(", ")}`);
    }
    if (body.archive && !archiveBinding(body.region)) {
      throw new ApiError(400, "Invalid request", `route: archive: no archive bucket is configured in region '${body.region}', so archiving would take data out of it`);
    }
    await ensureTenant(c.env, tenant);
    const id = `rte_${randomId(12)}`;
    const res = await c.env.DB.prepare(
      `INSERT INTO routes (id, tenant, source, destination, source_connector, destination_connector, protection,
         ttl_seconds, archive, retention_seconds, region, created_at, fields, compress, log)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (tenant, source, destination) DO NOTHING`,
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
        body.fields ? JSON.stringify(body.fields) : null,
        body.compress,
        body.log,
      )
      .run();
    if (res.meta.changes !== 1) throw new ApiError(409, "Conflict", `a route ${body.source} -> ${body.destination} exists`);
    await pushRoutes(c.env, tenant, body.source, body.region ?? null);
    await audit(c.env, c.get("actor"), "route.add", `${body.source} -> ${body.destination}`, body, c.get("tenant"));
    const row = await c.env.DB.prepare("SELECT * FROM routes WHERE id = ?").bind(id).first<RouteRow>();
    if (!row) throw new ApiError(500, "Internal error", "route vanished after insert");
    return c.json({ route: presentRoute(row) }, 201);
  })
  .patch("/:id", async (c) => {
    const body = await parseBody(c, RouteUpdate, "route");
    const tenant = c.get("tenant");
    const row = await c.env.DB.prepare("SELECT * FROM routes WHERE tenant = ? AND id = ?").bind(tenant, c.req.param("id")).first<RouteRow>();
    if (!row) throw new ApiError(404, "Not found", `no route with id '${c.req.param("id")}'`);
    if (body.archive && !archiveBinding(row.region)) throw new ApiError(400, "Invalid request", `route: archive: no archive bucket is configured in region '${row.region}'`);
    await c.env.DB.prepare("UPDATE routes SET ttl_seconds = ?, archive = ?, retention_seconds = ?, fields = ?, log = ? WHERE id = ?")
      .bind(
        body.ttl ?? row.ttl_seconds,
        body.archive === undefined ? row.archive : body.archive ? 1 : 0,
        body.retention === undefined ? row.retention_seconds : body.retention,
        body.fields === undefined ? row.fields : body.fields === null ? null : JSON.stringify(body.fields),
        body.log ?? row.log ?? "full",
        row.id,
      )
      .run();
    await pushRoutes(c.env, tenant, row.source, row.region);
    await audit(c.env, c.get("actor"), "route.update", `${row.source} -> ${row.destination}`, body, c.get("tenant"));
    const updated = await c.env.DB.prepare("SELECT * FROM routes WHERE id = ?").bind(row.id).first<RouteRow>();
    return c.json({ route: presentRoute(updated as RouteRow) });
  })
  .post("/:id/hold", async (c) => {
    const body = await parseBody(c, z.strictObject({ hold: z.boolean() }), "legal hold");
    const tenant = c.get("tenant");
    const res = await c.env.DB.prepare("UPDATE routes SET legal_hold = ? WHERE tenant = ? AND id = ?").bind(body.hold ? 1 : 0, tenant, c.req.param("id")).run();
    if (res.meta.changes !== 1) throw new ApiError(404, "Not found", `no route with id '${c.req.param("id")}'`);
    await audit(c.env, c.get("actor"), body.hold ? "route.hold" : "route.release", c.req.param("id"), undefined, c.get("tenant"));
    const row = await c.env.DB.prepare("SELECT * FROM routes WHERE id = ?").bind(c.req.param("id")).first<RouteRow>();
    if (row) await pushRoutes(c.env, tenant, row.source, row.region);
    return c.json({ route: row ? presentRoute(row) : null });
  })
  .delete("/:id", async (c) => {
    const tenant = c.get("tenant");
    const row = await c.env.DB.prepare("SELECT * FROM routes WHERE tenant = ? AND id = ?").bind(tenant, c.req.param("id")).first<RouteRow>();
    if (!row) throw new ApiError(404, "Not found", `no route with id '${c.req.param("id")}'`);
    await c.env.DB.prepare("DELETE FROM routes WHERE id = ?").bind(row.id).run();
    await pushRoutes(c.env, tenant, row.source, row.region);
    await audit(c.env, c.get("actor"), "route.remove", `${row.source} -> ${row.destination}`, undefined, c.get("tenant"));
    return c.json({ route: presentRoute(row), removed: true });
  });
