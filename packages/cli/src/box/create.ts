import type { Command } from "commander";
import { App, IngressPort, Sailbox } from "@sail/sdk";
import { printJson } from "../output.js";
import { cliProgress } from "../progress.js";
import { collectPorts, collectStrings, imageForArch, listenerRow, networkSentence, sshCommand } from "./shared.js";

/** `sail box create`: create a box, wait until it runs, and say how to reach it. */
export function registerCreate(box: Command): void {
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
    .option(
      "--arch <arch>",
      "amd64 or arm64 (default: the host's); the other one runs under emulation, and its first create builds its image (minutes, with progress on stderr; or ahead: sail image build)",
    )
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
        const network = { blockNetwork: opts.blockNetwork, allowOut: opts.allowOut.length ? opts.allowOut : undefined, denyOut: opts.denyOut.length ? opts.denyOut : undefined };
        // the first create of an image waits for its build: its steps go to stderr as they happen
        const progress = cliProgress();
        const sb = await Sailbox.create({ app, name: opts.name, image, cpu: opts.cpu, memory: opts.memory, disk: opts.disk, ingressPorts, ssh, ...network, onProgress: progress.onProgress }).finally(
          progress.end,
        );
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
}
