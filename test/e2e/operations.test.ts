import { chmod, mkdtemp, readdir, readFile, rename, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort, LocalEdge } from "../helpers/edge.ts";
import { ConnectorProcess, ferry } from "../helpers/cli.ts";
import { ConnectProxy } from "../helpers/connect-proxy.ts";
import { waitFor } from "../helpers/wait.ts";
import { RawPeer } from "../helpers/raw-peer.ts";
import type { Identity } from "../../connector/identity/identity.ts";

/** Operating a connector: doctor, config mistakes, reload on SIGHUP, stop under load, corporate proxies. */
describe("operating a connector", () => {
  let edge: LocalEdge;
  let dir: string;
  let env: Record<string, string>;
  const procs: ConnectorProcess[] = [];
  const visible = async (d: string) => (await readdir(d).catch(() => [] as string[])).filter((n) => !n.startsWith("."));
  const conf = (name: string, extra = "", channels = `[[channels]]\nname = "in"\nprotocol = "file"\noutbox = "./${name}-out"\ninbox = "./${name}-in"\npoll_ms = 50\n`) =>
    writeFile(join(dir, `${name}.toml`), `state = "./${name}-state"\nlog = "json"\n${extra}\n${channels}`);
  const enrol = (name: string) => {
    const token = (JSON.parse(ferry(["admin", "connector", "add", name, "--json"], env).stdout) as { enrolToken: string }).enrolToken;
    const r = ferry(["connector", "enroll", "--edge", edge.url, "--token", token, "--state", join(dir, `${name}-state`)], env);
    expect(r.code, r.stderr).toBe(0);
  };
  const start = (name: string, extraEnv: Record<string, string> = {}) => {
    const p = new ConnectorProcess(join(dir, `${name}.toml`), extraEnv);
    procs.push(p);
    return p;
  };
  const drop = async (name: string, file: string, body: string) => {
    await writeFile(join(dir, `${name}-out`, `.${file}.tmp`), body);
    await rename(join(dir, `${name}-out`, `.${file}.tmp`), join(dir, `${name}-out`, file));
  };

  beforeAll(async () => {
    edge = await LocalEdge.start();
    dir = await mkdtemp(join(tmpdir(), "ferry-ops-"));
    env = { FERRY_EDGE: edge.url, FERRY_ADMIN_TOKEN: edge.adminToken };
    for (const n of ["ops-a", "ops-b"]) enrol(n);
    expect(ferry(["admin", "route", "add", "ops-a/in", "ops-b/in"], env).code).toBe(0);
  });

  afterAll(async () => {
    await Promise.all(procs.map((p) => p.stop()));
    await edge?.close();
  });

  it("names the bad field of a broken config and exits 2, before touching anything", async () => {
    await writeFile(join(dir, "bad.toml"), `state = "./x"\n[[channels]]\nname = "in"\nprotocol = "http"\nlisten = "0.0.0.0:8080"\n`);
    const r = ferry(["connector", "run", "--config", join(dir, "bad.toml")], env);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/bad\.toml: channels\[0\]\.listen: listen on loopback only/);
    const typo = ferry(["connector", "run", "--config", join(dir, "nope.toml")], env);
    expect(typo.code).toBe(2);
    expect(typo.stderr).toMatch(/nope\.toml: \(file\): cannot read the config file: ENOENT/);
    // A valid config whose state folder was never enrolled: a set-up problem (2), saying how to enrol.
    await conf("never");
    const unenrolled = ferry(["connector", "run", "--config", join(dir, "never.toml")], env);
    expect(unenrolled.code, unenrolled.stderr).toBe(2);
    expect(unenrolled.stderr).toContain(`${join(dir, "never-state")} holds no identity: this connector is not enrolled yet`);
    expect(unenrolled.stderr).toContain(`run 'ferry connector enroll --edge URL --token T --state ${join(dir, "never-state")}'`);
    // --json is refused, not ignored: run prints logs, and the config says their format.
    const json = ferry(["connector", "run", "--config", join(dir, "never.toml"), "--json"], env);
    expect(json.code).toBe(2);
    expect(json.stderr).toMatch(/--json: 'run' prints logs, not a result; for JSON lines set log = "json"/);
  });

  it("doctor says what is fine and what to fix", async () => {
    await conf("ops-a");
    const good = ferry(["connector", "doctor", "--config", join(dir, "ops-a.toml"), "--json"], env);
    const g = JSON.parse(good.stdout) as { ok: boolean; checks: { check: string; ok: boolean }[] };
    expect(g.checks.filter((c) => !c.ok), good.stdout).toEqual([]);
    expect(good.code).toBe(0);
    expect(g.checks.map((c) => c.check)).toEqual(expect.arrayContaining(["config", "state folder", "identity", "channel in", "edge", "clock", "enrolment"]));

    // Broken on purpose: a readable key, a missing command, an edge that is down.
    await chmod(join(dir, "ops-a-state", "identity.json"), 0o644);
    await conf("ops-a", `edges = ["http://127.0.0.1:${await freePort()}"]`, `[[channels]]\nname = "run"\nprotocol = "exec"\ncommand = ["/nonexistent/import"]\n`);
    const bad = ferry(["connector", "doctor", "--config", join(dir, "ops-a.toml")], env);
    expect(bad.code).toBe(1);
    expect(bad.stdout).toMatch(/FAIL identity .*readable by others[\s\S]*fix: chmod 600/);
    expect(bad.stdout).toMatch(/FAIL channel run .*\/nonexistent\/import is not found[\s\S]*fix:/);
    expect(bad.stdout).toMatch(/FAIL edge .*unreachable \(ECONNREFUSED\)[\s\S]*fix:/);
    await chmod(join(dir, "ops-a-state", "identity.json"), 0o600);
    await conf("ops-a");
  });

  it("reloads its config on SIGHUP: a new channel starts, a broken file changes nothing", async () => {
    await conf("ops-b");
    const b = start("ops-b");
    await b.connected();
    expect(ferry(["admin", "route", "add", "ops-a/extra", "ops-b/extra"], env).code).toBe(0);
    // A broken edit first: refused, the running channels carry on.
    await writeFile(join(dir, "ops-b.toml"), `state = "./ops-b-state"\n[[channels]]\nname = "in"\nprotocol = "fax"\n`);
    b.proc.kill("SIGHUP");
    await waitFor("the refusal", () => b.lines.some((l) => l.msg === "reload refused: the config has an error; still running the previous one"));
    await conf("ops-b", "", `[[channels]]\nname = "in"\nprotocol = "file"\ninbox = "./ops-b-in"\n\n[[channels]]\nname = "extra"\nprotocol = "file"\ninbox = "./ops-b-extra"\n`);
    b.proc.kill("SIGHUP");
    await waitFor("the reload", () => b.lines.find((l) => l.msg === "configuration reloaded"));
    expect(b.lines.find((l) => l.msg === "configuration reloaded")).toMatchObject({ added: ["extra"], changed: ["in"], removed: [] });

    await conf("ops-a", "", `[[channels]]\nname = "extra"\nprotocol = "file"\noutbox = "./ops-a-extra-out"\npoll_ms = 50\n\n[[channels]]\nname = "in"\nprotocol = "file"\noutbox = "./ops-a-out"\npoll_ms = 50\n`);
    const a = start("ops-a");
    await a.connected();
    await writeFile(join(dir, "ops-a-extra-out", "x.txt"), "extra");
    await waitFor("x.txt through the reloaded channel", async () => (await visible(join(dir, "ops-b-extra"))).includes("x.txt"));
  });

  it("stops gracefully on SIGTERM under load, and loses nothing", async () => {
    const a = procs.find((p) => p.config.endsWith("ops-a.toml")) as ConnectorProcess;
    const names = Array.from({ length: 300 }, (_, i) => `load-${String(i).padStart(3, "0")}.txt`);
    const dropping = (async () => {
      for (const n of names) await drop("ops-a", n, n);
    })();
    await waitFor("some files captured", () => a.count("captured") > 20);
    expect(await a.stop("SIGTERM")).toBe(0);
    expect(a.lines.some((l) => l.msg === "stopping")).toBe(true);
    await dropping;
    const again = start("ops-a");
    await again.connected();
    await waitFor("all 300 at B", async () => (await visible(join(dir, "ops-b-in"))).filter((n) => n.startsWith("load-")).length === names.length, 60_000);
    expect((await visible(join(dir, "ops-b-in"))).filter((n) => n.startsWith("load-")).sort()).toEqual(names);
  });

  it("rotates a connector's keys: the new key works, the old one is refused at once", async () => {
    const a = procs.find((p) => p.config.endsWith("ops-a.toml") && p.proc.exitCode === null);
    await a?.stop();
    const before = JSON.parse(await readFile(join(dir, "ops-a-state", "identity.json"), "utf8")) as Identity;
    const r = ferry(["connector", "rotate-keys", "--config", join(dir, "ops-a.toml"), "--json"], env);
    expect(r.code, r.stderr).toBe(0);
    const after = JSON.parse(await readFile(join(dir, "ops-a-state", "identity.json"), "utf8")) as Identity;
    expect(after.publicJwk.x).not.toBe(before.publicJwk.x);
    expect(after.encPublicJwk?.x).not.toBe(before.encPublicJwk?.x);
    await expect(RawPeer.connect(edge.url, before)).rejects.toThrow(/401/);
    const again = start("ops-a");
    await again.connected();
    await drop("ops-a", "after-rotation.txt", "still flowing");
    await waitFor("a file sent with the new key", async () => (await visible(join(dir, "ops-b-in"))).includes("after-rotation.txt"));
    // A running connector rotates in place on SIGUSR2.
    again.proc.kill("SIGUSR2");
    await waitFor("the in-place rotation", () => again.lines.some((l) => l.msg === "keys rotated; reconnecting with the new key"));
    await waitFor("the reconnection", () => again.count("connected") >= 2);
  });

  it("hands a send to a running connector without replacing a file of the same name that waits in its outbox", async () => {
    const a = procs.find((p) => p.config.endsWith("ops-a.toml") && p.proc.exitCode === null && p.proc.signalCode === null) as ConnectorProcess;
    const b = procs.find((p) => p.config.endsWith("ops-b.toml") && p.proc.exitCode === null && p.proc.signalCode === null) as ConnectorProcess;
    await writeFile(join(dir, "first.txt"), "first");
    await writeFile(join(dir, "second.txt"), "second!");
    const send = (file: string, json: boolean) => ferry(["connector", "send", "--config", join(dir, "ops-a.toml"), "--channel", "in", join(dir, file), "--name", "dup.txt", ...(json ? ["--json"] : [])], env);
    // Frozen, the connector cannot pick up the first file before the second
    // comes: both wait in the outbox at once, the case that lost a message.
    a.proc.kill("SIGSTOP");
    let first, second;
    try {
      first = send("first.txt", true);
      second = send("second.txt", false);
    } finally {
      a.proc.kill("SIGCONT");
    }
    expect(first.code, first.stderr).toBe(0);
    expect(JSON.parse(first.stdout)).toMatchObject({ via: "outbox", name: "dup.txt" });
    expect(second.code, second.stderr).toBe(0);
    expect(second.stdout).toContain("handed to the running connector through its outbox as 'dup (1).txt' ('dup.txt' was still waiting to be sent)");
    await waitFor("both at B", async () => (await visible(join(dir, "ops-b-in"))).filter((n) => n.startsWith("dup")).length === 2);
    expect(await readFile(join(dir, "ops-b-in", "dup.txt"), "utf8")).toBe("first");
    expect(await readFile(join(dir, "ops-b-in", "dup (1).txt"), "utf8")).toBe("second!");
    // The file's metadata is in the logs on both sides.
    const captured = a.lines.find((l) => l.msg === "captured" && l.file === "dup (1).txt");
    expect(captured).toMatchObject({ size: 7, mtime: expect.stringMatching(/^\d{4}-\d\d-\d\dT/), sha256: expect.stringMatching(/^[0-9a-f]{64}$/) });
    await waitFor("the delivery line", () => b.lines.find((l) => l.msg === "delivered" && l.name === "dup (1).txt"));
    expect(b.lines.find((l) => l.msg === "delivered" && l.name === "dup (1).txt")).toMatchObject({ size: 7, mtime: captured?.mtime, sha256: captured?.sha256, path: join(dir, "ops-b-in", "dup (1).txt") });
  });

  it("says why the edge did not accept a one-off send when no connector runs (exit 4)", async () => {
    enrol("ops-n");
    await conf("ops-n", "", `[[channels]]\nname = "lonely"\nprotocol = "file"\noutbox = "./ops-n-out"\n`);
    await writeFile(join(dir, "nowhere.txt"), "no route yet");
    const r = ferry(["connector", "send", "--config", join(dir, "ops-n.toml"), "--channel", "lonely", join(dir, "nowhere.txt"), "--timeout", "30"], env);
    expect(r.code, r.stderr).toBe(4);
    expect(r.stdout).toMatch(/^captured, not yet accepted by the edge: NO_ROUTE: the edge has no route from ops-n\/lonely yet; an administrator adds one with 'ferry admin route add ops-n\/lonely CONNECTOR\/CHANNEL'/);
    expect(r.stdout).toMatch(/stays in the spool and goes with the next run/);
    const j = ferry(["connector", "send", "--config", join(dir, "ops-n.toml"), "--channel", "lonely", join(dir, "nowhere.txt"), "--json"], env);
    expect(j.code).toBe(4);
    expect(JSON.parse(j.stdout)).toMatchObject({ via: "spool", accepted: false, code: "NO_ROUTE", reason: expect.stringContaining("no route from ops-n/lonely") });
  });

  it("goes through a corporate proxy with credentials (HTTPS_PROXY), and around it for NO_PROXY", async () => {
    const proxy = new ConnectProxy({ user: "site", pass: "s3cret" });
    const url = await proxy.listen();
    enrol("ops-p");
    await conf("ops-p", "", `[[channels]]\nname = "in"\nprotocol = "file"\noutbox = "./ops-p-out"\npoll_ms = 50\n`);
    expect(ferry(["admin", "route", "add", "ops-p/in", "ops-b/in"], env).code).toBe(0);
    const p = start("ops-p", { HTTPS_PROXY: url, HTTP_PROXY: url, NO_PROXY: "" });
    await p.connected();
    await drop("ops-p", "via-proxy.txt", "tunnelled");
    await waitFor("via-proxy.txt at B", async () => (await visible(join(dir, "ops-b-in"))).includes("via-proxy.txt"));
    expect(proxy.tunnels.some((t) => t.target === `127.0.0.1:${edge.port}` && t.auth === `Basic ${Buffer.from("site:s3cret").toString("base64")}`)).toBe(true);
    await p.stop();

    const before = proxy.tunnels.length;
    const q = start("ops-p", { HTTPS_PROXY: url, HTTP_PROXY: url, NO_PROXY: "127.0.0.1" });
    await q.connected();
    expect(proxy.tunnels.length).toBe(before);
    await q.stop();
    await proxy.close();
  });
});
