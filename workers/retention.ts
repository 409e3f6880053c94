import { audit } from "./db.ts";
import { eventStores } from "./region.ts";

const DAY_MS = 86_400_000;

/** What the configuration says about one chain (a source's events): held, or kept longer than the floor. */
type ChainRule = { chain: string; held: number; retention: number };

/**
 * The hourly retention run (cron trigger; `npm start` fires it locally):
 * event-log rows are deleted once older than their chain's retention (a
 * batch of lifecycle events once its latest event is).
 *
 * The rule, per chain (one per source address):
 * - LOG_RETENTION_DAYS is the floor and the default: no row is deleted
 *   younger than that;
 * - a source whose routes name a longer `--retention` keeps its rows that
 *   long (the longest of its routes: a chain is purged only from its start,
 *   so it cannot keep one destination's rows and drop another's);
 * - a source with a route under legal hold keeps everything.
 *
 * Deleting from the start of a chain keeps it verifiable: the first
 * remaining row anchors the rest. Archives are purged by their channel
 * objects' alarms. The purge itself is logged.
 */
export async function purgeLogRows(env: Env, now = Date.now()): Promise<number> {
  const days = Number(env.LOG_RETENTION_DAYS);
  if (!Number.isFinite(days) || days <= 0) return 0;
  const floorMs = days * DAY_MS;
  const cutoff = now - floorMs;
  // Chains come from the configuration database; each store is purged on its own.
  const { results: rules } = await env.DB.prepare(
    `SELECT tenant || ':' || source AS chain, MAX(legal_hold) AS held, MAX(COALESCE(retention_seconds, 0)) AS retention
     FROM routes GROUP BY tenant, source
     HAVING MAX(legal_hold) = 1 OR MAX(COALESCE(retention_seconds, 0)) * 1000 > ?`,
  )
    .bind(floorMs)
    .all<ChainRule>();
  const held = rules.filter((r) => r.held === 1).map((r) => r.chain);
  const longer = rules.filter((r) => r.held !== 1).map((r) => ({ chain: r.chain, before: now - r.retention * 1000 }));
  // Held and longer-kept chains are left out of the floor's sweep and purged each by its own cutoff.
  const special = JSON.stringify([...held, ...longer.map((l) => l.chain)]);
  const floorRows = `FROM events WHERE at < ? AND (chain IS NULL OR chain NOT IN (SELECT value FROM json_each(?)))`;
  // events_chain (chain, chain_seq) finds each chain's rows.
  const chainRows = "FROM events WHERE chain = ? AND at < ?";
  // Batches (migrations/0013) go whole once their latest event is past the
  // cutoff; their messages' index rows go with them (a trigger).
  const floorBatches = `FROM event_batches WHERE at_hi < ? AND chain NOT IN (SELECT value FROM json_each(?))`;
  const chainBatches = "FROM event_batches WHERE chain = ? AND at_hi < ?";
  let n = 0;
  for (const { db } of eventStores(env)) {
    // Each delete is counted just before it, in the same batch (one
    // transaction): D1's `changes` would also count the field-index rows the
    // delete trigger removes (migrations/0008).
    const sweeps = [
      { rows: floorRows, count: "count(*)", args: [cutoff, special] },
      { rows: floorBatches, count: "coalesce(sum(n), 0)", args: [cutoff, special] },
      ...longer.flatMap((l) => [
        { rows: chainRows, count: "count(*)", args: [l.chain, l.before] },
        { rows: chainBatches, count: "coalesce(sum(n), 0)", args: [l.chain, l.before] },
      ]),
    ];
    const results = await db.batch<{ n?: number }>(sweeps.flatMap((w) => [db.prepare(`SELECT ${w.count} AS n ${w.rows}`).bind(...w.args), db.prepare(`DELETE ${w.rows}`).bind(...w.args)]));
    for (const r of results) n += r.results[0]?.n ?? 0;
  }
  if (n > 0) {
    await audit(env, "retention", "log.purge", "events", {
      deleted: n,
      before: new Date(cutoff).toISOString(),
      ...(longer.length > 0 ? { longer: longer.map((l) => ({ chain: l.chain, before: new Date(l.before).toISOString() })) } : {}),
    });
  }
  return n;
}
