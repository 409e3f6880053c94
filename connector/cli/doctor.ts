import { access, constants, stat } from "node:fs/promises";
import { createServer } from "node:net";
import { delimiter, dirname, isAbsolute, join } from "node:path";
import { loadConfig, type ConnectorConfig } from "../config/config.ts";
import { edgeFetch, proxyFor } from "../core/edge-http.ts";
import { connectAssertion, identityPath, loadIdentity, type Identity } from "../identity/identity.ts";

export type Check = { check: string; ok: boolean; detail: string; fix?: string };

/** Assertions are accepted with 30 s of clock tolerance; warn well before that. */
const MAX_SKEW_MS = 20_000;

/**
 * Whether the connector will be able to use a folder, judged without
 * touching it: doctor only looks (creating folders would make its "fine"
 * true only because it ran). A missing folder whose parent is writable is
 * fine, since the connector creates it at start; a missing parent more
 * likely means a wrong path.
 */
async function folderCheck(dir: string): Promise<{ ok: true; detail: string } | { ok: false; detail: string; fix: string }> {
  const st = await stat(dir).catch((e: NodeJS.ErrnoException) => e);
  if (st instanceof Error) {
    if (st.code !== "ENOENT") return { ok: false, detail: `${dir}: ${st.code ?? st.message}`, fix: `make ${dir} reachable by the user that runs the connector` };
    const parent = dirname(dir);
    const pst = await stat(parent).catch(() => null);
    if (!pst) return { ok: false, detail: `${dir} does not exist, nor does its parent ${parent}`, fix: `correct the path in the config, or create it: mkdir -p ${dir} (owned by the user that runs the connector)` };
    if (!pst.isDirectory()) return { ok: false, detail: `${dir} cannot be created: ${parent} is not a folder`, fix: "correct the path in the config" };
    const err = await access(parent, constants.W_OK | constants.X_OK).then(() => null, (e: NodeJS.ErrnoException) => e.code ?? e.message);
    return err
      ? { ok: false, detail: `${dir} does not exist and cannot be created: ${parent} is not writable (${err})`, fix: `create it: mkdir ${dir} and chown it to the user that runs the connector` }
      : { ok: true, detail: `${dir} will be created at start` };
  }
  if (!st.isDirectory()) return { ok: false, detail: `${dir} is not a folder`, fix: "correct the path in the config, or move that file away" };
  const err = await access(dir, constants.W_OK | constants.R_OK | constants.X_OK).then(() => null, (e: NodeJS.ErrnoException) => e.code ?? e.message);
  return err ? { ok: false, detail: `${dir} is not writable (${err})`, fix: `make ${dir} writable by the user that runs the connector (chown or chmod)` } : { ok: true, detail: `${dir} is writable` };
}

async function portFree(listen: string): Promise<boolean> {
  const i = listen.lastIndexOf(":");
  return new Promise((resolve) => {
    const srv = createServer();
    srv.once("error", () => resolve(false));
    srv.listen(Number(listen.slice(i + 1)), listen.slice(0, i).replace(/^\[|\]$/g, ""), () => srv.close(() => resolve(true)));
  });
}

/** `path`: the PATH the command will get (the channel's env may set its own). */
async function executable(cmd: string, cwd: string, path: string): Promise<boolean> {
  const candidates = cmd.includes("/") ? [isAbsolute(cmd) ? cmd : join(cwd, cmd)] : path.split(delimiter).map((p) => join(p, cmd));
  for (const c of candidates) {
    if (await access(c, constants.X_OK).then(() => true, () => false)) return true;
  }
  return false;
}

/**
 * `ferry connector doctor`: checks the config, the state folder and its
 * permissions, the channels' folders, ports and commands, the edges'
 * reachability, the clock, and that the edge accepts this identity; and
 * says what to fix for each failure.
 */
