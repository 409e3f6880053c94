import { open, rename, type FileHandle } from "node:fs/promises";
import { dirname } from "node:path";

/**
 * The two file-system moves every durable piece of the connector relies on
 * (spool state, delivery logs, identity, inbox), written once.
 */

/** fsync a file or folder: for a folder, it makes renames and deletions in it durable. */
export async function fsyncPath(path: string): Promise<void> {
  const fh = await open(path, "r");
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

let tmpCounter = 0;

/** Temp file, fsync, rename, fsync the folder: after a crash the old or the new content is there, whole. */
export async function writeFileAtomic(path: string, data: string | Uint8Array, mode = 0o600): Promise<void> {
  // Unique per call: two writes of one file in flight must not rename each other's temporary file away.
  const tmp = `${path}.tmp-${process.pid}-${++tmpCounter}`;
  const fh = await open(tmp, "w", mode);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, path);
  await fsyncPath(dirname(path));
}

/**
 * Writes all of `data` at `position` (the file's end when null). A single
 * write(2) may write fewer bytes than asked, e.g. on a nearly full disk,
 * without an error; the next one then fails with ENOSPC. Counting the short
 * write as whole would record bytes that are not there.
 */
export async function writeAll(fh: FileHandle, data: Uint8Array, position: number | null = null): Promise<void> {
  for (let done = 0; done < data.byteLength; ) {
    const { bytesWritten } = await fh.write(data, done, data.byteLength - done, position === null ? null : position + done);
    if (bytesWritten <= 0) throw Object.assign(new Error(`wrote nothing of ${data.byteLength - done} bytes`), { code: "EIO" });
    done += bytesWritten;
  }
}
