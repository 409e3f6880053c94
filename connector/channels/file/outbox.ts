import { lstat, readdir, unlink } from "node:fs/promises";
import { dirname, join, relative, sep } from "node:path";
import { fsyncPath } from "../../core/durable-fs.ts";

export type PickupRule = "stable" | "done-marker";
export type OutboxFile = { path: string; name: string; size: number; mtimeMs: number; ino: number };
export type OutboxOptions = { dir: string; rule?: PickupRule; recursive?: boolean; stablePolls?: number };


/** Temporary names applications write under before renaming into the outbox. */
function ignored(name: string): boolean {
  return name.startsWith(".") || /\.(tmp|part|done)$/i.test(name);
}

/**
 * Finds the files in an outbox that are complete. "stable": size and mtime
 * unchanged across consecutive scans (a file seen for the first time is
 * never ready); "done-marker": X is ready once X.done exists. Symlinks and
 * anything but regular files are ignored, so the outbox cannot be used to
 * send files from elsewhere.
 */
export class OutboxScanner {
  private readonly seen = new Map<string, { size: number; mtimeMs: number; ino: number; polls: number }>();
  private readonly rule: PickupRule;
  private readonly stablePolls: number;

  constructor(private readonly opts: OutboxOptions) {
    this.rule = opts.rule ?? "stable";
    this.stablePolls = opts.stablePolls ?? 2;
  }

  async scan(): Promise<OutboxFile[]> {
    const found = await this.list(this.opts.dir);
    const names = new Set(found.map((f) => f.path));
    const ready: OutboxFile[] = [];
    for (const f of found) {
      if (this.rule === "done-marker") {
        if (names.has(`${f.path}.done`) || (await lstat(`${f.path}.done`).then(() => true, () => false))) ready.push(f);
        continue;
      }
      const prev = this.seen.get(f.path);
      if (prev && prev.size === f.size && prev.mtimeMs === f.mtimeMs && prev.ino === f.ino) {
        prev.polls++;
        if (prev.polls >= this.stablePolls) ready.push(f);
      } else {
        this.seen.set(f.path, { size: f.size, mtimeMs: f.mtimeMs, ino: f.ino, polls: 1 });
      }
    }
    for (const p of this.seen.keys()) if (!names.has(p)) this.seen.delete(p);
    return ready.sort((a, b) => a.mtimeMs - b.mtimeMs || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  private async list(dir: string): Promise<OutboxFile[]> {
    const out: OutboxFile[] = [];
    let entries;
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return out;
      throw e;
    }
    for (const d of entries) {
      const path = join(dir, d.name);
      if (d.isDirectory()) {
        if (this.opts.recursive && !d.name.startsWith(".")) out.push(...(await this.list(path)));
        continue;
      }
      if (!d.isFile() || ignored(d.name)) continue;
      const st = await lstat(path).catch(() => null);
      if (!st?.isFile()) continue;
      out.push({ path, name: relative(this.opts.dir, path).split(sep).join("/"), size: st.size, mtimeMs: st.mtimeMs, ino: st.ino });
    }
    return out;
  }

  /** Removes a captured source (and its marker), durably. */
  async release(file: { path: string }): Promise<void> {
    await unlink(file.path).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== "ENOENT") throw e;
    });
    await unlink(`${file.path}.done`).catch(() => undefined);
    this.seen.delete(file.path);
    await fsyncPath(dirname(file.path));
  }
}
