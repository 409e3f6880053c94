import type { ArchivedEnvelope } from "../../durable-objects/channel/archive.ts";

/**
 * Envelopes as XML for auditors' tools (the seed product's envelopes were
 * XML). Element names are fixed here; every value is escaped, field names
 * travel as attributes, never as element names.
 */
function esc(v: string): string {
  return v.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&apos;" })[c] as string).replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f]/g, "");
}

export function envelopeXml(e: ArchivedEnvelope): string {
  const el = (name: string, v: string | number) => `  <${name}>${esc(String(v))}</${name}>`;
  return [
    '<?xml version="1.0" encoding="UTF-8"?>',
    `<envelope xmlns="urn:ferry:envelope:1" id="${esc(e.id)}">`,
    el("tenant", e.tenant),
    el("source", e.source),
    "  <destinations>",
    ...e.destinations.map((d) => `    <destination>${esc(d)}</destination>`),
    "  </destinations>",
    el("sequence", e.seq),
    el("createdAt", new Date(e.createdAt).toISOString()),
    el("acceptedAt", new Date(e.acceptedAt).toISOString()),
    el("contentType", e.contentType),
    el("size", e.size),
    el("sha256", e.sha256),
    el("region", e.region ?? ""),
    el("retainUntil", new Date(e.retainUntil).toISOString()),
    "  <fields>",
    ...Object.entries(e.fields ?? {}).map(([k, v]) => `    <field name="${esc(k)}">${esc(v)}</field>`),
    "  </fields>",
    "</envelope>",
    "",
  ].join("\n");
}
