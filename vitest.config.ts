import { cloudflareTest, readD1Migrations } from "@cloudflare/vitest-plugin";
import { defineConfig } from "vitest/config";
import { generateKeyPairSync } from "node:crypto";

// A stand-in Cloudflare Access team key: the edge tests verify Access JWTs
// against its public half; the tests sign with the private half.
const access = generateKeyPairSync("ec", { namedCurve: "P-256" });
const accessPublic = { ...access.publicKey.export({ format: "jwk" }), kid: "test-access", alg: "ES256", use: "sig" };
const accessPrivate = { ...access.privateKey.export({ format: "jwk" }), kid: "test-access", alg: "ES256" };
const edgeKey = { ...generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey.export({ format: "jwk" }), kid: "test-edge-1" };

// Three projects: Node-side units (connector, wire), Worker and Durable
// Object tests inside workerd, and end-to-end tests that start the real local
// network and real connector processes.
export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: "connector",
          include: ["connector/**/*.test.ts", "wire/**/*.test.ts", "scripts/**/*.test.ts"],
          environment: "node",
          setupFiles: ["test/helpers/temp-dir.setup.ts"],
          testTimeout: 30_000,
        },
      },
      {
        plugins: [
          cloudflareTest(async () => ({
            wrangler: { configPath: "./wrangler.toml" },
            miniflare: {
              bindings: {
                ADMIN_TOKEN: "test-admin-token-0123456789abcdef",
                TEST_MIGRATIONS: await readD1Migrations("./migrations"),
                CONNECTOR_MSGS_PER_SECOND: "500",
                TENANT_BUDGET_UNIT: "100",
                EDGE_SIGNING_KEYS: JSON.stringify([edgeKey]),
                ACCESS_AUD: "test-access-aud",
                ACCESS_TENANT: "access-tenant",
                ACCESS_SCOPE: "read",
                ACCESS_JWKS: JSON.stringify({ keys: [accessPublic] }),
                TEST_ACCESS_PRIVATE_JWK: JSON.stringify(accessPrivate),
              },
              // Small budgets, so a flood test needs a handful of requests, not thousands.
              ratelimits: {
                ADMIN_LIMITER: { namespace_id: "1001", simple: { limit: 600, period: 60 } },
                ENROLL_LIMITER: { namespace_id: "1002", simple: { limit: 30, period: 60 } },
                TENANT_LIMITER: { namespace_id: "1003", simple: { limit: 12, period: 60 } },
                INGRESS_LIMITER: { namespace_id: "1004", simple: { limit: 5, period: 60 } },
              },
            },
          })),
        ],
        test: {
          name: "edge",
          include: ["workers/**/*.test.ts", "durable-objects/**/*.test.ts"],
          setupFiles: ["./workers/test-setup.ts"],
          testTimeout: 30_000,
        },
      },
      {
        test: {
          name: "e2e",
          include: ["test/**/*.test.ts"],
          environment: "node",
          testTimeout: 180_000,
          hookTimeout: 120_000,
          // End-to-end files each start a network and processes: one at a time
          // on a 2-core machine keeps them from starving each other.
          fileParallelism: false,
        },
      },
    ],
  },
});
