import { createHash, randomBytes } from "node:crypto";
import { copyFile, lstat, mkdir, open, rename, unlink } from "node:fs/promises";
import { dirname, join } from "node:path";
import type { DeliveryLog, Intent } from "./delivery-log.ts";
import { fsyncPath } from "../../core/durable-fs.ts";
import { safeInboxName, UnsafeNameError } from "./names.ts";

/** `file`: a large payload already on disk and verified against `sha256` (then `payload` is empty). */
export type InboxMessage = { dseq: number; name: string; payload: Uint8Array; sha256: string; file?: string };
export type CollisionPolicy = "suffix" | "overwrite" | "fail";

export class InboxError extends Error {
  override readonly name = "InboxError";
  constructor(
    readonly code: "GAP" | "DIGEST" | "COLLISION",
    message: string,
    readonly expected?: number,
  ) {
    super(message);
  }
}

const TMP = ".ferry-tmp";

async function exists(p: string): Promise<boolean> {
  return lstat(p).then(
    () => true,
    () => false,
  );
}


/** Moves a file (a rename; across file systems a copy, fsynced, then the original removed). */
async function moveDurably(from: string, to: string): Promise<void> {
  try {
    await rename(from, to);
    return;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "EXDEV") throw e;
  }
  await copyFile(from, to);
  await fsyncPath(to);
  await unlink(from);
}

/**
 * Exactly-once delivery into a folder. Each payload is written to a
 * temporary file and fsynced; the intended renames are recorded in the
 * delivery log; then the files are renamed into place and the stream's mark
 * advances. After a crash, an intent whose temporary file is gone was
 * renamed (it counts as delivered); one whose temporary file remains is
 * finished. No half-written file ever carries its final name.
 */
export class FileInbox {
  private readonly collisions: CollisionPolicy;

  constructor(private readonly opts: { dir: string; log: DeliveryLog; collisions?: CollisionPolicy }) {
    this.collisions = opts.collisions ?? "suffix";
  }

  async recover(): Promise<void> {
    for (const [stream, intents] of this.opts.log.allPending()) {
      let upTo = this.opts.log.hwm(stream);
      for (const it of intents.sort((a, b) => a.dseq - b.dseq)) {
        if (await exists(it.tmp)) {
          await mkdir(dirname(it.final), { recursive: true });
          await rename(it.tmp, it.final);
          await fsyncPath(dirname(it.final));
        }
        upTo = Math.max(upTo, it.dseq);
      }
      await this.opts.log.commit(stream, upTo);
    }
  }

  async deliver(stream: string, msgs: InboxMessage[]): Promise<{ hwm: number; delivered: { dseq: number; path: string }[]; duplicates: number }> {
    const hwm = this.opts.log.hwm(stream);
    const fresh = msgs.filter((m) => m.dseq > hwm).sort((a, b) => a.dseq - b.dseq);
    const duplicates = msgs.length - fresh.length;
    if (fresh.length === 0) return { hwm, delivered: [], duplicates };
    fresh.forEach((m, i) => {
      if (m.dseq !== hwm + 1 + i) throw new InboxError("GAP", `stream ${stream} expected position ${hwm + 1 + i}, got ${m.dseq}`, hwm + 1 + i);
    });
    for (const m of fresh) {
      if (m.file) continue;
      const digest = createHash("sha256").update(m.payload).digest("hex");
      if (digest !== m.sha256) throw new InboxError("DIGEST", `position ${m.dseq} of ${stream}: payload digest ${digest} does not match the envelope's ${m.sha256}`);
    }
    const tmpDir = join(this.opts.dir, TMP);
    await mkdir(tmpDir, { recursive: true });
    const intents: Intent[] = [];
    const taken = new Set<string>();
    for (const m of fresh) {
      const name = safeInboxName(m.name);
      const tmp = join(tmpDir, `${randomBytes(8).toString("hex")}.part`);
      if (m.file) {
        await moveDurably(m.file, tmp);
        intents.push({ dseq: m.dseq, tmp, final: await this.finalPath(name, taken) });
        continue;
      }
      const fh = await open(tmp, "wx", 0o644);
      try {
        await fh.writeFile(m.payload);
        await fh.sync();
      } finally {
        await fh.close();
      }
      intents.push({ dseq: m.dseq, tmp, final: await this.finalPath(name, taken) });
    }
    await fsyncPath(tmpDir);
    // Names are decided before the intent is durable: recovery renames to exactly these.
    await this.opts.log.begin(stream, intents);
    const dirs = new Set<string>();
    for (const it of intents) {
      await mkdir(dirname(it.final), { recursive: true });
      await rename(it.tmp, it.final);
      dirs.add(dirname(it.final));
    }
    for (const d of dirs) await fsyncPath(d);
    const upTo = (fresh[fresh.length - 1] as InboxMessage).dseq;
    await this.opts.log.commit(stream, upTo);
    return { hwm: upTo, delivered: intents.map((i) => ({ dseq: i.dseq, path: i.final })), duplicates };
  }

  private async finalPath(name: string, taken: Set<string>): Promise<string> {
    // A symlinked folder inside the inbox must not carry a file elsewhere.
    const parts = name.split("/");
    for (let i = 1; i < parts.length; i++) {
      const st = await lstat(join(this.opts.dir, ...parts.slice(0, i))).catch(() => null);
      if (st && !st.isDirectory()) throw new UnsafeNameError(name, `'${parts.slice(0, i).join("/")}' in the inbox is not a plain folder`);
    }
    const want = join(this.opts.dir, ...parts);
    if (this.collisions === "overwrite" && (await lstat(want).catch(() => null))?.isSymbolicLink()) {
      throw new UnsafeNameError(name, "the existing file is a symlink");
    }
    if (this.collisions === "overwrite") return want;
    if (!taken.has(want) && !(await exists(want))) {
      taken.add(want);
      return want;
    }
    if (this.collisions === "fail") throw new InboxError("COLLISION", `${want} exists and the channel's collision policy is 'fail'`);
    const dot = want.lastIndexOf(".");
    const slash = want.lastIndexOf("/");
    const [stem, ext] = dot > slash + 1 ? [want.slice(0, dot), want.slice(dot)] : [want, ""];
    for (let i = 1; ; i++) {
      const p = `${stem} (${i})${ext}`;
      if (!taken.has(p) && !(await exists(p))) {
        taken.add(p);
        return p;
      }
    }
  }
}
