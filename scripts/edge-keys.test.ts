import { mkdtemp, readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createLocalJWKSet, jwtVerify } from "jose";
import { describe, expect, it } from "vitest";
// @ts-expect-error -- a plain .mjs script without types; its two functions are used as documented there
import { loadOrCreate, rotate } from "./edge-keys.mjs";
import { edgeKeys, edgeSign } from "../workers/edge-keys.ts";

describe("edge key rotation", () => {
  it("signs with the newest key and keeps the previous one published, so tokens from before still verify", async () => {
    const file = join(await mkdtemp(join(tmpdir(), "ferry-keys-")), "edge-keys.json");
    loadOrCreate(file);
    const before = JSON.parse(await readFile(file, "utf8")) as { kid: string }[];
    const env1 = { EDGE_SIGNING_KEYS: JSON.stringify(before) };
    const old = (await edgeSign(env1, { status: "delivered" }, "ferry:t:c")) as string;

    const kids = rotate(file) as string[];
    expect(kids).toHaveLength(2);
    expect(kids[1]).toBe(before[0]?.kid);
    const env2 = { EDGE_SIGNING_KEYS: Buffer.from(await readFile(file, "utf8")).toString("base64url") };
    const jwks = (await edgeKeys(env2))?.jwks;
    expect(jwks?.keys.map((k) => k.kid)).toEqual(kids);
    const fresh = (await edgeSign(env2, { status: "delivered" }, "ferry:t:c")) as string;
    for (const token of [old, fresh]) {
      expect((await jwtVerify(token, createLocalJWKSet(jwks as never), { issuer: "ferry-edge", audience: "ferry:t:c" })).payload.status).toBe("delivered");
    }
    // A third rotation drops the oldest key: its tokens no longer verify.
    rotate(file);
    const env3 = { EDGE_SIGNING_KEYS: await readFile(file, "utf8") };
    await expect(jwtVerify(old, createLocalJWKSet((await edgeKeys(env3))?.jwks as never))).rejects.toThrow();
  });
});
