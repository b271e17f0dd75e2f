/**
 * Sail on several "machines" (issue 23): one control plane on the host (PostgreSQL, started by
 * the test) and three node agents, each in a network namespace of its own
 * (test/fixtures/cluster.ts), reachable only at its address. Boxes are placed across the nodes
 * and each runs in its node's crun root, cgroup parent and namespace; HTTPS and raw TCP to the
 * node's address reach them. A node agent SIGKILLed keeps its boxes running and adopts them when
 * it starts again within its lease; one that stays away past its lease and grace is declared
 * lost: its boxes fail with a reason naming it, and when it joins again their containers are
 * removed, not resurrected. A node whose link is cut fences itself (no routes) before the
 * control plane fails its boxes. Everything is removed afterwards, even on failure, and checked.
 */
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { fetch } from "undici";
import { IngressPort, Nodes, Sailbox, App, type SailClient } from "@sail/sdk";
import { mustRunBounded } from "../fixtures/cluster.js";
import { cluster, control, echoAt, edge, GRACE_S, HOST, LEASE_S, NODE_HTTPS_PORT, nodeAgent, NODES, runCli, startSailCluster, stopSailCluster, type Node } from "../fixtures/sail-cluster.js";
import { wireHeaders } from "../../packages/server/src/node-wire/wire.js";
import { eventually, sshOptions, startGuestServer, startTcpEcho } from "./harness.js";

const boxes: Array<{ id: string; client: () => SailClient }> = [];
let ca = "";
/** The node agent of each node id (what the control plane calls it), learned from `sail node ls`. */
const byNodeId = new Map<string, Node>();

/** The node a box runs on, as the control plane says. */
async function nodeOf(box: Sailbox): Promise<Node> {
  const info = (await box.status(), box.describe());
  const node = byNodeId.get(info.node ?? "");
  assert.ok(node, `box ${box.id} is on a node of the cluster (${info.node})`);
  return node;
}

/** What HTTPS to `node`'s address with the box's URL (its name as SNI and Host) answers: a status, or 0 when nothing answered. */
async function httpsVia(node: { address: string }, url: string, seen?: (headers: Record<string, string>) => void): Promise<number> {
  const dispatcher = nodeAgent(ca, node.address);
  try {
    const res = await fetch(`${url}/headers`, { dispatcher, signal: AbortSignal.timeout(10_000) });
    if (seen && res.status === 200) seen((await res.json()) as Record<string, string>);
    else await res.body?.cancel();
    return res.status;
  } catch {
    return 0;
  } finally {
    await dispatcher.close();
  }
}

