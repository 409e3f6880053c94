import { mkdir, readFile } from "node:fs/promises";
import { writeFileAtomic } from "../../core/durable-fs.ts";
import { dirname } from "node:path";

export type Intent = { dseq: number; tmp: string; final: string };
type StreamState = { hwm: number; pending?: Intent[] };

/**
 * The receiver's durable memory: per stream, the highest position delivered
 * (its high-water mark) and the deliveries in progress. One JSON file,
 * replaced atomically (temp + fsync + rename + fsync of the folder).
 */
export class DeliveryLog {
  private writing: Promise<void> = Promise.resolve();

  private constructor(
    private readonly file: string,
    private readonly state: Record<string, StreamState>,
  ) {}

  static async open(file: string): Promise<DeliveryLog> {
    await mkdir(dirname(file), { recursive: true });
    let state: Record<string, StreamState> = {};
    try {
      state = JSON.parse(await readFile(file, "utf8")) as Record<string, StreamState>;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw new Error(`delivery log ${file} is unreadable: ${(e as Error).message}`);
    }
    return new DeliveryLog(file, state);
  }

  hwm(stream: string): number {
    return this.state[stream]?.hwm ?? 0;
  }

  streams(): Record<string, number> {
    return Object.fromEntries(Object.entries(this.state).map(([k, v]) => [k, v.hwm]));
  }

  pendingIntents(stream: string): Intent[] {
    return [...(this.state[stream]?.pending ?? [])];
  }

  allPending(): [string, Intent[]][] {
    return Object.entries(this.state)
      .filter(([, v]) => (v.pending?.length ?? 0) > 0)
      .map(([k, v]) => [k, [...(v.pending ?? [])]]);
  }

  async begin(stream: string, intents: Intent[]): Promise<void> {
    const st = (this.state[stream] ??= { hwm: 0 });
    st.pending = [...(st.pending ?? []), ...intents];
    await this.persist();
  }

  async commit(stream: string, upTo: number): Promise<void> {
    const st = (this.state[stream] ??= { hwm: 0 });
    if (upTo > st.hwm) st.hwm = upTo;
    const rest = (st.pending ?? []).filter((i) => i.dseq > st.hwm);
    if (rest.length > 0) st.pending = rest;
    else delete st.pending;
    await this.persist();
  }

  /** Writes are serialised: the file always holds one whole state. */
  private persist(): Promise<void> {
    const snapshot = JSON.stringify(this.state);
    this.writing = this.writing.catch(() => undefined).then(() => writeFileAtomic(this.file, snapshot));
    return this.writing;
  }
}
