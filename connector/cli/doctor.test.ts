import { mkdir, mkdtemp, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { doctor } from "./doctor.ts";

describe("connector doctor", () => {
  it("checks folders without creating them: missing with a writable parent is fine, a missing parent is an error with the fix", async () => {
    const dir = await mkdtemp(join(tmpdir(), "ferry-doctor-"));
    await mkdir(join(dir, "in"));
    await writeFile(join(dir, "a-file"), "");
    const file = join(dir, "c.toml");
    await writeFile(
      file,
      `state = "./state"\n[[channels]]\nname = "a"\nprotocol = "file"\noutbox = "./out"\ninbox = "./in"\n\n[[channels]]\nname = "b"\nprotocol = "file"\noutbox = "./no/such/out"\ninbox = "./a-file"\n`,
    );
    const checks = await doctor(file);
    const find = (re: RegExp) => checks.find((c) => re.test(c.detail));
    expect(checks.find((c) => c.check === "state folder")).toMatchObject({ ok: true, detail: `${join(dir, "state")} will be created at start` });
    expect(find(/^outbox .*\/out will be created/)).toMatchObject({ check: "channel a", ok: true });
    expect(find(/^inbox .*\/in is writable/)).toMatchObject({ check: "channel a", ok: true });
    expect(find(/no\/such\/out/)).toMatchObject({ check: "channel b", ok: false, detail: `outbox ${join(dir, "no/such/out")} does not exist, nor does its parent ${join(dir, "no/such")}`, fix: expect.stringContaining(`mkdir -p ${join(dir, "no/such/out")}`) });
    expect(find(/a-file/)).toMatchObject({ check: "channel b", ok: false, detail: `inbox ${join(dir, "a-file")} is not a folder` });
    // Nothing was created by looking.
    for (const p of ["state", "out", "no"]) await expect(stat(join(dir, p))).rejects.toThrow(/ENOENT/);
    expect(checks.find((c) => c.check === "identity")).toMatchObject({ ok: false, detail: expect.stringContaining("not enrolled yet") });
  });
});
