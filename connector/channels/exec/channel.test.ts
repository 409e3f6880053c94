import { describe, expect, it } from "vitest";
import { commandEnv } from "./channel.ts";

describe("exec channel environment", () => {
  const parent = {
    PATH: "/usr/bin:/bin",
    HOME: "/var/lib/ferry",
    LANG: "en_GB.UTF-8",
    LC_ALL: "C.UTF-8",
    TZ: "Europe/Paris",
    TMPDIR: "/tmp",
    FERRY_ADMIN_TOKEN: "secret-admin-token",
    HTTPS_PROXY: "http://user:pass@proxy:3128",
    AWS_SECRET_ACCESS_KEY: "nope",
    UNSET: undefined,
  };

  it("passes only PATH, HOME, locale, TZ and TMPDIR of the connector's environment", () => {
    const env = commandEnv(parent, {}, { FERRY_MESSAGE_ID: "m1" });
    expect(env).toEqual({ PATH: "/usr/bin:/bin", HOME: "/var/lib/ferry", LANG: "en_GB.UTF-8", LC_ALL: "C.UTF-8", TZ: "Europe/Paris", TMPDIR: "/tmp", FERRY_MESSAGE_ID: "m1" });
    expect(Object.values(env).join(" ")).not.toMatch(/secret|pass|nope/);
  });

  it("adds the channel's env table, which may override the inherited variables but not the envelope", () => {
    const env = commandEnv(parent, { DB_URL: "postgres://localhost/app", PATH: "/opt/import/bin", FERRY_MESSAGE_ID: "forged" }, { FERRY_MESSAGE_ID: "m1" });
    expect(env).toMatchObject({ DB_URL: "postgres://localhost/app", PATH: "/opt/import/bin", FERRY_MESSAGE_ID: "m1" });
  });
});
