import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { fetch as undiciFetch } from "undici";
import WebSocket from "ws";
import type { SailboxTraffic } from "@sail/protocol";
import { App, IngressPort, Sailbox } from "@sail/sdk";
import { launchBrowser, loginLink, newProfile, openConsole, terminalShows, typeInTerminal } from "./console-browser.js";
import { eventually, gatewayAgent, runCli, sshOptions, startGuestServer, useTestDaemon, type TestDaemon } from "./harness.js";

/** Boxes made through the console's form are not the pool's: this app holds them, and teardown ends them. */
const CONSOLE_APP = "console-e2e";

let browser: Browser | undefined;
const { daemon, pool } = useTestDaemon({
  setup: async () => {
    browser = await launchBrowser();
  },
  teardown: async () => {
    await browser?.close();
    await terminateConsoleBoxes(daemon);
  },
});

async function terminateConsoleBoxes(daemon: TestDaemon): Promise<void> {
  const client = daemon.client();
  const app = await App.find({ name: CONSOLE_APP, mintIfMissing: true, client });
  for (const sb of await Sailbox.list({ app, client })) {
    const status = sb.describe().status;
    if (status === "terminated" || status === "failed") continue;
    try {
      await sb.terminate();
    } catch (err) {
      console.error(`could not terminate sailbox ${sb.id} made in the console: ${(err as Error).message}`);
    }
  }
}

/** A logged-in console whose profile is closed after the test, with no CSP violation allowed. */
async function loggedIn(t: { after(fn: () => Promise<void>): void }): Promise<{ context: BrowserContext; page: Page }> {
  const { context, page, cspViolations } = await openConsole(browser!, daemon);
  t.after(async () => {
    await context.close();
    assert.deepEqual(cspViolations, [], "the console broke its own Content-Security-Policy");
  });
  return { context, page };
}

const apiUrl = () => daemon.credentials().apiUrl;

async function sessionCookie(context: BrowserContext): Promise<string> {
  const cookie = (await context.cookies(apiUrl())).find((c) => c.name === "sail_session");
  assert.ok(cookie, "no session cookie after login");
  return `${cookie.name}=${cookie.value}`;
}

