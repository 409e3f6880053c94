import { CompactSign, compactVerify, type JWK } from "jose";
import { importKey } from "./keys.ts";
import { RECEIPT_JWS_TYPE, ReceiptClaims } from "./frames.ts";

/**
 * Signed delivery receipts, shared by the receiving connector (signs), the
 * sending connector (keeps and checks) and the edge (shows and checks):
 * non-repudiation in the spirit of AS2 MDNs.
 */
export async function signReceipt(privateJwk: JWK, claims: ReceiptClaims): Promise<string> {
  return new CompactSign(new TextEncoder().encode(JSON.stringify(claims)))
    .setProtectedHeader({ alg: "Ed25519", typ: RECEIPT_JWS_TYPE })
    .sign(await importKey(privateJwk, "Ed25519"));
}

/** The receipt's claims if it verifies with `signerJwk`, else null. */
export async function verifyReceipt(jws: string, signerJwk: JWK | null): Promise<ReceiptClaims | null> {
  if (!signerJwk) return null;
  try {
    const { payload, protectedHeader } = await compactVerify(jws, await importKey(signerJwk, "Ed25519"), { algorithms: ["Ed25519", "EdDSA"] });
    if (protectedHeader.typ !== RECEIPT_JWS_TYPE) return null;
    const r = ReceiptClaims.safeParse(JSON.parse(new TextDecoder().decode(payload)));
    return r.success ? r.data : null;
  } catch {
    return null;
  }
}
