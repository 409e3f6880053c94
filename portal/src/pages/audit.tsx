import type { AdminLogEntry } from "../../../wire/admin-types.ts";
import { api } from "../api.ts";
import { State, time, useLoad, TableHead } from "../ui.tsx";

export function Audit() {
  const { data, error } = useLoad(() => api<{ entries: AdminLogEntry[] }>("GET", "/api/admin-log?limit=200"), [], 10_000);
  return (
    <section>
      <h1>Admin actions</h1>
      <p class="muted">Every change made through the admin API, the CLI or this portal.</p>
      <State error={error} loading={!data} empty={data?.entries.length === 0} emptyText="No admin actions yet.">
        <table>
          <TableHead cols={["Time", "Who", "Action", "Target"]} />
          <tbody>
            {(data?.entries ?? []).map((e) => (
              <tr>
                <td>{time(e.at)}</td>
                <td>{e.actor}</td>
                <td>{e.action}</td>
                <td>{e.target ?? "—"}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </State>
    </section>
  );
}
