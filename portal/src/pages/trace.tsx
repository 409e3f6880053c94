import { useState } from "hono/jsx/dom";
import type { EventView } from "../../../wire/admin-types.ts";
import { api, ApiProblem, download } from "../api.ts";
import { Badge, bytes, State, time, useLoad } from "../ui.tsx";

type Receipts = { receipts: { destination: string; signed: boolean; signer?: string; verified?: boolean; receivedAt?: number | null; sha256?: string | null }[] };

type Verify = { ok: boolean; chains: { chain: string; from: number; to: number; broken: { chainSeq: number; reason: string } | null }[] };

const ORDER = ["captured", "accepted", "archived", "attempt", "delivered", "expired", "redriven", "discarded", "purged", "rejected"];

export function Trace(props: { id: string }) {
  const { data, error } = useLoad(() => api<{ messageId: string; events: EventView[] }>("GET", `/api/messages/${encodeURIComponent(props.id)}`), [props.id], 5000);
  const source = data?.events[0]?.source;
  const verify = useLoad(() => (source ? api<Verify>("GET", `/api/log/verify?source=${encodeURIComponent(source)}`) : Promise.resolve(null)), [source]);
  const [dlError, setDlError] = useState<string | null>(null);
  const delivered = data?.events.some((e) => e.type === "delivered") ?? false;
  const receipts = useLoad(() => (delivered ? api<Receipts>("GET", `/api/messages/${encodeURIComponent(props.id)}/receipt`) : Promise.resolve(null)), [props.id, delivered]);
  const first = data?.events.find((e) => e.type === "accepted") ?? data?.events[0];
  const archived = data?.events.find((e) => e.type === "archived");
  const fetchFile = (path: string, name: string) => download(path, name).then(() => setDlError(null), (e: unknown) => setDlError(e instanceof ApiProblem ? e.problem.detail : String(e)));
  const chain = verify.data?.chains[0];
  return (
    <section>
      <p>
        <a href="#/messages">← Messages</a>
      </p>
      <h1>
        Message <code>{props.id}</code>
      </h1>
      <State error={error} loading={!data}>
        {first ? (
          <dl class="envelope">
            <dt>File</dt>
            <dd>{first.fields?.filename ?? "—"}</dd>
            <dt>From</dt>
            <dd>{first.source}</dd>
            <dt>Size</dt>
            <dd>{bytes(first.size)}</dd>
            <dt>SHA-256</dt>
            <dd>
              <code>{first.sha256}</code>
            </dd>
            <dt>Fields</dt>
            <dd>{first.fields ? Object.entries(first.fields).map(([k, v]) => `${k}=${v}`).join(", ") : "—"}</dd>
            <dt>Log chain</dt>
            <dd data-testid="chain">
              {chain ? chain.broken ? <Badge kind="expired">broken at {chain.broken.chainSeq}: {chain.broken.reason}</Badge> : <Badge kind="delivered">intact (positions {chain.from}–{chain.to})</Badge> : "checking…"}
            </dd>
          </dl>
        ) : null}
        <h2>Timeline</h2>
        <ol class="timeline">
          {[...(data?.events ?? [])]
            .sort((a, b) => a.at - b.at || ORDER.indexOf(a.type) - ORDER.indexOf(b.type))
            .map((e) => (
              <li class={`ev-${e.type}`}>
                <Badge kind={e.type}>{e.type}</Badge> <time>{time(e.at)}</time>
                <span class="muted">
                  {" "}
                  {e.type === "captured" ? `at ${(e.detail as { place?: string } | null)?.place ?? e.source}` : `at ${e.place}`}
                  {e.destination ? ` → ${e.destination}` : ""}
                  {e.chainSeq ? ` · log #${e.chainSeq}` : ""}
                </span>
              </li>
            ))}
        </ol>
        <h2>Receipts</h2>
        {receipts.data && receipts.data.receipts.length > 0 ? (
          <ul class="receipts" data-testid="receipts">
            {receipts.data.receipts.map((r) => (
              <li>
                {r.destination}:{" "}
                {!r.signed ? (
                  <span class="muted">delivered, no signed receipt</span>
                ) : r.verified ? (
                  <Badge kind="delivered">signed by {r.signer}, verified</Badge>
                ) : (
                  <Badge kind="expired">signature does not verify</Badge>
                )}
                {r.receivedAt ? <span class="muted"> · received {time(r.receivedAt)}</span> : null}
              </li>
            ))}
          </ul>
        ) : (
          <p class="muted">No receipt yet.</p>
        )}
        {archived ? (
          <div class="actions">
            <button type="button" onClick={() => fetchFile(`/api/messages/${props.id}/archive`, first?.fields?.filename ?? `${props.id}.bin`)}>
              Download archived payload
            </button>
            <button type="button" onClick={() => fetchFile(`/api/messages/${props.id}/envelope?format=json`, `${props.id}.envelope.json`)}>
              Envelope (JSON)
            </button>
            <button type="button" onClick={() => fetchFile(`/api/messages/${props.id}/envelope?format=xml`, `${props.id}.envelope.xml`)}>
              Envelope (XML)
            </button>
          </div>
        ) : (
          <p class="muted">Not archived (its route does not archive).</p>
        )}
        {dlError ? (
          <p class="error" role="alert">
            {dlError}
          </p>
        ) : null}
      </State>
    </section>
  );
}
