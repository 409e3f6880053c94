import { spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LocalEdge, ROOT } from "../helpers/edge.ts";
import { cliEnv, ConnectorProcess, ferry } from "../helpers/cli.ts";
import { waitFor } from "../helpers/wait.ts";

/**
 * Issue 9: "a connector one version older keeps working". The previous
 * release's connector (git cdeffa8, before large-file support changed the
 * wire) is committed as one bundled file; here it runs as a real process
 * against today's edge, next to today's connector, both directions, and
 * across an edge restart (what a deploy does to connected connectors).
 */
const PREVIOUS = join(ROOT, "test/fixtures/connector-previous/ferry.mjs");


const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

/** Hands files to a connector the way applications should: written aside, then renamed into the outbox. */
async function drop(outbox: string, files: Map<string, Buffer>): Promise<void> {
  await mkdir(outbox, { recursive: true });
  for (const [name, body] of files) {
    await writeFile(join(outbox, `.${name}.tmp`), body);
    await rename(join(outbox, `.${name}.tmp`), join(outbox, name));
  }
}

/** Waits for every file in `inbox`, then checks each byte for byte. */
async function arrived(inbox: string, files: Map<string, Buffer>): Promise<void> {
  const names = async () => (existsSync(inbox) ? (await readdir(inbox)).filter((n) => !n.startsWith(".")) : []);
  await waitFor(`${files.size} files in ${inbox}`, async () => {
    const have = new Set(await names());
    return [...files.keys()].every((n) => have.has(n));
  }, 90_000);
  for (const [name, body] of files) expect(sha(await readFile(join(inbox, name))), name).toBe(sha(body));
}

function smallFiles(tag: string, n: number): Map<string, Buffer> {
  const files = new Map<string, Buffer>();
  const sizes = [0, 1, 100, 4096, 65_536, 300_000];
  for (let i = 0; i < n; i++) files.set(`${tag}-${String(i).padStart(3, "0")}.bin`, randomBytes(sizes[i % sizes.length] as number));
  return files;
}

