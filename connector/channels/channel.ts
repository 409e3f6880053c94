import type { ChannelConfig } from "../config/config.ts";
import type { Connector } from "../core/connector.ts";
import { FileChannel } from "./file/channel.ts";
import { HttpChannel } from "./http/channel.ts";
import { ExecChannel } from "./exec/channel.ts";

/**
 * A channel:protocol adapter. The sending side and the receiving side are
 * independent: what a file channel sends can arrive at an http or exec
 * channel, because the wire carries envelopes, not protocols.
 */
export interface Channel {
  readonly name: string;
  readonly cfg: ChannelConfig;
  /** Prepares folders, recovers from a crash, registers the receiving side; before the connector starts. */
  open(): Promise<void>;
  /** Starts taking in messages (polling a folder, listening on loopback). */
  start(): Promise<void> | void;
  /** Stops taking in; captures in progress finish, deliveries in retry are abandoned (the edge redelivers). */
  stop(): Promise<void>;
}

export function createChannel(cfg: ChannelConfig, connector: Connector, stateDir: string): Channel {
  switch (cfg.protocol) {
    case "file":
      return new FileChannel(cfg, connector, stateDir);
    case "http":
      return new HttpChannel(cfg, connector, stateDir);
    case "exec":
      return new ExecChannel(cfg, connector, stateDir);
  }
}
