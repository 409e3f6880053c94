import { Hono } from "hono";
import type { TransferView } from "../../wire/index.ts";
import type { AppEnv } from "../env.ts";
import { channelStub } from "../stubs.ts";

/**
 * `GET /api/transfers`: large payloads on their way, from every source of
 * the tenant (each channel object knows its own uploads and who fetched
 * which part). Finished ones drop out once every destination has them.
 */
export const transfers = new Hono<AppEnv>().get("/", async (c) => {
  const tenant = c.get("tenant");
  const { results } = await c.env.DB.prepare("SELECT source, max(region) AS region FROM routes WHERE tenant = ? GROUP BY source ORDER BY source").bind(tenant).all<{ source: string; region: string | null }>();
  const lists = await Promise.all(results.map((r) => channelStub(c.env, tenant, r.source, r.region).transferList(tenant, r.source)));
  const all: TransferView[] = lists.flat().sort((a, b) => b.updatedAt - a.updatedAt);
  return c.json({ transfers: all });
});
