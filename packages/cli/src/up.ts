import { InvalidArgumentError, Option, type Command } from "commander";
import { DAEMON_OPTIONS, type DaemonConfig } from "@sail/server/config";

/** Commander's name for a flag's value: --tcp-limit → tcpLimit. */
const camel = (flag: string) => flag.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());

/** `sail up`: start the daemon in the foreground (the one command that talks to the runtime). Its options come from the daemon's config schema. */
export function registerUp(program: Command): void {
  const up = program
    .command("up")
    .description("Start the Sail daemon in the foreground (needs root). The first start builds the Debian base image (minutes, with progress) and writes the client config the SDK and CLI read.");
  for (const option of DAEMON_OPTIONS) {
    if (!option.flag) continue;
    // checked as it is parsed, so commander names the flag and the value that is wrong
    const parse = (value: string) => {
      const parsed = option.parse(value);
      const wrong = Number.isNaN(parsed) ? "is not a number" : (option.check as (v: unknown) => string | undefined)(parsed);
      if (wrong) throw new InvalidArgumentError(wrong);
      return parsed;
    };
    const flag = new Option(`--${option.flag} <${option.arg}>`, option.help).argParser(
      "repeatable" in option ? (value: string, previous: unknown) => [...((previous as unknown[] | undefined) ?? []), ...(parse(value) as unknown[])] : parse,
    );
    // booleans are spelled on/off on the command line, and so in --help
    if (option.default !== undefined) {
      const shown = typeof option.default === "boolean" ? (option.default ? "on" : "off") : Array.isArray(option.default) ? option.default.join(",") || "none" : JSON.stringify(option.default);
      flag.default(option.default, shown);
    }
    up.addOption(flag);
  }
  up.addHelpText(
    "after",
    "\nExamples:\n  sail up\n  sail up --data-dir /srv/sail --api-listen 127.0.0.1:7171\n  sail up --domain sail.example.com --tls-cert /etc/sail/wildcard.pem --tls-key /etc/sail/wildcard.key --public-https-port 443\n  sail up --prebuild-image debian_arm64 --prebuild-image debian+postgresql   # build these in the background after start\n  sail up --role control --store postgres://sail:secret@db/sail   # the control plane alone; it prints how a node joins\n  sail up --role node --control http://10.0.0.1:7070 --node-token … --node-listen 0.0.0.0:7080 --node-url http://10.0.0.2:7080\n\nThe client config goes to $SAIL_CONFIG, else ~/.sail/config.json.",
  ).action(async (opts: Record<string, unknown>) => {
    const config = Object.fromEntries(DAEMON_OPTIONS.filter((o) => o.flag).map((o) => [o.key, opts[camel(o.flag!)]])) as Partial<DaemonConfig>;
    const { startDaemon } = await import("@sail/server");
    const tty = process.stderr.isTTY;
    let lastPhase = "";
    const daemon = await startDaemon(config, {
      onImageProgress: ({ phase, detail, done }) => {
        const text = `base image: ${phase}${detail ? ` ${detail}` : ""}`.slice(0, 110);
        if (tty) process.stderr.write(`\r\x1b[K${text}${done ? "\n" : ""}`);
        else if (phase !== lastPhase || done) process.stderr.write(text + "\n");
        lastPhase = phase;
      },
    });
    process.stderr.write(`${daemon.summary}\n`);
    let stopping = false;
    const stop = async () => {
      if (stopping) return;
      stopping = true;
      process.stderr.write("Stopping Sail (boxes keep running)...\n");
      await daemon.close();
      process.exit(0);
    };
    process.on("SIGINT", stop);
    process.on("SIGTERM", stop);
  });
}
