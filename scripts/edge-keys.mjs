// The local edge's ES256 signing keys (.state/edge-keys.json, newest first).
// `npm start` creates the first; `npm run rotate-edge-key` puts a new one in
// front and keeps the previous one for the overlap (older ones are dropped).
import { generateKeyPairSync, randomBytes } from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";

function newKey() {
  const { privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  return { ...privateKey.export({ format: "jwk" }), kid: `edge-${new Date().toISOString().slice(0, 10)}-${randomBytes(3).toString("hex")}` };
}

export function loadOrCreate(file) {
  if (!existsSync(file)) writeFileSync(file, JSON.stringify([newKey()]), { mode: 0o600 });
  return readFileSync(file, "utf8").trim();
}

export function rotate(file) {
  const keys = existsSync(file) ? JSON.parse(readFileSync(file, "utf8")) : [];
  const next = [newKey(), ...keys].slice(0, 2);
  writeFileSync(file, JSON.stringify(next), { mode: 0o600 });
  return next.map((k) => k.kid);
}

if (process.argv[1] && import.meta.url.endsWith(process.argv[1].split("/").pop())) {
  const file = process.argv[2];
  console.log(`edge signing keys now: ${rotate(file).join(", ")} (restart the edge to use the new one; the previous stays published)`);
}
