import { importJWK, type JWK } from "jose";

type Imported = ReturnType<typeof importJWK>;

/**
 * Imported keys, by the JWK object they came from and the algorithm: a
 * connector signs or verifies per message and per receipt, and importing the
 * key each time cost more than the signature. Keyed by object identity, so a
 * rotated key (a new object) is imported afresh and an old one is collected
 * with its JWK.
 */
const imported = new WeakMap<JWK, Map<string, Imported>>();

export function importKey(jwk: JWK, alg: string): Imported {
  let byAlg = imported.get(jwk);
  if (!byAlg) {
    byAlg = new Map();
    imported.set(jwk, byAlg);
  }
  let key = byAlg.get(alg);
  if (!key) {
    key = importJWK(jwk, alg);
    byAlg.set(alg, key);
    // A key that fails to import is not remembered (the caller sees the error).
    key.catch(() => byAlg.delete(alg));
  }
  return key;
}
