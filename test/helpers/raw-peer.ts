import WebSocket from "ws";
import { connectAssertion, enroll, type Identity } from "../../connector/identity/identity.ts";
import { decodeFrame, encodeFrame, type Frame, type PubMessage } from "../../wire/index.ts";
import { createHash } from "node:crypto";
import { waitFor } from "./wait.ts";

/**
 * A connector reduced to its socket: the test decides every frame, so it can
 * replay, reorder, forge and garble what a real connector never would.
 */
export class RawPeer {
  readonly frames: Frame[] = [];
  readonly payloads = new Map<Frame, Uint8Array[]>();
  texts: string[] = [];
  closed: { code: number; reason: string } | null = null;

  private constructor(
    readonly identity: Identity,
    readonly ws: WebSocket,
  ) {
    ws.on("message", (data: Buffer, binary: boolean) => {
      if (!binary) {
        this.texts.push(data.toString());
        return;
      }
      const d = decodeFrame(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
      this.frames.push(d.frame);
      this.payloads.set(d.frame, d.payloads);
    });
    ws.on("close", (code, reason) => (this.closed = { code, reason: reason.toString() }));
  }

  static async enrol(edge: string, token: string, stateDir: string): Promise<RawPeer> {
    const identity = await enroll({ edge, token, stateDir });
    return RawPeer.connect(edge, identity);
  }

  static async connect(edge: string, identity: Identity): Promise<RawPeer> {
    const url = new URL("/v1/connect", edge);
    url.protocol = "ws:";
    const ws = new WebSocket(url, { headers: { authorization: `Bearer ${await connectAssertion(identity)}` }, maxPayload: 64 * 1024 * 1024 });
    const peer = new RawPeer(identity, ws);
    await new Promise<void>((resolve, reject) => {
      ws.once("open", () => resolve());
      ws.once("error", reject);
    });
    await peer.next((f) => f.t === "welcome");
    return peer;
  }

  /** Waits for (and removes) the first frame matching `pred`. */
  async next<F extends Frame>(pred: (f: Frame) => f is F): Promise<F>;
  async next(pred: (f: Frame) => boolean): Promise<Frame>;
  async next(pred: (f: Frame) => boolean): Promise<Frame> {
    return waitFor(`a matching frame (have ${JSON.stringify(this.frames.map((f) => f.t))})`, () => {
      const i = this.frames.findIndex(pred);
      if (i < 0) return undefined;
      const [f] = this.frames.splice(i, 1);
      return f;
    }, 15_000, 10);
  }

  send(bytes: Uint8Array | string): void {
    this.ws.send(bytes);
  }

  /** A pub frame of messages `seqs`, each named w-<seq>.txt with body "message <seq>". */
  pub(ch: string, epoch: string, seqs: number[]): Uint8Array {
    const payloads = seqs.map((s) => Buffer.from(`message ${s}\n`));
    const msgs: PubMessage[] = seqs.map((s, i) => ({
      seq: s,
      id: `raw-${epoch}-${s}`,
      createdAt: Date.now(),
      contentType: "text/plain",
      size: (payloads[i] as Buffer).byteLength,
      sha256: createHash("sha256").update(payloads[i] as Buffer).digest("hex"),
      fields: { filename: `w-${String(s).padStart(3, "0")}.txt` },
    }));
    return encodeFrame({ t: "pub", ch, epoch, msgs }, payloads);
  }

  close(): void {
    this.ws.close(1000, "test done");
  }
}
