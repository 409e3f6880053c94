// Bundles the connector CLI into one ESM file that runs on plain Node >= 20
// (partners install the agent without TypeScript tooling). Runs on
// `npm install` (prepare) and before `npm test`.
import { build } from "esbuild";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";
import { readFileSync } from "node:fs";

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const entry = join(root, "connector/cli/main.ts");
if (!existsSync(entry)) {
  console.log("build: no connector yet, nothing to bundle");
  process.exit(0);
}
await build({
  entryPoints: [entry],
  outfile: join(root, "dist/ferry.mjs"),
  bundle: true,
  platform: "node",
  target: "node20",
  format: "esm",
  sourcemap: "linked",
  packages: "external",
  logLevel: "warning",
  define: { FERRY_VERSION: JSON.stringify(JSON.parse(readFileSync(join(root, "package.json"), "utf8")).version) },
  banner: { js: "#!/usr/bin/env node" },
});
