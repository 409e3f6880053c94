import { constants } from "node:fs";
import { rename, stat } from "node:fs/promises";
import { AppendHandle, writeAll } from "./durable-fs.ts";

/** receipts.jsonl moves aside past this size. */
export const RECEIPTS_FILE_BYTES = 64 * 1024 * 1024;
/** Files moved aside that are kept (receipts.jsonl.1 is the newest); the oldest goes. */
export const RECEIPTS_KEPT = 4;

const missingIsFine = (e: unknown) => {
  if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
};

/**
 * The signed receipts a sender keeps (`state/receipts.jsonl`), one JSON
 * line each, appended through a handle kept open (one at a time, a receipt
 * arrives per message). Bounded, so the state of a connector installed and
 * forgotten does not grow without end: past RECEIPTS_FILE_BYTES the file
 * becomes `receipts.jsonl.1`, older ones move up to `.4` and the oldest
 * goes (about 320 MiB in all). Every receipt is also in the edge's
 * hash-chained log for the log's retention (`ferry admin trace`).
 */
export class ReceiptLog {
  private size: number | null = null;
  private queue: Promise<void> = Promise.resolve();
  private readonly file: AppendHandle;

  constructor(
    readonly path: string,
    private readonly maxBytes = RECEIPTS_FILE_BYTES,
    private readonly kept = RECEIPTS_KEPT,
  ) {
    this.file = new AppendHandle(path, constants.O_WRONLY | constants.O_CREAT);
  }

  /** Appends one line (no newline in it); in the order called. */
  append(line: string): Promise<void> {
    const bytes = Buffer.from(`${line}\n`);
    const done = this.queue.then(async () => {
      this.size ??= await stat(this.path).then((s) => s.size, () => 0);
      if (this.size > 0 && this.size + bytes.byteLength > this.maxBytes) {
        await this.file.close();
        await this.rotate();
        this.size = 0;
      }
      await this.file.run((fh) => writeAll(fh, bytes));
      this.size += bytes.byteLength;
    });
    // A failed append (a full disk) is the caller's to report; the next one tries again from the file's real size.
    this.queue = done.catch(() => {
      this.size = null;
    });
    return done;
  }

  close(): Promise<void> {
    return this.queue.then(() => this.file.close());
  }

  private async rotate(): Promise<void> {
    for (let k = this.kept; k >= 2; k--) await rename(`${this.path}.${k - 1}`, `${this.path}.${k}`).catch(missingIsFine);
    await rename(this.path, `${this.path}.1`).catch(missingIsFine);
  }
}
