import type { Command } from "commander";
import { App, Image, IngressPort, InvalidArgumentError, SailClient, Sailbox, type Listener, type SailboxInfo } from "@sail/sdk";
import { runInteractive } from "./interactive.js";
import { printJson, printTable } from "./output.js";

/** "debian/arm64 (emulated)", "debian/amd64+postgresql". */
const imageLabel = (image: SailboxInfo["image"]) => `${image.name}/${image.arch}${image.aptPackages.length ? `+${image.aptPackages.join(",")}` : ""}${image.emulated ? " (emulated)" : ""}`;

/** "open", "blocked", "allow 3", "deny 1". */
const networkLabel = (network: SailboxInfo["network"]) =>
  network.outbound === "allowlist" ? `allow ${network.allowOut.length}` : network.outbound === "denylist" ? `deny ${network.denyOut.length}` : network.outbound;

/** The policy in words, e.g. "outbound: only *.debian.org, 198.51.100.0/24". */
const networkSentence = (network: SailboxInfo["network"]) =>
  network.outbound === "allowlist"
    ? `outbound: only ${network.allowOut.join(", ")}`
    : network.outbound === "denylist"
      ? `outbound: everywhere but ${network.denyOut.join(", ")}`
      : network.outbound === "blocked"
        ? "outbound: blocked (nothing leaves the box, DNS included)"
        : "outbound: open (never to private ranges, the host or other boxes)";

const row = (sb: Sailbox) => {
  const d = sb.describe();
  return {
    id: d.id,
    name: d.name,
    status: d.status,
    image: imageLabel(d.image),
    cpu: d.cpu,
    memory: `${d.memoryMiB}MiB`,
    disk: d.diskMiB === null ? "-" : `${d.diskMiB}MiB`,
    network: networkLabel(d.network),
    created: d.createdAt,
  };
};

const listenerRow = (l: Listener) => ({
  port: l.port,
  protocol: l.protocol,
  endpoint: l.protocol === "http" ? l.endpoint.url : `${l.endpoint.host}:${l.endpoint.port}`,
});

const sshCommand = (l: Listener) => `ssh -p ${l.endpoint.port} root@${l.endpoint.host}`;

function collectPorts(value: string, previous: number[]): number[] {
  return [...previous, Number(value)];
}

function collectStrings(value: string, previous: string[]): string[] {
  return [...previous, value];
}

