#!/usr/bin/env node
import { Command } from "commander";
import { registerApp } from "./app.js";
import { registerBox } from "./box/box.js";
import { registerCa } from "./ca.js";
import { registerConsole } from "./console.js";
import { registerImage } from "./image.js";
import { registerNode } from "./node.js";
import { registerOrg } from "./org.js";
import { failWith } from "./output.js";
import { registerToken } from "./token.js";
import { registerUp } from "./up.js";

const program = new Command();
program
  .name("sail")
  .description("Sail: isolated Linux sandboxes (Sailboxes) you can run code in and publish ports from.")
  .version("0.1.0")
  .showHelpAfterError()
  .addHelpText(
    "after",
    "\nQuick start:\n  sail up                      # start the daemon (as root)\n  sail box create --name demo  # in another terminal\n  sail box exec demo -- echo hello\n  sail box exec -it demo        # a shell in the box\n  sail console                 # a link to the web console\n\nThe CLI finds the daemon from SAIL_API_URL and SAIL_TOKEN, else ~/.sail/config.json.",
  );
registerUp(program);
registerApp(program);
registerBox(program);
registerImage(program);
registerCa(program);
registerToken(program);
registerOrg(program);
registerNode(program);
registerConsole(program);

program.parseAsync(process.argv).catch(failWith);
