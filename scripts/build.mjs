// Bundles the connector CLI into one ESM file that runs on plain Node >= 20
// (partners install the agent without TypeScript tooling). Runs on
// `npm install` (prepare) and before `npm test`.
import { build } from "esbuild";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";
import { readFileSync } from "node:fs";

const root = dirname(dirname(fileURLToPath(import.meta.url)));
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
  // The portal: one small ES module served by the edge's static assets.
  build({
    entryPoints: [join(root, "portal/src/main.tsx")],
    outfile: join(root, "portal/public/app.js"),
    bundle: true,
    format: "esm",
    platform: "browser",
    target: "es2022",
    minify: true,
    sourcemap: "linked",
    jsx: "automatic",
    jsxImportSource: "hono/jsx/dom",
    logLevel: "warning",
  }),
]);
