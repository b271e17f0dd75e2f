/**
 * Sail on several "machines" (issue 23, first part): each node agent runs in a network namespace
 * of its own (test/fixtures/cluster.ts), the control plane on the host, and a node can only be
 * reached at its address. A box created through the control plane runs on the node: its
 * container in the node's crun root and cgroup parent, its veth and firewall in the node's
 * namespace, not the host's. From the host, HTTPS to the node's address (the box's name as SNI
 * and Host) and raw TCP reach the guest; the agent SIGKILLed leaves the container running and its
 * restart adopts it; a cut link makes box work a prompt SAIL_NODE_UNAVAILABLE naming the node, and
 * the restored link heals. A second agent (another namespace, its own control plane until the
 * control plane takes several nodes) runs alongside: neither agent's start touches the other's
 * boxes. Everything is removed afterwards, even on failure, and checked.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { Agent, fetch } from "undici";
import { IngressPort, SailClient, Sailbox, SailError, App } from "@sail/sdk";
import { Cluster, mustRunBounded, runBounded } from "../fixtures/cluster.js";
import { CLI, DATA_DIR, eventually, startGuestServer, startTcpEcho } from "./harness.js";

const cluster = new Cluster();
const ROOT = join(DATA_DIR, "cluster");
const NODE_WIRE_PORT = 7080;
const NODE_HTTPS_PORT = 8443;
const TCP_PORTS = "30000-30099";
const HOST = cluster.options.hostAddress;

/** One control plane on the host, on the cluster's address (its own data dir, SQLite store and port). */
class Control {
  readonly dir = mkdtempSync(join(tmpdir(), "sail-cluster-"));
  readonly token = randomBytes(24).toString("base64url");
  process?: ChildProcess;
  log = "";
  constructor(
    readonly name: string,
    readonly apiPort: number,
  ) {}
  get url(): string {
    return `http://${HOST}:${this.apiPort}`;
  }
  get dataDir(): string {
    return join(ROOT, `control-${this.name}`);
  }
  client(): SailClient {
    return new SailClient(JSON.parse(readFileSync(join(this.dir, "config.json"), "utf8")) as { apiUrl: string; token: string });
  }
  async start(): Promise<void> {
    const args = [
      "up",
      "--role",
      "control",
      "--store",
      "sqlite",
      "--node-token",
      this.token,
      "--data-dir",
      this.dataDir,
      "--api-listen",
      `${HOST}:${this.apiPort}`,
      "--metrics-listen",
      "off",
      "--log-level",
      "warn",
    ];
    this.process = await startUntil(
      () => spawnLogged(undefined, args, { SAIL_CONFIG: join(this.dir, "config.json") }, (t) => (this.log += t)),
      () => this.log,
      "Sail is up",
    );
  }
}

/** A node agent in its machine's namespace: its own data dir, box subnet, crun root, cgroup parent. */
class Node {
  process?: ChildProcess;
  log = "";
  constructor(
    readonly machine: string,
    readonly control: Control,
    readonly boxSubnet: string,
  ) {}
  get address(): string {
    return cluster.address(this.machine);
  }
  get dataDir(): string {
    return join(ROOT, this.machine);
  }
  get crunRoot(): string {
    return `/run/${cluster.options.prefix}/${this.machine}/crun`;
  }
  get cgroupParent(): string {
    return `${cluster.options.prefix}-${this.machine}`;
  }
  get wireUrl(): string {
    return `http://${this.address}:${NODE_WIRE_PORT}`;
  }
  async start(): Promise<void> {
    const args = [
      "up",
      "--role",
      "node",
      "--control",
      this.control.url,
      "--node-token",
      this.control.token,
      "--node-listen",
      `${this.address}:${NODE_WIRE_PORT}`,
      "--https-listen",
      `${this.address}:${NODE_HTTPS_PORT}`,
      "--tcp-listen",
      this.address,
      "--tcp-ports",
      TCP_PORTS,
      "--public-host",
      this.address,
      "--data-dir",
      this.dataDir,
      "--box-subnet",
      this.boxSubnet,
      "--crun-root",
      this.crunRoot,
      "--cgroup-parent",
      this.cgroupParent,
      "--metrics-listen",
      "off",
      "--outbound",
      "off",
      "--log-level",
      "warn",
    ];
    const from = this.log.length;
    this.process = await startUntil(
      () => spawnLogged(this.machine, args, {}, (t) => (this.log += t)),
      () => this.log.slice(from),
      "Sail node is up",
    );
  }
  /** crun's word on a container of this node: running, paused, stopped, or gone. */
  async container(id: string): Promise<string> {
    const result = await runBounded("crun", ["--root", this.crunRoot, "state", id]);
    return result.code === 0 ? (JSON.parse(result.stdout) as { status: string; pid: number }).status : "gone";
  }
  async containerPid(id: string): Promise<number | undefined> {
    const result = await runBounded("crun", ["--root", this.crunRoot, "state", id]);
    return result.code === 0 ? (JSON.parse(result.stdout) as { pid: number }).pid : undefined;
  }
  async containers(): Promise<string[]> {
    if (!existsSync(this.crunRoot)) return []; // `crun list` would make it
    const result = await runBounded("crun", ["--root", this.crunRoot, "list", "-q"]);
    return result.code === 0 ? result.stdout.split("\n").filter(Boolean) : [];
  }
}

