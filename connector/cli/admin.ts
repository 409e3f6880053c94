import { createHash } from "node:crypto";
import { writeFile } from "node:fs/promises";
import { parseArgs } from "node:util";
import { RouteCreate } from "../../wire/index.ts";
import { AdminClient, CliError } from "./admin-client.ts";
import { printJsonOr, table, type Out } from "./output.ts";

export const ADMIN_HELP = `ferry admin — manage connectors, routes and the message log

Usage:
  ferry admin connector add NAME        create a connector; prints its one-time enrolment token
  ferry admin connector list            list connectors
  ferry admin connector show NAME       one connector, with presence
  ferry admin connector token NAME      issue a new enrolment token
  ferry admin connector revoke NAME     revoke (closes its open connection now)
  ferry admin route add SRC DST         route SRC (connector/channel) to DST
      [--protection none] [--ttl 7d] [--archive] [--retention 30d] [--region eu]
      [--compress gzip]       large files travel gzip-compressed when it pays
      [--fields filename,partnerRef]    (channel fields to record in the log; default all)
      [--log full|exceptions] the log records every message's lifecycle (full, the default)
                              or only what went wrong (exceptions: far cheaper, see docs/performance.md)
  ferry admin route set ID              change a route: [--log full|exceptions] [--ttl 7d] [--retention 30d]
      [--fields a,b]
  ferry admin route list                list routes
  ferry admin route remove ID           remove a route
  ferry admin route hold ID [--off]     legal hold: suspend purging of the route's archives and log
  ferry admin archive MESSAGE_ID        download an archived payload [--output FILE]
      [--envelope json|xml]             …or its envelope
  ferry admin messages                  the message event log, newest first
      [--limit 100] [--cursor C] [--from T] [--to T] [--source A/ch] [--destination B/ch]
      [--connector NAME] [--route ID] [--id MESSAGE_ID]
      [--type captured|accepted|delivered|receipt|attempt|expired|rejected|redriven|discarded|archived|purged]
      [--field NAME:VALUE] [--format csv|jsonl]   (csv/jsonl: every match, streamed)
      times (--from, --to): ISO 8601 like 2026-11-25T08:00:00Z, or a Unix time in ms
  ferry admin trace MESSAGE_ID          every event of one message
  ferry admin hosted list               hosted channels (no connector: HTTPS in, HTTPS out)
  ferry admin hosted ingress add ADDR   an address that takes HTTPS POSTs at the edge (prints URL and secret)
  ferry admin hosted egress add ADDR --url URL [--secret S]
                                        an address the edge delivers to by HTTPS POST (signed)
  ferry admin hosted remove ingress|egress ADDR
  ferry admin verify-log [--source A/ch] recompute the event log's hash chains
  ferry admin dead-letters [list]       messages that expired before delivery
      [--source A/ch] [--destination B/ch]
  ferry admin dead-letters redrive|discard --source A/ch [--destination B/ch] [--id ID …]

Options (all commands):
  --edge URL           edge to manage (default: FERRY_EDGE or http://127.0.0.1:8787)
  --admin-token T      admin token (default: FERRY_ADMIN_TOKEN, or the dev token 'npm start' wrote)
  --tenant NAME        act in this tenant (default: FERRY_TENANT; the platform token's default is
                       'default'; a tenant's own token always acts in its tenant)
  --json               machine-readable output
  -h, --help           this help
`;

type Connector = { id: string; name: string; status: string; createdAt: number; enrolledAt: number | null; lastSeenAt: number | null; online?: boolean };
type Route = { id: string; source: string; destination: string; protection: string; ttl: number; archive: boolean; retention: number | null; region: string | null; log?: string };
type Event = { id: number; messageId: string; type: string; at: number; place: string; source: string; destination: string | null; seq: number | null; size: number | null; sha256: string | null; detail: unknown };