export async function doctor(configFile: string): Promise<Check[]> {
  const checks: Check[] = [];
  const add = (c: Check) => checks.push(c);
  let cfg: ConnectorConfig;
  try {
    cfg = await loadConfig(configFile);
    add({ check: "config", ok: true, detail: `${configFile} is valid (${cfg.channels.length} channel${cfg.channels.length === 1 ? "" : "s"})` });
  } catch (e) {
    add({ check: "config", ok: false, detail: (e as Error).message, fix: "correct the field named above; see the README's config reference" });
    return checks;
  }

  add({ check: "state folder", ...(await folderCheck(cfg.state)) });

  let identity: Identity | null = null;
  try {
    identity = await loadIdentity(cfg.state);
    const mode = (await stat(identityPath(cfg.state))).mode & 0o777;
    add(
      mode & 0o077
        ? { check: "identity", ok: false, detail: `${identityPath(cfg.state)} is readable by others (mode ${mode.toString(8)})`, fix: `chmod 600 ${identityPath(cfg.state)}` }
        : { check: "identity", ok: true, detail: `connector '${identity.connector}' of tenant '${identity.tenant}', key file mode 600` },
    );
  } catch (e) {
    add({ check: "identity", ok: false, detail: (e as Error).message, fix: "ask an administrator for an enrolment token ('ferry admin connector add NAME') and run 'ferry connector enroll'" });
  }

  for (const ch of cfg.channels) {
    const label = `channel ${ch.name}`;
    if (ch.protocol === "file") {
      for (const [what, dir] of [["outbox", ch.outbox], ["inbox", ch.inbox]] as const) {
        if (!dir) continue;
        const c = await folderCheck(dir);
        add({ check: label, ...c, detail: `${what} ${c.detail}` });
      }
    } else if (ch.protocol === "http") {
      if (ch.listen) {
        const free = await portFree(ch.listen);
        add(free ? { check: label, ok: true, detail: `ingress ${ch.listen} is free` } : { check: label, ok: false, detail: `ingress ${ch.listen} is in use`, fix: "stop what listens there (or a running connector), or choose another listen address" });
      }
      if (ch.webhook) add({ check: label, ok: true, detail: `delivers to ${ch.webhook} (retried until it answers 2xx)` });
    } else {
      const [cmd] = ch.command;
      const ok = await executable(cmd as string, ch.cwd ?? ".", ch.env.PATH ?? process.env.PATH ?? "");
      add(ok ? { check: label, ok: true, detail: `command ${cmd} is executable` } : { check: label, ok: false, detail: `command ${cmd} is not found or not executable`, fix: `install ${cmd} or give its absolute path in 'command'` });
    }
  }

  const edges = cfg.edges ?? identity?.edges ?? [];
  for (const edge of edges) {
    const proxy = proxyFor(edge);
    try {
      const before = Date.now();
      const res = await edgeFetch(new URL("/healthz", edge), { signal: AbortSignal.timeout(10_000) });
      const after = Date.now();
      const body = (await res.json().catch(() => ({}))) as { version?: string; time?: number };
      add(res.ok ? { check: "edge", ok: true, detail: `${edge} answers (version ${body.version ?? "?"})${proxy ? ` through proxy ${proxy}` : ""}` } : { check: "edge", ok: false, detail: `${edge} answered ${res.status}`, fix: "check the edge URL in the config or enrolment" });
      const date = res.headers.get("date");
      const edgeTime = typeof body.time === "number" ? body.time : date ? Date.parse(date) + 500 : null;
      if (edgeTime !== null) {
        // The edge's time was taken somewhere in the round trip: compare with its middle.
        const skew = edgeTime - (before + after) / 2;
        add(Math.abs(skew) > MAX_SKEW_MS ? { check: "clock", ok: false, detail: `this clock is ${Math.round(skew / 1000)} s off the edge's`, fix: "enable time synchronisation (NTP, e.g. systemd-timesyncd or chrony)" } : { check: "clock", ok: true, detail: `within ${Math.max(1, Math.round(Math.abs(skew) / 1000))} s of the edge` });
      }
    } catch (e) {
      const cause = (e as { cause?: { code?: string } }).cause?.code ?? (e as Error).message;
      add({ check: "edge", ok: false, detail: `${edge} is unreachable (${cause})${proxy ? ` through proxy ${proxy}` : ""}`, fix: proxy ? "check the proxy (HTTPS_PROXY/NO_PROXY) and that it allows CONNECT to the edge" : "check outbound HTTPS to the edge, or set HTTPS_PROXY if the site uses a proxy" });
    }
  }

  if (identity && edges[0]) {
    try {
      const res = await edgeFetch(new URL("/v1/config", edges[0]), { headers: { authorization: `Bearer ${await connectAssertion(identity)}` }, signal: AbortSignal.timeout(10_000) });
      const body = (await res.json().catch(() => ({}))) as { outgoing?: unknown[]; incoming?: unknown[]; detail?: string };
      add(
        res.ok
          ? { check: "enrolment", ok: true, detail: `the edge accepts this identity; routes: ${body.outgoing?.length ?? 0} out, ${body.incoming?.length ?? 0} in` }
          : { check: "enrolment", ok: false, detail: `the edge refused this identity (${res.status}: ${body.detail ?? ""})`, fix: "the connector may be revoked: ask an administrator for a new enrolment token and enrol again" },
      );
    } catch (e) {
      add({ check: "enrolment", ok: false, detail: `could not ask the edge: ${(e as Error).message}`, fix: "fix the edge check above first" });
    }
  }
  return checks;
}