function spawnLogged(machine: string | undefined, args: string[], env: NodeJS.ProcessEnv, onText: (text: string) => void): ChildProcess {
  const options = { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] as ["ignore", "pipe", "pipe"] };
  const child = machine ? cluster.spawnIn(machine, process.execPath, [CLI, ...args], options) : cluster.spawnHost(process.execPath, [CLI, ...args], options);
  child.stdout!.on("data", (d: Buffer) => onText(d.toString()));
  child.stderr!.on("data", (d: Buffer) => onText(d.toString()));
  return child;
}

async function startUntil(spawnIt: () => ChildProcess, log: () => string, ready: string): Promise<ChildProcess> {
  const child = spawnIt();
  await new Promise<void>((resolve, reject) => {
    const timer = setInterval(() => log().includes(ready) && (clearInterval(timer), resolve()), 50);
    child.once("exit", (code, signal) => {
      clearInterval(timer);
      reject(new Error(`sail exited (${code ?? signal}) before "${ready}":\n${log()}`));
    });
  });
  return child;
}

const controlA = new Control("a", 17621);
const controlB = new Control("b", 17622);
const n1 = new Node("n1", controlA, "10.253.0.0/20");
const n2 = new Node("n2", controlB, "10.253.16.0/20");
const boxes: Array<{ id: string; client: () => SailClient }> = [];
let agent: Agent;

/** An undici dispatcher that trusts the node's CA and sends every name to `address` (the URL's host stays the SNI and Host). */
function nodeAgent(ca: string, address: string): Agent {
  return new Agent({ connect: { ca, lookup: ((_h: string, o: { all?: boolean }, cb: (...a: unknown[]) => void) => (o?.all ? cb(null, [{ address, family: 4 }]) : cb(null, address, 4))) as never } });
}

/** What a TCP echo at address:port answers to "ping" (empty: nothing). */
function echoAt(address: string, port: number): Promise<string> {
  return new Promise((resolve) => {
    let got = "";
    const s = connect({ host: address, port }, () => s.end("ping\n"));
    s.setTimeout(20_000, () => s.destroy());
    s.on("data", (d) => (got += d));
    s.on("error", () => {});
    s.on("close", () => resolve(got));
  });
}

async function refusal(call: Promise<unknown>): Promise<SailError> {
  try {
    await call;
  } catch (err) {
    assert.ok(err instanceof SailError, `a typed error, not ${String(err)}`);
    return err;
  }
  assert.fail("the call succeeded");
}

/** What of a node is on the host: its containers, box netns, mounts and loop devices under its data dir, cgroups under its parent. */
async function nodeLeftovers(node: Node): Promise<string[]> {
  const found = (await node.containers()).map((id) => `container ${id}`);
  const boxesDir = join(node.dataDir, "boxes");
  const ids = existsSync(boxesDir) ? readdirSync(boxesDir) : [];
  const netns = await mustRunBounded("ip", ["netns", "list"]);
  for (const id of ids) if (netns.includes(`sail-${id}`)) found.push(`netns sail-${id}`);
  for (const line of readFileSync("/proc/mounts", "utf8").split("\n")) if (line.split(" ")[1]?.startsWith(`${node.dataDir}/`)) found.push(`mount ${line.split(" ")[1]}`);
  for (const line of (await mustRunBounded("losetup", ["-a"])).split("\n")) if (line.includes(`${node.dataDir}/`)) found.push(`loop ${line}`);
  for (const controller of readdirSync("/sys/fs/cgroup")) if (existsSync(`/sys/fs/cgroup/${controller}/${node.cgroupParent}`)) found.push(`cgroup ${controller}/${node.cgroupParent}`);
  return found;
}

