import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import { canonicalDigest, canonicalEvent, eventHash, GENESIS_HASH, verifyChain, type ChainedEvent } from "./audit.ts";

const event = (chainSeq: number, prevHash: string, fields: string | null): ChainedEvent => ({
  chain: "acme:plant-a/orders", chainSeq, prevHash, tenant: "acme", messageId: `m-${chainSeq}`, type: "accepted", at: 1_765_000_000_000 + chainSeq,
  place: "eu", source: "plant-a/orders", destination: "erp/orders", seq: chainSeq, size: 12, sha256: "ab".repeat(32), fields, detail: null,
});

describe("the chain's digest", () => {
  it("is the same through WebCrypto (the edge) and node:crypto (verifiers), non-ASCII text included", async () => {
    for (const fields of [null, '{"filename":"Lieferschein März – Nº 7 ✓.pdf"}', '{"ref":"\\u0000\\ud83d\\ude80"}']) {
      const canonical = canonicalEvent(event(1, GENESIS_HASH, fields));
      const digest = await canonicalDigest(canonical);
      expect(digest).toBe(createHash("sha256").update(canonical).digest("hex"));
      expect(digest).toBe(eventHash(event(1, GENESIS_HASH, fields)));
    }
  });

  it("links a chain the verifier accepts, and names the first altered event", async () => {
    const rows: (ChainedEvent & { hash: string })[] = [];
    let prev = GENESIS_HASH;
    for (let i = 1; i <= 3; i++) {
      const e = event(i, prev, i === 2 ? '{"filename":"Größe.csv"}' : null);
      prev = await canonicalDigest(canonicalEvent(e));
      rows.push({ ...e, hash: prev });
    }
    expect((await verifyChain(rows)).broken).toBeNull();
    const altered = rows.map((r) => (r.chainSeq === 2 ? { ...r, fields: '{"filename":"Grosse.csv"}' } : r));
    expect((await verifyChain(altered)).broken).toMatchObject({ chainSeq: 2, reason: expect.stringContaining("altered") });
  });
});
