import { useEffect, useState } from "hono/jsx/dom";
import type { Child } from "hono/jsx";
import { ApiProblem } from "./api.ts";

export const time = (t: number | null | undefined) => (t ? new Date(t).toLocaleString() : "—");
export const bytes = (n: number | null | undefined) =>
  n === null || n === undefined ? "—" : n < 1024 ? `${n} B` : n < 1048576 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / 1048576).toFixed(1)} MiB`;
export const duration = (s: number | null) => (s === null ? "—" : s % 86400 === 0 ? `${s / 86400}d` : s % 3600 === 0 ? `${s / 3600}h` : s % 60 === 0 ? `${s / 60}m` : `${s}s`);

/** What went wrong, for people: the edge's problem detail, or the error's message. */
export const message = (e: unknown) => (e instanceof ApiProblem ? e.problem.detail : e instanceof Error ? e.message : String(e));

/** Loads data, refreshing every `everyMs` (live views), with loading and error states. */
export function useLoad<T>(load: () => Promise<T>, deps: unknown[], everyMs = 0) {
  const [data, setData] = useState<T | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [tick, setTick] = useState(0);
  useEffect(() => {
    let live = true;
    load().then(
      (d) => live && (setData(d), setError(null)),
      (e: unknown) => live && setError(message(e)),
    );
    const t = everyMs ? setTimeout(() => setTick((n) => n + 1), everyMs) : undefined;
    return () => {
      live = false;
      if (t) clearTimeout(t);
    };
  }, [...deps, tick]);
  return { data, error, reload: () => setTick((n) => n + 1) };
}

export function State(props: { error: string | null; loading: boolean; empty?: boolean; emptyText?: string; children?: Child }) {
  if (props.error) return <p class="error" role="alert">{props.error}</p>;
  if (props.loading) return <p class="muted" aria-busy="true">Loading…</p>;
  if (props.empty) return <p class="empty">{props.emptyText ?? "Nothing here yet."}</p>;
  return <>{props.children}</>;
}

export function Field(props: { label: string; name: string; error?: string | undefined; hint?: string; children: Child }) {
  const id = `f-${props.name}`;
  return (
    <div class={`field${props.error ? " invalid" : ""}`}>
      <label for={id}>{props.label}</label>
      {props.children}
      {props.hint && !props.error ? <small class="muted">{props.hint}</small> : null}
      {props.error ? (
        <small class="field-error" id={`${id}-error`} role="alert">
          {props.error}
        </small>
      ) : null}
    </div>
  );
}

export function Badge(props: { kind: string; children: Child }) {
  return <span class={`badge ${props.kind}`}>{props.children}</span>;
}

/** A table's header row; `actions` adds the (visually hidden) column for row buttons. */
export function TableHead(props: { cols: string[]; actions?: boolean }) {
  return (
    <thead>
      <tr>
        {props.cols.map((c) => (
          <th>{c}</th>
        ))}
        {props.actions ? (
          <th class="actions-col">
            <span class="sr-only">Actions</span>
          </th>
        ) : null}
      </tr>
    </thead>
  );
}

/** A labelled progress bar with its numbers beside it (`value` of `max` parts). */
export function Progress(props: { label: string; value: number; max: number; detail?: string; testid?: string }) {
  const max = Math.max(1, props.max);
  const value = Math.min(Math.max(0, props.value), max);
  const pct = Math.floor((value / max) * 100);
  return (
    <div class="progress" data-testid={props.testid}>
      <span class="progress-label">{props.label}</span>
      <progress max={max} value={value} aria-label={`${props.label}: ${pct}%`}>
        {pct}%
      </progress>
      <span class="progress-numbers">
        {pct}% · {value} of {props.max} parts{props.detail ? ` · ${props.detail}` : ""}
      </span>
    </div>
  );
}