describe("a cluster on one host: a control plane and three node agents in network namespaces of their own", () => {
  before(async () => {
    ca = await startSailCluster();
    await eventually("three nodes joined", async () => (await Nodes.list({ client: control.client() })).length === 3);
    for (const summary of await Nodes.list({ client: control.client() })) {
      const node = NODES.find((n) => summary.url === n.wireUrl);
      assert.ok(node, `a node of the cluster: ${summary.url}`);
      byNodeId.set(summary.nodeId, node);
    }
  });

  after(async () => {
    for (const { id, client } of boxes) {
      try {
        await (await Sailbox.fromId(id, { client: client() })).terminate();
      } catch (err) {
        console.error(`could not terminate ${id}: ${(err as Error).message}`);
      }
    }
    assert.deepEqual(await stopSailCluster(), [], "nothing of the cluster is left on the host");
  });

  test("boxes are placed across the nodes; each runs in its node's namespace, and HTTPS and raw TCP to its node's address reach it", async () => {
    const client = control.client();
    const app = await App.find({ name: "cluster", mintIfMissing: true, client });
    const made: Sailbox[] = [];
    for (let i = 0; i < 6; i++) {
      const box = await Sailbox.create({ app, ingressPorts: [3000, new IngressPort(7070, "tcp", { allowPublic: true })] });
      boxes.push({ id: box.id, client: () => control.client() });
      made.push(box);
    }
    const perNode = new Map<Node, number>();
    for (const box of made) {
      const node = await nodeOf(box);
      perNode.set(node, (perNode.get(node) ?? 0) + 1);
      assert.equal(await node.container(box.id), "running", `${box.id} is in ${node.machine}'s crun root`);
      for (const other of NODES.filter((n) => n !== node)) assert.equal(await other.container(box.id), "gone", `and not in ${other.machine}'s`);
    }
    assert.ok(perNode.size >= 2, `placed on more than one node: ${[...perNode].map(([n, c]) => `${n.machine}=${c}`).join(" ")}`);
    const listed = await Nodes.list({ client });
    for (const summary of listed) {
      const node = byNodeId.get(summary.nodeId)!;
      assert.equal(summary.boxes, perNode.get(node) ?? 0, `sail node ls counts ${node.machine}'s boxes`);
      assert.equal(summary.state, "active");
      assert.ok(summary.leaseAgeMs !== null && summary.leaseAgeMs < LEASE_S * 1000, `its lease is fresh: ${summary.leaseAgeMs} ms`);
    }
    const cli = await runCli(control, ["node", "ls"]);
    assert.equal(cli.code, 0, cli.stderr);
    for (const summary of listed) assert.match(cli.stdout, new RegExp(`${summary.nodeId}\\s+active\\s+${summary.url.replace(/[.:/]/g, "\\$&")}`));

    const first = made[0]!;
    const node = await nodeOf(first);
    assert.ok(existsSync(`/sys/fs/cgroup/memory/${node.cgroupParent}/${first.id}`), "its cgroup is under the node's parent");
    const veth = `sv${first.id.replace(/^sb-/, "")}`.slice(0, 15);
    assert.match(await cluster.mustRunIn(node.machine, "ip", ["-o", "link"]), new RegExp(veth), "its veth is in the node's namespace");
    assert.doesNotMatch(await mustRunBounded("ip", ["-o", "link"]), new RegExp(veth), "and not in the host's");
    for (const box of made) {
      const at = await nodeOf(box);
      await startGuestServer(box, 3000);
      await startTcpEcho(box, 7070);
      const url = (await box.listener(3000).wait({ timeout: 60 })).endpoint.url;
      assert.equal(await httpsVia(at, url), 200, `HTTPS to ${at.machine}'s address with ${box.id}'s name reaches the guest`);
      const endpoint = (await box.listener(7070).wait({ timeout: 60 })).endpoint;
      assert.match(await echoAt(at.address, endpoint.port), /ping/, `raw TCP to ${at.machine}'s address reaches ${box.id}`);
    }
    const ports = made.map((b) => b.describe().listeners.find((l) => l.protocol === "tcp")!.endpoint.port);
    assert.equal(new Set(ports).size, ports.length, "public TCP ports are unique across the cluster");
  });

  test("through the edge: every box on every node answers HTTPS (the guest sees the real client) and raw TCP; a TCP allowlist refuses an outside source at the edge", async () => {
    const client = control.client();
    const all = await Promise.all(boxes.map(({ id }) => Sailbox.fromId(id, { client })));
    const reached = new Set<Node>();
    for (const box of all) {
      const url = (await box.listener(3000).wait({ timeout: 60 })).endpoint.url;
      const port = (await box.listener(7070).wait({ timeout: 60 })).endpoint.port;
      let headers: Record<string, string> = {};
      await eventually(`${box.id} answers through the edge`, async () => (await httpsVia(edge, url, (h) => (headers = h))) === 200, { intervalMs: 250 });
      assert.match(headers["x-forwarded-for"] ?? "", new RegExp(HOST.replace(/\./g, "\\.")), "the guest sees the real client, not the edge");
      assert.match(await echoAt(edge.address, port), /ping/, `raw TCP through the edge reaches ${box.id}`);
      reached.add(await nodeOf(box));
    }
    assert.ok(reached.size >= 2, "through the edge to more than one node");
    // allowed: n3's address only; the host (198.51.100.129) is outside
    const inside = cluster.address("n3");
    const guarded = await Sailbox.create({
      app: await App.find({ name: "cluster", client }),
      ingressPorts: [new IngressPort(7071, "tcp", { allowPublic: true, cidrAllowlist: [`${inside}/32`] })],
    });
    boxes.push({ id: guarded.id, client: () => control.client() });
    await startTcpEcho(guarded, 7071);
    const guardedPort = (await guarded.listener(7071).wait({ timeout: 60 })).endpoint.port;
    const fromN3 = async () => {
      const script = `import socket\ns=socket.create_connection(("${edge.address}", ${guardedPort}), timeout=10)\ns.sendall(b"ping\\n")\ns.shutdown(socket.SHUT_WR)\nprint(s.recv(100).decode(), end="")`;
      return (await cluster.runIn("n3", "python3", ["-c", script])).stdout;
    };
    await eventually("an allowed source reaches the guarded port through the edge", async () => /ping/.test(await fromN3()), { intervalMs: 250 });
    assert.equal(await echoAt(edge.address, guardedPort), "", "a source outside the allowlist is refused through the edge");
    assert.equal(await echoAt((await nodeOf(guarded)).address, guardedPort), "", "and straight at the node");
  });

  test("SSH with the user's own key reaches a box through the edge", async () => {
    const keys = mkdtempSync(join(tmpdir(), "sail-cluster-ssh-"));
    try {
      const key = join(keys, "id");
      execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", key]);
      const box = await Sailbox.create({ app: await App.find({ name: "cluster", client: control.client() }), ssh: `${key}.pub` });
      boxes.push({ id: box.id, client: () => control.client() });
      const port = (await box.listener(22).wait({ timeout: 60 })).endpoint.port;
      const answer = await eventually(
        "ssh through the edge answers",
        () => {
          const run = spawnSync("ssh", [...sshOptions(key), "-o", "ConnectTimeout=10", "-p", String(port), `root@${edge.address}`, "echo on $(hostname)"], { encoding: "utf8", timeout: 30_000 });
          return run.status === 0 ? run.stdout.trim() : false;
        },
        { intervalMs: 500, attempts: 60 },
      );
      assert.equal(answer, `on ${box.id}`);
    } finally {
      rmSync(keys, { recursive: true, force: true });
    }
  });

  test("the control plane restarted under steady HTTPS through the edge: no request fails, and the nodes are its again", async () => {
    const client = control.client();
    const box = await Sailbox.fromId(boxes[0]!.id, { client });
    const url = (await box.listener(3000).wait({ timeout: 60 })).endpoint.url;
    let running = true;
    let ok = 0;
    const failed: number[] = [];
    const traffic = (async () => {
      while (running) {
        const status = await httpsVia(edge, url);
        if (status === 200) ok++;
        else failed.push(status);
      }
    })();
    try {
      await eventually("traffic flows", () => ok > 5);
      const stopping = control.process!;
      const exited = new Promise((resolve) => stopping.once("exit", resolve));
      stopping.kill("SIGTERM");
      await exited;
      await control.start();
      await eventually("every node joined the restarted control plane", async () =>
        (await Nodes.list({ client: control.client() })).every((n) => n.state === "active" && n.leaseAgeMs! < LEASE_S * 1000),
      );
      const after = ok;
      await eventually("traffic flows on", () => ok > after + 5);
    } finally {
      running = false;
      await traffic;
    }
    console.log(`control plane restart under traffic through the edge: ${ok} answered 200, ${failed.length} failed (${[...new Set(failed)].join(", ")})`);
    assert.deepEqual(failed, [], "no request failed while the control plane restarted");
  });

  test("a node agent SIGKILLed and started again within its lease: its boxes ran on, and it adopts them", async () => {
    const box = await Sailbox.fromId(boxes[0]!.id, { client: control.client() });
    const node = await nodeOf(box);
    const pid = await node.containerPid(box.id);
    await cluster.kill9(node.process!);
    assert.equal(await node.container(box.id), "running", "the container outlives its agent");
    await node.start();
    assert.equal((await box.exec("echo back").output()).stdout.trim(), "back", "box work goes through the restarted agent");
    assert.equal(await node.containerPid(box.id), pid, "the same container: adopted, not made again");
    assert.equal(await box.status(), "running");
  });

  test("a node agent that stays away past its lease and grace is lost: its boxes fail naming it, the others serve on, and when it joins again nothing of them comes back", async () => {
    const client = control.client();
    // the boxes that serve HTTP on 3000 (the guarded TCP-only box is left out)
    const all = (await Promise.all(boxes.map(({ id }) => Sailbox.fromId(id, { client })))).filter((b) => b.describe().listeners.some((l) => l.port === 3000));
    const victim = await nodeOf(all.at(-1)!);
    const [victimId] = [...byNodeId].find(([, n]) => n === victim)!;
    const onVictim: Sailbox[] = [];
    const elsewhere: Sailbox[] = [];
    for (const box of all) ((await nodeOf(box)) === victim ? onVictim : elsewhere).push(box);
    const urls = new Map(await Promise.all(all.map(async (b) => [b.id, (await b.listener(3000).wait({ timeout: 60 })).endpoint.url] as const)));
    await cluster.kill9(victim.process!);
    const killedAt = Date.now();
    await eventually(`the boxes of ${victim.machine} are failed`, async () => (await Promise.all(onVictim.map((b) => b.status()))).every((s) => s === "failed"), { intervalMs: 200 });
    console.log(`node loss: ${victim.machine}'s ${onVictim.length} boxes failed ${Date.now() - killedAt} ms after kill -9 (lease ${LEASE_S} s, grace ${GRACE_S} s)`);
    for (const box of onVictim) {
      const info = (await box.status(), box.describe());
      assert.match(info.failureReason ?? "", new RegExp(`its node ${victimId} was lost`), "the reason names the node");
      assert.deepEqual(info.listeners, [], "a failed box publishes nothing");
    }
    assert.equal((await Nodes.list({ client })).find((n) => n.nodeId === victimId)!.state, "lost");
    // the edges' map (the route feed) no longer names the lost node's boxes; the others' stay
    const hostOf = (id: string) => new URL(urls.get(id)!).hostname;
    const feedHosts = async () => {
      const res = await fetch(`${control.url}/node/v1/routes`, { headers: wireHeaders(control.token), signal: AbortSignal.timeout(10_000) });
      return new Set(((await res.json()) as { http: Array<{ host: string }> }).http.map((r) => r.host));
    };
    await eventually("the route feed drops the lost node's boxes", async () => {
      const hosts = await feedHosts();
      return onVictim.every((b) => !hosts.has(hostOf(b.id))) && elsewhere.every((b) => hosts.has(hostOf(b.id)));
    });
    for (const box of elsewhere) {
      assert.equal(await box.status(), "running");
      assert.equal(await httpsVia(await nodeOf(box), urls.get(box.id)!), 200, `${box.id} on another node serves on`);
      assert.equal(await httpsVia(edge, urls.get(box.id)!), 200, `and through the edge`);
    }
    // a create goes to a live node
    const fresh = await Sailbox.create({ app: await App.find({ name: "cluster", client }) });
    boxes.push({ id: fresh.id, client: () => control.client() });
    assert.notEqual(await nodeOf(fresh), victim);

    await victim.start(); // joins again: reconciled before it routes
    const summary = (await Nodes.list({ client })).find((n) => n.nodeId === victimId)!;
    assert.deepEqual([summary.state, summary.generation], ["active", 2]);
    for (const box of onVictim) {
      assert.equal(await victim.container(box.id), "gone", `${box.id}'s container was removed, not resurrected`);
      assert.notEqual(await httpsVia(victim, urls.get(box.id)!), 200, "and no route to it");
      assert.equal(await box.status(), "failed");
    }
  });

  test("a node whose link is cut fences itself before the control plane fails its boxes; when the link is back it serves nothing of them", async () => {
    const client = control.client();
    const all = await Promise.all(boxes.map(({ id }) => Sailbox.fromId(id, { client })));
    const live: Sailbox[] = [];
    for (const box of all) if ((await box.status()) === "running") live.push(box);
    const box = live[0]!;
    const node = await nodeOf(box);
    const url = (await box.listener(3000).wait({ timeout: 60 })).endpoint.url;
    assert.equal(await httpsVia(node, url), 200);
    const from = node.log.length;
    await cluster.cutLink(node.machine);
    const cutAt = Date.now();
    try {
      await eventually(`${node.machine} fences itself`, () => node.log.slice(from).includes("fenced"), { intervalMs: 200 });
      const fencedMs = Date.now() - cutAt;
      // from inside its namespace (the link is cut, the node is still there): no route for the box
      const inside = await cluster.runIn(node.machine, "curl", [
        "-sk",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        "5",
        "--resolve",
        `${new URL(url).host.replace(/:.*/, "")}:${NODE_HTTPS_PORT}:${node.address}`,
        `${url}/headers`,
      ]);
      assert.notEqual(inside.stdout.trim(), "200", "a fenced node routes nothing");
      await eventually(`${box.id} is failed`, async () => (await box.status()) === "failed", { intervalMs: 200 });
      console.log(`cut link: ${node.machine} fenced itself ${fencedMs} ms after the cut; its box failed ${Date.now() - cutAt} ms after it`);
    } finally {
      await cluster.restoreLink(node.machine);
    }
    await eventually(`${node.machine} joined again`, async () => (await Nodes.list({ client })).find((n) => byNodeId.get(n.nodeId) === node)?.state === "active", { intervalMs: 500 });
    await eventually(`${box.id}'s container is removed from ${node.machine}`, async () => (await node.container(box.id)) === "gone", { intervalMs: 500 });
    assert.notEqual(await httpsVia(node, url), 200, "nothing of the failed box is served again");
    assert.equal(await box.status(), "failed");
  });
});
