/**
 * saild: the one place that wires the parts together, for each role (`sail up --role`):
 * - all (the default): the control plane and the node agent in this process, SQLite in the data dir;
 * - control: the API, the store (SQLite or PostgreSQL) and the boxes room; node agents join it;
 * - node: a node agent (runtime, gateway, firewall and resolver) that joins a control plane.
 * The parts meet only through the NodeApi (node-wire/node-api.ts): a method call here, HTTP
 * and a WebSocket between two processes. `sail up` calls `startDaemon`; nothing imports this
 * file but the CLI.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import type { AddressInfo, Server } from "node:net";
import { availableParallelism } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import pino, { type Logger } from "pino";
import { debianArch, parseImageName, SailError, type ClientConfig } from "@sail/protocol";
import { createMetricsServer } from "./api/metrics-server.js";
import { ConsoleSessions } from "./api/console-sessions.js";
import { createApiServer } from "./api/server.js";
import { createBoxes, type Boxes } from "./boxes/boxes.js";
import { RouteFeed } from "./boxes/route-feed.js";
import { startEdge } from "./edge/edge.js";
import { gatewayPaths, DEFAULT_TIMEOUTS } from "./gateway/haproxy-config.js";
import { HaproxyGateway } from "./gateway/haproxy.js";
import { SlowPath } from "./gateway/slow-path.js";
import { TcpCluster } from "./gateway/tcp-cluster.js";
import { waitForFreePort } from "./gateway/ports.js";
import { ensureLocalTls, loadGivenTls } from "./gateway/tls.js";
import { parseListen, parsePortRange, resolveConfig, type DaemonConfig } from "./config.js";
import { preflight } from "./preflight.js";
import { LocalRuntime } from "./runtime/local-runtime.js";
import type { ImageProgress } from "./runtime/runtime.js";
import { SqliteStore } from "./store/sqlite-store.js";
import { PostgresStore } from "./store/postgres-store.js";
import type { Store } from "./store/store.js";
import { parseUpstream, upstreamsFromResolvConf, type Upstream } from "./egress/resolver.js";
import { ResolverThread } from "./egress/resolver-thread.js";
import { NodeAgent } from "./node/node-agent.js";
import { NodeStore } from "./node/node-store.js";
import type { NodeApi, NodeEvent, NodeEventSink, NodeInfo } from "./node-wire/node-api.js";
import { RemoteNode } from "./node-wire/client.js";
import { NodeEndpoint } from "./node-wire/control-endpoint.js";
import { ControlLink } from "./node-wire/control-link.js";
import { createNodeServer } from "./node-wire/server.js";

export { DEFAULT_CONFIG, type DaemonConfig } from "./config.js";
export { PreflightError } from "./preflight.js";

export interface RunningDaemon {
  /** The API (roles all and control); a node agent's: its control plane's. */
  apiUrl: string;
  token: string;
  config: DaemonConfig;
  /** What `sail up` prints once this part is up. */
  summary: string;
  /** Stop accepting requests, finish the ones in flight, undo what the start did, close the store. Boxes keep running. */
  close(): Promise<void>;
}

const TINI_PATH = "/usr/bin/tini-static";
/** The web console's files, built by `npm run build` (packages/console/dist), from packages/server/dist or src. */
const CONSOLE_DIR = join(dirname(fileURLToPath(import.meta.url)), "../../console/dist");
/** A node agent tells its control plane it is there this often (a restarted control plane learns of it within this). */
const NODE_HEARTBEAT_MS = 5_000;
/** How often a node looks whether its lease lapsed (it fences itself within this of the lapse). */
const NODE_FENCE_CHECK_MS = 500;
/** How long a node keeps serving while its control plane answers that its database is away (Patroni's default failover is ~30 s). */
const NODE_STORE_OUTAGE_MS = 60_000;

/** What a start did, undone in reverse by close() or by a start that fails (the host as it was found). */
class Undo {
  private readonly steps: Array<() => Promise<void> | void> = [];
  push(step: () => Promise<void> | void): void {
    this.steps.push(step);
  }
  async run(): Promise<void> {
    for (const step of this.steps.splice(0).reverse()) await step();
  }
}

