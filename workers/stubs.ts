import { channelNamespace } from "./region.ts";

/**
 * How objects are named. A session object per connector, a channel object
 * per source address; both carry the tenant in their name so no two tenants
 * can ever share one.
 */
export function sessionStub(env: Env, tenant: string, connector: string) {
  return env.SESSION.get(env.SESSION.idFromName(`${tenant}:${connector}`));
}

/** `region` is the source's pin (all routes from a source share one); null for none. */
export function channelStub(env: Env, tenant: string, source: string, region: string | null = null) {
  const ns = channelNamespace(env, region);
  return ns.get(ns.idFromName(`${tenant}:${source}`));
}
