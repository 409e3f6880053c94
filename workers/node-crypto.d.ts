// The pieces of node:crypto the edge uses (nodejs_compat, wrangler.toml):
// synchronous SHA-256 for the event log's hash chain, and the webhook
// signatures' HMAC, fed piece by piece for a hosted egress body streamed from
// R2 (WebCrypto's takes its input whole). Declared here rather than pulling
// all of @types/node into the Workers' type world.
declare module "node:crypto" {
  interface Hash {
    update(data: string | Uint8Array): Hash;
    digest(encoding: "hex"): string;
  }
  export function createHash(algorithm: "sha256"): Hash;
  export function createHmac(algorithm: "sha256", key: string): Hash;
}
