import { copyFile, mkdir, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { DeliverMessage } from "../../wire/index.ts";

/**
 * A message this connector refused to deliver (a name that would escape the
 * inbox, a forged signature): kept in the state folder with its envelope and
 * the reason, never silently dropped. Returns the path, without extension.
 * `payload` is the bytes, or the path of a large payload's file (moved in).
 */
export async function writeDeadLetter(stateDir: string, channel: string, stream: string, meta: DeliverMessage, payload: Uint8Array | string, reason: string): Promise<string> {
  const dir = join(stateDir, "dead-letters", channel);
  await mkdir(dir, { recursive: true });
  const base = join(dir, `${meta.dseq}-${meta.id}`);
  if (typeof payload !== "string") await writeFile(`${base}.payload`, payload);
  else await rename(payload, `${base}.payload`).catch(() => copyFile(payload, `${base}.payload`));
  await writeFile(`${base}.json`, JSON.stringify({ stream, reason, envelope: meta }, null, 2));
  return base;
}