export async function startDaemon(options: Partial<DaemonConfig> = {}, hooks: { onImageProgress?: (p: ImageProgress) => void } = {}): Promise<RunningDaemon> {
  const config = resolveConfig(options);
  const log = pino({ level: config.logLevel, base: { service: "saild", role: config.role } }, pino.destination(2));
  mkdirSync(config.dataDir, { recursive: true });
  claimDataDir(config.dataDir);
  const undo = new Undo();
  undo.push(() => releaseDataDir(config.dataDir));
  try {
    if (config.role === "node") return await startNodeRole(config, log, undo, hooks);
    if (config.role === "control") return await startControlRole(config, log, undo);
    if (config.role === "edge") return await startEdgeRole(config, log, undo);
    // all: the node agent first (its events wait for the control plane: they are retried), then the control plane with it attached
    const events = new LateSink();
    const node = await startNode(config, log, undo, events, hooks);
    const control = await startControl(config, log, undo, () => node.tls.caCert);
    events.target = control.boxes.nodes;
    node.agent.controlPlaneReachable(); // what the node said while the control plane started goes now, not after its backoff
    await control.boxes.nodes.attachLocal(node.agent, await node.agent.info());
    log.info(await control.boxes.endings.reconcile(control.boxes.nodes.some()), "reconciled the store with the node");
    prebuildImages(control.boxes, config.prebuildImages, log);
    const summary =
      `Sail is up: API ${control.apiUrl}, HTTPS gateway ${config.httpsListen} for *.${config.domain}, client config ${config.clientConfigPath}\n` +
      `Try: sail box create --name demo --port 3000   (trust the local CA with: sail ca)`;
    return { apiUrl: control.apiUrl, token: control.token, config, summary, close: () => undo.run() };
  } catch (err) {
    await undo.run().catch((cleanupErr) => log.error({ err: String(cleanupErr) }, "cleanup after a failed start failed"));
    throw err;
  }
}

/** An edge: HAProxy in front of the nodes, its maps from the control plane's route feed; stateless (nothing in the data dir but HAProxy's files). */
async function startEdgeRole(config: DaemonConfig, log: Logger, undo: Undo): Promise<RunningDaemon> {
  const https = parseListen(config.httpsListen);
  const edge = await startEdge(
    {
      dir: join(config.dataDir, "edge"),
      control: config.control!,
      credential: config.nodeToken!,
      https,
      tcpHost: config.tcpListen,
      tcpPorts: parsePortRange(config.tcpPorts),
      maxConnections: config.httpsMaxConnections,
      memoryMiB: config.gatewayMemoryMiB,
      threads: config.gatewayThreads ?? availableParallelism(),
      user: systemUser("haproxy"),
      clientIdleMs: config.clientIdleTimeoutSeconds * 1000,
      tunnelMs: config.tunnelTimeoutSeconds * 1000,
    },
    log,
  );
  undo.push(() => edge.close());
  const summary = `Sail edge is up: HTTPS by SNI on ${config.httpsListen}, raw TCP on ${config.tcpListen}:${config.tcpPorts}, routes from ${config.control}`;
  return { apiUrl: config.control!, token: "", config, summary, close: () => undo.run() };
}

/** The control plane alone: node agents join it over the node wire with the node credential. */
async function startControlRole(config: DaemonConfig, log: Logger, undo: Undo): Promise<RunningDaemon> {
  const credential = config.nodeToken ?? nodeTokenFile(config.dataDir);
  const joins = new SerialQueue();
  let feed: RouteFeed | undefined;
  let prebuilt = false;
  // --prebuild-image runs once, when the first node has joined
  const prebuild = (boxes: Boxes) => {
    if (prebuilt) return;
    prebuilt = true;
    prebuildImages(boxes, config.prebuildImages, log);
  };
  const control = await startControl(
    config,
    log,
    undo,
    () => control.boxes.nodes.all()[0]?.info.caCert,
    (boxes) => {
      const routes = routeFeed(boxes, config, log);
      feed = routes;
      const register = (url: string, info: NodeInfo) =>
        joins.run(async () => {
          // a node joined, moved or came back: its addresses are in the edges' map (a heartbeat changes nothing)
          if (await attachRemote(boxes, url, info, log)) routes.changed();
          prebuild(boxes);
        });
      return new NodeEndpoint(credential, register, boxes.nodes, boxes.nodes.lease.leaseMs, (after, waitMs, signal) => routes.poll(after, waitMs, signal));
    },
    (url) => new RemoteNode(url, credential),
  );
  await control.boxes.nodes.loadKnown();
  control.boxes.nodes.start();
  undo.push(() => control.boxes.nodes.stop());
  // first on the way down (the steps run in reverse): held route polls answer at once, so a
  // stopping control plane does not wait out an edge's 30 s poll while its nodes' leases run
  undo.push(() => feed?.close());
  const summary =
    `Sail is up (control plane): API ${control.apiUrl}, store ${config.store === "sqlite" ? join(config.dataDir, "sail.db") : "PostgreSQL"}, client config ${config.clientConfigPath}\n` +
    `Join a node: sail up --role node --control ${control.apiUrl} --node-token ${credential}`;
  return { apiUrl: control.apiUrl, token: control.token, config, summary, close: () => undo.run() };
}