const iso = (t: number | null) => (t === null ? "-" : new Date(t).toISOString());

export async function adminCommand(argv: string[], out: Out): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    strict: true,
    options: {
      edge: { type: "string" },
      "admin-token": { type: "string" },
      tenant: { type: "string" },
      json: { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
      protection: { type: "string" },
      compress: { type: "string" },
      log: { type: "string" },
      ttl: { type: "string" },
      archive: { type: "boolean" },
      retention: { type: "string" },
      region: { type: "string" },
      limit: { type: "string" },
      source: { type: "string" },
      type: { type: "string" },
      cursor: { type: "string" },
      destination: { type: "string" },
      id: { type: "string", multiple: true },
      from: { type: "string" },
      to: { type: "string" },
      connector: { type: "string" },
      route: { type: "string" },
      field: { type: "string" },
      format: { type: "string" },
      off: { type: "boolean", default: false },
      fields: { type: "string" },
      output: { type: "string", short: "o" },
      envelope: { type: "string" },
      url: { type: "string" },
      secret: { type: "string" },
    },
  });
  const [noun, verb, ...rest] = positionals;
  if (values.help || !noun) {
    out.stdout(ADMIN_HELP);
    return values.help ? 0 : 2;
  }
  const api = AdminClient.resolve({ edge: values.edge, adminToken: values["admin-token"], tenant: values.tenant });
  const json = values.json;
  const need = (n: number, usage: string) => {
    if (rest.length !== n) throw new CliError(`usage: ferry admin ${usage}`, 2);
  };

  if (noun === "connector" || noun === "connectors") {
    switch (verb) {
      case "add": {
        need(1, "connector add NAME");
        const r = await api.request<{ connector: Connector; enrolToken: string; expiresAt: number }>("POST", "/api/connectors", { name: rest[0] });
        printJsonOr(out, json, r, () =>
          [
            `connector ${r.connector.name} created (${r.connector.id})`,
            `enrolment token (one-time, valid until ${iso(r.expiresAt)}):`,
            `  ${r.enrolToken}`,
            `enrol the site with:`,
            `  ferry connector enroll --edge ${api.edge} --token ${r.enrolToken} --state ./${r.connector.name}-state`,
          ].join("\n"),
        );
        return 0;
      }
      case "token": {
        need(1, "connector token NAME");
        const r = await api.request<{ connector: Connector; enrolToken: string; expiresAt: number }>("POST", `/api/connectors/${encodeURIComponent(rest[0] as string)}/tokens`);
        printJsonOr(out, json, r, () => `${r.enrolToken}\n(valid until ${iso(r.expiresAt)})`);
        return 0;
      }
      case "list":
      case undefined: {
        const r = await api.request<{ connectors: Connector[] }>("GET", "/api/connectors");
        printJsonOr(out, json, r, () => table(["NAME", "STATUS", "ENROLLED", "LAST SEEN"], r.connectors.map((c) => [c.name, c.status, iso(c.enrolledAt), iso(c.lastSeenAt)])));
        return 0;
      }
      case "show": {
        need(1, "connector show NAME");
        const r = await api.request<{ connector: Connector }>("GET", `/api/connectors/${encodeURIComponent(rest[0] as string)}`);
        printJsonOr(out, json, r, () => Object.entries(r.connector).map(([k, v]) => `${k.padEnd(12)} ${String(v)}`).join("\n"));
        return 0;
      }
      case "revoke": {
        need(1, "connector revoke NAME");
        const r = await api.request<{ connector: Connector }>("DELETE", `/api/connectors/${encodeURIComponent(rest[0] as string)}`);
        printJsonOr(out, json, r, () => `connector ${r.connector.name} revoked`);
        return 0;
      }
      default:
        throw new CliError(`unknown command 'connector ${verb}'; see 'ferry admin --help'`, 2);
    }
  }

  if (noun === "route" || noun === "routes") {
    /** What `route add` and `route set` both take: the settings a route can change in place. */
    const changeable = () => ({
      ...(values.log ? { log: values.log } : {}),
      ...(values.ttl ? { ttl: values.ttl } : {}),
      ...(values.retention ? { retention: values.retention } : {}),
      ...(values.fields ? { fields: values.fields.split(",").map((f) => f.trim()).filter(Boolean) } : {}),
    });
    /** A route's schema error, named by the argument or flag the user typed. */
    const refuseInvalid = (check: { success: boolean; error?: { issues: { path: PropertyKey[]; message: string }[] } }) => {
      if (check.success) return;
      const i = check.error?.issues[0];
      const field = String(i?.path[0] ?? "route");
      const flag = field === "source" ? "SRC" : field === "destination" ? "DST" : `--${field}`;
      throw new CliError(`${flag}: ${i?.message ?? "invalid"}`, 2);
    };
    switch (verb) {
      case "add": {
        need(2, "route add SRC DST [--protection none|sign|encrypt] [--compress none|gzip] [--log full|exceptions] [--ttl 7d] [--archive] [--retention 30d] [--region eu]");
        const body = {
          source: rest[0],
          destination: rest[1],
          ...(values.protection ? { protection: values.protection } : {}),
          ...(values.compress ? { compress: values.compress } : {}),
          ...(values.archive ? { archive: true } : {}),
          ...(values.region ? { region: values.region } : {}),
          ...changeable(),
        };
        // Validate here too, so a typo is named before anything is sent.
        refuseInvalid(RouteCreate.safeParse(body));
        const r = await api.request<{ route: Route }>("POST", "/api/routes", body);
        printJsonOr(out, json, r, () => `route ${r.route.id}: ${r.route.source} -> ${r.route.destination} (protection ${r.route.protection}, ttl ${r.route.ttl}s, log ${r.route.log ?? "full"})`);
        return 0;
      }
      case "set": {
        need(1, "route set ID [--log full|exceptions] [--ttl 7d] [--retention 30d] [--fields a,b]");
        const body = changeable();
        if (Object.keys(body).length === 0) throw new CliError("route set: name what to change: --log, --ttl, --retention or --fields", 2);
        refuseInvalid(RouteCreate.pick({ log: true, ttl: true, retention: true, fields: true }).partial().safeParse(body));
        const r = await api.request<{ route: Route }>("PATCH", `/api/routes/${encodeURIComponent(rest[0] as string)}`, body);
        printJsonOr(out, json, r, () => `route ${r.route.id}: ${r.route.source} -> ${r.route.destination} (ttl ${r.route.ttl}s, log ${r.route.log ?? "full"})`);
        return 0;
      }
      case "list":
      case undefined: {
        const r = await api.request<{ routes: Route[] }>("GET", "/api/routes");
        printJsonOr(out, json, r, () => table(["ID", "SOURCE", "DESTINATION", "PROTECTION", "TTL", "LOG"], r.routes.map((x) => [x.id, x.source, x.destination, x.protection, `${x.ttl}s`, x.log ?? "full"])));
        return 0;
      }
      case "hold": {
        need(1, "route hold ID [--off]");
        const r = await api.request<{ route: Route & { legalHold: boolean } }>("POST", `/api/routes/${encodeURIComponent(rest[0] as string)}/hold`, { hold: !values.off });
        printJsonOr(out, json, r, () => `route ${r.route.id}: legal hold ${r.route.legalHold ? "on (nothing of it is purged)" : "off"}`);
        return 0;
      }
      case "remove":
      case "rm": {
        need(1, "route remove ID");
        const r = await api.request<{ route: Route }>("DELETE", `/api/routes/${encodeURIComponent(rest[0] as string)}`);
        printJsonOr(out, json, r, () => `route ${r.route.id} removed`);
        return 0;
      }
      default:
        throw new CliError(`unknown command 'route ${verb}'; see 'ferry admin --help'`, 2);
    }
  }

  if (noun === "messages") {
    const q = new URLSearchParams();
    for (const k of ["limit", "source", "destination", "connector", "route", "type", "cursor", "from", "to", "field", "format"] as const) {
      const v = values[k];
      if (typeof v === "string") q.set(k, v);
    }
    if (values.id?.[0]) q.set("id", values.id[0]);
    if (values.format === "csv" || values.format === "jsonl") {
      out.stdout(await api.text("GET", `/api/messages?${q}`));
      return 0;
    }
    const r = await api.request<{ events: Event[]; nextCursor: string | null }>("GET", `/api/messages?${q}`);
    printJsonOr(out, json, r, () =>
      table(["AT", "TYPE", "MESSAGE", "SOURCE", "DESTINATION", "SIZE"], r.events.map((e) => [iso(e.at), e.type, e.messageId, e.source, e.destination ?? "-", String(e.size ?? "-")])) +
      (r.nextCursor ? `\nmore: --cursor ${r.nextCursor}` : ""),
    );
    return 0;
  }

  if (noun === "trace") {
    if (!verb) throw new CliError("usage: ferry admin trace MESSAGE_ID", 2);
    const r = await api.request<{ messageId: string; events: Event[] }>("GET", `/api/messages/${encodeURIComponent(verb)}`);
    type Receipt = { destination: string; signed: boolean; signer?: string; verified?: boolean; receivedAt?: number | null };
    const rc = r.events.some((e) => e.type === "delivered") ? await api.request<{ receipts: Receipt[] }>("GET", `/api/messages/${encodeURIComponent(verb)}/receipt`) : { receipts: [] };
    printJsonOr(out, json, { ...r, receipts: rc.receipts }, () =>
      [
        `message ${r.messageId}`,
        ...r.events.map((e) => `  ${iso(e.at)}  ${e.type.padEnd(10)} ${e.source} -> ${e.destination ?? "(edge)"}  at ${(e.detail as { place?: string } | null)?.place ?? e.place}${e.size !== null ? `  ${e.size} B` : ""}`),
        ...rc.receipts.map((x) => `  receipt from ${x.destination}: ${!x.signed ? "not signed" : x.verified ? `signed by ${x.signer}, verified` : "SIGNATURE DOES NOT VERIFY"}`),
      ].join("\n"),
    );
    return 0;
  }

  if (noun === "hosted") {
    const [kind, addr] = rest;
    if (verb === "list" || verb === undefined) {
      const r = await api.request<{ hosted: { address: string; kind: string; url: string }[] }>("GET", "/api/hosted");
      printJsonOr(out, json, r, () => table(["ADDRESS", "KIND", "URL"], r.hosted.map((h) => [h.address, h.kind, h.url])));
      return 0;
    }
    if (verb === "ingress" && kind === "add" && addr) {
      const r = await api.request<{ address: string; url: string; secret: string; auth: string }>("POST", "/api/hosted/ingress", { address: addr });
      printJsonOr(out, json, r, () => `hosted ingress ${r.address}\n  POST ${r.url}\n  secret (shown once): ${r.secret}\n  auth: ${r.auth}`);
      return 0;
    }
    if (verb === "egress" && kind === "add" && addr) {
      if (!values.url) throw new CliError("--url: required (where the edge POSTs each message)", 2);
      const r = await api.request<{ address: string; url: string; secret: string; signature: string }>("POST", "/api/hosted/egress", { address: addr, url: values.url, ...(values.secret ? { secret: values.secret } : {}) });
      printJsonOr(out, json, r, () => `hosted egress ${r.address} -> ${r.url}\n  signing secret: ${r.secret}\n  ${r.signature}`);
      return 0;
    }
    if (verb === "remove" && (kind === "ingress" || kind === "egress") && addr) {
      const r = await api.request<{ address: string }>("DELETE", `/api/hosted/${kind}/${addr}`);
      printJsonOr(out, json, r, () => `hosted ${kind} ${r.address} removed`);
      return 0;
    }
    throw new CliError("usage: ferry admin hosted list | ingress add ADDR | egress add ADDR --url URL | remove ingress|egress ADDR", 2);
  }

  if (noun === "archive") {
    if (!verb) throw new CliError("usage: ferry admin archive MESSAGE_ID [--envelope json|xml] [--output FILE]", 2);
    if (values.envelope && values.envelope !== "json" && values.envelope !== "xml") throw new CliError("--envelope: json or xml", 2);
    const path = values.envelope ? `/api/messages/${encodeURIComponent(verb)}/envelope?format=${values.envelope}` : `/api/messages/${encodeURIComponent(verb)}/archive`;
    const bytes = await api.bytes(path);
    if (values.output) {
      await writeFile(values.output, bytes);
      out.stdout(json ? JSON.stringify({ messageId: verb, output: values.output, bytes: bytes.byteLength }) : `wrote ${bytes.byteLength} bytes to ${values.output}`);
    } else if (json && !values.envelope) {
      // --json promises JSON on stdout: the payload comes base64-encoded with its size and digest.
      out.stdout(JSON.stringify({ messageId: verb, bytes: bytes.byteLength, sha256: createHash("sha256").update(bytes).digest("hex"), base64: Buffer.from(bytes).toString("base64") }));
    } else process.stdout.write(bytes);
    return 0;
  }

  if (noun === "verify-log") {
    const q = new URLSearchParams();
    if (values.source) q.set("source", values.source);
    const r = await api.request<{ ok: boolean; chains: { chain: string; events: number; from: number; to: number; broken: { chainSeq: number; reason: string } | null }[] }>("GET", `/api/log/verify?${q}`);
    printJsonOr(out, json, r, () =>
      [
        r.ok ? `ok: ${r.chains.length} chain${r.chains.length === 1 ? "" : "s"} verified` : "BROKEN: the event log was altered",
        ...r.chains.map((c) => `  ${c.broken ? "BROKEN" : "ok    "} ${c.chain}  positions ${c.from}-${c.to} (${c.events} events)${c.broken ? `\n         first broken link at position ${c.broken.chainSeq}: ${c.broken.reason}` : ""}`),
      ].join("\n"),
    );
    return r.ok ? 0 : 1;
  }

  if (noun === "dead-letters") {
    if (verb === undefined || verb === "list") {
      const q = new URLSearchParams();
      if (values.source) q.set("source", values.source);
      if (values.destination) q.set("destination", values.destination);
      const r = await api.request<{ deadLetters: { source: string; destination: string; id: string; reason: string; deadAt: number; size: number }[] }>("GET", `/api/dead-letters?${q}`);
      printJsonOr(out, json, r, () => table(["SOURCE", "DESTINATION", "MESSAGE", "REASON", "SINCE", "SIZE"], r.deadLetters.map((d) => [d.source, d.destination, d.id, d.reason, iso(d.deadAt), String(d.size)])));
      return 0;
    }
    if (verb === "redrive" || verb === "discard") {
      if (!values.source) throw new CliError(`--source: required (the address the dead letters were sent from)`, 2);
      const r = await api.request<{ count: number }>("POST", `/api/dead-letters/${verb}`, {
        source: values.source,
        ...(values.destination ? { destination: values.destination } : {}),
        ...(values.id ? { ids: values.id } : {}),
      });
      printJsonOr(out, json, r, () => `${verb === "redrive" ? "re-driven" : "discarded"}: ${r.count}`);
      return 0;
    }
    throw new CliError(`unknown command 'dead-letters ${verb}'; see 'ferry admin --help'`, 2);
  }

  throw new CliError(`unknown command 'admin ${noun}'; see 'ferry admin --help'`, 2);
}
