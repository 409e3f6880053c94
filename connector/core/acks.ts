import { encodeFrame } from "../../wire/index.ts";

/** How long an acknowledgement waits for the next frames of its stream. */
export const ACK_DELAY_MS = 10;
/** An acknowledgement holding this many messages goes at once (a windowed frame's worth goes unchanged). */
export const ACK_BATCH = 256;

export type Received = { id: string; sha256: string };

type Pending = { src: string; dst: string; upTo: number; received: Received[]; timer: NodeJS.Timeout | null };

/**
 * Acknowledgements on their way to the edge, a few frames at a time
 * (docs/decisions.md D27). Each delivered frame was acknowledged at once,
 * with a receipt signed for it; one message at a time, every message then
 * cost the edge an ack (a transaction, the receipt's digest, the edge's own
 * signature, a notice to the sender) on the same thread as the next
 * message, and the sender two signature checks. An ack now waits up to
 * ACK_DELAY_MS for the stream's next frames (a frame of ACK_BATCH messages
 * or more goes at once) and acknowledges them together, with one receipt
 * for all of them.
 *
 * What is acknowledged is always durably delivered first (the caller adds
 * a frame once the receiver has recorded it). An ack that cannot be sent
 * (no connection) waits for the next connection, which sends it first;
 * one that the receiver's crash loses is like an ack lost on the wire
 * before: the edge delivers those positions again, and the receiver, which
 * recorded them, acknowledges them again.
 */
export class Acks {
  private readonly pending = new Map<string, Pending>();
  /** Acks leave in the order they were made: a later one never overtakes an earlier one (the edge keeps the first ack's receipt only if it comes first). */
  private sending: Promise<void> = Promise.resolve();

  constructor(
    private readonly opts: {
      send: (frame: Uint8Array) => boolean;
      sign: (src: string, dst: string, received: Received[]) => Promise<string | undefined>;
      /** An ack that could not be made (its receipt not signed): the edge delivers those positions again. */
      onError: (e: unknown) => void;
      delayMs?: number;
      batch?: number;
    },
  ) {}

  /** Positions up to `upTo` of `stream` are durably delivered (`received`: the messages handed over, for the receipt). */
  add(stream: string, src: string, dst: string, upTo: number, received: Received[]): void {
    let p = this.pending.get(stream);
    if (!p) {
      p = { src, dst, upTo, received: [], timer: null };
      this.pending.set(stream, p);
    }
    p.upTo = Math.max(p.upTo, upTo);
    for (const r of received) p.received.push(r);
    if (p.received.length >= (this.opts.batch ?? ACK_BATCH)) void this.flush(stream);
    else if (!p.timer) {
      p.timer = setTimeout(() => void this.flush(stream), this.opts.delayMs ?? ACK_DELAY_MS);
      p.timer.unref();
    }
  }

  /**
   * A frame of positions already delivered came again (its ack was lost,
   * or the receiver stopped before sending it): acknowledged again, with a
   * receipt for them (`received`), with the pending ack if there is one.
   * The edge keeps a receipt only for positions it had not acknowledged,
   * so one it already holds is not logged twice.
   */
  again(stream: string, src: string, dst: string, upTo: number, received: Received[]): Promise<void> {
    const p = this.pending.get(stream);
    if (p) {
      const known = new Set(p.received.map((m) => m.id));
      for (const m of received) if (!known.has(m.id)) p.received.push(m);
      p.upTo = Math.max(p.upTo, upTo);
    } else this.pending.set(stream, { src, dst, upTo, received: [...received], timer: null });
    return this.flush(stream);
  }

  /** Sends one stream's pending ack now. */
  flush(stream: string): Promise<void> {
    const p = this.pending.get(stream);
    if (!p) return this.sending;
    if (p.timer) clearTimeout(p.timer);
    p.timer = null;
    this.pending.delete(stream);
    this.sending = this.sending.then(async () => {
      const receipt = p.received.length > 0 ? await this.opts.sign(p.src, p.dst, p.received) : undefined;
      if (this.opts.send(encodeFrame({ t: "ack", src: p.src, dst: p.dst, upTo: p.upTo, ...(receipt ? { receipt } : {}) }))) return;
      // Not connected: it goes first on the next connection (flushAll), with whatever came after it.
      const later = this.pending.get(stream);
      this.pending.set(stream, { ...p, upTo: Math.max(p.upTo, later?.upTo ?? 0), received: [...p.received, ...(later?.received ?? [])], timer: later?.timer ?? null });
    }).catch(this.opts.onError);
    return this.sending;
  }

  /** Sends every pending ack now: on a new connection, and before a stop. */
  flushAll(): Promise<void> {
    for (const stream of [...this.pending.keys()]) void this.flush(stream);
    return this.sending;
  }

  /** Messages delivered and not yet acknowledged (for tests and status). */
  get waiting(): number {
    let n = 0;
    for (const p of this.pending.values()) n += p.received.length;
    return n;
  }
}
