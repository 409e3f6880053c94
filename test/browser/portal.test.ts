import { mkdir, mkdtemp, readdir, readFile, rename, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { BrowserContext, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LocalEdge, ROOT } from "../helpers/edge.ts";
import { ConnectorProcess, ferry } from "../helpers/cli.ts";
import { launch } from "../helpers/browser.ts";
import { waitFor } from "../helpers/wait.ts";
import { makeFile, sha256File } from "../helpers/files.ts";

const SHOTS = join(ROOT, "test", "artifacts");
const MiB = 1024 * 1024;


/**
 * The portal in a real headless Chromium against the real local network and
 * real connectors: what a new administrator does on their first day.
 * Screenshots of each page land in test/artifacts/.
 */
describe("the portal", () => {
  let edge: LocalEdge;
  let ctx: BrowserContext;
  let page: Page;
  let dir: string;
  let env: Record<string, string>;
  const procs: ConnectorProcess[] = [];
  const errors: string[] = [];
  const shot = (name: string) => page.screenshot({ path: join(SHOTS, `portal-${name}.png`), fullPage: true });

  beforeAll(async () => {
    await mkdir(SHOTS, { recursive: true });
    edge = await LocalEdge.start();
    env = { FERRY_EDGE: edge.url, FERRY_ADMIN_TOKEN: edge.adminToken };
    dir = await mkdtemp(join(tmpdir(), "ferry-portal-"));
    ctx = await launch();
    page = await ctx.newPage();
    page.on("pageerror", (e) => errors.push(e.message));
    // Nothing may leave the machine: every request goes to the local edge.
    page.on("request", (r) => {
      if (!r.url().startsWith(edge.url) && !r.url().startsWith("blob:") && !r.url().startsWith("data:")) errors.push(`external request: ${r.url()}`);
    });
  });

  afterAll(async () => {
    await Promise.all(procs.map((p) => p.stop()));
    await ctx?.close();
    await edge?.close();
  });

  it("signs in with the admin token and shows the overview", async () => {
    await page.goto(`${edge.url}/`);
    await page.fill("#f-token", "wrong-token");
    await page.click("text=Sign in");
    await page.waitForSelector("text=That token was not accepted");
    await page.fill("#f-token", edge.adminToken);
    await page.click("text=Sign in");
    await page.waitForSelector("h1:has-text('Overview')");
    await page.waitForSelector("text=connectors online");
    await shot("overview-empty");
  });

  it("enrols connectors from the UI: the one-time token and the exact command are shown", async () => {
    await page.click("nav >> text=Connectors");
    for (const name of ["web-a", "web-b"]) {
      await page.fill("#f-name", name);
      await page.click("text=Add connector");
      const notice = page.locator("[data-testid=enrolment]");
      await notice.waitFor();
      const token = (await notice.locator(".token").textContent())?.trim() as string;
      expect(await notice.locator("pre").textContent()).toContain(`ferry connector enroll --edge ${edge.url} --token ${token}`);
      const r = ferry(["connector", "enroll", "--edge", edge.url, "--token", token, "--state", join(dir, `${name}-state`)], env);
      expect(r.code, r.stderr).toBe(0);
      await page.click("text=Done");
    }
    // A name the API refuses is explained next to the field.
    await page.fill("#f-name", "Not Valid");
    await page.click("text=Add connector");
    await page.waitForSelector(".field-error:has-text('use 1-64 of a-z')");
    await page.fill("#f-name", "");
    await page.waitForSelector("tr[data-connector=web-b] >> text=active");
    // "New enrolment token" says what it is; key rotation is the connector's.
    await page.waitForSelector("tr[data-connector=web-a] >> button:has-text('New enrolment token')");
    expect(await page.locator("[data-testid=rotation-note]").textContent()).toContain("ferry connector rotate-keys");
    await shot("connectors");
  });

  it("creates routes, with validation messages next to the field", async () => {
    await page.click("nav >> text=Routes");
    await page.fill("#f-source", "Bad Address");
    await page.fill("#f-destination", "web-b/docs");
    await page.click("text=Create route");
    await page.waitForSelector("#f-source[aria-invalid=true]");
    expect(await page.locator(".field-error").first().textContent()).toContain("connector/channel");
    await shot("routes-validation");
    await page.fill("#f-source", "web-a/docs");
    await page.check("#f-archive");
    await page.click("text=Create route");
    await page.waitForSelector("text=Route web-a/docs → web-b/docs created.");
    // A second destination that never comes online, with a short TTL: it will become a dead letter.
    await page.fill("#f-source", "web-a/docs");
    await page.fill("#f-destination", "web-late/docs");
    await page.fill("#f-ttl", "2s");
    await page.check("#f-archive");
    await page.click("text=Create route");
    await page.waitForSelector("tr >> text=web-late/docs");
    // A third destination that stays offline with the default TTL: what it misses waits at the edge (the backlog).
    await page.fill("#f-source", "web-a/docs");
    await page.fill("#f-destination", "web-idle/docs");
    await page.fill("#f-ttl", "7d");
    await page.click("text=Create route");
    await page.waitForSelector("tr >> text=web-idle/docs");
    // What cannot be edited in place is said next to what can.
    expect(await page.locator("[data-testid=routes-edit-note]").textContent()).toContain("remove the route and add it again");
    // Edit a route in place; a bad value is explained, a good one saved.
    await page.locator("tr:has-text('web-late/docs') >> text=Edit").click();
    expect(await page.locator("[data-testid=route-edit-note]").textContent()).toContain("To change source, destination, protection or region, remove the route and add it again.");
    await page.waitForSelector("tr:has-text('web-late/docs') >> button:has-text('Remove')");
    await page.fill("#f-edit-ttl", "soon");
    await page.click("button:has-text('Save')");
    await page.waitForSelector(".field-error:has-text('ttl')");
    await page.fill("#f-edit-ttl", "2s");
    await page.click("button:has-text('Save')");
    await page.waitForSelector("text=Route updated.");
    await shot("routes");
  });

  it("finds a file sent by real connectors, traces it and downloads its archive", async () => {
    for (const side of ["a", "b"]) {
      await writeFile(join(dir, `${side}.toml`), `state = "./web-${side}-state"\nlog = "json"\n[[channels]]\nname = "docs"\nprotocol = "file"\noutbox = "./${side}-out"\ninbox = "./${side}-in"\npoll_ms = 50\n`);
      procs.push(new ConnectorProcess(join(dir, `${side}.toml`)));
    }
    await Promise.all(procs.map((p) => p.connected()));
    await writeFile(join(dir, "a-out", ".contract-17.pdf.tmp"), "%PDF-1.7 contract seventeen");
    await rename(join(dir, "a-out", ".contract-17.pdf.tmp"), join(dir, "a-out", "contract-17.pdf"));
    await waitFor("the file at B", async () => (await readdir(join(dir, "b-in"))).includes("contract-17.pdf"));

    await page.click("nav >> text=Messages");
    await page.fill("#f-q", "contract-17.pdf");
    await waitFor("the delivery in search results", async () => {
      await page.click("button:has-text('Search')");
      return (await page.locator("tbody tr:has-text('delivered')").count()) > 0;
    }, 30_000, 500);
    await shot("messages");
    // Hosted egress attempts are an event type of their own (none here: the search answers, empty).
    await page.selectOption("#f-type", "attempt");
    await page.fill("#f-q", "");
    await page.click("button:has-text('Search')");
    await page.waitForSelector("text=No events match.");
    await page.selectOption("#f-type", "");
    await page.fill("#f-q", "contract-17.pdf");
    await page.click("button:has-text('Search')");
    await page.locator("tbody a:has-text('contract-17.pdf')").first().click();
    await page.waitForSelector("h2:has-text('Timeline')");
    await page.waitForSelector(".timeline >> text=delivered");
    await page.waitForSelector("[data-testid=chain] >> text=intact");
    const [download] = await Promise.all([page.waitForEvent("download"), page.click("text=Download archived payload")]);
    const saved = join(dir, "downloaded.pdf");
    await download.saveAs(saved);
    expect(await readFile(saved, "utf8")).toBe("%PDF-1.7 contract seventeen");
    await shot("trace");
  });

  it("re-drives a dead letter", async () => {
    await page.click("nav >> text=Dead letters");
    await waitFor("the expired message in the list", async () => {
      await page.reload();
      await page.waitForSelector("h1:has-text('Dead letters')");
      return (await page.locator("tr[data-dead]").count()) > 0;
    }, 60_000, 1000);
    await shot("dead-letters");
    await page.locator("tr[data-dead] >> text=Re-drive").first().click();
    await page.waitForSelector("text=Re-driven: 1");
  });

  it("follows a large file on the Transfers page while it travels, then finds it in Messages", async () => {
    await page.click("nav >> text=Transfers");
    await page.waitForSelector("h1:has-text('Transfers')");
    await page.waitForSelector("[data-testid=transfers-empty], [data-testid=transfers-unsupported], [data-transfer]");
    // 40 MiB: five 8 MiB parts through the edge's R2, uploaded by web-a, fetched by web-b (web-idle never comes).
    const size = 40 * MiB;
    const tmp = join(dir, "a-out", ".big-40.bin.tmp");
    const sha = await makeFile(tmp, size);
    await rename(tmp, join(dir, "a-out", "big-40.bin"));
    // The only large file in this network (named once its message is sent: while it uploads, it is its id).
    const row = page.locator("[data-transfer]");
    const arrived = async () => (await stat(join(dir, "b-in", "big-40.bin")).catch(() => null))?.size === size;
    // It shows while on its way; an edge without GET /api/transfers says so; a finished one has left the list.
    const seen = await waitFor("big-40.bin on the Transfers page (or an edge without transfers, or it is done)", async () => {
      if ((await row.count()) > 0) return "listed";
      if ((await page.locator("[data-testid=transfers-unsupported]").count()) > 0) return "unsupported";
      if ((await page.locator("[data-testid=transfers-empty]").count()) > 0 && (await arrived())) return "done";
      return undefined;
    }, 120_000, 100);
    if (seen === "listed") {
      await row.locator("[data-testid=upload] progress").waitFor();
      expect(await row.locator("[data-testid=upload]").textContent()).toMatch(/of 5 parts/);
      await shot("transfers");
    }
    await waitFor("big-40.bin (40 MiB) in B's inbox", arrived, 180_000, 100);
    expect(await sha256File(join(dir, "b-in", "big-40.bin"))).toBe(sha);
    if (seen === "listed") {
      // Still listed while web-idle has not fetched it: named, uploaded in full, web-b done (100%, or gone from the list once it acknowledged).
      await waitFor("the Transfers page to show big-40.bin uploaded and web-b's download done", async () => {
        if ((await row.count()) === 0) return true; // or it has left the list altogether
        if (!((await row.locator("h2").textContent()) ?? "").includes("big-40.bin")) return false;
        if (!((await row.locator("[data-testid=upload]").textContent()) ?? "").includes("100%")) return false;
        const b = row.locator("[data-testid='download-web-b/docs']");
        return (await b.count()) === 0 || ((await b.textContent()) ?? "").includes("100%");
      }, 30_000, 200);
      await shot("transfers");
    } else await shot("transfers");
    await page.click("nav >> text=Messages");
    await page.fill("#f-q", "big-40.bin");
    await waitFor("the large file's delivery in search results", async () => {
      await page.click("button:has-text('Search')");
      return (await page.locator("tbody tr:has-text('delivered'):has-text('big-40.bin')").count()) > 0;
    }, 30_000, 500);
  });

  it("shows the audit of admin actions and a live overview, without errors or external requests", async () => {
    await page.click("nav >> text=Admin actions");
    await page.waitForSelector("td:has-text('route.add')");
    await page.waitForSelector("td:has-text('dead-letters.redrive')");
    await shot("admin-actions");
    await page.click("nav >> text=Connectors");
    await page.waitForSelector("tr[data-connector=web-a] >> text=0.1.0");
    await page.click("tr[data-connector=web-b] >> a:has-text('web-b')");
    await page.waitForSelector("h1:has-text('Connector web-b')");
    await page.waitForSelector("td:has-text('web-b/docs')");
    await page.waitForSelector("tbody >> text=contract-17.pdf");
    await shot("connector-detail");
    await page.click("nav >> text=Tokens");
    await page.fill("#f-token-name", "auditor");
    await page.click("button:has-text('Create token')");
    const issued = (await page.locator("[data-testid=issued-token] .token").textContent())?.trim() as string;
    expect(issued).toMatch(/^fat_/);
    const asAuditor = await fetch(`${edge.url}/api/routes`, { headers: { authorization: `Bearer ${issued}` } });
    expect(asAuditor.status).toBe(200);
    await shot("tokens");
    await page.click("nav >> text=Hosted");
    await page.fill("#f-hosted-address", "saas/events");
    await page.click("button:has-text('Add hosted ingress')");
    await page.locator("[data-testid=hosted-issued]").waitFor();
    expect(await page.locator("[data-testid=hosted-issued]").textContent()).toContain("/v1/hosted/default/saas/events");
    await page.click("text=Done");
    await page.waitForSelector("tr[data-hosted='ingress:saas/events']");
    await shot("hosted");
    await page.click("nav >> text=Overview");
    await page.waitForSelector("text=2 of");
    // The backlog: what web-idle has not fetched waits at the edge (contract-17.pdf, big-40.bin).
    await page.waitForSelector("[data-testid=backlog] tr[data-destination='web-idle/docs']");
    const waiting = Number(await page.locator("[data-testid=backlog] tr[data-destination='web-idle/docs'] td.queued span").textContent());
    expect(waiting).toBeGreaterThanOrEqual(2);
    expect(Number(await page.locator("[data-testid=backlog-total] .big").textContent())).toBeGreaterThanOrEqual(waiting);
    await shot("overview");
    // A phone's width: the same pages, narrower, row buttons still there.
    await page.setViewportSize({ width: 390, height: 844 });
    await shot("overview-narrow");
    await page.click("nav >> text=Transfers");
    await page.waitForSelector("[data-transfer], [data-testid=transfers-empty], [data-testid=transfers-unsupported]");
    await shot("transfers-narrow");
    await page.click("nav >> text=Routes");
    await page.waitForSelector("tr:has-text('web-idle/docs') >> button:has-text('Remove')");
    await shot("routes-narrow");
    await page.setViewportSize({ width: 1280, height: 860 });
    expect(errors).toEqual([]);
  });
});