/**
 * The route feed edges poll: every live box's public hosts and ports on its node. The nodes'
 * addresses come from the store, not from the nodes this process heard: a control plane that
 * just restarted (or another one) serves the edges the whole map before its nodes beat again.
 */
function routeFeed(boxes: Boxes, config: DaemonConfig, log: Logger): RouteFeed {
  const nodes = async () => {
    const all = (await boxes.store.listNodes()).filter((row) => !row.lostAt).map((row) => JSON.parse(row.info) as NodeInfo);
    // a box from before nodes were recorded is on the first node
    return { all, fallback: all[0]?.nodeId };
  };
  return new RouteFeed(boxes.store, nodes, config.domain, boxes.lifecycle, log);
}

/**
 * A node registered or beat: its lease renewed. A node new to this control plane, at a new
 * address, or back after it was declared lost is reconciled before the register is answered
 * (the node stays fenced until then: a lost node's failed boxes are removed before it routes).
 * True when it was.
 */
async function attachRemote(boxes: Boxes, url: string, info: NodeInfo, log: Logger): Promise<boolean> {
  if (!(await boxes.nodes.heartbeat(url, info))) return false;
  log.info({ nodeId: info.nodeId, ...(await boxes.endings.reconcile(boxes.nodes.get(info.nodeId)!)) }, "reconciled the store with the node");
  return true;
}

/** A node agent alone: it serves the node wire and joins the control plane (again every few seconds: a restarted control plane forgets it). */
async function startNodeRole(config: DaemonConfig, log: Logger, undo: Undo, hooks: { onImageProgress?: (p: ImageProgress) => void }): Promise<RunningDaemon> {
  const link = new ControlLink(config.control!, config.nodeToken!);
  undo.push(() => link.close());
  const node = await startNode(config, log, undo, link, hooks);
  const server = createNodeServer(node.agent, config.nodeToken!, log);
  const { host, port } = parseListen(config.nodeListen);
  await listenOn(server, host, port);
  undo.push(() => closeServer(server));
  const url = config.nodeUrl ?? `http://${host.includes(":") ? `[${host}]` : host}:${(server.address() as AddressInfo).port}`;
  const info = { ...(await node.agent.info()), ...(node.tls.caCert ? { caCert: node.tls.caCert } : {}), ...edgeAddresses(config) };
  // a heard registration means the control plane is there: events waiting out a backoff go now
  const lease = new NodeLeaseKeeper(node.agent);
  const register = async () => {
    const sentAt = Date.now();
    try {
      lease.renewed(sentAt, (await link.register(url, info)).leaseMs);
    } catch (err) {
      if (err instanceof SailError && err.code === "SAIL_STORE_UNAVAILABLE") lease.storeAway(sentAt);
      throw err;
    }
    node.agent.controlPlaneReachable();
  };
  await retryUntil(register, log, "could not join the control plane yet; retrying");
  const heartbeat = setInterval(() => void register().catch((err) => log.warn({ err: String(err) }, "the control plane did not hear this node's heartbeat")), NODE_HEARTBEAT_MS);
  const fenceCheck = setInterval(() => lease.check(), NODE_FENCE_CHECK_MS);
  undo.push(() => {
    clearInterval(heartbeat);
    clearInterval(fenceCheck);
  });
  const summary = `Sail node is up: node ${info.nodeId} joined the control plane at ${config.control}; node wire ${url}, HTTPS gateway ${config.httpsListen}, raw TCP on ${config.tcpListen}`;
  return { apiUrl: config.control!, token: "", config, summary, close: () => undo.run() };
}

