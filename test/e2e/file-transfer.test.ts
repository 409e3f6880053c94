import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, readdir, readFile, rename, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LocalEdge } from "../helpers/edge.ts";
import { ConnectorProcess, ferry } from "../helpers/cli.ts";
import { waitFor } from "../helpers/wait.ts";

/**
 * The first path, for real: the local network as `npm start` runs it, two
 * connectors enrolled and run by the `ferry` CLI as separate processes,
 * real files dropped in A's outbox, checked byte for byte in B's inbox.
 */
describe("a file dropped at A arrives at B", () => {
  let edge: LocalEdge;
  let dir: string;
  let env: Record<string, string>;
  const procs: ConnectorProcess[] = [];

  beforeAll(async () => {
    edge = await LocalEdge.start();
    dir = await mkdtemp(join(tmpdir(), "ferry-e2e-"));
    env = { FERRY_EDGE: edge.url, FERRY_ADMIN_TOKEN: edge.adminToken };
  });

  afterAll(async () => {
    await Promise.all(procs.map((p) => p.stop()));
    await edge?.close();
  });

  it("sets up with the admin CLI, enrols, routes and moves files byte-identical, exactly once", async () => {
    for (const name of ["site-a", "site-b"]) {
      const add = ferry(["admin", "connector", "add", name, "--json"], env);
      expect(add.code, add.stderr).toBe(0);
      const token = (JSON.parse(add.stdout) as { enrolToken: string }).enrolToken;
      const enrol = ferry(["connector", "enroll", "--edge", edge.url, "--token", token, "--state", join(dir, `${name}-state`), "--json"], env);
      expect(enrol.code, enrol.stderr).toBe(0);
      expect(JSON.parse(enrol.stdout)).toMatchObject({ connector: name, tenant: "default" });
    }
    const route = ferry(["admin", "route", "add", "site-a/orders", "site-b/orders", "--json"], env);
    expect(route.code, route.stderr).toBe(0);

    for (const side of ["a", "b"]) {
      await writeFile(
        join(dir, `${side}.toml`),
        `state = "./site-${side}-state"\nlog = "json"\n\n[[channels]]\nname = "orders"\nprotocol = "file"\noutbox = "./${side}-out"\ninbox = "./${side}-in"\npoll_ms = 50\n`,
      );
      procs.push(new ConnectorProcess(join(dir, `${side}.toml`)));
    }
    await Promise.all(procs.map((p) => p.connected()));

    // Sizes from empty to near the inline limit, plus names with spaces and unicode.
    const files = new Map<string, Buffer>();
    const sizes = [0, 1, 100, 4096, 65_536, 900_000];
    for (let i = 0; i < 40; i++) files.set(`order-${String(i).padStart(3, "0")}.csv`, randomBytes(sizes[i % sizes.length] as number));
    files.set("Lieferschein März.txt", Buffer.from("Grüße aus München\n"));
    for (const [name, body] of files) {
      // Atomic rename into the outbox, the way applications should hand files over.
      await writeFile(join(dir, "a-out", `.${name}.tmp`), body);
      await rename(join(dir, "a-out", `.${name}.tmp`), join(dir, "a-out", name));
    }

    await waitFor(`${files.size} files in B's inbox`, async () => (await readdir(join(dir, "b-in"))).filter((n) => !n.startsWith(".")).length >= files.size, 60_000);
    const arrived = (await readdir(join(dir, "b-in"))).filter((n) => !n.startsWith("."));
    expect(arrived.sort()).toEqual([...files.keys()].sort());
    for (const [name, body] of files) {
      const got = await readFile(join(dir, "b-in", name));
      expect(createHash("sha256").update(got).digest("hex"), name).toBe(createHash("sha256").update(body).digest("hex"));
    }
    // Sources are released once captured; no temporary files are left in the inbox.
    await waitFor("A's outbox to be empty", async () => (await readdir(join(dir, "a-out"))).length === 0);
    const tmpLeft = await readdir(join(dir, "b-in", ".ferry-tmp")).catch(() => []);
    expect(tmpLeft).toEqual([]);

    // Every message is in the event log: accepted once, delivered once.
    await waitFor("the event log to show every delivery", async () => {
      const log = ferry(["admin", "messages", "--type", "delivered", "--limit", "1000", "--json"], env);
      return (JSON.parse(log.stdout) as { events: unknown[] }).events.length === files.size;
    });
    const accepted = JSON.parse(ferry(["admin", "messages", "--type", "accepted", "--limit", "1000", "--json"], env).stdout) as { events: { messageId: string }[] };
    expect(new Set(accepted.events.map((e) => e.messageId)).size).toBe(files.size);
    expect(accepted.events.length).toBe(files.size);

    // The sender learns of delivery through receipts, and shows it in its status.
    await waitFor("receipts at A", async () => {
      const st = ferry(["connector", "status", "--config", join(dir, "a.toml"), "--json"], env);
      const s = JSON.parse(st.stdout) as { connected: boolean; receipts: { count: number }[]; channels: { orders: { backlog: { count: number } } } };
      return s.connected && s.channels.orders.backlog.count === 0 && s.receipts.reduce((n, r) => n + r.count, 0) === files.size;
    });
  });

  it("traces one message through its whole path", async () => {
    const log = JSON.parse(ferry(["admin", "messages", "--type", "delivered", "--limit", "1", "--json"], env).stdout) as { events: { messageId: string }[] };
    const id = log.events[0]?.messageId as string;
    const trace = ferry(["admin", "trace", id, "--json"], env);
    expect(trace.code, trace.stderr).toBe(0);
    const t = JSON.parse(trace.stdout) as { events: { type: string; source: string; destination: string | null }[] };
    expect(t.events.map((e) => e.type)).toEqual(["captured", "accepted", "delivered"]);
    expect(t.events[2]).toMatchObject({ source: "site-a/orders", destination: "site-b/orders" });
    const human = ferry(["admin", "trace", id], env);
    expect(human.stdout).toContain("delivered");
    // Non-repudiation: B signed what it received; the edge checks it, A kept it.
    expect(human.stdout).toContain("receipt from site-b/orders: signed by site-b, verified");
    const kept = (await readFile(join(dir, "site-a-state", "receipts.jsonl"), "utf8")).trim().split("\n").map((l) => JSON.parse(l) as { verified: boolean; edgeVerified: boolean; ids: string[] });
    expect(kept.every((k) => k.verified && k.edgeVerified)).toBe(true);
    expect(kept.flatMap((k) => k.ids)).toContain(id);
  });

  it("verifies the log's hash chains and exports it, from the CLI", async () => {
    const v = ferry(["admin", "verify-log", "--json"], env);
    expect(v.code, v.stdout + v.stderr).toBe(0);
    expect(JSON.parse(v.stdout)).toMatchObject({ ok: true, chains: [{ chain: "default:site-a/orders", broken: null }] });
    const csv = ferry(["admin", "messages", "--source", "site-a/orders", "--format", "csv"], env);
    expect(csv.stdout.trim().split("\n").filter((l) => /^"[^"]*","(captured|accepted|delivered)"/.test(l)).length).toBe(3 * 41);
    const byName = JSON.parse(ferry(["admin", "messages", "--field", "filename:Lieferschein März.txt", "--json"], env).stdout) as { events: { type: string }[] };
    expect(byName.events.map((e) => e.type).sort()).toEqual(["accepted", "captured", "delivered"]);
  });

  it("runs the five-minute tour against the same edge", async () => {
    const demo = ferry(["demo", "--json"], env);
    expect(demo.code, demo.stderr + demo.stdout).toBe(0);
    expect(JSON.parse(demo.stdout)).toMatchObject({ ok: true });
  });
});
