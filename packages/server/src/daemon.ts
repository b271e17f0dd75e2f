/**
 * saild: the one place that wires the rooms together (store, runtime, boxes, api).
 * `sail up` calls `startDaemon`; nothing imports this file but the CLI.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import type { AddressInfo, Server } from "node:net";
import { availableParallelism } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import pino, { type Logger } from "pino";
import { debianArch, parseImageName, type ClientConfig } from "@sail/protocol";
import { createMetricsServer } from "./api/metrics-server.js";
import { ConsoleSessions } from "./api/console-sessions.js";
import { createApiServer } from "./api/server.js";
import { TrafficLedger } from "./gateway/traffic-ledger.js";
import { Metrics } from "./metrics.js";
import { Tokens } from "./boxes/tokens.js";
import { gatewayPaths, DEFAULT_TIMEOUTS } from "./gateway/haproxy-config.js";
import { HaproxyGateway } from "./gateway/haproxy.js";
import { SlowPath } from "./gateway/slow-path.js";
import { TcpCluster } from "./gateway/tcp-cluster.js";
import { waitForFreePort } from "./gateway/ports.js";
import { ensureLocalTls, loadGivenTls } from "./gateway/tls.js";
import { createBoxes } from "./boxes/boxes.js";
import type { ActivityReport } from "./boxes/idle.js";
import type { RouteSubscriber } from "./boxes/routes.js";
import type { TcpBind } from "./boxes/tcp-binds.js";
import { parseListen, parsePortRange, resolveConfig, type DaemonConfig } from "./config.js";
import { preflight } from "./preflight.js";
import { LocalRuntime } from "./runtime/local-runtime.js";
import type { ImageProgress } from "./runtime/runtime.js";
import { Store } from "./store/store.js";
import { parseUpstream, upstreamsFromResolvConf, type Upstream } from "./egress/resolver.js";
import { ResolverThread } from "./egress/resolver-thread.js";

export { DEFAULT_CONFIG, type DaemonConfig } from "./config.js";
export { PreflightError } from "./preflight.js";

export interface RunningDaemon {
  apiUrl: string;
  token: string;
  config: DaemonConfig;
  /** Stop accepting requests, finish the ones in flight, undo what the start did, close the store. Boxes keep running. */
  close(): Promise<void>;
}

const TINI_PATH = "/usr/bin/tini-static";
/** The web console's files, built by `npm run build` (packages/console/dist), from packages/server/dist or src. */
const CONSOLE_DIR = join(dirname(fileURLToPath(import.meta.url)), "../../console/dist");

