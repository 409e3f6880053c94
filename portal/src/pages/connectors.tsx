import { useState } from "hono/jsx/dom";
import type { ConnectorView } from "../../../wire/admin-types.ts";
import { api, ApiProblem, edgeUrl } from "../api.ts";
import { Badge, Field, State, time, useLoad, TableHead } from "../ui.tsx";

type Issued = { connector: { name: string }; enrolToken: string; expiresAt: number };

export function Connectors() {
  const { data, error, reload } = useLoad(() => api<{ connectors: ConnectorView[] }>("GET", "/api/connectors"), [], 5000);
  const [name, setName] = useState("");
  const [fieldError, setFieldError] = useState<string | undefined>(undefined);
  const [issued, setIssued] = useState<Issued | null>(null);
  const [busy, setBusy] = useState(false);

  const create = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    try {
      setIssued(await api<Issued>("POST", "/api/connectors", { name }));
      setFieldError(undefined);
      setName("");
      reload();
    } catch (err) {
      setFieldError(err instanceof ApiProblem ? (err.field("name") ?? err.problem.detail) : String(err));
    } finally {
      setBusy(false);
    }
  };
  const act = async (method: string, path: string, confirmText?: string) => {
    if (confirmText && !confirm(confirmText)) return;
    const r = await api<Issued | { connector: ConnectorView }>(method, path);
    if ("enrolToken" in r) setIssued(r);
    reload();
  };
  const edge = edgeUrl();
  return (
    <section>
      <h1>Connectors</h1>
      <form class="inline" onSubmit={create} aria-label="Add a connector">
        <Field label="New connector" name="name" error={fieldError} hint="lower-case letters, digits, . _ -">
          <input id="f-name" name="name" value={name} onInput={(e: Event) => setName((e.target as HTMLInputElement).value)} aria-invalid={fieldError ? "true" : "false"} required />
        </Field>
        <button type="submit" disabled={busy}>
          Add connector
        </button>
      </form>
      {issued ? (
        <div class="notice" role="status" data-testid="enrolment">
          <p>
            Enrolment token for <strong>{issued.connector.name}</strong> (one-time, valid until {time(issued.expiresAt)}):
          </p>
          <code class="token">{issued.enrolToken}</code>
          <p>Run at the site:</p>
          <pre>{`ferry connector enroll --edge ${edge} --token ${issued.enrolToken} --state ./${issued.connector.name}-state`}</pre>
          <button type="button" onClick={() => setIssued(null)}>
            Done
          </button>
        </div>
      ) : null}
      <p class="muted" data-testid="rotation-note">
        <strong>New enrolment token</strong> issues a one-time token to enrol the connector again (a new machine, a lost state folder); it does not rotate the keys of an enrolled connector. Key rotation is
        done by the connector, at its site: <code>ferry connector rotate-keys --config FILE</code> (or <code>kill -USR2</code> a running one). <strong>Revoke</strong> cuts its connection at once and refuses it from then on.
      </p>
      <State error={error} loading={!data} empty={data?.connectors.length === 0} emptyText="No connectors yet: add one above.">
        <table>
          <TableHead cols={["Name", "Status", "Connection", "Version", "Waiting", "Region", "Enrolled", "Last seen"]} actions />
          <tbody>
            {(data?.connectors ?? []).map((c) => (
              <tr data-connector={c.name}>
                <td>
                  <a href={`#/connectors/${c.name}`}>{c.name}</a>
                </td>
                <td>
                  <Badge kind={c.status}>{c.status}</Badge>
                </td>
                <td>{c.online ? <Badge kind="online">online since {time(c.connectedAt)}</Badge> : <span class="muted">offline</span>}</td>
                <td>{c.version ?? "—"}</td>
                <td>{c.waiting ?? 0}</td>
                <td>{c.regions?.length ? c.regions.join(", ") : "—"}</td>
                <td>{time(c.enrolledAt)}</td>
                <td>{time(c.lastSeenAt)}</td>
                <td class="actions">
                  {c.status !== "revoked" ? (
                    <>
                      <button
                        type="button"
                        onClick={() => act("POST", `/api/connectors/${c.name}/tokens`)}
                        aria-label={`New enrolment token for ${c.name}`}
                        title="A new one-time enrolment token (to enrol this connector again). It does not rotate an enrolled connector's keys: ferry connector rotate-keys does, at the site."
                      >
                        New enrolment token
                      </button>
                      <button type="button" class="danger" onClick={() => act("DELETE", `/api/connectors/${c.name}`, `Revoke ${c.name}? Its connection is cut at once.`)}>
                        Revoke
                      </button>
                    </>
                  ) : null}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </State>
    </section>
  );
}
