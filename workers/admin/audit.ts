import { Hono } from "hono";
import { z } from "zod";
import { Address, verifyChain, type ChainBreak } from "../../wire/index.ts";
import { invalid } from "../http/problem.ts";
import type { AppEnv } from "../env.ts";
import type { EventRow } from "./messages.ts";
import { eventStores } from "../region.ts";
import { chainEvents, chainsOf } from "../event-log.ts";

const Query = z.strictObject({ source: Address.optional() });
const PAGE = 1000;

type ChainReport = { chain: string; events: number; from: number; to: number; broken: ChainBreak | null };

/** Recomputes one chain from D1 (rows and batches, event by event), page by page; reports its first broken link. */
async function verifyOne(db: D1Database, chain: string): Promise<ChainReport> {
  let after: { chainSeq: number; hash: string } | undefined;
  let from = 0;
  let count = 0;
  for (;;) {
    const results: EventRow[] = await chainEvents(db, chain, after?.chainSeq ?? 0, PAGE);
    if (results.length === 0) break;
    const rows = results.map((r) => ({
      id: r.id, chain, chainSeq: r.chain_seq ?? 0, prevHash: r.prev_hash ?? "", hash: r.hash ?? "", tenant: r.tenant, messageId: r.message_id, type: r.type,
      at: r.at, place: r.place, source: r.source, destination: r.destination, seq: r.seq, size: r.size, sha256: r.sha256, fields: r.fields, detail: r.detail,
    }));
    const first = rows[0] as (typeof rows)[number];
    if (!after) {
      from = first.chainSeq;
      // Rows before the first one left were purged by retention: it anchors the rest.
      after = from === 1 ? undefined : { chainSeq: first.chainSeq - 1, hash: first.prevHash };
    }
    const res = await verifyChain(rows, after);
    count += rows.length;
    if (res.broken) return { chain, events: count, from, to: res.last.chainSeq, broken: res.broken };
    after = res.last;
    if (results.length < PAGE) break;
  }
  return { chain, events: count, from, to: after?.chainSeq ?? 0, broken: null };
}

/** `GET /api/log/verify`: recomputes every hash chain (or one source's) and reports the first broken link. */
export const audit = new Hono<AppEnv>().get("/verify", async (c) => {
  const q = Query.safeParse(c.req.query());
  if (!q.success) throw invalid(q.error, "query");
  const tenant = c.get("tenant");
  const reports: ChainReport[] = [];
  // Each store (region) holds whole chains: a source's log never leaves its region.
  for (const { db } of eventStores(c.env)) {
    const chains = await chainsOf(db, tenant, q.data.source ? `${tenant}:${q.data.source}` : undefined);
    for (const chain of chains) reports.push(await verifyOne(db, chain));
  }
  return c.json({ ok: reports.every((r) => r.broken === null), chains: reports });
});