export async function startDaemon(options: Partial<DaemonConfig> = {}, hooks: { onImageProgress?: (p: ImageProgress) => void } = {}): Promise<RunningDaemon> {
  const config = resolveConfig(options);
  const log = pino({ level: config.logLevel, base: { service: "saild" } }, pino.destination(2));
  const arch = debianArch(process.arch);
  if (!arch) throw new Error(`Sail runs on amd64 and arm64 hosts; this one is ${process.arch}`);
  preflight({ tiniPath: TINI_PATH, outbound: config.outbound });

  mkdirSync(config.dataDir, { recursive: true });
  claimDataDir(config.dataDir);
  // everything started so far, stopped in reverse order: by close(), or when the start fails
  // (a daemon that cannot start leaves the host as it found it: no route, no firewall table)
  const undo: Array<() => Promise<void> | void> = [() => releaseDataDir(config.dataDir)];
  const stopAll = async () => {
    for (const step of undo.splice(0).reverse()) await step();
  };
  try {
    const store = new Store(join(config.dataDir, "sail.db"));
    undo.push(() => store.close());
    // what the operator lets boxes reach at all: the firewall enforces it, the boxes room checks policies against it
    const outboundBounds = { enabled: config.outbound, privateAllowed: config.outboundPrivate, only: config.outboundOnly ?? null };
    const runtime = new LocalRuntime({
      dataDir: config.dataDir,
      hostArch: arch,
      boxSubnet: config.boxSubnet,
      debianMirror: config.debianMirror,
      tiniPath: TINI_PATH,
      crunRoot: config.crunRoot,
      nofileLimit: 20_000,
      outbound: outboundBounds,
      log,
      disk: { defaultMiB: config.boxDiskMiB, bytesPerInode: config.boxDiskBytesPerInode },
      onBackgroundError: (what, err) => log.error({ err: String(err) }, `runtime: ${what} failed`),
    });
    const tls = config.tlsCert && config.tlsKey ? loadGivenTls(config.tlsCert, config.tlsKey) : ensureLocalTls(join(config.dataDir, "tls"), config.domain);
    const httpsListen = parseListen(config.httpsListen);
    const boxes = createBoxes(
      store,
      runtime,
      {
        defaults: { cpu: config.boxCpu, memoryMiB: config.boxMemoryMiB, diskMiB: config.boxDiskMiB, pidsLimit: config.boxPidsLimit, hostCpus: availableParallelism(), maxBoxes: runtime.maxBoxes },
        tcp: { ...parsePortRange(config.tcpPorts), defaultLimitPerOrg: config.tcpLimitPerOrg },
        addresses: { domain: config.domain, publicHttpsPort: config.publicHttpsPort ?? httpsListen.port, publicHost: config.publicHost },
        outbound: { ...outboundBounds, boxSubnet: config.boxSubnet },
      },
      log,
    );
    const metrics = new Metrics();
    boxes.power.onWoken((seconds) => {
      metrics.wakes.inc();
      metrics.wakeSeconds.observe(seconds);
    });
    // the console's traffic panel: per-listener counters of every data path (HAProxy is asked lazily: it starts below)
    const started: { haproxy?: HaproxyGateway } = {};
    const traffic = new TrafficLedger((host) => started.haproxy?.listenerTraffic(host));
    boxes.lifecycle.onTransition(({ box, to }) => (to === "terminated" || to === "failed") && traffic.forget(box.id));
    const ingress = {
      subscribe: (subscriber: RouteSubscriber) => boxes.routes.subscribe(subscriber),
      wakeOnIngress: (id: string) => boxes.power.wakeOnIngress(id),
      noteActivity: (source: string, report: ActivityReport) => {
        boxes.idle.noteActivity(source, report);
        if (source.startsWith("tcp-")) traffic.noteTcpActivity(source, report);
      },
      noteTcpBind: (publicPort: number, bind: TcpBind | undefined) => boxes.tcpBinds.note(publicPort, bind),
    };

    await runtime.start();
    undo.push(() => runtime.shutdown());
    await runtime.prepareImage(arch, hooks.onImageProgress ?? ((p) => log.info(p, "base image")));
    const reconciled = await boxes.endings.reconcile();
    log.info(reconciled, "reconciled the store with the runtime");

    // outbound: each live box's rules again (the firewall table is new), and its resolver
    const upstreams = dnsUpstreams(config);
    const resolver = new ResolverThread(boxes.outbound, { upstreams }, log, (result, count) => metrics.dnsQueries.inc({ result }, count));
    await resolver.start();
    undo.push(() => resolver.stop());
    const restored = await boxes.outbound.restoreAll();
    log.info({ restored, outbound: config.outbound, dnsUpstreams: upstreams.map((u) => `${u.host}:${u.port}`) }, "outbound rules in place");
    const refusalTimer = setInterval(() => void boxes.outbound.logRefusals().catch((err) => log.error({ err: String(err) }, "could not read refused destinations")), 5000);
    undo.push(() => clearInterval(refusalTimer));

    // HTTPS: HAProxy forwards to running boxes; the slow path (here, in TypeScript) decides the rest
    const gatewayDir = join(config.dataDir, "gateway");
    const paths = gatewayPaths(gatewayDir);
    const slowPath = new SlowPath(
      { socketPath: paths.slowPath, domain: config.domain, wakeOnIngress: ingress.wakeOnIngress, wakeBudgetMs: config.wakeTimeoutSeconds * 1000, responseMs: config.responseTimeoutSeconds * 1000 },
      log,
    );
    mkdirSync(gatewayDir, { recursive: true, mode: 0o711 });
    await slowPath.listen();
    undo.push(() => slowPath.close());
    ingress.subscribe(slowPath);
    const haproxy = new HaproxyGateway(
      {
        dir: gatewayDir,
        ...httpsListen,
        domain: config.domain,
        tls,
        threads: config.gatewayThreads ?? availableParallelism(),
        maxConnections: config.httpsMaxConnections,
        memoryMiB: config.gatewayMemoryMiB,
        user: systemUser("haproxy"),
        sessionResumption: config.tlsSessionResumption,
        timeouts: {
          ...DEFAULT_TIMEOUTS,
          headMs: config.headTimeoutSeconds * 1000,
          clientIdleMs: config.clientIdleTimeoutSeconds * 1000,
          responseMs: config.responseTimeoutSeconds * 1000,
          tunnelMs: config.tunnelTimeoutSeconds * 1000,
        },
      },
      log,
      (report) => ingress.noteActivity("haproxy", report),
    );
    await waitForFreePort(httpsListen.host, httpsListen.port);
    ingress.subscribe(haproxy);
    started.haproxy = haproxy;
    undo.push(() => haproxy.close());
    await haproxy.start();

    // raw TCP: worker processes with the native splice pump
    const tcp = new TcpCluster(
      ingress,
      { host: config.tcpListen, workers: config.tcpWorkers ?? availableParallelism(), wakeBudgetMs: config.wakeTimeoutSeconds * 1000, logLevel: config.logLevel },
      log,
      (workerId, counters, open, rss) => {
        metrics.absorb("tcp", counters);
        traffic.absorb(counters);
        metrics.tcpOpen.set({ worker: String(workerId) }, open);
        metrics.workerRss.set({ worker: `tcp-${workerId}` }, rss);
      },
    );
    undo.push(() => tcp.close());
    await tcp.start();
    // the slow path's counters are taken once, for the metrics and the traffic panel alike
    const takeSlowPathCounters = () => {
      const counters = slowPath.counters.take();
      metrics.absorb("http", counters);
      traffic.absorb(counters);
    };
    // idle auto-sleep: HAProxy's and the TCP workers' activity arrive by themselves; the slow path's is read here
    const idleTimer = setInterval(() => {
      ingress.noteActivity("slow-path", slowPath.activity.snapshot());
      takeSlowPathCounters();
      void boxes.idle.sleepIdleBoxes().catch((err) => log.error({ err: String(err) }, "idle check failed"));
    }, 1000);
    undo.push(() => clearInterval(idleTimer));
    log.info({ httpsListen: config.httpsListen, domain: config.domain, haproxyPid: haproxy.pid, tcpWorkers: tcp.pids }, "gateway listening");

    const server = createApiServer(boxes, new Tokens(store, log), (token) => store.orgForToken(token), { caCert: tls.caCert }, log, {
      console: config.console ? { sessions: new ConsoleSessions((sha256) => store.orgForTokenHash(sha256), config.domain), assetsDir: CONSOLE_DIR } : undefined,
      traffic,
    });
    const { host, port } = parseListen(config.apiListen);
    await listenOn(server, host, port);
    undo.push(
      () =>
        new Promise<void>((resolve) => {
          // requests in flight finish; a connection whose answer is out closes then, not after its keep-alive
          const sweep = setInterval(() => server.closeIdleConnections(), 50);
          server.close(() => {
            clearInterval(sweep);
            resolve();
          });
          server.closeIdleConnections();
        }),
    );
    const bound = server.address() as AddressInfo;
    const apiUrl = `http://${bound.family === "IPv6" ? `[${bound.address}]` : bound.address}:${bound.port}`;
    const token = ensureClientConfig(store, config.clientConfigPath, apiUrl);
    log.info({ apiUrl, clientConfig: config.clientConfigPath }, "sail API listening");

    if (config.metricsListen !== "off") {
      const metricsServer = createMetricsServer(async () => {
        metrics.absorb("http", await haproxy.takeCounters());
        takeSlowPathCounters();
        const rss = haproxy.rssBytes();
        if (rss !== undefined) metrics.workerRss.set({ worker: "haproxy" }, rss);
        metrics.absorbOutbound(await boxes.outbound.counters());
        metrics.sailboxes.reset();
        for (const [status, n] of Object.entries(boxes.lifecycle.countByStatus())) metrics.sailboxes.set({ status }, n);
        // HAProxy's own exporter (haproxy_*) follows Sail's series
        return { contentType: metrics.registry.contentType, body: (await metrics.registry.metrics()) + (await haproxy.prometheusText()) };
      });
      const listen = parseListen(config.metricsListen);
      await listenOn(metricsServer, listen.host, listen.port);
      undo.push(() => void metricsServer.close());
      log.info({ metricsListen: config.metricsListen }, "metrics at GET /metrics");
    }

    prebuildImages(boxes, config.prebuildImages, log);
    return { apiUrl, token, config, close: stopAll };
  } catch (err) {
    await stopAll().catch((cleanupErr) => log.error({ err: String(cleanupErr) }, "cleanup after a failed start failed"));
    throw err;
  }
}

