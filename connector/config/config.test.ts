import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { CHANNEL_SCHEMAS, ConfigError, ConfigSchema, FIELD_HELP, loadConfig, validateConfig } from "./config.ts";

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
    expect(await error(minimal.replace("outbox", "outbx"))).toMatch(/^channels\[0\]: Unrecognized key "outbx" \(did you mean "outbox"\?\); a file channel takes: name, protocol, outbox/);
    expect(await error(minimal + 'poll_ms = "fast"\n')).toMatch(/^channels\[0\]\.poll_ms: /);
    expect(await error(`state = "s"\n[[channels]]\nname = "x"\nprotocol = "file"\n`)).toMatch(/^channels\[0\]: a file channel needs an outbox/);
    expect(await error(minimal + minimal.slice(minimal.indexOf("[[")))).toMatch(/^channels\[1\]\.name: channel 'orders' is declared twice/);
    expect(await error("state = \n")).toMatch(/^line 1, column \d+: not valid TOML/);
    expect(await error('state = "s"\nchannels = []\n')).toMatch(/^channels: declare at least one/);
  });

  it("says what to write, with an example, for the mistakes people make", async () => {
    const cases: [string, string][] = [
      [minimal.replace('state = "./a-state"\n', ""), `state: required: the folder made by 'ferry connector enroll', e.g. state = "./a-state"`],
      ['state = "s"\n', 'channels: required: declare at least one [[channels]] table, e.g. [[channels]] name = "orders"'],
      ['state = "s"\n[channels]\nname = "x"\n', "channels: write each channel as a [[channels]] table (double brackets)"],
      [`state = "s"\n[[channels]]\nname = "x"\nprotocol = "http"\nwebhook = "ftp://x"\n`, 'channels[0].webhook: an http:// or https:// URL each delivery is POSTed to, e.g. webhook = "http://127.0.0.1:9000/ferry" (found "ftp://x")'],
      [`state = "s"\n[[channels]]\nname = "x"\nprotocol = "exec"\ncommand = "import --stdin"\n`, 'channels[0].command: a list of program and arguments, e.g. command = ["/usr/local/bin/import", "--stdin"] (found "import --stdin")'],
      [`state = "s"\n[[channels]]\nname = "x"\nprotocol = "exec"\ncommand = []\n`, "channels[0].command: a list of program and arguments, e.g. command = "],
      [`heartbeat_seconds = "x"\n${minimal}`, 'heartbeat_seconds: seconds between heartbeats, an integer 1-300, e.g. heartbeat_seconds = 15 (found "x")'],
      [`transfers = 17\n${minimal}`, "transfers: large files moved at the same time (each way), an integer 1-16, e.g. transfers = 2 (found 17)"],
      [`transfers = 1.5\n${minimal}`, "transfers: large files moved at the same time (each way), an integer 1-16"],
      [`stat = "./a-state"\n${minimal.replace('state = "./a-state"\n', "")}`, '(top level): Unrecognized key "stat" (did you mean "state"?)'],
      [`heartbeat = 5\n${minimal}`, '(top level): Unrecognized key "heartbeat" (did you mean "heartbeat_seconds"?)'],
      [minimal + 'webhook = "http://127.0.0.1:9000/"\n', 'channels[0]: Unrecognized key "webhook" ("webhook" belongs to http channels); a file channel takes:'],
      [`state = "s"\n[[channels]]\nname = "x"\n`, 'channels[0].protocol: required: supported protocols: file, http, exec, e.g. protocol = "file"'],
      [`state = "s"\n[[channels]]\nname = "x"\nprotocol = "http"\nlisten = "0.0.0.0:8080"\n`, "channels[0].listen: listen on loopback only, e.g. 127.0.0.1:8081 (Ferry opens no port beyond this machine)"],
      [`state = "s"\n[[channels]]\nname = "x"\nprotocol = "exec"\ncommand = ["imp"]\nenv = { "A-B" = "1" }\n`, 'channels[0].env.A-B: "A-B" is not a variable name'],
      [`state = "s"\n[[channels]]\nname = "x"\nprotocol = "exec"\ncommand = ["imp"]\nenv = { RETRIES = 3 }\n`, 'channels[0].env.RETRIES: the value of RETRIES must be a string (quote it), e.g. env = { RETRIES = "3" }'],
      [`state = "s"\n[[channels]]\nname = "x"\nprotocol = "exec"\ncommand = ["imp"]\nenv = { FERRY_MESSAGE_ID = "1" }\n`, "channels[0].env.FERRY_MESSAGE_ID: FERRY_* variables carry the message's envelope"],
      [`state = "s"\n[[channels]]\nname = "x"\nprotocol = "file"\noutbox = "./d"\ninbox = "d"\n`, "channels[0].inbox: d is also channels[0].outbox; give each outbox and inbox its own folder"],
      [`state = "s"\nhealth = "127.0.0.1:9464"\n[[channels]]\nname = "x"\nprotocol = "http"\nlisten = "127.0.0.1:9464"\n`, "channels[0].listen: 127.0.0.1:9464 is used by channels[0].listen and health; give each its own port"],
    ];
    for (const [text, message] of cases) expect(await error(text), text).toContain(message);
    for (const [text, message] of cases) expect((await error(text)).startsWith(message), text).toBe(true);
  });

  it("has a message with an example for every field of the schema, whatever the mistake", () => {
    const wrong = (field: string) => (field === "recursive" ? "yes" : field === "env" ? "A=1" : { oops: 1 });
    const channel = { name: "orders", protocol: "file", outbox: "./out" };
    const check = (raw: unknown, where: string) => {
      let message = "";
      try {
        validateConfig(raw, "c.toml");
      } catch (e) {
        message = (e as Error).message;
      }
      expect(message, `${where} accepted a wrong value`).not.toBe("");
      expect(message, message).toMatch(new RegExp(`^c\\.toml: ${where.replace(/[[\].]/g, "\\$&")}: `));
      expect(message, message).toMatch(/e\.g\. /);
      expect(message, message).not.toMatch(/Invalid input|expected \w+, received/);
    };
    for (const field of Object.keys(ConfigSchema.shape)) {
      expect(FIELD_HELP.top[field], `no help for ${field}`).toBeDefined();
      check({ state: "s", channels: [channel], [field]: wrong(field) }, field);
    }
    for (const [protocol, schema] of Object.entries(CHANNEL_SCHEMAS)) {
      const ok = { file: channel, http: { name: "hook", protocol: "http", webhook: "http://127.0.0.1:9000/" }, exec: { name: "run", protocol: "exec", command: ["imp"] } }[protocol];
      for (const field of Object.keys(schema.shape)) {
        expect(FIELD_HELP.channel[field], `no help for channels[].${field}`).toBeDefined();
        check({ state: "s", channels: [{ ...ok, [field]: wrong(field) }] }, `channels[0].${field}`);
      }
    }
  });

  it("gives an exec channel only the variables it declares, validated", async () => {
    const c = await load(`state = "s"\n[[channels]]\nname = "run"\nprotocol = "exec"\ncommand = ["imp"]\nenv = { DB_URL = "postgres://localhost/app" }\n`);
    expect((await c.load()).channels[0]).toMatchObject({ env: { DB_URL: "postgres://localhost/app" }, cwd: c.dir });
    const d = await load(`state = "s"\n[[channels]]\nname = "run"\nprotocol = "exec"\ncommand = ["imp"]\n`);
    expect((await d.load()).channels[0]).toMatchObject({ env: {} });
  });

  it("says when the file cannot be read", async () => {
    await expect(loadConfig("/nonexistent/ferry.toml")).rejects.toThrow(/\(file\): cannot read the config file: ENOENT/);
  });
});
