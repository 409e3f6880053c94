/** How long a receipt frame waits for others to go in the same call. */
export const RECEIPT_DELAY_MS = 15;
/** A call never holds more frames than this (each at most one frame's size). */
export const RECEIPT_BATCH = 32;

/**
 * Receipt frames on their way back to the source connector's session
 * object, sent a few at a time (docs/decisions.md D25). No message waits
 * for a receipt, but each went as its own call the moment its ack was
 * committed: one message at a time, that call (and the sender's checking
 * of the signatures) ran between one message and the next on the same
 * thread. Frames now wait here at most RECEIPT_DELAY_MS, or until
 * RECEIPT_BATCH of them, and go together, in order. Best effort as
 * before: the event log holds every receipt, and a frame still waiting
 * when the object goes away is lost like one whose sender was offline.
 */
export class ReceiptOutbox {
  private frames: Uint8Array[] = [];
  private timer: ReturnType<typeof setTimeout> | null = null;
  private sending: Promise<void> = Promise.resolve();

  constructor(
    private readonly send: (frames: Uint8Array[]) => Promise<unknown>,
    private readonly delayMs = RECEIPT_DELAY_MS,
  ) {}

  push(frame: Uint8Array): void {
    this.frames.push(frame);
    if (this.frames.length >= RECEIPT_BATCH) void this.flush();
    else this.timer ??= setTimeout(() => void this.flush(), this.delayMs);
  }

  /** Sends what waits now (after any call still on its way); settles when it is sent or given up. */
  flush(): Promise<void> {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    const frames = this.frames;
    this.frames = [];
    if (frames.length > 0) {
      this.sending = this.sending.then(() => this.send(frames)).then(
        () => undefined,
        (e: unknown) => console.warn(`${frames.length} receipt(s) not sent`, e),
      );
    }
    return this.sending;
  }
}
