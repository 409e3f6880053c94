import { Hono } from "hono";
import { z } from "zod";
import { Address, MessageId } from "../../wire/index.ts";
import { invalid, parseBody } from "../http/problem.ts";
import type { AppEnv } from "../env.ts";
import { audit, sourceRegion } from "../db.ts";
import { channelStub } from "../stubs.ts";

const Query = z.strictObject({ source: Address.optional(), destination: Address.optional() });
const Action = z.strictObject({ source: Address, destination: Address.optional(), ids: z.array(MessageId).min(1).max(1000).optional() });

/** Sources to look in: the one asked for, or every source with a route. */
async function sources(env: Env, tenant: string, source?: string): Promise<string[]> {
  if (source) return [source];
  const { results } = await env.DB.prepare("SELECT DISTINCT source FROM routes WHERE tenant = ? ORDER BY source").bind(tenant).all<{ source: string }>();
  return results.map((r) => r.source);
}

/**
 * Dead letters: messages that expired before delivery. They stay in their
 * channel object, payload and all, until an admin re-drives or discards them.
 */
export const deadLetters = new Hono<AppEnv>()
  .get("/", async (c) => {
    const q = Query.safeParse(c.req.query());
    if (!q.success) throw invalid(q.error, "query");
    const tenant = c.get("tenant");
    const lists = await Promise.all(
      (await sources(c.env, tenant, q.data.source)).map(async (source) =>
        (await channelStub(c.env, tenant, source, await sourceRegion(c.env, tenant, source)).deadLetters(tenant, source, q.data.destination)).map((d) => ({ source, ...d })),
      ),
    );
    return c.json({ deadLetters: lists.flat() });
  })
  .post("/:action{redrive|discard}", async (c) => {
    const action = c.req.param("action") as "redrive" | "discard";
    const body = await parseBody(c, Action, action);
    const tenant = c.get("tenant");
    const count = await channelStub(c.env, tenant, body.source, await sourceRegion(c.env, tenant, body.source)).handleDeadLetters(tenant, body.source, action, body.destination, body.ids);
    await audit(c.env, c.get("actor"), `dead-letters.${action}`, body.source, body, c.get("tenant"));
    return c.json({ action, count });
  });
