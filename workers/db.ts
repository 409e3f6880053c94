import { toHex } from "../wire/index.ts";
import { now } from "./env.ts";

export async function hashToken(token: string): Promise<string> {
  return toHex(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(token)));
}

export async function ensureTenant(env: Env, tenant: string): Promise<void> {
  await env.DB.prepare("INSERT OR IGNORE INTO tenants (id, created_at) VALUES (?, ?)").bind(tenant, now()).run();
}

/** Every admin action is itself logged, in its tenant (null: the platform's own). */
export async function audit(env: Env, actor: string, action: string, target: string, detail?: unknown, tenant: string | null = null): Promise<void> {
  await env.DB.prepare("INSERT INTO admin_log (at, actor, action, target, detail, tenant) VALUES (?, ?, ?, ?, ?, ?)")
    .bind(now(), actor, action, target, detail === undefined ? null : JSON.stringify(detail), tenant)
    .run();
}

export type RouteRow = {
  id: string;
  tenant: string;
  source: string;
  destination: string;
  protection: string;
  compress?: string | null;
  log?: string | null;
  ttl_seconds: number;
  archive: number;
  retention_seconds: number | null;
  region: string | null;
  created_at: number;
  legal_hold: number;
  fields: string | null;
};

export async function routesFrom(env: Env, tenant: string, source: string): Promise<RouteRow[]> {
  const { results } = await env.DB.prepare("SELECT * FROM routes WHERE tenant = ? AND source = ? ORDER BY destination")
    .bind(tenant, source)
    .all<RouteRow>();
  return results;
}

/** The region a source is pinned to (its routes share one), or null. */
export async function sourceRegion(env: Env, tenant: string, source: string): Promise<string | null> {
  const row = await env.DB.prepare("SELECT region FROM routes WHERE tenant = ? AND source = ? LIMIT 1").bind(tenant, source).first<{ region: string | null }>();
  return row?.region ?? null;
}
