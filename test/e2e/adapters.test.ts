import { createServer, type IncomingHttpHeaders, type Server } from "node:http";
import { mkdtemp, readdir, readFile, rename, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort, LocalEdge } from "../helpers/edge.ts";
import { ConnectorProcess, ferry } from "../helpers/cli.ts";
import { waitFor } from "../helpers/wait.ts";

/**
 * Every adapter pairing with real connector processes: the sending protocol
 * and the receiving protocol are independent (a file dropped at A arrives
 * as a webhook POST at B, a POST at A as a file or a command run at B).
 */
describe("channel adapters", () => {
  let edge: LocalEdge;
  let dir: string;
  let env: Record<string, string>;
  let hook: Server;
  const hits: { headers: IncomingHttpHeaders; body: string; status: number }[] = [];
  let ingress = "";
  let ingress2 = "";
  let health = "";
  const procs: ConnectorProcess[] = [];

  beforeAll(async () => {
    edge = await LocalEdge.start();
    dir = await mkdtemp(join(tmpdir(), "ferry-adapters-"));
    env = { FERRY_EDGE: edge.url, FERRY_ADMIN_TOKEN: edge.adminToken };
    // The application's webhook: the first delivery fails with a 500, to show retries.
    hook = createServer((req, res) => {
      let body = "";
      req.on("data", (c: Buffer) => (body += c.toString()));
      req.on("end", () => {
        const status = hits.length === 0 ? 500 : 204;
        hits.push({ headers: req.headers, body, status });
        res.writeHead(status).end();
      });
    });
    await new Promise<void>((r) => hook.listen(0, "127.0.0.1", r));
    const hookPort = (hook.address() as { port: number }).port;
    ingress = `127.0.0.1:${await freePort()}`;
    ingress2 = `127.0.0.1:${await freePort()}`;
    health = `127.0.0.1:${await freePort()}`;
    // The legacy command: appends what it got; fails its very first run.
    await writeFile(
      join(dir, "import.mjs"),
      `import { appendFileSync, existsSync, writeFileSync } from "node:fs";
       let data = ""; process.stdin.on("data", (c) => (data += c)); process.stdin.on("end", () => {
         if (!existsSync("${dir}/failed-once")) { writeFileSync("${dir}/failed-once", ""); console.error("database locked"); process.exit(3); }
         appendFileSync("${dir}/imported.txt", JSON.stringify({ id: process.env.FERRY_MESSAGE_ID, seq: process.env.FERRY_SEQUENCE, redelivery: process.env.FERRY_REDELIVERY, file: process.env.FERRY_FILENAME, data }) + "\\n");
       });`,
    );
    for (const name of ["src", "dst"]) {
      const token = (JSON.parse(ferry(["admin", "connector", "add", name, "--json"], env).stdout) as { enrolToken: string }).enrolToken;
      expect(ferry(["connector", "enroll", "--edge", edge.url, "--token", token, "--state", join(dir, `${name}-state`)], env).code).toBe(0);
    }
    for (const [s, d] of [["src/files", "dst/hook"], ["src/api", "dst/drop"], ["src/api2", "dst/run"]]) {
      expect(ferry(["admin", "route", "add", s as string, d as string], env).code).toBe(0);
    }
    await writeFile(
      join(dir, "src.toml"),
      `state = "./src-state"\nlog = "json"\nhealth = "${health}"\n\n[[channels]]\nname = "files"\nprotocol = "file"\noutbox = "./src-out"\npoll_ms = 50\n\n[[channels]]\nname = "api"\nprotocol = "http"\nlisten = "${ingress}"\n\n[[channels]]\nname = "api2"\nprotocol = "http"\nlisten = "${ingress2}"\n`,
    );
    await writeFile(
      join(dir, "dst.toml"),
      `state = "./dst-state"\nlog = "json"\n\n[[channels]]\nname = "hook"\nprotocol = "http"\nwebhook = "http://127.0.0.1:${hookPort}/ferry"\nmax_backoff_ms = 200\n\n[[channels]]\nname = "drop"\nprotocol = "file"\ninbox = "./dst-in"\n\n[[channels]]\nname = "run"\nprotocol = "exec"\ncommand = ["node", "import.mjs"]\nmax_backoff_ms = 200\n`,
    );
    procs.push(new ConnectorProcess(join(dir, "src.toml")), new ConnectorProcess(join(dir, "dst.toml")));
    await Promise.all(procs.map((p) => p.connected()));
  });

  afterAll(async () => {
    await Promise.all(procs.map((p) => p.stop()));
    await new Promise((r) => hook?.close(r));
    await edge?.close();
  });

  it("file -> webhook: POSTed with the message id as idempotency key, retried until 2xx", async () => {
    await writeFile(join(dir, "src-out", ".order.json.tmp"), '{"order":42}');
    await rename(join(dir, "src-out", ".order.json.tmp"), join(dir, "src-out", "order.json"));
    await waitFor("a successful webhook delivery", () => hits.some((h) => h.status === 204));
    expect(hits.map((h) => h.status)).toEqual([500, 204]);
    const ok = hits[1];
    expect(ok?.body).toBe('{"order":42}');
    expect(ok?.headers["idempotency-key"]).toBe(hits[0]?.headers["idempotency-key"]);
    expect(ok?.headers).toMatchObject({ "ferry-source": "src/files", "ferry-filename": "order.json", "ferry-sequence": "1", "ferry-redelivery": "false" });
  });

  it("http -> file: the ingress answers only after capture, and an Idempotency-Key makes a retried POST safe", async () => {
    const post = (key: string) => fetch(`http://${ingress}/`, { method: "POST", body: "a,b\n1,2\n", headers: { "ferry-filename": "table.csv", "idempotency-key": key, "content-type": "text/csv" } });
    const first = await post("k-1");
    expect(first.status).toBe(202);
    const a = (await first.json()) as { id: string; seq: number };
    const again = await post("k-1");
    expect(again.status).toBe(200);
    expect(await again.json()).toMatchObject({ id: a.id, duplicate: true });
    await waitFor("table.csv at the destination", async () => (await readdir(join(dir, "dst-in"))).includes("table.csv"));
    expect(await readFile(join(dir, "dst-in", "table.csv"), "utf8")).toBe("a,b\n1,2\n");
    expect((await readdir(join(dir, "dst-in"))).filter((n) => !n.startsWith("."))).toEqual(["table.csv"]);
    // The ingress refuses what it cannot take, saying why.
    expect((await fetch(`http://${ingress}/`)).status).toBe(405);
    const big = await fetch(`http://${ingress}/`, { method: "POST", body: new Uint8Array(1024 * 1024 + 1) });
    expect(big.status).toBe(413);
  });

  it("http -> exec: the command gets the payload on stdin and the envelope in its environment, retried on failure", async () => {
    const res = await fetch(`http://${ingress2}/`, { method: "POST", body: "INSERT 1", headers: { "ferry-filename": "batch-1.sql" } });
    expect(res.status).toBe(202);
    const { id } = (await res.json()) as { id: string };
    const line = await waitFor("the command to import the message", async () => (await readFile(join(dir, "imported.txt"), "utf8").catch(() => "")).trim() || undefined);
    expect(JSON.parse(line)).toEqual({ id, seq: "1", redelivery: "false", file: "batch-1.sql", data: "INSERT 1" });
    const dst = procs[1] as ConnectorProcess;
    expect(dst.lines.some((l) => l.msg === "command failed; retrying" && String(l.error).includes("exited 3: database locked"))).toBe(true);
  });

  it("sends one-off from the shell, through the running connector's outbox", async () => {
    await writeFile(join(dir, "note.txt"), "from the shell");
    const r = ferry(["connector", "send", "--config", join(dir, "src.toml"), "--channel", "files", join(dir, "note.txt"), "--json"], env);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ via: "outbox", channel: "files" });
    await waitFor("the shell's message at the webhook", () => hits.some((h) => h.body === "from the shell"));
  });

  it("reports health, readiness and Prometheus metrics on loopback", async () => {
    expect((await fetch(`http://${health}/healthz`)).status).toBe(200);
    const ready = await fetch(`http://${health}/readyz`);
    expect(ready.status).toBe(200);
    const metrics = await (await fetch(`http://${health}/metrics`)).text();
    expect(metrics).toMatch(/ferry_connected 1/);
    expect(metrics).toMatch(/ferry_messages_captured_total\{channel="api"\} 1/);
    expect(metrics).toMatch(/ferry_backlog_messages\{channel="files"\} 0/);
  });
});
