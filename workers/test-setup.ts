import { applyD1Migrations, env } from "cloudflare:test";

// Each test file gets the real schema, applied the way wrangler applies it.
const migrations = (env as unknown as { TEST_MIGRATIONS: Parameters<typeof applyD1Migrations>[1] }).TEST_MIGRATIONS;
await applyD1Migrations(env.DB, migrations);
await applyD1Migrations(env.DB_EU, migrations);
