import { useState } from "hono/jsx/dom";
import type { RouteView } from "../../../wire/admin-types.ts";
import { api, ApiProblem } from "../api.ts";
import { Badge, duration, Field, State, useLoad, TableHead } from "../ui.tsx";

type Form = { source: string; destination: string; protection: string; ttl: string; archive: boolean; retention: string; region: string; fields: string; log: string };
const empty: Form = { source: "", destination: "", protection: "none", ttl: "7d", archive: false, retention: "", region: "", fields: "", log: "full" };

export function Routes() {
  const { data, error, reload } = useLoad(() => api<{ routes: RouteView[] }>("GET", "/api/routes"), []);
  const [form, setForm] = useState<Form>(empty);
  const [problem, setProblem] = useState<ApiProblem | null>(null);
  const [saved, setSaved] = useState<string | null>(null);
  const [editing, setEditing] = useState<{ id: string; ttl: string; retention: string; error?: string } | null>(null);
  const set = (k: keyof Form) => (e: Event) => {
    const t = e.target as HTMLInputElement;
    setForm({ ...form, [k]: t.type === "checkbox" ? t.checked : t.value });
  };
  const submit = async (e: Event) => {
    e.preventDefault();
    try {
      const body = {
        source: form.source,
        destination: form.destination,
        protection: form.protection,
        ttl: form.ttl,
        archive: form.archive,
        log: form.log,
        ...(form.retention ? { retention: form.retention } : {}),
        ...(form.region ? { region: form.region } : {}),
        ...(form.fields.trim() ? { fields: form.fields.split(",").map((f) => f.trim()).filter(Boolean) } : {}),
      };
      const r = await api<{ route: RouteView }>("POST", "/api/routes", body);
      setSaved(`Route ${r.route.source} → ${r.route.destination} created.`);
      setProblem(null);
      setForm(empty);
      reload();
    } catch (err) {
      setSaved(null);
      if (err instanceof ApiProblem) setProblem(err);
      else throw err;
    }
  };
  const fieldError = (name: string) => problem?.field(name);
  const general = problem && !["source", "destination", "ttl", "retention", "region", "protection", "archive", "fields", "log"].some((f) => problem.field(f)) ? problem.problem.detail : null;
  const edit = async (r: RouteView, patch: Record<string, unknown>) => {
    await api("PATCH", `/api/routes/${r.id}`, patch);
    reload();
  };
  const saveEdit = async (e: Event) => {
    e.preventDefault();
    if (!editing) return;
    try {
      await api("PATCH", `/api/routes/${editing.id}`, { ttl: editing.ttl, ...(editing.retention ? { retention: editing.retention } : {}) });
      setEditing(null);
      setSaved("Route updated.");
      reload();
    } catch (err) {
      setEditing({ ...editing, error: err instanceof ApiProblem ? err.problem.detail : String(err) });
    }
  };
  return (
    <section>
      <h1>Routes</h1>
      <p class="muted">Who may send where: each route carries messages from a source address to a destination address (connector/channel).</p>
      <form class="grid" onSubmit={submit} aria-label="Create a route" novalidate>
        <Field label="Source" name="source" error={fieldError("source")} hint="connector/channel, e.g. acme-erp/orders">
          <input id="f-source" value={form.source} onInput={set("source")} aria-invalid={fieldError("source") ? "true" : "false"} />
        </Field>
        <Field label="Destination" name="destination" error={fieldError("destination")} hint="connector/channel">
          <input id="f-destination" value={form.destination} onInput={set("destination")} aria-invalid={fieldError("destination") ? "true" : "false"} />
        </Field>
        <Field label="Protection" name="protection" error={fieldError("protection")}>
          <select id="f-protection" value={form.protection} onChange={set("protection")}>
            <option value="none">none</option>
            <option value="sign">sign</option>
            <option value="encrypt">encrypt</option>
          </select>
        </Field>
        <Field label="Time to live" name="ttl" error={fieldError("ttl")} hint="30s, 15m, 12h, 7d">
          <input id="f-ttl" value={form.ttl} onInput={set("ttl")} />
        </Field>
        <Field label="Region" name="region" error={fieldError("region")} hint="empty, or a jurisdiction such as eu">
          <input id="f-region" value={form.region} onInput={set("region")} />
        </Field>
        <Field label="Archive retention" name="retention" error={fieldError("retention")} hint="e.g. 30d (archived routes)">
          <input id="f-retention" value={form.retention} onInput={set("retention")} />
        </Field>
        <Field label="Fields to log" name="fields" error={fieldError("fields")} hint="e.g. filename, partnerRef (empty: all)">
          <input id="f-fields" value={form.fields} onInput={set("fields")} />
        </Field>
        <Field label="Event log" name="log" error={fieldError("log")} hint="exceptions: only what went wrong is logged">
          <select id="f-log" value={form.log} onChange={set("log")}>
            <option value="full">every message</option>
            <option value="exceptions">exceptions only</option>
          </select>
        </Field>
        <div class="field checkbox">
          <input id="f-archive" type="checkbox" checked={form.archive} onChange={set("archive")} />
          <label for="f-archive">Archive payloads and envelopes</label>
        </div>
        <div>
          <button type="submit">Create route</button>
        </div>
      </form>
      {general ? (
        <p class="error" role="alert">
          {general}
        </p>
      ) : null}
      {saved ? (
        <p class="ok" role="status">
          {saved}
        </p>
      ) : null}
      <p class="notice" data-testid="routes-edit-note">
        <strong>Edit</strong> changes a route's time to live and archive retention in place; archiving and legal hold switch with their buttons. To change source, destination, protection or region, remove the route and add it
        again.
      </p>
      <State error={error} loading={!data} empty={data?.routes.length === 0} emptyText="No routes yet: create one above.">
        <table>
          <TableHead cols={["Source", "Destination", "Protection", "TTL", "Archive", "Region", "Fields logged"]} actions />
          <tbody>
            {(data?.routes ?? []).map((r) => (
              <tr data-route={r.id}>
                <td>{r.source}</td>
                <td>{r.destination}</td>
                <td>
                  <Badge kind={r.protection}>{r.protection}</Badge>
                </td>
                <td>{duration(r.ttl)}</td>
                <td>{r.archive ? `yes, ${duration(r.retention ?? 30 * 86400)}` : "no"}</td>
                <td>{r.region ?? "—"}</td>
                <td>{r.log === "exceptions" ? "exceptions only" : r.fields ? r.fields.join(", ") : "all"}</td>
                <td class="actions">
                  {editing?.id === r.id ? (
                    <form class="inline" onSubmit={saveEdit} aria-label={`Edit ${r.source} → ${r.destination}`}>
                      <div class={`field${editing.error ? " invalid" : ""}`}>
                        <label for="f-edit-ttl">TTL</label>
                        <input id="f-edit-ttl" value={editing.ttl} onInput={(e: Event) => setEditing({ ...editing, ttl: (e.target as HTMLInputElement).value })} />
                        {editing.error ? (
                          <small class="field-error" role="alert">
                            {editing.error}
                          </small>
                        ) : null}
                      </div>
                      <div class="field">
                        <label for="f-edit-retention">Retention</label>
                        <input id="f-edit-retention" value={editing.retention} onInput={(e: Event) => setEditing({ ...editing, retention: (e.target as HTMLInputElement).value })} />
                      </div>
                      <button type="submit">Save</button>
                      <button type="button" onClick={() => setEditing(null)}>
                        Cancel
                      </button>
                      <small class="muted edit-note" data-testid="route-edit-note">
                        To change source, destination, protection or region, remove the route and add it again.
                      </small>
                    </form>
                  ) : (
                    <button type="button" onClick={() => setEditing({ id: r.id, ttl: duration(r.ttl), retention: r.retention === null ? "" : duration(r.retention) })}>
                      Edit
                    </button>
                  )}
                  <button type="button" onClick={() => edit(r, { archive: !r.archive })}>
                    {r.archive ? "Stop archiving" : "Archive"}
                  </button>
                  <button type="button" onClick={() => api("POST", `/api/routes/${r.id}/hold`, { hold: !r.legalHold }).then(reload)}>
                    {r.legalHold ? "Release hold" : "Legal hold"}
                  </button>
                  <button type="button" class="danger" onClick={() => confirm(`Remove ${r.source} → ${r.destination}?`) && api("DELETE", `/api/routes/${r.id}`).then(reload)}>
                    Remove
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
