import { env } from "cloudflare:test";
import { exports } from "cloudflare:workers";
import { CompactSign, exportJWK, generateKeyPair, importJWK, SignJWT } from "jose";
import { beforeAll, describe, expect, it } from "vitest";
import { roomInWindow } from "../limiter-window.ts";
import { CONNECT_AUDIENCE, decodeFrame, encodeFrame, ENROLL_PROOF_TYPE, type Frame } from "../../wire/index.ts";

/**
 * Hostile cases against the admin API and the connector endpoint: other
 * tenants' tokens, spoofed headers, too-small scopes, forged and expired
 * credentials, SQL metacharacters, floods. Each ends in a clear rejection
 * and no state change.
 */
const SELF = (exports as unknown as { default: Fetcher }).default;
const PLATFORM = "Bearer test-admin-token-0123456789abcdef";

async function call(method: string, path: string, auth: string | Record<string, string>, body?: unknown) {
  const headers: Record<string, string> = typeof auth === "string" ? { authorization: auth } : auth;
  const res = await SELF.fetch(`http://edge.test${path}`, {
    method,
    headers: { ...headers, ...(body === undefined ? {} : { "content-type": "application/json" }) },
    ...(body === undefined ? {} : { body: typeof body === "string" ? body : JSON.stringify(body) }),
  });
  const text = await res.text();
  return { status: res.status, body: (text ? JSON.parse(text) : null) as Record<string, unknown> & { detail?: string } };
}

let acme = "";
let globex = "";
let acmeRoute = "";

beforeAll(async () => {
  acme = `Bearer ${(await call("POST", "/api/tenants", PLATFORM, { id: "acme" })).body.ownerToken as string}`;
  globex = `Bearer ${(await call("POST", "/api/tenants", PLATFORM, { id: "globex" })).body.ownerToken as string}`;
  expect((await call("POST", "/api/connectors", acme, { name: "erp" })).status).toBe(201);
  acmeRoute = ((await call("POST", "/api/routes", acme, { source: "erp/out", destination: "partner/in" })).body.route as { id: string }).id;
});

describe("tenant isolation", () => {
  it("shows nothing of another tenant, and answers as if it did not exist", async () => {
    expect(((await call("GET", "/api/connectors", globex)).body.connectors as unknown[]).length).toBe(0);
    expect(((await call("GET", "/api/routes", globex)).body.routes as unknown[]).length).toBe(0);
    const theirs = await call("GET", "/api/connectors/erp", globex);
    const nobody = await call("GET", "/api/connectors/nobody", globex);
    expect(theirs).toEqual({ status: 404, body: { ...nobody.body, detail: "no connector named 'erp'", instance: "/api/connectors/erp" } });
    expect((await call("DELETE", `/api/routes/${acmeRoute}`, globex)).status).toBe(404);
    expect((await call("POST", `/api/routes/${acmeRoute}/hold`, globex, { hold: true })).status).toBe(404);
    expect((await call("DELETE", "/api/connectors/erp", globex)).status).toBe(404);
    expect(((await call("GET", "/api/log/verify?source=erp/out", globex)).body.chains as unknown[]).length).toBe(0);
    expect(((await call("GET", "/api/admin-log", globex)).body.entries as { action: string }[]).map((e) => e.action)).not.toContain("connector.add");
    // Nothing changed for acme.
    expect(((await call("GET", "/api/routes", acme)).body.routes as unknown[]).length).toBe(1);
  });

  it("does not let a tenant's token act in another tenant by header", async () => {
    const spoof = await call("GET", "/api/connectors", { authorization: globex, "x-ferry-tenant": "acme" });
    expect(spoof.status).toBe(403);
    expect(spoof.body.detail).toBe("this token belongs to another tenant");
  });

  it("keeps connectors of different tenants apart, even with the same names", async () => {
    // Both tenants have a connector "same"; acme's may not touch globex's stream.
    for (const t of [acme, globex]) expect((await call("POST", "/api/connectors", t, { name: "same" })).status).toBe(201);
    expect((await call("POST", "/api/routes", globex, { source: "feeder/out", destination: "same/in" })).status).toBe(201);
    const tok = (await call("POST", "/api/connectors/same/tokens", acme)).body.enrolToken as string;
    const keys = await generateKeyPair("Ed25519", { extractable: true });
    const jwk = await exportJWK(keys.publicKey);
    const proof = await new CompactSign(new TextEncoder().encode(tok)).setProtectedHeader({ alg: "Ed25519", typ: ENROLL_PROOF_TYPE }).sign(keys.privateKey);
    const en = await call("POST", "/v1/enroll", {}, { token: tok, publicKey: { kty: "OKP", crv: "Ed25519", x: jwk.x }, proof });
    expect(en.body.tenant).toBe("acme");
    const assertion = await new SignJWT({}).setProtectedHeader({ alg: "Ed25519" }).setSubject(en.body.connectorId as string).setAudience(CONNECT_AUDIENCE).setIssuedAt().setExpirationTime("2m").sign(keys.privateKey);
    const res = await SELF.fetch("http://edge.test/v1/connect", { headers: { upgrade: "websocket", authorization: `Bearer ${assertion}` } });
    const ws = res.webSocket as WebSocket;
    (ws as unknown as { binaryType: string }).binaryType = "arraybuffer";
    const frames: Frame[] = [];
    ws.addEventListener("message", (e) => typeof e.data !== "string" && frames.push(decodeFrame(e.data as ArrayBuffer).frame));
    ws.accept();
    ws.send(encodeFrame({ t: "ack", src: "feeder/out", dst: "same/in", upTo: 1 }));
    for (let i = 0; i < 100 && !frames.some((f) => f.t === "error"); i++) await new Promise((r) => setTimeout(r, 20));
    expect(frames.find((f) => f.t === "error")).toMatchObject({ code: "UNKNOWN_STREAM" });
    // A flood from one connector is refused whole (the test edge allows 500 a second, 1,000 of burst).
    frames.length = 0;
    const many = Array.from({ length: 1500 }, (_, i) => ({ seq: i + 1, id: `flood-${i}-xxxxxxxx`, createdAt: 1, contentType: "text/plain", size: 0, sha256: "0".repeat(64) }));
    ws.send(encodeFrame({ t: "pub", ch: "out", epoch: "flood-epoch-01", msgs: many }, many.map(() => new Uint8Array(0))));
    for (let i = 0; i < 100 && !frames.some((f) => f.t === "error"); i++) await new Promise((r) => setTimeout(r, 20));
    expect(frames.find((f) => f.t === "error")).toMatchObject({ code: "RATE_LIMITED", ch: "out" });
    ws.close(1000);
  });
});

