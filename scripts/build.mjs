// Bundles the connector CLI into one ESM file that runs on plain Node >= 20
// (partners install the agent without TypeScript tooling), and the portal.
// Runs on `npm install` (prepare) and before `npm test`.
//
//   node scripts/build.mjs                  the CLI, and the portal the edge serves (portal/public)
//   node scripts/build.mjs --pages [DIR]    only the portal for Cloudflare Pages, into DIR
//                                           (default portal/dist, portal/wrangler.toml's
//                                           pages_build_output_dir), with the edge's URL from
//                                           FERRY_PORTAL_API baked in (default "": same origin)
import { build } from "esbuild";
import { fileURLToPath } from "node:url";
import { dirname, join, resolve } from "node:path";
import { copyFileSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";

const root = dirname(dirname(fileURLToPath(import.meta.url)));
export const PAGES_DIR = join(root, "portal", "dist");

/**
 * The edge URL a portal bundle calls: "" (the origin serving the portal), or
 * an http(s) URL without query or fragment, trailing slashes removed.
 */
export function portalApi(value = process.env.FERRY_PORTAL_API ?? "") {
  const s = value.trim();
  if (!s) return "";
  let u;
  try {
    u = new URL(s);
  } catch {
    throw new Error(`FERRY_PORTAL_API: '${s}' is not a URL (e.g. https://ferry.example.com)`);
  }
  if (u.protocol !== "https:" && u.protocol !== "http:") throw new Error(`FERRY_PORTAL_API: '${s}' must be an http(s) URL`);
  if (u.search || u.hash || u.username || u.password) throw new Error(`FERRY_PORTAL_API: '${s}' must have no query, fragment or credentials`);
  return `${u.origin}${u.pathname.replace(/\/+$/, "")}`;
}

/** The portal's one ES module, with `FERRY_PORTAL_API` baked in. */
export function buildPortalBundle(outfile, api = "") {
  return build({
    entryPoints: [join(root, "portal/src/main.tsx")],
    outfile,
    bundle: true,
    format: "esm",
    platform: "browser",
    target: "es2022",
    minify: true,
    sourcemap: "linked",
    jsx: "automatic",
    jsxImportSource: "hono/jsx/dom",
    logLevel: "warning",
    define: { FERRY_PORTAL_API: JSON.stringify(api) },
  });
}

/**
 * Pages' `_headers`: no framing, no sniffing, no referrer, and a CSP that
 * lets the page load only its own files and talk only to itself, the edge
 * it was built for, or an edge URL typed at sign-in: an https origin, or a
 * local edge on this machine (`npm start`).
 */
export function pagesHeaders(api) {
  const edgeOrigin = api ? new URL(api).origin : "";
  const connect = ["'self'", "https:", "http://127.0.0.1:*", "http://localhost:*", ...(edgeOrigin && !edgeOrigin.startsWith("https:") && !/^http:\/\/(127\.0\.0\.1|localhost):/.test(edgeOrigin) ? [edgeOrigin] : [])].join(" ");
  return [
    "/*",
    `  Content-Security-Policy: default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src ${connect}; base-uri 'none'; form-action 'self'; frame-ancestors 'none'`,
    "  X-Content-Type-Options: nosniff",
    "  Referrer-Policy: no-referrer",
    "  X-Frame-Options: DENY",
    "",
  ].join("\n");
}

/** The portal as a static site for Cloudflare Pages: index.html, app.css, app.js(.map), _headers. */
export async function buildPages(outdir = PAGES_DIR, api = portalApi()) {
  const dir = resolve(outdir);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  await buildPortalBundle(join(dir, "app.js"), api);
  for (const f of ["index.html", "app.css"]) copyFileSync(join(root, "portal", "public", f), join(dir, f));
  writeFileSync(join(dir, "_headers"), pagesHeaders(api));
  return { dir, api };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const pages = process.argv.indexOf("--pages");
  if (pages !== -1) {
    const out = process.argv[pages + 1];
    const { dir, api } = await buildPages(out && !out.startsWith("-") ? out : PAGES_DIR, portalApi());
    console.log(`portal for Pages in ${dir} (API: ${api || "same origin"})`);
  } else {
    const entry = join(root, "connector/cli/main.ts");
    const common = {
      bundle: true,
      platform: "node",
      target: "node20",
      format: "esm",
      sourcemap: "linked",
      packages: "external",
      logLevel: "warning",
      define: { FERRY_VERSION: JSON.stringify(JSON.parse(readFileSync(join(root, "package.json"), "utf8")).version) },
    };
    await Promise.all([
      build({ ...common, entryPoints: [entry], outfile: join(root, "dist/ferry.mjs"), banner: { js: "#!/usr/bin/env node" } }),
      // The programmatic API (benchmarks and embedders use it on plain Node).
      build({ ...common, entryPoints: [join(root, "connector/index.ts")], outfile: join(root, "dist/connector.mjs") }),
      // The portal the edge serves from its static assets, at the API's own origin.
      buildPortalBundle(join(root, "portal/public/app.js"), ""),
    ]);
  }
}
