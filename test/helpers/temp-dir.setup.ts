/**
 * Node-side unit tests make their folders with mkdtemp(tmpdir()): each test
 * file gets a private TMPDIR of its own, removed when the file is done, so
 * the suite leaves nothing behind in the system's temp folder.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll } from "vitest";

// The system's temp folder, remembered once: a worker that runs several files must not nest them.
const base = (process.env.FERRY_TEST_TMP_BASE ??= tmpdir());
const dir = mkdtempSync(join(base, "ferry-unit-"));
const before = process.env.TMPDIR;
process.env.TMPDIR = dir;

afterAll(() => {
  if (before === undefined) delete process.env.TMPDIR;
  else process.env.TMPDIR = before;
  rmSync(dir, { recursive: true, force: true });
});
