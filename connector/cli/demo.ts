import { spawn, type ChildProcess } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, readFile, readdir, writeFile, rename } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";
import { enroll } from "../identity/identity.ts";
import { AdminClient, CliError } from "./admin-client.ts";
import type { Out } from "./output.ts";

const DEMO_HELP = `ferry demo — the five-minute tour

Against a running 'npm start' (or --edge URL), it:
  1. creates two connectors and enrols them in a temporary folder,
  2. routes <a>/files to <b>/files,
  3. starts both connectors as real processes,
  4. drops a file in A's outbox and waits for it in B's inbox,
  5. shows the message's trace from the event log.
`;

async function until<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new CliError(`demo: timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

export async function demoCommand(argv: string[], out: Out): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: { edge: { type: "string" }, "admin-token": { type: "string" }, json: { type: "boolean", default: false }, help: { type: "boolean", short: "h", default: false }, keep: { type: "boolean", default: false } },
  });
  if (values.help) {
    out.stdout(DEMO_HELP);
    return 0;
  }
  const api = AdminClient.resolve({ edge: values.edge, adminToken: values["admin-token"] });
  const say = (s: string) => {
    if (!values.json) out.stdout(s);
  };
  const dir = await mkdtemp(join(tmpdir(), "ferry-demo-"));
  const tag = randomBytes(3).toString("hex");
  const a = `demo-a-${tag}`;
  const b = `demo-b-${tag}`;
  say(`Ferry demo against ${api.edge}; working folder ${dir}\n`);

  say(`1. ferry admin connector add ${a}; ferry admin connector add ${b}`);
  const ta = await api.request<{ enrolToken: string }>("POST", "/api/connectors", { name: a });
  const tb = await api.request<{ enrolToken: string }>("POST", "/api/connectors", { name: b });
  say(`2. ferry connector enroll --edge ${api.edge} --token … --state ${dir}/a-state   (and the same for B)`);
  await enroll({ edge: api.edge, token: ta.enrolToken, stateDir: join(dir, "a-state") });
  await enroll({ edge: api.edge, token: tb.enrolToken, stateDir: join(dir, "b-state") });
  say(`3. ferry admin route add ${a}/files ${b}/files`);
  await api.request("POST", "/api/routes", { source: `${a}/files`, destination: `${b}/files` });

  const config = (side: string) =>
    `state = "./${side}-state"\nlog = "json"\n\n[[channels]]\nname = "files"\nprotocol = "file"\noutbox = "./${side}-out"\ninbox = "./${side}-in"\n`;
  await writeFile(join(dir, "a.toml"), config("a"));
  await writeFile(join(dir, "b.toml"), config("b"));
  say(`4. ferry connector run --config ${dir}/a.toml   (and b.toml), two real processes`);
  const cli = fileURLToPath(import.meta.url);
  const procs: ChildProcess[] = ["a", "b"].map((side) =>
    spawn(process.execPath, [cli, "connector", "run", "--config", join(dir, `${side}.toml`)], { stdio: ["ignore", "ignore", "pipe"] }),
  );
  let logs = "";
  for (const p of procs) p.stderr?.on("data", (d: Buffer) => (logs += d.toString()));
  try {
    await until("both connectors to connect", 30_000, async () => ((logs.match(/"msg":"connected"/g)?.length ?? 0) >= 2 ? true : undefined));
    const body = Buffer.from(`Hello from ${a} at ${new Date().toISOString()}\n${randomBytes(2048).toString("base64")}\n`);
    const digest = createHash("sha256").update(body).digest("hex");
    // Written under a temporary name, then renamed: the outbox only ever sees complete files.
    await writeFile(join(dir, "a-out", ".invoice-0001.csv.tmp"), body);
    await rename(join(dir, "a-out", ".invoice-0001.csv.tmp"), join(dir, "a-out", "invoice-0001.csv"));
    say(`5. dropped invoice-0001.csv (${body.byteLength} bytes, sha256 ${digest.slice(0, 16)}…) into ${dir}/a-out`);
    const arrived = await until("the file in B's inbox", 30_000, async () => {
      const names: string[] = await readdir(join(dir, "b-in")).catch(() => []);
      return names.includes("invoice-0001.csv") ? join(dir, "b-in", "invoice-0001.csv") : undefined;
    });
    const got = await readFile(arrived);
    const same = createHash("sha256").update(got).digest("hex") === digest;
    say(`6. arrived: ${arrived} (${got.byteLength} bytes, ${same ? "byte-identical" : "DIFFERENT BYTES"})`);
    const id = /"msg":"captured"[^\n]*"id":"([^"]+)"/.exec(logs)?.[1];
    let trace: unknown = null;
    if (id) {
      trace = await until("the delivery to reach the event log", 15_000, async () => {
        const t = await api.request<{ events: { type: string; at: number; source: string; destination: string | null; place: string; detail: { place?: string } | null }[] }>("GET", `/api/messages/${id}`).catch(() => undefined);
        return t && t.events.some((e) => e.type === "delivered") ? t : undefined;
      });
      const t = trace as { events: { type: string; at: number; destination: string | null; place: string; detail: { place?: string } | null }[] };
      say(`7. ferry admin trace ${id}`);
      for (const e of t.events) say(`     ${new Date(e.at).toISOString()}  ${e.type.padEnd(10)} ${e.destination ?? "(edge)"}  at ${e.detail?.place ?? e.place}`);
    }
    if (values.json) out.stdout(JSON.stringify({ ok: same, dir, source: `${a}/files`, destination: `${b}/files`, file: arrived, messageId: id ?? null, trace }, null, 2));
    else say(`\nDone. Folders kept in ${dir}; try 'ferry connector status --config ${dir}/a.toml' after restarting a connector.`);
    return same ? 0 : 1;
  } finally {
    for (const p of procs) p.kill("SIGTERM");
    await Promise.all(procs.map((p) => new Promise((r) => (p.exitCode !== null ? r(null) : p.once("exit", r)))));
  }
}
