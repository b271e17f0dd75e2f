import type { Command } from "commander";
import { resolveBox } from "./shared.js";

/** `sail box ssh`: the user's own ssh client, at the box's published port 22. */
export function registerSsh(box: Command): void {
  box
    .command("ssh")
    .description("Open an SSH session to a Sailbox created with --enable-ssh (runs your ssh client)")
    .argument("<box>", "sailbox id, or name with --app")
    .argument("[args...]", "extra arguments for ssh (after --), e.g. a command")
    .option("--app <name>", "app of a box given by name", "default")
    .action(async (idOrName: string, args: string[], opts: { app: string }) => {
      const sb = await resolveBox(idOrName, opts.app);
      const listener = await sb.listener(22).wait({ timeout: 60 });
      const { spawnSync } = await import("node:child_process");
      const result = spawnSync("ssh", ["-p", String(listener.endpoint.port), `root@${listener.endpoint.host}`, ...args], { stdio: "inherit" });
      process.exitCode = result.status ?? 1;
    });
}