describe("admin credentials and scopes", () => {
  it("lets a read-only token read and nothing else, and an operator change routes but not tokens", async () => {
    const read = `Bearer ${(await call("POST", "/api/tokens", acme, { name: "auditor", scope: "read" })).body.token as string}`;
    const op = `Bearer ${(await call("POST", "/api/tokens", acme, { name: "ops", scope: "operator" })).body.token as string}`;
    expect((await call("GET", "/api/routes", read)).status).toBe(200);
    const denied = await call("POST", "/api/routes", read, { source: "a/b", destination: "c/d" });
    expect(denied.status).toBe(403);
    expect(denied.body.detail).toBe("this needs the 'operator' scope; the token has 'read'");
    expect((await call("POST", "/api/routes", op, { source: "ops/out", destination: "c/d" })).status).toBe(201);
    expect((await call("POST", "/api/tokens", op, { name: "escalate", scope: "owner" })).status).toBe(403);
    expect((await call("POST", "/api/tenants", acme, { id: "evil" })).status).toBe(403);
    const log = (await call("GET", "/api/admin-log", acme)).body.entries as { actor: string; action: string }[];
    expect(log.find((e) => e.action === "route.add" && e.actor === "token:ops")).toBeDefined();
  });

  it("refuses revoked, unknown and malformed tokens", async () => {
    const created = (await call("POST", "/api/tokens", acme, { name: "temp", scope: "owner" })).body;
    expect((await call("GET", "/api/routes", `Bearer ${created.token as string}`)).status).toBe(200);
    expect((await call("DELETE", `/api/tokens/${created.id as string}`, acme)).status).toBe(200);
    for (const auth of [`Bearer ${created.token as string}`, "Bearer fat_guess", "Bearer ", "Token abc", PLATFORM.slice(0, -1)]) {
      expect((await call("GET", "/api/routes", auth)).status, auth).toBe(401);
    }
  });

  it("accepts a Cloudflare Access JWT signed by the team's key, with the configured tenant and scope", async () => {
    const key = await importJWK(JSON.parse((env as unknown as { TEST_ACCESS_PRIVATE_JWK: string }).TEST_ACCESS_PRIVATE_JWK), "ES256");
    const jwt = (aud: string) => new SignJWT({ email: "officer@example.com" }).setProtectedHeader({ alg: "ES256", kid: "test-access" }).setAudience(aud).setIssuedAt().setExpirationTime("5m").sign(key);
    const ok = await call("GET", "/api/routes", { "cf-access-jwt-assertion": await jwt("test-access-aud") });
    expect(ok.status).toBe(200);
    const write = await call("POST", "/api/routes", { "cf-access-jwt-assertion": await jwt("test-access-aud") }, { source: "a/b", destination: "c/d" });
    expect(write.status).toBe(403);
    expect((await call("GET", "/api/routes", { "cf-access-jwt-assertion": await jwt("another-app") })).status).toBe(401);
    const stranger = await generateKeyPair("ES256");
    const forged = await new SignJWT({}).setProtectedHeader({ alg: "ES256", kid: "test-access" }).setAudience("test-access-aud").setExpirationTime("5m").sign(stranger.privateKey);
    expect((await call("GET", "/api/routes", { "cf-access-jwt-assertion": forged })).status).toBe(401);
  });

  it("refuses an expired connector assertion", async () => {
    const tok = (await call("POST", "/api/connectors", acme, { name: "stale" })).body.enrolToken as string;
    const keys = await generateKeyPair("Ed25519", { extractable: true });
    const jwk = await exportJWK(keys.publicKey);
    const proof = await new CompactSign(new TextEncoder().encode(tok)).setProtectedHeader({ alg: "Ed25519", typ: ENROLL_PROOF_TYPE }).sign(keys.privateKey);
    const id = (await call("POST", "/v1/enroll", {}, { token: tok, publicKey: { kty: "OKP", crv: "Ed25519", x: jwk.x }, proof })).body.connectorId as string;
    const old = Math.floor(Date.now() / 1000) - 3600;
    const expired = await new SignJWT({}).setProtectedHeader({ alg: "Ed25519" }).setSubject(id).setAudience(CONNECT_AUDIENCE).setIssuedAt(old).setExpirationTime(old + 120).sign(keys.privateKey);
    const res = await SELF.fetch("http://edge.test/v1/connect", { headers: { upgrade: "websocket", authorization: `Bearer ${expired}` } });
    expect(res.status).toBe(401);
  });
});