/**
 * The node agent: the runtime, its own box table (node.db), the firewall and resolver, the
 * HTTPS gateway (HAProxy and the slow path) and the TCP gateway, all following the agent.
 */
async function startNode(config: DaemonConfig, log: Logger, undo: Undo, events: NodeEventSink, hooks: { onImageProgress?: (p: ImageProgress) => void }) {
  const arch = debianArch(process.arch);
  if (!arch) throw new Error(`Sail runs on amd64 and arm64 hosts; this one is ${process.arch}`);
  preflight({ tiniPath: TINI_PATH, outbound: config.outbound });
  // what the operator lets boxes reach at all: the firewall enforces it, the agent checks policies against it
  const outboundBounds = { enabled: config.outbound, privateAllowed: config.outboundPrivate, only: config.outboundOnly ?? null };
  const runtime = new LocalRuntime({
    dataDir: config.dataDir,
    hostArch: arch,
    boxSubnet: config.boxSubnet,
    debianMirror: config.debianMirror,
    tiniPath: TINI_PATH,
    crunRoot: config.crunRoot,
    cgroupParent: config.cgroupParent,
    nofileLimit: 20_000,
    outbound: outboundBounds,
    log,
    disk: { defaultMiB: config.boxDiskMiB, bytesPerInode: config.boxDiskBytesPerInode },
    onBackgroundError: (what, err) => log.error({ err: String(err) }, `runtime: ${what} failed`),
  });
  const store = new NodeStore(join(config.dataDir, "node.db"));
  undo.push(() => store.close());
  const tls = config.tlsCert && config.tlsKey ? loadGivenTls(config.tlsCert, config.tlsKey) : ensureLocalTls(join(config.dataDir, "tls"), config.domain);
  const agent = new NodeAgent(
    store,
    runtime,
    { pidsLimit: config.boxPidsLimit, diskMiB: config.boxDiskMiB, hostCpus: availableParallelism(), domain: config.domain, outbound: { ...outboundBounds, boxSubnet: config.boxSubnet } },
    events,
    log,
  );
  undo.push(() => agent.close());

  await runtime.start();
  undo.push(() => runtime.shutdown());
  await runtime.prepareImage(arch, hooks.onImageProgress ?? ((p) => log.info(p, "base image")));
  // outbound: the resolver follows the agent's boxes; start() restores each live box's rules (the firewall table is new)
  const upstreams = dnsUpstreams(config);
  const resolver = new ResolverThread(agent.outbound, { upstreams }, log, agent.dnsQueries);
  await resolver.start();
  undo.push(() => resolver.stop());
  log.info({ ...(await agent.start()), outbound: config.outbound, dnsUpstreams: upstreams.map((u) => `${u.host}:${u.port}`) }, "reconciled the node's boxes with the runtime");

  // HTTPS: HAProxy forwards to running boxes; the slow path (here, in TypeScript) decides the rest
  const gatewayDir = join(config.dataDir, "gateway");
  const paths = gatewayPaths(gatewayDir);
  const slowPath = new SlowPath(
    { socketPath: paths.slowPath, domain: config.domain, wakeOnIngress: agent.ingress.wakeOnIngress, wakeBudgetMs: config.wakeTimeoutSeconds * 1000, responseMs: config.responseTimeoutSeconds * 1000 },
    log,
  );
  mkdirSync(gatewayDir, { recursive: true, mode: 0o711 });
  await slowPath.listen();
  undo.push(() => slowPath.close());
  agent.ingress.subscribe(slowPath);
  const httpsListen = parseListen(config.httpsListen);
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
      edgeFrom: config.edgeFrom,
      timeouts: {
        ...DEFAULT_TIMEOUTS,
        headMs: config.headTimeoutSeconds * 1000,
        clientIdleMs: config.clientIdleTimeoutSeconds * 1000,
        responseMs: config.responseTimeoutSeconds * 1000,
        tunnelMs: config.tunnelTimeoutSeconds * 1000,
      },
    },
    log,
    (report) => agent.ingress.noteActivity("haproxy", report),
  );
  await waitForFreePort(httpsListen.host, httpsListen.port);
  agent.ingress.subscribe(haproxy);
  undo.push(() => haproxy.close());
  await haproxy.start();
  agent.attachHttps({ haproxy, slowPath });

  // raw TCP: worker processes with the native splice pump
  const tcp = new TcpCluster(
    agent.ingress,
    { host: config.tcpListen, workers: config.tcpWorkers ?? availableParallelism(), wakeBudgetMs: config.wakeTimeoutSeconds * 1000, logLevel: config.logLevel, edgeFrom: config.edgeFrom },
    log,
    agent.tcpWorkerReport,
  );
  undo.push(() => tcp.close());
  await tcp.start();
  log.info({ httpsListen: config.httpsListen, domain: config.domain, haproxyPid: haproxy.pid, tcpWorkers: tcp.pids }, "gateway listening");
  return { agent, tls };
}