describe("the web console", () => {
  test("the link `sail console` prints logs a browser in once: an HttpOnly, SameSite=Strict cookie, and no secret left in the address bar", async (t) => {
    const printed = await runCli(daemon, ["console"]);
    assert.equal(printed.code, 0);
    assert.match(printed.stdout, new RegExp(`^Open the Sail console \\(this link works once, until \\S+\\):\n\n  ${apiUrl()}/console/login\\?token=[A-Za-z0-9_-]{43}\n`));
    const link = await loginLink(daemon);
    assert.match(link, new RegExp(`^${apiUrl()}/console/login\\?token=[A-Za-z0-9_-]{43}$`));
    const { context, cspViolations } = await newProfile(browser!);
    t.after(() => context.close());
    const page = await context.newPage();
    await page.goto(link);
    assert.equal(page.url(), `${apiUrl()}/console/`);
    await page.getByRole("heading", { name: "Boxes" }).waitFor();
    const [cookie] = await context.cookies(apiUrl());
    assert.equal(cookie?.name, "sail_session");
    assert.equal(cookie?.httpOnly, true);
    assert.equal(cookie?.sameSite, "Strict");
    assert.equal(await page.evaluate(() => document.cookie), "", "the page's script can read the session");
    assert.deepEqual(cspViolations, []);

    // the same link again, in another browser: refused, and no cookie
    const other = await newProfile(browser!);
    t.after(() => other.context.close());
    const again = await other.context.newPage();
    const answer = await again.goto(link);
    assert.equal(answer?.status(), 401);
    assert.equal(answer?.headers()["x-sail-error"], "SAIL_CONSOLE_LINK_INVALID");
    assert.match((await again.textContent("body")) ?? "", /already used, has expired/);
    assert.deepEqual(await other.context.cookies(apiUrl()), []);
  });

  test("the console page sends a strict Content-Security-Policy and the usual hardening headers", async () => {
    const res = await fetch(`${apiUrl()}/console/`);
    assert.equal(res.status, 200);
    const csp = res.headers.get("content-security-policy") ?? "";
    for (const directive of ["default-src 'none'", "script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'", "base-uri 'none'"])
      assert.ok(csp.includes(directive), `CSP lacks ${directive}: ${csp}`);
    assert.doesNotMatch(csp, /script-src[^;]*(unsafe-inline|unsafe-eval|\*)/);
    assert.equal(res.headers.get("x-content-type-options"), "nosniff");
    assert.equal(res.headers.get("x-frame-options"), "DENY");
    // the page is the built one: its scripts are files of its own origin, none inline
    const html = await res.text();
    assert.match(html, /<script type="module" crossorigin src="\/console\/assets\/index-[\w-]+\.js"><\/script>/);
    assert.doesNotMatch(html, /<script(?![^>]*\bsrc=)[^>]*>/);
  });

  test("the policy is enforced and watched: a script injected into the page does not run, and the violation is seen", async () => {
    const { context, page, cspViolations } = await openConsole(browser!, daemon);
    try {
      await page.getByRole("heading", { name: "Boxes" }).waitFor();
      await page.evaluate(() => {
        const script = document.createElement("script");
        script.textContent = "window.__injected = true";
        document.body.append(script);
      });
      await eventually("Chromium reports the blocked inline script", async () => cspViolations.length > 0);
      assert.equal(await page.evaluate(() => (window as unknown as { __injected?: boolean }).__injected), undefined);
      assert.match(cspViolations.join("\n"), /script-src/);
    } finally {
      await context.close();
    }
  });

  test("the console's file server serves its own files only: no way out of its directory, no other methods", async () => {
    // dot segments, encoded or not, are resolved by the URL parser before routing: the request leaves /console/ and meets the API's auth
    for (const path of ["/console/%2e%2e/%2e%2e/package.json", "/console/../../package.json"]) {
      const res = await fetch(`${apiUrl()}${path}`);
      assert.equal(res.status, 401, path);
    }
    // an encoded slash stays inside the name: it is no file of the console's
    for (const path of ["/console/..%2f..%2fpackage.json", "/console/%2e%2e%2fsrc%2fmain.tsx", "/console/assets/%00", "/console/nope.js"]) {
      const res = await fetch(`${apiUrl()}${path}`);
      assert.equal(res.status, 404, path);
      assert.equal(((await res.json()) as { error: { code: string } }).error.code, "SAIL_ROUTE_NOT_FOUND", path);
    }
    assert.equal((await fetch(`${apiUrl()}/console/`, { method: "POST" })).status, 404);
    const root = await fetch(`${apiUrl()}/`, { redirect: "manual" });
    assert.equal(root.status, 303);
    assert.equal(root.headers.get("location"), "/console/");
  });

  test("a request without the session gets 401, and so does one with a made-up session", async () => {
    const bare = await fetch(`${apiUrl()}/v1/sailboxes`);
    assert.equal(bare.status, 401);
    assert.equal(((await bare.json()) as { error: { code: string } }).error.code, "SAIL_AUTH_MISSING");
    const forged = await fetch(`${apiUrl()}/v1/sailboxes`, { headers: { cookie: "sail_session=bm90LWEtc2Vzc2lvbg" } });
    assert.equal(forged.status, 401);
    assert.equal(((await forged.json()) as { error: { code: string } }).error.code, "SAIL_AUTH_INVALID");
  });

  test("a box created from the SDK appears on the boxes page without a reload, and the app filter shows only that app's boxes", async (t) => {
    const { page } = await loggedIn(t);
    await page.getByRole("heading", { name: "Boxes" }).waitFor();
    const app = await pool.app("console-live");
    await pool.app("console-other");
    const sb = await pool.create({ app, name: "appears", ingressPorts: [3000], cpu: 0.5, memory: 256 });
    const row = page.locator(`tr[data-box="${sb.id}"]`);
    await row.waitFor();
    const cells = await row.locator("td").allTextContents();
    assert.match(cells[0]!, /^appears/);
    assert.equal(cells[1], "running");
    assert.equal(cells[2], "console-live");
    assert.match(cells[3]!, /^debian\/(amd64|arm64)$/);
    assert.equal(cells[5], "0.5");
    assert.equal(cells[6], "256 MiB");
    assert.equal(cells[7], "3000/http");

    await page.getByTestId("app-filter").selectOption("console-other");
    await row.waitFor({ state: "detached" });
    assert.match(page.url(), /#\/\?app=console-other$/);
    await page.getByTestId("app-filter").selectOption("console-live");
    await row.waitFor();

    // and a status change made elsewhere shows up by itself too
    await sb.sleep();
    await row.locator(".status-sleeping").waitFor();
  });

  test("a new user's first minutes: create a box with a port in the form, run `echo hi` in its terminal, start a server there and open its URL", async (t) => {
    const { page } = await loggedIn(t);
    await page.getByRole("link", { name: "New box" }).first().click();
    await page.locator("input[name=name]").fill("console-demo");
    await page.locator("input[name=app]").fill(CONSOLE_APP);
    await page.locator("input[name=http]").fill("3000");
    await page.getByRole("button", { name: "Create box" }).click();
    await page.waitForURL(/#\/boxes\/sb-/);
    const id = decodeURIComponent(page.url().split("#/boxes/")[1]!);
    await page.getByTestId("status").filter({ hasText: "running" }).waitFor();

    await page.getByRole("button", { name: "Open terminal" }).click();
    await terminalShows(page, /root@console-demo:~#/);
    await typeInTerminal(page, "echo hi");
    await terminalShows(page, /^hi\s*$/);

    await typeInTerminal(page, "mkdir -p /srv/demo && cd /srv/demo && echo 'hello from the console' > index.html");
    await typeInTerminal(page, "setsid python3 -m http.server 3000 > /tmp/http.log 2>&1 &");
    const sb = await Sailbox.fromId(id, { client: daemon.client() });
    await sb.listener(3000).wait({ timeout: 120 });

    const url = page.getByTestId("url-3000");
    assert.match((await url.textContent()) ?? "", /^https:\/\/3000-[a-z0-9]{12}\.sail\.localhost:\d+$/);
    const [guestPage] = await Promise.all([page.context().waitForEvent("page"), url.click()]);
    await guestPage.waitForLoadState();
    // Chromium abandons a load when the host's network changes under it (ERR_NETWORK_CHANGED: every
    // box started on this host adds a veth pair); a user would reload, and so does the test, for that error only
    for (let reloads = 0; reloads < 3 && ((await guestPage.textContent("body")) ?? "").includes("ERR_NETWORK_CHANGED"); reloads++) await guestPage.reload();
    assert.equal((await guestPage.textContent("body"))?.trim(), "hello from the console");
    await guestPage.close();

    // the traffic panel counts that request from the daemon's own counters
    await page.getByTestId("traffic").locator(".traffic-row", { hasText: "3000/http" }).waitFor();
    // (HAProxy's counters are read every second: look until they moved, with the page's own session)
    await eventually("the traffic of port 3000 counts the request", async () => {
      const traffic = (await page.evaluate(async (boxId) => (await fetch(`/v1/sailboxes/${boxId}/traffic`)).json(), id)) as SailboxTraffic;
      const listener = traffic.listeners.find((l) => l.port === 3000);
      return listener !== undefined && listener.requests >= 1 && listener.bytesOut > 0;
    });
  });

  test("the traffic panel counts what the gateway did: the request that woke a box, the wake, and refusals while paused", async (t) => {
    const { page } = await loggedIn(t);
    const sb = await pool.create({ name: "traffic", ingressPorts: [3000] });
    await startGuestServer(sb, 3000);
    const url = (await sb.listener(3000).wait({ timeout: 60 })).endpoint.url;
    const agent = gatewayAgent(await daemon.caCert());
    t.after(() => agent.close());
    await sb.sleep();
    assert.equal((await undiciFetch(`${url}/headers`, { dispatcher: agent })).status, 200); // held, woken, served
    await sb.pause();
    assert.equal((await undiciFetch(`${url}/`, { dispatcher: agent })).status, 503);

    await page.goto(`${apiUrl()}/console/#/boxes/${sb.id}`);
    const panel = page.getByTestId("traffic");
    await panel.locator("header", { hasText: "wakes from sleep: 1" }).waitFor();
    await panel.locator(".traffic-row", { hasText: "3000/http" }).locator(".refusals", { hasText: "SAIL_SAILBOX_PAUSED ×1" }).waitFor();
    const traffic = (await page.evaluate(async (id) => (await fetch(`/v1/sailboxes/${id}/traffic`)).json(), sb.id)) as SailboxTraffic;
    assert.equal(traffic.wakes, 1);
    assert.deepEqual(traffic.listeners[0]!.refusals, { SAIL_SAILBOX_PAUSED: 1 });
    assert.ok(traffic.listeners[0]!.requests >= 1, "the request that woke the box is counted");
  });

  test("the terminal follows the size of its panel: stty in the box sees the new size", async (t) => {
    const { page } = await loggedIn(t);
    const sb = await pool.create({ name: "term-size" });
    await page.goto(`${apiUrl()}/console/#/boxes/${sb.id}`);
    await page.getByRole("button", { name: "Open terminal" }).click();
    await terminalShows(page, /root@term-size:~#/);
    const size = async () => {
      await typeInTerminal(page, "clear; echo size=$(stty size | tr ' ' x)");
      await terminalShows(page, /^size=\d+x\d+\s*$/);
      return (await page
        .locator("[data-testid=terminal] .xterm-rows > div", { hasText: /^size=/ })
        .last()
        .textContent())!.trim();
    };
    const wide = await size();
    await page.setViewportSize({ width: 800, height: 860 });
    let narrow = wide;
    await eventually("the box sees fewer columns", async () => (narrow = await size()) !== wide);
    const cols = (text: string) => Number(text.split("x")[1]);
    assert.ok(cols(narrow) < cols(wide), `${narrow} after ${wide}`);
  });

  test("the form publishes TCP ports with an allowlist and an SSH key: the box page shows the psql and ssh lines", async (t) => {
    const { page } = await loggedIn(t);
    const keyDir = mkdtempSync(join(tmpdir(), "sail-console-key-"));
    t.after(() => rmSync(keyDir, { recursive: true, force: true }));
    execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "console-test", "-f", join(keyDir, "id")]);
    await page.goto(`${apiUrl()}/console/#/new`);
    await page.locator("input[name=name]").fill("form-tcp");
    await page.locator("input[name=app]").fill(CONSOLE_APP);
    await page.locator("input[name=tcp]").fill("5432");
    await page.locator("input[name=allow]").fill("203.0.113.0/24, 198.51.100.7");
    await page.locator("textarea[name=sshKey]").fill(readFileSync(join(keyDir, "id.pub"), "utf8"));
    await page.getByRole("button", { name: "Create box" }).click();
    await page.waitForURL(/#\/boxes\/sb-/);
    const sb = await Sailbox.fromId(decodeURIComponent(page.url().split("#/boxes/")[1]!), { client: daemon.client() });
    const ssh = sb.listener(22).endpoint as { host: string; port: number };
    const postgres = sb.listener(5432).endpoint as { host: string; port: number };
    const line = (port: number) => page.locator(".listeners li", { hasText: `${port}/tcp` });
    await line(22).waitFor();
    assert.equal(await line(22).getByTestId("copy-line").textContent(), `ssh -p ${ssh.port} root@${ssh.host}`);
    assert.equal(await line(5432).getByTestId("copy-line").textContent(), `psql -h ${postgres.host} -p ${postgres.port} -U postgres`);
    assert.match((await line(5432).textContent()) ?? "", /from 203\.0\.113\.0\/24, 198\.51\.100\.7\/32/);
    // and the key works: ssh with it runs a command in the box
    await sb.listener(22).wait({ timeout: 60 });
    const out = execFileSync("ssh", [...sshOptions(join(keyDir, "id")), "-p", String(ssh.port), "root@127.0.0.1", "hostname"], { encoding: "utf8" });
    assert.equal(out.trim(), "form-tcp");
  });

  test("sleep, resume and terminate from the box page, each behind a confirmation where it loses something", async (t) => {
    const { page } = await loggedIn(t);
    const sb = await pool.create({ name: "buttons", ingressPorts: [3000] });
    await startGuestServer(sb, 3000);
    await page.goto(`${apiUrl()}/console/#/boxes/${sb.id}`);
    const status = page.getByTestId("status");
    await status.filter({ hasText: "running" }).waitFor();

    await page.getByRole("button", { name: "Sleep", exact: true }).click();
    await page.getByRole("alertdialog").getByRole("button", { name: "Cancel" }).click();
    assert.equal(await sb.status(), "running");
    await page.getByRole("button", { name: "Sleep", exact: true }).click();
    await page.getByRole("button", { name: "Yes, sleep buttons" }).click();
    await status.filter({ hasText: "sleeping" }).waitFor();
    assert.equal(await sb.status(), "sleeping");

    await page.getByRole("button", { name: "Resume" }).click();
    await status.filter({ hasText: "running" }).waitFor();
    assert.equal(await sb.status(), "running");

    await page.getByRole("button", { name: "Terminate" }).click();
    await page.getByRole("button", { name: "Yes, terminate buttons" }).click();
    await page.waitForURL(/#\/$/);
    await page.getByRole("heading", { name: "Boxes" }).waitFor();
    assert.equal(await sb.status(), "terminated");
    assert.equal(await page.locator(`tr[data-box="${sb.id}"]`).count(), 0);
  });

  test("a TCP listener shows the line to paste (psql for 5432) and who may connect", async (t) => {
    const { page } = await loggedIn(t);
    const sb = await pool.create({ name: "tcp-lines", ingressPorts: [new IngressPort(5432, "tcp", { cidrAllowlist: ["203.0.113.0/24"] }), new IngressPort(2222, "tcp")] });
    const postgres = sb.listener(5432).endpoint as { host: string; port: number };
    const other = sb.listener(2222).endpoint as { host: string; port: number };
    await page.goto(`${apiUrl()}/console/#/boxes/${sb.id}`);
    const line = (port: number) => page.locator(".listeners li", { hasText: `${port}/tcp` });
    await line(5432).waitFor();
    assert.equal(await line(5432).getByTestId("copy-line").textContent(), `psql -h ${postgres.host} -p ${postgres.port} -U postgres`);
    assert.match((await line(5432).textContent()) ?? "", /from 203\.0\.113\.0\/24/);
    assert.equal(await line(2222).getByTestId("copy-line").textContent(), `nc ${other.host} ${other.port}`);
    assert.match((await line(2222).textContent()) ?? "", /from anywhere/);
  });

  test("a background exec's log shows on the box page", async (t) => {
    const { page } = await loggedIn(t);
    const sb = await pool.create({ name: "logs" });
    await sb.exec("for i in 1 2 3; do echo line $i; done; sleep 600", { background: true }).wait();
    await page.goto(`${apiUrl()}/console/#/boxes/${sb.id}`);
    await page.getByRole("button", { name: /for i in 1 2 3/ }).click();
    await page.locator("pre.log", { hasText: "line 3" }).waitFor();
  });

  test("the form refuses with the same code and message as the CLI", async (t) => {
    const { page } = await loggedIn(t);
    await page.goto(`${apiUrl()}/console/#/new`);
    await page.locator("input[name=app]").fill(CONSOLE_APP);
    await page.locator("input[name=http]").fill("10000");
    await page.getByRole("button", { name: "Create box" }).click();
    const shown = (await page.getByRole("alert").textContent()) ?? "";
    const cli = await runCli(daemon, ["box", "create", "--app", CONSOLE_APP, "--port", "10000"]);
    assert.equal(cli.code, 1);
    assert.equal(`sail: ${shown}`, cli.stderr.trim());
    assert.match(shown, /^SAIL_PORT_RESERVED: /);
  });

  test("with the session cookie, a change from another origin is refused (CSRF): 403 SAIL_ORIGIN_FORBIDDEN, and nothing changes", async (t) => {
    const { context, page } = await loggedIn(t);
    await page.getByRole("heading", { name: "Boxes" }).waitFor();
    const cookie = await sessionCookie(context);
    const sb = await pool.create({ name: "csrf" });
    for (const origin of ["http://evil.example", "null", undefined]) {
      const res = await fetch(`${apiUrl()}/v1/sailboxes/${sb.id}/sleep`, {
        method: "POST",
        headers: { cookie, "content-type": "application/json", ...(origin ? { origin } : {}) },
        body: "{}",
      });
      assert.equal(res.status, 403, `Origin ${origin}`);
      assert.equal(((await res.json()) as { error: { code: string } }).error.code, "SAIL_ORIGIN_FORBIDDEN");
    }
    assert.equal(await sb.status(), "running");
    // reading needs no Origin (SameSite=Strict keeps the cookie off other sites' requests)
    assert.equal((await fetch(`${apiUrl()}/v1/sailboxes/${sb.id}`, { headers: { cookie } })).status, 200);
    // the console's own origin may
    const own = await fetch(`${apiUrl()}/v1/sailboxes/${sb.id}/sleep`, { method: "POST", headers: { cookie, origin: apiUrl(), "content-type": "application/json" }, body: "{}" });
    assert.equal(own.status, 200);
  });

  test("a terminal's WebSocket with the session cookie from another origin is refused before the upgrade (cross-site WebSocket hijacking)", async (t) => {
    const { context, page } = await loggedIn(t);
    await page.getByRole("heading", { name: "Boxes" }).waitFor();
    const cookie = await sessionCookie(context);
    const sb = await pool.create({ name: "cswsh" });
    const url = `${apiUrl().replace("http", "ws")}/v1/sailboxes/${sb.id}/pty?cols=80&rows=24&cmd=true`;
    const refused = await upgradeStatus(url, { cookie, origin: "http://evil.example" });
    assert.deepEqual(refused, { status: 403, code: "SAIL_ORIGIN_FORBIDDEN" });
    assert.deepEqual(await upgradeStatus(url, { origin: apiUrl() }), { status: 401, code: "SAIL_AUTH_MISSING" });
    assert.deepEqual(await upgradeStatus(url, { cookie, origin: apiUrl() }), { status: 101 });
  });

  test("logging out ends the session: the page says so and its cookie no longer works", async (t) => {
    const { context, page } = await loggedIn(t);
    await page.getByRole("heading", { name: "Boxes" }).waitFor();
    const cookie = await sessionCookie(context);
    await page.getByRole("button", { name: "Log out" }).click();
    await page.getByRole("heading", { name: "Not logged in" }).waitFor();
    const res = await fetch(`${apiUrl()}/v1/sailboxes`, { headers: { cookie } });
    assert.equal(res.status, 401);
  });
});

/** The answer to a WebSocket upgrade: 101, or the refusal's status and error code. */
function upgradeStatus(url: string, headers: Record<string, string>): Promise<{ status: number; code?: string }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers });
    ws.on("upgrade", () => {
      resolve({ status: 101 });
      ws.close();
    });
    ws.on("unexpected-response", (_req, res) => {
      let body = "";
      res.setEncoding("utf8").on("data", (d: string) => (body += d));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, code: (JSON.parse(body) as { error: { code: string } }).error.code }));
    });
    ws.on("error", (err) => (err.message.includes("Unexpected server response") ? undefined : reject(err)));
  });
}
