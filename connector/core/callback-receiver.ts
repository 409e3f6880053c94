import type { DeliverMessage } from "../../wire/index.ts";
import { DeliveryLog } from "../channels/file/delivery-log.ts";
import type { Incoming, Receiver } from "./connector.ts";

/** What a handler gets for each message. */
export type Delivery = {
  /** The envelope as the edge stored it; `meta.id` is the idempotency key. */
  meta: DeliverMessage;
  payload: Uint8Array;
  /**
   * A large payload (over 1 MiB) is not in memory: this is its file, whole
   * and verified against `meta.sha256`; `payload` is empty. Read it as a
   * stream; it is deleted after the handler returns.
   */
  file?: string;
  /**
   * True when this position may have been handed to the handler before: the
   * connector crashed after calling the handler and before recording the
   * delivery. A handler whose target is not idempotent checks `meta.id`.
   */
  redelivery: boolean;
};

export type DeliveryHandler = (d: Delivery) => Promise<void>;

/**
 * Delivery to a target outside the connector's control (application code,
 * a webhook, a command). What is guaranteed, exactly:
 *
 * - in order per stream, and never again once the handler resolved and the
 *   delivery was recorded (the mark is durable before the edge is told);
 * - at least once across crashes: a crash between the handler's success and
 *   the record means the same message is handed over again, with
 *   `redelivery: true` and the same `meta.id`, so the target can dedup;
 * - a handler that throws stops the stream there; the edge redelivers later.
 */
export class CallbackReceiver implements Receiver {
  private constructor(
    private readonly log: DeliveryLog,
    private readonly handler: DeliveryHandler,
    /** Positions that were in the handler's hands when the last run ended. */
    private readonly uncertain: Map<string, Set<number>>,
  ) {}

  static async open(file: string, handler: DeliveryHandler): Promise<CallbackReceiver> {
    const log = await DeliveryLog.open(file);
    const uncertain = new Map<string, Set<number>>();
    for (const [stream, intents] of log.allPending()) uncertain.set(stream, new Set(intents.map((i) => i.dseq)));
    return new CallbackReceiver(log, handler, uncertain);
  }

  hwm(stream: string): number {
    return this.log.hwm(stream);
  }

  /** Closes its delivery log's file once pending saves are written (left open, it closes itself after a second without deliveries). */
  close(): Promise<void> {
    return this.log.close();
  }

  async skip(stream: string, upTo: number): Promise<void> {
    await this.log.commit(stream, upTo);
  }

  async deliver(stream: string, msgs: Incoming[]): Promise<number> {
    // Intents first: after a crash we know which positions may have been handed over.
    await this.log.begin(stream, msgs.map((m) => ({ dseq: m.meta.dseq, tmp: "", final: "" })));
    const maybe = this.uncertain.get(stream);
    let done = this.log.hwm(stream);
    try {
      for (const m of msgs) {
        await this.handler({ meta: m.meta, payload: m.payload, ...(m.file ? { file: m.file } : {}), redelivery: m.meta.redelivered === true || (maybe?.has(m.meta.dseq) ?? false) });
        done = m.meta.dseq;
      }
    } finally {
      if (done > this.log.hwm(stream)) await this.log.commit(stream, done);
      if (maybe) for (const d of [...maybe]) if (d <= done) maybe.delete(d);
    }
    return done;
  }
}
