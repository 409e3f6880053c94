import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { BrowserContext, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort, LocalEdge, ROOT } from "../helpers/edge.ts";
import { launch, serveStatic, type StaticSite } from "../helpers/browser.ts";
// @ts-expect-error -- a plain .mjs script: buildPages(outdir, api) builds the portal for Pages
import { buildPages } from "../../scripts/build.mjs";

const SHOTS = join(ROOT, "test", "artifacts");

/**
 * The portal served from another origin, as from Cloudflare Pages: the
 * Pages build (`scripts/build.mjs --pages`) on a tiny static server on
 * loopback (with the build's `_headers`, CSP included), against the real
 * local edge started with PORTAL_ORIGIN set to that origin. The edge's URL
 * comes baked into the build, or from the sign-in screen, or from the link.
 *
 * PORTAL_ORIGIN reaches the Worker as `npm start` passes it: from the
 * environment (LocalEdge hands its environment to `npm start`'s script).
 */
describe("the portal from another origin (Cloudflare Pages)", () => {
  let edge: LocalEdge;
  let pages: StaticSite; // the Pages build, with the edge's URL baked in
  let plain: StaticSite; // a build for the same origin (no edge URL): the edge comes from sign-in or the link
  let stranger: StaticSite; // an origin the edge does not allow
  let ctx: BrowserContext;
  let page: Page;
  let dirs: string[] = [];
  let nowhere = "http://127.0.0.1:1"; // an edge URL nothing answers at (test 3 picks a free port)
  const errors: string[] = [];
  const shot = (name: string) => page.screenshot({ path: join(SHOTS, `portal-${name}.png`), fullPage: true });

  beforeAll(async () => {
    await mkdir(SHOTS, { recursive: true });
    const edgePort = await freePort();
    const edgeUrl = `http://127.0.0.1:${edgePort}`;
    const baked = await mkdtemp(join(tmpdir(), "ferry-pages-"));
    const sameOrigin = await mkdtemp(join(tmpdir(), "ferry-pages-plain-"));
    dirs = [baked, sameOrigin];
    await buildPages(baked, edgeUrl);
    await buildPages(sameOrigin, "");
    pages = await serveStatic(baked);
    plain = await serveStatic(sameOrigin);
    stranger = await serveStatic(sameOrigin);
    // The edge allows exactly one origin: the Pages site's.
    const saved = { PORTAL_ORIGIN: process.env.PORTAL_ORIGIN };
    process.env.PORTAL_ORIGIN = pages.url;
    try {
      edge = await LocalEdge.start({ port: edgePort });
    } finally {
      for (const [k, v] of Object.entries(saved)) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
    }
    ctx = await launch();
    page = await ctx.newPage();
    page.on("pageerror", (e) => errors.push(e.message));
    page.on("request", (r) => {
      const u = r.url();
      if (![edge.url, pages.url, plain.url, stranger.url, nowhere].some((o) => u.startsWith(`${o}/`)) && !u.startsWith("blob:") && !u.startsWith("data:")) errors.push(`external request: ${u}`);
    });
  });

  afterAll(async () => {
    await ctx?.close();
    await Promise.all([pages, plain, stranger].map((s) => s?.close()));
    await edge?.close();
    await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
  });

  it("the edge answers CORS for its PORTAL_ORIGIN only", async () => {
    const preflight = (origin: string) =>
      fetch(`${edge.url}/api/overview`, { method: "OPTIONS", headers: { origin, "access-control-request-method": "GET", "access-control-request-headers": "authorization" } });
    const allowed = await preflight(pages.url);
    expect(allowed.status, edge.logs.slice(-2000)).toBeLessThan(300);
    expect(allowed.headers.get("access-control-allow-origin")).toBe(pages.url);
    expect(allowed.headers.get("access-control-allow-headers") ?? "").toContain("authorization");
    const refused = await preflight(stranger.url);
    expect(refused.headers.get("access-control-allow-origin")).not.toBe(stranger.url);
  });

  it("the Pages build signs in against its baked-in edge and runs every call there", async () => {
    await page.goto(`${pages.url}/`);
    await page.waitForSelector("#f-edge");
    expect(await page.inputValue("#f-edge")).toBe(edge.url);
    await shot("pages-sign-in");
    await page.fill("#f-token", "wrong-token");
    await page.click("button:has-text('Sign in')");
    await page.waitForSelector("text=That token was not accepted");
    await page.fill("#f-token", edge.adminToken);
    await page.click("button:has-text('Sign in')");
    await page.waitForSelector("h1:has-text('Overview')");
    await page.waitForSelector("text=connectors online");
    await page.waitForSelector(`header >> text=edge: ${edge.url.replace("http://", "")}`);
    // An action: add a connector; the command to run at the site names the edge, not the portal's origin.
    await page.click("nav >> text=Connectors");
    await page.fill("#f-name", "pages-site");
    await page.click("text=Add connector");
    const notice = page.locator("[data-testid=enrolment]");
    await notice.waitFor();
    expect(await notice.locator("pre").textContent()).toContain(`ferry connector enroll --edge ${edge.url} --token fet_`);
    await page.click("text=Done");
    await page.waitForSelector("tr[data-connector=pages-site]");
    await page.click("nav >> text=Transfers");
    await page.waitForSelector("[data-testid=transfers-empty], [data-testid=transfers-unsupported]");
    await page.click("nav >> text=Overview");
    await page.waitForSelector("text=of 1 connectors online");
    await shot("pages-overview");
    // The portal's own files came from the Pages origin; the API was never asked there.
    expect(pages.requests.filter((p) => p.startsWith("/api/"))).toEqual([]);
    expect(pages.requests).toContain("/app.js");
    await page.click("text=Sign out");
    await page.waitForSelector("#f-token");
  });

  it("a build without an edge URL takes it from the link (#edge=…&token=…), and explains an edge it cannot reach", async () => {
    // This build is served from `plain`'s origin, which the edge does not allow: CORS refuses.
    await page.goto(`${plain.url}/#edge=${encodeURIComponent(edge.url)}&token=${encodeURIComponent(edge.adminToken)}`);
    await page.waitForSelector(`[role=alert]:has-text('its PORTAL_ORIGIN is ${plain.url}')`);
    expect(page.url()).not.toContain(edge.adminToken);
    await page.click("text=Sign out");
    expect(await page.inputValue("#f-edge")).toBe(edge.url);
    // Signing in there again: the refusal is explained next to the Edge URL field.
    await page.fill("#f-token", edge.adminToken);
    await page.click("button:has-text('Sign in')");
    await page.waitForSelector(".field-error:has-text('PORTAL_ORIGIN')");
    // A URL that is not an edge's, and an edge that is not there.
    await page.fill("#f-edge", "ftp://example.com");
    await page.fill("#f-token", edge.adminToken);
    await page.click("button:has-text('Sign in')");
    await page.waitForSelector("#f-edge[aria-invalid=true]");
    expect(await page.locator(".field-error").first().textContent()).toContain("https://");
    nowhere = `http://127.0.0.1:${await freePort()}`;
    await page.fill("#f-edge", `${nowhere}/`);
    await page.click("button:has-text('Sign in')");
    await page.waitForSelector(".field-error:has-text('Could not reach the edge')");
    await shot("pages-unreachable");
  });

  it("the same build, served from the allowed origin, signs in from the link alone", async () => {
    // Serve the same-origin build from the allowed origin: restart `pages` on its port with that directory.
    const port = pages.port;
    await pages.close();
    pages = await serveStatic(dirs[1] as string, port);
    await page.goto(`${pages.url}/#edge=${encodeURIComponent(`${edge.url}/`)}&token=${encodeURIComponent(edge.adminToken)}`);
    await page.waitForSelector("h1:has-text('Overview')");
    await page.waitForSelector("text=of 1 connectors online");
    expect(page.url()).not.toContain(edge.adminToken); // the token left the address bar
    await page.click("nav >> text=Messages");
    await page.waitForSelector("h1:has-text('Messages')");
    await page.waitForSelector("text=No events match.");
    await page.click("text=Sign out");
    // The edge stays for the next sign-in in this tab.
    expect(await page.inputValue("#f-edge")).toBe(edge.url);
    expect(errors).toEqual([]);
  });
});
