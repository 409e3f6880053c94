import { mkdtemp } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { exportJWK, generateKeyPair } from "jose";
import { afterEach, describe, expect, it, vi } from "vitest";
import { edgeKeys, edgeSign } from "../../workers/edge-keys.ts";
import { Policies } from "./policies.ts";

const AUD = "ferry:default:site-a";

/** An edge's signing keys as the EDGE_SIGNING_KEYS secret holds them (newest first). */
async function signingKey(kid: string) {
  const { privateKey } = await generateKeyPair("ES256", { extractable: true });
  return { ...(await exportJWK(privateKey)), kid };
}

/** A real HTTP server on loopback that publishes whatever keys the test sets, counting fetches. */
async function jwksServer() {
  const s = { published: [] as object[], fetches: 0, server: null as Server | null, url: "" };
  s.server = createServer(async (req, res) => {
    if (req.url !== "/.well-known/jwks.json") return void res.writeHead(404).end();
    s.fetches++;
    const keys = await edgeKeys({ EDGE_SIGNING_KEYS: JSON.stringify(s.published) });
    res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(keys?.jwks ?? { keys: [] }));
  });
  await new Promise<void>((r) => s.server?.listen(0, "127.0.0.1", r));
  const addr = s.server.address();
  s.url = `http://127.0.0.1:${typeof addr === "object" && addr ? addr.port : 0}`;
  return s;
}

const servers: Server[] = [];
afterEach(async () => {
  vi.useRealTimers();
  await Promise.all(servers.splice(0).map((s) => new Promise((r) => s.close(r))));
});

describe("checking what the edge signed (receipts)", () => {
  it("says 'unknown', never 'invalid', while the edge's keys cannot be had; checks once they can", async () => {
    const k1 = await signingKey("k1");
    const jwt = (await edgeSign({ EDGE_SIGNING_KEYS: JSON.stringify([k1]) }, { status: "delivered" }, AUD)) as string;
    const p = new Policies(await mkdtemp(join(tmpdir(), "ferry-pol-")));
    expect(await p.checkEdge(jwt, AUD)).toMatchObject({ ok: false, why: "unknown" });
    // An edge that does not answer: still unknown.
    const dead = await jwksServer();
    servers.push(dead.server as Server);
    await new Promise((r) => dead.server?.close(r));
    await p.fetchEdgeKeys(dead.url);
    expect(await p.checkEdge(jwt, AUD)).toEqual({ ok: false, why: "unknown", detail: "the edge's published keys could not be fetched" });

    const edge = await jwksServer();
    servers.push(edge.server as Server);
    edge.published = [k1];
    // A check that comes while the keys are being fetched (a receipt just after a start) waits for them.
    void p.fetchEdgeKeys(edge.url);
    const res = await p.checkEdge(jwt, AUD);
    expect(res.ok && res.claims.status).toBe("delivered");
    // Signed by the edge, but for another connector: invalid.
    expect(await p.checkEdge(jwt, "ferry:default:site-b")).toEqual({ ok: false, why: "invalid" });
  });

  it("fetches the keys again for a key the edge did not publish before (a rotation), at most once a minute", async () => {
    const [k1, k2, k3] = await Promise.all([signingKey("k1"), signingKey("k2"), signingKey("k3")]);
    const edge = await jwksServer();
    servers.push(edge.server as Server);
    edge.published = [k1];
    const p = new Policies(await mkdtemp(join(tmpdir(), "ferry-pol-")));
    await p.fetchEdgeKeys(edge.url);
    expect(edge.fetches).toBe(1);

    // Rotated within the minute of the last fetch: a statement by the new key is neither trusted nor called invalid.
    edge.published = [k2, k1];
    const byK2 = (await edgeSign({ EDGE_SIGNING_KEYS: JSON.stringify([k2, k1]) }, { status: "delivered" }, AUD)) as string;
    expect(await p.checkEdge(byK2, AUD)).toMatchObject({ ok: false, why: "unknown" });
    expect(edge.fetches).toBe(1);

    vi.useFakeTimers({ toFake: ["Date"] });
    vi.setSystemTime(Date.now() + 61_000);
    expect((await p.checkEdge(byK2, AUD)).ok).toBe(true);
    expect(edge.fetches).toBe(2);

    // A key the edge never published: invalid once the edge was asked again; a flood of them asks nothing more.
    vi.setSystemTime(Date.now() + 61_000);
    const forged = (await edgeSign({ EDGE_SIGNING_KEYS: JSON.stringify([k3]) }, { status: "delivered" }, AUD)) as string;
    expect(await p.checkEdge(forged, AUD)).toEqual({ ok: false, why: "invalid" });
    for (let i = 0; i < 5; i++) expect((await p.checkEdge(forged, AUD)).ok).toBe(false);
    expect(edge.fetches).toBe(3);
  });

  it("keeps the keys it fetched, so a restart without the edge still checks", async () => {
    const k1 = await signingKey("k1");
    const edge = await jwksServer();
    servers.push(edge.server as Server);
    edge.published = [k1];
    const dir = await mkdtemp(join(tmpdir(), "ferry-pol-"));
    await new Policies(dir).fetchEdgeKeys(edge.url);
    await new Promise((r) => edge.server?.close(r));

    const restarted = new Policies(dir);
    await restarted.load();
    const jwt = (await edgeSign({ EDGE_SIGNING_KEYS: JSON.stringify([k1]) }, { status: "delivered" }, AUD)) as string;
    expect((await restarted.checkEdge(jwt, AUD)).ok).toBe(true);
  });
});
