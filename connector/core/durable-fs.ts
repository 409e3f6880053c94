import { constants, fstatSync } from "node:fs";
import { open, readFile, rename, type FileHandle } from "node:fs/promises";
import { dirname } from "node:path";

/**
 * The file-system moves every durable piece of the connector relies on
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

/** Past this many bytes of journal, a save also replaces the snapshot and empties the journal. */
const JOURNAL_BYTES = 1024 * 1024;
/** A file kept open (AppendHandle) and unused this long is closed; the next use opens it again. */
const IDLE_CLOSE_MS = 1000;

/**
 * A file kept open for appending while it is in use: opening and closing it
 * around each write cost more than the write (about a quarter of a
 * millisecond of the event loop each time, measured with messages sent one
 * at a time). Uses run one at a time. The handle closes on `close()`, after
 * IDLE_CLOSE_MS unused, and after a use that failed; the next use opens it
 * again. A file removed under the open handle fails the next use, as an
 * open by name would (writing into a file no name reaches is no write).
 */
export class AppendHandle {
  private fh: FileHandle | null = null;
  private chain: Promise<unknown> = Promise.resolve();
  private usedAt = 0;
  private idle: NodeJS.Timeout | null = null;

  constructor(
    readonly path: string,
    /** open(2) flags; O_APPEND is added. */
    private readonly flags: number,
    private readonly mode = 0o600,
  ) {}

  /** Runs `fn` with the open handle, after every use asked for before it. */
  run<T>(fn: (fh: FileHandle) => Promise<T>): Promise<T> {
    const use = this.chain.then(async () => {
      this.usedAt = Date.now();
      if (!this.fh) {
        this.fh = await open(this.path, this.flags | constants.O_APPEND, this.mode);
        if (!this.idle) this.watchIdle(IDLE_CLOSE_MS);
      }
      const fh = this.fh;
      try {
        if (fstatSync(fh.fd).nlink === 0) throw Object.assign(new Error(`ENOENT: ${this.path} was removed`), { code: "ENOENT" });
        return await fn(fh);
      } catch (e) {
        // The next use starts from a fresh handle.
        await this.release();
        throw e;
      }
    });
    this.chain = use.catch(() => undefined);
    return use;
  }

  /** Closes the handle once the uses asked for are done (a later use opens it again). */
  close(): Promise<void> {
    if (this.idle) clearTimeout(this.idle);
    this.idle = null;
    const done = this.chain.then(() => this.release());
    this.chain = done;
    return done;
  }

  private async release(): Promise<void> {
    const fh = this.fh;
    this.fh = null;
    await fh?.close().catch(() => undefined);
  }

  private watchIdle(delay: number): void {
    this.idle = setTimeout(() => {
      this.idle = null;
      const left = this.usedAt + IDLE_CLOSE_MS - Date.now();
      if (left > 0) this.watchIdle(left);
      // Behind any use in progress: never under a write.
      else this.chain = this.chain.then(() => this.release());
    }, delay);
    // Never what keeps a process alive.
    this.idle.unref();
  }
}

/** Reads a file, or null if there is none. */
async function readIfThere(path: string): Promise<string | null> {
  try {
    return await readFile(path, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw e;
  }
}

/**
 * A small JSON state saved often and durably: the spool's marks (every
 * puback) and a receiver's delivery marks (twice per delivered frame, once
 * before the handler sees it). Replacing the file each time costs a new
 * file, two fsyncs and a rename, about 0.7 ms on this machine's disk, on the
 * path of every message sent one at a time (docs/performance.md); here a
 * save appends the whole state as one line to `<file>.journal` and
 * fdatasyncs it (about 0.25 ms). The snapshot `<file>` (the format the state
 * always had) is replaced at open and when the journal passes
 * JOURNAL_BYTES, and always with the state of the journal's last line, so
 * that line, when there is one, is never older than the snapshot. A line
 * cut short by a crash was never reported saved: open skips it, and starts
 * the journal afresh.
 */
export class JournaledState<T> {
  private chain: Promise<void> = Promise.resolve();
  private queued: Promise<void> | null = null;
  private bytes = 0;
  /** The journal, kept open while saves come. O_APPEND without O_CREAT: it exists since open (a missing one is an error, not a silent new file). */
  private readonly journalFile: AppendHandle;

  private constructor(
    private readonly file: string,
    /** The state: change it in place, then `save()`. */
    readonly state: T,
    /** Whether anything was ever saved (false: `state` is the fresh one). */
    readonly existed: boolean,
  ) {
    this.journalFile = new AppendHandle(`${file}.journal`, constants.O_WRONLY);
  }

  private get journal(): string {
    return this.journalFile.path;
  }

  /** The newest state saved at `file` (or `fresh()` if none). Throws when the snapshot is not JSON. */
  static async open<T>(file: string, fresh: () => T): Promise<JournaledState<T>> {
    const snapshot = await readIfThere(file);
    let state: T | undefined;
    const lines = (await readIfThere(`${file}.journal`)) ?? "";
    // Only lines ended by a newline were written whole; the newest that parses wins.
    for (let end = lines.lastIndexOf("\n"); end > 0 && state === undefined; end = lines.lastIndexOf("\n", end - 1)) {
      try {
        state = JSON.parse(lines.slice(lines.lastIndexOf("\n", end - 1) + 1, end)) as T;
      } catch {
        // A line torn by a crash: never reported saved.
      }
    }
    if (state === undefined && snapshot !== null) state = JSON.parse(snapshot) as T;
    const store = new JournaledState<T>(file, state ?? fresh(), state !== undefined);
    if (lines.length > 0) await writeFileAtomic(file, JSON.stringify(store.state));
    // The journal is created (or emptied) here, its folder entry synced once: a save only appends.
    const fh = await open(store.journal, "w", 0o600);
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
    await fsyncPath(dirname(file));
    return store;
  }

  /**
   * Makes the state as it is now durable. Saves are written one at a time;
   * calls that arrive while one waits share it (it serialises the state
   * when it starts, so it holds every change made before the call).
   */
  save(): Promise<void> {
    if (this.queued) return this.queued;
    const run = this.chain.then(() => {
      this.queued = null;
      return this.write(JSON.stringify(this.state));
    });
    this.queued = run;
    this.chain = run.catch(() => undefined);
    return run;
  }

  /**
   * Closes the journal's handle once the saves asked for are written (a
   * later save opens it again). Owners call it when they stop; a handle
   * left open closes itself after IDLE_CLOSE_MS without saves.
   */
  close(): Promise<void> {
    return this.chain.then(() => this.journalFile.close());
  }

  private async write(text: string): Promise<void> {
    const line = Buffer.from(`${text}\n`);
    await this.journalFile.run(async (fh) => {
      await writeAll(fh, line);
      await fh.datasync();
      this.bytes += line.byteLength;
      if (this.bytes < JOURNAL_BYTES) return;
      // The line is durable first: a crash before the truncation leaves a journal whose last line is the snapshot.
      await writeFileAtomic(this.file, text);
      await fh.truncate(0);
      await fh.sync();
      this.bytes = 0;
    });
  }
}
