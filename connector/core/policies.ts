import { readFile } from "node:fs/promises";
import { writeFileAtomic } from "./durable-fs.ts";
import { join } from "node:path";
import { createLocalJWKSet, jwtVerify, type JSONWebKeySet, type JWK } from "jose";
import type { EdgeConfigResponse } from "../../wire/index.ts";
import { connectAssertion, type Identity } from "../identity/identity.ts";
import { edgeFetch } from "./edge-http.ts";
import type { Protection } from "../protection/protection.ts";

const FILE = "edge-config.json";

export type SendPolicy = { protection: Protection; compress: "none" | "gzip"; recipients: { name: string; jwk: JWK }[]; missingKeys: string[] };

/**
 * What the edge told this connector about its routes and its peers' keys
 * (`GET /v1/config`), cached on disk so a restart without the edge still
 * knows how each channel must be protected. Sending fails closed: a channel
 * whose policy is unknown waits.
 */
export class Policies {
  private config: EdgeConfigResponse | null = null;
  private edgeKeys: JSONWebKeySet | null = null;
  private edgeKeySet: { keys: JSONWebKeySet; set: ReturnType<typeof createLocalJWKSet> } | null = null;

  constructor(private readonly stateDir: string) {}

  async load(): Promise<void> {
    this.config = await readFile(join(this.stateDir, FILE), "utf8").then(
      (t) => JSON.parse(t) as EdgeConfigResponse,
      () => null,
    );
  }

  get current(): EdgeConfigResponse | null {
    return this.config;
  }

  async refresh(identity: Identity, edge: string): Promise<EdgeConfigResponse> {
    const res = await edgeFetch(new URL("/v1/config", edge), { headers: { authorization: `Bearer ${await connectAssertion(identity)}` }, signal: AbortSignal.timeout(15_000) });
    if (!res.ok) throw new Error(`the edge answered ${res.status} to /v1/config`);
    const conf = (await res.json()) as EdgeConfigResponse;
    // Older edges sent no keys: treat as none known.
    conf.keys ??= {};
    this.config = conf;
    // The edge's published keys (current and previous), to check what the edge signs.
    const jwks = await edgeFetch(new URL("/.well-known/jwks.json", edge), { signal: AbortSignal.timeout(15_000) }).then((r) => (r.ok ? (r.json() as Promise<JSONWebKeySet>) : null), () => null);
    if (jwks) this.edgeKeys = jwks;
    await writeFileAtomic(join(this.stateDir, FILE), JSON.stringify(conf, null, 2));
    return conf;
  }

  /**
   * How `connector/channel` must send, or null while it is not known: no
   * config yet, or no route from this source in it. An unknown route means
   * an unknown protection, so nothing leaves (a route added with `encrypt`
   * after the last refresh must never see plaintext, not even a refusal).
   */
  sending(connector: string, channel: string): SendPolicy | null {
    if (!this.config) return null;
    const source = `${connector}/${channel}`;
    const routes = this.config.outgoing.filter((r) => r.source === source);
    if (routes.length === 0) return null;
    const protection = (routes[0]?.protection ?? "none") as Protection;
    const recipients: SendPolicy["recipients"] = [];
    const missingKeys: string[] = [];
    if (protection === "encrypt") {
      for (const r of routes) {
        const peer = r.destination.slice(0, r.destination.indexOf("/"));
        const jwk = this.config.keys[peer]?.encrypt;
        if (jwk) recipients.push({ name: peer, jwk: jwk as JWK });
        else missingKeys.push(peer);
      }
    }
    return { protection, compress: routes[0]?.compress ?? "none", recipients, missingKeys };
  }

  /** Checks an edge-signed statement for this connector; its claims, or null. */
  async verifyEdge(jwt: string, audience: string): Promise<Record<string, unknown> | null> {
    if (!this.edgeKeys) return null;
    try {
      // One key set per set of published keys: it imports each key once, not per receipt.
      if (this.edgeKeySet?.keys !== this.edgeKeys) this.edgeKeySet = { keys: this.edgeKeys, set: createLocalJWKSet(this.edgeKeys) };
      return (await jwtVerify(jwt, this.edgeKeySet.set, { issuer: "ferry-edge", audience, algorithms: ["ES256"] })).payload;
    } catch {
      return null;
    }
  }

  /** The enrolled signing key of a source connector, if this connector receives from it. */
  senderKey(connector: string): JWK | null {
    return (this.config?.keys[connector]?.sign as JWK | undefined) ?? null;
  }
}
