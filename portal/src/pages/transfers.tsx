import type { TransferView } from "../../../wire/admin-types.ts";
import { api, ApiProblem } from "../api.ts";
import { bytes, Progress, State, time, useLoad } from "../ui.tsx";

/** 8 MiB: the part size large files travel in (the last part may be shorter). */
const PART = 8 * 1024 * 1024;

type Loaded = { transfers: TransferView[] } | { unsupported: true };

/** `GET /api/transfers`, or a marker when the edge predates it (404). */
async function load(): Promise<Loaded> {
  try {
    return await api<{ transfers: TransferView[] }>("GET", "/api/transfers");
  } catch (e) {
    if (e instanceof ApiProblem && e.problem.status === 404) return { unsupported: true };
    throw e;
  }
}

/** Bytes held after `n` of `parts` parts of a `size`-byte file. */
const partBytes = (t: TransferView, n: number) => (n >= t.parts ? t.size : Math.min(t.size, n * PART));

/**
 * Large files (over 1 MiB) on their way: each travels in 8 MiB parts, first
 * uploaded by its source connector into the edge, then fetched part by part
 * by each destination. Refreshes live; finished transfers leave the list.
 */
export function Transfers() {
  const { data, error } = useLoad(load, [], 2000);
  const list = data && "transfers" in data ? [...data.transfers].sort((a, b) => b.updatedAt - a.updatedAt) : [];
  return (
    <section>
      <h1>Transfers</h1>
      <p class="muted">
        Large files (over 1 MiB) travel in 8 MiB parts: relayed straight to the destinations' disks while they are all online (the edge stores none of it), otherwise uploaded by the source connector into the edge, then fetched by each destination. They show here while on their way; delivered ones are in{" "}
        <a href="#/messages">Messages</a>.
      </p>
      <State error={error} loading={!data}>
        {data && "unsupported" in data ? (
          <p class="empty" data-testid="transfers-unsupported">
            This edge does not report transfers yet (it has no <code>GET /api/transfers</code>): upgrade the edge to follow large files here. Large files are still delivered; find them in <a href="#/messages">Messages</a>.
          </p>
        ) : list.length === 0 ? (
          <p class="empty" data-testid="transfers-empty">
            No large transfers in flight.
          </p>
        ) : (
          <ul class="transfers" aria-live="polite">
            {list.map((t) => (
              <li class="transfer" data-transfer={t.id}>
                <h2>
                  <a href={`#/messages/${encodeURIComponent(t.id)}`}>{t.filename ?? t.id}</a>
                </h2>
                <p class="muted">
                  {bytes(t.size)} in {t.parts} part{t.parts === 1 ? "" : "s"} · from {t.source} · last progress {time(t.updatedAt)}
                </p>
                <Progress
                  label={t.relayed ? (t.uploaded >= t.parts ? "Relayed (not stored at the edge)" : "Relaying (not stored at the edge)") : t.uploaded >= t.parts ? "Uploaded" : "Uploading"}
                  value={t.uploaded}
                  max={t.parts}
                  detail={`${bytes(partBytes(t, t.uploaded))} of ${bytes(t.size)}`}
                  testid="upload"
                />
                {t.downloads.length === 0 ? (
                  <p class="muted">No destination yet.</p>
                ) : (
                  t.downloads.map((d) => (
                    <Progress
                      label={
                        t.relayed
                          ? `${d.fetched >= t.parts ? "Written by" : "Writing:"} ${d.destination}`
                          : `${d.fetched >= t.parts ? "Fetched by" : d.fetched === 0 ? "Waiting for" : "Fetching:"} ${d.destination}`
                      }
                      value={d.fetched}
                      max={t.parts}
                      detail={d.fetched > 0 ? bytes(partBytes(t, d.fetched)) : t.uploaded < t.parts ? "starts once the upload is complete" : "not started (is it online?)"}
                      testid={`download-${d.destination}`}
                    />
                  ))
                )}
              </li>
            ))}
          </ul>
        )}
      </State>
    </section>
  );
}
