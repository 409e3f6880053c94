import type { Hash } from "node:crypto";
import { Transform } from "node:stream";

/** A pass-through stream that feeds every chunk to `hash` and counts its bytes: digests and sizes taken on the way through a pipeline. */
export function hashTap(hash: Hash, count: (bytes: number) => void): Transform {
  return new Transform({
    transform(chunk: Buffer, _enc, done) {
      hash.update(chunk);
      count(chunk.byteLength);
      done(null, chunk);
    },
  });
}
