import { mkdtemp, readFile } from "node:fs/promises";
import { existsSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { extname, join, resolve } from "node:path";
import { chromium, type BrowserContext } from "playwright-core";

export const CHROMIUM = process.env.FERRY_CHROMIUM ?? "/usr/bin/chromium";

/**
 * Debian's Chromium, headless, with a fresh profile and nothing reaching out
 * (this machine has no internet; Playwright's own browser download cannot work).
 */
export async function launch(): Promise<BrowserContext> {
  if (!existsSync(CHROMIUM)) throw new Error(`no Chromium at ${CHROMIUM}: apt-get install -y chromium (.ci/run does), or set FERRY_CHROMIUM`);
  const userDataDir = await mkdtemp(join(tmpdir(), "ferry-chromium-"));
  return chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    acceptDownloads: true,
    viewport: { width: 1280, height: 860 },
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
  });
}

export type StaticSite = { url: string; port: number; requests: string[]; close: () => Promise<void> };

const TYPES: Record<string, string> = { ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".map": "application/json", ".json": "application/json" };

/**
 * A tiny static web server on loopback standing in for Cloudflare Pages:
 * serves `dir` (`/` is index.html) with the headers of its `_headers` file's
 * `/*` block, as Pages does. `port` 0 picks a free one.
 */
export async function serveStatic(dir: string, port = 0): Promise<StaticSite> {
  const root = resolve(dir);
  const headers: [string, string][] = [];
  const rules = existsSync(join(root, "_headers")) ? await readFile(join(root, "_headers"), "utf8") : "";
  let inAll = false;
  for (const line of rules.split("\n")) {
    if (!line.trim()) continue;
    if (!/^\s/.test(line)) inAll = line.trim() === "/*";
    else if (inAll) {
      const i = line.indexOf(":");
      headers.push([line.slice(0, i).trim(), line.slice(i + 1).trim()]);
    }
  }
  const requests: string[] = [];
  const server = createServer((req, res) => {
    void (async () => {
      const path = decodeURIComponent(new URL(req.url ?? "/", "http://x").pathname);
      requests.push(path);
      const file = resolve(root, `.${path === "/" ? "/index.html" : path}`);
      const body = file.startsWith(`${root}/`) && !file.endsWith("/_headers") ? await readFile(file).catch(() => null) : null;
      for (const [k, v] of headers) res.setHeader(k, v);
      if (!body) {
        res.writeHead(404, { "content-type": "text/plain" }).end("not found");
        return;
      }
      res.writeHead(200, { "content-type": TYPES[extname(file)] ?? "application/octet-stream", "cache-control": "no-store" }).end(body);
    })();
  });
  await new Promise<void>((r) => server.listen(port, "127.0.0.1", r));
  const addr = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${addr.port}`,
    port: addr.port,
    requests,
    close: () =>
      new Promise<void>((r) => {
        server.close(() => r());
        server.closeAllConnections();
      }),
  };
}
