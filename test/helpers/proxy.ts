import { createServer, connect, type Server, type Socket } from "node:net";

/**
 * A TCP proxy on loopback that a test puts between connectors and the edge,
 * to cut, stall (half-open: bytes stop flowing but nothing closes) and
 * resume connections at will.
 */
export class ChaosProxy {
  private server: Server | null = null;
  private pairs = new Set<{ client: Socket; upstream: Socket }>();
  private stalled = false;
  /** Per direction: flip one byte this many bytes further on (then stop). */
  private corrupt: { up: number | null; down: number | null } = { up: null, down: null };
  /** Per direction: stall everything once this many more bytes have passed. */
  private limit: { up: number | null; down: number | null } = { up: null, down: null };
  port = 0;

  constructor(private target: { host: string; port: number }) {}

  async listen(port = 0): Promise<number> {
    this.server = createServer((client) => {
      const upstream = connect(this.target.port, this.target.host);
      const pair = { client, upstream };
      this.pairs.add(pair);
      const drop = () => {
        client.destroy();
        upstream.destroy();
        this.pairs.delete(pair);
      };
      client.on("error", drop).on("close", drop);
      upstream.on("error", drop).on("close", drop);
      client.on("data", (d: Buffer) => {
        const pass = this.pass("up", d);
        if (pass) upstream.write(this.maybeCorrupt("up", pass));
      });
      upstream.on("data", (d: Buffer) => {
        const pass = this.pass("down", d);
        if (pass) client.write(this.maybeCorrupt("down", pass));
      });
    });
    await new Promise<void>((r) => this.server?.listen(port, "127.0.0.1", r));
    const addr = this.server.address();
    this.port = typeof addr === "object" && addr ? addr.port : 0;
    return this.port;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  get connections(): number {
    return this.pairs.size;
  }

  /** Resets every open connection (both sides see it die at once). */
  cut(): void {
    for (const p of this.pairs) {
      p.client.resetAndDestroy();
      p.upstream.destroy();
    }
    this.pairs.clear();
  }

  /**
   * Flips one byte `after` bytes from now in one direction ("up": towards
   * the edge), once: inside a large chunk's bytes, that is a corrupt chunk
   * that only a digest can catch (the WebSocket framing survives it).
   */
  corruptOnce(direction: "up" | "down", after: number): void {
    this.corrupt[direction] = after;
  }

  private maybeCorrupt(direction: "up" | "down", d: Buffer): Buffer {
    const at = this.corrupt[direction];
    if (at === null) return d;
    if (at >= d.byteLength) {
      this.corrupt[direction] = at - d.byteLength;
      return d;
    }
    this.corrupt[direction] = null;
    const out = Buffer.from(d);
    out[at] = (out[at] as number) ^ 0xff;
    return out;
  }

  /**
   * Stalls (as `stall`) once `after` more bytes have gone in one direction:
   * a test that must act while a transfer is still under way (kill a peer at
   * half) cannot then lose the race to a transfer that finished first.
   */
  stallAfter(direction: "up" | "down", after: number): void {
    this.limit[direction] = after;
  }

  /** What of `d` goes through: everything, a head up to the limit (then stalled), or nothing. */
  private pass(direction: "up" | "down", d: Buffer): Buffer | null {
    if (this.stalled) return null;
    const left = this.limit[direction];
    if (left === null) return d;
    if (left > d.byteLength) {
      this.limit[direction] = left - d.byteLength;
      return d;
    }
    this.limit[direction] = null;
    this.stalled = true;
    return left > 0 ? d.subarray(0, left) : null;
  }

  /** Swallows all bytes both ways without closing: a half-open connection. */
  stall(): void {
    this.stalled = true;
  }

  /** Lets bytes flow again, and forgets any `stallAfter` not reached yet (it would stall the next connection). */
  resume(): void {
    this.stalled = false;
    this.limit = { up: null, down: null };
  }

  async close(): Promise<void> {
    this.cut();
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
  }
}
