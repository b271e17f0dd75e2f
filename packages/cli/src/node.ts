import type { Command } from "commander";
import { Nodes, type NodeSummary } from "@sail/sdk";
import { printJson, printTable } from "./output.js";

const leaseAge = (ms: number | null): string => (ms === null ? "(in-process)" : `${(ms / 1000).toFixed(1)}s`);

function printNodes(nodes: NodeSummary[]): void {
  printTable(
    nodes.map((n) => ({
      NODE: n.nodeId,
      STATE: n.state,
      ADDRESS: n.url || "(this process)",
      LEASE: leaseAge(n.leaseAgeMs),
      BOXES: `${n.boxes}/${n.maxBoxes}`,
      CPU: n.cpu,
      "MEMORY (MiB)": n.memoryMiB,
      ARCH: n.hostArch,
    })),
    ["NODE", "STATE", "ADDRESS", "LEASE", "BOXES", "CPU", "MEMORY (MiB)", "ARCH"],
  );
}

export function registerNode(program: Command): void {
  const node = program.command("node").description("The machines that run sailboxes (operator's org only): list them, drain one");
  node
    .command("ls")
    .alias("list")
    .description("List the nodes: state, address, age of the last heartbeat, sailboxes and what they hold")
    .option("--json", "print JSON")
    .addHelpText(
      "after",
      "\nA node that misses its heartbeats for its lease (sail up --node-lease) stops serving; past the grace\n(--node-grace) it is lost and its sailboxes fail. A box lives on one node for its life.\n\nExample:\n  sail node ls",
    )
    .action(async (opts: { json?: boolean }) => {
      const nodes = await Nodes.list();
      if (opts.json) return printJson(nodes);
      printNodes(nodes);
    });
  node
    .command("drain")
    .description("Send no new sailboxes to a node; those it runs stay until they end (--undo takes new ones again)")
    .argument("<node>", "the node's id (sail node ls)")
    .option("--undo", "take new sailboxes again")
    .option("--json", "print JSON")
    .addHelpText("after", "\nExamples:\n  sail node drain node-3f2a9c        # before maintenance\n  sail node drain node-3f2a9c --undo")
    .action(async (nodeId: string, opts: { undo?: boolean; json?: boolean }) => {
      const drained = await Nodes.drain(nodeId, { draining: !opts.undo });
      if (opts.json) return printJson(drained);
      console.log(`${drained.nodeId}: ${drained.state}`);
    });
}