/** Remove what a node left (a failed run, a killed agent): containers, box netns, mounts, loop devices, cgroups, data dir. */
async function scrubNode(node: Node): Promise<void> {
  for (const id of await node.containers()) await runBounded("crun", ["--root", node.crunRoot, "delete", "--force", id]);
  const boxesDir = join(node.dataDir, "boxes");
  for (const id of existsSync(boxesDir) ? readdirSync(boxesDir) : []) await runBounded("ip", ["netns", "del", `sail-${id}`]);
  const mounts = readFileSync("/proc/mounts", "utf8")
    .split("\n")
    .map((line) => line.split(" ")[1] ?? "")
    .filter((target) => target.startsWith(`${node.dataDir}/`))
    .sort((a, b) => b.length - a.length);
  for (const target of mounts) await runBounded("umount", ["-l", target]);
  for (const line of (await runBounded("losetup", ["-a"])).stdout.split("\n")) if (line.includes(`${node.dataDir}/`)) await runBounded("losetup", ["-d", line.split(":")[0]!]);
  for (const controller of readdirSync("/sys/fs/cgroup")) {
    const parent = `/sys/fs/cgroup/${controller}/${node.cgroupParent}`;
    if (!existsSync(parent)) continue;
    for (const entry of readdirSync(parent, { withFileTypes: true })) if (entry.isDirectory()) rmSync(join(parent, entry.name), { recursive: false, force: true });
    await runBounded("rmdir", [parent]);
  }
  rmSync(node.dataDir, { recursive: true, force: true });
  rmSync(`/run/${cluster.options.prefix}/${node.machine}`, { recursive: true, force: true });
}

/** A node's data dir with the test data dir's base image hard-linked in (the mirror is beyond the cluster's reach). */
async function prepareNode(node: Node): Promise<void> {
  await scrubNode(node);
  mkdirSync(join(node.dataDir, "images"), { recursive: true });
  for (const image of readdirSync(join(DATA_DIR, "images")).filter((name) => name.startsWith(`debian-amd64-`) || name.startsWith("debian-arm64-"))) {
    if (process.arch === "x64" && !image.startsWith("debian-amd64-")) continue;
    if (process.arch === "arm64" && !image.startsWith("debian-arm64-")) continue;
    await mustRunBounded("cp", ["-al", join(DATA_DIR, "images", image), join(node.dataDir, "images", image)], { deadlineMs: 120_000 });
  }
}

