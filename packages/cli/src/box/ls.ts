import type { Command } from "commander";
import { App, Sailbox } from "@sail/sdk";
import { printJson, printTable } from "../output.js";
import { boxRow } from "./shared.js";

/** `sail box ls`. */
export function registerLs(box: Command): void {
  box
    .command("ls")
    .description("List Sailboxes (live ones unless --all)")
    .option("--app <name>", "only this app's boxes")
    .option("--all", "include terminated and failed boxes")
    .option("--json", "print JSON")
    .action(async (opts: { app?: string; all?: boolean; json?: boolean }) => {
      const app = opts.app ? await App.find({ name: opts.app }) : undefined;
      const boxes = (await Sailbox.list({ app })).filter((sb) => opts.all || !["terminated", "failed"].includes(sb.describe().status));
      if (opts.json) return printJson(boxes.map((sb) => sb.describe()));
      printTable(boxes.map(boxRow), ["id", "name", "status", "image", "cpu", "memory", "disk", "network", "created"]);
    });
}
