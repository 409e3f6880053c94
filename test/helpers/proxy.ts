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
      client.on("data", (d) => {
        if (!this.stalled) upstream.write(d);
      });
      upstream.on("data", (d) => {
        if (!this.stalled) client.write(d);
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

  /** Swallows all bytes both ways without closing: a half-open connection. */
  stall(): void {
    this.stalled = true;
  }

  resume(): void {
    this.stalled = false;
  }

  async close(): Promise<void> {
    this.cut();
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
  }
}
