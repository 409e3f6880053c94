import { Hono } from "hono";
import { z } from "zod";
import type { AdminLogEntry, OverviewView } from "../../wire/index.ts";
import { invalid } from "../http/problem.ts";
import type { AppEnv } from "../env.ts";
import { batchedValueSql } from "../event-log.ts";
import { eventStores } from "../region.ts";
import { sessionStub, channelStub } from "../stubs.ts";
import { presentEvent, type EventRow } from "./messages.ts";

const MINUTE = 60_000;
const AT = batchedValueSql("at");
const TYPE = batchedValueSql("type");
const SIZE = batchedValueSql("size");

/** `GET /api/overview`: what the portal's front page shows, in one call. */
export const overview = new Hono<AppEnv>().get("/", async (c) => {
  const tenant = c.get("tenant");
  const now = Date.now();
  const since = Math.floor(now / MINUTE) * MINUTE - 59 * MINUTE;
  const conns = (await c.env.DB.prepare("SELECT name, status FROM connectors WHERE tenant = ?").bind(tenant).all<{ name: string; status: string }>()).results;
  const online = (await Promise.all(conns.filter((r) => r.status === "active").map((r) => sessionStub(c.env, tenant, r.name).presence()))).filter((p) => p.online).length;
  const routeRows = (await c.env.DB.prepare("SELECT source, region FROM routes WHERE tenant = ?").bind(tenant).all<{ source: string; region: string | null }>()).results;
  const sources = new Map(routeRows.map((r) => [r.source, r.region]));
  // Dead letters and the backlog: each source's channel object knows its own, and how many messages each destination has not acknowledged.
  const perSource = await Promise.all(
    [...sources].map(async ([s, region]) => {
      const stub = channelStub(c.env, tenant, s, region);
      const [letters, status] = await Promise.all([stub.deadLetters(tenant, s), stub.status()]);
      return { dead: letters.length, streams: status.streams };
    }),
  );
  const dead = perSource.reduce((n, p) => n + p.dead, 0);
  const waiting = new Map<string, number>();
  for (const p of perSource) for (const x of p.streams) waiting.set(x.destination, (waiting.get(x.destination) ?? 0) + x.queued);
  const destinations = [...waiting]
    .filter(([, queued]) => queued > 0)
    .map(([destination, queued]) => ({ destination, queued }))
    .sort((a, b) => b.queued - a.queued || a.destination.localeCompare(b.destination));
  const perMinute = new Map<number, { minute: number; accepted: number; delivered: number; bytes: number }>();
  for (let m = since; m <= now; m += MINUTE) perMinute.set(m, { minute: m, accepted: 0, delivered: 0, bytes: 0 });
  const failures: EventRow[] = [];
  for (const { db } of eventStores(c.env)) {
    // Rows of `events` (logged before batches), and batches expanded in SQL (json_each): counting never leaves D1.
    const counted = await db.batch<{ minute: number; type: string; n: number; bytes: number }>([
      db
        .prepare(
          `SELECT (at / 60000) * 60000 AS minute, type, count(*) AS n, coalesce(sum(size), 0) AS bytes
             FROM events WHERE tenant = ? AND at >= ? AND type IN ('accepted', 'delivered') GROUP BY minute, type`,
        )
        .bind(tenant, since),
      db
        .prepare(
          `SELECT (${AT} / 60000) * 60000 AS minute, ${TYPE} AS type, count(*) AS n, coalesce(sum(${SIZE}), 0) AS bytes
             FROM event_batches AS b, json_each(b.events) AS j
             WHERE b.tenant = ? AND b.at_hi >= ? AND b.type IN ('accepted', 'delivered') AND ${AT} >= ?
               AND ${TYPE} IN ('accepted', 'delivered') GROUP BY minute, 2`,
        )
        .bind(tenant, since, since),
    ]);
    for (const r of counted.flatMap((c) => c.results)) {
      const slot = perMinute.get(r.minute);
      if (!slot) continue;
      if (r.type === "accepted") {
        slot.accepted += r.n;
        slot.bytes += r.bytes;
      } else slot.delivered += r.n;
    }
    failures.push(...(await db.prepare("SELECT * FROM events WHERE tenant = ? AND type IN ('expired', 'rejected') ORDER BY at DESC LIMIT 10").bind(tenant).all<EventRow>()).results);
  }
  const view: OverviewView = {
    connectors: {
      total: conns.length,
      online,
      pending: conns.filter((r) => r.status === "pending").length,
      revoked: conns.filter((r) => r.status === "revoked").length,
    },
    routes: routeRows.length,
    deadLetters: dead,
    backlog: { total: destinations.reduce((n, w) => n + w.queued, 0), destinations },
    perMinute: [...perMinute.values()],
    recentFailures: failures.sort((a, b) => b.at - a.at).slice(0, 10).map(presentEvent),
  };
  return c.json(view);
});

const LogQuery = z.strictObject({ limit: z.coerce.number().int().min(1).max(500).default(100), before: z.coerce.number().int().positive().optional() });

/** `GET /api/admin-log`: every admin action, newest first. */
export const adminLog = new Hono<AppEnv>().get("/", async (c) => {
  const q = LogQuery.safeParse(c.req.query());
  if (!q.success) throw invalid(q.error, "query");
  const { results } = await c.env.DB.prepare(`SELECT * FROM admin_log WHERE tenant = ? ${q.data.before ? "AND id < ?" : ""} ORDER BY id DESC LIMIT ?`)
    .bind(c.get("tenant"), ...(q.data.before ? [q.data.before] : []), q.data.limit)
    .all<{ id: number; at: number; actor: string; action: string; target: string | null; detail: string | null }>();
  const entries: AdminLogEntry[] = results.map((r) => ({ ...r, detail: r.detail === null ? null : (JSON.parse(r.detail) as unknown) }));
  return c.json({ entries });
});
