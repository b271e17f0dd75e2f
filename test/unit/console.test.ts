/** The console's server-side rules in-process: login links, sessions, Origin checks, and the traffic ledger. */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import type { IncomingMessage } from "node:http";
import { describe, test } from "node:test";
import { parsePtyQuery, type ListenerInfo } from "@sail/protocol";
import { ConsoleSessions, LOGIN_LINK_TTL_MS, SESSION_TTL_MS } from "../../packages/server/src/api/console-sessions.js";
import { TrafficLedger } from "../../packages/server/src/gateway/traffic-ledger.js";

const TOKEN = "sail_test_token";
const ORG = { id: "org-1", name: "default", operator: true };
const sha256 = (text: string) => createHash("sha256").update(text).digest("hex");

function sessions() {
  const clock = { now: 1_000_000 };
  const live = new Set([sha256(TOKEN)]);
  const console = new ConsoleSessions(
    async (hash) => (live.has(hash) ? ORG : undefined),
    "sail.localhost",
    () => clock.now,
  );
  return { console, clock, revoke: () => live.clear() };
}

function request(headers: Record<string, string>, encrypted = false): IncomingMessage {
  return { headers, socket: { encrypted } } as unknown as IncomingMessage;
}

const own = { host: "127.0.0.1:7070", origin: "http://127.0.0.1:7070" };

describe("console login links and sessions", () => {
  test("a login link is redeemed once: the second use is SAIL_CONSOLE_LINK_INVALID", async () => {
    const { console } = sessions();
    const link = console.createLoginLink(TOKEN);
    const session = await console.redeem(link.token);
    assert.equal(await console.authenticate(request({ host: own.host }), session, false), ORG);
    await assert.rejects(console.redeem(link.token), { code: "SAIL_CONSOLE_LINK_INVALID" });
    await assert.rejects(console.redeem("made-up"), { code: "SAIL_CONSOLE_LINK_INVALID" });
  });

  test("entries past their time are dropped by the daemon's clock, not the wall's", async () => {
    const { console, clock } = sessions();
    clock.now = Date.now() - 10 * SESSION_TTL_MS; // by the wall clock, every entry made now would look expired
    const first = await console.redeem(console.createLoginLink(TOKEN).token);
    await console.redeem(console.createLoginLink(TOKEN).token);
    assert.equal(await console.authenticate(request({ host: own.host }), first, false), ORG);
  });

  test("a link past its two minutes is refused", async () => {
    const { console, clock } = sessions();
    const link = console.createLoginLink(TOKEN);
    clock.now += LOGIN_LINK_TTL_MS + 1;
    await assert.rejects(console.redeem(link.token), { code: "SAIL_CONSOLE_LINK_INVALID" });
  });

  test("revoking the token that made the link ends its link and its sessions", async () => {
    const { console, revoke } = sessions();
    const session = await console.redeem(console.createLoginLink(TOKEN).token);
    const unused = console.createLoginLink(TOKEN);
    revoke();
    await assert.rejects(console.authenticate(request({ host: own.host }), session, false), { code: "SAIL_AUTH_INVALID" });
    await assert.rejects(console.redeem(unused.token), { code: "SAIL_CONSOLE_LINK_INVALID" });
  });

  test("a session ends after its lifetime, and at logout", async () => {
    const { console, clock } = sessions();
    const old = await console.redeem(console.createLoginLink(TOKEN).token);
    clock.now += SESSION_TTL_MS + 1;
    await assert.rejects(console.authenticate(request({ host: own.host }), old, false), { code: "SAIL_AUTH_INVALID" });
    const fresh = await console.redeem(console.createLoginLink(TOKEN).token);
    console.logout(fresh);
    await assert.rejects(console.authenticate(request({ host: own.host }), fresh, false), { code: "SAIL_AUTH_INVALID" });
  });

  test("the cookie is HttpOnly and SameSite=Strict, and Secure over HTTPS", () => {
    const { console } = sessions();
    assert.equal(console.cookie("abc", request({})), `sail_session=abc; Path=/; HttpOnly; SameSite=Strict; Max-Age=${SESSION_TTL_MS / 1000}`);
    assert.match(console.cookie("abc", request({}, true)), /; Secure$/);
    assert.match(console.clearingCookie(request({})), /^sail_session=; .*Max-Age=0/);
    assert.equal(console.sessionOf(request({ cookie: "a=1; sail_session=xyz=; b=2" })), "xyz=");
    assert.equal(console.sessionOf(request({ cookie: "a=1" })), undefined);
  });

  test("a change made with the cookie must come from the console's own origin (CSRF); a read need not", async () => {
    const { console } = sessions();
    const session = await console.redeem(console.createLoginLink(TOKEN).token);
    assert.equal(await console.authenticate(request(own), session, true), ORG);
    for (const origin of ["http://evil.example", "http://127.0.0.1:7071", "https://127.0.0.1:7070", "null"]) {
      await assert.rejects(console.authenticate(request({ host: own.host, origin }), session, true), { code: "SAIL_ORIGIN_FORBIDDEN" }, origin);
    }
    await assert.rejects(console.authenticate(request({ host: own.host }), session, true), { code: "SAIL_ORIGIN_FORBIDDEN" });
    assert.equal(await console.authenticate(request({ host: own.host, origin: "http://evil.example" }), session, false), ORG);
  });

  test("the console is never answered under the box domain, whose pages are anyone's", async () => {
    const { console } = sessions();
    const session = await console.redeem(console.createLoginLink(TOKEN).token);
    for (const host of ["sail.localhost:8443", "3000-abc.sail.localhost", "3000-ABC.SAIL.LOCALHOST:7070"]) {
      await assert.rejects(console.authenticate(request({ host, origin: `http://${host}` }), session, false), { code: "SAIL_ORIGIN_FORBIDDEN" }, host);
    }
    assert.doesNotThrow(() => console.checkHost(request({ host: "notsail.localhost:7070" })));
  });
});

