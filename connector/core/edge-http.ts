import type { Agent } from "node:http";
import { HttpsProxyAgent } from "https-proxy-agent";
import { getProxyForUrl } from "proxy-from-env";
import { EnvHttpProxyAgent, fetch as undiciFetch } from "undici";

/**
 * Sites sit behind corporate proxies: everything the connector sends to the
 * edge honours HTTPS_PROXY / HTTP_PROXY / NO_PROXY (an HTTP CONNECT tunnel,
 * with credentials from the proxy URL). Local traffic (webhooks, the
 * ingress) never goes through here.
 */
let dispatcher: EnvHttpProxyAgent | undefined;

const PROXY_VARS = ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"];

export function edgeFetch(url: string | URL, init: RequestInit = {}): Promise<Response> {
  // Without a proxy configured, Node's own fetch does the job.
  if (!PROXY_VARS.some((v) => process.env[v])) return fetch(url, init);
  dispatcher ??= new EnvHttpProxyAgent();
  return undiciFetch(url, { ...(init as object), dispatcher }) as unknown as Promise<Response>;
}

/** The agent for the WebSocket to `edge` (an http(s) URL), or undefined when no proxy applies. */
export function edgeSocketAgent(edge: string): Agent | undefined {
  const proxy = getProxyForUrl(edge);
  return proxy ? new HttpsProxyAgent(proxy) : undefined;
}

export function proxyFor(edge: string): string | null {
  const p = getProxyForUrl(edge);
  if (!p) return null;
  const u = new URL(p);
  u.password = u.password ? "***" : "";
  return u.toString();
}
