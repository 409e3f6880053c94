import { mkdtemp, readdir, readFile, rename, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort, LocalEdge } from "../helpers/edge.ts";
import { ConnectorProcess, ferry } from "../helpers/cli.ts";
import { waitFor } from "../helpers/wait.ts";

/**
 * Store and forward, fan-out, time to live and fail-over, with real
 * connector processes: an offline destination holds nobody back, gets its
 * messages when it returns, and what outlives its TTL becomes a dead letter
 * that the sender hears about and an admin can re-drive.
 */
describe("store and forward, fan-out and time to live", () => {
  let edge: LocalEdge;
  let dir: string;
  let env: Record<string, string>;
  const procs: ConnectorProcess[] = [];

  const visible = async (d: string) => (await readdir(d).catch(() => [] as string[])).filter((n) => !n.startsWith(".")).sort();
  const drop = async (side: string, name: string, body: string) => {
    await writeFile(join(dir, `${side}-out`, `.${name}.tmp`), body);
    await rename(join(dir, `${side}-out`, `.${name}.tmp`), join(dir, `${side}-out`, name));
  };
  const start = (side: string) => {
    const p = new ConnectorProcess(join(dir, `${side}.toml`));
    procs.push(p);
    return p;
  };

  beforeAll(async () => {
    edge = await LocalEdge.start();
    dir = await mkdtemp(join(tmpdir(), "ferry-saf-"));
    env = { FERRY_EDGE: edge.url, FERRY_ADMIN_TOKEN: edge.adminToken };
    const deadEdge = `http://127.0.0.1:${await freePort()}`;
    for (const side of ["hub", "fast", "slow", "late"]) {
      const token = (JSON.parse(ferry(["admin", "connector", "add", side, "--json"], env).stdout) as { enrolToken: string }).enrolToken;
      expect(ferry(["connector", "enroll", "--edge", edge.url, "--token", token, "--state", join(dir, `${side}-state`)], env).code).toBe(0);
      // The hub lists an edge that is down first: it must fail over to the live one.
      const edges = side === "hub" ? `edges = ["${deadEdge}", "${edge.url}"]\n` : "";
      await writeFile(
        join(dir, `${side}.toml`),
        `state = "./${side}-state"\n${edges}log = "json"\n[[channels]]\nname = "feed"\nprotocol = "file"\noutbox = "./${side}-out"\ninbox = "./${side}-in"\npoll_ms = 50\n`,
      );
    }
  });

  afterAll(async () => {
    await Promise.all(procs.map((p) => p.stop()));
    await edge?.close();
  });

  it("fans out to every destination independently; an offline one catches up in order when it returns", async () => {
    expect(ferry(["admin", "route", "add", "hub/feed", "fast/feed"], env).code).toBe(0);
    expect(ferry(["admin", "route", "add", "hub/feed", "slow/feed"], env).code).toBe(0);
    const hub = start("hub");
    const fast = start("fast");
    await Promise.all([hub.connected(), fast.connected()]);
    expect(hub.lines.some((l) => l.msg === "connection error" || l.msg === "edge refused the connection" || l.msg === "redialling")).toBe(true);

    const names = Array.from({ length: 30 }, (_, i) => `f-${String(i).padStart(2, "0")}.txt`);
    for (const n of names) await drop("hub", n, `content of ${n}`);
    await waitFor("all files at the online destination", async () => (await visible(join(dir, "fast-in"))).length === names.length);
    // Slow is offline: nothing there, and it held nothing back.
    expect(await visible(join(dir, "slow-in"))).toEqual([]);

    const slow = start("slow");
    await waitFor("the offline destination to catch up", async () => (await visible(join(dir, "slow-in"))).length === names.length);
    expect(await visible(join(dir, "slow-in"))).toEqual(names);
    for (const n of names) expect(await readFile(join(dir, "slow-in", n), "utf8")).toBe(`content of ${n}`);
    // A delivery is logged just after its rename: wait for the lines, not only the files.
    await waitFor("the deliveries logged", async () => slow.lines.filter((l) => l.msg === "delivered").length >= names.length);
    const order = slow.lines.filter((l) => l.msg === "delivered").map((l) => String(l.path).slice(-8));
    expect(order).toEqual(names);
  });

  it("expires what waits past its TTL into dead letters, sends a negative receipt, and re-drives on request", async () => {
    expect(ferry(["admin", "route", "add", "hub/feed", "late/feed", "--ttl", "2s"], env).code).toBe(0);
    await drop("hub", "urgent.txt", "urgent");
    // late is offline: after two seconds the message expires at the edge.
    const dead = await waitFor(
      "a dead letter for late/feed",
      () => {
        const r = JSON.parse(ferry(["admin", "dead-letters", "--destination", "late/feed", "--json"], env).stdout) as { deadLetters: { id: string; fields: { filename: string }; reason: string }[] };
        return r.deadLetters.length > 0 ? r.deadLetters : undefined;
      },
      60_000,
      500,
    );
    expect(dead).toHaveLength(1);
    expect(dead[0]).toMatchObject({ reason: "expired", fields: { filename: "urgent.txt" } });
    // The sender is told (a negative receipt) and the event log has it.
    await waitFor("an expired receipt at the sender", () => {
      const st = JSON.parse(ferry(["connector", "status", "--config", join(dir, "hub.toml"), "--json"], env).stdout) as { receipts: { status: string; destination: string }[] };
      return st.receipts.some((r) => r.status === "expired" && r.destination === "late/feed");
    });
    const trace = JSON.parse(ferry(["admin", "trace", dead[0]?.id as string, "--json"], env).stdout) as { events: { type: string; destination: string | null }[] };
    expect(trace.events.map((e) => e.type)).toContain("expired");
    // The other destinations got it as usual.
    await waitFor("urgent.txt at fast", async () => (await visible(join(dir, "fast-in"))).includes("urgent.txt"));

    // A later message on the same stream is delivered after the expired position is skipped.
    const redrive = ferry(["admin", "dead-letters", "redrive", "--source", "hub/feed", "--destination", "late/feed", "--json"], env);
    expect(JSON.parse(redrive.stdout)).toEqual({ action: "redrive", count: 1 });
    await drop("hub", "after.txt", "after");
    await waitFor("after.txt accepted for late", () => {
      const log = JSON.parse(ferry(["admin", "messages", "--source", "hub/feed", "--type", "accepted", "--json"], env).stdout) as { events: { fields: { filename?: string } | null }[] };
      return log.events.some((e) => e.fields?.filename === "after.txt");
    });
    const late = start("late");
    await waitFor("late to receive the re-driven and the new message", async () => (await visible(join(dir, "late-in"))).length === 2);
    // The original, expired position is passed over; the re-driven copy has a new position at the end of the stream.
    expect(await visible(join(dir, "late-in"))).toEqual(["after.txt", "urgent.txt"]);
    expect(late.lines.some((l) => l.msg === "positions expired at the edge were skipped (see the dead letters there)")).toBe(true);
    expect(JSON.parse(ferry(["admin", "dead-letters", "--json"], env).stdout)).toEqual({ deadLetters: [] });
  });
});
