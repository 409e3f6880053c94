import { audit } from "./db.ts";

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
  const res = await env.DB.prepare(
    `DELETE FROM events WHERE at < ?
       AND (chain IS NULL OR chain NOT IN (SELECT tenant || ':' || source FROM routes WHERE legal_hold = 1))`,
  )
    .bind(cutoff)
    .run();
  const n = res.meta.changes ?? 0;
  if (n > 0) await audit(env, "retention", "log.purge", "events", { deleted: n, before: new Date(cutoff).toISOString() });
  return n;
}
