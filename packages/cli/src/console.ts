import type { Command } from "commander";
import { SailClient, type ConsoleLoginLink } from "@sail/sdk";
import { printJson } from "./output.js";

export function registerConsole(program: Command): void {
  program
    .command("console")
    .description("Print a link that opens the web console logged in (works once, for 2 minutes)")
    .option("--json", "print { url, expiresAt }")
    .addHelpText(
      "after",
      [
        "",
        "The console is served by the daemon on its API address (sail up --api-listen, default 127.0.0.1:7070):",
        "your boxes live, each box's URLs, traffic and actions, a terminal in the box, and a form to create one.",
        "The link logs this browser in (a session cookie); it is no use to anyone once opened.",
        "",
        "Examples:",
        "  sail console                 # then open the printed link",
        "  ssh -L 7070:127.0.0.1:7070 my-server   # the console of a remote daemon, from your laptop",
      ].join("\n"),
    )
    .action(async (opts: { json?: boolean }) => {
      const client = SailClient.default();
      const link = await client.request<ConsoleLoginLink>("POST", "/v1/console/login-links", {});
      const url = client.apiUrl + link.path;
      if (opts.json) return printJson({ url, expiresAt: link.expiresAt });
      console.log(`Open the Sail console (this link works once, until ${link.expiresAt}):\n\n  ${url}\n`);
    });
}