/** The control plane: its store, the boxes room, the API and the metrics. `nodeEndpoint`: node agents join here (role control). */
async function startControl(
  config: DaemonConfig,
  log: Logger,
  undo: Undo,
  caCert: () => string | undefined,
  nodeEndpoint?: (boxes: Boxes) => NodeEndpoint,
  dialNode: (url: string) => RemoteNode = () => {
    throw new Error("this control plane drives only the node in its own process");
  },
) {
  const store: Store = config.store === "sqlite" ? new SqliteStore(join(config.dataDir, "sail.db")) : await PostgresStore.connect(config.store);
  undo.push(() => store.close());
  const httpsListen = parseListen(config.httpsListen);
  const boxes = createBoxes(
    store,
    {
      defaults: { cpu: config.boxCpu, memoryMiB: config.boxMemoryMiB, diskMiB: config.boxDiskMiB, hostCpus: availableParallelism() },
      tcp: { ...parsePortRange(config.tcpPorts), defaultLimitPerOrg: config.tcpLimitPerOrg },
      addresses: { domain: config.domain, publicHttpsPort: config.publicHttpsPort ?? httpsListen.port, publicHost: config.publicHost },
      dialNode,
      nodeLease: { leaseMs: config.nodeLeaseSeconds * 1000, graceMs: config.nodeGraceSeconds * 1000, sweepMs: Math.min(2000, config.nodeLeaseSeconds * 250) },
    },
    log,
  );
  const server = createApiServer(
    boxes,
    (token) => store.orgForToken(token),
    {
      get caCert() {
        return caCert();
      },
    },
    log,
    {
      console: config.console ? { sessions: new ConsoleSessions((sha256) => store.orgForTokenHash(sha256), config.domain), assetsDir: CONSOLE_DIR } : undefined,
      nodes: nodeEndpoint?.(boxes),
    },
  );
  const { host, port } = parseListen(config.apiListen);
  await listenOn(server, host, port);
  undo.push(() => closeServer(server));
  const bound = server.address() as AddressInfo;
  const apiUrl = `http://${bound.family === "IPv6" ? `[${bound.address}]` : bound.address}:${bound.port}`;
  const token = await ensureClientConfig(store, config.clientConfigPath, apiUrl);
  log.info({ apiUrl, clientConfig: config.clientConfigPath }, "sail API listening");

  if (config.metricsListen !== "off") {
    // the node's series (its data paths, outbound, resolver, wakes, boxes by status), HAProxy's (haproxy_*) after them
    const metricsServer = createMetricsServer(async () => ({ contentType: "text/plain; version=0.0.4; charset=utf-8", body: (await boxes.nodes.all()[0]?.api.metricsText()) ?? "" }));
    const listen = parseListen(config.metricsListen);
    await listenOn(metricsServer, listen.host, listen.port);
    undo.push(() => void metricsServer.close());
    log.info({ metricsListen: config.metricsListen }, "metrics at GET /metrics");
  }
  return { boxes, apiUrl, token };
}

/**
 * The node's side of its lease: renewed by each heartbeat the control plane answered (counted
 * from when the heartbeat was sent, so the node's view never outlives the control plane's);
 * past it the node fences itself, and the next answered heartbeat (the control plane reconciled
 * the node first if it had declared it lost) lifts the fence.
 */
class NodeLeaseKeeper {
  private until = Number.POSITIVE_INFINITY;
  private last: { at: number; leaseMs: number } | undefined;
  constructor(private readonly agent: Pick<NodeAgent, "fence">) {}

  renewed(sentAt: number, leaseMs: number): void {
    this.until = sentAt + leaseMs;
    this.last = { at: sentAt, leaseMs };
    this.agent.fence(false);
  }

