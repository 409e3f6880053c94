// `npm run deploy:check`: `wrangler deploy --dry-run` for every deployed
// environment (bundles the Worker and checks the configuration, offline),
// and the portal's Cloudflare Pages build for every Pages environment, so a
// broken staging or production config fails before anyone deploys.
//
// The Pages check, offline: `wrangler pages functions build-env portal`
// (what Pages' own build runs: reads and validates portal/wrangler.toml for
// that environment and renders its build variables), the Pages build with
// those variables (`scripts/build.mjs --pages`), a static check of the output
// (the files a browser loads are there, the edge's URL is baked in, nothing
// is loaded from or sent to anywhere else, the security headers), and
// `wrangler pages project validate` (Pages' file count and size limits).
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { localEnv } from "./local-env.mjs";
import { buildPages, portalApi } from "./build.mjs";

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const wrangler = join(root, "node_modules", ".bin", "wrangler");
export const ENVIRONMENTS = ["staging", "production"];
/** Pages knows two environments: production (the production branch) and preview (every other branch). */
export const PAGES_ENVIRONMENTS = ["production", "preview"];

export function dryRun(envName) {
  const r = spawnSync(wrangler, ["deploy", "--dry-run", "--env", envName, "--outdir", join(root, ".tmp", `dry-run-${envName}`)], {
    cwd: root,
    env: localEnv(root),
    encoding: "utf8",
  });
  return { env: envName, code: r.status, output: `${r.stdout}${r.stderr}` };
}

/** Hosts a portal bundle may name without calling them: XML namespaces, documentation examples. */
const INERT_HOSTS = [/^www\.w3\.org$/, /(^|\.)example\.(com|org|net)$/, /(^|\.)example\.workers\.dev$/];

/**
 * Static checks of a built Pages portal in `dir`, built for the edge at
 * `api` ("" = same origin). Returns the problems found (empty: fine).
 */
