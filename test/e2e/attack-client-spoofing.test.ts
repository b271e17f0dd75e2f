/**
 * Headers that let a client lie to a guest (issue 26, item 7): a Host with several values is
 * routed by one while the guest sees another, and client-IP headers (X-Real-IP, True-Client-IP,
 * X-Client-IP, underscore twins of X-Forwarded-For) reached guests unchanged. And a console
 * session that tries to turn itself into a lasting API token (item 6).
 */
import assert from "node:assert/strict";
import { connect as tlsConnect } from "node:tls";
import { describe, test } from "node:test";
import { fetch } from "undici";
import { HTTPS_PORT, startGuestServer, useTestDaemon } from "./harness.js";
import { gatewayAgent } from "./harness.js";

const { daemon, pool } = useTestDaemon({ setup: async (d) => void (ca = await d.caCert()) });
let ca = "";

/** One raw HTTP/1.1 exchange over TLS: the answer's text (the gateway closes it, or we stop after 3 s). */
function raw(servername: string, request: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ host: "127.0.0.1", port: HTTPS_PORT, servername, ca, ALPNProtocols: ["http/1.1"] }, () => socket.write(request));
    let answer = "";
    const done = () => {
      clearTimeout(timer);
      socket.destroy();
      resolve(answer);
    };
    const timer = setTimeout(done, 3000);
    socket.setEncoding("utf8").on("data", (d: string) => {
      answer += d;
      if (/\r\n\r\n[^]*<\/html>|\r\n\r\n\{[^]*\}$/.test(answer)) done();
    });
    socket.on("close", done).on("error", (err) => (answer ? done() : reject(err)));
  });
}

describe("a client cannot lie to a guest about the host or its own address", () => {
  test("a Host with several values, or two Host fields, is refused with 400 and reaches no guest", async () => {
    const [a, b] = await Promise.all([pool.create({ ingressPorts: [3000] }), pool.create({ ingressPorts: [3000] })]);
    await Promise.all([startGuestServer(a, 3000), startGuestServer(b, 3000)]);
    const hostA = new URL((await a.listener(3000).wait({ timeout: 60 })).endpoint.url).hostname;
    const hostB = new URL((await b.listener(3000).wait({ timeout: 60 })).endpoint.url).hostname;
    // `Host: a, b` (with or without the space) used to reach b's guest with a Host naming both
    const commas = [
      `GET /headers?comma HTTP/1.1\r\nHost: ${hostA}, ${hostB}\r\nAccept: application/json\r\n\r\n`,
      `GET /headers?tight HTTP/1.1\r\nHost: ${hostA},${hostB}\r\nAccept: application/json\r\n\r\n`,
      `GET /headers?html HTTP/1.1\r\nHost: ${hostB}, ${hostA}\r\n\r\n`,
    ];
    for (const request of commas) {
      const answer = await raw(hostA, request);
      assert.match(answer, /^HTTP\/1\.1 400 /, answer);
      assert.match(answer, /\r\nx-sail-error: SAIL_HOST_AMBIGUOUS\r\n/i, answer);
    }
    assert.match(await raw(hostA, commas[0]!), /"code":"SAIL_HOST_AMBIGUOUS"/);
    assert.match(await raw(hostA, commas[2]!), /<html>[^]*several hosts/);
    // two Host fields: HAProxy's parser refuses them itself (its own 400 page)
    assert.match(await raw(hostA, `GET /headers?twice HTTP/1.1\r\nHost: ${hostA}\r\nHost: ${hostB}\r\n\r\n`), /^HTTP\/1\.1 400 /);
    for (const sb of [a, b]) {
      const seen = (await sb.exec("cat /tmp/requests.log 2>/dev/null || true").output()).stdout;
      assert.doesNotMatch(seen, /comma|tight|twice|html/, `${sb.id} saw an ambiguous request:\n${seen}`);
    }
  });

  test("client-IP headers and their underscore twins never reach the guest; X-Forwarded-For is the gateway's", async () => {
    const sb = await pool.create({ ingressPorts: [3000] });
    await startGuestServer(sb, 3000);
    const url = (await sb.listener(3000).wait({ timeout: 60 })).endpoint.url;
    const spoofed = {
      "x-real-ip": "6.6.6.6",
      "true-client-ip": "6.6.6.6",
      "x-client-ip": "6.6.6.6",
      "x-cluster-client-ip": "6.6.6.6",
      "cf-connecting-ip": "6.6.6.6",
      x_forwarded_for: "6.6.6.6",
      x_real_ip: "6.6.6.6",
      "x-custom": "kept",
    };
    const res = await fetch(`${url}/headers`, { dispatcher: gatewayAgent(ca), headers: spoofed });
    const seen = (await res.json()) as Record<string, string>;
    assert.equal(seen["x-custom"], "kept", "other fields pass");
    assert.equal(seen["x-forwarded-for"], "127.0.0.1");
    for (const name of Object.keys(spoofed).filter((n) => n !== "x-custom")) assert.equal(seen[name], undefined, `${name} reached the guest`);
    assert.doesNotMatch(JSON.stringify(seen), /6\.6\.6\.6/);
  });

  test("a console session cannot mint an API token that would outlive it", async () => {
    const { apiUrl, token } = daemon.credentials();
    const link = await (await fetch(`${apiUrl}/v1/console/login-links`, { method: "POST", headers: { authorization: `Bearer ${token}`, "content-type": "application/json" }, body: "{}" })).json();
    const login = await fetch(`${apiUrl}${(link as { path: string }).path}`, { redirect: "manual" });
    const cookie = login.headers.get("set-cookie")!.split(";")[0]!;
    const asSession = { cookie, origin: apiUrl, "content-type": "application/json" };
    const before = await (await fetch(`${apiUrl}/v1/tokens`, { headers: { cookie } })).json();
    const minted = await fetch(`${apiUrl}/v1/tokens`, { method: "POST", headers: asSession, body: JSON.stringify({ label: "stolen session" }) });
    assert.equal(minted.status, 403);
    const body = (await minted.json()) as { error: { code: string; message: string } };
    assert.equal(body.error.code, "SAIL_SESSION_FORBIDDEN");
    assert.match(body.error.message, /sail token create/);
    assert.deepEqual(await (await fetch(`${apiUrl}/v1/tokens`, { headers: { cookie } })).json(), before, "no token was made");
    // the session still works for what it may do
    assert.equal((await fetch(`${apiUrl}/v1/sailboxes`, { headers: { cookie } })).status, 200);
  });
});
