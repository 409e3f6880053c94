import { ADMIN_HELP, adminCommand } from "./admin.ts";
import { CliError } from "./admin-client.ts";
import { CONNECTOR_HELP, connectorCommand } from "./connector-cmd.ts";
import { demoCommand } from "./demo.ts";
import { processOut, type Out } from "./output.ts";
import { ConfigError } from "../config/config.ts";
import { IdentityError, isSetupProblem } from "../identity/identity.ts";

declare const FERRY_VERSION: string;

const HELP = `ferry — messaging as a service on Cloudflare's edge

Usage:
  ferry admin …       manage connectors, routes and the message log (ferry admin --help)
  ferry connector …   enrol and run a site's connector (ferry connector --help)
  ferry demo          the five-minute tour against a running 'npm start'
  ferry --version

Every command takes --help; those that print a result take --json
(machine-readable output). 'ferry connector run' prints logs, not a result:
set log = "json" in its config for JSON lines.
`;

export async function main(argv: string[], out: Out = processOut): Promise<number> {
  const [cmd, ...rest] = argv;
  try {
    switch (cmd) {
      case "admin":
        return await adminCommand(rest, out);
      case "connector":
        return await connectorCommand(rest, out);
      case "demo":
        return await demoCommand(rest, out);
      case "--version":
      case "-v":
        out.stdout(typeof FERRY_VERSION === "string" ? FERRY_VERSION : "dev");
        return 0;
      case undefined:
      case "help":
      case "--help":
      case "-h":
        out.stdout(HELP);
        return cmd === undefined ? 2 : 0;
      default:
        out.stderr(`ferry: unknown command '${cmd}'\n\n${HELP}`);
        return 2;
    }
  } catch (e) {
    if (e instanceof CliError) {
      out.stderr(`ferry: ${e.message}`);
      return e.exitCode;
    }
    if (e instanceof ConfigError) {
      out.stderr(`ferry: config error: ${e.message}`);
      return 2;
    }
    if (e instanceof IdentityError) {
      out.stderr(`ferry: ${e.message}`);
      // Not enrolled (or the wrong folder or user) is a set-up problem like a
      // config mistake: exit 2, so a supervisor does not restart it in a loop
      // expecting a transient failure. The edge refusing or unreachable is 1.
      return isSetupProblem(e) ? 2 : 1;
    }
    // parseArgs' own errors name the bad option; show them as usage errors.
    const code = (e as { code?: string }).code;
    if (typeof code === "string" && code.startsWith("ERR_PARSE_ARGS")) {
      out.stderr(`ferry: ${(e as Error).message}\n(see --help: ${cmd === "admin" ? ADMIN_HELP.split("\n")[0] : CONNECTOR_HELP.split("\n")[0]})`);
      return 2;
    }
    out.stderr(`ferry: ${(e as Error).stack ?? String(e)}`);
    return 1;
  }
}

const exitCode = await main(process.argv.slice(2));
process.exit(exitCode);
