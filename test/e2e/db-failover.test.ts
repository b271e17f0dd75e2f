/**
 * Losing the database primary (issue 23): the control plane's store is PostgreSQL behind Patroni
 * (two members, a synchronous standby, over etcd) and HAProxy (test/fixtures/patroni.ts), the
 * supported HA setup. kill -9 of the primary's Patroni and postmaster; while Patroni fails over,
 * a running box keeps answering HTTPS, a sleeping one wakes on a request (power is the node's,
 * traffic never asks the database), and API writes are refused as SAIL_STORE_UNAVAILABLE (never
 * a hang) until the new primary takes them, with nothing restarted. Everything acknowledged
 * before is still there after. Prints the time from the kill to the first acknowledged write.
 * Always the split form.
 */
import assert from "node:assert/strict";
import { performance } from "node:perf_hooks";
import { describe, test } from "node:test";
import type { Agent } from "undici";
import { App, SailError } from "@sail/sdk";
import { startPatroni, PATRONI_TTL_S, CHECK_INTERVAL_MS, type PatroniCluster } from "../fixtures/patroni.js";
import { eventually, gatewayAgent, startGuestServer, useTestDaemon, statusThrough } from "./harness.js";

/** etcd's members: one (the default) or three (SAIL_DB_FAILOVER_ETCD=3, as in production). */
const ETCD_MEMBERS = process.env.SAIL_DB_FAILOVER_ETCD === "3" ? 3 : 1;
let db: PatroniCluster;
let agent: Agent;
const { daemon, pool } = useTestDaemon({
  split: true,
  // a node lease shorter than the failover (~10 s here): the node must not fence itself while its
  // control plane answers that the database is away, nor be declared lost once it is back
  upArgs: ["--node-lease", "6", "--node-grace", "1"],
  store: async () => {
    db = await startPatroni({ etcdMembers: ETCD_MEMBERS });
    return { url: await db.createDatabase("sail"), stop: () => db.stop() };
  },
  setup: async (daemon) => {
    agent = gatewayAgent(await daemon.caCert());
  },
  teardown: async () => {
    await agent?.close();
  },
});

/**
 * An API write's own deadline: far beyond the store's (5 s to connect, 6 s per statement), so a
 * refusal that arrives is the store's, and one that does not (SAIL_TIMEOUT) is a hang.
 */
const WRITE_DEADLINE_MS = 60_000;

/** The status code of a GET through the gateway (0: no answer at all). */
const statusOf = (url: string) => statusThrough(agent, url);

/** Mints an app (a write through the API to the store); its name. */
async function mintApp(name: string): Promise<string> {
  return (await App.find({ name, mintIfMissing: true, client: daemon.client(), timeoutMs: WRITE_DEADLINE_MS })).name;
}

/** GETs `url` one after another until `stop` says so: how many answered 200, and the other answers seen. */
function steadyTraffic(url: string): { stop(): Promise<{ ok: number; failed: number[] }> } {
  let running = true;
  const done = (async () => {
    let ok = 0;
    const failed: number[] = [];
    while (running) {
      const status = await statusOf(url);
      if (status === 200) ok++;
      else failed.push(status);
    }
    return { ok, failed };
  })();
  return {
    stop: async () => {
      running = false;
      return done;
    },
  };
}

describe("losing the database primary (Patroni + HAProxy)", () => {
  test("kill -9 of the primary: boxes serve and wake, writes are SAIL_STORE_UNAVAILABLE until the new primary takes them, nothing acknowledged is lost", async () => {
    const steady = await pool.create({ ingressPorts: [3000] });
    await startGuestServer(steady, 3000);
    const url = `${(await steady.listener(3000).wait({ timeout: 60 })).endpoint.url}/headers`;
    const sleeper = await pool.create({ ingressPorts: [3000] });
    await startGuestServer(sleeper, 3000);
    const sleeperUrl = `${(await sleeper.listener(3000).wait({ timeout: 60 })).endpoint.url}/headers`;
    await sleeper.sleep();
    assert.equal(await sleeper.status(), "sleeping");
    const acknowledged: string[] = [];
    for (let i = 0; i < 5; i++) acknowledged.push(await mintApp(`before-${i}`));
    assert.equal(await statusOf(url), 200);

    const traffic = steadyTraffic(url);
    const killedAt = performance.now();
    const killed = await db.killPrimary();
    // the sleeping box is woken by a request while no member takes writes
    const wake = statusOf(sleeperUrl).then((status) => ({ status, ms: performance.now() - killedAt }));

    // writes, one after another, until one is acknowledged: each refusal typed, none a hang
    const refusals: Array<{ code: string; ms: number }> = [];
    let firstWriteMs: number | undefined;
    for (let n = 0; firstWriteMs === undefined; n++) {
      const startedAt = performance.now();
      try {
        acknowledged.push(await mintApp(`during-${n}`));
        firstWriteMs = performance.now() - killedAt;
      } catch (err) {
        assert.ok(err instanceof SailError, `a typed error, not ${String(err)}`);
        assert.equal(err.code, "SAIL_STORE_UNAVAILABLE", `write ${n} during the failover: ${err.message}`);
        refusals.push({ code: err.code, ms: performance.now() - startedAt });
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
    }
    const woke = await wake;
    const seen = await traffic.stop();
    const newPrimary = await db.primary();
    const longestRefusalMs = Math.max(0, ...refusals.map((r) => r.ms));
    console.log(
      `[db-failover] kill -9 of ${killed} (etcd members ${ETCD_MEMBERS}, Patroni ttl ${PATRONI_TTL_S} s, HAProxy check every ${CHECK_INTERVAL_MS} ms) → first acknowledged write ` +
        `${(firstWriteMs / 1000).toFixed(1)} s later on ${newPrimary}; ${refusals.length} writes refused as SAIL_STORE_UNAVAILABLE meanwhile ` +
        `(longest ${Math.round(longestRefusalMs)} ms); HTTPS to the running box: ${seen.ok} answered 200, ${seen.failed.length} failed; ` +
        `the sleeping box answered ${woke.status} ${(woke.ms / 1000).toFixed(1)} s after the kill`,
    );

    assert.notEqual(newPrimary, killed, "the standby took over");
    assert.ok(refusals.length > 0, "the API saw the failover (a write was refused): else this test proved nothing");
    assert.deepEqual(seen.failed, [], "every request to the running box answered 200 during the failover");
    assert.ok(seen.ok > 0);
    assert.equal(woke.status, 200, "the sleeping box woke on a request during the failover");

    // nothing acknowledged is lost, and the control plane works on the new primary without a restart
    const apps = new Set((await App.list({ client: daemon.client() })).map((a) => a.name));
    assert.deepEqual(
      acknowledged.filter((name) => !apps.has(name)),
      [],
      "every acknowledged write is on the new primary",
    );
    await eventually("the store says the woken box runs (the node's word reached the new primary)", async () => (await sleeper.status()) === "running");
    assert.equal(await steady.status(), "running");
    assert.equal((await steady.exec("echo alive").output()).stdout.trim(), "alive");
    const after = await pool.create({ ingressPorts: [3000] });
    assert.equal(after.describe().status, "running", "a create goes through on the new primary");
  });
});
