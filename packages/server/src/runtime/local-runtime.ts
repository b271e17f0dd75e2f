import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmdirSync, writeFileSync } from "node:fs";
import { readFile, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import type { Architecture, Ipv4Range } from "@sail/protocol";
import { mustRun, runCommand, signalNumber } from "./commands.js";
import { Crun } from "./crun.js";
import { BoxDisks, DISK_DIR, type DiskSettings } from "./disks.js";
import { FreezeError, freezeCgroupV1 } from "./freezer.js";
import { ensureEmulation } from "./emulation.js";
import { ensureBaseImage, ensurePackageImage, removePartialBuilds } from "./image.js";
import { EgressFirewall, type OutboundBounds } from "./egress.js";
import { BoxNetworks } from "./network.js";
import { ociConfig } from "./oci.js";
import { listeningAddresses, probeTcp } from "./ports.js";
import { startPty, type RunningPty } from "./pty.js";
import { settleStrays } from "./strays.js";
import { Trash } from "./trash.js";
import { checkIdmappedMounts, giveToBox, hostIdsInBoxRanges, idRange, MAX_ID_RANGES, mountIdmappedLower, prepareUpper } from "./userns.js";
import {
  DiskFullError,
  type BoxNetwork,
  type BoxSpec,
  type CreatedBox,
  type ExecSpec,
  type ImageProgress,
  type OutboundCounters,
  type OutboundRefusal,
  type OutboundRules,
  type PtySpec,
  type NodeRuntime,
  type RuntimeLogger,
  type RuntimeState,
  type RunningExec,
} from "./runtime.js";

export interface LocalRuntimeOptions {
  dataDir: string;
  hostArch: Architecture;
  boxSubnet: string;
  debianMirror: string;
  tiniPath: string;
  /** Where crun keeps container state (tmpfs: it must not outlive a reboot). */
  crunRoot: string;
  /** The cgroup boxes' cgroups are made under (default "sail"): node agents sharing a kernel each need their own. */
  cgroupParent?: string;
  nofileLimit: number;
  /** What boxes may reach beyond the host at all; off when omitted. */
  outbound?: OutboundBounds;
  /** Where the runtime reports what happens on its own (the host's networks changing, a helper process dying). */
  log?: RuntimeLogger;
  /** How boxes' disks are made. */
  disk: DiskSettings;
  /** Work done in the background (spare disks, removing what ended) that failed: nobody awaits it. */
  onBackgroundError?: (what: string, err: unknown) => void;
}

/** Cgroup v1 hierarchies crun creates `/<parent>/<id>` in; removed on destroy if crun left any. */
const CGROUP_V1_CONTROLLERS = ["memory", "pids", "cpu", "cpuacct", "cpuset", "devices", "freezer", "blkio", "systemd", "unified"];

/** The default exec directory, matching HOME. */
const DEFAULT_CWD = "/root";

/** An interactive exec without a command: root's login shell from the box's own /etc/passwd. */
const LOGIN_SHELL = 'shell=$(getent passwd "$(id -u)" | cut -d: -f7); exec "${shell:-/bin/sh}" -l';

/** A build in progress or done, and who listens to its progress. */
interface SharedBuild {
  done: Promise<string>;
  listeners: Set<(progress: ImageProgress) => void>;
  /** The step it is at (none once done): a caller that joins hears it at once. */
  latest: ImageProgress | undefined;
}

/** Boxes as crun containers on an overlay rootfs, each in its own network namespace. */
export class LocalRuntime implements NodeRuntime {
  readonly hostArch: Architecture;
  private readonly crun: Crun;
  private readonly networks: BoxNetworks;
  private readonly addresses = new Map<string, BoxNetwork>();
  /** Base images by architecture: built or building. */
  private readonly baseImages = new Map<Architecture, SharedBuild>();
  /** Package images by architecture and sorted package list: built or building. */
  private readonly packageImages = new Map<string, SharedBuild>();
  /** What ended (boxes, spare disks), unmounted and removed in the background. */
  private readonly trash: Trash;
  private readonly disks: BoxDisks;

  private readonly boxNofile: number;
  /** The cgroup boxes are made under: `/<parent>/<id>` in each hierarchy. */
  private readonly cgroupParent: string;

  constructor(private readonly options: LocalRuntimeOptions) {
    this.hostArch = options.hostArch;
    this.boxNofile = nofileWithinOurs(options.nofileLimit);
    this.cgroupParent = options.cgroupParent ?? "sail";
    this.crun = new Crun(options.crunRoot);
    this.networks = new BoxNetworks(options.boxSubnet, options.outbound, forwardingMark(options.crunRoot, options.dataDir), options.log);
    const onError = options.onBackgroundError ?? (() => {});
    this.trash = new Trash(join(options.dataDir, "trash"), (path, err) => onError(`removing ${path}`, err));
    this.disks = new BoxDisks(join(options.dataDir, "disks"), options.disk, this.trash, (err) => onError("making a spare box disk", err));
  }

  /** One /30 and one id range per box. */
  get maxBoxes(): number {
    return Math.min(this.networks.slots, MAX_ID_RANGES);
  }

  async prepareImage(arch: Architecture, onProgress?: (progress: ImageProgress) => void): Promise<void> {
    await this.baseImage(arch, onProgress);
  }

  preparePackageImage(arch: Architecture, aptPackages: readonly string[], onProgress?: (progress: ImageProgress) => void): Promise<void> {
    return this.packageImage(arch, aptPackages, onProgress).then(() => {});
  }

  /** A foreign architecture's image is built, and its boxes run, under emulation: checked every time (a reboot unregisters it). */
  private async baseImage(arch: Architecture, onProgress?: (progress: ImageProgress) => void): Promise<string> {
    const foreign = arch !== this.hostArch;
    if (foreign) await ensureEmulation(arch);
    return this.shareBuild(
      this.baseImages,
      arch,
      (report) => ensureBaseImage({ imagesDir: join(this.options.dataDir, "images"), arch, foreign, mirror: this.options.debianMirror, tiniPath: this.options.tiniPath, onProgress: report }),
      onProgress,
    );
  }

  private async packageImage(arch: Architecture, aptPackages: readonly string[], onProgress?: (progress: ImageProgress) => void): Promise<string> {
    const base = await this.baseImage(arch, onProgress);
    return this.shareBuild(
      this.packageImages,
      `${arch} ${aptPackages.join(" ")}`,
      (report) => ensurePackageImage(base, aptPackages, { imagesDir: join(this.options.dataDir, "images"), onProgress: report }),
      onProgress,
    );
  }

  /**
   * Concurrent callers share one build, and each hears its progress from when it joined (the
   * latest step at once); a failed build is forgotten, so the next call tries again (the mirror
   * may be back).
   */
  private shareBuild<K>(builds: Map<K, SharedBuild>, key: K, build: (report: (progress: ImageProgress) => void) => Promise<string>, onProgress?: (progress: ImageProgress) => void): Promise<string> {
    let shared = builds.get(key);
    if (!shared) {
      const listeners = new Set<(progress: ImageProgress) => void>();
      const entry: SharedBuild = { listeners, done: Promise.resolve(""), latest: undefined };
      entry.done = build((progress) => {
        entry.latest = progress.done ? undefined : progress;
        for (const listener of listeners) listener(progress);
      });
      entry.done.then(
        () => listeners.clear(),
        () => builds.delete(key),
      );
      builds.set(key, entry);
      shared = entry;
    }
    if (onProgress && shared.latest) onProgress(shared.latest);
    if (onProgress) {
      shared.listeners.add(onProgress);
      const listeners = shared.listeners;
      shared.done.then(
        () => listeners.delete(onProgress),
        () => listeners.delete(onProgress),
      );
    }
    return shared.done;
  }

  /** Refuses to start when boxes could not get ids of their own (see userns.ts), before anything on the host changes. */
  async start(): Promise<void> {
    const taken = hostIdsInBoxRanges(this.maxBoxes);
    if (taken.length) throw new Error(`host ids fall in the range Sail maps boxes' users to, so a box's root could be one of them: ${taken.join("; ")}`);
    const images = join(this.options.dataDir, "images");
    await checkIdmappedMounts(images);
    removePartialBuilds(images);
    this.trash.resume();
    this.disks.start();
    await this.networks.fenceSubnet();
  }

  /**
   * Boxes keep running; spare disks and what is in the trash, the fence, the firewall and empty
   * cgroup parents go, so the host is as before the daemon (no mount or loop device but live boxes').
   */
  async shutdown(): Promise<void> {
    await this.disks.stop();
    await this.trash.drained();
    await this.networks.unfenceSubnet(this.boxesRemain());
    // crun creates the parents; remove them when no box is left in them
    for (const controller of CGROUP_V1_CONTROLLERS) {
      try {
        rmdirSync(`/sys/fs/cgroup/${controller}/${this.cgroupParent}`);
      } catch {
        // missing, or boxes still run in it (they outlive the daemon)
      }
    }
  }

  /** Whether any box of this data dir still has its directory (boxes outlive the daemon). */
  private boxesRemain(): boolean {
    try {
      return readdirSync(join(this.options.dataDir, "boxes")).length > 0;
    } catch {
      return false;
    }
  }

  /** Box directories of this data dir (a box's container, network and disk all hang off its directory, made first and removed last). */
  async listBoxes(): Promise<string[]> {
    try {
      return readdirSync(join(this.options.dataDir, "boxes")).filter((name) => /^sb-[a-z0-9]+$/.test(name));
    } catch {
      return [];
    }
  }

  /** A box's cgroup path (the same in every hierarchy). */
  private cgroupOf(id: string): string {
    return `/${this.cgroupParent}/${id}`;
  }

  netSlotOf(id: string): number | undefined {
    const network = this.addresses.get(id) ?? this.readNetwork(id);
    return network && this.networks.slotOf(network.guestAddress);
  }

  private boxDir(id: string): string {
    return join(this.options.dataDir, "boxes", id);
  }

  /** Where a box's growing files are: on its disk, or in its directory for a box made before boxes had disks. */
  private growingDir(id: string): string {
    const disk = join(this.boxDir(id), DISK_DIR);
    return existsSync(disk) ? disk : this.boxDir(id);
  }

  /** Each box's addresses, kept in its directory (network.json) so they outlive the daemon. */
  private readNetwork(id: string): BoxNetwork | undefined {
    try {
      return JSON.parse(readFileSync(join(this.boxDir(id), "network.json"), "utf8")) as BoxNetwork;
    } catch {
      return undefined;
    }
  }

  network(id: string): BoxNetwork {
    const network = this.addresses.get(id) ?? this.readNetwork(id);
    if (!network) throw new Error(`sailbox ${id} has no network.json: it was never created here, or it is gone`);
    this.addresses.set(id, network);
    return network;
  }

  async create(spec: BoxSpec, signal?: AbortSignal): Promise<CreatedBox> {
    const image = spec.aptPackages.length ? await this.packageImage(spec.arch, spec.aptPackages) : await this.baseImage(spec.arch);
    const dir = this.boxDir(spec.id);
    const rootfs = join(dir, "rootfs");
    const disk = join(dir, DISK_DIR);
    const ids = idRange(spec.netSlot);
    try {
      // the disk, and the overlay on it over the shared image as the box's ids own it (userns.ts), while the network is made
      const [network, diskInodes] = await Promise.all([
        this.networks.create(spec.id, spec.netSlot, signal),
        this.disks.provide(dir, spec.diskMiB).then(async (inodes) => {
          mkdirSync(rootfs);
          prepareUpper(join(disk, "upper"), image, ids);
          mountIdmappedLower(image, join(dir, "lower"), ids);
          await mustRun("mount", ["-t", "overlay", "overlay", "-o", `lowerdir=${dir}/lower,upperdir=${disk}/upper,workdir=${disk}/work`, rootfs], { signal });
          return inodes;
        }),
      ]);
      this.networks.mountSysfs(spec.id, join(dir, "sys"));
      writeFileSync(join(dir, "network.json"), JSON.stringify(network));
      this.addresses.set(spec.id, network);
      giveToBox(writeIdentity(rootfs, spec.hostname, network), ids);
      const netnsPath = `/run/netns/${BoxNetworks.namespace(spec.id)}`;
      const config = ociConfig(spec, { rootfs, netnsPath, sysfs: join(dir, "sys"), nofile: this.boxNofile, hostArch: this.hostArch, ids, cgroupsPath: this.cgroupOf(spec.id) });
      writeFileSync(join(dir, "config.json"), JSON.stringify(config));
      const consoleLog = openSync(join(disk, "console.log"), "a");
      try {
        // all run to their end before a failure is handled: cleaning up while `crun run` still works would leave its container behind
        const [run, ...rules] = await Promise.allSettled([
          this.crun.run(spec.id, dir, consoleLog, signal),
          this.networks.configureInside(spec.id, network, signal),
          this.networks.egress.apply(spec.id, network.guestAddress, network.hostAddress, spec.outbound, [], signal),
        ]);
        if (run.status === "rejected") throw run.reason;
        for (const r of rules) if (r.status === "rejected") throw r.reason;
      } finally {
        closeSync(consoleLog);
      }
      return { network, diskInodes };
    } catch (err) {
      await this.destroy(spec.id).catch(() => {});
      throw err;
    } finally {
      this.disks.refillSoon();
    }
  }

  probePort(id: string, port: number, greeting?: Buffer): Promise<boolean> {
    return probeTcp(this.network(id).guestAddress, port, greeting);
  }

  listeningAddresses(id: string, port: number): Promise<string[]> {
    return listeningAddresses(id, port);
  }

  /**
   * The freezer state file when there is a v1 freezer: writing it is what `crun pause` and
   * `crun resume` do, without spawning a process (≈ 5-10 ms here), and `crun state` still
   * reports it; retried a bounded number of times and thawed on failure (`freezeCgroupV1`).
   * Elsewhere (cgroup v2) crun does it, within its deadline, and a failed pause is resumed.
   */
  async freeze(id: string, signal?: AbortSignal): Promise<void> {
    const dir = `/sys/fs/cgroup/freezer${this.cgroupOf(id)}`;
    if (existsSync(join(dir, "freezer.state"))) {
      await freezeCgroupV1(dir, { signal }).catch((err: Error) => {
        throw new FreezeError(`sailbox ${id} could not be frozen: ${err.message}`, { cause: err });
      });
      return;
    }
    try {
      await this.crun.pause(id, signal);
    } catch (err) {
      await this.crun.resume(id).catch(() => {});
      throw new FreezeError(`sailbox ${id} could not be frozen: ${(err as Error).message}; resumed it again`, { cause: err });
    }
  }

  async thaw(id: string, signal?: AbortSignal): Promise<void> {
    const state = `/sys/fs/cgroup/freezer${this.cgroupOf(id)}/freezer.state`;
    if (!existsSync(state)) return this.crun.resume(id, signal);
    await writeFile(state, "THAWED");
  }

  async state(id: string): Promise<RuntimeState> {
    const state = await this.crun.state(id);
    if (state !== "missing" && !existsSync(join(this.boxDir(id), "network.json"))) await this.recoverNetwork(id);
    return state;
  }

  /** A box started before addresses were kept in network.json: read them from its namespace. */
  private async recoverNetwork(id: string): Promise<void> {
    const shown = await runCommand("ip", ["-n", BoxNetworks.namespace(id), "-j", "-4", "addr", "show", "dev", "eth0"]);
    const local = (JSON.parse(shown.stdout || "[]") as Array<{ addr_info?: Array<{ local?: string }> }>)[0]?.addr_info?.[0]?.local;
    if (shown.code !== 0 || !local) return;
    const network = { guestAddress: local, hostAddress: local.replace(/\d+$/, (last) => String(Number(last) - 1)) };
    writeFileSync(join(this.boxDir(id), "network.json"), JSON.stringify(network));
    this.addresses.set(id, network);
  }

  exec(id: string, spec: ExecSpec): RunningExec {
    const child = this.crun.exec(id, ["/bin/sh", "-c", spec.cmd], { cwd: spec.cwd ?? DEFAULT_CWD, env: spec.env, stdio: ["ignore", "pipe", "pipe"] });
    const exit = new Promise<number>((resolve, reject) => {
      child.on("error", reject);
      child.on("close", (code, signal) => resolve(code ?? 128 + signalNumber(signal)));
    });
    return { stdout: child.stdout!, stderr: child.stderr!, exit, kill: () => child.kill("SIGKILL") };
  }

  execPty(id: string, spec: PtySpec): Promise<RunningPty> {
    // TERM names what the clients emulate: xterm.js and the terminals `sail box exec -it` runs in
    const env = { TERM: "xterm-256color", ...spec.env };
    const argv = ["/bin/sh", "-c", spec.cmd ?? LOGIN_SHELL];
    return startPty((consoleSocket) => this.crun.exec(id, argv, { cwd: spec.cwd ?? DEFAULT_CWD, env, consoleSocket, stdio: ["pipe", "ignore", "pipe"] }), spec);
  }

  execLogPath(id: string, execId: string): string {
    return join(this.growingDir(id), "execs", `${execId}.log`);
  }

  private execPidPath(id: string, execId: string): string {
    return join(this.growingDir(id), "execs", `${execId}.pid`);
  }

  /**
   * The pid crun wrote when it started the exec, if that process is alive and still in the
   * box's cgroup (a pid the kernel gave to another process since is not it). An exec started
   * before pids were kept has none: it counts as ended.
   */
  async execRunning(id: string, execId: string): Promise<boolean> {
    try {
      const pid = Number((await readFile(this.execPidPath(id, execId), "utf8")).trim());
      if (!Number.isInteger(pid) || pid <= 0) return false;
      const [stat, cgroup] = await Promise.all([readFile(`/proc/${pid}/stat`, "utf8"), readFile(`/proc/${pid}/cgroup`, "utf8")]);
      // the state follows the command name, which is in parentheses and may hold any byte (proc(5))
      const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
      return state !== "Z" && state !== "X" && cgroup.includes(`${this.cgroupOf(id)}\n`);
    } catch {
      return false;
    }
  }

  /**
   * `crun exec --detach` returns once the process has started. The process inherits
   * the log fd for stdout and stderr (a pipe would tie its lifetime to ours), so a
   * failure to start is read back from the log's tail.
   */
  async execDetached(id: string, execId: string, spec: ExecSpec): Promise<void> {
    const logPath = this.execLogPath(id, execId);
    const log = openLog(id, logPath);
    try {
      const code = await this.crun.execDetached(id, ["/bin/sh", "-c", spec.cmd], {
        cwd: spec.cwd ?? DEFAULT_CWD,
        env: spec.env,
        stdio: ["ignore", log, log],
        pidFile: this.execPidPath(id, execId),
      });
      if (code !== 0) throw new Error(`could not start the command: ${readFileSync(logPath, "utf8").trim().slice(-500) || `crun exec exited ${code}`}`);
    } finally {
      closeSync(log);
    }
  }

  async setOutbound(id: string, rules: OutboundRules, resolved?: ReadonlyArray<{ address: string; seconds: number }>): Promise<void> {
    const { guestAddress, hostAddress } = this.network(id);
    await this.networks.egress.apply(id, guestAddress, hostAddress, rules, resolved);
  }

  allowResolved(id: string, addresses: { add: readonly string[]; renew: readonly string[] }, seconds: number): Promise<void> {
    return this.networks.egress.allowResolved(id, addresses, seconds);
  }

  cutOutbound(id: string, keep: (address: string) => boolean): Promise<string[]> {
    const { guestAddress, hostAddress } = this.network(id);
    return this.networks.egress.cut(guestAddress, (address) => address === hostAddress || keep(address));
  }

  outboundCounters(): Promise<Map<string, OutboundCounters>> {
    const byIdent = new Map([...this.addresses.keys()].map((id) => [EgressFirewall.ident(id), id]));
    return this.networks.egress.counters((ident) => byIdent.get(ident));
  }

  async outboundRefusals(): Promise<OutboundRefusal[]> {
    const byGuest = new Map([...this.addresses].map(([id, network]) => [network.guestAddress, id]));
    return (await this.networks.egress.refusals()).flatMap(({ guest, ...refusal }) => {
      const id = byGuest.get(guest);
      return id ? [{ id, ...refusal }] : [];
    });
  }

  connectedNetworks(): readonly Ipv4Range[] {
    return this.networks.egress.connectedRanges;
  }

  async destroy(id: string, options: { afterCrash?: boolean; signal?: AbortSignal } = {}): Promise<void> {
    const { signal } = options;
    if (options.afterCrash) await settleStrays(id, this.cgroupParent);
    const dir = this.boxDir(id);
    const network = this.addresses.get(id) ?? this.readNetwork(id);
    if (network) await this.networks.egress.remove(id, network.guestAddress, network.hostAddress, signal);
    this.addresses.delete(id);
    await this.crun.delete(id, signal);
    await this.networks.destroy(id, signal);
    for (const controller of CGROUP_V1_CONTROLLERS) {
      const path = `/sys/fs/cgroup/${controller}${this.cgroupOf(id)}`;
      if (existsSync(path)) rmdirSync(path);
    }
    // its rootfs, disk and directory: unmounted and removed in the background
    this.trash.discard(dir);
  }
}

/** A background exec's log, on the box's disk: a full disk (no inode for it) is the box's own limit, said so. */
function openLog(id: string, path: string): number {
  try {
    return openSync(path, "a");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOSPC" || code === "EDQUOT")
      throw new DiskFullError(`sailbox ${id}'s disk is full (${code}): no room for the command's log; delete files in the box, or create it with a larger disk`);
    throw err;
  }
}

/** /etc/hostname, /etc/hosts and resolv.conf: names resolve through Sail's resolver on the box's host-side address. Returns the files. */
function writeIdentity(rootfs: string, hostname: string, network: BoxNetwork): string[] {
  const files: Array<[string, string]> = [
    ["etc/hostname", `${hostname}\n`],
    ["etc/hosts", `127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n${network.guestAddress}\t${hostname}\n`],
    ["etc/resolv.conf", `nameserver ${network.hostAddress}\noptions timeout:2 attempts:2\n`],
  ];
  for (const [path, text] of files) writeFileSync(join(rootfs, path), text);
  return files.map(([path]) => join(rootfs, path));
}

/**
 * RLIMIT_NOFILE of a box: at most the daemon's own hard limit. crun sets it inside the box's
 * user namespace, where raising a hard limit needs CAP_SYS_RESOURCE over the host.
 */
function nofileWithinOurs(wanted: number, limits = readFileSync("/proc/self/limits", "utf8")): number {
  const hard = /^Max open files\s+\S+\s+(\S+)/m.exec(limits)?.[1];
  return hard && hard !== "unlimited" ? Math.min(wanted, Number(hard)) : wanted;
}

/**
 * The host-wide "Sail turned ip_forward on" file, beside crun's state under /run (a reboot
 * clears both, and the setting). Earlier versions kept it in the data dir: taken over.
 */
function forwardingMark(crunRoot: string, dataDir: string): string {
  const mark = join(dirname(crunRoot), "ip-forward-by-sail");
  const legacy = join(dataDir, "ip-forward-by-sail");
  if (existsSync(legacy)) {
    mkdirSync(dirname(mark), { recursive: true });
    renameSync(legacy, mark);
  }
  return mark;
}
