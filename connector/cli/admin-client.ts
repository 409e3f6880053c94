import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { NAME_RE } from "../../wire/index.ts";

export const DEFAULT_EDGE = "http://127.0.0.1:8787";

/** The project folder: where `npm start` keeps its state and the dev admin token. */
export function ferryHome(): string {
  if (process.env.FERRY_HOME) return process.env.FERRY_HOME;
  // dist/ferry.mjs -> the package root
  return dirname(dirname(fileURLToPath(import.meta.url)));
}

export function devAdminTokenPath(): string {
  return join(ferryHome(), ".state", "admin-token");
}

export class CliError extends Error {
  override readonly name = "CliError";
  constructor(
    message: string,
    readonly exitCode = 1,
  ) {
    super(message);
  }
}

/** The admin API as the CLI (and the portal) use it: JSON, bearer token, problem details on error. */
export class AdminClient {
  constructor(
    readonly edge: string,
    private readonly token: string,
    /** Sent as X-Ferry-Tenant: the platform token acts in this tenant (a tenant's token in its own only). */
    readonly tenant: string | null = null,
  ) {}

  static resolve(opts: { edge?: string | undefined; adminToken?: string | undefined; tenant?: string | undefined }): AdminClient {
    const edge = (opts.edge ?? process.env.FERRY_EDGE ?? DEFAULT_EDGE).replace(/\/+$/, "");
    const tenant = opts.tenant ?? (process.env.FERRY_TENANT || undefined) ?? null;
    // The edge's own rule for X-Ferry-Tenant, checked here so a typo is named before anything is sent.
    if (tenant !== null && !NAME_RE.test(tenant)) throw new CliError(`--tenant: '${tenant}' is not a tenant id (a-z 0-9 . _ -)`, 2);
    let token = opts.adminToken ?? process.env.FERRY_ADMIN_TOKEN;
    if (!token) {
      const p = devAdminTokenPath();
      if (existsSync(p)) token = readFileSync(p, "utf8").trim();
    }
    if (!token) {
      throw new CliError(`no admin token: pass --admin-token, set FERRY_ADMIN_TOKEN, or start the local edge with 'npm start' (it writes ${devAdminTokenPath()})`, 2);
    }
    return new AdminClient(edge, token, tenant);
  }

  /** For exports: the body as text (CSV, JSON Lines). */
  async text(method: string, path: string): Promise<string> {
    const res = await this.send(method, path);
    const text = await res.text();
    if (!res.ok) throw new CliError(`${method} ${path} failed (${res.status}): ${text.slice(0, 300)}`);
    return text;
  }

  /** For downloads: the raw body. */
  async bytes(path: string): Promise<Uint8Array> {
    const res = await this.send("GET", path);
    if (!res.ok) {
      const p = (await res.json().catch(() => null)) as { detail?: string } | null;
      throw new CliError(`GET ${path} failed (${res.status}): ${p?.detail ?? res.statusText}`);
    }
    return new Uint8Array(await res.arrayBuffer());
  }

  private async send(method: string, path: string, body?: unknown): Promise<Response> {
    try {
      return await fetch(`${this.edge}${path}`, {
        method,
        headers: {
          authorization: `Bearer ${this.token}`,
          ...(this.tenant === null ? {} : { "x-ferry-tenant": this.tenant }),
          ...(body === undefined ? {} : { "content-type": "application/json" }),
        },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
    } catch (e) {
      const cause = (e as { cause?: { code?: string } }).cause?.code ?? (e as Error).message;
      throw new CliError(`cannot reach the edge at ${this.edge} (${cause}); is 'npm start' running, or is --edge/FERRY_EDGE right?`);
    }
  }

  async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    const res = await this.send(method, path, body);
    const text = await res.text();
    let json: unknown = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      json = null;
    }
    if (!res.ok) {
      const p = json as { detail?: string; title?: string } | null;
      throw new CliError(`${method} ${path} failed (${res.status}${p?.title ? ` ${p.title}` : ""}): ${p?.detail ?? (text.slice(0, 200) || res.statusText)}`);
    }
    return json as T;
  }
}