  /**
   * The control plane answered, but its store did not (a database failover): no control plane
   * can declare this node lost meanwhile (that takes the store, and a sweep after the store's
   * return first extends every lease), so the lease holds — for at most NODE_STORE_OUTAGE_MS past
   * the last real renewal, which bounds what a control plane cut off from a store that another
   * still reaches could cost.
   */
  storeAway(sentAt: number): void {
    if (!this.last) return;
    this.until = Math.max(this.until, Math.min(sentAt + this.last.leaseMs, this.last.at + NODE_STORE_OUTAGE_MS));
  }

  check(): void {
    if (Date.now() > this.until) this.agent.fence(true);
  }
}

/** Events of an in-process node before its control plane is up: refused, so the node keeps them and tries again. */
class LateSink implements NodeEventSink {
  target: NodeEventSink | undefined;
  deliver(events: NodeEvent[]): Promise<void> {
    return this.target ? this.target.deliver(events) : Promise.reject(new Error("the control plane is not up yet"));
  }
}

/** One registration at a time: two heartbeats of a node that just joined reconcile once. */
class SerialQueue {
  private tail: Promise<unknown> = Promise.resolve();
  run<T>(work: () => Promise<T>): Promise<T> {
    const next = this.tail.catch(() => {}).then(work);
    this.tail = next;
    return next;
  }
}

async function retryUntil(work: () => Promise<void>, log: Logger, message: string): Promise<void> {
  for (let delayMs = 250; ; delayMs = Math.min(delayMs * 2, 5_000)) {
    try {
      return await work();
    } catch (err) {
      log.warn({ err: String((err as Error).message ?? err) }, message);
      await new Promise((resolve) => setTimeout(resolve, delayMs));
    }
  }
}

/** The node credential of a control plane started without --node-token: made once, kept in the data dir (0600). */
function nodeTokenFile(dataDir: string): string {
  const path = join(dataDir, "node-token");
  try {
    const kept = readFileSync(path, "utf8").trim();
    if (kept) return kept;
  } catch {
    // first start
  }
  const token = randomBytes(24).toString("base64url");
  writeFileSync(path, token + "\n", { mode: 0o600 });
  return token;
}

/**
 * `--prebuild-image`: build these one after the other (two builds at once only slow each other
 * on a small host), after start, with progress in the log. A create that needs one meanwhile
 * joins its build. A failure is logged; the daemon runs on.
 */
function prebuildImages(boxes: Boxes, specs: readonly string[], log: Logger): void {
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

/** Where an edge reaches this node's gateways: --edge-address, else the listen addresses unless they are wildcards (the edge could not dial those). */
function edgeAddresses(config: DaemonConfig): { httpsAddress?: string; tcpAddress?: string } {
  const wildcard = (host: string) => host === "0.0.0.0" || host === "::";
  const https = parseListen(config.httpsListen);
  const httpsHost = config.edgeAddress ?? (wildcard(https.host) ? undefined : https.host);
  const tcpHost = config.edgeAddress ?? (wildcard(config.tcpListen) ? undefined : config.tcpListen);
  return { ...(httpsHost ? { httpsAddress: `${httpsHost}:${https.port}` } : {}), ...(tcpHost ? { tcpAddress: tcpHost } : {}) };
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

/** Requests in flight finish; a connection whose answer is out closes then, not after its keep-alive. */
function closeServer(server: Server & { closeIdleConnections?: () => void }): Promise<void> {
  return new Promise<void>((resolve) => {
    const sweep = setInterval(() => server.closeIdleConnections?.(), 50);
    server.close(() => {
      clearInterval(sweep);
      resolve();
    });
    server.closeIdleConnections?.();
  });
}

/**
 * The org `default` and a token for it. Only the token's hash is stored, so the
 * plain token lives in the client config: reuse it while it is valid, else mint one.
 */
async function ensureClientConfig(store: Store, path: string, apiUrl: string): Promise<string> {
  const org = await store.ensureOrg("default", { operator: true });
  let existing: Partial<ClientConfig> = {};
  try {
    existing = JSON.parse(readFileSync(path, "utf8")) as Partial<ClientConfig>;
  } catch {
    existing = {};
  }
  const valid = existing.token && (await store.orgForToken(existing.token))?.id === org.id;
  const token = valid ? existing.token! : (await store.createToken(org.id, "sail up")).token;
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

export type { Logger, NodeApi };
