/**
 * The cross-tenant hijack an audit reproduced (issue 26, item 1): a guest answers a WebSocket
 * upgrade with a complete 200 instead of a 101. If the slow path tunnels that connection
 * anyway, HAProxy sees a finished keep-alive exchange and returns the connection to the shared
 * pool of `server slow`, and every later slow-path request (another org's sleeping or paused
 * box, an unknown host) is written straight to the attacker's guest, cookies included.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { connect as http2Connect } from "node:http2";
import { join } from "node:path";
import { connect as tlsConnect } from "node:tls";
import { describe, test } from "node:test";
import { fetch } from "undici";
import { App, SailClient, Sailbox, Tokens } from "@sail/sdk";
import { gatewayAgent, HTTPS_PORT, REPO, startGuestServer, startPython, useTestDaemon } from "./harness.js";

const { daemon, pool } = useTestDaemon({ setup: async (d) => void (ca = await d.caCert()) });
let ca = "";

/** One request over a fresh TLS connection, as raw bytes both ways: the whole answer (the gateway closes or we stop after `ms`). */
function rawExchange(host: string, request: string, ms = 3000): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ host: "127.0.0.1", port: HTTPS_PORT, servername: host, ca, ALPNProtocols: ["http/1.1"] }, () => socket.write(request));
    let answer = "";
    const done = () => {
      clearTimeout(timer);
      socket.destroy();
      resolve(answer);
    };
    const timer = setTimeout(done, ms);
    socket.setEncoding("utf8").on("data", (d: string) => (answer += d));
    socket
      .on("end", done)
      .on("close", done)
      .on("error", (err) => (answer ? done() : reject(err)));
  });
}

const upgradeRequest = (host: string) =>
  `GET /chat HTTP/1.1\r\nHost: ${host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${randomBytes(16).toString("base64")}\r\n\r\n`;

/** A GET over HTTP/2 with the victim's secrets: status and body. */
async function h2Get(host: string, path: string, secrets: Record<string, string>): Promise<{ status: number; body: string }> {
  const session = http2Connect(`https://127.0.0.1:${HTTPS_PORT}`, { servername: host, ca });
  try {
    return await new Promise((resolve, reject) => {
      const stream = session.request({ ":path": path, ":authority": host, ...secrets });
      let body = "";
      let status = 0;
      stream.on("response", (headers) => (status = Number(headers[":status"])));
      stream.setEncoding("utf8").on("data", (d: string) => (body += d));
      stream.on("end", () => resolve({ status, body }));
      stream.on("error", reject);
      stream.end();
    });
  } finally {
    session.close();
  }
}

describe("a guest that answers an upgrade with 200 cannot take over the slow path (cross-tenant hijack)", () => {
  test("requests for another org's sleeping and paused boxes and for unknown hosts never reach it, over HTTP/1.1 and h2", async () => {
    const attacker = await pool.create({ ingressPorts: [3000] });
    await startPython(attacker, "hijacker", readFileSync(join(REPO, "test/fixtures/hijacking-guest.py"), "utf8"), "3000");
    const attackerHost = new URL((await attacker.listener(3000).wait({ timeout: 60 })).endpoint.url).hostname;

    // the victim: another org, with a sleeping box and a paused one
    const victimToken = (await Tokens.create({ org: `victim-${randomBytes(4).toString("hex")}`, label: "hijack test", client: daemon.client() })).token;
    const victimClient = new SailClient({ apiUrl: daemon.credentials().apiUrl, token: victimToken });
    const victimApp = await App.find({ name: "victim", mintIfMissing: true, client: victimClient });
    const victims: Sailbox[] = [];
    try {
      for (let i = 0; i < 2; i++) {
        const sb = await Sailbox.create({ app: victimApp, ingressPorts: [3000] });
        victims.push(sb);
        await startGuestServer(sb, 3000);
        await sb.listener(3000).wait({ timeout: 60 });
      }
      const [sleeping, paused] = victims as [Sailbox, Sailbox];
      const sleepingHost = new URL(sleeping.listener(3000).endpoint.url).hostname;
      const pausedHost = new URL(paused.listener(3000).endpoint.url).hostname;
      const unknownHost = `3000-sb-${randomBytes(6).toString("hex")}.sail.localhost`;
      await sleeping.sleep();
      await paused.pause();

      // the attack: upgrades to the attacker's sleeping box go through the slow path, which wakes it
      await attacker.sleep();
      const poisoned = await Promise.all(Array.from({ length: 4 }, () => rawExchange(attackerHost, upgradeRequest(attackerHost))));
      for (const answer of poisoned) assert.match(answer, /^HTTP\/1\.1 200[^]*\r\n\r\nok$/, "the guest's 200 reaches its own client, as an HTTP answer");

      const secrets = { cookie: "session=victim-secret", authorization: "Bearer victim-token" };
      const agent = gatewayAgent(ca);
      const answers: Array<{ host: string; status: number; body: string }> = [];
      for (let round = 0; round < 4; round++) {
        for (const [host, path] of [
          [pausedHost, "/"],
          [unknownHost, "/"],
        ] as const) {
          const res = await fetch(`https://${host}:${HTTPS_PORT}${path}`, { dispatcher: agent, headers: { ...secrets, accept: "application/json" } });
          answers.push({ host, status: res.status, body: await res.text() });
          answers.push({ host, ...(await h2Get(host, path, { ...secrets, accept: "application/json" })) });
        }
      }
      // the sleeping victim is woken by its own request and answers it itself
      const woken = await fetch(`https://${sleepingHost}:${HTTPS_PORT}/headers`, { dispatcher: agent, headers: secrets });
      answers.push({ host: sleepingHost, status: woken.status, body: await woken.text() });
      await agent.close();

      for (const a of answers) assert.doesNotMatch(a.body, /hijacked/, `a request for ${a.host} was answered by the attacker's guest`);
      for (const a of answers.filter((a) => a.host === pausedHost)) assert.equal(a.status, 503, a.body);
      for (const a of answers.filter((a) => a.host === unknownHost)) assert.equal(a.status, 404, a.body);
      assert.equal(woken.status, 200);
      assert.equal((JSON.parse(answers.at(-1)!.body) as Record<string, string>).cookie, "session=victim-secret");

      const seen = (await attacker.exec("cat /tmp/seen.log").output()).stdout;
      for (const host of [sleepingHost, pausedHost, unknownHost]) assert.ok(!seen.includes(host), `the attacker's guest saw a request for ${host}:\n${seen}`);
      assert.doesNotMatch(seen, /victim-secret|victim-token/);
    } finally {
      for (const sb of victims) await sb.terminate().catch((err) => console.error(`could not terminate victim ${sb.id}: ${(err as Error).message}`));
    }
  });
});
