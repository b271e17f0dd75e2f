/**
 * A runtime that runs nothing and records what it was asked, for the node agent's tests
 * (node-agent.test.ts) and the control plane's over a real node agent (boxes.test.ts). Its
 * knobs make it fail as a broken host would: a create that fails, a freeze that is stuck or
 * refused, a thaw that is slow, a full disk, builds and starts that wait for a gate.
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { finished } from "node:stream/promises";
import type { Ipv4Range } from "@sail/protocol";
import {
  DiskFullError,
  FreezeError,
  type BoxNetwork,
  type BoxSpec,
  type CreatedBox,
  type ExecSpec,
  type ImageProgress,
  type NodeRuntime,
  type OutboundRules,
  type RuntimeState,
} from "../../packages/server/src/runtime/runtime.js";

/** Inodes of a box's disk per MiB, as `mkfs.ext4 -i 16384` makes them. */
export const INODES_PER_MIB = 64;

/** Records every call; `failCreate` makes the next create fail as a broken runtime would. */
export class FakeRuntime implements NodeRuntime {
  readonly hostArch = "amd64" as const;
  maxBoxes = 8;
  readonly calls: string[] = [];
  readonly boxes = new Map<string, BoxNetwork>();
  /** The spec each box was created with. */
  readonly specs = new Map<string, BoxSpec>();
  /** Box directories on the host (a box's, or a leftover one's). */
  readonly dirs = new Set<string>();
  /** What `state` says of a box the runtime has (default: running). */
  readonly states = new Map<string, RuntimeState>();
  failCreate = false;
  /** The next background exec finds the box's disk full. */
  diskFull = false;
  thawDelayMs = 0;
  /** "stuck": freeze waits until its signal aborts (then thaws, as the real freezer); "refuse": it fails at once. */
  freezeMode: "ok" | "stuck" | "refuse" = "ok";
  /** The signal the last freeze got. */
  freezeSignal: AbortSignal | undefined;
  /** While set, a package build reports its first step and waits for it; so does create. */
  buildGate: Promise<void> | undefined;
  createGate: Promise<void> | undefined;
  /** What a port probe answers. */
  listening = true;
  /** Background execs still running. */
  readonly execsRunning = new Set<string>();
  /** What the next foreground exec writes and exits with. */
  nextExec: { stdout?: string[]; stderr?: string[]; exitCode?: number } = {};

  /** `logDir`: where background execs' logs go (a temp dir of the test's). */
  constructor(readonly logDir: string) {}

