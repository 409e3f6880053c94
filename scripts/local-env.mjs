import { join } from "node:path";

/**
 * The environment every local wrangler run gets: Node 22 from the project
 * first on PATH, no metrics, no fetches to Cloudflare, config kept inside
 * the project, and the local observability collector off (it costs more CPU
 * than the work itself).
 */
export function localEnv(root, extra = {}) {
  return {
    ...process.env,
    PATH: `${join(root, "node_modules", ".bin")}:${process.env.PATH ?? ""}`,
    WRANGLER_SEND_METRICS: "false",
    CLOUDFLARE_CF_FETCH_ENABLED: "false",
    X_LOCAL_OBSERVABILITY: "false",
    XDG_CONFIG_HOME: join(root, ".config"),
    WRANGLER_LOG_PATH: join(root, ".state", "logs"),
    ...extra,
  };
}
