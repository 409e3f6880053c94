import { describe, expect, it } from "vitest";
import { chaosRun } from "../helpers/chaos.ts";

/**
 * Guarantees 1-4 under faults. `npm test` runs a short schedule; `npm run
 * soak` runs the same test for FERRY_SOAK_SECONDS (default 600) with more
 * files and prints the figures.
 */
const soakSeconds = Number(process.env.FERRY_SOAK_SECONDS ?? 0);
const seed = Number(process.env.FERRY_CHAOS_SEED ?? Date.now() % 100_000);

describe("exactly once, in order, under faults", () => {
  it(
    "survives kill -9 of both connectors, an edge restart, cut and half-open connections",
    async () => {
      const report = await chaosRun(
        soakSeconds > 0
          ? { files: Math.max(5000, soakSeconds * 20), durationMs: soakSeconds * 1000, seed, faults: ["kill-sender", "kill-receiver", "restart-edge", "cut", "stall", "cut", "kill-sender", "kill-receiver"], gapMs: [3000, 12_000], largeEvery: Number(process.env.FERRY_SOAK_LARGE_EVERY ?? 150), log: (s) => console.log(s) }
          : { files: 600, durationMs: 20_000, seed, faults: ["kill-sender", "kill-receiver", "cut", "kill-sender", "kill-receiver", "restart-edge", "stall"], gapMs: [1500, 3500], log: (s) => console.log(s) },
      );
      console.log(`chaos report: ${JSON.stringify({ ...report, missing: report.missing.length, duplicates: report.duplicates.length, corrupt: report.corrupt.length })}`);
      expect(report.missing, `seed ${seed}`).toEqual([]);
      expect(report.duplicates, `seed ${seed}`).toEqual([]);
      expect(report.corrupt, `seed ${seed}`).toEqual([]);
      // Order is checked on every file, not on the log lines that survived the
      // kills: each file's arrival in B's inbox is observed as it happens (an
      // inotify watch in this process), and no file may arrive after one
      // written later. With "each exactly once" above, this proves the inbox
      // holds A's stream complete, unrepeated and in the order written.
      expect(report.orderChecked, `seed ${seed}: arrivals observed`).toBe(report.files);
      expect(report.outOfOrder, `seed ${seed}`).toBe(0);
      // And each surviving delivery line carries the stream position the file was sent at.
      expect(report.seqMismatch, `seed ${seed}`).toBe(0);
      expect(report.senderBacklog).toBe(0);
      expect(report.outboxLeft).toBe(0);
      expect(report.deadLetters).toBe(0);
    },
    soakSeconds > 0 ? soakSeconds * 1000 + 600_000 : 400_000,
  );
});
