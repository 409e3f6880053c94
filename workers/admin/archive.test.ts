import { env, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { exports } from "cloudflare:workers";
import { describe, expect, it, vi } from "vitest";
import type { PubMessage } from "../../wire/index.ts";
import { channelNamespace, resetRegionWarnings, withJurisdiction } from "../region.ts";
import { purgeLogRows } from "../retention.ts";

const SELF = (exports as unknown as { default: Fetcher }).default;
const ADMIN = { authorization: "Bearer test-admin-token-0123456789abcdef", "content-type": "application/json" };
const TENANT = "default";

async function api(method: string, path: string, body?: unknown) {
  const res = await SELF.fetch(`http://edge.test${path}`, { method, headers: ADMIN, ...(body ? { body: JSON.stringify(body) } : {}) });
  return { status: res.status, res };
}

type Internals = { archiver: { flush(t: string, s: string): Promise<void> }; events: { flush(): Promise<void> } };

async function publishOne(source: string, body: string, region: string | null = null) {
  const ns = channelNamespace(env, region);
  const stub = ns.get(ns.idFromName(`${TENANT}:${source}`));
  const payload = new TextEncoder().encode(body);
  const digest = [...new Uint8Array(await crypto.subtle.digest("SHA-256", payload))].map((b) => b.toString(16).padStart(2, "0")).join("");
  const id = `arc-${crypto.randomUUID().slice(0, 8)}`;
  const msg: PubMessage = { seq: 1, id, createdAt: 1, contentType: "text/plain", size: payload.byteLength, sha256: digest, fields: { filename: "contract <v2>.txt", partnerRef: "PO-7&8" } };
  const res = await stub.publish({ tenant: TENANT, source, epoch: "epoch-aaaaaaaa", msgs: [msg], payloads: [payload] });
  expect(res).toMatchObject({ ok: true, accepted: 1 });
  await runInDurableObject(stub, async (obj) => {
    const o = obj as unknown as Internals;
    await o.archiver.flush(TENANT, source);
    await o.events.flush();
  });
  return { stub, id, digest };
}

async function untilPurged(stub: DurableObjectStub, id: string) {
  const deadline = Date.now() + 10_000;
  for (;;) {
    await runDurableObjectAlarm(stub);
    await runInDurableObject(stub, (obj) => (obj as unknown as Internals).events.flush());
    const r = await env.DB.prepare("SELECT count(*) AS n FROM events WHERE message_id = ? AND type = 'purged'").bind(id).first<{ n: number }>();
    if ((r?.n ?? 0) > 0 || Date.now() > deadline) return r?.n ?? 0;
    await new Promise((res) => setTimeout(res, 100));
  }
}

describe("archives", () => {
  it("archives payload and envelope, downloadable as bytes, JSON and XML, and purges at the end of retention", async () => {
    expect((await api("POST", "/api/routes", { source: "arc-a/out", destination: "arc-b/in", archive: true, retention: "1s" })).status).toBe(201);
    const { stub, id, digest } = await publishOne("arc-a/out", "signed contract");
    const payload = await api("GET", `/api/messages/${id}/archive`);
    expect(payload.status).toBe(200);
    expect(await payload.res.text()).toBe("signed contract");
    expect(payload.res.headers.get("x-ferry-sha256")).toBe(digest);
    const json = (await (await api("GET", `/api/messages/${id}/envelope`)).res.json()) as Record<string, unknown>;
    expect(json).toMatchObject({ id, source: "arc-a/out", destinations: ["arc-b/in"], sha256: digest, fields: { filename: "contract <v2>.txt", partnerRef: "PO-7&8" } });
    const xml = await (await api("GET", `/api/messages/${id}/envelope?format=xml`)).res.text();
    expect(xml).toContain(`<envelope xmlns="urn:ferry:envelope:1" id="${id}">`);
    expect(xml).toContain('<field name="filename">contract &lt;v2&gt;.txt</field>');
    expect(xml).toContain('<field name="partnerRef">PO-7&amp;8</field>');
    const trace = (await (await api("GET", `/api/messages/${id}`)).res.json()) as { events: { type: string }[] };
    expect(trace.events.map((e) => e.type)).toEqual(["captured", "accepted", "archived"]);

    expect(await untilPurged(stub, id)).toBe(1);
    expect((await api("GET", `/api/messages/${id}/archive`)).status).toBe(410);
    expect(await env.ARCHIVE.list({ prefix: `${TENANT}/arc-a/out/` }).then((l) => l.objects.length)).toBe(0);
  });

  it("keeps archives under a legal hold past their retention", async () => {
    const route = (await (await api("POST", "/api/routes", { source: "hold-a/out", destination: "hold-b/in", archive: true, retention: "1s" })).res.json()) as { route: { id: string } };
    expect((await api("POST", `/api/routes/${route.route.id}/hold`, { hold: true })).status).toBe(200);
    const { stub, id } = await publishOne("hold-a/out", "evidence");
    await new Promise((r) => setTimeout(r, 1100)); // past the retention: a purge would now be due
    await runDurableObjectAlarm(stub);
    expect((await api("GET", `/api/messages/${id}/archive`)).status).toBe(200);
    expect((await api("POST", `/api/routes/${route.route.id}/hold`, { hold: false })).status).toBe(200);
    expect(await untilPurged(stub, id)).toBe(1);
  });
});

describe("region pins", () => {
  it("archives a route pinned to the EU in the EU bucket, and nowhere else", async () => {
    expect((await api("POST", "/api/routes", { source: "eu-a/out", destination: "eu-b/in", archive: true, region: "eu" })).status).toBe(201);
    await publishOne("eu-a/out", "personal data", "eu");
    expect((await env.ARCHIVE_EU.list({ prefix: `${TENANT}/eu-a/out/` })).objects.length).toBe(2);
    expect((await env.ARCHIVE.list({ prefix: `${TENANT}/eu-a/out/` })).objects.length).toBe(0);
    // Its log rows stay in the EU store too; the query API and the verifier still see them.
    const inEu = await env.DB_EU.prepare("SELECT type FROM event_log WHERE source = 'eu-a/out' ORDER BY chain_seq").all<{ type: string }>();
    expect(inEu.results.map((r) => r.type)).toEqual(["captured", "accepted", "archived"]);
    expect((await env.DB.prepare("SELECT count(*) AS n FROM event_log WHERE source = 'eu-a/out'").first<{ n: number }>())?.n).toBe(0);
    expect((await env.DB.prepare("SELECT count(*) AS n FROM message_index WHERE chain = 'default:eu-a/out'").first<{ n: number }>())?.n).toBe(0);
    const listed = (await (await api("GET", "/api/messages?source=eu-a/out")).res.json()) as { events: { type: string }[] };
    expect(listed.events.map((e) => e.type).sort()).toEqual(["accepted", "archived", "captured"]);
    const verified = (await (await api("GET", "/api/log/verify?source=eu-a/out")).res.json()) as { ok: boolean; chains: { chain: string }[] };
    expect(verified).toMatchObject({ ok: true, chains: [{ chain: "default:eu-a/out" }] });
  });

  it("refuses configuration that would break a pin, naming why", async () => {
    const unpinned = await api("POST", "/api/routes", { source: "eu-a/out", destination: "us-b/in" });
    expect(unpinned.status).toBe(409);
    expect(((await unpinned.res.json()) as { detail: string }).detail).toMatch(/eu-a\/out is pinned to 'eu'; every route from it must be pinned/);
    const mars = await api("POST", "/api/routes", { source: "m-a/out", destination: "m-b/in", region: "mars" });
    expect(mars.status).toBe(400);
    const noStores = await api("POST", "/api/routes", { source: "f-a/out", destination: "f-b/in", region: "fedramp", archive: true });
    expect(noStores.status).toBe(400);
    expect(((await noStores.res.json()) as { detail: string }).detail).toMatch(/^route: region: this edge has no stores in 'fedramp'/);
  });

  it("pins channel objects with the jurisdiction where the runtime has it, with a logged local fallback", () => {
    const log = vi.fn();
    resetRegionWarnings();
    expect(withJurisdiction("eu", () => "pinned", "default", log)).toBe("pinned");
    const throwing = () => {
      throw new Error("jurisdictions are not supported");
    };
    expect(withJurisdiction("eu", throwing, "default", log)).toBe("default");
    expect(withJurisdiction("eu", throwing, "default", log)).toBe("default");
    expect(log).toHaveBeenCalledTimes(1);
    expect(log.mock.calls[0]?.[0]).toMatch(/jurisdiction 'eu' is not available here/);
    // Local workerd has no jurisdictions: the fallback is the plain namespace.
    expect(channelNamespace(env, "eu")).toBe(env.CHANNEL);
    expect(channelNamespace(env, null)).toBe(env.CHANNEL);
  });
});

describe("log retention", () => {
  it("purges old log rows except those of routes under legal hold, logs the purge, and chains stay verifiable", async () => {
    const old = Date.now() - 500 * 86_400_000;
    const insert = (chain: string, seq: number, at: number) =>
      env.DB.prepare("INSERT INTO events (tenant, message_id, type, at, place, source, chain, chain_seq, prev_hash, hash) VALUES ('default', ?, 'accepted', ?, 'local', ?, ?, ?, ?, ?)")
        .bind(`old-${chain}-${seq}`, at, chain.split(":")[1], chain, seq, "x", `h-${chain}-${seq}`)
        .run();
    await insert("default:ret-a/out", 1, old);
    await insert("default:ret-held/out", 1, old);
    const r = (await (await api("POST", "/api/routes", { source: "ret-held/out", destination: "ret-b/in" })).res.json()) as { route: { id: string } };
    await api("POST", `/api/routes/${r.route.id}/hold`, { hold: true });
    const deleted = await purgeLogRows(env);
    expect(deleted).toBeGreaterThanOrEqual(1);
    const left = await env.DB.prepare("SELECT chain FROM events WHERE message_id LIKE 'old-%'").all<{ chain: string }>();
    expect(left.results.map((x) => x.chain)).toEqual(["default:ret-held/out"]);
    const logged = await env.DB.prepare("SELECT action, actor FROM admin_log WHERE action = 'log.purge'").first();
    expect(logged).toEqual({ action: "log.purge", actor: "retention" });
  });
});
