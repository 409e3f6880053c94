import { Hono } from "hono";
import { z } from "zod";
import { ApiError, invalid } from "../http/problem.ts";
import type { AppEnv } from "../env.ts";

type EventRow = {
  id: number;
  message_id: string;
  type: string;
  at: number;
  place: string;
  source: string;
  destination: string | null;
  seq: number | null;
  size: number | null;
  sha256: string | null;
  detail: string | null;
};

function presentEvent(r: EventRow) {
  return {
    id: r.id,
    messageId: r.message_id,
    type: r.type,
    at: r.at,
    place: r.place,
    source: r.source,
    destination: r.destination,
    seq: r.seq,
    size: r.size,
    sha256: r.sha256,
    detail: r.detail === null ? null : (JSON.parse(r.detail) as unknown),
  };
}

const Query = z.strictObject({
  limit: z.coerce.number().int().min(1).max(1000).default(100),
  /** Opaque cursor: the last event id of the previous page. */
  cursor: z.coerce.number().int().positive().optional(),
  source: z.string().max(200).optional(),
  type: z.string().max(32).optional(),
});

export const messages = new Hono<AppEnv>()
  .get("/", async (c) => {
    const q = Query.safeParse(c.req.query());
    if (!q.success) throw invalid(q.error, "query");
    const { limit, cursor, source, type } = q.data;
    const where = ["tenant = ?"];
    const args: (string | number)[] = [c.get("tenant")];
    if (cursor !== undefined) {
      where.push("id < ?");
      args.push(cursor);
    }
    if (source) {
      where.push("source = ?");
      args.push(source);
    }
    if (type) {
      where.push("type = ?");
      args.push(type);
    }
    const { results } = await c.env.DB.prepare(`SELECT * FROM events WHERE ${where.join(" AND ")} ORDER BY id DESC LIMIT ?`)
      .bind(...args, limit)
      .all<EventRow>();
    const last = results.at(-1);
    return c.json({ events: results.map(presentEvent), nextCursor: results.length === limit && last ? String(last.id) : null });
  })
  .get("/:id", async (c) => {
    const { results } = await c.env.DB.prepare("SELECT * FROM events WHERE tenant = ? AND message_id = ? ORDER BY at, id")
      .bind(c.get("tenant"), c.req.param("id"))
      .all<EventRow>();
    if (results.length === 0) throw new ApiError(404, "Not found", `no message with id '${c.req.param("id")}'`);
    return c.json({ messageId: c.req.param("id"), events: results.map(presentEvent) });
  });
