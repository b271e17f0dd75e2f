/**
 * The console's tests and `npm run screenshots` drive Debian's Chromium with playwright-core
 * (no browser download: the executable is the system's). One browser per file; a context per test.
 */
import { chromium, type Browser, type BrowserContext, type Page } from "playwright-core";
import { runCli, type TestDaemon } from "./harness.js";

export const CHROMIUM = process.env.SAIL_TEST_CHROMIUM ?? "/usr/bin/chromium";

/** Waits in the browser end on what appears, not on a clock; this only turns a hang into a failure. */
const STUCK_MS = 180_000;

export function launchBrowser(): Promise<Browser> {
  // root (CI runs as root) cannot use Chromium's setuid sandbox; the pages are our own console and test boxes
  return chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
}

/** What `sail console --json` prints: a single-use login link. */
export async function loginLink(daemon: TestDaemon): Promise<string> {
  const result = await runCli(daemon, ["console", "--json"]);
  if (result.code !== 0) throw new Error(`sail console failed: ${result.stderr}`);
  return (JSON.parse(result.stdout) as { url: string }).url;
}

/** A fresh browser profile (no cookies) that records every Content-Security-Policy violation its pages report. */
export async function newProfile(browser: Browser): Promise<{ context: BrowserContext; cspViolations: string[] }> {
  // box URLs are served with the local CA's certificate, which this fresh profile does not trust
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1200, height: 860 } });
  context.setDefaultTimeout(STUCK_MS);
  const cspViolations: string[] = [];
  // the page's own report (securitypolicyviolation) and Chromium's console line, whichever comes
  await context.exposeBinding("__sailCspViolation", (_source, text: string) => void cspViolations.push(text));
  await context.addInitScript(() =>
    document.addEventListener("securitypolicyviolation", (e) => (window as unknown as { __sailCspViolation(text: string): void }).__sailCspViolation(`${e.violatedDirective} blocked ${e.blockedURI}`)),
  );
  context.on("console", (message) => {
    if (/Content Security Policy/i.test(message.text())) cspViolations.push(message.text());
  });
  return { context, cspViolations };
}

/** A fresh profile logged in through a link from `sail console`. */
export async function openConsole(browser: Browser, daemon: TestDaemon): Promise<{ context: BrowserContext; page: Page; cspViolations: string[] }> {
  const { context, cspViolations } = await newProfile(browser);
  const page = await context.newPage();
  await page.goto(await loginLink(daemon));
  return { context, page, cspViolations };
}

/** Type a line into the box page's terminal (xterm.js reads keys from its hidden textarea). */
export async function typeInTerminal(page: Page, line: string): Promise<void> {
  await page.locator("[data-testid=terminal] .xterm-helper-textarea").focus();
  await page.keyboard.type(line);
  await page.keyboard.press("Enter");
}

/** Wait until a row of the terminal's screen matches. */
export async function terminalShows(page: Page, row: RegExp): Promise<void> {
  await page.locator("[data-testid=terminal] .xterm-rows > div", { hasText: row }).first().waitFor();
}
