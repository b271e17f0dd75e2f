import type { Command } from "commander";
import { resolveBox } from "./shared.js";

/** `sail box terminate`. */
export function registerTerminate(box: Command): void {
  box
    .command("terminate")
    .description("Stop a Sailbox and release everything it holds (idempotent)")
    .argument("<box>", "sailbox id, or name with --app")
    .option("--app <name>", "app of a box given by name", "default")
    .action(async (idOrName: string, opts: { app: string }) => {
      const sb = await resolveBox(idOrName, opts.app);
      await sb.terminate();
      console.log(`Terminated ${sb.id}`);
    });
}
