import { Hono } from "hono";
import { z } from "zod";
import { Address, splitAddress } from "../../wire/index.ts";
import { ApiError, parseBody } from "../http/problem.ts";
import { now, randomId, type AppEnv } from "../env.ts";
import { audit, ensureTenant } from "../db.ts";
import { pushRoutesInto } from "./routes.ts";

const IngressCreate = z.strictObject({ address: Address });
const EgressCreate = z.strictObject({
  address: Address,
  url: z.url({ protocol: /^https?$/ }),
  /** Signs each delivery (HMAC-SHA256); generated when omitted. */
  secret: z.string().min(16).max(256).optional(),
});

type HostedRow = { address: string; kind: "ingress" | "egress"; url: string | null; created_at: number };

/** A hosted address cannot share its connector name with a real connector (nor the reverse). */
async function assertFreeName(env: Env, tenant: string, address: string): Promise<void> {
  const taken = await env.DB.prepare("SELECT 1 FROM connectors WHERE tenant = ? AND name = ?").bind(tenant, splitAddress(address).connector).first();
  if (taken) throw new ApiError(409, "Conflict", `address: '${splitAddress(address).connector}' is a connector; hosted channels use names of their own`);
}

/**
 * Hosted channels: addresses that live in the network, for endpoints that
 * cannot run a connector (a SaaS, a partner that only sends webhooks).
 * Ingress takes HTTPS POSTs at the edge; egress is delivered by the edge.
 */
export const hosted = new Hono<AppEnv>()
  .get("/", async (c) => {
    const { results } = await c.env.DB.prepare("SELECT address, kind, url, created_at FROM hosted_channels WHERE tenant = ? ORDER BY address, kind").bind(c.get("tenant")).all<HostedRow>();
    const origin = new URL(c.req.url).origin;
    return c.json({
      hosted: results.map((r) => ({ address: r.address, kind: r.kind, url: r.kind === "ingress" ? `${origin}/v1/hosted/${c.get("tenant")}/${r.address}` : r.url, createdAt: r.created_at })),
    });
  })
  .post("/ingress", async (c) => {
    const body = await parseBody(c, IngressCreate, "hosted ingress");
    const tenant = c.get("tenant");
    await assertFreeName(c.env, tenant, body.address);
    await ensureTenant(c.env, tenant);
    const secret = `fhs_${randomId(24)}`;
    const res = await c.env.DB.prepare("INSERT INTO hosted_channels (tenant, address, kind, secret, created_at) VALUES (?, ?, 'ingress', ?, ?) ON CONFLICT DO NOTHING")
      .bind(tenant, body.address, secret, now())
      .run();
    if (res.meta.changes !== 1) throw new ApiError(409, "Conflict", `${body.address} already has a hosted ingress`);
    await audit(c.env, c.get("actor"), "hosted.ingress.add", body.address, undefined, tenant);
    const url = `${new URL(c.req.url).origin}/v1/hosted/${tenant}/${body.address}`;
    return c.json({ address: body.address, url, secret, auth: "Authorization: Bearer <secret>, or Ferry-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, t + '.' + body)>" }, 201);
  })
  .post("/egress", async (c) => {
    const body = await parseBody(c, EgressCreate, "hosted egress");
    const tenant = c.get("tenant");
    await assertFreeName(c.env, tenant, body.address);
    await ensureTenant(c.env, tenant);
    const secret = body.secret ?? `fhs_${randomId(24)}`;
    await c.env.DB.prepare(
      "INSERT INTO hosted_channels (tenant, address, kind, url, secret, created_at) VALUES (?, ?, 'egress', ?, ?, ?) ON CONFLICT (tenant, address, kind) DO UPDATE SET url = excluded.url, secret = excluded.secret",
    )
      .bind(tenant, body.address, body.url, secret, now())
      .run();
    // Channel objects that route here learn the new delivery target.
    await pushRoutesInto(c.env, tenant, body.address);
    await audit(c.env, c.get("actor"), "hosted.egress.set", body.address, { url: body.url }, tenant);
    return c.json({ address: body.address, url: body.url, secret, signature: "Ferry-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, t + '.' + body)>" }, 201);
  })
  .delete("/:kind{ingress|egress}/:connector/:channel", async (c) => {
    const tenant = c.get("tenant");
    const address = `${c.req.param("connector")}/${c.req.param("channel")}`;
    const res = await c.env.DB.prepare("DELETE FROM hosted_channels WHERE tenant = ? AND address = ? AND kind = ?").bind(tenant, address, c.req.param("kind")).run();
    if (res.meta.changes !== 1) throw new ApiError(404, "Not found", `no hosted ${c.req.param("kind")} at ${address}`);
    if (c.req.param("kind") === "egress") await pushRoutesInto(c.env, tenant, address);
    await audit(c.env, c.get("actor"), `hosted.${c.req.param("kind")}.remove`, address, undefined, tenant);
    return c.json({ address, removed: true });
  });