describe("bad input", () => {
  it("treats SQL metacharacters as data, never as SQL", async () => {
    const nasty = "'; DROP TABLE events; --";
    const search = await call("GET", `/api/messages?field=${encodeURIComponent(`filename:${nasty}`)}`, acme);
    expect(search.status).toBe(200);
    expect(search.body.events).toEqual([]);
    expect((await call("GET", `/api/messages/${encodeURIComponent(nasty)}`, acme)).status).toBe(404);
    expect((await call("POST", "/api/connectors", acme, { name: nasty })).status).toBe(400);
    expect((await call("POST", "/api/routes", acme, { source: `a/${nasty}`, destination: "c/d" })).status).toBe(400);
    expect((await call("GET", "/api/routes", { authorization: PLATFORM, "x-ferry-tenant": "' OR 1=1 --" })).status).toBe(400);
    expect(await env.DB.prepare("SELECT count(*) AS n FROM events").first()).toBeTruthy();
  });

  it("names what is wrong with malformed and oversized requests", async () => {
    const broken = await call("POST", "/api/routes", acme, "{not json");
    expect(broken).toMatchObject({ status: 400, body: { detail: "route: the body must be JSON" } });
    const huge = await call("POST", "/api/routes", acme, { source: "a/b", destination: "c/d", pad: "x".repeat(70_000) });
    expect(huge).toMatchObject({ status: 413, body: { detail: "admin API requests are at most 64 KiB" } });
    const extra = await call("POST", "/api/connectors", acme, { name: "ok-name", admin: true });
    expect(extra.status).toBe(400);
    expect(extra.body.detail).toMatch(/admin/);
  });

  it("refuses oversized credentials and headers with a clear problem, and changes nothing", async () => {
    const before = (await call("GET", "/api/connectors", acme)).body.connectors as unknown[];
    const huge = `Bearer fat_${"x".repeat(64 * 1024)}`;
    const r1 = await call("POST", "/api/connectors", { authorization: huge }, { name: "from-huge-token" });
    expect(r1.status).toBe(401);
    const r2 = await call("POST", "/api/connectors", { authorization: PLATFORM, "x-ferry-tenant": "t".repeat(16 * 1024) }, { name: "from-huge-tenant" });
    expect([400, 403]).toContain(r2.status);
    expect(typeof r2.body.detail).toBe("string");
    const conn = await SELF.fetch("http://edge.test/v1/connect", { headers: { upgrade: "websocket", authorization: `Bearer ${"e".repeat(64 * 1024)}` } });
    expect(conn.status).toBe(401);
    expect((await call("GET", "/api/connectors", acme)).body.connectors).toEqual(before);
  });

  it("slows a flood of admin requests with 429s, per tenant", async () => {
    const flood = `Bearer ${(await call("POST", "/api/tenants", PLATFORM, { id: "flood" })).body.ownerToken as string}`;
    let limited = 0;
    // 600 a minute, counted in windows aligned to the clock: if one ends mid-flood, the next fills within 601 more.
    for (let i = 0; i < 1300 && limited === 0; i++) {
      const r = await call("GET", "/api/routes", flood);
      if (r.status === 429) limited++;
    }
    expect(limited).toBe(1);
    // Another tenant is not affected.
    expect((await call("GET", "/api/routes", globex)).status).toBe(200);
  });
});

