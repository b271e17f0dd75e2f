import type { Command } from "commander";
import { App, Sailbox } from "@sail/sdk";
import { printJson, printTable } from "./output.js";

const row = (sb: Sailbox) => {
  const d = sb.describe();
  return { id: d.id, name: d.name, status: d.status, cpu: d.cpu, memory: `${d.memoryMiB}MiB`, created: d.createdAt };
};

/** An id (`sb-…`) or the name of a live box in `--app`. */
async function resolveBox(idOrName: string, appName: string): Promise<Sailbox> {
  if (idOrName.startsWith("sb-")) return Sailbox.fromId(idOrName);
  return Sailbox.fromName(await App.find({ name: appName }), idOrName);
}

export function registerBox(program: Command): void {
  const box = program.command("box").description("Create, list, run commands in and terminate Sailboxes");

  box
    .command("create")
    .description("Create a Sailbox and wait until it runs")
    .option("--app <name>", "app to create it in (created if missing)", "default")
    .option("--name <name>", "a name, unique among the app's live boxes")
    .option("--cpu <cores>", "CPU cores (fractions allowed)", parseFloat)
    .option("--memory <MiB>", "memory limit in MiB", (v) => parseInt(v, 10))
    .option("--json", "print the box as JSON")
    .addHelpText("after", "\nExamples:\n  sail box create --name web-demo\n  sail box create --app ci --cpu 0.5 --memory 512")
    .action(async (opts: { app: string; name?: string; cpu?: number; memory?: number; json?: boolean }) => {
      const app = await App.find({ name: opts.app, mintIfMissing: true });
      const sb = await Sailbox.create({ app, name: opts.name, cpu: opts.cpu, memory: opts.memory });
      if (opts.json) return printJson(sb.describe());
      console.log(`Created sailbox ${sb.id}${sb.name ? ` (${sb.name})` : ""} in app ${app.name}: ${sb.describe().status}`);
      console.log(`Run a command: sail box exec ${sb.id} -- uname -a`);
    });

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
      printTable(boxes.map(row), ["id", "name", "status", "cpu", "memory", "created"]);
    });

  box
    .command("exec")
    .description("Run a command in a Sailbox with /bin/sh -c; exits with the command's exit code")
    .argument("<box>", "sailbox id, or name with --app")
    .argument("<cmd...>", "the command (put it after --)")
    .option("--app <name>", "app of a box given by name", "default")
    .option("--cwd <dir>", "working directory inside the box")
    .option("-e, --env <KEY=VALUE...>", "environment variables")
    .option("--background", "start it and return; prints the exec id")
    .addHelpText("after", "\nExamples:\n  sail box exec sb-abc123 -- ls -la /\n  sail box exec web-demo --cwd /srv -- python3 -m http.server 3000 --background")
    .action(async (idOrName: string, cmd: string[], opts: { app: string; cwd?: string; env?: string[]; background?: boolean }) => {
      const sb = await resolveBox(idOrName, opts.app);
      const env = Object.fromEntries((opts.env ?? []).map((kv) => [kv.slice(0, kv.indexOf("=")), kv.slice(kv.indexOf("=") + 1)]));
      const command = cmd.join(" ");
      if (opts.background) {
        const proc = await sb.exec(command, { cwd: opts.cwd, env, background: true }).wait();
        console.log(`started ${proc.id} in ${sb.id}`);
        return;
      }
      const proc = sb.exec(command, { cwd: opts.cwd, env });
      const pipe = async (from: AsyncIterable<string>, to: NodeJS.WriteStream) => {
        for await (const text of from) to.write(text);
      };
      const [exitCode] = await Promise.all([proc.wait(), pipe(proc.stdout, process.stdout), pipe(proc.stderr, process.stderr)]);
      process.exitCode = exitCode;
    });

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

export function registerApp(program: Command): void {
  const app = program.command("app").description("Apps group Sailboxes");
  app
    .command("ls")
    .description("List your org's apps")
    .option("--json", "print JSON")
    .action(async (opts: { json?: boolean }) => {
      const apps = await App.list();
      if (opts.json) return printJson(apps.map((a) => ({ id: a.id, name: a.name })));
      printTable(apps.map((a) => ({ id: a.id, name: a.name })), ["id", "name"]);
    });
}
