import { useState } from "hono/jsx/dom";
import { api, ApiProblem } from "../api.ts";
import { Field, State, time, useLoad, TableHead } from "../ui.tsx";

type Hosted = { address: string; kind: "ingress" | "egress"; url: string; createdAt: number };
type Issued = { address: string; url: string; secret: string };

/** Hosted channels: addresses in the network for endpoints without a connector. */
export function HostedPage() {
  const { data, error, reload } = useLoad(() => api<{ hosted: Hosted[] }>("GET", "/api/hosted"), []);
  const [kind, setKind] = useState<"ingress" | "egress">("ingress");
  const [address, setAddress] = useState("");
  const [url, setUrl] = useState("");
  const [problem, setProblem] = useState<ApiProblem | null>(null);
  const [issued, setIssued] = useState<Issued | null>(null);
  const submit = async (e: Event) => {
    e.preventDefault();
    try {
      setIssued(await api<Issued>("POST", `/api/hosted/${kind}`, kind === "ingress" ? { address } : { address, url }));
      setProblem(null);
      setAddress("");
      setUrl("");
      reload();
    } catch (err) {
      if (err instanceof ApiProblem) setProblem(err);
      else throw err;
    }
  };
  return (
    <section>
      <h1>Hosted channels</h1>
      <p class="muted">For endpoints that cannot run a connector: an ingress takes HTTPS POSTs at the edge; an egress is delivered by the edge over HTTPS, signed, retried until it answers 2xx.</p>
      <form class="grid" onSubmit={submit} aria-label="Add a hosted channel" novalidate>
        <div class="field">
          <label for="f-kind">Kind</label>
          <select id="f-kind" value={kind} onChange={(e: Event) => setKind((e.target as HTMLSelectElement).value as "ingress" | "egress")}>
            <option value="ingress">ingress (they POST to Ferry)</option>
            <option value="egress">egress (Ferry POSTs to them)</option>
          </select>
        </div>
        <Field label="Address" name="hosted-address" error={problem?.field("address")} hint="name/channel, e.g. saas/events">
          <input id="f-hosted-address" value={address} onInput={(e: Event) => setAddress((e.target as HTMLInputElement).value)} />
        </Field>
        {kind === "egress" ? (
          <Field label="Delivery URL" name="hosted-url" error={problem?.field("url")} hint="https://…">
            <input id="f-hosted-url" value={url} onInput={(e: Event) => setUrl((e.target as HTMLInputElement).value)} />
          </Field>
        ) : null}
        <div>
          <button type="submit">Add hosted {kind}</button>
        </div>
      </form>
      {problem && !problem.field("address") && !problem.field("url") ? (
        <p class="error" role="alert">
          {problem.problem.detail}
        </p>
      ) : null}
      {issued ? (
        <div class="notice" role="status" data-testid="hosted-issued">
          <p>
            <strong>{issued.address}</strong>: {kind === "ingress" ? "POST messages to" : "delivers to"} <code>{issued.url}</code>
          </p>
          <p>Secret (shown once; it authenticates requests and signs deliveries):</p>
          <code class="token">{issued.secret}</code>
          <button type="button" onClick={() => setIssued(null)}>
            Done
          </button>
        </div>
      ) : null}
      <State error={error} loading={!data} empty={data?.hosted.length === 0} emptyText="No hosted channels yet.">
        <table>
          <TableHead cols={["Address", "Kind", "URL", "Since"]} actions />
          <tbody>
            {(data?.hosted ?? []).map((h) => (
              <tr data-hosted={`${h.kind}:${h.address}`}>
                <td>{h.address}</td>
                <td>{h.kind}</td>
                <td>
                  <code>{h.url}</code>
                </td>
                <td>{time(h.createdAt)}</td>
                <td class="actions">
                  <button type="button" class="danger" onClick={() => confirm(`Remove hosted ${h.kind} ${h.address}?`) && api("DELETE", `/api/hosted/${h.kind}/${h.address}`).then(reload)}>
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
