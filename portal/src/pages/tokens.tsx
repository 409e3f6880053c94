import { useState } from "hono/jsx/dom";
import { api, ApiProblem } from "../api.ts";
import { Badge, Field, State, time, useLoad, TableHead } from "../ui.tsx";

type Token = { id: string; name: string; scope: string; createdAt: number; revokedAt: number | null };

/** Scoped admin tokens of this tenant (owners only): create (shown once) and revoke. */
export function Tokens() {
  const { data, error, reload } = useLoad(() => api<{ tokens: Token[] }>("GET", "/api/tokens"), []);
  const [name, setName] = useState("");
  const [scope, setScope] = useState("read");
  const [fieldError, setFieldError] = useState<string | undefined>(undefined);
  const [issued, setIssued] = useState<{ name: string; token: string } | null>(null);
  const create = async (e: Event) => {
    e.preventDefault();
    try {
      const r = await api<{ name: string; token: string }>("POST", "/api/tokens", { name, scope });
      setIssued(r);
      setName("");
      setFieldError(undefined);
      reload();
    } catch (err) {
      setFieldError(err instanceof ApiProblem ? (err.field("name") ?? err.problem.detail) : String(err));
    }
  };
  return (
    <section>
      <h1>Admin tokens</h1>
      <p class="muted">Tokens for scripts and colleagues: read (look only), operator (change connectors, routes, dead letters), owner (also tokens).</p>
      <form class="inline" onSubmit={create} aria-label="Create an admin token">
        <Field label="Name" name="token-name" error={fieldError}>
          <input id="f-token-name" value={name} onInput={(e: Event) => setName((e.target as HTMLInputElement).value)} required />
        </Field>
        <div class="field">
          <label for="f-scope">Scope</label>
          <select id="f-scope" value={scope} onChange={(e: Event) => setScope((e.target as HTMLSelectElement).value)}>
            <option value="read">read</option>
            <option value="operator">operator</option>
            <option value="owner">owner</option>
          </select>
        </div>
        <button type="submit">Create token</button>
      </form>
      {issued ? (
        <div class="notice" role="status" data-testid="issued-token">
          <p>
            Token <strong>{issued.name}</strong>: copy it now, it is not shown again.
          </p>
          <code class="token">{issued.token}</code>
          <button type="button" onClick={() => setIssued(null)}>
            Done
          </button>
        </div>
      ) : null}
      <State error={error} loading={!data} empty={data?.tokens.length === 0} emptyText="No tokens yet.">
        <table>
          <TableHead cols={["Name", "Scope", "Created", "Status"]} actions />
          <tbody>
            {(data?.tokens ?? []).map((t) => (
              <tr data-token={t.name}>
                <td>{t.name}</td>
                <td>{t.scope}</td>
                <td>{time(t.createdAt)}</td>
                <td>{t.revokedAt ? <Badge kind="revoked">revoked {time(t.revokedAt)}</Badge> : <Badge kind="active">active</Badge>}</td>
                <td class="actions">
                  {t.revokedAt ? null : (
                    <button type="button" class="danger" onClick={() => confirm(`Revoke ${t.name}?`) && api("DELETE", `/api/tokens/${t.id}`).then(reload)}>
                      Revoke
                    </button>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </State>
    </section>
  );
}
