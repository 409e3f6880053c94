import { Hono } from "hono";
import { z } from "zod";
import { Name } from "../../wire/index.ts";
import { ApiError, parseBody } from "../http/problem.ts";
import { now, randomId, type AppEnv } from "../env.ts";
import { audit, ensureTenant, hashToken } from "../db.ts";
import { requireScope } from "./auth.ts";

const TokenCreate = z.strictObject({ name: Name, scope: z.enum(["read", "operator", "owner"]) });
const TenantCreate = z.strictObject({ id: Name });

type TokenRow = { id: string; name: string; scope: string; created_at: number; revoked_at: number | null };
const present = (r: TokenRow) => ({ id: r.id, name: r.name, scope: r.scope, createdAt: r.created_at, revokedAt: r.revoked_at });

async function issue(env: Env, tenant: string, name: string, scope: string) {
  const id = `tok_${randomId(9)}`;
  const token = `fat_${randomId(24)}`;
  await env.DB.prepare("INSERT INTO admin_tokens (id, tenant, name, scope, token_hash, created_at) VALUES (?, ?, ?, ?, ?, ?)")
    .bind(id, tenant, name, scope, await hashToken(token), now())
    .run();
  return { id, token };
}

/** Scoped admin tokens of the caller's tenant (owners only). The token is shown once. */
export const tokens = new Hono<AppEnv>()
  .use(requireScope("owner"))
  .get("/", async (c) => {
    const { results } = await c.env.DB.prepare("SELECT id, name, scope, created_at, revoked_at FROM admin_tokens WHERE tenant = ? ORDER BY created_at").bind(c.get("tenant")).all<TokenRow>();
    return c.json({ tokens: results.map(present) });
  })
  .post("/", async (c) => {
    const body = await parseBody(c, TokenCreate, "token");
    await ensureTenant(c.env, c.get("tenant"));
    const t = await issue(c.env, c.get("tenant"), body.name, body.scope);
    await audit(c.env, c.get("actor"), "token.add", body.name, { scope: body.scope }, c.get("tenant"));
    return c.json({ id: t.id, name: body.name, scope: body.scope, token: t.token }, 201);
  })
  .delete("/:id", async (c) => {
    const res = await c.env.DB.prepare("UPDATE admin_tokens SET revoked_at = ? WHERE tenant = ? AND id = ? AND revoked_at IS NULL").bind(now(), c.get("tenant"), c.req.param("id")).run();
    if (res.meta.changes !== 1) throw new ApiError(404, "Not found", `no active token with id '${c.req.param("id")}'`);
    await audit(c.env, c.get("actor"), "token.revoke", c.req.param("id"), undefined, c.get("tenant"));
    return c.json({ id: c.req.param("id"), revoked: true });
  });

/** Tenants: created by the platform operator, each with a first owner token. */
export const tenants = new Hono<AppEnv>().post("/", async (c) => {
  if (!c.get("platform")) throw new ApiError(403, "Forbidden", "only the platform operator creates tenants");
  const body = await parseBody(c, TenantCreate, "tenant");
  const exists = await c.env.DB.prepare("SELECT 1 FROM tenants WHERE id = ?").bind(body.id).first();
  if (exists) throw new ApiError(409, "Conflict", `tenant '${body.id}' exists`);
  await ensureTenant(c.env, body.id);
  const t = await issue(c.env, body.id, "owner", "owner");
  await audit(c.env, c.get("actor"), "tenant.add", body.id, undefined, body.id);
  return c.json({ tenant: body.id, ownerToken: t.token }, 201);
});
