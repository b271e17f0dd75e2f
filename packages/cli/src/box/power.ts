import type { Command } from "commander";
import { resolveBox } from "./shared.js";

/** `sail box sleep|pause|resume`. */
export function registerPower(box: Command): void {
  for (const [action, description] of [
    ["sleep", "Freeze a Sailbox; the next inbound connection or exec wakes it"],
    ["pause", "Freeze a Sailbox; traffic does not wake it (HTTP 503, TCP closed) until resume"],
    ["resume", "Bring a paused or sleeping Sailbox back"],
  ] as const) {
    box
      .command(action)
      .description(description)
      .argument("<box>", "sailbox id, or name with --app")
      .option("--app <name>", "app of a box given by name", "default")
      .action(async (idOrName: string, opts: { app: string }) => {
        const sb = await resolveBox(idOrName, opts.app);
        await sb[action]();
        console.log(`${sb.id}: ${sb.describe().status}`);
      });
  }
}
