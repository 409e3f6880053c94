/**
 * Where a region-pinned route's data lives. One small function per kind of
 * store, used everywhere, so a pin cannot be forgotten on one path.
 *
 * Durable Objects: in production `namespace.jurisdiction(region)`. Local
 * workerd does not implement jurisdictions (the call throws), so locally
 * the default namespace is used and the fallback is logged once. R2 has a
 * bucket binding per jurisdiction (wrangler.toml), which works locally too.
 */
/** The jurisdictions Cloudflare offers that a route may name. */
export const REGIONS = ["eu", "fedramp"] as const;
export type Region = (typeof REGIONS)[number];

type Stores = { archive: "ARCHIVE" | "ARCHIVE_EU"; log: "DB" | "DB_EU" };
/** Per region, the bindings that keep its data there (wrangler.toml). "" is unpinned. */
const STORES: Record<string, Stores> = { "": { archive: "ARCHIVE", log: "DB" }, eu: { archive: "ARCHIVE_EU", log: "DB_EU" } };

/** Regions this edge has stores for. */
export function configuredRegions(): string[] {
  return Object.keys(STORES).filter((r) => r !== "");
}

/** The event-log database of a region. */
export function eventDb(env: Env, region: string | null | undefined): D1Database | null {
  const s = STORES[region ?? ""];
  return s ? env[s.log] : null;
}

/** Every event-log store, in a fixed order (the query API merges them). */
export function eventStores(env: Env): { store: number; name: string; db: D1Database }[] {
  return Object.entries(STORES).map(([name, s], store) => ({ store, name: name || "default", db: env[s.log] }));
}

let warned = new Set<string>();

export function resetRegionWarnings(): void {
  warned = new Set();
}

/**
 * Pins to `region` with `pin()`; where the runtime cannot (local workerd),
 * returns `fallback` and logs that once per region.
 */
export function withJurisdiction<T>(region: string, pin: () => T, fallback: T, log: (msg: string) => void = console.warn): T {
  try {
    return pin();
  } catch (e) {
    if (!warned.has(region)) {
      warned.add(region);
      log(`jurisdiction '${region}' is not available here (${(e as Error).message}); local development uses the default namespace. In production the objects are created in '${region}'.`);
    }
    return fallback;
  }
}

/** The channel objects' namespace for a source pinned to `region` (null: no pin). */
export function channelNamespace(env: Env, region: string | null | undefined): Env["CHANNEL"] {
  if (!region) return env.CHANNEL;
  return withJurisdiction(region, () => env.CHANNEL.jurisdiction(region as DurableObjectJurisdiction), env.CHANNEL);
}

export function archiveBinding(region: string | null | undefined): "ARCHIVE" | "ARCHIVE_EU" | null {
  return STORES[region ?? ""]?.archive ?? null;
}

export function archiveBucket(env: Env, region: string | null | undefined): R2Bucket | null {
  const b = archiveBinding(region);
  return b ? env[b] : null;
}