/**
 * `--prebuild-image`: build these one after the other (two builds at once only slow each other
 * on a small host), after start, with progress in the log. A create that needs one meanwhile
 * joins its build. A failure is logged; the daemon runs on.
 */
function prebuildImages(boxes: ReturnType<typeof createBoxes>, specs: readonly string[], log: Logger): void {
  if (!specs.length) return;
  log.info({ images: specs }, "prebuilding images in the background");
  void (async () => {
    for (const spec of specs) {
      try {
        const plan = boxes.images.check(parseImageName(spec));
        await boxes.images.prepare(plan);
        log.info({ image: plan.name }, "prebuilt image ready");
      } catch (err) {
        log.error({ image: spec, err: String((err as Error).message ?? err) }, "could not prebuild image");
      }
    }
  })();
}

/** Where the box resolver forwards: --dns-upstream, else the host's own nameservers. */
function dnsUpstreams(config: DaemonConfig): Upstream[] {
  if (config.dnsUpstream) return config.dnsUpstream.map((u) => parseUpstream(u)!);
  let text = "";
  try {
    text = readFileSync("/etc/resolv.conf", "utf8");
  } catch {
    // no resolv.conf: glibc's default
  }
  const found = upstreamsFromResolvConf(text);
  return found.length ? found : [{ host: "127.0.0.1", port: 53 }];
}

