import { z } from "zod";
import { Address, Name } from "./address.ts";

/**
 * Request bodies of the HTTP APIs (admin under /api, enrolment under /v1),
 * shared by the edge (validation) and the CLI (building requests), so the two
 * can never disagree on a field.
 */

/**
 * Durations are written `30s`, `15m`, `12h`, `7d` or a number of seconds.
 * The message is the union's own: when no branch matches, zod reports the
 * union ("Invalid input"), never the regex's message, so it is given here.
 */
export const Duration = z.union(
  [
    z.number().int().positive(),
    z
      .string()
      .regex(/^\d+[smhd]$/)
      .transform((s) => {
        const n = Number(s.slice(0, -1));
        const unit = { s: 1, m: 60, h: 3600, d: 86400 }[s.slice(-1) as "s" | "m" | "h" | "d"];
        return n * unit;
      }),
  ],
  { error: "use a duration like 30s, 15m, 12h, 7d (or a number of seconds)" },
);

export const Protection = z.enum(["none", "sign", "encrypt"]);
/** How a route's large payloads may travel: gzip-compressed by the sender when a sample shows it pays. */
export const Compression = z.enum(["none", "gzip"], { error: "compress is 'none' or 'gzip'" });
/**
 * What the event log records of a route's messages: "full", every message's
 * lifecycle (the audit trail); "exceptions", only what went wrong or was done
 * by hand (rejections, expiries, dead letters, failed attempts, redrives,
 * discards, purges).
 */
export const LogLevel = z.enum(["full", "exceptions"], { error: "log is 'full' (every message's lifecycle) or 'exceptions' (only what went wrong)" });

export const ConnectorCreate = z.strictObject({
  name: Name,
  /** Minutes the enrolment token stays valid. */
  tokenTtlMinutes: z.number().int().min(1).max(7 * 24 * 60).default(60),
});
export type ConnectorCreate = z.input<typeof ConnectorCreate>;

export const RouteCreate = z.strictObject({
  source: Address,
  destination: Address,
  protection: Protection.default("none"),
  compress: Compression.default("none"),
  log: LogLevel.default("full"),
  /** Seconds a message may wait for delivery before it expires. */
  ttl: Duration.default(7 * 86400),
  archive: z.boolean().default(false),
  retention: Duration.optional(),
  region: z.string().regex(/^[a-z]{2,8}$/, "a jurisdiction such as eu or fedramp").optional(),
  /** Channel fields to record in the event log (e.g. filename, partnerRef); all when omitted. */
  fields: z.array(z.string().regex(/^[a-zA-Z][a-zA-Z0-9_.-]{0,63}$/, "a field name such as filename")).max(32).optional(),
});
export type RouteCreate = z.input<typeof RouteCreate>;

/** A JWK for an Ed25519 public key, the only kind a connector enrols with. */
export const Ed25519PublicJwk = z.object({
  kty: z.literal("OKP"),
  crv: z.literal("Ed25519"),
  x: z.string().regex(/^[A-Za-z0-9_-]{43}$/, "32 bytes, base64url"),
});

/** A JWK for an X25519 public key: what `encrypt` routes encrypt to. */
export const X25519PublicJwk = z.object({
  kty: z.literal("OKP"),
  crv: z.literal("X25519"),
  x: z.string().regex(/^[A-Za-z0-9_-]{43}$/, "32 bytes, base64url"),
});
export type X25519PublicJwk = z.infer<typeof X25519PublicJwk>;

/**
 * A connector registers or rotates its keys. With a new signing key it also
 * proves possession: `proof` is a compact JWS over `rotate:<connectorId>`,
 * made with the new key; the request itself carries an assertion by the old.
 */
export const KeysRequest = z.strictObject({
  encryptionKey: X25519PublicJwk,
  signingKey: Ed25519PublicJwk.optional(),
  proof: z.string().max(4096).optional(),
});
export const ROTATE_PROOF_TYPE = "ferry-rotate+jws";

export const EnrollRequest = z.strictObject({
  token: z.string().min(16).max(256),
  publicKey: Ed25519PublicJwk,
  encryptionKey: X25519PublicJwk.optional(),
  /** A compact JWS over the token, made with the new private key. */
  proof: z.string().max(4096),
});
export type EnrollRequest = z.infer<typeof EnrollRequest>;

export type EnrollResponse = {
  tenant: string;
  connector: string;
  connectorId: string;
  /** Edge URLs to connect to, first one preferred. */
  edges: string[];
};

/** The audience of a connector's session assertion (a short-lived JWT). */
export const CONNECT_AUDIENCE = "ferry:connect";
export const ENROLL_PROOF_TYPE = "ferry-enroll+jws";

/** What `GET /v1/config` tells a connector. */
export type EdgeConfigResponse = {
  tenant: string;
  connector: string;
  edges: string[];
  heartbeat: number;
  refreshSeconds: number;
  outgoing: { source: string; destination: string; protection: "none" | "sign" | "encrypt"; compress?: "none" | "gzip" }[];
  incoming: { source: string; destination: string; protection: "none" | "sign" | "encrypt" }[];
  /** Public keys of the connectors at the other ends of those routes. */
  keys: Record<string, { sign: { kty: "OKP"; crv: "Ed25519"; x: string }; encrypt: X25519PublicJwk | null }>;
};
