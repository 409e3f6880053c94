import { useState } from "hono/jsx/dom";
import type { DeadLetterView } from "../../../wire/admin-types.ts";
import { api } from "../api.ts";
import { bytes, State, time, useLoad, TableHead } from "../ui.tsx";

export function DeadLetters() {
  const { data, error, reload } = useLoad(() => api<{ deadLetters: DeadLetterView[] }>("GET", "/api/dead-letters"), [], 5000);
  const [done, setDone] = useState<string | null>(null);
  const act = async (d: DeadLetterView, action: "redrive" | "discard") => {
    if (action === "discard" && !confirm(`Discard ${d.fields?.filename ?? d.id}? It is logged and cannot be undone.`)) return;
    const r = await api<{ count: number }>("POST", `/api/dead-letters/${action}`, { source: d.source, destination: d.destination, ids: [d.id] });
    setDone(`${action === "redrive" ? "Re-driven" : "Discarded"}: ${r.count}`);
    reload();
  };
  return (
    <section>
      <h1>Dead letters</h1>
      <p class="muted">Messages that were not delivered within their route's time to live. Nothing is dropped: re-drive them, or discard them on purpose.</p>
      {done ? (
        <p class="ok" role="status">
          {done}
        </p>
      ) : null}
      <State error={error} loading={!data} empty={data?.deadLetters.length === 0} emptyText="No dead letters.">
        <table>
          <TableHead cols={["Message", "From → to", "Reason", "Since", "Size"]} actions />
          <tbody>
            {(data?.deadLetters ?? []).map((d) => (
              <tr data-dead={d.id}>
                <td>
                  <a href={`#/messages/${d.id}`}>{d.fields?.filename ?? d.id}</a>
                </td>
                <td>
                  {d.source} → {d.destination}
                </td>
                <td>{d.reason}</td>
                <td>{time(d.deadAt)}</td>
                <td>{bytes(d.size)}</td>
                <td class="actions">
                  <button type="button" onClick={() => act(d, "redrive")}>
                    Re-drive
                  </button>
                  <button type="button" class="danger" onClick={() => act(d, "discard")}>
                    Discard
                  </button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </State>
    </section>
  );
}
