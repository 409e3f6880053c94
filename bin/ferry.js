#!/usr/bin/env node
// The `ferry` command. The CLI is bundled to dist/ on `npm install` (prepare),
// so it runs on plain Node >= 20 without TypeScript tooling.
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";

const bundle = new URL("../dist/ferry.mjs", import.meta.url);
if (!existsSync(fileURLToPath(bundle))) {
  console.error("ferry: the CLI is not built yet; run 'npm install' (or 'npm run build') in the Ferry folder");
  process.exit(1);
}
await import(bundle.href);
