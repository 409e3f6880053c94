import { describe, expect, it } from "vitest";
import { unstage, type LoggedEvent, type Staged, type StagedGroup } from "./events.ts";

const sha = "a".repeat(64);

describe("event outbox: staged rows", () => {
  it("expands a publish's group into each message's captured and accepted events, exactly as they were staged one by one", () => {
    const group: StagedGroup = {
      accepted: [2000, "site:a", ["b/in", "c/in"]],
      m: [
        ["id-1-xxxxxxxx", 1, 11, 5, sha, { filename: "x.csv" }, 1500, "text/csv"],
        ["id-2-xxxxxxxx", 2, 12, 0, sha, null, 1600, "application/octet-stream"],
      ],
    };
    const expected: LoggedEvent[] = [
      { messageId: "id-1-xxxxxxxx", type: "captured", at: 1500, seq: 1, mseq: 11, size: 5, sha256: sha, destination: null, fields: { filename: "x.csv" }, detail: { place: "site:a" } },
      { messageId: "id-1-xxxxxxxx", type: "accepted", at: 2000, seq: 1, mseq: 11, size: 5, sha256: sha, destination: null, fields: { filename: "x.csv" }, detail: { createdAt: 1500, contentType: "text/csv", destinations: ["b/in", "c/in"] } },
      { messageId: "id-2-xxxxxxxx", type: "captured", at: 1600, seq: 2, mseq: 12, size: 0, sha256: sha, destination: null, fields: null, detail: { place: "site:a" } },
      { messageId: "id-2-xxxxxxxx", type: "accepted", at: 2000, seq: 2, mseq: 12, size: 0, sha256: sha, destination: null, fields: null, detail: { createdAt: 1600, contentType: "application/octet-stream", destinations: ["b/in", "c/in"] } },
    ];
    const events = unstage(JSON.parse(JSON.stringify(group)) as StagedGroup);
    expect(events).toEqual(expected);
    // The hashed form keeps its key order (a detail serialised otherwise would hash otherwise).
    expect(events.map((e) => JSON.stringify(e.detail))).toEqual(expected.map((e) => JSON.stringify(e.detail)));
  });

  it("expands an ack's group into its delivered events and the receipt that closes them", () => {
    const receipt: Staged = ["receipt-bbbb", "receipt", 3000, null, 12, 40, "b".repeat(64), "b/in", null, { jws: "x.y.z" }];
    const group: StagedGroup = { delivered: [3000, "b/in", { receipt: "b".repeat(64) }], m: [["id-1-xxxxxxxx", 1, 11, 5, sha, null], ["id-2-xxxxxxxx", 2, 12, 0, sha, { k: "v" }]], receipt };
    expect(unstage(JSON.parse(JSON.stringify(group)) as StagedGroup)).toEqual([
      { messageId: "id-1-xxxxxxxx", type: "delivered", at: 3000, seq: 1, mseq: 11, size: 5, sha256: sha, destination: "b/in", fields: null, detail: { receipt: "b".repeat(64) } },
      { messageId: "id-2-xxxxxxxx", type: "delivered", at: 3000, seq: 2, mseq: 12, size: 0, sha256: sha, destination: "b/in", fields: { k: "v" }, detail: { receipt: "b".repeat(64) } },
      { messageId: "receipt-bbbb", type: "receipt", at: 3000, seq: null, mseq: 12, size: 40, sha256: "b".repeat(64), destination: "b/in", fields: null, detail: { jws: "x.y.z" } },
    ]);
  });

  it("still reads what an older edge left in its outbox: positional arrays and keyed objects", () => {
    const keyed: LoggedEvent = { messageId: "id-3-xxxxxxxx", type: "expired", at: 1, seq: 3, size: 1, sha256: sha, destination: "b/in", fields: null, detail: { reason: "ttl" } };
    expect(unstage(keyed)).toEqual([keyed]);
    expect(unstage([keyed])).toEqual([keyed]);
    expect(unstage([["id-3-xxxxxxxx", "expired", 1, 3, null, 1, sha, "b/in", null, { reason: "ttl" }]])).toEqual([keyed]);
  });
});