describe("a connector one release older keeps working with this edge", () => {
  let edge: LocalEdge;
  let dir: string;
  let env: Record<string, string>;
  /** The previous release: sends on `up`, receives on `down`. */
  let old: ConnectorProcess;
  /** Today's connector: receives on `up`, sends on `down`. */
  let cur: ConnectorProcess;

  /** The edge's log of one route's messages of one type. */
  const logged = (source: string, type: string) => {
    const r = ferry(["admin", "messages", "--source", source, "--type", type, "--limit", "1000", "--json"], env);
    expect(r.code, r.stderr).toBe(0);
    return (JSON.parse(r.stdout) as { events: { messageId: string; fields: Record<string, string> | null }[] }).events;
  };

  beforeAll(async () => {
    expect(existsSync(PREVIOUS), `the previous connector's bundle (${PREVIOUS})`).toBe(true);
    edge = await LocalEdge.start();
    dir = await mkdtemp(join(tmpdir(), "ferry-compat-"));
    env = { FERRY_EDGE: edge.url, FERRY_ADMIN_TOKEN: edge.adminToken };
    // Both are enrolled with today's CLI, as a site would have been before upgrading the edge.
    for (const name of ["old-site", "new-site"]) {
      const add = ferry(["admin", "connector", "add", name, "--json"], env);
      expect(add.code, add.stderr).toBe(0);
      const token = (JSON.parse(add.stdout) as { enrolToken: string }).enrolToken;
      const enrol = ferry(["connector", "enroll", "--edge", edge.url, "--token", token, "--state", join(dir, `${name}-state`), "--json"], env);
      expect(enrol.code, enrol.stderr).toBe(0);
    }
    for (const [src, dst] of [["old-site/up", "new-site/up"], ["new-site/down", "old-site/down"]]) {
      const route = ferry(["admin", "route", "add", src as string, dst as string, "--json"], env);
      expect(route.code, route.stderr).toBe(0);
    }
    // Only settings the previous release knows (its config schema is strict).
    const config = (name: string, send: string, receive: string) =>
      `state = "./${name}-state"\nlog = "json"\n\n` +
      `[[channels]]\nname = "${send}"\nprotocol = "file"\noutbox = "./${name}-${send}-out"\npoll_ms = 50\n\n` +
      `[[channels]]\nname = "${receive}"\nprotocol = "file"\ninbox = "./${name}-${receive}-in"\n`;
    await writeFile(join(dir, "old.toml"), config("old-site", "up", "down"));
    await writeFile(join(dir, "new.toml"), config("new-site", "down", "up"));
    old = new ConnectorProcess(join(dir, "old.toml"), {}, PREVIOUS);
    cur = new ConnectorProcess(join(dir, "new.toml"));
    await Promise.all([old.connected(1, 60_000), cur.connected(1, 60_000)]);
  });

  afterAll(async () => {
    await Promise.all([old?.stop(), cur?.stop()]);
    await edge?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("is really the previous release", async () => {
    // The wire changed after it (large files): today's connector knows the edge's
    // "uploaded" frame, the previous one has never heard of it.
    expect(await readFile(join(ROOT, "dist/ferry.mjs"), "utf8")).toContain('"uploaded"');
    expect(await readFile(PREVIOUS, "utf8")).not.toContain('"uploaded"');
    const r = spawnSync("node", [PREVIOUS, "--version"], { env: cliEnv(), encoding: "utf8" });
    expect(r.status, r.stderr).toBe(0);
  });

  it("previous sender -> current receiver: byte-identical, exactly once, receipts back at the sender", async () => {
    const files = smallFiles("up", 12);
    await drop(join(dir, "old-site-up-out"), files);
    await arrived(join(dir, "new-site-up-in"), files);
    await waitFor("every delivery in the edge's log", () => logged("old-site/up", "delivered").length === files.size, 30_000);
    expect(new Set(logged("old-site/up", "accepted").map((e) => e.messageId)).size).toBe(files.size);
    // The previous connector takes the current receiver's receipts and shows them in its status.
    await waitFor("receipts at the previous sender", () => {
      const s = old.status();
      return s.connected && s.channels.up?.backlog.count === 0 && s.receipts.reduce((n, r) => n + r.count, 0) >= files.size;
    }, 60_000);
  });

  it("current sender -> previous receiver: byte-identical, exactly once, receipts back at the sender", async () => {
    const files = smallFiles("down", 12);
    await drop(join(dir, "new-site-down-out"), files);
    await arrived(join(dir, "old-site-down-in"), files);
    await waitFor("every delivery in the edge's log", () => logged("new-site/down", "delivered").length === files.size, 30_000);
    await waitFor("receipts at the current sender", () => {
      const s = cur.status();
      return s.connected && s.channels.down?.backlog.count === 0 && s.receipts.reduce((n, r) => n + r.count, 0) >= files.size;
    }, 60_000);
    // The previous receiver signed them: the edge verifies each receipt with its enrolled key.
    const id = logged("new-site/down", "delivered")[0]?.messageId as string;
    const receipt = await edge.api<{ receipts: { signed: boolean; verified?: boolean }[] }>("GET", `/api/messages/${id}/receipt`);
    expect(receipt.body.receipts).toEqual([expect.objectContaining({ signed: true, verified: true })]);
  });

  it("reconnects after the edge restarts (a deploy) and loses nothing, in either direction", async () => {
    const oldConnects = old.count("connected");
    const curConnects = cur.count("connected");
    await edge.down();
    // Written while the edge is away: captured into the spools, sent after the reconnect.
    const up = smallFiles("restart-up", 8);
    const down = smallFiles("restart-down", 8);
    await drop(join(dir, "old-site-up-out"), up);
    await drop(join(dir, "new-site-down-out"), down);
    await edge.up();
    await Promise.all([old.connected(oldConnects + 1, 60_000), cur.connected(curConnects + 1, 60_000)]);
    await arrived(join(dir, "new-site-up-in"), up);
    await arrived(join(dir, "old-site-down-in"), down);
    // Exactly once across the restart: one acceptance and one delivery per file, nothing more.
    await waitFor("every delivery in the edge's log", () => logged("old-site/up", "delivered").length === 12 + up.size && logged("new-site/down", "delivered").length === 12 + down.size, 30_000);
    for (const source of ["old-site/up", "new-site/down"]) {
      const accepted = logged(source, "accepted");
      expect(new Set(accepted.map((e) => e.messageId)).size, source).toBe(accepted.length);
      expect(accepted.length, source).toBe(20);
    }
    const inbox = (await readdir(join(dir, "new-site-up-in"))).filter((n) => !n.startsWith("."));
    expect(inbox.length).toBe(12 + up.size);
    await waitFor("the previous sender's backlog to drain", () => old.status().channels.up?.backlog.count === 0, 60_000);
    // Nothing the edge sent confused the previous release: its only complaints
    // are the refused dials while the edge was down.
    const complaints = old.lines.filter((l) => l.level === "error" || l.level === "warn" || l.raw);
    expect(complaints.filter((l) => !(l.msg === "connection error" && String(l.error).includes("ECONNREFUSED")))).toEqual([]);
    expect(old.count("captured")).toBe(20);
    expect(old.count("delivered")).toBe(20);
  });
});
