import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { ConfigError, loadConfig } from "./config.ts";

async function load(text: string) {
  const dir = await mkdtemp(join(tmpdir(), "ferry-config-"));
  const file = join(dir, "c.toml");
  await writeFile(file, text);
  return { dir, file, load: () => loadConfig(file) };
}

async function error(text: string): Promise<string> {
  const c = await load(text);
  try {
    await c.load();
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return (e as Error).message.slice(c.file.length + 2);
  }
  throw new Error("config was accepted");
}

const minimal = `state = "./a-state"\n[[channels]]\nname = "orders"\nprotocol = "file"\noutbox = "./a-out"\ninbox = "./a-in"\n`;

describe("connector config", () => {
  it("accepts the minimal config and resolves paths against the config's folder", async () => {
    const c = await load(minimal);
    const cfg = await c.load();
    expect(cfg.state).toBe(join(c.dir, "a-state"));
    expect(cfg.channels[0]).toMatchObject({ name: "orders", protocol: "file", outbox: join(c.dir, "a-out"), inbox: join(c.dir, "a-in"), pickup: "stable", collisions: "suffix" });
  });

  it("names the bad field and how to fix it", async () => {
    expect(await error(minimal.replace('protocol = "file"', 'protocol = "ftp"'))).toMatch(/^channels\[0\]\.protocol: .*supported protocols: file/);
    expect(await error(minimal.replace('name = "orders"', 'name = "Orders Desk"'))).toMatch(/^channels\[0\]\.name: use 1-64 of a-z/);
    expect(await error(minimal.replace('state = "./a-state"\n', ""))).toMatch(/^state: /);
    expect(await error(minimal.replace("outbox", "outbx"))).toMatch(/^channels\[0\]: Unrecognized key.*outbx/);
    expect(await error(minimal + 'poll_ms = "fast"\n')).toMatch(/^channels\[0\]\.poll_ms: /);
    expect(await error(`state = "s"\n[[channels]]\nname = "x"\nprotocol = "file"\n`)).toMatch(/^channels\[0\]: a file channel needs an outbox/);
    expect(await error(minimal + minimal.slice(minimal.indexOf("[[")))).toMatch(/^channels\[1\]\.name: channel 'orders' is declared twice/);
    expect(await error("state = \n")).toMatch(/^line 1, column \d+: not valid TOML/);
    expect(await error('state = "s"\nchannels = []\n')).toMatch(/^channels: declare at least one/);
  });

  it("says when the file cannot be read", async () => {
    await expect(loadConfig("/nonexistent/ferry.toml")).rejects.toThrow(/\(file\): cannot read the config file: ENOENT/);
  });
});
