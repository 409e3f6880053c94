// A writer for the kill -9 test: appends forever, printing each seq only
// after append() resolved (after fsync). Whatever it printed must survive.
import { createHash, randomBytes } from "node:crypto";
import { Spool } from "./spool.ts";

const spool = await Spool.open(process.argv[2] as string, { segmentBytes: 64 * 1024 });
for (let i = 0; ; i++) {
  const payload = randomBytes(100 + (i % 900));
  const recs = await spool.append("orders", [
    { id: `k-${i}-${randomBytes(4).toString("hex")}`, createdAt: Date.now(), contentType: "application/octet-stream", payload, sha256: createHash("sha256").update(payload).digest("hex") },
  ]);
  for (const r of recs) process.stdout.write(`${r.seq}\n`);
}
