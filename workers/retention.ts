import { audit } from "./db.ts";
import { eventStores } from "./region.ts";

const DAY_MS = 86_400_000;

/** What the configuration says about one chain (a source's events): held, or kept longer than the floor. */
type ChainRule = { chain: string; held: number; retention: number };

/** Where a chain is cut: everything before position `cut` goes. */
type Cut = { chain: string; cut: number };

/** No position kept: the whole chain is past its retention. */
const NONE_KEPT = Number.MAX_SAFE_INTEGER;

/**
 * Per chain with anything past `?1`: the first position that is not (a row
 * at or after `?1`, or a batch whose latest event is). The index on (chain,
 * chain_seq) walks each chain from its start and stops at the first such
 * position: about as many reads as there are rows to delete.
 */
const cutsSql = (chains: string) => `SELECT c.chain AS chain, min(
  coalesce((SELECT chain_seq FROM events AS k WHERE k.chain = c.chain AND k.at >= ?1 ORDER BY k.chain_seq LIMIT 1), ${NONE_KEPT}),
  coalesce((SELECT chain_seq FROM event_batches AS k WHERE k.chain = c.chain AND k.at_hi >= ?1 ORDER BY k.chain_seq LIMIT 1), ${NONE_KEPT})) AS cut
FROM (${chains}) AS c`;
/** The floor's chains: every chain with something older than the cutoff, but those with rules of their own (`?2`). */
const FLOOR_CUTS = cutsSql(
  `SELECT chain FROM events WHERE at < ?1 AND chain IS NOT NULL UNION SELECT chain FROM event_batches WHERE at_hi < ?1`,
).concat(" WHERE c.chain NOT IN (SELECT value FROM json_each(?2))");
/** One chain kept longer than the floor (`?2`). */
const CHAIN_CUT = cutsSql("SELECT ?2 AS chain");

/** Deletes counted per batch of statements (D1 takes many statements per batch; a bound keeps each one small). */
const SWEEPS_PER_BATCH = 100;

/**
 * The hourly retention run (cron trigger; `npm start` fires it locally):
 * event-log rows and batches are deleted once past their chain's retention,
 * always from the start of the chain.
 *
 * The rule, per chain (one per source address):
 * - LOG_RETENTION_DAYS is the floor and the default: no row is deleted
 *   younger than that;
 * - a source whose routes name a longer `--retention` keeps its rows that
 *   long (the longest of its routes: a chain is purged only from its start,
 *   so it cannot keep one destination's rows and drop another's);
 * - a source with a route under legal hold keeps everything.
 *
 * Only a chain's prefix goes: its first rows up to the first one still
 * within retention (a batch counts by its latest event). An old event
 * logged after a newer one (a message captured at a site that was offline
 * for weeks is logged when it arrives, with its capture time) stays until
 * everything before it has gone, so the first remaining row always anchors
 * the rest and the chain still verifies. Archives are purged by their
 * channel objects' alarms. The purge itself is logged.
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
  let n = 0;
  for (const { db } of eventStores(env)) {
    const found = await db.batch<Cut>([db.prepare(FLOOR_CUTS).bind(cutoff, special), ...longer.map((l) => db.prepare(CHAIN_CUT).bind(l.before, l.chain))]);
    // Rows from before chains existed (migrations/0002) have no position: by time.
    const sweeps: { rows: string; count: string; args: unknown[] }[] = [{ rows: "FROM events WHERE chain IS NULL AND at < ?", count: "count(*)", args: [cutoff] }];
    for (const { chain, cut } of found.flatMap((r) => r.results)) {
      sweeps.push(
        { rows: "FROM events WHERE chain = ? AND chain_seq < ?", count: "count(*)", args: [chain, cut] },
        // A batch's messages' index rows go with it (a trigger, migrations/0013).
        { rows: "FROM event_batches WHERE chain = ? AND last_seq < ?", count: "coalesce(sum(n), 0)", args: [chain, cut] },
      );
    }
    for (let i = 0; i < sweeps.length; i += SWEEPS_PER_BATCH) {
      // Each delete is counted just before it, in the same batch (one
      // transaction): D1's `changes` would also count the field-index rows the
      // delete trigger removes (migrations/0008).
      const part = sweeps.slice(i, i + SWEEPS_PER_BATCH);
      const results = await db.batch<{ n?: number }>(part.flatMap((w) => [db.prepare(`SELECT ${w.count} AS n ${w.rows}`).bind(...w.args), db.prepare(`DELETE ${w.rows}`).bind(...w.args)]));
      for (const r of results) n += r.results[0]?.n ?? 0;
    }
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
