/**
 * Every host command the runtime runs is bounded: real processes (sh, sleep) past their
 * deadline, or stopped by their caller, are killed with the helpers they started.
 */
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { CommandStoppedError, deadlineOf, mustRun, runCommand, runWithStdio } from "../../packages/server/src/runtime/commands.js";

const dir = mkdtempSync(join(tmpdir(), "sail-commands-"));
after(() => rmSync(dir, { recursive: true, force: true }));

/** Whether a process is still alive (a zombie waiting for its reaper counts as gone). */
function alive(pid: number): boolean {
  if (!existsSync(`/proc/${pid}/stat`)) return false;
  try {
    return readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]?.[0] !== "Z";
  } catch {
    return false;
  }
}

async function eventually(check: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (check()) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  assert.fail(`never: ${what}`);
}

/** A shell that starts a helper (sleep), writes the helper's pid down, and waits for it. */
function shellWithHelper(pidFile: string): [string, string[]] {
  return ["sh", ["-c", `sleep 30 & echo $! > ${pidFile}; wait`]];
}

describe("host commands have deadlines", () => {
  test("a command past its deadline is killed, helpers included, and the error names the command and the deadline", async () => {
    const pidFile = join(dir, "deadline.pid");
    const [file, args] = shellWithHelper(pidFile);
    const started = Date.now();
    const error = await runCommand(file, args, { timeoutMs: 300 }).then(
      () => undefined,
      (err: unknown) => err,
    );
    assert.ok(error instanceof CommandStoppedError, `expected CommandStoppedError, got ${String(error)}`);
    assert.equal(error.why, "deadline");
    assert.equal(error.timeoutMs, 300);
    assert.match(error.message, /`sh -c sleep 30 &.*` did not finish within its deadline of 300 ms: killed/);
    const helper = Number(readFileSync(pidFile, "utf8"));
    await eventually(() => !alive(helper), `the helper sleep ${helper} is gone`);
    console.log(`killed after ${Date.now() - started} ms (deadline 300 ms)`);
  });

  test("a caller's AbortSignal stops a command the same way, and says why", async () => {
    const pidFile = join(dir, "abort.pid");
    const [file, args] = shellWithHelper(pidFile);
    const controller = new AbortController();
    const running = runCommand(file, args, { signal: controller.signal });
    await eventually(() => existsSync(pidFile) && readFileSync(pidFile, "utf8").trim() !== "", "the helper started");
    controller.abort(new Error("sailbox sb-x: sleep passed its deadline"));
    const error = await running.then(
      () => undefined,
      (err: unknown) => err,
    );
    assert.ok(error instanceof CommandStoppedError);
    assert.equal(error.why, "aborted");
    assert.match(error.message, /was stopped and killed: sailbox sb-x: sleep passed its deadline/);
    const helper = Number(readFileSync(pidFile, "utf8"));
    await eventually(() => !alive(helper), `the helper sleep ${helper} is gone`);
  });

  test("an already aborted signal never lets the command run on", async () => {
    await assert.rejects(runWithStdio("sleep", ["30"], { stdio: "ignore", signal: AbortSignal.abort("too late") }), (err: unknown) => err instanceof CommandStoppedError && err.why === "aborted");
  });

  test("a command that finishes in time is answered as before: output, exit code, and mustRun's error", async () => {
    assert.deepEqual(await runCommand("sh", ["-c", "echo out; echo err >&2; exit 3"], { timeoutMs: 5000 }), { code: 3, stdout: "out\n", stderr: "err\n" });
    assert.equal(await mustRun("cat", [], { input: "in" }), "in");
    await assert.rejects(mustRun("sh", ["-c", "echo nope >&2; exit 1"]), /exited 1: nope/);
  });

  test("each kind of command has its default deadline", () => {
    assert.equal(deadlineOf("ip"), 5_000);
    assert.equal(deadlineOf("/usr/sbin/nft"), 5_000);
    assert.equal(deadlineOf("conntrack"), 5_000);
    assert.equal(deadlineOf("mount"), 10_000);
    assert.equal(deadlineOf("crun"), 10_000);
    assert.equal(deadlineOf("anything-else"), 60_000);
  });
});
