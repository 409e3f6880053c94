import { exportJWK, importJWK, SignJWT, type JWK } from "jose";

/**
 * The edge's own signing keys (ES256), from the EDGE_SIGNING_KEYS secret: a
 * JSON array of private JWKs, newest first, each with a `kid`. The newest
 * signs; all are published at /.well-known/jwks.json, so a rotation (add a
 * key in front, drop the oldest later) leaves an overlap in which tokens
 * signed by the previous key still verify.
 */
type SigningKey = Awaited<ReturnType<typeof importJWK>>;
type Keys = { signing: { kid: string; key: SigningKey }; jwks: { keys: JWK[] } };
/** Only what this module reads of the environment (so Node tools can use it too). */
type KeyEnv = { EDGE_SIGNING_KEYS?: string | undefined };
let cached: { source: string; keys: Keys } | null = null;

export async function edgeKeys(env: KeyEnv): Promise<Keys | null> {
  const source = env.EDGE_SIGNING_KEYS;
  if (!source) return null;
  if (cached?.source === source) return cached.keys;
  // JSON, or base64url of it (how `npm start` passes it on the command line).
  const text = source.trimStart().startsWith("[") ? source : new TextDecoder().decode(Uint8Array.from(atob(source.replace(/-/g, "+").replace(/_/g, "/")), (ch) => ch.charCodeAt(0)));
  const jwks = JSON.parse(text) as (JWK & { kid: string })[];
  const first = jwks[0];
  if (!first) return null;
  const publics = await Promise.all(
    jwks.map(async (k) => {
      const { d: _private, ...pub } = k;
      return { ...(await exportJWK(await importJWK({ ...pub, alg: "ES256" }, "ES256"))), kid: k.kid, alg: "ES256", use: "sig" };
    }),
  );
  const keys: Keys = { signing: { kid: first.kid, key: await importJWK({ ...first, alg: "ES256" }, "ES256") }, jwks: { keys: publics } };
  cached = { source, keys };
  return keys;
}

/** An edge-signed statement (a short JWT): e.g. that messages were delivered, or expired. */
export async function edgeSign(env: KeyEnv, claims: Record<string, unknown>, audience: string): Promise<string | null> {
  const keys = await edgeKeys(env);
  if (!keys) return null;
  return new SignJWT(claims)
    .setProtectedHeader({ alg: "ES256", kid: keys.signing.kid, typ: "JWT" })
    .setIssuer("ferry-edge")
    .setAudience(audience)
    .setIssuedAt()
    .setExpirationTime("30d")
    .sign(keys.signing.key);
}
