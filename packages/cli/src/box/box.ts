import type { Command } from "commander";
import { registerCreate } from "./create.js";
import { registerExec } from "./exec.js";
import { registerListeners } from "./listeners.js";
import { registerLs } from "./ls.js";
import { registerNetwork } from "./network.js";
import { registerPower } from "./power.js";
import { registerSsh } from "./ssh.js";
import { registerTerminate } from "./terminate.js";

/** `sail box …`: one file per command; the order here is `sail box --help`'s. */
export function registerBox(program: Command): void {
  const box = program.command("box").description("Create, list, run commands in and terminate Sailboxes");
  registerCreate(box);
  registerLs(box);
  registerNetwork(box);
  registerExec(box);
  registerListeners(box);
  registerSsh(box);
  registerPower(box);
  registerTerminate(box);
}
