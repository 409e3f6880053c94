import { render, useEffect, useState } from "hono/jsx/dom";
import { api, setToken, token } from "./api.ts";
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

// `npm start` prints a link with the dev admin token in the fragment (never sent to a server).
const fromLink = /(?:^|[#&])token=([^&]+)/.exec(location.hash);
if (fromLink?.[1]) {
  setToken(decodeURIComponent(fromLink[1]));
  history.replaceState(null, "", `${location.pathname}#/`);
}

const NAV = [
  ["#/", "Overview"],
  ["#/connectors", "Connectors"],
  ["#/routes", "Routes"],
  ["#/messages", "Messages"],
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
  const [value, setValue] = useState("");
  const [error, setError] = useState<string | null>(null);
  const submit = async (e: Event) => {
    e.preventDefault();
    setToken(value.trim());
    try {
      await api("GET", "/api/routes");
      props.onLogin();
    } catch {
      setToken(null);
      setError("That token was not accepted. Locally, it is in .state/admin-token (written by npm start).");
    }
  };
  return (
    <main class="login">
      <h1>Ferry</h1>
      <form onSubmit={submit} aria-label="Sign in">
        <div class={`field${error ? " invalid" : ""}`}>
          <label for="f-token">Admin token</label>
          <input id="f-token" type="password" autocomplete="off" value={value} onInput={(e: Event) => setValue((e.target as HTMLInputElement).value)} required />
          {error ? (
            <small class="field-error" role="alert">
              {error}
            </small>
          ) : null}
        </div>
        <button type="submit">Sign in</button>
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
