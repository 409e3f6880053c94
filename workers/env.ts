import type { Context } from "hono";

/** Hono's environment for the edge: bindings plus what auth middleware sets. */
export type Scope = "read" | "operator" | "owner";

export type AppEnv = {
  Bindings: Env;
  Variables: {
    tenant: string;
    /** Who acts: a token's name, an Access identity's email, or "platform". */
    actor: string;
    scope: Scope;
    /** The platform operator (the deployment's own admin token): may manage tenants. */
    platform: boolean;
  };
};
export type AppContext = Context<AppEnv>;

/** Until multi-tenant admin tokens land, the dev admin token manages this tenant. */
export const DEFAULT_TENANT = "default";

export function now(): number {
  return Date.now();
}

export function randomId(bytes = 16): string {
  const b = crypto.getRandomValues(new Uint8Array(bytes));
  let s = "";
  for (const x of b) s += String.fromCharCode(x);
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}
