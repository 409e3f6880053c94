import { createHash, createHmac, randomBytes } from "node:crypto";
import { createServer, type IncomingHttpHeaders, type Server } from "node:http";
import { mkdtemp, readdir, readFile, rename, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LocalEdge } from "../helpers/edge.ts";
import { ConnectorProcess, ferry } from "../helpers/cli.ts";
import { waitFor } from "../helpers/wait.ts";

/**
 * Hosted channels, end to end on the local network: a "SaaS" that can only
 * send webhooks posts to the edge and the file arrives at a real connector;
 * a file from a real connector is delivered by the edge itself to a local
 * HTTP endpoint, retried until it answers 2xx, signed so it can be checked.
 */
describe("hosted channels", () => {
  let edge: LocalEdge;
  let dir: string;
  let env: Record<string, string>;
  let saas: Server;
  let saasUrl = "";
  const hits: { headers: IncomingHttpHeaders; body: Buffer; status: number }[] = [];
  const procs: ConnectorProcess[] = [];

  beforeAll(async () => {
    edge = await LocalEdge.start();
    dir = await mkdtemp(join(tmpdir(), "ferry-hosted-"));
    env = { FERRY_EDGE: edge.url, FERRY_ADMIN_TOKEN: edge.adminToken };
    // The SaaS endpoint: down for the first two deliveries.
    saas = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        const status = hits.length < 2 ? 503 : 200;
        hits.push({ headers: req.headers, body: Buffer.concat(chunks), status });
        res.writeHead(status).end(status === 200 ? "ok" : "maintenance");
      });
    });
    await new Promise<void>((r) => saas.listen(0, "127.0.0.1", r));
    saasUrl = `http://127.0.0.1:${(saas.address() as { port: number }).port}/ferry-hook`;
    const token = (JSON.parse(ferry(["admin", "connector", "add", "plant", "--json"], env).stdout) as { enrolToken: string }).enrolToken;
    expect(ferry(["connector", "enroll", "--edge", edge.url, "--token", token, "--state", join(dir, "plant-state")], env).code).toBe(0);
    await writeFile(join(dir, "plant.toml"), `state = "./plant-state"\nlog = "json"\n[[channels]]\nname = "data"\nprotocol = "file"\noutbox = "./out"\ninbox = "./in"\npoll_ms = 50\n`);
    procs.push(new ConnectorProcess(join(dir, "plant.toml")));
    await procs[0]?.connected();
  });

  afterAll(async () => {
    await Promise.all(procs.map((p) => p.stop()));
    await new Promise((r) => saas?.close(r));
    await edge?.close();
  });

  it("ingress: a webhook POST to the edge is captured before the answer, deduplicated by key, and routed to a connector", async () => {
    const added = ferry(["admin", "hosted", "ingress", "add", "saas/events", "--json"], env);
    expect(added.code, added.stderr).toBe(0);
    const { url, secret } = JSON.parse(added.stdout) as { url: string; secret: string };
    expect(ferry(["admin", "route", "add", "saas/events", "plant/data"], env).code).toBe(0);

    const post = (body: string, headers: Record<string, string>) => fetch(url, { method: "POST", body, headers: { "content-type": "application/json", ...headers } });
    const first = await post('{"order":1}', { authorization: `Bearer ${secret}`, "idempotency-key": "evt-1", "ferry-filename": "order-1.json" });
    expect(first.status).toBe(202);
    const a = (await first.json()) as { id: string };
    const again = await post('{"order":1}', { authorization: `Bearer ${secret}`, "idempotency-key": "evt-1", "ferry-filename": "order-1.json" });
    expect(again.status).toBe(200);
    expect(await again.json()).toMatchObject({ id: a.id, duplicate: true });
    // The HMAC form, as webhook providers sign.
    const t = Math.floor(Date.now() / 1000);
    const body2 = '{"order":2}';
    const sig = createHmac("sha256", secret).update(`${t}.${body2}`).digest("hex");
    expect((await post(body2, { "ferry-signature": `t=${t},v1=${sig}`, "ferry-filename": "order-2.json" })).status).toBe(202);
    // Refused: wrong secret, bad signature, replayed timestamp, too big.
    expect((await post("{}", { authorization: "Bearer wrong" })).status).toBe(401);
    expect((await post(body2, { "ferry-signature": `t=${t},v1=${"0".repeat(64)}` })).status).toBe(401);
    const old = t - 3600;
    expect((await post(body2, { "ferry-signature": `t=${old},v1=${createHmac("sha256", secret).update(`${old}.${body2}`).digest("hex")}` })).status).toBe(401);
    expect((await fetch(url, { method: "POST", body: new Uint8Array(1024 * 1024 + 1), headers: { authorization: `Bearer ${secret}` } })).status).toBe(413);

    const visible = async () => (await readdir(join(dir, "in"))).filter((n) => !n.startsWith(".")).sort();
    await waitFor("both orders at the plant", async () => (await visible()).length === 2);
    expect(await visible()).toEqual(["order-1.json", "order-2.json"]);
    expect(await readFile(join(dir, "in", "order-1.json"), "utf8")).toBe('{"order":1}');
  });

  it("egress: the edge delivers to the endpoint, retries until 2xx, signs each request and logs each answer", async () => {
    const added = ferry(["admin", "hosted", "egress", "add", "saas/inbox", "--url", saasUrl, "--secret", "s3cret-signing-key-0123", "--json"], env);
    expect(added.code, added.stderr).toBe(0);
    expect(ferry(["admin", "route", "add", "plant/data", "saas/inbox"], env).code).toBe(0);
    await writeFile(join(dir, "out", ".report.csv.tmp"), "line,1\n");
    await rename(join(dir, "out", ".report.csv.tmp"), join(dir, "out", "report.csv"));

    await waitFor("a successful delivery to the SaaS", () => hits.some((h) => h.status === 200), 60_000, 200).catch((e) => {
      console.log("HITS", hits.length, "PLANT", JSON.stringify(procs[0]?.lines.slice(-8)), "EDGE", edge.logs.slice(-2000));
      throw e;
    });
    expect(hits.map((h) => h.status)).toEqual([503, 503, 200]);
    const ok = hits[2] as (typeof hits)[number];
    expect(ok.body.toString()).toBe("line,1\n");
    expect(ok.headers).toMatchObject({ "ferry-source": "plant/data", "ferry-filename": "report.csv", "ferry-sha256": createHash("sha256").update("line,1\n").digest("hex") });
    expect(ok.headers["idempotency-key"]).toBe(hits[0]?.headers["idempotency-key"]);
    const [, t, v1] = /^t=(\d+),v1=([0-9a-f]{64})$/.exec(String(ok.headers["ferry-signature"])) ?? [];
    expect(v1).toBe(createHmac("sha256", "s3cret-signing-key-0123").update(`${t}.`).update(ok.body).digest("hex"));

    const id = String(ok.headers["ferry-message-id"]);
    await waitFor("the delivery in the log", () => (JSON.parse(ferry(["admin", "trace", id, "--json"], env).stdout) as { events: { type: string }[] }).events.some((e) => e.type === "delivered"));
    const trace = JSON.parse(ferry(["admin", "trace", id, "--json"], env).stdout) as { events: { type: string; detail: { http?: number } | null }[] };
    expect(trace.events.filter((e) => e.type === "attempt").map((e) => e.detail?.http)).toEqual([503, 503]);
    expect(trace.events.find((e) => e.type === "delivered")?.detail).toMatchObject({ http: 200, url: saasUrl });
    const listed = JSON.parse(ferry(["admin", "hosted", "list", "--json"], env).stdout) as { hosted: { address: string; kind: string }[] };
    expect(listed.hosted.map((h) => `${h.kind}:${h.address}`).sort()).toEqual(["egress:saas/inbox", "ingress:saas/events"]);
  });

  it("egress: streams a large payload from R2 with its length and a signature over every byte, whatever its size", async () => {
    // More than the object's memory could hold twice, and past the 64 MiB hosted egress was once capped at.
    const size = 150 * 1024 * 1024 + 7;
    const bytes = randomBytes(size);
    await writeFile(join(dir, "out", ".export.bin.tmp"), bytes);
    await rename(join(dir, "out", ".export.bin.tmp"), join(dir, "out", "export.bin"));
    const big = () => hits.find((h) => h.headers["ferry-filename"] === "export.bin" && h.status === 200);
    await waitFor("the large payload at the SaaS", () => big() !== undefined, 150_000, 200);
    const hit = big() as (typeof hits)[number];
    expect(hit.body.byteLength).toBe(size);
    expect(hit.headers["content-length"]).toBe(String(size));
    const sha = createHash("sha256").update(bytes).digest("hex");
    expect(createHash("sha256").update(hit.body).digest("hex")).toBe(sha);
    expect(hit.headers["ferry-sha256"]).toBe(sha);
    const [, t, v1] = /^t=(\d+),v1=([0-9a-f]{64})$/.exec(String(hit.headers["ferry-signature"])) ?? [];
    expect(v1).toBe(createHmac("sha256", "s3cret-signing-key-0123").update(`${t}.`).update(hit.body).digest("hex"));
  });
});