export function checkPagesOutput(dir, api) {
  const problems = [];
  const files = existsSync(dir) ? readdirSync(dir, { recursive: true }).map(String) : [];
  for (const f of ["index.html", "app.js", "app.css", "_headers"]) if (!files.includes(f)) problems.push(`${f}: missing from ${dir}`);
  if (problems.length) return problems;

  // index.html loads only files of this site, and they are all there.
  const html = readFileSync(join(dir, "index.html"), "utf8");
  for (const [, attr, value] of html.matchAll(/\b(src|href)="([^"]*)"/g)) {
    if (!value.startsWith("/") || value.startsWith("//")) problems.push(`index.html: ${attr}="${value}" is not a file of this site`);
    else if (!files.includes(value.slice(1))) problems.push(`index.html: ${attr}="${value}" is not in the build`);
  }
  if (/<style|style="/.test(html)) problems.push("index.html: inline styles (the CSP allows none)");

  // app.js talks to its own origin or the edge it was built for, nothing else.
  const js = readFileSync(join(dir, "app.js"), "utf8");
  const edgeHost = api ? new URL(api).host : null;
  if (api && !js.includes(JSON.stringify(api))) problems.push(`app.js: the edge URL ${api} is not baked in`);
  for (const [url, host] of js.matchAll(/\b(?:https?|wss?):\/\/([a-z0-9.-]+(?::\d+)?)/gi)) {
    const bare = host.replace(/:\d+$/, "").toLowerCase();
    if (host === edgeHost || INERT_HOSTS.some((re) => re.test(bare))) continue;
    problems.push(`app.js: names ${url}: the portal makes no request beyond its edge`);
  }
  if (/\bimport\s*\(\s*["'`]https?:/.test(js)) problems.push("app.js: imports a module from elsewhere");

  // Security headers, and a CSP that lets the portal reach its edge.
  const headers = readFileSync(join(dir, "_headers"), "utf8");
  const csp = /Content-Security-Policy:\s*(.+)/.exec(headers)?.[1] ?? "";
  if (!csp) problems.push("_headers: no Content-Security-Policy");
  const connect = /connect-src ([^;]+)/.exec(csp)?.[1]?.split(/\s+/) ?? [];
  const edgeOrigin = api ? new URL(api).origin : null;
  const loopback = edgeOrigin && /^http:\/\/(127\.0\.0\.1|localhost):/.exec(edgeOrigin)?.[0];
  if (edgeOrigin && !connect.includes(edgeOrigin) && !(edgeOrigin.startsWith("https:") && connect.includes("https:")) && !(loopback && connect.includes(`${loopback}*`))) problems.push(`_headers: connect-src does not allow the edge ${edgeOrigin}`);
  for (const h of ["X-Content-Type-Options: nosniff", "frame-ancestors 'none'", "Referrer-Policy: no-referrer"]) if (!headers.includes(h)) problems.push(`_headers: no ${h}`);
  return problems;
}

/** The portal's Pages build for one Pages environment, checked; offline. */
export async function pagesCheck(envName) {
  const out = [];
  const env = { ...localEnv(root), PAGES_ENVIRONMENT: envName };
  // .tmp is git-ignored: a clean checkout does not have it, and wrangler does not make the outfile's folder.
  mkdirSync(join(root, ".tmp"), { recursive: true });
  const buildEnvFile = join(root, ".tmp", `pages-${envName}-build-env.json`);
  const cfg = spawnSync(wrangler, ["pages", "functions", "build-env", join(root, "portal"), "--outfile", buildEnvFile], { cwd: root, env, encoding: "utf8" });
  out.push(`${cfg.stdout}${cfg.stderr}`);
  if (cfg.status !== 0) return { env: envName, code: cfg.status ?? 1, output: [...out, `portal/wrangler.toml is not a valid Pages configuration for ${envName} (exit ${cfg.status})`].join("\n") };
  const buildEnv = JSON.parse(readFileSync(buildEnvFile, "utf8"));
  if (buildEnv.pages_build_output_dir !== "dist") return { env: envName, code: 1, output: [...out, `portal/wrangler.toml: pages_build_output_dir is '${buildEnv.pages_build_output_dir}'; scripts/build.mjs --pages writes portal/dist`].join("\n") };
  let api;
  try {
    api = portalApi(buildEnv.vars?.FERRY_PORTAL_API ?? "");
  } catch (e) {
    return { env: envName, code: 1, output: [...out, `portal/wrangler.toml [env.${envName}.vars]: ${e.message}`].join("\n") };
  }
  const dir = join(root, ".tmp", `pages-${envName}`);
  await buildPages(dir, api);
  const problems = checkPagesOutput(dir, api);
  const validate = spawnSync(wrangler, ["pages", "project", "validate", dir], { cwd: root, env, encoding: "utf8" });
  out.push(`${validate.stdout}${validate.stderr}`);
  if (validate.status !== 0) problems.push(`wrangler pages project validate: exit ${validate.status}`);
  out.push(`portal for Pages (${envName}) built in ${dir}, API ${api || "same origin"}`, ...problems);
  return { env: envName, api, dir, problems, code: problems.length ? 1 : 0, output: out.join("\n") };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  let failed = false;
  for (const e of ENVIRONMENTS) {
    const r = dryRun(e);
    console.log(`${r.code === 0 ? "ok  " : "FAIL"} ${e}`);
    if (r.code !== 0) {
      failed = true;
      console.log(r.output);
    }
  }
  for (const e of PAGES_ENVIRONMENTS) {
    const r = await pagesCheck(e);
    console.log(`${r.code === 0 ? "ok  " : "FAIL"} pages ${e}${r.api ? ` (API ${r.api})` : ""}`);
    if (r.code !== 0) {
      failed = true;
      console.log(r.output);
    }
  }
  process.exit(failed ? 1 : 0);
}
