import type { ConnectorView, EventView, RouteView } from "../../../wire/admin-types.ts";
import { api } from "../api.ts";
import { Badge, bytes, duration, State, time, useLoad, TableHead } from "../ui.tsx";

type Detail = { connector: ConnectorView; routes: RouteView[]; queued: { source: string; destination: string; queued: number }[]; regions: string[] };

/** One connector: its state, its channels (from its routes), what waits for it, and its recent traffic. */
export function ConnectorDetail(props: { name: string }) {
  const { data, error } = useLoad(() => api<Detail>("GET", `/api/connectors/${encodeURIComponent(props.name)}`), [props.name], 5000);
  const traffic = useLoad(() => api<{ events: EventView[] }>("GET", `/api/messages?connector=${encodeURIComponent(props.name)}&limit=20`), [props.name], 5000);
  const c = data?.connector;
  const channels = data ? [...new Set(data.routes.flatMap((r) => [r.source, r.destination]).filter((a) => a.startsWith(`${props.name}/`)))] : [];
  return (
    <section>
      <p>
        <a href="#/connectors">← Connectors</a>
      </p>
      <h1>Connector {props.name}</h1>
      <State error={error} loading={!data}>
        {c ? (
          <dl class="envelope">
            <dt>Status</dt>
            <dd>
              <Badge kind={c.status}>{c.status}</Badge>
            </dd>
            <dt>Connection</dt>
            <dd>{c.online ? <Badge kind="online">online since {time(c.connectedAt)}</Badge> : "offline"}</dd>
            <dt>Version</dt>
            <dd>{c.version ?? "—"}</dd>
            <dt>Enrolled</dt>
            <dd>{time(c.enrolledAt)}</dd>
            <dt>Last seen</dt>
            <dd>{time(c.lastSeenAt)}</dd>
            <dt>Regions</dt>
            <dd>{data?.regions.length ? data.regions.join(", ") : "not pinned"}</dd>
            <dt>Waiting for it</dt>
            <dd data-testid="backlog">{(data?.queued ?? []).reduce((n, q) => n + q.queued, 0)} messages at the edge</dd>
          </dl>
        ) : null}
        <h2>Channels and routes</h2>
        {channels.length === 0 ? (
          <p class="empty">No routes touch this connector yet.</p>
        ) : (
          <table>
            <TableHead cols={["Channel", "Sends to", "Receives from"]} />
            <tbody>
              {channels.map((ch) => (
                <tr>
                  <td>{ch}</td>
                  <td>{(data?.routes ?? []).filter((r) => r.source === ch).map((r) => `${r.destination} (${r.protection}, ttl ${duration(r.ttl)})`).join(", ") || "—"}</td>
                  <td>
                    {(data?.routes ?? [])
                      .filter((r) => r.destination === ch)
                      .map((r) => `${r.source} (${data?.queued.find((q) => q.source === r.source && q.destination === ch)?.queued ?? 0} waiting)`)
                      .join(", ") || "—"}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
        <h2>Recent traffic</h2>
        <State error={traffic.error} loading={!traffic.data} empty={traffic.data?.events.length === 0} emptyText="No traffic yet.">
          <table>
            <TableHead cols={["Time", "Event", "Message", "From → to", "Size"]} />
            <tbody>
              {(traffic.data?.events ?? []).filter((e) => e.type !== "receipt").map((e) => (
                <tr>
                  <td>{time(e.at)}</td>
                  <td>
                    <Badge kind={e.type}>{e.type}</Badge>
                  </td>
                  <td>
                    <a href={`#/messages/${e.messageId}`}>{e.fields?.filename ?? e.messageId}</a>
                  </td>
                  <td>
                    {e.source} → {e.destination ?? "—"}
                  </td>
                  <td>{bytes(e.size)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </State>
      </State>
    </section>
  );
}
