import { createServer, type Server, type IncomingMessage } from "node:http";
import { connect, type Socket } from "node:net";

/**
 * A small HTTP CONNECT proxy on loopback, like a site's corporate proxy:
 * it requires Basic credentials when given some, and records each tunnel.
 */
export class ConnectProxy {
  private server: Server;
  readonly tunnels: { target: string; auth: string | null }[] = [];
  readonly refused: string[] = [];
  port = 0;

  constructor(private readonly credentials?: { user: string; pass: string }) {
    this.server = createServer((_req, res) => res.writeHead(405).end("CONNECT only"));
    this.server.on("connect", (req: IncomingMessage, client: Socket, head: Buffer) => {
      const auth = req.headers["proxy-authorization"] ?? null;
      const expected = this.credentials ? `Basic ${Buffer.from(`${this.credentials.user}:${this.credentials.pass}`).toString("base64")}` : null;
      if (expected && auth !== expected) {
        this.refused.push(req.url ?? "");
        client.end("HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"test\"\r\n\r\n");
        return;
      }
      const [host, port] = (req.url ?? "").split(":");
      this.tunnels.push({ target: req.url ?? "", auth });
      const upstream = connect(Number(port), host as string, () => {
        client.write("HTTP/1.1 200 Connection Established\r\n\r\n");
        if (head.byteLength) upstream.write(head);
        upstream.pipe(client);
        client.pipe(upstream);
      });
      upstream.on("error", () => client.destroy());
      client.on("error", () => upstream.destroy());
    });
  }

  async listen(): Promise<string> {
    await new Promise<void>((r) => this.server.listen(0, "127.0.0.1", r));
    const a = this.server.address();
    this.port = typeof a === "object" && a ? a.port : 0;
    const cred = this.credentials ? `${this.credentials.user}:${this.credentials.pass}@` : "";
    return `http://${cred}127.0.0.1:${this.port}`;
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}
