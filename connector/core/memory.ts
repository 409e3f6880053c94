import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";

let collect: (() => void) | null | undefined;

/**
 * Large transfers allocate chunk buffers of 8 MiB outside V8's heap, which
 * V8 collects only once about 64 MiB more of them have piled up since the
 * last collection: on a connector that idles near 75 MiB, that alone nears
 * the memory bound we promise (150 MiB whatever the file size). Above
 * `limitBytes` of resident memory, this asks for a collection now. Cheap
 * when under the limit (one RSS read); a no-op where collection cannot be
 * requested.
 */
export function keepMemoryUnder(limitBytes: number): void {
  const rss = process.memoryUsage.rss();
  if (rss < limitBytes) return;
  // Resident memory stays high after a collection (the allocator keeps what it freed): between
  // the limit and the hard bound above it, collect only when enough buffers are outstanding for
  // one to help, not on every call (a full collection per 8 MiB part cost about 2.9 s of CPU per
  // GiB on each side).
  if (rss < limitBytes + HARD_MARGIN && process.memoryUsage().arrayBuffers < OUTSTANDING_BUFFERS) return;
  if (collect === undefined) {
    try {
      setFlagsFromString("--expose-gc");
      collect = runInNewContext("gc") as () => void;
    } catch {
      collect = null;
    }
  }
  collect?.();
}

/** The resident-memory level above which a transfer asks for a collection. */
export const TRANSFER_RSS_LIMIT = 104 * 1024 * 1024;

/** Buffer memory (live or not yet collected) above which a collection is worth its cost: about three parts in flight plus three dead. */
const OUTSTANDING_BUFFERS = 48 * 1024 * 1024;
/** Above the limit by this much, every call collects. */
const HARD_MARGIN = 16 * 1024 * 1024;