/** A system user (e.g. Debian's `haproxy`) if the host has one. */
function systemUser(name: string): string | undefined {
  try {
    return readFileSync("/etc/passwd", "utf8")
      .split("\n")
      .some((line) => line.startsWith(`${name}:`))
      ? name
      : undefined;
  } catch {
    return undefined;
  }
}

function listenOn(server: Server, host: string, port: number): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    server.once("error", reject).listen(port, host, () => {
      server.off("error", reject);
      resolve();
    });
  });
}

/**
 * The org `default` and a token for it. Only the token's hash is stored, so the
 * plain token lives in the client config: reuse it while it is valid, else mint one.
 */
function ensureClientConfig(store: Store, path: string, apiUrl: string): string {
  const org = store.findOrgByName("default") ?? store.createOrg("default", { operator: true });
  let existing: Partial<ClientConfig> = {};
  try {
    existing = JSON.parse(readFileSync(path, "utf8")) as Partial<ClientConfig>;
  } catch {
    existing = {};
  }
  const valid = existing.token && store.orgForToken(existing.token)?.id === org.id;
  const token = valid ? existing.token! : store.createToken(org.id, "sail up").token;
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  writeFileSync(path, JSON.stringify({ apiUrl, token } satisfies ClientConfig, null, 2) + "\n", { mode: 0o600 });
  return token;
}

/** One daemon per data dir: a second would fight over boxes and addresses. */
function claimDataDir(dataDir: string): void {
  const pidFile = join(dataDir, "saild.pid");
  if (existsSync(pidFile)) {
    const pid = Number(readFileSync(pidFile, "utf8"));
    if (pid && pid !== process.pid && isAlive(pid)) throw new Error(`another saild (pid ${pid}) already uses ${dataDir}`);
  }
  writeFileSync(pidFile, String(process.pid));
}

function releaseDataDir(dataDir: string): void {
  const pidFile = join(dataDir, "saild.pid");
  try {
    if (Number(readFileSync(pidFile, "utf8")) === process.pid) writeFileSync(pidFile, "");
  } catch {
    // already gone
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export type { Logger };
