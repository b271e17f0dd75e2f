/**
 * The edge router (`sail up --role edge`): HAProxy in layer-4 mode in front of the nodes, its
 * maps following the control plane's route feed. It keeps nothing of its own: it starts
 * empty, takes the whole map from the feed, and serves the last map it has while the control
 * plane is away (docs/architecture.md, "The edge").
 */
import { chmodSync, chownSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { HaproxyProcess } from "../gateway/haproxy-process.js";
import { RuntimeApi } from "../gateway/runtime-api.js";
import type { Logger } from "../logger.js";
import type { EdgeRoutes } from "../node-wire/node-api.js";
import { edgeConfig, edgeMaps, edgePaths, type EdgeMapName, type EdgeMaps, type EdgeSettings } from "./edge-config.js";
import { RoutePoller } from "./route-poller.js";

/** Allowlists and port map before the host map: a port's allowlist is in place before the port routes. */
const MAP_ORDER: EdgeMapName[] = ["tcpAllow", "tcpRestricted", "tcp", "sni"];

export interface RunningEdge {
  /** The version of the route map HAProxy serves now (undefined: none yet). */
  readonly version: string | undefined;
  close(): Promise<void>;
}

export async function startEdge(settings: EdgeSettings & { control: string; credential: string }, log: Logger): Promise<RunningEdge> {
  const paths = edgePaths(settings.dir);
  writeEdgeFiles(settings);
  const api = new RuntimeApi(paths.admin);
  let latest: EdgeMaps = { sni: [], tcp: [], tcpRestricted: [], tcpAllow: [] };
  let served: string | undefined;
  // a (re)started HAProxy reads the maps from files: the latest snapshot, so a restart loses no route
  const haproxy = new HaproxyProcess(settings, paths, api, log, () => writeMapFiles(settings, latest));
  await haproxy.start();

  const apply = async (routes: EdgeRoutes) => {
    const maps = edgeMaps(routes);
    if (maps.unroutable) log.warn({ version: routes.version, unroutable: maps.unroutable }, "routes to nodes that gave the edge no address are left out");
    latest = maps;
    await haproxy.ready();
    for (const name of MAP_ORDER) await api.replaceMap(edgePaths(settings.dir)[name], maps[name]);
    served = routes.version;
    log.info({ version: routes.version, hosts: maps.sni.length, tcpPorts: maps.tcp.length }, "edge routes applied");
  };
  const poller = new RoutePoller(settings.control, settings.credential, apply, log);
  poller.start();
  return {
    get version() {
      return served;
    },
    async close() {
      await poller.close();
      await haproxy.close();
    },
  };
}

/** The config and empty maps; HAProxy's user reads them and makes its sockets in the directory (nobody else may look). */
function writeEdgeFiles(settings: EdgeSettings): void {
  mkdirSync(settings.dir, { recursive: true });
  chmodSync(settings.dir, 0o770);
  const group = settings.user ? groupOf(settings.user) : undefined;
  if (group !== undefined) chownSync(settings.dir, 0, group);
  writeFileSync(edgePaths(settings.dir).config, edgeConfig(settings), { mode: 0o640 });
  if (group !== undefined) chownSync(edgePaths(settings.dir).config, 0, group);
  writeMapFiles(settings, { sni: [], tcp: [], tcpRestricted: [], tcpAllow: [] });
}

function writeMapFiles(settings: EdgeSettings, maps: EdgeMaps): void {
  const paths = edgePaths(settings.dir);
  for (const name of MAP_ORDER) writeFileSync(paths[name], maps[name].map(([key, value]) => `${key} ${value}\n`).join(""), { mode: 0o644 });
}

function groupOf(user: string): number | undefined {
  const line = readFileSync("/etc/passwd", "utf8")
    .split("\n")
    .find((l) => l.startsWith(`${user}:`));
  const gid = line?.split(":")[3];
  return gid ? Number(gid) : undefined;
}
