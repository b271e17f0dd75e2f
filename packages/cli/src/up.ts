import type { Command } from "commander";

/** `sail up`: start the daemon in the foreground (the one command that talks to the runtime). */
export function registerUp(program: Command): void {
  program
    .command("up")
    .description("Start the Sail daemon in the foreground (needs root). The first start builds the Debian base image (about a minute) and writes the client config the SDK and CLI read.")
    .option("--data-dir <dir>", "where Sail keeps its database, images and boxes", "/var/lib/sail")
    .option("--api-listen <host:port>", "address of the control-plane API", "127.0.0.1:7070")
    .option("--metrics-listen <host:port|off>", "address of the Prometheus endpoint (GET /metrics, no auth)", "127.0.0.1:7071")
    .option("--https-listen <host:port>", "address of the HTTPS gateway for published ports", "0.0.0.0:8443")
    .option("--domain <domain>", "HTTP listeners get https://<port>-<id>.<domain>", "sail.localhost")
    .option("--public-https-port <port>", "the port public URLs name, if a proxy in front changes it (443 is left out)", (v) => parseInt(v, 10))
    .option("--tls-cert <file>", "serve this certificate (e.g. a wildcard for *.<domain>) instead of the local CA's")
    .option("--tls-key <file>", "the key of --tls-cert")
    .option("--gateway-workers <n>", "processes serving HTTPS (default: one per core)", (v) => parseInt(v, 10))
    .option("--tcp-listen <address>", "address raw-TCP listeners bind on", "0.0.0.0")
    .option("--tcp-ports <first-last>", "range public TCP ports are taken from", "20000-29999")
    .option("--public-host <host>", "host name TCP endpoints advertise", "localhost")
    .option("--tcp-limit <n>", "raw-TCP endpoints an org may hold at once", (v) => parseInt(v, 10), 32)
    .option("--box-subnet <cidr>", "IPv4 range carved into one /30 per box", "10.200.0.0/16")
    .option("--debian-mirror <url>", "Debian mirror for the base image", "http://deb.debian.org/debian")
    .option("--log-level <level>", "debug, info, warn, error or silent", "info")
    .addHelpText("after", "\nExamples:\n  sail up\n  sail up --data-dir /srv/sail --api-listen 127.0.0.1:7171\n\nThe client config goes to $SAIL_CONFIG, else ~/.sail/config.json.")
    .action(async (opts: { dataDir: string; apiListen: string; metricsListen: string; httpsListen: string; domain: string; publicHttpsPort?: number; tlsCert?: string; tlsKey?: string; gatewayWorkers?: number; tcpListen: string; tcpPorts: string; publicHost: string; tcpLimit: number; boxSubnet: string; debianMirror: string; logLevel: "info" }) => {
      const { startDaemon } = await import("@sail/server");
      const tty = process.stderr.isTTY;
      let lastPhase = "";
      const daemon = await startDaemon(
        {
          dataDir: opts.dataDir,
          apiListen: opts.apiListen,
          metricsListen: opts.metricsListen,
          httpsListen: opts.httpsListen,
          domain: opts.domain,
          publicHttpsPort: opts.publicHttpsPort,
          tlsCert: opts.tlsCert,
          tlsKey: opts.tlsKey,
          gatewayWorkers: opts.gatewayWorkers,
          tcpListen: opts.tcpListen,
          tcpPorts: opts.tcpPorts,
          publicHost: opts.publicHost,
          tcpLimitPerOrg: opts.tcpLimit,
          boxSubnet: opts.boxSubnet,
          debianMirror: opts.debianMirror,
          logLevel: opts.logLevel,
        },
        {
          onImageProgress: ({ phase, detail, done }) => {
            const text = `base image: ${phase}${detail ? ` ${detail}` : ""}`.slice(0, 110);
            if (tty) process.stderr.write(`\r\x1b[K${text}${done ? "\n" : ""}`);
            else if (phase !== lastPhase || done) process.stderr.write(text + "\n");
            lastPhase = phase;
          },
        },
      );
      process.stderr.write(
        `Sail is up: API ${daemon.apiUrl}, HTTPS gateway ${daemon.config.httpsListen} for *.${daemon.config.domain}, client config ${daemon.config.clientConfigPath}\n` +
          `Try: sail box create --name demo --port 3000   (trust the local CA with: sail ca)\n`,
      );
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
