import type { Command } from "commander";
import { InvalidArgumentError } from "@sail/sdk";
import { printJson } from "../output.js";
import { collectStrings, networkSentence, resolveBox } from "./shared.js";

/** `sail box network`: show or change a box's outbound policy. */
export function registerNetwork(box: Command): void {
  box
    .command("network")
    .description("Show or change where a Sailbox may open connections; a change applies at once and cuts open connections it no longer allows")
    .argument("<box>", "sailbox id, or name with --app")
    .option("--app <name>", "app of a box given by name", "default")
    .option("--open", "let the box reach everything but private ranges, the host and other boxes")
    .option("--block", "let nothing out (DNS included)")
    .option("--allow-out <dest>", "only these: IPv4 address or CIDR, domain, *.domain (repeatable)", collectStrings, [] as string[])
    .option("--deny-out <dest>", "everything but these (repeatable)", collectStrings, [] as string[])
    .option("--json", "print JSON")
    .addHelpText(
      "after",
      "\nExamples:\n  sail box network web-demo\n  sail box network web-demo --allow-out '*.debian.org' --allow-out 198.51.100.0/24\n  sail box network web-demo --block\n  sail box network web-demo --open",
    )
    .action(async (idOrName: string, opts: { app: string; open?: boolean; block?: boolean; allowOut: string[]; denyOut: string[]; json?: boolean }) => {
      const sb = await resolveBox(idOrName, opts.app);
      const changes = [opts.open, opts.block, opts.allowOut.length > 0, opts.denyOut.length > 0].filter(Boolean).length;
      if (changes > 1) throw new InvalidArgumentError("SAIL_NETWORK_POLICY_CONFLICT", "give one of --open, --block, --allow-out and --deny-out", { field: "network" });
      const network = changes
        ? await sb.setNetwork({ blockNetwork: opts.block, allowOut: opts.allowOut.length ? opts.allowOut : undefined, denyOut: opts.denyOut.length ? opts.denyOut : undefined })
        : sb.network;
      if (opts.json) return printJson(network);
      console.log(`${sb.id}: ${networkSentence(network)}`);
    });
}
