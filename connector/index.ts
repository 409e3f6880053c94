/**
 * Ferry's connector as a typed Node library: the same core the CLI runs.
 *
 * @example
 * ```ts
 * import { Connector } from "ferry/connector";
 * const c = await Connector.open({ stateDir: "./a-state" });
 * c.start();
 * await c.send("orders", new TextEncoder().encode("hello"));   // resolves once on disk
 * c.on("receipt", (r) => console.log(r.status, r.ids));
 * ```
 */
export { Connector, type ConnectorEvents, type ConnectorOptions, type Incoming, type Receiver, type SendOptions } from "./core/connector.ts";
export { createLogger, silentLogger, type Logger } from "./core/log.ts";
export { enroll, loadIdentity, type Identity } from "./identity/identity.ts";
export { loadConfig, validateConfig, ConfigError, type ConnectorConfig } from "./config/config.ts";
export { FileChannel } from "./channels/file/channel.ts";
export { DeliveryLog } from "./channels/file/delivery-log.ts";
export { CallbackReceiver, type Delivery, type DeliveryHandler } from "./core/callback-receiver.ts";
