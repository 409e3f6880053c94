import { audit } from "./db.ts";
import { eventStores } from "./region.ts";

/**
 * The hourly retention run (cron trigger): event-log rows older than
 * LOG_RETENTION_DAYS are deleted, except the chains of sources with a route
 * under legal hold. Deleting from the start of a chain keeps it verifiable:
 * the first remaining row anchors the rest. Archives are purged by their
 * channel objects' alarms. The purge itself is logged.
 */
export async function purgeLogRows(env: Env, now = Date.now()): Promise<number> {
  const days = Number(env.LOG_RETENTION_DAYS);
  if (!Number.isFinite(days) || days <= 0) return 0;
  const cutoff = now - days * 86_400_000;
  // Held chains come from the configuration database; each store is purged on its own.
  const held = (await env.DB.prepare("SELECT DISTINCT tenant || ':' || source AS chain FROM routes WHERE legal_hold = 1").all<{ chain: string }>()).results.map((r) => r.chain);
  let n = 0;
  for (const { db } of eventStores(env)) {
    const res = await db
      .prepare(`DELETE FROM events WHERE at < ? AND (chain IS NULL OR chain NOT IN (SELECT value FROM json_each(?)))`)
      .bind(cutoff, JSON.stringify(held))
      .run();
    n += res.meta.changes ?? 0;
  }
  if (n > 0) await audit(env, "retention", "log.purge", "events", { deleted: n, before: new Date(cutoff).toISOString() });
  return n;
}
