import { createHash } from "node:crypto";
import { mkdtemp, readdir, readFile, rename, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CompactSign, generateKeyPair } from "jose";
import { encodeFrame } from "../../wire/index.ts";
import { LocalEdge } from "../helpers/edge.ts";
import { ConnectorProcess, ferry } from "../helpers/cli.ts";
import { RawPeer } from "../helpers/raw-peer.ts";
import { waitFor } from "../helpers/wait.ts";

/** Every file under `dir`, recursively (the edge's persisted D1, R2 and Durable Object storage). */
async function everyFile(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await everyFile(p)));
    else if (e.isFile()) out.push(p);
  }
  return out;
}

/**
 * Protection as configured (guarantee 8), end to end with real connectors:
 * `encrypt` leaves no plaintext anywhere at the edge (read straight from its
 * storage on disk), `sign` makes a forgery undeliverable.
 */
describe("protection per route", () => {
  let edge: LocalEdge;
  let dir: string;
  let env: Record<string, string>;
  const procs: ConnectorProcess[] = [];
  const peers: RawPeer[] = [];

  const enrol = (name: string) => {
    const token = (JSON.parse(ferry(["admin", "connector", "add", name, "--json"], env).stdout) as { enrolToken: string }).enrolToken;
    const r = ferry(["connector", "enroll", "--edge", edge.url, "--token", token, "--state", join(dir, `${name}-state`)], env);
    expect(r.code, r.stderr).toBe(0);
    return token;
  };

  beforeAll(async () => {
    edge = await LocalEdge.start();
    dir = await mkdtemp(join(tmpdir(), "ferry-protect-"));
    env = { FERRY_EDGE: edge.url, FERRY_ADMIN_TOKEN: edge.adminToken };
  });

  afterAll(async () => {
    for (const p of peers) p.close();
    await Promise.all(procs.map((p) => p.stop()));
    await edge?.close();
  });

  it("encrypt: the file arrives intact, and the edge's D1, R2 and object storage hold no plaintext, not even its name", async () => {
    for (const n of ["hr", "payroll"]) {
      enrol(n);
      await writeFile(join(dir, `${n}.toml`), `state = "./${n}-state"\nlog = "json"\n[[channels]]\nname = "docs"\nprotocol = "file"\noutbox = "./${n}-out"\ninbox = "./${n}-in"\npoll_ms = 50\n`);
    }
    const route = ferry(["admin", "route", "add", "hr/docs", "payroll/docs", "--protection", "encrypt", "--archive"], env);
    expect(route.code, route.stderr).toBe(0);
    // A second route from the same source must share its protection.
    const mixed = ferry(["admin", "route", "add", "hr/docs", "other/docs", "--protection", "none"], env);
    expect(mixed.stderr).toMatch(/every route from one source shares its protection/);
    for (const n of ["hr", "payroll"]) procs.push(new ConnectorProcess(join(dir, `${n}.toml`)));
    await Promise.all(procs.map((p) => p.connected()));

    const secret = "TOP-SECRET-SALARY-TABLE-7f3a9c";
    const name = "confidential-salaries-7f3a9c.csv";
    await writeFile(join(dir, "hr-out", `.${name}.tmp`), `${secret}\nalice,120000\n`);
    await rename(join(dir, "hr-out", `.${name}.tmp`), join(dir, "hr-out", name));
    await waitFor("the decrypted file at payroll", async () => (await readdir(join(dir, "payroll-in"))).includes(name));
    expect(await readFile(join(dir, "payroll-in", name), "utf8")).toBe(`${secret}\nalice,120000\n`);
    // Archived (as ciphertext) and logged before we look at the storage.
    await waitFor("the archive event", () => (JSON.parse(ferry(["admin", "messages", "--type", "archived", "--json"], env).stdout) as { events: unknown[] }).events.length > 0);
    await waitFor("the delivery event", () => (JSON.parse(ferry(["admin", "messages", "--type", "delivered", "--json"], env).stdout) as { events: unknown[] }).events.length > 0);

    const files = await everyFile(join(edge.stateDir, "wrangler"));
    expect(files.some((f) => f.includes("/d1/")) && files.some((f) => f.includes("/r2/")) && files.some((f) => f.includes("/do/"))).toBe(true);
    const needles = [secret, name, "alice,120000"].map((s) => Buffer.from(s));
    for (const f of files) {
      const bytes = await readFile(f);
      for (const n of needles) expect(bytes.includes(n), `${n.toString()} found in ${f}`).toBe(false);
    }
    // The log shows the message, not its contents.
    const accepted = JSON.parse(ferry(["admin", "messages", "--type", "accepted", "--json"], env).stdout) as { events: { fields: unknown; detail: { contentType: string } }[] };
    expect(accepted.events[0]).toMatchObject({ fields: null, detail: { contentType: "application/jose+json" } });
  });

  it("encrypt added after a file was captured: the waiting file never reaches the edge in the clear, not even as a refusal", async () => {
    const started: ConnectorProcess[] = [];
    for (const n of ["lab", "clinic"]) {
      enrol(n);
      await writeFile(join(dir, `${n}.toml`), `state = "./${n}-state"\nlog = "json"\n[[channels]]\nname = "results"\nprotocol = "file"\noutbox = "./${n}-out"\ninbox = "./${n}-in"\npoll_ms = 50\n`);
      started.push(new ConnectorProcess(join(dir, `${n}.toml`)));
    }
    procs.push(...started);
    await Promise.all(started.map((p) => p.connected()));
    const lab = started[0] as ConnectorProcess;
    const secret = "PATIENT-RESULT-HIV-NEGATIVE-41c2";
    const name = "patient-4711-results-41c2.txt";
    const body = `${secret}\n`;
    await writeFile(join(dir, "lab-out", `.${name}.tmp`), body);
    await rename(join(dir, "lab-out", `.${name}.tmp`), join(dir, "lab-out", name));
    // Captured, and held: no route is known, so no protection is known.
    await waitFor("the capture", () => lab.lines.find((l) => l.msg === "captured" && l.file === name));
    await waitFor("the connector to say it waits for a route", () => lab.lines.find((l) => l.msg === "no route leaves this channel yet; its messages stay in the spool until an administrator adds one"));
    expect(ferry(["admin", "route", "add", "lab/results", "clinic/results", "--protection", "encrypt"], env).code).toBe(0);
    // Learnt within seconds (not at the ten-minute refresh), then sent encrypted.
    await waitFor("the file at the clinic", async () => (await readdir(join(dir, "clinic-in"))).includes(name), 60_000);
    expect(await readFile(join(dir, "clinic-in", name), "utf8")).toBe(body);
    const digest = createHash("sha256").update(body).digest("hex");
    const needles = [secret, name, digest].map((x) => Buffer.from(x));
    for (const f of await everyFile(join(edge.stateDir, "wrangler"))) {
      const bytes = await readFile(f);
      for (const n of needles) expect(bytes.includes(n), `${n.toString()} found in ${f}`).toBe(false);
    }
    const rejected = JSON.parse(ferry(["admin", "messages", "--source", "lab/results", "--type", "rejected", "--json"], env).stdout) as { events: unknown[] };
    expect(rejected.events).toEqual([]);
  });

  it("sign: a message whose signature is not the sender's enrolled key is never delivered", async () => {
    const token = (JSON.parse(ferry(["admin", "connector", "add", "forger", "--json"], env).stdout) as { enrolToken: string }).enrolToken;
    const forger = await RawPeer.enrol(edge.url, token, join(dir, "forger-state"));
    peers.push(forger);
    expect(ferry(["admin", "route", "add", "forger/docs", "payroll/docs", "--protection", "sign"], env).code).toBe(0);
    const payroll = procs[1] as ConnectorProcess;
    const body = Buffer.from("pay mallory 1,000,000");
    const sha256 = createHash("sha256").update(body).digest("hex");
    const stranger = await generateKeyPair("Ed25519");
    const canonical = Buffer.from(JSON.stringify(["forged-0000001", "forger/docs", 1, "text/plain", body.byteLength, sha256, { filename: "forged.txt" }, "sign"]));
    const sig = await new CompactSign(canonical).setProtectedHeader({ alg: "Ed25519", typ: "ferry-msg+jws" }).sign(stranger.privateKey);
    forger.send(encodeFrame({ t: "pub", ch: "docs", epoch: "forger-epoch-01", msgs: [{ seq: 1, id: "forged-0000001", createdAt: 1, contentType: "text/plain", size: body.byteLength, sha256, fields: { filename: "forged.txt" }, protection: "sign", sig }] }, [body]));
    // An unsigned message on a signed route is refused by the edge itself.
    forger.send(encodeFrame({ t: "pub", ch: "docs", epoch: "forger-epoch-01", msgs: [{ seq: 2, id: "unsigned-000002", createdAt: 1, contentType: "text/plain", size: body.byteLength, sha256 }] }, [body]));
    expect(await forger.next((f) => f.t === "error")).toMatchObject({ code: "FORBIDDEN" });
    await waitFor("the forgery to be refused", () => payroll.lines.find((l) => l.msg === "refused a message that failed its protection check; kept as a dead letter"), 30_000);
    expect(await readdir(join(dir, "payroll-in"))).not.toContain("forged.txt");
    expect((await readdir(join(dir, "payroll-state", "dead-letters", "docs"))).some((n) => n.includes("forged-0000001"))).toBe(true);
  });
});
