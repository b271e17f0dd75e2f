import type { Command } from "commander";
import { Orgs, type OrgLimitsInfo, type SetOrgLimitsRequest } from "@sail/sdk";
import { printJson, printTable } from "./output.js";

/** A limit option's value: a number, or "none" to remove the limit (commander turns a parser's null into "", so "none" stays a string until `asLimit`). */
const limitValue = (value: string): number | "none" => (value === "none" ? "none" : Number(value));
const asLimit = (value: number | "none"): number | null => (value === "none" ? null : value);

function printLimits(info: OrgLimitsInfo): void {
  const { limits, usage, effective } = info;
  console.log(`Org ${info.org}:`);
  printTable(
    [
      { limit: "sailboxes", max: limits.sailboxes ?? "none", "in use": usage.sailboxes },
      { limit: "cpu (cores)", max: limits.cpu ?? "none", "in use": usage.cpu },
      { limit: "memory (MiB)", max: limits.memoryMiB ?? "none", "in use": usage.memoryMiB },
      { limit: "tcp endpoints", max: limits.tcpEndpoints ?? `${effective.tcpEndpoints} (daemon default)`, "in use": usage.tcpEndpoints },
    ],
    ["limit", "max", "in use"],
  );
}

export function registerOrg(program: Command): void {
  const org = program.command("org").description("Orgs (tenants): their limits on live boxes");
  org
    .command("limit")
    .description("Show an org's limits and usage, or set them (operator's org only): a create past a limit is refused with SAIL_ORG_LIMIT_EXCEEDED")
    .argument("<org>", "the org's name (default is the operator's)")
    .option("--boxes <n|none>", "live sailboxes at once (sleeping and paused ones count)", limitValue)
    .option("--cpu <cores|none>", "cores of all its live sailboxes together", limitValue)
    .option("--memory <MiB|none>", "MiB of all its live sailboxes together", limitValue)
    .option("--tcp <n|none>", "raw-TCP endpoints at once (none: the daemon's --tcp-limit)", limitValue)
    .option("--json", "print JSON")
    .addHelpText(
      "after",
      "\nLimits count live sailboxes (running, sleeping, paused); a refused create changes nothing.\n\nExamples:\n  sail org limit acme                                 # show limits and usage\n  sail org limit acme --boxes 20 --cpu 8 --memory 16384\n  sail org limit acme --memory none                   # remove one limit",
    )
    .action(async (name: string, opts: { boxes?: number | "none"; cpu?: number | "none"; memory?: number | "none"; tcp?: number | "none"; json?: boolean }) => {
      const change: SetOrgLimitsRequest = {};
      if (opts.boxes !== undefined) change.sailboxes = asLimit(opts.boxes);
      if (opts.cpu !== undefined) change.cpu = asLimit(opts.cpu);
      if (opts.memory !== undefined) change.memoryMiB = asLimit(opts.memory);
      if (opts.tcp !== undefined) change.tcpEndpoints = asLimit(opts.tcp);
      const info = Object.keys(change).length ? await Orgs.setLimits(name, change) : await Orgs.limits(name);
      if (opts.json) return printJson(info);
      printLimits(info);
    });
}
