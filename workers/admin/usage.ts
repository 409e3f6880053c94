import { Hono } from "hono";
import { z } from "zod";
import { Address, Name } from "../../wire/index.ts";
import { ApiError } from "../http/problem.ts";
import type { AppEnv } from "../env.ts";
import { sourceRegion } from "../db.ts";
import { channelStub, sessionStub } from "../stubs.ts";

const Query = z.object({
  source: Address.optional(),
  connector: z.array(Name).max(100).default([]),
});

/**
 * `GET /api/debug/usage?source=A/ch&connector=a&connector=b` (platform
 * operator only): the billable operations a source's channel object and
 * some connectors' session objects performed since they started: requests,
 * WebSocket messages in, SQLite rows read and written, D1 rows. The bench
 * divides them by the messages it sent to measure a message's cost.
 */
export const usage = new Hono<AppEnv>().get("/", async (c) => {
  if (!c.get("platform")) throw new ApiError(403, "Forbidden", "only the platform operator reads objects' usage");
  const parsed = Query.safeParse({ source: c.req.query("source"), connector: c.req.queries("connector") ?? [] });
  if (!parsed.success) {
    const i = parsed.error.issues[0];
    throw new ApiError(400, "Invalid request", `usage: ${String(i?.path[0] ?? "query")}: ${i?.message ?? "invalid"} (source=CONNECTOR/CHANNEL, connector=NAME, repeatable)`);
  }
  const tenant = c.get("tenant");
  const { source, connector } = parsed.data;
  const channel = source ? await channelStub(c.env, tenant, source, await sourceRegion(c.env, tenant, source)).usage() : null;
  const sessions = Object.fromEntries(await Promise.all(connector.map(async (n) => [n, await sessionStub(c.env, tenant, n).usage()] as const)));
  return c.json({ channel, sessions });
});
