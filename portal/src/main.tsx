import { render, useEffect, useState } from "hono/jsx/dom";
import { api, ApiProblem, BUILT_EDGE, edge, normaliseEdge, setEdge, setToken, SIGNED_OUT, token, Unreachable } from "./api.ts";
import { Overview } from "./pages/overview.tsx";
import { Connectors } from "./pages/connectors.tsx";
import { Routes } from "./pages/routes.tsx";
import { Messages } from "./pages/messages.tsx";
import { Trace } from "./pages/trace.tsx";
import { DeadLetters } from "./pages/dead-letters.tsx";
import { Audit } from "./pages/audit.tsx";
import { ConnectorDetail } from "./pages/connector.tsx";
import { Tokens } from "./pages/tokens.tsx";
import { HostedPage } from "./pages/hosted.tsx";
import { Transfers } from "./pages/transfers.tsx";

// `npm start` prints a link with the dev admin token in the fragment (never
// sent to a server); a portal on Pages may also get the edge's URL there:
// `#edge=https://edge.example.com&token=…`.
const fromLink = new URLSearchParams(location.hash.replace(/^#\/?/, ""));
if (fromLink.has("edge") || fromLink.has("token")) {
  const linkedEdge = fromLink.get("edge");
  if (linkedEdge !== null) {
    try {
      setEdge(normaliseEdge(linkedEdge));
    } catch {
      // Not a usable URL: the sign-in screen asks for it.
    }
  }
  const linkedToken = fromLink.get("token");
  if (linkedToken) setToken(linkedToken);
  history.replaceState(null, "", `${location.pathname}#/`);
}

const NAV = [
  ["#/", "Overview"],
  ["#/connectors", "Connectors"],
  ["#/routes", "Routes"],
  ["#/messages", "Messages"],
  ["#/transfers", "Transfers"],
  ["#/dead-letters", "Dead letters"],
  ["#/hosted", "Hosted"],
  ["#/audit", "Admin actions"],
  ["#/tokens", "Tokens"],
] as const;

function useHash(): string {
  const [hash, setHash] = useState(location.hash || "#/");
  useEffect(() => {
    const on = () => setHash(location.hash || "#/");
    window.addEventListener("hashchange", on);
    return () => window.removeEventListener("hashchange", on);
  }, []);
  return hash;
}

function Login(props: { onLogin: () => void }) {
  const [edgeValue, setEdgeValue] = useState(edge());
  const [value, setValue] = useState("");
  const [edgeError, setEdgeError] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e: Event) => {
    e.preventDefault();
    let base: string;
    try {
      // Empty: the edge this portal was built for (or, without one, the portal's own origin).
      base = normaliseEdge(edgeValue) || BUILT_EDGE;
    } catch (err) {
      setEdgeError((err as Error).message);
      setError(null);
      return;
    }
    setEdgeError(null);
    setEdge(base);
    setEdgeValue(base);
    setToken(value.trim());
    setBusy(true);
    try {
      await api("GET", "/api/routes");
      props.onLogin();
    } catch (err) {
      setToken(null);
      if (err instanceof Unreachable) {
        setEdgeError(err.message);
        setError(null);
      } else if (err instanceof ApiProblem && err.problem.status !== 401 && err.problem.status !== 403) {
        setEdgeError(`The edge answered ${err.problem.status}: ${err.problem.detail}`);
        setError(null);
      } else {
        setError("That token was not accepted. Locally, it is in .state/admin-token (written by npm start).");
      }
    } finally {
      setBusy(false);
    }
  };
  return (
    <main class="login">
      <h1>Ferry</h1>
      <form onSubmit={submit} aria-label="Sign in">
        <div class={`field${edgeError ? " invalid" : ""}`}>
          <label for="f-edge">Edge URL</label>
          <input
            id="f-edge"
            type="url"
            inputmode="url"
            autocomplete="url"
            placeholder={BUILT_EDGE || location.origin}
            value={edgeValue}
            onInput={(e: Event) => setEdgeValue((e.target as HTMLInputElement).value)}
            aria-describedby="f-edge-hint"
            aria-invalid={edgeError ? "true" : "false"}
          />
          {edgeError ? (
            <small class="field-error" id="f-edge-hint" role="alert">
              {edgeError}
            </small>
          ) : (
            <small class="muted" id="f-edge-hint">
              Where the Ferry edge answers. Empty: {BUILT_EDGE ? `${BUILT_EDGE} (this portal's build)` : "this site"}.
            </small>
          )}
        </div>
        <div class={`field${error ? " invalid" : ""}`}>
          <label for="f-token">Admin token</label>
          <input id="f-token" type="password" autocomplete="off" value={value} onInput={(e: Event) => setValue((e.target as HTMLInputElement).value)} aria-invalid={error ? "true" : "false"} required />
          {error ? (
            <small class="field-error" role="alert">
              {error}
            </small>
          ) : null}
        </div>
        <button type="submit" disabled={busy}>
          Sign in
        </button>
        <p class="muted small">Both are kept in this browser tab only (session storage) and sent to the edge alone.</p>
      </form>
    </main>
  );
}

function Page(props: { hash: string }) {
  const path = props.hash.replace(/^#/, "");
  const trace = /^\/messages\/(.+)$/.exec(path);
  if (trace?.[1]) return <Trace id={decodeURIComponent(trace[1])} />;
  const connector = /^\/connectors\/(.+)$/.exec(path);
  if (connector?.[1]) return <ConnectorDetail name={decodeURIComponent(connector[1])} />;
  switch (path) {
    case "/connectors":
      return <Connectors />;
    case "/routes":
      return <Routes />;
    case "/messages":
      return <Messages />;
    case "/transfers":
      return <Transfers />;
    case "/dead-letters":
      return <DeadLetters />;
    case "/audit":
      return <Audit />;
    case "/tokens":
      return <Tokens />;
    case "/hosted":
      return <HostedPage />;
    default:
      return <Overview />;
  }
}

function App() {
  const hash = useHash();
  const [signedIn, setSignedIn] = useState(token() !== null);
  useEffect(() => {
    const out = () => setSignedIn(false);
    window.addEventListener(SIGNED_OUT, out);
    return () => window.removeEventListener(SIGNED_OUT, out);
  }, []);
  if (!signedIn) return <Login onLogin={() => setSignedIn(true)} />;
  const section = `#/${hash.replace(/^#\//, "").split("/")[0] ?? ""}`;
  return (
    <>
      <header>
        <a class="brand" href="#/">
          Ferry
        </a>
        <nav aria-label="Main">
          {NAV.map(([href, label]) => (
            <a href={href} aria-current={section === href ? "page" : undefined}>
              {label}
            </a>
          ))}
        </nav>
        {edge() ? (
          <span class="edge-host" title="The edge this portal talks to">
            edge: {edge().replace(/^https?:\/\//, "")}
          </span>
        ) : null}
        <button
          type="button"
          class="link"
          onClick={() => {
            setToken(null);
            setSignedIn(false);
          }}
        >
          Sign out
        </button>
      </header>
      <main>
        <Page hash={hash} />
      </main>
    </>
  );
}

render(<App />, document.getElementById("app") as HTMLElement);
