import { mkdir } from "node:fs/promises";
import { JournaledState } from "../../core/durable-fs.ts";
import { dirname } from "node:path";

export type Intent = { dseq: number; tmp: string; final: string };
type StreamState = { hwm: number; pending?: Intent[] };

/**
 * The receiver's durable memory: per stream, the highest position delivered
 * (its high-water mark) and the deliveries in progress. One JSON state,
 * saved by appending it to a journal (JournaledState: one write and one
 * fdatasync per save).
 */
export class DeliveryLog {
  private constructor(private readonly store: JournaledState<Record<string, StreamState>>) {}

  private get state(): Record<string, StreamState> {
    return this.store.state;
  }

  static async open(file: string): Promise<DeliveryLog> {
    await mkdir(dirname(file), { recursive: true });
    try {
      return new DeliveryLog(await JournaledState.open<Record<string, StreamState>>(file, () => ({})));
    } catch (e) {
      throw new Error(`delivery log ${file} is unreadable: ${(e as Error).message}`);
    }
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

  /** Closes the journal once pending saves are written (a later save opens it again). */
  close(): Promise<void> {
    return this.store.close();
  }

  /** Resolves once the state as it is now is durable. */
  private persist(): Promise<void> {
    return this.store.save();
  }
}
