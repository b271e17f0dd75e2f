import type { Command } from "commander";
import { Tokens, type TokenInfo } from "@sail/sdk";
import { printJson, printTable } from "./output.js";

const row = (t: TokenInfo) => ({ id: t.id, org: t.org, label: t.label, created: t.createdAt, revoked: t.revokedAt ?? "" });

export function registerToken(program: Command): void {
  const token = program.command("token").description("API tokens: create one per person or machine, revoke it when done");

  token
    .command("create")
    .description("Create an API token (printed once: only its hash is kept)")
    .option("--label <text>", "what it is for, e.g. ci or alice's laptop")
    .option("--org <name>", "for another org, created if missing (operator's org only): how tenants are added")
    .option("--json", "print the token and its details as JSON")
    .addHelpText(
      "after",
      "\nExamples:\n  sail token create --label ci\n  sail token create --org acme --label admin   # a new tenant: its boxes are invisible to other orgs\n  SAIL_TOKEN=$(sail token create --label ci --json | jq -r .token) sail box ls",
    )
    .action(async (opts: { label?: string; org?: string; json?: boolean }) => {
      const created = await Tokens.create({ label: opts.label, org: opts.org });
      if (opts.json) return printJson(created);
      console.log(created.token);
      console.error(`Created token ${created.id} for org ${created.org}. It is shown only now: use it as SAIL_TOKEN=<token>, revoke it with: sail token revoke ${created.id}`);
    });

  token
    .command("ls")
    .description("List your org's tokens (never their secrets), revoked ones included")
    .option("--org <name>", "another org's tokens (operator's org only)")
    .option("--json", "print JSON")
    .action(async (opts: { org?: string; json?: boolean }) => {
      const tokens = await Tokens.list({ org: opts.org });
      if (opts.json) return printJson(tokens);
      printTable(tokens.map(row), ["id", "org", "label", "created", "revoked"]);
    });

  token
    .command("revoke")
    .description("Revoke a token: the next request made with it is refused")
    .argument("<id>", "the token's id (tok-...), from sail token ls")
    .addHelpText("after", "\nExample:\n  sail token revoke tok-abc123def456")
    .action(async (id: string) => {
      const revoked = await Tokens.revoke(id);
      console.log(`Revoked token ${revoked.id} (${revoked.label || "no label"}) of org ${revoked.org}`);
    });
}
