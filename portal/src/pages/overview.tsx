import type { OverviewView } from "../../../wire/admin-types.ts";
import { api } from "../api.ts";
import { Badge, bytes, State, time, useLoad, TableHead } from "../ui.tsx";

function Chart(props: { data: OverviewView["perMinute"] }) {
  const max = Math.max(1, ...props.data.map((d) => Math.max(d.accepted, d.delivered)));
  const w = 600;
  const h = 120;
  const bw = w / props.data.length;
  return (
    <svg class="chart" viewBox={`0 0 ${w} ${h + 16}`} role="img" aria-label="messages accepted and delivered per minute, last hour">
      {props.data.map((d, i) => (
        <g>
          <rect x={i * bw + 1} y={h - (d.accepted / max) * h} width={bw / 2 - 1} height={(d.accepted / max) * h} class="bar-accepted">
            <title>{`${new Date(d.minute).toLocaleTimeString()}: ${d.accepted} accepted (${bytes(d.bytes)})`}</title>
          </rect>
          <rect x={i * bw + bw / 2} y={h - (d.delivered / max) * h} width={bw / 2 - 1} height={(d.delivered / max) * h} class="bar-delivered">
            <title>{`${new Date(d.minute).toLocaleTimeString()}: ${d.delivered} delivered`}</title>
          </rect>
        </g>
      ))}
      <line x1="0" y1={h} x2={w} y2={h} class="axis" />
      <text x="0" y={h + 14} class="axis-label">-60 min</text>
      <text x={w} y={h + 14} text-anchor="end" class="axis-label">now</text>
    </svg>
  );
}

function BytesChart(props: { data: OverviewView["perMinute"] }) {
  const max = Math.max(1, ...props.data.map((d) => d.bytes));
  const w = 600;
  const h = 60;
  const bw = w / props.data.length;
  return (
    <svg class="chart" viewBox={`0 0 ${w} ${h + 16}`} role="img" aria-label={`bytes accepted per minute, last hour (peak ${bytes(max)})`}>
      {props.data.map((d, i) => (
        <rect x={i * bw + 1} y={h - (d.bytes / max) * h} width={bw - 2} height={(d.bytes / max) * h} class="bar-accepted">
          <title>{`${new Date(d.minute).toLocaleTimeString()}: ${bytes(d.bytes)}`}</title>
        </rect>
      ))}
      <line x1="0" y1={h} x2={w} y2={h} class="axis" />
      <text x="0" y={h + 14} class="axis-label">peak {bytes(max)}/min</text>
    </svg>
  );
}

/** What waits at the edge, per destination: accepted, not yet acknowledged (offline destinations, slow consumers). */
function Backlog(props: { backlog: NonNullable<OverviewView["backlog"]> }) {
  const max = Math.max(1, ...props.backlog.destinations.map((d) => d.queued));
  return (
    <>
      <h2 id="backlog">Waiting at the edge</h2>
      {props.backlog.destinations.length === 0 ? (
        <p class="empty" data-testid="backlog-empty">
          Nothing waiting: every destination has acknowledged everything sent to it.
        </p>
      ) : (
        <table data-testid="backlog">
          <TableHead cols={["Destination", "Messages waiting"]} />
          <tbody>
            {props.backlog.destinations.map((d) => {
              const connector = d.destination.split("/")[0] ?? d.destination;
              return (
                <tr data-destination={d.destination}>
                  <td>
                    <a href={`#/connectors/${encodeURIComponent(connector)}`}>{d.destination}</a>
                  </td>
                  <td class="queued">
                    <span>{d.queued}</span> <meter min={0} max={max} value={d.queued} aria-hidden="true" />
                  </td>
                </tr>
              );
            })}
          </tbody>
        </table>
      )}
    </>
  );
}

export function Overview() {
  const { data, error } = useLoad(() => api<OverviewView>("GET", "/api/overview"), [], 5000);
  const total = data?.perMinute.reduce((n, m) => n + m.accepted, 0) ?? 0;
  return (
    <section>
      <h1>Overview</h1>
      <State error={error} loading={!data}>
        {data ? (
          <>
            <div class="cards">
              <a class="card" href="#/connectors">
                <span class="big">{data.connectors.online}</span> of {data.connectors.total} connectors online
                {data.connectors.pending ? <small class="muted"> · {data.connectors.pending} awaiting enrolment</small> : null}
              </a>
              <a class="card" href="#/routes">
                <span class="big">{data.routes}</span> routes
              </a>
              <a class="card" href="#/messages">
                <span class="big">{total}</span> messages in the last hour
              </a>
              {data.backlog ? (
                <a class="card" href="#backlog" data-testid="backlog-total">
                  <span class="big">{data.backlog.total}</span> waiting at the edge
                  <small class="muted"> · for {data.backlog.destinations.length} destination{data.backlog.destinations.length === 1 ? "" : "s"}</small>
                </a>
              ) : null}
              <a class={`card${data.deadLetters ? " warn" : ""}`} href="#/dead-letters">
                <span class="big">{data.deadLetters}</span> dead letters
              </a>
            </div>
            <h2>Traffic, last hour</h2>
            <p class="legend">
              <span class="swatch bar-accepted" /> accepted <span class="swatch bar-delivered" /> delivered
            </p>
            <Chart data={data.perMinute} />
            <h2>Bytes, last hour</h2>
            <BytesChart data={data.perMinute} />
            {data.backlog ? <Backlog backlog={data.backlog} /> : null}
            <h2>Recent failures</h2>
            {data.recentFailures.length === 0 ? (
              <p class="empty">No expired or rejected messages.</p>
            ) : (
              <table>
                <TableHead cols={["Time", "Event", "Message", "From → to"]} />
                <tbody>
                  {data.recentFailures.map((e) => (
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
                    </tr>
                  ))}
                </tbody>
              </table>
            )}
          </>
        ) : null}
      </State>
    </section>
  );
}