  async prepareImage(arch: string) {
    this.calls.push(`prepareImage ${arch}`);
  }
  async preparePackageImage(arch: string, packages: readonly string[], onProgress?: (progress: ImageProgress) => void) {
    this.calls.push(`preparePackageImage ${arch} ${packages.join(" ")}`);
    onProgress?.({ phase: "retrieving", detail: packages[0] });
    await this.buildGate;
    onProgress?.({ phase: "ready", done: true });
  }
  async start() {}
  async shutdown() {}
  async create(spec: BoxSpec): Promise<CreatedBox> {
    this.calls.push(`create ${spec.id} slot ${spec.netSlot}`);
    await this.createGate;
    if (this.failCreate) throw new Error("crun run exited 1");
    const network = { hostAddress: `10.9.0.${spec.netSlot * 4 + 1}`, guestAddress: `10.9.0.${spec.netSlot * 4 + 2}` };
    this.boxes.set(spec.id, network);
    this.specs.set(spec.id, spec);
    this.dirs.add(spec.id);
    this.outbound.set(spec.id, { rules: spec.outbound, resolved: [] }); // the real runtime sets them while the container starts
    return { network, diskInodes: spec.diskMiB * INODES_PER_MIB };
  }
  network(id: string): BoxNetwork {
    const network = this.boxes.get(id);
    if (!network) throw new Error(`no box ${id}`);
    return network;
  }
  async state(id: string): Promise<RuntimeState> {
    return this.boxes.has(id) ? (this.states.get(id) ?? "running") : "missing";
  }
  async listBoxes() {
    return [...this.dirs];
  }
  netSlotOf(id: string) {
    const guest = this.boxes.get(id)?.guestAddress;
    return guest ? (Number(guest.split(".")[3]) - 2) / 4 : undefined;
  }
  exec(id: string, spec: ExecSpec) {
    this.calls.push(`exec ${id}`);
    const { stdout: out = [], stderr: err = [], exitCode = 0 } = this.nextExec;
    this.nextExec = {};
    const stdout = new PassThrough();
    const stderr = new PassThrough();
    for (const chunk of out) stdout.write(chunk);
    for (const chunk of err) stderr.write(chunk);
    stdout.end();
    stderr.end();
    void spec;
    // as a child process's close: after its output streams ended
    const exit = Promise.all([finished(stdout), finished(stderr)]).then(() => exitCode);
    return { stdout, stderr, exit, kill() {} };
  }
  async execPty(id: string) {
    this.calls.push(`execPty ${id}`);
    const terminal = new PassThrough();
    return { terminal, exit: Promise.resolve(0), resize() {}, kill() {} };
  }
  async execDetached(id: string, execId: string) {
    this.calls.push(`execDetached ${id} ${execId}`);
    if (this.diskFull) throw new DiskFullError(`sailbox ${id}'s disk is full (ENOSPC): no room for the command's log`);
    writeFileSync(this.execLogPath(id, execId), "");
    this.execsRunning.add(execId);
  }
  execLogPath(id: string, execId: string) {
    return join(this.logDir, `${id}-${execId}.log`);
  }
  async execRunning(_id: string, execId: string) {
    return this.execsRunning.has(execId);
  }
  async probePort() {
    return this.listening;
  }
  async listeningAddresses() {
    return this.listening ? [] : ["::1"];
  }
  async freeze(id: string, signal?: AbortSignal) {
    this.calls.push(`freeze ${id}`);
    this.freezeSignal = signal;
    if (this.freezeMode === "refuse") throw new FreezeError(`sailbox ${id} could not be frozen: still FREEZING after 1000 attempts; thawed it again`);
    if (this.freezeMode === "stuck") {
      await new Promise((_, reject) => signal!.addEventListener("abort", () => reject(new FreezeError(`could not freeze ${id}: ${String(signal!.reason)}`)), { once: true }));
    }
    this.states.set(id, "paused");
  }
  async thaw(id: string) {
    this.calls.push(`thaw ${id}`);
    if (this.thawDelayMs) await new Promise((r) => setTimeout(r, this.thawDelayMs));
    this.states.delete(id);
  }
  async destroy(id: string, options: { afterCrash?: boolean } = {}) {
    this.calls.push(`destroy ${id}${options.afterCrash ? " afterCrash" : ""}`);
    this.boxes.delete(id);
    this.dirs.delete(id);
    this.states.delete(id);
  }
  readonly outbound = new Map<string, { rules: OutboundRules; resolved: ReadonlyArray<{ address: string; seconds: number }> }>();
  readonly allowed: Array<[string, { add: readonly string[]; renew: readonly string[] }, number]> = [];
  /** Destinations each box has open connections to (what conntrack would list). */
  readonly open = new Map<string, string[]>();
  async setOutbound(id: string, rules: OutboundRules, resolved: ReadonlyArray<{ address: string; seconds: number }> = []) {
    this.calls.push(`setOutbound ${id} ${rules.mode} ${rules.cidrs.join(",")}`);
    this.outbound.set(id, { rules, resolved });
  }
  async allowResolved(id: string, addresses: { add: readonly string[]; renew: readonly string[] }, seconds: number) {
    this.allowed.push([id, addresses, seconds]);
  }
  async cutOutbound(id: string, keep: (address: string) => boolean) {
    return (this.open.get(id) ?? []).filter((a) => !keep(a));
  }
  async outboundCounters() {
    return new Map();
  }
  async outboundRefusals() {
    return [];
  }
  /** The host's directly connected networks, as the runtime would follow them. */
  connected: Ipv4Range[] = [];
  connectedNetworks() {
    return this.connected;
  }
}
