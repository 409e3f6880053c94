import type { Problem } from "../../wire/admin-types.ts";

/**
 * The portal's only way to the edge: the same JSON admin API the CLI uses,
 * with the admin token as a Bearer header. The token lives in this tab's
 * sessionStorage (never in a cookie, never sent elsewhere).
 */
const KEY = "ferry.adminToken";

export function token(): string | null {
  return sessionStorage.getItem(KEY);
}

export function setToken(t: string | null): void {
  if (t) sessionStorage.setItem(KEY, t);
  else sessionStorage.removeItem(KEY);
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

export async function api<T>(method: string, path: string, body?: unknown): Promise<T> {
  const res = await fetch(path, {
    method,
    headers: { authorization: `Bearer ${token() ?? ""}`, ...(body === undefined ? {} : { "content-type": "application/json" }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  const json = text ? (JSON.parse(text) as unknown) : null;
  if (!res.ok) {
    if (res.status === 401) setToken(null);
    throw new ApiProblem((json as Problem | null) ?? { type: "about:blank", title: res.statusText, status: res.status, detail: res.statusText });
  }
  return json as T;
}

/** Downloads through the API (with the token) and hands the file to the browser. */
export async function download(path: string, filename: string): Promise<void> {
  const res = await fetch(path, { headers: { authorization: `Bearer ${token() ?? ""}` } });
  if (!res.ok) throw new ApiProblem((await res.json()) as Problem);
  const url = URL.createObjectURL(await res.blob());
  const a = document.createElement("a");
  a.href = url;
  a.download = filename;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}
