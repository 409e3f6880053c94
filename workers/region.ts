/**
 * Where a region-pinned route's data lives. One small function per kind of
 * store, used everywhere, so a pin cannot be forgotten on one path.
 *
 * Durable Objects: in production `namespace.jurisdiction(region)`. Local
 * workerd does not implement jurisdictions (the call throws), so locally
 * the default namespace is used and the fallback is logged once. R2 has a
 * bucket binding per jurisdiction (wrangler.toml), which works locally too.
 */
export const REGIONS = ["eu", "fedramp"] as const;
export type Region = (typeof REGIONS)[number];

/** Archive bucket binding per region; a region without one cannot archive. */
const ARCHIVE_BINDINGS: Record<string, "ARCHIVE" | "ARCHIVE_EU"> = { "": "ARCHIVE", eu: "ARCHIVE_EU" };

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
  return ARCHIVE_BINDINGS[region ?? ""] ?? null;
}

export function archiveBucket(env: Env, region: string | null | undefined): R2Bucket | null {
  const b = archiveBinding(region);
  return b ? env[b] : null;
}