describe("hosted ingress: floods", () => {
  it("slows a flood at one hosted address with 429s naming the limit; the tenant's other addresses go on", async () => {
    const made = await call("POST", "/api/hosted/ingress", PLATFORM, { address: "saas-flood/events" });
    const calm = await call("POST", "/api/hosted/ingress", PLATFORM, { address: "saas-calm/events" });
    for (const s of ["saas-flood/events", "saas-calm/events"]) expect((await call("POST", "/api/routes", PLATFORM, { source: s, destination: "plant-flood/in" })).status).toBe(201);
    const post = (address: string, secret: string, i: number) =>
      SELF.fetch(`http://edge.test/v1/hosted/default/${address}`, { method: "POST", headers: { authorization: `Bearer ${secret}`, "content-type": "text/plain" }, body: `event ${i}` });
    const statuses: number[] = [];
    // Exact counts: not across the end of the limiter's one-minute window.
    await roomInWindow(60, 5_000);
    for (let i = 0; i < 6; i++) statuses.push((await post("saas-flood/events", made.body.secret as string, i)).status);
    // The test budget is five a minute per address.
    expect(statuses).toEqual([202, 202, 202, 202, 202, 429]);
    const problem = (await (await post("saas-flood/events", made.body.secret as string, 7)).json()) as { detail: string };
    expect(problem.detail).toMatch(/saas-flood\/events takes at most .* messages a minute/);
    expect((await post("saas-calm/events", calm.body.secret as string, 1)).status).toBe(202);
    // What was refused was not taken: five messages from the flooded address, no more.
    const stub = env.CHANNEL.get(env.CHANNEL.idFromName("default:saas-flood/events"));
    expect((await stub.status()).hwm).toBe(5);
  });
});

describe("hosted ingress: idempotency keys", () => {
  it("refuses a reused Idempotency-Key with a different body, naming the key", async () => {
    const made = await call("POST", "/api/hosted/ingress", PLATFORM, { address: "saas-idem/events" });
    expect(made.status).toBe(201);
    expect((await call("POST", "/api/routes", PLATFORM, { source: "saas-idem/events", destination: "plant-idem/in" })).status).toBe(201);
    const post = (body: string, key: string) =>
      SELF.fetch("http://edge.test/v1/hosted/default/saas-idem/events", { method: "POST", headers: { authorization: `Bearer ${made.body.secret as string}`, "idempotency-key": key, "content-type": "application/json" }, body });
    const first = await post('{"order":1}', "evt-idem-1");
    expect(first.status).toBe(202);
    // At once, before any event reached the log: the object keeps the first body's digest with the key.
    const retry = await post('{"order":1}', "evt-idem-1");
    expect(retry.status).toBe(200);
    expect(await retry.json()).toMatchObject({ duplicate: true });
    const reused = await post('{"order":2}', "evt-idem-1");
    expect(reused.status).toBe(422);
    expect(reused.headers.get("content-type")).toContain("application/problem+json");
    const problem = (await reused.json()) as { detail: string; idempotencyKey: string };
    expect(problem.idempotencyKey).toBe("evt-idem-1");
    expect(problem.detail).toMatch(/^Idempotency-Key 'evt-idem-1' was already used for a different body/);
  });
});