describe("the traffic ledger", () => {
  const http: ListenerInfo = { sailboxId: "sb-1", port: 3000, protocol: "http", endpoint: { url: "https://3000-1.sail.localhost", host: "3000-1.sail.localhost", port: 8443 }, h2c: false };
  const tcp = { sailboxId: "sb-1", port: 5432, protocol: "tcp", endpoint: { host: "localhost", port: 20000 }, cidrAllowlist: [], allowPublic: false, proxyProtocol: false } as unknown as ListenerInfo;
  const delta = (over: object) => ({ connections: 0, requests: 0, tunnels: 0, bytesIn: 0, bytesOut: 0, refusals: {}, ...over });

  test("HTTP: HAProxy's totals plus what the slow path counted (waking requests, refusals)", () => {
    const ledger = new TrafficLedger((host) => (host === "3000-1.sail.localhost" ? { open: 2, requests: 10, bytesIn: 100, bytesOut: 200 } : undefined));
    ledger.absorb({ ...delta({}), listeners: { "sb-1:3000": delta({ requests: 1, refusals: { SAIL_SAILBOX_PAUSED: 2 } }) } });
    ledger.absorb({ ...delta({}), listeners: { "sb-1:3000": delta({ refusals: { SAIL_SAILBOX_PAUSED: 1, SAIL_NOTHING_LISTENING: 1 } }) } });
    assert.deepEqual(ledger.forListeners([http]), [
      { port: 3000, protocol: "http", open: 2, requests: 11, bytesIn: 100, bytesOut: 200, refusals: { SAIL_SAILBOX_PAUSED: 3, SAIL_NOTHING_LISTENING: 1 } },
    ]);
  });

  test("TCP: the workers' deltas summed, open connections from every worker's latest report; forget drops a box", () => {
    const ledger = new TrafficLedger(() => undefined);
    ledger.absorb({ ...delta({}), listeners: { "sb-1:5432": delta({ connections: 3, bytesIn: 10, bytesOut: 20, refusals: { cidr: 1 } }) } });
    ledger.absorb({ ...delta({}), listeners: { "sb-1:5432": delta({ connections: 1, bytesIn: 5 }) } });
    ledger.noteTcpActivity("tcp-0", { "sb-1": { open: 1, lastActiveMs: 0 } });
    ledger.noteTcpActivity("tcp-1", { "sb-1": { open: 2, lastActiveMs: 0 } });
    ledger.noteTcpActivity("tcp-0", { "sb-1": { open: 0, lastActiveMs: 0 } });
    assert.deepEqual(ledger.forListeners([tcp]), [{ port: 5432, protocol: "tcp", open: 2, requests: 4, bytesIn: 15, bytesOut: 20, refusals: { cidr: 1 } }]);
    ledger.forget("sb-1");
    assert.deepEqual(ledger.forListeners([tcp])[0]!.requests, 0);
  });
});

describe("the PTY request in the upgrade's query", () => {
  test("defaults to a login shell on 80x24; env pairs are KEY=VALUE", () => {
    assert.deepEqual(parsePtyQuery(new URLSearchParams("")), { cols: 80, rows: 24, cmd: undefined, cwd: undefined, env: undefined });
    assert.deepEqual(parsePtyQuery(new URLSearchParams("cols=120&rows=40&cmd=top&cwd=/srv&env=A=1&env=B=x=y")), { cols: 120, rows: 40, cmd: "top", cwd: "/srv", env: { A: "1", B: "x=y" } });
  });

  test("refuses unknown parameters, sizes out of range and malformed env", () => {
    assert.throws(() => parsePtyQuery(new URLSearchParams("shell=zsh")), { code: "SAIL_UNKNOWN_FIELD" });
    for (const size of ["cols=0", "cols=10001", "rows=-1", "rows=1.5", "cols=abc"]) assert.throws(() => parsePtyQuery(new URLSearchParams(size)), { code: "SAIL_INVALID_ARGUMENT" }, size);
    assert.throws(() => parsePtyQuery(new URLSearchParams("env=NOEQUALS")), { code: "SAIL_EXEC_INVALID" });
    assert.throws(() => parsePtyQuery(new URLSearchParams("cwd=relative")), { code: "SAIL_EXEC_INVALID" });
  });
});
