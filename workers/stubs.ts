/**
 * How objects are named. A session object per connector, a channel object
 * per source address; both carry the tenant in their name so no two tenants
 * can ever share one.
 */
export function sessionStub(env: Env, tenant: string, connector: string) {
  return env.SESSION.get(env.SESSION.idFromName(`${tenant}:${connector}`));
}

export function channelStub(env: Env, tenant: string, source: string) {
  return env.CHANNEL.get(env.CHANNEL.idFromName(`${tenant}:${source}`));
}