function imageForArch(arch: string | undefined): Image {
  if (arch === undefined) return Image.debian;
  if (arch === "amd64") return Image.debian_amd64;
  if (arch === "arm64") return Image.debian_arm64;
  throw new InvalidArgumentError("SAIL_IMAGE_UNKNOWN", `--arch ${JSON.stringify(arch)} is not an architecture Sail knows: use amd64 or arm64`, { field: "image" });
}

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
    .option("--disk <MiB>", "disk limit in MiB: what the box may write, in bytes and files (default: the daemon's --box-disk)", Number)
    .option("--port <port>", "publish a guest port over HTTPS (repeatable)", collectPorts, [] as number[])
    .option("--h2c-port <port>", "publish a guest port over HTTPS, speaking HTTP/2 (h2c) to it: gRPC (repeatable)", collectPorts, [] as number[])
    .option("--tcp <port>", "publish a guest port as raw TCP (repeatable)", collectPorts, [] as number[])
    .option("--allow <cidr>", "only these sources may connect to the --tcp ports (repeatable)", collectStrings, [] as string[])
    .option("--allow-public", "confirm a well-known unauthenticated --tcp port (e.g. 5432) may be reached from anywhere")
    .option("--proxy-protocol", "send the --tcp ports' servers a PROXY protocol v2 header with the client's address")
    .option("--arch <arch>", "amd64 or arm64 (default: the host's); the other one runs under emulation, and its first create builds its image (minutes)")
    .option("--apt <package>", "Debian package to install in the image, e.g. postgresql (repeatable; built once, then cached)", collectStrings, [] as string[])
    .option("--block-network", "let nothing out of the box (DNS included); published ports still work")
    .option("--allow-out <dest>", "let the box reach only these: IPv4 address or CIDR, domain, *.domain (repeatable)", collectStrings, [] as string[])
    .option("--deny-out <dest>", "let the box reach everything but these (repeatable)", collectStrings, [] as string[])
    .option("--enable-ssh", "install and start sshd with your public key, publish port 22, print the ssh command")
    .option("--ssh-key <path>", "public key for --enable-ssh (default ~/.ssh/id_ed25519.pub, then ~/.ssh/id_rsa.pub)")
    .option("--json", "print the box and its listeners as JSON")
    .addHelpText(
      "after",
      "\nExamples:\n  sail box create --name web-demo --port 3000\n  sail box create --name db --apt postgresql --tcp 5432 --allow 203.0.113.0/24\n  sail box create --name dev --enable-ssh\n  sail box create --name api --h2c-port 50051   # a gRPC server, at its HTTPS URL\n  sail box create --app ci --cpu 0.5 --memory 512 --disk 2048\n  sail box create --arch arm64 --port 3000   # emulated on an amd64 host\n  sail box create --allow-out pypi.org --allow-out files.pythonhosted.org   # pip install, nothing else\n  sail box create --block-network --port 3000",
    )
    .action(
      async (opts: {
        app: string;
        name?: string;
        cpu?: number;
        memory?: number;
        disk?: number;
        port: number[];
        h2cPort: number[];
        tcp: number[];
        allow: string[];
        allowPublic?: boolean;
        proxyProtocol?: boolean;
        arch?: string;
        apt: string[];
        blockNetwork?: boolean;
        allowOut: string[];
        denyOut: string[];
        enableSsh?: boolean;
        sshKey?: string;
        json?: boolean;
      }) => {
        const app = await App.find({ name: opts.app, mintIfMissing: true });
        const tcpOptions = { cidrAllowlist: opts.allow.length ? opts.allow : undefined, allowPublic: opts.allowPublic, proxyProtocol: opts.proxyProtocol };
        const ingressPorts = [...opts.port, ...opts.h2cPort.map((p) => new IngressPort(p, "http", { h2c: true })), ...opts.tcp.map((p) => new IngressPort(p, "tcp", tcpOptions))];
        const ssh = opts.sshKey ?? (opts.enableSsh ? true : undefined);
        const base = imageForArch(opts.arch);
        const image = opts.apt.length ? base.aptInstall(opts.apt) : base;
        if (opts.apt.length) console.error(`Preparing an image with ${opts.apt.join(", ")} (the first time, this takes as long as apt-get install)...`);
        else if (opts.arch) console.error(`Preparing the ${opts.arch} image (the first time under emulation, this takes a few minutes)...`);
        const network = { blockNetwork: opts.blockNetwork, allowOut: opts.allowOut.length ? opts.allowOut : undefined, denyOut: opts.denyOut.length ? opts.denyOut : undefined };
        const sb = await Sailbox.create({ app, name: opts.name, image, cpu: opts.cpu, memory: opts.memory, disk: opts.disk, ingressPorts, ssh, ...network });
        const listeners = await sb.listeners();
        if (opts.json) return printJson({ ...sb.describe(), listeners: listeners.map(listenerRow) });
        console.log(`Created sailbox ${sb.id}${sb.name ? ` (${sb.name})` : ""} in app ${app.name}: ${sb.describe().status}`);
        for (const l of listeners) console.log(`  port ${l.port} (${l.protocol}): ${listenerRow(l).endpoint}`);
        console.log(`  ${networkSentence(sb.network)}`);
        const http = listeners.find((l) => l.protocol === "http");
        if (http) console.log(`Start a server on port ${http.port} inside the box (0.0.0.0 or 127.0.0.1), e.g.: sail box exec ${sb.id} --background -- python3 -m http.server ${http.port}`);
        console.log(`Run a command: sail box exec ${sb.id} -- uname -a`);
        const sshListener = listeners.find((l) => l.port === 22 && l.protocol === "tcp");
        if (ssh && sshListener) console.log(`SSH: ${sshCommand(sshListener)}`);
      },
    );

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
      printTable(boxes.map(row), ["id", "name", "status", "image", "cpu", "memory", "disk", "network", "created"]);
    });

  box
    .command("network")
    .description("Show or change where a Sailbox may open connections; a change applies at once and cuts open connections it no longer allows")
    .argument("<box>", "sailbox id, or name with --app")
    .option("--app <name>", "app of a box given by name", "default")
    .option("--open", "let the box reach everything but private ranges, the host and other boxes")
    .option("--block", "let nothing out (DNS included)")
    .option("--allow-out <dest>", "only these: IPv4 address or CIDR, domain, *.domain (repeatable)", collectStrings, [] as string[])
    .option("--deny-out <dest>", "everything but these (repeatable)", collectStrings, [] as string[])
    .option("--json", "print JSON")
    .addHelpText(
      "after",
      "\nExamples:\n  sail box network web-demo\n  sail box network web-demo --allow-out '*.debian.org' --allow-out 198.51.100.0/24\n  sail box network web-demo --block\n  sail box network web-demo --open",
    )
    .action(async (idOrName: string, opts: { app: string; open?: boolean; block?: boolean; allowOut: string[]; denyOut: string[]; json?: boolean }) => {
      const sb = await resolveBox(idOrName, opts.app);
      const changes = [opts.open, opts.block, opts.allowOut.length > 0, opts.denyOut.length > 0].filter(Boolean).length;
      if (changes > 1) throw new InvalidArgumentError("SAIL_NETWORK_POLICY_CONFLICT", "give one of --open, --block, --allow-out and --deny-out", { field: "network" });
      const network = changes
        ? await sb.setNetwork({ blockNetwork: opts.block, allowOut: opts.allowOut.length ? opts.allowOut : undefined, denyOut: opts.denyOut.length ? opts.denyOut : undefined })
        : sb.network;
      if (opts.json) return printJson(network);
      console.log(`${sb.id}: ${networkSentence(network)}`);
    });

  box
    .command("exec")
    .description("Run a command in a Sailbox with /bin/sh -c; exits with the command's exit code. -it: interactively, on a terminal")
    .argument("<box>", "sailbox id, or name with --app")
    .argument("[cmd...]", "the command (put it after --); with -it it may be left out for the box's login shell")
    .option("--app <name>", "app of a box given by name", "default")
    .option("--cwd <dir>", "working directory inside the box")
    .option("-e, --env <KEY=VALUE...>", "environment variables")
    .option("--background", "start it and return; prints the exec id")
    .option("-i, --interactive", "send your keystrokes to it (use with -t)")
    .option("-t, --tty", "run it on a terminal in the box, like docker exec -it: raw mode, Ctrl-C reaches the box, resizes follow your window")
    .addHelpText(
      "after",
      "\nExamples:\n  sail box exec sb-abc123 -- ls -la /\n  sail box exec web-demo --cwd /srv -- python3 -m http.server 3000 --background\n  sail box exec -it web-demo              # a login shell in the box; exit (or Ctrl-D) ends it\n  sail box exec -it web-demo -- top       # any full-screen program",
    )
    .action(async (idOrName: string, cmd: string[], opts: { app: string; cwd?: string; env?: string[]; background?: boolean; interactive?: boolean; tty?: boolean }) => {
      const env = Object.fromEntries((opts.env ?? []).map((kv) => [kv.slice(0, kv.indexOf("=")), kv.slice(kv.indexOf("=") + 1)]));
      const command = cmd.join(" ");
      if (opts.interactive || opts.tty) {
        if (opts.background) throw new InvalidArgumentError("SAIL_INVALID_ARGUMENT", "--background and -it do not go together: a background exec has no terminal", { field: "background" });
        const sb = await resolveBox(idOrName, opts.app);
        process.exitCode = await runInteractive(sb, { cmd: command || undefined, cwd: opts.cwd, env: opts.env ? env : undefined });
        return;
      }
      if (!command) throw new InvalidArgumentError("SAIL_EXEC_INVALID", "Give the command after --, e.g. sail box exec BOX -- uname -a (or -it for a shell)", { field: "cmd" });
      const sb = await resolveBox(idOrName, opts.app);
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
    .command("listeners")
    .description("List a Sailbox's published ports and their endpoints")
    .argument("<box>", "sailbox id, or name with --app")
    .option("--app <name>", "app of a box given by name", "default")
    .option("--json", "print JSON")
    .action(async (idOrName: string, opts: { app: string; json?: boolean }) => {
      const sb = await resolveBox(idOrName, opts.app);
      const rows = (await sb.listeners()).map(listenerRow);
      if (opts.json) return printJson(rows);
      printTable(rows, ["port", "protocol", "endpoint"]);
    });

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

export function registerApp(program: Command): void {
  const app = program.command("app").description("Apps group Sailboxes");
  app
    .command("ls")
    .description("List your org's apps")
    .option("--json", "print JSON")
    .action(async (opts: { json?: boolean }) => {
      const apps = await App.list();
      if (opts.json) return printJson(apps.map((a) => ({ id: a.id, name: a.name })));
      printTable(
        apps.map((a) => ({ id: a.id, name: a.name })),
        ["id", "name"],
      );
    });
}