describe("a cluster on one host: node agents in network namespaces of their own", () => {
  before(async () => {
    await cluster.build();
    for (const node of [n1, n2]) await prepareNode(node);
    for (const control of [controlA, controlB]) rmSync(control.dataDir, { recursive: true, force: true });
    await controlA.start();
    await controlB.start();
    await n1.start();
    await n2.start();
    agent = nodeAgent(await controlA.client().text("/v1/ca"), n1.address);
  });

  after(async () => {
    for (const { id, client } of boxes) {
      try {
        await (await Sailbox.fromId(id, { client: client() })).terminate();
      } catch (err) {
        console.error(`could not terminate ${id}: ${(err as Error).message}`);
      }
    }
    await agent?.close();
    for (const child of [n1.process, n2.process, controlA.process, controlB.process]) if (child) await cluster.kill9(child);
    for (const node of [n1, n2]) await scrubNode(node);
    await cluster.teardown();
    for (const control of [controlA, controlB]) {
      rmSync(control.dataDir, { recursive: true, force: true });
      rmSync(control.dir, { recursive: true, force: true });
    }
    rmSync(ROOT, { recursive: true, force: true });
    rmSync(`/run/${cluster.options.prefix}`, { recursive: true, force: true });
    const left = [...(await cluster.leftovers()), ...(await nodeLeftovers(n1)), ...(await nodeLeftovers(n2))];
    assert.deepEqual(left, [], "nothing of the cluster is left on the host");
  });

  test("a box created through the control plane runs on the namespaced node: HTTPS and raw TCP to the node's address reach it", async () => {
    const app = await App.find({ name: "cluster", mintIfMissing: true, client: controlA.client() });
    const box = await Sailbox.create({ app, ingressPorts: [3000, new IngressPort(7070, "tcp", { allowPublic: true })] });
    boxes.push({ id: box.id, client: () => controlA.client() });
    assert.equal(await n1.container(box.id), "running", "its container is in the node's crun root");
    assert.ok(existsSync(`/sys/fs/cgroup/memory/${n1.cgroupParent}/${box.id}`), "its cgroup is under the node's parent");
    const veth = `sv${box.id.replace(/^sb-/, "")}`.slice(0, 15);
    assert.match(await cluster.mustRunIn("n1", "ip", ["-o", "link"]), new RegExp(veth), "its veth is in the node's namespace");
    assert.doesNotMatch(await mustRunBounded("ip", ["-o", "link"]), new RegExp(veth), "and not in the host's");
    assert.match(await cluster.mustRunIn("n1", "nft", ["list", "tables"]), /table inet sail_10_253_0_0_20/, "the node's firewall table is in its namespace");
    assert.doesNotMatch(await mustRunBounded("nft", ["list", "tables"]), /sail_10_253_0_0_20/, "and not in the host's");

    await startGuestServer(box, 3000);
    await startTcpEcho(box, 7070);
    const url = (await box.listener(3000).wait({ timeout: 60 })).endpoint.url;
    assert.ok(url.includes(`:${NODE_HTTPS_PORT}`), url);
    const res = await fetch(`${url}/headers`, { dispatcher: agent, signal: AbortSignal.timeout(30_000) });
    assert.equal(res.status, 200, "HTTPS to the node's address with the box's name reaches the guest");
    await res.body?.cancel();
    // the endpoint's host is the control plane's --public-host (the edge's address, once there is one): the port is the node's
    const endpoint = (await box.listener(7070).wait({ timeout: 60 })).endpoint;
    assert.match(await echoAt(n1.address, endpoint.port), /ping/, "raw TCP to the node's address reaches the guest");
  });

  test("the node agent SIGKILLed: the box's container keeps running, and the agent restarted in its namespace adopts it", async () => {
    const { id } = boxes[0]!;
    const box = await Sailbox.fromId(id, { client: controlA.client() });
    const pid = await n1.containerPid(id);
    await cluster.kill9(n1.process!);
    assert.equal(await n1.container(id), "running", "the container outlives its agent");
    await n1.start();
    assert.equal((await box.exec("echo back").output()).stdout.trim(), "back", "box work goes through the restarted agent");
    assert.equal(await n1.containerPid(id), pid, "the same container: adopted, not made again");
    await eventually("HTTPS reaches the guest again", async () => {
      const url = (await box.listener(3000).wait({ timeout: 60 })).endpoint.url;
      const res = await fetch(`${url}/headers`, { dispatcher: agent, signal: AbortSignal.timeout(10_000) }).catch(() => undefined);
      await res?.body?.cancel();
      return res?.status === 200;
    });
  });

  test("another node agent beside it: starting and stopping one never touches the other's boxes", async () => {
    const app = await App.find({ name: "cluster", mintIfMissing: true, client: controlB.client() });
    const other = await Sailbox.create({ app, ingressPorts: [3000] });
    boxes.push({ id: other.id, client: () => controlB.client() });
    assert.equal(await n2.container(other.id), "running");
    assert.equal(await n1.container(other.id), "gone", "n2's box is not in n1's crun root");
    const { id } = boxes[0]!;
    // each agent's start reconciles and adopts what its data dir holds: the other's boxes are not its own
    await cluster.kill9(n1.process!);
    await n1.start();
    await cluster.kill9(n2.process!);
    await n2.start();
    assert.equal(await n2.container(other.id), "running", "n1's restart left n2's box alone");
    assert.equal(await n1.container(id), "running", "n2's restart left n1's box alone");
    assert.equal((await other.exec("echo two").output()).stdout.trim(), "two");
    assert.equal((await (await Sailbox.fromId(id, { client: controlA.client() })).exec("echo one").output()).stdout.trim(), "one");
    assert.match(await cluster.mustRunIn("n2", "nft", ["list", "tables"]), /sail_10_253_16_0_20/);
    assert.doesNotMatch(await cluster.mustRunIn("n2", "nft", ["list", "tables"]), /sail_10_253_0_0_20/, "n1's table is not in n2's namespace");
  });

  test("the node's link cut: box work fails with SAIL_NODE_UNAVAILABLE naming the node (it does not hang), and heals once the link is back", async () => {
    const { id } = boxes[0]!;
    const box = await Sailbox.fromId(id, { client: controlA.client() });
    assert.equal((await box.exec("echo before").output()).stdout.trim(), "before", "a kept-alive connection to the node exists");
    await cluster.cutLink("n1");
    try {
      const started = Date.now();
      const err = await refusal(box.exec("echo hi").output());
      const ms = Date.now() - started;
      console.log(`exec over a cut link answered ${err.code} after ${ms} ms: ${err.message}`);
      assert.equal(err.code, "SAIL_NODE_UNAVAILABLE", err.message);
      assert.match(err.message, new RegExp(n1.address.replace(/\./g, "\\.")), "the error names the node");
      assert.equal(await n1.container(id), "running", "the box runs on, cut off");
    } finally {
      await cluster.restoreLink("n1");
    }
    await eventually(
      "box work goes through again",
      async () =>
        (
          await box
            .exec("echo healed")
            .output()
            .catch(() => undefined)
        )?.stdout.trim() === "healed",
      { intervalMs: 500 },
    );
  });
});
