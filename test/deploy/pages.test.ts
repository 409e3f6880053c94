import { cp, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
// @ts-expect-error -- a plain .mjs script; see its comments for the shapes
import { checkPagesOutput, pagesCheck, PAGES_ENVIRONMENTS } from "../../scripts/deploy-check.mjs";

type PagesResult = { code: number; output: string; api: string; dir: string; problems: string[] };
const check = checkPagesOutput as (dir: string, api: string) => string[];

/** The portal's Cloudflare Pages build, per Pages environment, as `npm run deploy:check` runs it (offline). */
describe("the portal's Pages build", () => {
  const built: Record<string, PagesResult> = {};

  for (const env of PAGES_ENVIRONMENTS as string[]) {
    it(`${env}: portal/wrangler.toml validates, the build bakes in the edge's URL and passes the static check`, async () => {
      const r = (await pagesCheck(env)) as PagesResult;
      expect(r.code, r.output).toBe(0);
      expect(r.api).toMatch(/^https:\/\//);
      expect(await readFile(join(r.dir, "app.js"), "utf8")).toContain(JSON.stringify(r.api));
      expect(await readFile(join(r.dir, "_headers"), "utf8")).toContain("Content-Security-Policy");
      built[env] = r;
    });
  }

  it("the static check catches a request beyond the edge, a page loading a foreign script, and missing files", async () => {
    const good = built.production as PagesResult;
    expect(good, "the production build ran first").toBeDefined();
    const dir = await mkdtemp(join(tmpdir(), "ferry-pages-check-"));
    try {
      await cp(good.dir, dir, { recursive: true });
      expect(check(dir, good.api)).toEqual([]);
      // Built for another edge than the one checked.
      expect(check(dir, "https://other-edge.example.net").join("\n")).toContain("is not baked in");
      // A CDN font or script sneaking in.
      const js = await readFile(join(dir, "app.js"), "utf8");
      await writeFile(join(dir, "app.js"), `${js}\nfetch("https://fonts.googleapis.com/css2?family=Inter");`);
      expect(check(dir, good.api).join("\n")).toContain("https://fonts.googleapis.com");
      await writeFile(join(dir, "app.js"), js);
      const html = await readFile(join(dir, "index.html"), "utf8");
      await writeFile(join(dir, "index.html"), html.replace("</head>", '<script src="https://cdn.example.org/x.js"></script></head>'));
      expect(check(dir, good.api).join("\n")).toContain("is not a file of this site");
      await writeFile(join(dir, "index.html"), html);
      await rm(join(dir, "app.css"));
      expect(check(dir, good.api)).toEqual([`app.css: missing from ${dir}`]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
