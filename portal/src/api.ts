import type { Problem } from "../../wire/admin-types.ts";

/**
 * The portal's only way to the edge: the same JSON admin API the CLI uses,
 * with the admin token as a Bearer header. The token and the edge's URL live
 * in this tab's sessionStorage (never in a cookie, never sent elsewhere).
 *
 * Where the API is: served by the edge Worker itself, the same origin ("").
 * Served from Cloudflare Pages, the edge's URL is baked in at build time
 * (`FERRY_PORTAL_API=https://edge.example.com node scripts/build.mjs --pages`, see
 * scripts/build.mjs) and can be set on the sign-in screen or in the link
 * (`#edge=…&token=…`); the edge answers CORS for its PORTAL_ORIGIN.
 */
declare const FERRY_PORTAL_API: string | undefined;

const TOKEN = "ferry.adminToken";
const EDGE = "ferry.edge";

/** The edge URL this bundle was built for ("" = the origin that serves the portal). */
export const BUILT_EDGE: string = typeof FERRY_PORTAL_API === "string" ? FERRY_PORTAL_API : "";

export function token(): string | null {
  return sessionStorage.getItem(TOKEN);
}

export function setToken(t: string | null): void {
  if (t) sessionStorage.setItem(TOKEN, t);
  else sessionStorage.removeItem(TOKEN);
}

/** The API's base URL, without a trailing slash ("" = same origin). */
export function edge(): string {
  return sessionStorage.getItem(EDGE) ?? BUILT_EDGE;
}

/** Sets the edge for this tab; null or the built-in value forgets the override. */
export function setEdge(url: string | null): void {
  if (url === null || url === BUILT_EDGE) sessionStorage.removeItem(EDGE);
  else sessionStorage.setItem(EDGE, url);
}

/** The edge's absolute URL (for commands shown to people: `ferry connector enroll --edge …`). */
export function edgeUrl(): string {
  return edge() || location.origin;
}

/**
 * Checks and normalises what someone typed as the edge's URL: "" (same
 * origin), or an http(s) URL without query or fragment; trailing slashes go.
 * Returns the normalised URL, or throws an Error whose message says why not.
 */
export function normaliseEdge(input: string): string {
  const s = input.trim();
  if (!s) return "";
  let u: URL;
  try {
    u = new URL(s);
  } catch {
    throw new Error("Enter the edge's full URL, e.g. https://ferry.example.com (or leave it empty for this site).");
  }
  if (u.protocol !== "https:" && u.protocol !== "http:") throw new Error("The edge's URL starts with https:// (or http:// for a local edge).");
  if (u.search || u.hash || u.username || u.password) throw new Error("The edge's URL has no query, fragment or credentials: only the scheme, host and port.");
  if (location.protocol === "https:" && u.protocol === "http:") throw new Error("This page is served over https: the browser will not call an http:// edge from it.");
  return `${u.origin}${u.pathname.replace(/\/+$/, "")}`;
}

export class ApiProblem extends Error {
  constructor(readonly problem: Problem) {
    super(problem.detail);
  }
  /** The message for one field, for showing next to it. */
  field(name: string): string | undefined {
    return this.problem.errors?.find((e) => e.field === name)?.message ?? (this.problem.detail.includes(`: ${name}: `) ? this.problem.detail.split(`: ${name}: `)[1] : undefined);
  }
}

/** The edge could not be reached at all (wrong URL, edge down, or CORS refused this origin). */
export class Unreachable extends Error {}

/** Signed out because the edge refused the token (401): the app shows the sign-in screen. */
export const SIGNED_OUT = "ferry:signed-out";

async function call(path: string, init: RequestInit): Promise<Response> {
  const base = edge();
  try {
    return await fetch(`${base}${path}`, { ...init, credentials: "omit", headers: { authorization: `Bearer ${token() ?? ""}`, ...(init.headers as Record<string, string> | undefined) } });
  } catch {
    const where = base || location.origin;
    throw new Unreachable(
      base && new URL(base).origin !== location.origin
        ? `Could not reach the edge at ${where}. Check the URL, that the edge is up, and that its PORTAL_ORIGIN is ${location.origin}.`
        : `Could not reach the edge at ${where}. Is it up?`,
    );
  }
}

function unauthorised(): void {
  setToken(null);
  window.dispatchEvent(new Event(SIGNED_OUT));
}

export async function api<T>(method: string, path: string, body?: unknown): Promise<T> {
  const res = await call(path, {
    method,
    ...(body === undefined ? {} : { headers: { "content-type": "application/json" }, body: JSON.stringify(body) }),
  });
  const text = await res.text();
  let json: unknown = null;
  try {
    json = text ? (JSON.parse(text) as unknown) : null;
  } catch {
    // Not the edge's JSON (a proxy's or a static site's page): reported below by status.
  }
  if (!res.ok || (text && json === null)) {
    if (res.status === 401) unauthorised();
    const p = json as Problem | null;
    throw new ApiProblem(p && typeof p === "object" && "detail" in p ? p : { type: "about:blank", title: res.statusText, status: res.status, detail: res.ok ? `${path} did not answer with JSON: is ${edgeUrl()} the Ferry edge?` : `${res.status} ${res.statusText}` });
  }
  return json as T;
}

/** Downloads through the API (with the token) and hands the file to the browser. */
export async function download(path: string, filename: string): Promise<void> {
  const res = await call(path, {});
  if (!res.ok) {
    if (res.status === 401) unauthorised();
    const p = (await res.json().catch(() => null)) as Problem | null;
    throw new ApiProblem(p ?? { type: "about:blank", title: res.statusText, status: res.status, detail: `${res.status} ${res.statusText}` });
  }
  const url = URL.createObjectURL(await res.blob());
  const a = document.createElement("a");
  a.href = url;
  a.download = filename;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}
