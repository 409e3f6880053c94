import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { DeliverMessage } from "../../wire/index.ts";

/**
 * A message this connector refused to deliver (a name that would escape the
 * inbox, a forged signature): kept in the state folder with its envelope and
 * the reason, never silently dropped. Returns the path, without extension.
 */
export async function writeDeadLetter(stateDir: string, channel: string, stream: string, meta: DeliverMessage, payload: Uint8Array, reason: string): Promise<string> {
  const dir = join(stateDir, "dead-letters", channel);
  await mkdir(dir, { recursive: true });
  const base = join(dir, `${meta.dseq}-${meta.id}`);
  await writeFile(`${base}.payload`, payload);
  await writeFile(`${base}.json`, JSON.stringify({ stream, reason, envelope: meta }, null, 2));
  return base;
}
