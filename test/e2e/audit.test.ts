import { mkdtemp, readdir, readFile, rename, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LocalEdge } from "../helpers/edge.ts";
import { ConnectorProcess, ferry } from "../helpers/cli.ts";
import { waitFor } from "../helpers/wait.ts";

/**
 * The compliance officer's questions, answered from the CLI: what left, when,
 * to whom, where it was stored; its archive and envelope; proof the log was
 * not altered.
 */
describe("audit from the CLI", () => {
  let edge: LocalEdge;
  let dir: string;
  let env: Record<string, string>;
  const procs: ConnectorProcess[] = [];

  beforeAll(async () => {
    edge = await LocalEdge.start();
    dir = await mkdtemp(join(tmpdir(), "ferry-audit-"));
    env = { FERRY_EDGE: edge.url, FERRY_ADMIN_TOKEN: edge.adminToken };
    for (const name of ["erp", "partner"]) {
      const token = (JSON.parse(ferry(["admin", "connector", "add", name, "--json"], env).stdout) as { enrolToken: string }).enrolToken;
      expect(ferry(["connector", "enroll", "--edge", edge.url, "--token", token, "--state", join(dir, `${name}-state`)], env).code).toBe(0);
      await writeFile(join(dir, `${name}.toml`), `state = "./${name}-state"\nlog = "json"\n[[channels]]\nname = "invoices"\nprotocol = "file"\noutbox = "./${name}-out"\ninbox = "./${name}-in"\npoll_ms = 50\n`);
      procs.push(new ConnectorProcess(join(dir, `${name}.toml`)));
    }
    await Promise.all(procs.map((p) => p.connected()));
  });

  afterAll(async () => {
    await Promise.all(procs.map((p) => p.stop()));
    await edge?.close();
  });

  it("sets a route's log level from the CLI, names a wrong one, and changes it in place", () => {
    const bad = ferry(["admin", "route", "add", "meter/readings", "lake/readings", "--log", "none"], env);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("--log: log is 'full' (every message's lifecycle) or 'exceptions'");
    const added = ferry(["admin", "route", "add", "meter/readings", "lake/readings", "--log", "exceptions", "--json"], env);
    expect(added.code, added.stderr).toBe(0);
    const route = (JSON.parse(added.stdout) as { route: { id: string; log: string } }).route;
    expect(route.log).toBe("exceptions");
    expect(ferry(["admin", "route", "list"], env).stdout).toMatch(new RegExp(`${route.id}.*exceptions`));
    expect(ferry(["admin", "route", "set", route.id], env).code).toBe(2);
    const set = ferry(["admin", "route", "set", route.id, "--log", "full", "--json"], env);
    expect(set.code, set.stderr).toBe(0);
    expect(JSON.parse(set.stdout)).toMatchObject({ route: { id: route.id, log: "full" } });
  });

  it("archives in the route's region, and shows timeline, archive, envelope and an intact chain", async () => {
    const route = ferry(["admin", "route", "add", "erp/invoices", "partner/invoices", "--archive", "--retention", "30d", "--region", "eu", "--json"], env);
    expect(route.code, route.stderr).toBe(0);
    expect(JSON.parse(route.stdout)).toMatchObject({ route: { archive: true, retention: 2_592_000, region: "eu" } });
    const refused = ferry(["admin", "route", "add", "erp/invoices", "other/invoices"], env);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/pinned to 'eu'/);

    await writeFile(join(dir, "erp-out", ".inv-2026-0042.xml.tmp"), "<invoice total='1200.00'/>");
    await rename(join(dir, "erp-out", ".inv-2026-0042.xml.tmp"), join(dir, "erp-out", "inv-2026-0042.xml"));
    await waitFor("the invoice at the partner", async () => (await readdir(join(dir, "partner-in"))).includes("inv-2026-0042.xml"));

    const found = await waitFor("the archived event", () => {
      const r = JSON.parse(ferry(["admin", "messages", "--field", "filename:inv-2026-0042.xml", "--type", "archived", "--json"], env).stdout) as { events: { messageId: string; detail: { bucket: string; region: string } }[] };
      return r.events[0];
    });
    expect(found.detail).toMatchObject({ bucket: "ARCHIVE_EU", region: "eu" });
    const id = found.messageId;
    await waitFor("delivery in the log", () => JSON.parse(ferry(["admin", "trace", id, "--json"], env).stdout).events.some((e: { type: string }) => e.type === "delivered"));
    const trace = JSON.parse(ferry(["admin", "trace", id, "--json"], env).stdout) as { events: { type: string }[] };
    expect(trace.events.map((e) => e.type).sort()).toEqual(["accepted", "archived", "captured", "delivered"]);

    const out = join(dir, "archived.bin");
    expect(ferry(["admin", "archive", id, "--output", out], env).code).toBe(0);
    expect(await readFile(out, "utf8")).toBe("<invoice total='1200.00'/>");
    const xml = ferry(["admin", "archive", id, "--envelope", "xml"], env);
    expect(xml.stdout).toContain('<field name="filename">inv-2026-0042.xml</field>');
    expect(xml.stdout).toContain("<destination>partner/invoices</destination>");
    const verify = ferry(["admin", "verify-log"], env);
    expect(verify.code, verify.stdout).toBe(0);
    expect(verify.stdout).toMatch(/^ok: 1 chain verified/);
  });
});
