import type { Command } from "commander";
import { SailClient } from "@sail/sdk";

export function registerCa(program: Command): void {
  program
    .command("ca")
    .description("Print the certificate of Sail's local CA (PEM), to trust the gateway's HTTPS URLs")
    .addHelpText(
      "after",
      "\nExamples:\n  sail ca > sail-ca.pem && curl --cacert sail-ca.pem https://3000-<id>.sail.localhost:8443\n  sail ca > /usr/local/share/ca-certificates/sail.crt && update-ca-certificates\n  NODE_EXTRA_CA_CERTS=sail-ca.pem node app.js",
    )
    .action(async () => {
      process.stdout.write(await SailClient.default().text("/v1/ca"));
    });
}
