import { useState } from "hono/jsx/dom";
import type { EventView } from "../../../wire/admin-types.ts";
import { api, download } from "../api.ts";
import { Badge, bytes, State, time, useLoad, TableHead } from "../ui.tsx";

/** The event types the log search filters by (value, what the list shows). */
const EVENT_TYPES: [string, string][] = [
  ["", "any"],
  ["captured", "captured"],
  ["accepted", "accepted"],
  ["delivered", "delivered"],
  ["attempt", "attempt (hosted egress)"],
  ["expired", "expired"],
  ["archived", "archived"],
  ["purged", "purged"],
  ["redriven", "redriven"],
  ["discarded", "discarded"],
  ["rejected", "rejected"],
];

type Filters = { q: string; type: string; from: string; to: string };

function toQuery(f: Filters, cursor: string | null): string {
  const p = new URLSearchParams({ limit: "50" });
  const q = f.q.trim();
  // One search box: an address, a connector, a message id, or a file name.
  if (/^[a-z0-9][a-z0-9._-]*\/[a-z0-9][a-z0-9._-]*$/.test(q)) p.set("source", q);
  else if (/^[a-z0-9][a-z0-9._-]{0,63}$/.test(q) && !q.includes(".")) p.set("connector", q);
  else if (q.startsWith("id:")) p.set("id", q.slice(3));
  else if (q.includes(":")) p.set("field", q);
  else if (q) p.set("field", `filename:${q}`);
  if (f.type) p.set("type", f.type);
  if (f.from) p.set("from", new Date(f.from).toISOString());
  if (f.to) p.set("to", new Date(f.to).toISOString());
  if (cursor) p.set("cursor", cursor);
  return p.toString();
}

export function Messages() {
  const [filters, setFilters] = useState<Filters>({ q: "", type: "", from: "", to: "" });
  const [applied, setApplied] = useState<Filters>(filters);
  const [cursor, setCursor] = useState<string | null>(null);
  const { data, error } = useLoad(() => api<{ events: EventView[]; nextCursor: string | null }>("GET", `/api/messages?${toQuery(applied, cursor)}`), [applied, cursor], cursor ? 0 : 10_000);
  const set = (k: keyof Filters) => (e: Event) => setFilters({ ...filters, [k]: (e.target as HTMLInputElement).value });
  return (
    <section>
      <h1>Messages</h1>
      <form
        class="inline"
        role="search"
        onSubmit={(e: Event) => {
          e.preventDefault();
          setCursor(null);
          setApplied(filters);
        }}
      >
        <div class="field">
          <label for="f-q">Search</label>
          <input id="f-q" type="search" value={filters.q} onInput={set("q")} placeholder="file name, address (a/orders), connector, id:…, or field:value" />
        </div>
        <div class="field">
          <label for="f-type">Event</label>
          <select id="f-type" value={filters.type} onChange={set("type")}>
            {EVENT_TYPES.map(([t, label]) => (
              <option value={t}>{label}</option>
            ))}
          </select>
        </div>
        <div class="field">
          <label for="f-from">From</label>
          <input id="f-from" type="datetime-local" value={filters.from} onInput={set("from")} />
        </div>
        <div class="field">
          <label for="f-to">To</label>
          <input id="f-to" type="datetime-local" value={filters.to} onInput={set("to")} />
        </div>
        <button type="submit">Search</button>
        <button type="button" onClick={() => download(`/api/messages?${toQuery(applied, null).replace("limit=50", "format=csv")}`, "ferry-events.csv")}>
          Export CSV
        </button>
      </form>
      <State error={error} loading={!data} empty={data?.events.length === 0} emptyText="No events match.">
        <table>
          <TableHead cols={["Time", "Event", "Message", "Source", "Destination", "Size"]} />
          <tbody>
            {(data?.events ?? []).filter((e) => e.type !== "receipt" || filters.type === "receipt").map((e) => (
              <tr>
                <td>{time(e.at)}</td>
                <td>
                  <Badge kind={e.type}>{e.type}</Badge>
                </td>
                <td>
                  <a href={`#/messages/${e.messageId}`}>{e.fields?.filename ?? e.messageId}</a>
                </td>
                <td>{e.source}</td>
                <td>{e.destination ?? "—"}</td>
                <td>{bytes(e.size)}</td>
              </tr>
            ))}
          </tbody>
        </table>
        {data?.nextCursor ? (
          <button type="button" onClick={() => setCursor(data.nextCursor)}>
            Older
          </button>
        ) : null}
      </State>
    </section>
  );
}
