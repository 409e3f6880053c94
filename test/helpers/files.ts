import { createHash, randomBytes } from "node:crypto";
import { createReadStream } from "node:fs";
import { open } from "node:fs/promises";

const MiB = 1024 * 1024;

/** Writes `size` random bytes to `path` in pieces (never whole in the test process), returns the SHA-256. */
export async function makeFile(path: string, size: number): Promise<string> {
  const hash = createHash("sha256");
  const fh = await open(path, "w");
  for (let done = 0; done < size; ) {
    const piece = randomBytes(Math.min(4 * MiB, size - done));
    hash.update(piece);
    await fh.write(piece);
    done += piece.byteLength;
  }
  await fh.close();
  return hash.digest("hex");
}

/** The SHA-256 of a file, read as a stream. */
export async function sha256File(path: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const c of createReadStream(path)) hash.update(c as Buffer);
  return hash.digest("hex");
}
