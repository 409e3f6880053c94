import { access, constants } from "node:fs/promises";
import { writeFileAtomic } from "../core/durable-fs.ts";
import { join } from "node:path";
import { loadConfig, type ChannelConfig, type ConnectorConfig } from "../config/config.ts";
import { Connector } from "../core/connector.ts";
import { createLogger, type Logger } from "../core/log.ts";
import { createChannel, type Channel } from "../channels/channel.ts";
import { HealthServer } from "./health.ts";

export const STATUS_FILE = "status.json";

/**
 * `ferry connector run`: the connector core plus its channels, a status
 * file, an optional health/metrics endpoint, the edge's config refreshed
 * periodically, and a configuration reload on SIGHUP that adds, removes and
 * restarts channels without dropping a message (everything captured is in
 * the spool; everything unacknowledged the edge redelivers).
 */
export class Agent {
  private channels = new Map<string, { cfg: ChannelConfig; channel: Channel }>();
  private timers: NodeJS.Timeout[] = [];
  private health: HealthServer | null = null;
  private stopping: Promise<void> | null = null;

  private constructor(
    private cfg: ConnectorConfig,
    readonly connector: Connector,
    readonly log: Logger,
    private readonly configFile: string,
  ) {}

  static async start(configFile: string): Promise<Agent> {
    const cfg = await loadConfig(configFile);
    const log = createLogger(cfg.log ? { format: cfg.log } : {});
    const connector = await Connector.open({ stateDir: cfg.state, log, heartbeatSeconds: cfg.heartbeat_seconds, transfers: cfg.transfers, relay: cfg.relay, ...(cfg.edges ? { edges: cfg.edges } : {}) });
    const agent = new Agent(cfg, connector, log, configFile);
    agent.useSavedEdgeConfig();
    // The enrolment URL is only the first contact: the edge names its addresses.
    connector.on("config", (edges) => {
      if (!cfg.edges) connector.useEdges(edges);
    });
    for (const c of cfg.channels) await agent.add(c);
    connector.start();
    for (const { channel } of agent.channels.values()) await channel.start();
    if (cfg.health) {
      agent.health = new HealthServer(connector, cfg.health, () => agent.ready());
      await agent.health.listen();
      log("info", "health endpoint listening", { url: `http://${cfg.health}/`, paths: ["/healthz", "/readyz", "/metrics"] });
    }
    log("info", "connector running", { connector: connector.name, channels: [...agent.channels.keys()], state: cfg.state, pid: process.pid });
    await agent.writeStatus();
    agent.timers.push(setInterval(() => void agent.writeStatus(), 1000));
    agent.scheduleRefresh();
    return agent;
  }

  private async add(c: ChannelConfig): Promise<void> {
    const channel = createChannel(c, this.connector, this.cfg.state);
    await channel.open();
    this.channels.set(c.name, { cfg: c, channel });
  }

  /** Ready: connected to an edge and the spool folder is writable. */
  async ready(): Promise<{ ok: boolean; reasons: string[] }> {
    const reasons: string[] = [];
    if (!this.connector.status().connected) reasons.push("not connected to an edge");
    await access(join(this.cfg.state, "spool"), constants.W_OK).catch(() => reasons.push("the spool folder is not writable"));
    return { ok: reasons.length === 0, reasons };
  }

  /**
   * SIGHUP: validate the new config first (a broken file changes nothing),
   * then stop removed and changed channels (captures in progress finish),
   * and open new and changed ones.
   */
  async reload(): Promise<{ added: string[]; removed: string[]; changed: string[] }> {
    let next: ConnectorConfig;
    try {
      next = await loadConfig(this.configFile);
    } catch (e) {
      this.log("error", "reload refused: the config has an error; still running the previous one", { error: (e as Error).message });
      throw e;
    }
    for (const key of ["state", "edges", "heartbeat_seconds", "health", "log"] as const) {
      if (JSON.stringify(next[key]) !== JSON.stringify(this.cfg[key])) this.log("warn", `reload: '${key}' changed; restart the connector to apply it`);
    }
    const wanted = new Map(next.channels.map((c) => [c.name, c]));
    const removed = [...this.channels.keys()].filter((n) => !wanted.has(n));
    const changed = [...this.channels.entries()].filter(([n, v]) => wanted.has(n) && JSON.stringify(wanted.get(n)) !== JSON.stringify(v.cfg)).map(([n]) => n);
    const added = [...wanted.keys()].filter((n) => !this.channels.has(n));
    for (const n of [...removed, ...changed]) {
      const entry = this.channels.get(n);
      await entry?.channel.stop();
      this.connector.unreceive(n);
      this.channels.delete(n);
    }
    for (const n of [...changed, ...added]) {
      await this.add(wanted.get(n) as ChannelConfig);
      await this.channels.get(n)?.channel.start();
    }
    this.cfg = { ...this.cfg, channels: next.channels };
    this.log("info", "configuration reloaded", { added, removed, changed });
    return { added, removed, changed };
  }

  private useSavedEdgeConfig(): void {
    const saved = this.connector.policies.current;
    if (!this.cfg.edges && saved?.edges.length) this.connector.useEdges(saved.edges);
  }

  /** Refreshes routes, keys and edge addresses from the edge periodically (the connector also does on each connect). */
  private scheduleRefresh(): void {
    const t = setTimeout(() => {
      void this.connector.refreshConfig().then(() => {
        if (!this.stopping) this.scheduleRefresh();
      });
    }, (this.connector.policies.current?.refreshSeconds ?? 600) * 1000);
    t.unref();
    this.timers.push(t);
  }

  async writeStatus(): Promise<void> {
    await writeFileAtomic(join(this.cfg.state, STATUS_FILE), JSON.stringify({ ...this.connector.status(), pid: process.pid, updatedAt: Date.now() }, null, 2), 0o644).catch(
      (e: unknown) => this.log("warn", "could not write the status file", { error: (e as Error).message }),
    );
  }

  /** Graceful: stop intake, finish captures in progress, close the link; nothing captured is lost. */
  stop(signal: string): Promise<void> {
    this.stopping ??= (async () => {
      this.log("info", "stopping", { signal });
      for (const t of this.timers) clearTimeout(t);
      for (const { channel } of this.channels.values()) await channel.stop();
      await this.health?.close();
      await this.connector.stop();
      await this.writeStatus();
    })();
    return this.stopping;
  }
}
