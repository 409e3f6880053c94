import { createServer, type Server } from "node:http";
import { Counter, Gauge, Registry } from "prom-client";
import type { Connector } from "../core/connector.ts";

/**
 * The local health, readiness and Prometheus endpoint (loopback only):
 * /healthz answers while the process runs, /readyz when it is connected and
 * its spool is writable, /metrics in the Prometheus text format.
 */
export class HealthServer {
  private readonly server: Server;
  private readonly registry = new Registry();

  constructor(
    connector: Connector,
    private readonly address: string,
    ready: () => Promise<{ ok: boolean; reasons: string[] }>,
  ) {
    const r = this.registry;
    const captured = new Counter({ name: "ferry_messages_captured_total", help: "Messages captured into the spool", labelNames: ["channel"], registers: [r] });
    const capturedBytes = new Counter({ name: "ferry_bytes_captured_total", help: "Payload bytes captured into the spool", labelNames: ["channel"], registers: [r] });
    const accepted = new Counter({ name: "ferry_messages_accepted_total", help: "Messages the edge committed", labelNames: ["channel"], registers: [r] });
    const delivered = new Counter({ name: "ferry_messages_delivered_total", help: "Messages delivered here and acknowledged", labelNames: ["stream"], registers: [r] });
    const receipts = new Counter({ name: "ferry_receipts_total", help: "Receipts received from destinations", labelNames: ["channel", "status"], registers: [r] });
    const connects = new Counter({ name: "ferry_connects_total", help: "Connections established to an edge", registers: [r] });
    const edgeErrors = new Counter({ name: "ferry_edge_errors_total", help: "Error frames from the edge", labelNames: ["code"], registers: [r] });
    new Gauge({ name: "ferry_connected", help: "1 while connected to an edge", registers: [r], collect() { this.set(connector.status().connected ? 1 : 0); } });
    new Gauge({
      name: "ferry_backlog_messages",
      help: "Captured messages the edge has not acknowledged yet",
      labelNames: ["channel"],
      registers: [r],
      collect() {
        for (const ch of connector.spool.channels()) this.set({ channel: ch }, connector.spool.backlog(ch).count);
      },
    });
    new Gauge({
      name: "ferry_backlog_bytes",
      help: "Bytes of captured messages not acknowledged yet",
      labelNames: ["channel"],
      registers: [r],
      collect() {
        for (const ch of connector.spool.channels()) this.set({ channel: ch }, connector.spool.backlog(ch).bytes);
      },
    });
    const lastAccepted = new Map<string, number>();
    connector.on("captured", (channel, count, bytes) => {
      captured.inc({ channel }, count);
      capturedBytes.inc({ channel }, bytes);
    });
    connector.on("accepted", (channel, upTo) => {
      const before = lastAccepted.get(channel) ?? upTo;
      lastAccepted.set(channel, upTo);
      if (upTo > before) accepted.inc({ channel }, upTo - before);
    });
    connector.on("delivered", (stream, _upTo, count) => delivered.inc({ stream: stream.replace(/#.*$/, "") }, count));
    connector.on("receipt", (f) => receipts.inc({ channel: f.ch, status: f.status }, f.ids.length));
    connector.on("connected", () => connects.inc());
    connector.on("edgeError", (f) => edgeErrors.inc({ code: f.code }));

    this.server = createServer((req, res) => {
      const path = new URL(req.url ?? "/", "http://x").pathname;
      if (path === "/healthz") {
        res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ ok: true, connector: connector.name }));
      } else if (path === "/readyz") {
        void ready().then((s) => res.writeHead(s.ok ? 200 : 503, { "content-type": "application/json" }).end(JSON.stringify(s)));
      } else if (path === "/metrics") {
        void r.metrics().then((text) => res.writeHead(200, { "content-type": r.contentType }).end(text));
      } else {
        res.writeHead(404, { "content-type": "text/plain" }).end("try /healthz, /readyz or /metrics\n");
      }
    });
  }

  listen(): Promise<void> {
    const i = this.address.lastIndexOf(":");
    const host = this.address.slice(0, i).replace(/^\[|\]$/g, "");
    return new Promise((resolve, reject) => {
      this.server.once("error", (e: NodeJS.ErrnoException) => reject(new Error(`health: cannot listen on ${this.address}: ${e.code ?? e.message}`)));
      this.server.listen(Number(this.address.slice(i + 1)), host, () => resolve());
    });
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }
}
