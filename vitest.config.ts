import { cloudflareTest, readD1Migrations } from "@cloudflare/vitest-plugin";
import { defineConfig } from "vitest/config";

// Three projects: Node-side units (connector, wire), Worker and Durable
// Object tests inside workerd, and end-to-end tests that start the real local
// network and real connector processes.
export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: "connector",
          include: ["connector/**/*.test.ts", "wire/**/*.test.ts"],
          environment: "node",
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
