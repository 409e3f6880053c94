// `npm start`: the whole Ferry network on this machine. wrangler dev, fully
// local (no login, no metrics, no network), on 127.0.0.1:8787 (PORT to
// override), D1 migrations applied first, all state persisted in .state/.
// wrangler dev never fires cron triggers, so this script fires the Worker's
// scheduled handler itself (retention): once when the edge is up, then hourly.
import { spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { parse as parseToml } from "smol-toml";
import { localEnv } from "./local-env.mjs";
import { loadOrCreate } from "./edge-keys.mjs";

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const port = Number(process.env.PORT ?? 8787);
// FERRY_STATE_DIR lets tests run private networks beside a developer's own.
const stateDir = process.env.FERRY_STATE_DIR ?? join(root, ".state");
const persist = process.env.FERRY_PERSIST_TO ?? join(stateDir, "wrangler");
mkdirSync(stateDir, { recursive: true });

const tokenFile = join(stateDir, "admin-token");
if (!existsSync(tokenFile)) writeFileSync(tokenFile, `fad_${randomBytes(24).toString("base64url")}\n`, { mode: 0o600 });
const adminToken = readFileSync(tokenFile, "utf8").trim();
// base64url: the value travels as one command-line argument.
const edgeKeys = Buffer.from(loadOrCreate(join(stateDir, "edge-keys.json"))).toString("base64url");

const env = localEnv(root, { WRANGLER_LOG_PATH: join(stateDir, "logs") });

// The portal is built on `npm install`; build it here if someone deleted it.
if (!existsSync(join(root, "portal", "public", "app.js"))) {
  const built = spawnSync(process.execPath, [join(root, "scripts", "build.mjs")], { cwd: root, stdio: "inherit" });
  if (built.status !== 0) process.exit(1);
}
const wrangler = join(root, "node_modules", ".bin", "wrangler");

// The configuration and event-log database, and the EU event-log store.
for (const db of ["ferry", "ferry-eu"]) {
  const migrate = spawnSync(wrangler, ["d1", "migrations", "apply", db, "--local", "--persist-to", persist], {
    cwd: root,
    env,
    stdio: ["ignore", "pipe", "pipe"],
    encoding: "utf8",
  });
  if (migrate.status !== 0) {
    process.stderr.write(migrate.stdout + migrate.stderr);
    console.error(`start: applying the D1 migrations to ${db} failed`);
    process.exit(1);
  }
}

// A portal served from another origin (e.g. `npm run build:portal` output on a static server) may call this edge.
// Profiling workerd (docs/performance.md): DevTools on this port instead of none.
const inspector = process.env.FERRY_INSPECTOR_PORT ? ["--inspector-port", process.env.FERRY_INSPECTOR_PORT] : [];
const portalOrigin = process.env.PORTAL_ORIGIN ? ["--var", `PORTAL_ORIGIN:${process.env.PORTAL_ORIGIN}`] : [];
const dev = spawn(
  wrangler,
  ["dev", "--ip", "127.0.0.1", "--port", String(port), "--persist-to", persist, "--var", `ADMIN_TOKEN:${adminToken}`, "--var", `EDGE_SIGNING_KEYS:${edgeKeys}`, ...portalOrigin, ...inspector, "--show-interactive-dev-session=false", "--test-scheduled", "--log-level", process.env.FERRY_WRANGLER_LOG ?? "warn"],
  { cwd: root, env, stdio: ["ignore", "inherit", "inherit"], detached: true },
);

let stopping = false;
const stop = (signal) => {
  if (stopping) return;
  stopping = true;
  // The whole process group: SIGKILL on wrangler alone would leave workerd behind.
  try {
    process.kill(-dev.pid, "SIGTERM");
  } catch {}
  setTimeout(() => {
    try {
      process.kill(-dev.pid, "SIGKILL");
    } catch {}
    process.exit(signal === "exit" ? 1 : 0);
  }, 5000).unref();
};
process.on("SIGINT", () => stop("SIGINT"));
process.on("SIGTERM", () => stop("SIGTERM"));
dev.on("exit", (code) => {
  if (!stopping) console.error(`start: wrangler exited (${code})`);
  process.exit(code ?? 0);
});

const base = `http://127.0.0.1:${port}`;

/**
 * The cron trigger, locally. `--test-scheduled` makes wrangler dev answer
 * `/__scheduled?cron=…` by running the Worker's scheduled handler (the same
 * one Cloudflare runs on the wrangler.toml schedule), so retention (purging
 * log rows past their retention) runs here too: at start, then hourly.
 * Only reachable on 127.0.0.1, like the rest of the dev edge.
 */
function scheduleRetention() {
  const crons = parseToml(readFileSync(join(root, "wrangler.toml"), "utf8")).triggers?.crons ?? [];
  const cron = typeof crons[0] === "string" ? crons[0] : "17 * * * *";
  const fire = async () => {
    try {
      const r = await fetch(`${base}/__scheduled?cron=${encodeURIComponent(cron)}`);
      if (!r.ok) console.error(`start: the scheduled run (retention) answered ${r.status}`);
    } catch (e) {
      if (!stopping) console.error(`start: the scheduled run (retention) failed: ${e.message}`);
    }
  };
  void fire();
  setInterval(fire, 3_600_000).unref();
}

const deadline = Date.now() + 120_000;
for (;;) {
  try {
    const r = await fetch(`${base}/healthz`);
    if (r.ok) {
      const h = await r.json();
      console.log(`
  Ferry ${h.version} is up (state persisted in ${persist})

  portal             ${base}/#token=${encodeURIComponent(adminToken)}
  admin API          ${base}/api/   (Authorization: Bearer <admin token>)
  connector endpoint ${base.replace("http", "ws")}/v1/connect
  health             ${base}/healthz
  admin token        ${tokenFile}
                     (ferry admin … finds it; for curl: Authorization: Bearer $(cat ${relative(process.cwd(), tokenFile) || tokenFile}))

  Try the tour in another terminal:  npm run demo
  Stop with Ctrl-C.
`);
      scheduleRetention();
      break;
    }
  } catch {}
  if (Date.now() > deadline) {
    console.error("start: the edge did not become healthy within 120 s");
    stop("exit");
    break;
  }
  await new Promise((r) => setTimeout(r, 250));
}
