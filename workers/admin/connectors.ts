import { Hono } from "hono";
import { ConnectorCreate, type ConnectorView } from "../../wire/index.ts";
import { ApiError, parseBody } from "../http/problem.ts";
import { now, randomId, type AppEnv } from "../env.ts";
import { audit, ensureTenant, hashToken } from "../db.ts";
import { channelStub, sessionStub } from "../stubs.ts";
import type { RouteRow } from "../db.ts";
import { presentRoute } from "./routes.ts";

type ConnectorRow = {
  id: string;
  name: string;
  status: string;
  created_at: number;
  enrolled_at: number | null;
  last_seen_at: number | null;
};

function present(r: ConnectorRow): ConnectorView {
  return {
    id: r.id,
    name: r.name,
    status: r.status,
    createdAt: r.created_at,
    enrolledAt: r.enrolled_at,
    lastSeenAt: r.last_seen_at,
  };
}

async function issueToken(env: Env, connectorId: string, ttlMinutes: number) {
  const token = `fet_${randomId(24)}`;
  const expiresAt = now() + ttlMinutes * 60_000;
  await env.DB.prepare("INSERT INTO enrol_tokens (token_hash, connector_id, expires_at) VALUES (?, ?, ?)")
    .bind(await hashToken(token), connectorId, expiresAt)
    .run();
  return { token, expiresAt };
}

export const connectors = new Hono<AppEnv>()
  .get("/", async (c) => {
    const { results } = await c.env.DB.prepare(
      "SELECT id, name, status, created_at, enrolled_at, last_seen_at FROM connectors WHERE tenant = ? ORDER BY name",
    )
      .bind(c.get("tenant"))
      .all<ConnectorRow>();
    // Presence lives in each session object, queues in each source's channel object: ask them all at once.
    const tenant = c.get("tenant");
    const { results: routeRows } = await c.env.DB.prepare("SELECT source, region, destination_connector FROM routes WHERE tenant = ?").bind(tenant).all<{ source: string; region: string | null; destination_connector: string }>();
    const sources = [...new Map(routeRows.map((r) => [r.source, r.region])).entries()];
    const statuses = await Promise.all(sources.map(([source, region]) => channelStub(c.env, tenant, source, region).status()));
    const waiting = new Map<string, number>();
    for (const st of statuses) for (const x of st.streams) waiting.set(x.destination.split("/")[0] as string, (waiting.get(x.destination.split("/")[0] as string) ?? 0) + x.queued);
    const views = await Promise.all(
      results.map(async (r) => ({
        ...present(r),
        ...(r.status === "active" ? await sessionStub(c.env, tenant, r.name).presence() : { online: false, connectedAt: null, version: null }),
        waiting: waiting.get(r.name) ?? 0,
        regions: [...new Set(routeRows.filter((x) => x.source.startsWith(`${r.name}/`) || x.destination_connector === r.name).map((x) => x.region).filter((x): x is string => x !== null))],
      })),
    );
    return c.json({ connectors: views });
  })
  .post("/", async (c) => {
    const body = await parseBody(c, ConnectorCreate, "connector");
    const tenant = c.get("tenant");
    const hostedName = await c.env.DB.prepare("SELECT 1 FROM hosted_channels WHERE tenant = ? AND address LIKE ? ESCAPE '\\' LIMIT 1").bind(tenant, `${body.name.replace(/[\\%_]/g, (m) => `\\${m}`)}/%`).first();
    if (hostedName) throw new ApiError(409, "Conflict", `name: '${body.name}' is used by hosted channels; choose another`);
    await ensureTenant(c.env, tenant);
    const id = `con_${randomId(12)}`;
    const inserted = await c.env.DB.prepare(
      "INSERT INTO connectors (id, tenant, name, status, created_at) VALUES (?, ?, ?, 'pending', ?) ON CONFLICT (tenant, name) DO NOTHING",
    )
      .bind(id, tenant, body.name, now())
      .run();
    if (inserted.meta.changes !== 1) {
      throw new ApiError(409, "Conflict", `connector '${body.name}' exists; issue a new enrolment token with POST /api/connectors/${body.name}/tokens`);
    }
    const t = await issueToken(c.env, id, body.tokenTtlMinutes);
    await audit(c.env, c.get("actor"), "connector.add", body.name, undefined, c.get("tenant"));
    return c.json({ connector: { id, name: body.name, status: "pending" }, enrolToken: t.token, expiresAt: t.expiresAt }, 201);
  })
  .post("/:name/tokens", async (c) => {
    const row = await findConnector(c.env, c.get("tenant"), c.req.param("name"));
    if (row.status === "revoked") throw new ApiError(409, "Conflict", `connector '${row.name}' is revoked`);
    const t = await issueToken(c.env, row.id, 60);
    await audit(c.env, c.get("actor"), "connector.token", row.name, undefined, c.get("tenant"));
    return c.json({ connector: present(row), enrolToken: t.token, expiresAt: t.expiresAt }, 201);
  })
  .get("/:name", async (c) => {
    const tenant = c.get("tenant");
    const row = await findConnector(c.env, tenant, c.req.param("name"));
    const online = await sessionStub(c.env, tenant, row.name).presence();
    // Its routes, and what waits at the edge for it (each source's channel object knows its queues).
    const { results: routeRows } = await c.env.DB.prepare("SELECT * FROM routes WHERE tenant = ? AND (source_connector = ? OR destination_connector = ?) ORDER BY source, destination")
      .bind(tenant, row.name, row.name)
      .all<RouteRow>();
    const inbound = routeRows.filter((r) => r.destination.startsWith(`${row.name}/`));
    const queued = await Promise.all(
      [...new Map(inbound.map((r) => [r.source, r.region])).entries()].map(async ([source, region]) => {
        const st = await channelStub(c.env, tenant, source, region).status();
        return st.streams.filter((x) => x.destination.startsWith(`${row.name}/`)).map((x) => ({ source, destination: x.destination, queued: x.queued }));
      }),
    );
    const regions = [...new Set(routeRows.map((r) => r.region).filter((r): r is string => r !== null))];
    return c.json({ connector: { ...present(row), ...online }, routes: routeRows.map(presentRoute), queued: queued.flat(), regions });
  })
  .delete("/:name", async (c) => {
    const row = await findConnector(c.env, c.get("tenant"), c.req.param("name"));
    await c.env.DB.prepare("UPDATE connectors SET status = 'revoked' WHERE id = ?").bind(row.id).run();
    // Revocation takes effect on the open connection now, not at its next reconnect.
    await sessionStub(c.env, c.get("tenant"), row.name).revoke();
    await audit(c.env, c.get("actor"), "connector.revoke", row.name, undefined, c.get("tenant"));
    return c.json({ connector: { ...present(row), status: "revoked" } });
  });

async function findConnector(env: Env, tenant: string, name: string): Promise<ConnectorRow> {
  const row = await env.DB.prepare(
    "SELECT id, name, status, created_at, enrolled_at, last_seen_at FROM connectors WHERE tenant = ? AND name = ?",
  )
    .bind(tenant, name)
    .first<ConnectorRow>();
  if (!row) throw new ApiError(404, "Not found", `no connector named '${name}'`);
  return row;
}
