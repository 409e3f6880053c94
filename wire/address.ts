import { z } from "zod";

/**
 * Names of connectors and channels: lower-case letters, digits, `-`, `_`,
 * `.`; 1-64 characters; must start with a letter or digit. Addresses never
 * contain hosts or IPs, so a connector can move without reconfiguration.
 */
export const NAME_RE = /^[a-z0-9][a-z0-9._-]{0,63}$/;

export const Name = z
  .string()
  .regex(NAME_RE, "use 1-64 of a-z 0-9 . _ - starting with a letter or digit");

/** `connector/channel`, e.g. `acme-erp/orders`. */
export const Address = z
  .string()
  .regex(
    /^[a-z0-9][a-z0-9._-]{0,63}\/[a-z0-9][a-z0-9._-]{0,63}$/,
    "an address is connector/channel, e.g. acme-erp/orders",
  );
export type Address = z.infer<typeof Address>;

export function splitAddress(address: string): { connector: string; channel: string } {
  const i = address.indexOf("/");
  return { connector: address.slice(0, i), channel: address.slice(i + 1) };
}

export function joinAddress(connector: string, channel: string): string {
  return `${connector}/${channel}`;
}
