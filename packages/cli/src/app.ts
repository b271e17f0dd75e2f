import type { Command } from "commander";
import { App } from "@sail/sdk";
import { printJson, printTable } from "./output.js";

export function registerApp(program: Command): void {
  const app = program.command("app").description("Apps group Sailboxes");
  app
    .command("ls")
    .description("List your org's apps")
    .option("--json", "print JSON")
    .action(async (opts: { json?: boolean }) => {
      const apps = await App.list();
      if (opts.json) return printJson(apps.map((a) => ({ id: a.id, name: a.name })));
      printTable(
        apps.map((a) => ({ id: a.id, name: a.name })),
        ["id", "name"],
      );
    });
}
