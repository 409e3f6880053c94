import { createHash } from "node:crypto";
import { exportJWK, generateKeyPair } from "jose";
import { describe, expect, it } from "vitest";
import type { DeliverMessage } from "../../wire/index.ts";
import { ENCRYPTED_CONTENT_TYPE, protect, ProtectionError, unprotect } from "./protection.ts";

async function keys() {
  const s = await generateKeyPair("Ed25519", { extractable: true });
  const e = await generateKeyPair("ECDH-ES+A256KW", { crv: "X25519", extractable: true });
  return { signPriv: await exportJWK(s.privateKey), signPub: await exportJWK(s.publicKey), encPriv: await exportJWK(e.privateKey), encPub: await exportJWK(e.publicKey) };
}

const body = new TextEncoder().encode("salary report: confidential");
const msg = { id: "msg-0000000001", createdAt: 1, contentType: "text/csv", size: body.byteLength, sha256: createHash("sha256").update(body).digest("hex"), fields: { filename: "salaries.csv" } };
const delivered = (p: Awaited<ReturnType<typeof protect>>, source = "hr/out"): DeliverMessage => ({
  dseq: 1, id: p.id, source, seq: 1, createdAt: p.createdAt, acceptedAt: 2, expiresAt: null, contentType: p.contentType, size: p.size, sha256: p.sha256,
  ...(p.fields ? { fields: p.fields } : {}), protection: p.protection, ...(p.sig ? { sig: p.sig } : {}),
});

describe("protection", () => {
  it("sign: the receiver verifies the sender's signature and rejects any change", async () => {
    const a = await keys();
    const p = await protect(msg, body, { protection: "sign", source: "hr/out", signingJwk: a.signPriv, recipients: [] });
    expect(p.payload).toBe(body);
    const ok = await unprotect(delivered(p), p.payload, { senderJwk: a.signPub, decryptJwk: null });
    expect(new TextDecoder().decode(ok.payload)).toBe("salary report: confidential");
    const tampered = new TextEncoder().encode("salary report: confidentiaL");
    await expect(unprotect({ ...delivered(p), sha256: createHash("sha256").update(tampered).digest("hex") }, tampered, { senderJwk: a.signPub, decryptJwk: null })).rejects.toMatchObject({ code: "FORGED" });
    await expect(unprotect({ ...delivered(p), fields: { filename: "other.csv" } }, p.payload, { senderJwk: a.signPub, decryptJwk: null })).rejects.toMatchObject({ code: "FORGED" });
    await expect(unprotect(delivered(p, "evil/out"), p.payload, { senderJwk: a.signPub, decryptJwk: null })).rejects.toMatchObject({ code: "FORGED" });
    const mallory = await keys();
    await expect(unprotect(delivered(p), p.payload, { senderJwk: mallory.signPub, decryptJwk: null })).rejects.toBeInstanceOf(ProtectionError);
  });

  it("encrypt: only ciphertext and a file-less envelope leave the sender; each destination decrypts", async () => {
    const a = await keys();
    const b = await keys();
    const c = await keys();
    const p = await protect(msg, body, { protection: "encrypt", source: "hr/out", signingJwk: a.signPriv, recipients: [{ name: "b", jwk: b.encPub }, { name: "c", jwk: c.encPub }] });
    expect(p.contentType).toBe(ENCRYPTED_CONTENT_TYPE);
    expect(p.fields).toBeUndefined();
    const wire = Buffer.from(p.payload).toString("latin1");
    expect(wire).not.toContain("salary");
    expect(wire).not.toContain("salaries.csv");
    for (const k of [b, c]) {
      const out = await unprotect(delivered(p), p.payload, { senderJwk: a.signPub, decryptJwk: k.encPriv });
      expect(new TextDecoder().decode(out.payload)).toBe("salary report: confidential");
      expect(out).toMatchObject({ contentType: "text/csv", fields: { filename: "salaries.csv" }, sha256: msg.sha256 });
    }
    const outsider = await keys();
    await expect(unprotect(delivered(p), p.payload, { senderJwk: a.signPub, decryptJwk: outsider.encPriv })).rejects.toMatchObject({ code: "UNDECRYPTABLE" });
  });
});

describe("signed receipts", () => {
  it("verify with the receiver's key only, and not once altered", async () => {
    const { signReceipt, verifyReceipt } = await import("../../wire/index.ts");
    const b = await keys();
    const claims = { typ: "ferry-receipt" as const, src: "a/x", dst: "b/x", at: 5, messages: [{ id: "msg-0000000001", sha256: "a".repeat(64) }] };
    const jws = await signReceipt(b.signPriv, claims);
    expect(await verifyReceipt(jws, b.signPub)).toEqual(claims);
    const [h, p, s] = jws.split(".") as [string, string, string];
    const altered = Buffer.from(JSON.stringify({ ...claims, messages: [{ id: "msg-0000000002", sha256: "a".repeat(64) }] })).toString("base64url");
    expect(await verifyReceipt(`${h}.${altered}.${s}`, b.signPub)).toBeNull();
    expect(await verifyReceipt(`${h}.${p}.${s}`, (await keys()).signPub)).toBeNull();
  });
});
