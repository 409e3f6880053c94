import { mkdir, readFile } from "node:fs/promises";
import { writeFileAtomic } from "../core/durable-fs.ts";
import { join } from "node:path";
import { CompactSign, exportJWK, generateKeyPair, importJWK, SignJWT, type JWK } from "jose";
import { CONNECT_AUDIENCE, ENROLL_PROOF_TYPE, type EnrollResponse } from "../../wire/index.ts";
import { edgeFetch } from "../core/edge-http.ts";

/** What `ferry connector enroll` leaves in the state folder (mode 0600). */
export type Identity = EnrollResponse & {
  privateJwk: JWK;
  publicJwk: JWK;
  /** X25519: what `encrypt` routes to this connector are encrypted to. */
  encPrivateJwk?: JWK;
  encPublicJwk?: JWK;
  enrolledAt: number;
};

/** Generates the encryption key pair (also for identities enrolled before encryption existed). */
export async function encryptionKeys(): Promise<{ encPrivateJwk: JWK; encPublicJwk: JWK }> {
  const k = await generateKeyPair("ECDH-ES+A256KW", { crv: "X25519", extractable: true });
  return { encPrivateJwk: await exportJWK(k.privateKey), encPublicJwk: await exportJWK(k.publicKey) };
}

export class IdentityError extends Error {
  override readonly name = "IdentityError";
  constructor(
    readonly code: "NOT_ENROLLED" | "UNREADABLE" | "ENROLL_REJECTED" | "EDGE_UNREACHABLE" | "ALREADY_ENROLLED",
    message: string,
  ) {
    super(message);
  }
}

export function identityPath(stateDir: string): string {
  return join(stateDir, "identity.json");
}

/**
 * Problems a person fixes in the set-up (not enrolled, wrong folder, wrong
 * user), as opposed to the edge refusing: the CLI exits 2 for these, like
 * for a config mistake.
 */
export function isSetupProblem(e: IdentityError): boolean {
  return e.code === "NOT_ENROLLED" || e.code === "UNREADABLE" || e.code === "ALREADY_ENROLLED";
}

export async function loadIdentity(stateDir: string): Promise<Identity> {
  const file = identityPath(stateDir);
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") {
      throw new IdentityError(
        "NOT_ENROLLED",
        `${stateDir} holds no identity: this connector is not enrolled yet. Ask an administrator for a token ('ferry admin connector add NAME'), then run 'ferry connector enroll --edge URL --token T --state ${stateDir}' (or correct 'state' in the config)`,
      );
    }
    throw new IdentityError("UNREADABLE", `cannot read ${file} (${code ?? (e as Error).message}); run the connector as the user that enrolled it (the file is mode 0600)`);
  }
  try {
    return JSON.parse(text) as Identity;
  } catch (e) {
    throw new IdentityError("UNREADABLE", `${file} is not valid JSON (${(e as Error).message}); restore it from a backup, or enrol again with 'ferry connector enroll --force'`);
  }
}


/**
 * Enrols this site: generates an Ed25519 key pair locally, proves possession
 * by signing the one-time token, and stores the identity. The private key
 * never leaves the state folder.
 */
export async function enroll(opts: { edge: string; token: string; stateDir: string; force?: boolean }): Promise<Identity> {
  await mkdir(opts.stateDir, { recursive: true, mode: 0o700 });
  if (!opts.force) {
    // Only "nothing there" means free to enrol: an identity that cannot be read is not overwritten without --force.
    const existing = await loadIdentity(opts.stateDir).catch((e: unknown) => {
      if (e instanceof IdentityError && e.code === "NOT_ENROLLED") return null;
      throw e;
    });
    if (existing) throw new IdentityError("ALREADY_ENROLLED", `${opts.stateDir} already holds connector '${existing.connector}'; use another --state or --force`);
  }
  const { publicKey, privateKey } = await generateKeyPair("Ed25519", { extractable: true });
  const proof = await new CompactSign(new TextEncoder().encode(opts.token))
    .setProtectedHeader({ alg: "Ed25519", typ: ENROLL_PROOF_TYPE })
    .sign(privateKey);
  const pub = await exportJWK(publicKey);
  const encKeys = await encryptionKeys();
  const url = new URL("/v1/enroll", opts.edge);
  let res: Response;
  try {
    res = await edgeFetch(url, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ token: opts.token, publicKey: { kty: pub.kty, crv: pub.crv, x: pub.x }, encryptionKey: { kty: "OKP", crv: "X25519", x: encKeys.encPublicJwk.x }, proof }),
    });
  } catch (e) {
    throw new IdentityError("EDGE_UNREACHABLE", `cannot reach the edge at ${opts.edge}: ${(e as Error).cause ?? (e as Error).message}`);
  }
  const body = (await res.json().catch(() => ({}))) as Partial<EnrollResponse> & { detail?: string };
  if (!res.ok) throw new IdentityError("ENROLL_REJECTED", `enrolment refused (${res.status}): ${body.detail ?? res.statusText}`);
  const identity: Identity = {
    tenant: String(body.tenant),
    connector: String(body.connector),
    connectorId: String(body.connectorId),
    edges: body.edges ?? [opts.edge],
    privateJwk: await exportJWK(privateKey),
    publicJwk: pub,
    ...encKeys,
    enrolledAt: Date.now(),
  };
  await writeFileAtomic(identityPath(opts.stateDir), JSON.stringify(identity, null, 2));
  return identity;
}

/** A short-lived session assertion the edge verifies against the enrolled key. */
export async function connectAssertion(identity: Identity): Promise<string> {
  const key = await importJWK(identity.privateJwk, "Ed25519");
  return new SignJWT({})
    .setProtectedHeader({ alg: "Ed25519", typ: "JWT" })
    .setSubject(identity.connectorId)
    .setAudience(CONNECT_AUDIENCE)
    .setIssuedAt()
    .setExpirationTime("2m")
    .sign(key);
}
