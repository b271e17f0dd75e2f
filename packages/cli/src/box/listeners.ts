import type { Command } from "commander";
import { printJson, printTable } from "../output.js";
import { listenerRow, resolveBox } from "./shared.js";

/** `sail box listeners`. */
export function registerListeners(box: Command): void {
  box
    .command("listeners")
    .description("List a Sailbox's published ports and their endpoints")
    .argument("<box>", "sailbox id, or name with --app")
    .option("--app <name>", "app of a box given by name", "default")
    .option("--json", "print JSON")
    .action(async (idOrName: string, opts: { app: string; json?: boolean }) => {
      const sb = await resolveBox(idOrName, opts.app);
      const rows = (await sb.listeners()).map(listenerRow);
      if (opts.json) return printJson(rows);
      printTable(rows, ["port", "protocol", "endpoint", "state"]);
    });
}
