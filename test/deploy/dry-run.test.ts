import { describe, expect, it } from "vitest";
// @ts-expect-error -- a plain .mjs script; dryRun(env) returns { env, code, output }
import { dryRun, ENVIRONMENTS } from "../../scripts/deploy-check.mjs";

/** Every deployed environment's configuration bundles and binds, offline (`wrangler deploy --dry-run`). */
describe("deployable configuration", () => {
  for (const env of ENVIRONMENTS as string[]) {
    it(`${env}: dry-run deploy succeeds with every binding in place`, () => {
      const r = dryRun(env) as { code: number; output: string };
      expect(r.code, r.output).toBe(0);
      for (const binding of ["env.SESSION (ConnectorSession)", "env.CHANNEL (ChannelObject)", "env.DB (", "env.DB_EU (", "env.ARCHIVE (", "env.ARCHIVE_EU (", "(eu)", "env.ADMIN_LIMITER", "env.ENROLL_LIMITER"]) {
        expect(r.output, binding).toContain(binding);
      }
    });
  }
});
