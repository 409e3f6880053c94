// The one piece of node:crypto the edge uses (nodejs_compat, wrangler.toml):
// synchronous SHA-256 for the event log's hash chain. Declared here rather
// than pulling all of @types/node into the Workers' type world.
declare module "node:crypto" {
  interface Hash {
    update(data: string | Uint8Array): Hash;
    digest(encoding: "hex"): string;
  }
  export function createHash(algorithm: "sha256"): Hash;
}
