import { exports } from "cloudflare:workers";
import { CompactSign, exportJWK, generateKeyPair, SignJWT } from "jose";
import { describe, expect, it } from "vitest";
import { roomInWindow } from "./limiter-window.ts";
import { CONNECT_AUDIENCE, decodeFrame, encodeFrame, ENROLL_PROOF_TYPE, type Frame } from "../wire/index.ts";

const ADMIN = { authorization: "Bearer test-admin-token-0123456789abcdef" };
const BASE = "http://edge.test";
const SELF = (exports as unknown as { default: Fetcher }).default;

async function api(method: string, path: string, body?: unknown, headers: Record<string, string> = ADMIN) {
  const res = await SELF.fetch(`${BASE}${path}`, {
    method,
    headers: { ...headers, ...(body === undefined ? {} : { "content-type": "application/json" }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return { status: res.status, type: res.headers.get("content-type"), body: (await res.json()) as Record<string, unknown> };
}

/** Enrols a connector the way `ferry connector enroll` does, inside workerd. */
async function enrolled(name: string, admin: Record<string, string> = ADMIN) {
  const add = await api("POST", "/api/connectors", { name }, admin);
  expect(add.status).toBe(201);
  const token = add.body.enrolToken as string;
  const { publicKey, privateKey } = await generateKeyPair("Ed25519", { extractable: true });
  const proof = await new CompactSign(new TextEncoder().encode(token)).setProtectedHeader({ alg: "Ed25519", typ: ENROLL_PROOF_TYPE }).sign(privateKey);
  const jwk = await exportJWK(publicKey);
  const res = await api("POST", "/v1/enroll", { token, publicKey: { kty: jwk.kty, crv: jwk.crv, x: jwk.x }, proof }, {});
  expect(res.status).toBe(201);
  const id = res.body.connectorId as string;
  const assertion = () => new SignJWT({}).setProtectedHeader({ alg: "Ed25519" }).setSubject(id).setAudience(CONNECT_AUDIENCE).setIssuedAt().setExpirationTime("2m").sign(privateKey);
  return { token, id, assertion, privateKey };
}

async function open(assertion: string) {
  const res = await SELF.fetch(`${BASE}/v1/connect`, { headers: { upgrade: "websocket", authorization: `Bearer ${assertion}` } });
  expect(res.status).toBe(101);
  const ws = res.webSocket as WebSocket;
  const frames: Frame[] = [];
  const waiters: (() => void)[] = [];
  ws.addEventListener("message", (e) => {
    if (typeof e.data === "string") return;
    frames.push(decodeFrame(e.data as ArrayBuffer).frame);
    for (const w of waiters.splice(0)) w();
  });
  // With this compatibility date, client sockets in workerd hand out Blobs otherwise.
  (ws as unknown as { binaryType: string }).binaryType = "arraybuffer";
  ws.accept();
  const next = async (pred: (f: Frame) => boolean): Promise<Frame> => {
    for (let i = 0; i < 200; i++) {
      const f = frames.find(pred);
      if (f) {
        frames.splice(frames.indexOf(f), 1);
        return f;
      }
      await new Promise<void>((r) => {
        waiters.push(r);
        setTimeout(r, 50);
      });
    }
    throw new Error(`no matching frame; got ${JSON.stringify(frames)}`);
  };
  return { ws, next };
}

describe("edge: HTTP", () => {
  it("answers /healthz with the version once ready", async () => {
    const res = await api("GET", "/healthz", undefined, {});
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ ok: true, version: "0.1.0" });
  });

  it("refuses the admin API without a valid admin token, as a problem document", async () => {
    for (const headers of [{}, { authorization: "Bearer wrong" }, { authorization: "Basic abc" }] as Record<string, string>[]) {
      const res = await api("GET", "/api/connectors", undefined, headers);
      expect(res.status).toBe(401);
      expect(res.type).toContain("application/problem+json");
      expect(res.body).toMatchObject({ status: 401, title: "Unauthorized" });
    }
  });

  it("names the bad field of an invalid request", async () => {
    const res = await api("POST", "/api/routes", { source: "a/orders", destination: "B/Orders" });
    expect(res.status).toBe(400);
    expect(res.body.detail).toMatch(/^route: destination: /);
    expect(res.body.errors).toEqual([{ field: "destination", message: expect.stringContaining("connector/channel") }]);
    const ttl = await api("POST", "/api/routes", { source: "a/orders", destination: "b/orders", ttl: "soon" });
    expect(ttl.body.detail).toMatch(/ttl/);
  });

  it("rejects a duplicate connector and a duplicate route with 409", async () => {
    expect((await api("POST", "/api/connectors", { name: "dup-conn" })).status).toBe(201);
    expect((await api("POST", "/api/connectors", { name: "dup-conn" })).status).toBe(409);
    expect((await api("POST", "/api/routes", { source: "x/a", destination: "y/a" })).status).toBe(201);
    expect((await api("POST", "/api/routes", { source: "x/a", destination: "y/a" })).status).toBe(409);
  });
});

describe("edge: enrolment and connection", () => {
  it("enrols once per token, and only with proof of the private key", async () => {
    const add = await api("POST", "/api/connectors", { name: "proof-test" });
    const token = add.body.enrolToken as string;
    const mine = await generateKeyPair("Ed25519", { extractable: true });
    const other = await generateKeyPair("Ed25519", { extractable: true });
    const jwk = await exportJWK(mine.publicKey);
    const forged = await new CompactSign(new TextEncoder().encode(token)).setProtectedHeader({ alg: "Ed25519", typ: ENROLL_PROOF_TYPE }).sign(other.privateKey);
    const bad = await api("POST", "/v1/enroll", { token, publicKey: { kty: jwk.kty, crv: jwk.crv, x: jwk.x }, proof: forged }, {});
    expect(bad.status).toBe(400);
    expect(bad.body.detail).toMatch(/proof/);
    const proof = await new CompactSign(new TextEncoder().encode(token)).setProtectedHeader({ alg: "Ed25519", typ: ENROLL_PROOF_TYPE }).sign(mine.privateKey);
    const ok = await api("POST", "/v1/enroll", { token, publicKey: { kty: jwk.kty, crv: jwk.crv, x: jwk.x }, proof }, {});
    expect(ok.status).toBe(201);
    expect(ok.body).toMatchObject({ connector: "proof-test", tenant: "default" });
    const again = await api("POST", "/v1/enroll", { token, publicKey: { kty: jwk.kty, crv: jwk.crv, x: jwk.x }, proof }, {});
    expect(again.status).toBe(401);
  });

  it("refuses a connection without a valid assertion", async () => {
    const noUpgrade = await SELF.fetch(`${BASE}/v1/connect`);
    expect(noUpgrade.status).toBe(426);
    const c = await enrolled("assert-test");
    const stranger = await generateKeyPair("Ed25519");
    const forged = await new SignJWT({}).setProtectedHeader({ alg: "Ed25519" }).setSubject(c.id).setAudience(CONNECT_AUDIENCE).setIssuedAt().setExpirationTime("2m").sign(stranger.privateKey);
    const res = await SELF.fetch(`${BASE}/v1/connect`, { headers: { upgrade: "websocket", authorization: `Bearer ${forged}` } });
    expect(res.status).toBe(401);
    const wrongAud = await new SignJWT({}).setProtectedHeader({ alg: "Ed25519" }).setSubject(c.id).setAudience("elsewhere").setIssuedAt().setExpirationTime("2m").sign(c.privateKey);
    expect((await SELF.fetch(`${BASE}/v1/connect`, { headers: { upgrade: "websocket", authorization: `Bearer ${wrongAud}` } })).status).toBe(401);
  });

  it("welcomes a connector, accepts a publish, and answers garbage with an error frame on the same socket", async () => {
    const a = await enrolled("ws-a");
    await api("POST", "/api/routes", { source: "ws-a/orders", destination: "ws-b/orders" });
    const { ws, next } = await open(await a.assertion());
    expect(await next((f) => f.t === "welcome")).toMatchObject({ tenant: "default", connector: "ws-a" });

    ws.send(new Uint8Array([1, 0, 0, 0, 9, 1, 2]));
    expect(await next((f) => f.t === "error")).toMatchObject({ code: "BAD_FRAME" });
    ws.send("hello");
    expect(await next((f) => f.t === "error")).toMatchObject({ code: "BAD_FRAME" });

    const payload = new TextEncoder().encode("hi");
    const msg = { seq: 1, id: "id-0000000001", createdAt: 1, contentType: "text/plain", size: 2, sha256: "0".repeat(64) };
    ws.send(encodeFrame({ t: "pub", ch: "orders", epoch: "epoch-aaaaaaaa", msgs: [msg] }, [payload]));
    expect(await next((f) => f.t === "puback")).toMatchObject({ ch: "orders", upTo: 1 });
    // The socket still works after the bad frames; a duplicate is acknowledged again.
    ws.send(encodeFrame({ t: "pub", ch: "orders", epoch: "epoch-aaaaaaaa", msgs: [msg] }, [payload]));
    expect(await next((f) => f.t === "puback")).toMatchObject({ upTo: 1 });
    // Another connector's stream cannot be acknowledged from here.
    ws.send(encodeFrame({ t: "ack", src: "ws-a/orders", dst: "ws-b/orders", upTo: 1 }));
    expect(await next((f) => f.t === "error")).toMatchObject({ code: "FORBIDDEN" });
    // Nor a relayed part answered for it; and relaying is the edge's to do, not a connector's.
    ws.send(encodeFrame({ t: "relayed", src: "ws-a/orders", dst: "ws-b/orders", id: "id-0000000009", part: 1, have: 1, ok: true }));
    expect(await next((f) => f.t === "error")).toMatchObject({ code: "FORBIDDEN", message: "ws-a cannot answer for ws-b/orders" });
    const chunk = new Uint8Array(3);
    ws.send(encodeFrame({ t: "relay", src: "ws-a/orders", dst: "ws-b/orders", id: "id-0000000009", part: 1, parts: 2, size: 6 * 1024 * 1024, sha256: "0".repeat(64), chunk: 5 * 1024 * 1024, len: 3, psha: "0".repeat(64) }, [chunk]));
    expect(await next((f) => f.t === "error")).toMatchObject({ code: "BAD_FRAME", message: "connectors do not send 'relay' frames" });
    ws.close(1000, "done");
  });

  it("holds a tenant to its message budget across all its connectors, and no other tenant is affected", async () => {
    const owner = { authorization: `Bearer ${(await api("POST", "/api/tenants", { id: "budget" })).body.ownerToken as string}` };
    const conns: Awaited<ReturnType<typeof open>>[] = [];
    for (const name of ["bud-a", "bud-b"]) {
      const c = await enrolled(name, owner);
      expect((await api("POST", "/api/routes", { source: `${name}/orders`, destination: "bud-z/orders" }, owner)).status).toBe(201);
      const conn = await open(await c.assertion());
      await conn.next((f) => f.t === "welcome");
      conns.push(conn);
    }
    // The test budget is 12 units of 100 messages a minute, paid ahead per connection;
    // exact counts, so not across the end of the limiter's one-minute window.
    await roomInWindow(60, 10_000);
    const payload = new TextEncoder().encode("x");
    const next = [1, 1];
    const send = (i: number, n: number) => {
      const c = conns[i] as Awaited<ReturnType<typeof open>>;
      const first = next[i] as number;
      next[i] = first + n;
      const msgs = Array.from({ length: n }, (_, k) => ({ seq: first + k, id: `bud-${i}-${String(first + k).padStart(8, "0")}`, createdAt: 1, contentType: "text/plain", size: 1, sha256: "0".repeat(64) }));
      c.ws.send(encodeFrame({ t: "pub", ch: "orders", epoch: "epoch-budget1", msgs }, msgs.map(() => payload)));
      return c.next((f) => f.t === "puback" || f.t === "error");
    };
    // Ten units in frames of 100, five from each connector.
    for (let i = 0; i < 10; i++) expect(await send(i % 2, 100)).toMatchObject({ t: "puback" });
    // One message pays a unit: the next 99 from the same connection take no more of the budget.
    expect(await send(0, 1)).toMatchObject({ t: "puback" });
    for (let k = 0; k < 99; k++) expect(await send(0, 1)).toMatchObject({ t: "puback" });
    // The twelfth unit, from the other connector; then the budget is spent, from either.
    expect(await send(1, 1)).toMatchObject({ t: "puback" });
    expect(await send(1, 99)).toMatchObject({ t: "puback" });
    // The next message, from either connector, is refused with a clear error; nothing of it is taken.
    const refused = await send(0, 1);
    expect(refused).toMatchObject({ t: "error", code: "RATE_LIMITED", message: expect.stringContaining("tenant budget") });
    next[0] = (next[0] as number) - 1;
    expect(await send(0, 1)).toMatchObject({ t: "error", code: "RATE_LIMITED" });
    // Another tenant's connector still publishes.
    const other = await enrolled("not-budget");
    await api("POST", "/api/routes", { source: "not-budget/orders", destination: "ws-b/orders" });
    const o = await open(await other.assertion());
    await o.next((f) => f.t === "welcome");
    o.ws.send(encodeFrame({ t: "pub", ch: "orders", epoch: "epoch-other01", msgs: [{ seq: 1, id: "other-00000001", createdAt: 1, contentType: "text/plain", size: 1, sha256: "0".repeat(64) }] }, [payload]));
    expect(await o.next((f) => f.t === "puback" || f.t === "error")).toMatchObject({ t: "puback", upTo: 1 });
    for (const c of [...conns, o]) c.ws.close(1000, "done");
  });

  it("closes the open connection when the connector is revoked", async () => {
    const a = await enrolled("revoke-me");
    const { ws, next } = await open(await a.assertion());
    await next((f) => f.t === "welcome");
    const closed = new Promise<number>((r) => ws.addEventListener("close", (e) => r(e.code)));
    expect((await api("DELETE", "/api/connectors/revoke-me")).status).toBe(200);
    expect(await closed).toBe(4003);
    const res = await SELF.fetch(`${BASE}/v1/connect`, { headers: { upgrade: "websocket", authorization: `Bearer ${await a.assertion()}` } });
    expect(res.status).toBe(401);
  });
});

describe("edge signing keys", () => {
  it("publishes its public keys as a JWKS, without private parts", async () => {
    const res = await SELF.fetch(`${BASE}/.well-known/jwks.json`);
    const jwks = (await res.json()) as { keys: Record<string, unknown>[] };
    expect(jwks.keys).toHaveLength(1);
    expect(jwks.keys[0]).toMatchObject({ kty: "EC", crv: "P-256", kid: "test-edge-1", alg: "ES256", use: "sig" });
    expect(jwks.keys[0]).not.toHaveProperty("d");
  });
});
