import { readFile } from "node:fs/promises";
import { writeFileAtomic } from "./durable-fs.ts";
import { join } from "node:path";
import { createLocalJWKSet, errors, jwtVerify, type JSONWebKeySet, type JWK } from "jose";
import type { EdgeConfigResponse } from "../../wire/index.ts";
import { connectAssertion, type Identity } from "../identity/identity.ts";
import { edgeFetch } from "./edge-http.ts";
import type { Protection } from "../protection/protection.ts";

const FILE = "edge-config.json";
/** The edge's published (public) keys, kept so a restart without the edge can still check what it signed. */
const KEYS_FILE = "edge-keys.json";
/** A statement signed by a key the edge does not publish fetches its keys again at most this often (a rotation). */
const KEYS_REFETCH_MS = 60_000;

/**
 * What checking an edge-signed statement found: its claims; `invalid` (not
 * signed by any key the edge publishes); or `unknown` (the edge's keys could
 * not be had, or a key they lacked could not be asked for again yet: nothing
 * can be said either way).
 */
export type EdgeCheck = { ok: true; claims: Record<string, unknown> } | { ok: false; why: "invalid" } | { ok: false; why: "unknown"; detail: string };

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
  /** Where the keys come from (the edge of the last refresh), when a fetch was last tried, and a fetch under way. */
  private keysFrom: string | null = null;
  private keysTriedAt = 0;
  private keysFetching: Promise<void> | null = null;

  constructor(private readonly stateDir: string) {}

  async load(): Promise<void> {
    const read = <T>(file: string) =>
      readFile(join(this.stateDir, file), "utf8").then(
        (t) => JSON.parse(t) as T,
        () => null,
      );
    this.config = await read<EdgeConfigResponse>(FILE);
    this.edgeKeys = await read<JSONWebKeySet>(KEYS_FILE);
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
    await this.fetchEdgeKeys(edge);
    await writeFileAtomic(join(this.stateDir, FILE), JSON.stringify(conf, null, 2));
    return conf;
  }

  /** Fetches the edge's published keys (current and previous), to check what the edge signs; one fetch at a time. */
  fetchEdgeKeys(edge: string): Promise<void> {
    this.keysFrom = edge;
    this.keysFetching ??= (async () => {
      this.keysTriedAt = Date.now();
      const jwks = await edgeFetch(new URL("/.well-known/jwks.json", edge), { signal: AbortSignal.timeout(15_000) }).then(
        (r) => (r.ok ? (r.json() as Promise<JSONWebKeySet>) : null),
        () => null,
      );
      if (!jwks || !Array.isArray(jwks.keys)) return;
      this.edgeKeys = jwks;
      await writeFileAtomic(join(this.stateDir, KEYS_FILE), JSON.stringify(jwks, null, 2)).catch(() => undefined);
    })().finally(() => {
      this.keysFetching = null;
    });
    return this.keysFetching;
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

  /**
   * Checks an edge-signed statement for this connector. Keys not known yet
   * (a receipt can come before the first refresh after a start) are fetched
   * first, and a key the edge did not publish when they were last fetched
   * (a rotation since) fetches them again, at most once a minute: a
   * statement is called invalid only against keys the edge published, never
   * for want of them.
   */
  async checkEdge(jwt: string, audience: string): Promise<EdgeCheck> {
    const canAsk = () => this.keysFrom !== null && Date.now() - this.keysTriedAt >= KEYS_REFETCH_MS;
    if (this.keysFetching) await this.keysFetching;
    if (!this.edgeKeys && canAsk()) await this.fetchEdgeKeys(this.keysFrom as string);
    let res = await this.verifyWithKeys(jwt, audience);
    if (res === "no-key" && canAsk()) {
      await this.fetchEdgeKeys(this.keysFrom as string);
      res = await this.verifyWithKeys(jwt, audience);
      if (res === "no-key") res = "invalid";
    }
    if (res === "no-keys") return { ok: false, why: "unknown", detail: "the edge's published keys could not be fetched" };
    if (res === "no-key") return { ok: false, why: "unknown", detail: "signed by a key the edge did not publish when last asked (asked again at most once a minute)" };
    if (res === "invalid") return { ok: false, why: "invalid" };
    return { ok: true, claims: res };
  }

  private async verifyWithKeys(jwt: string, audience: string): Promise<Record<string, unknown> | "no-keys" | "no-key" | "invalid"> {
    if (!this.edgeKeys) return "no-keys";
    try {
      // One key set per set of published keys: it imports each key once, not per receipt.
      if (this.edgeKeySet?.keys !== this.edgeKeys) this.edgeKeySet = { keys: this.edgeKeys, set: createLocalJWKSet(this.edgeKeys) };
      return (await jwtVerify(jwt, this.edgeKeySet.set, { issuer: "ferry-edge", audience, algorithms: ["ES256"] })).payload;
    } catch (e) {
      return e instanceof errors.JWKSNoMatchingKey ? "no-key" : "invalid";
    }
  }

  /** The enrolled signing key of a source connector, if this connector receives from it. */
  senderKey(connector: string): JWK | null {
    return (this.config?.keys[connector]?.sign as JWK | undefined) ?? null;
  }
}
