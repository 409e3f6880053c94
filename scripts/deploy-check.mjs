// `npm run deploy:check`: `wrangler deploy --dry-run` for every deployed
// environment (bundles the Worker and checks the configuration, offline),
// so a broken staging or production config fails before anyone deploys.
import { spawnSync } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { localEnv } from "./local-env.mjs";

const root = dirname(dirname(fileURLToPath(import.meta.url)));
export const ENVIRONMENTS = ["staging", "production"];

export function dryRun(envName) {
  const r = spawnSync(join(root, "node_modules", ".bin", "wrangler"), ["deploy", "--dry-run", "--env", envName, "--outdir", join(root, ".tmp", `dry-run-${envName}`)], {
    cwd: root,
    env: localEnv(root),
    encoding: "utf8",
  });
  return { env: envName, code: r.status, output: `${r.stdout}${r.stderr}` };
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
  process.exit(failed ? 1 : 0);
}
