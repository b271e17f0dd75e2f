/**
 * `npm run screenshots`: the console's main pages as PNGs in docs/ (the README shows them),
 * taken in Debian's Chromium from a real daemon with real boxes, the way a new user gets there:
 * a box with a published port, a terminal in it that starts a server, its URL opened, traffic.
 * Uses the e2e harness's daemon (SAIL_TEST_* picks its data dir and ports) and ends every box it made.
 */
import { join } from "node:path";
import { setTimeout as delay } from "node:timers/promises";
import { fetch } from "undici";
import { IngressPort } from "@sail/sdk";
import { launchBrowser, openConsole, terminalShows, typeInTerminal } from "../test/e2e/console-browser.js";
import { BoxPool, gatewayAgent, REPO, TestDaemon, terminateLeftovers } from "../test/e2e/harness.js";

const DOCS = join(REPO, "docs");
const daemon = new TestDaemon();
const pool = new BoxPool(daemon);

async function main(): Promise<void> {
  await daemon.start();
  await terminateLeftovers(daemon);
  const browser = await launchBrowser();
  try {
    const demo = await pool.app("demo");
    const web = await pool.create({ app: demo, name: "web-demo", ingressPorts: [3000], cpu: 1, memory: 512 });
    await pool.create({ app: demo, name: "db", ingressPorts: [new IngressPort(5432, "tcp", { cidrAllowlist: ["203.0.113.0/24"] })], cpu: 2, memory: 2048 });
    const worker = await pool.create({ app: await pool.app("jobs"), name: "nightly-report", cpu: 0.5, memory: 256 });
    await worker.exec("echo 'report: 1,204 rows'; sleep 86400", { background: true }).wait();
    await worker.sleep();

    const { page } = await openConsole(browser, daemon);
    await page.setViewportSize({ width: 1280, height: 560 });
    await page.locator(`tr[data-box="${worker.id}"] .status-sleeping`).waitFor();
    await page.screenshot({ path: join(DOCS, "console-boxes.png") });

    await page.goto(`${daemon.credentials().apiUrl}/console/#/new`);
    await page.locator("input[name=name]").fill("web-demo");
    await page.locator("input[name=app]").fill("demo");
    await page.locator("input[name=http]").fill("3000");
    await page.setViewportSize({ width: 1280, height: 720 });
    await page.screenshot({ path: join(DOCS, "console-new-box.png") });

    // the box page: a terminal that starts a server, its URL opened, then some traffic to chart
    await page.setViewportSize({ width: 1280, height: 900 });
    await page.goto(`${daemon.credentials().apiUrl}/console/#/boxes/${web.id}`);
    await page.getByRole("button", { name: "Open terminal" }).click();
    await terminalShows(page, /root@web-demo:~#/);
    await typeInTerminal(page, "mkdir -p /srv/app && cd /srv/app && echo '<h1>hello from web-demo</h1>' > index.html");
    await typeInTerminal(page, "python3 -m http.server 3000 > /tmp/http.log 2>&1 &");
    const listener = await web.listener(3000).wait({ timeout: 120 });
    const [site] = await Promise.all([page.context().waitForEvent("page"), page.getByTestId("url-3000").click()]);
    await site.waitForLoadState();
    await site.close();
    const agent = gatewayAgent(await daemon.caCert());
    for (let i = 0; i < 24; i++) {
      await Promise.all(Array.from({ length: 2 + (i % 5) * 3 }, () => fetch(`${listener.endpoint.url}/`, { dispatcher: agent }).then((r) => r.text())));
      await delay(500);
    }
    await agent.close();
    await page.getByTestId("terminal").click();
    await typeInTerminal(page, "ss -ltn; tail -n 3 /tmp/http.log");
    await terminalShows(page, /GET \/ HTTP\/1\.1" 200/);
    await page.screenshot({ path: join(DOCS, "console-terminal.png"), fullPage: true });
    console.log("wrote docs/console-boxes.png, docs/console-new-box.png, docs/console-terminal.png");
  } finally {
    await browser.close();
    await pool.terminateAll();
    await daemon.dispose();
  }
}

await main();
