import { describe, expect, it } from "vitest";
import { newMessageId } from "./ids.ts";

describe("newMessageId", () => {
  it("is 32 hex digits, a version 7 UUID, distinct and in the order made", () => {
    const ids = Array.from({ length: 5000 }, () => newMessageId());
    for (const id of ids) {
      expect(id).toMatch(/^[0-9a-f]{12}7[0-9a-f]{3}[89ab][0-9a-f]{15}$/);
    }
    expect(new Set(ids).size).toBe(ids.length);
    // Sorted as text they keep the order they were made in (the log's index appends).
    expect([...ids].sort()).toEqual(ids);
  });

  it("starts with the time it was made", () => {
    const before = Date.now();
    const id = newMessageId();
    const at = parseInt(id.slice(0, 12), 16);
    expect(at).toBeGreaterThanOrEqual(before);
    expect(at).toBeLessThanOrEqual(Date.now());
  });
});
