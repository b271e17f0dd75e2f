/**
 * The Python SDK against a real daemon: pytest (Debian's python3-pytest) runs
 * sdks/python/tests, the product page's code blocks among them, with SAIL_CONFIG pointing
 * at this file's daemon. Its summary is printed for CI; a failure names the pytest tests.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { join } from "node:path";
import { describe, test } from "node:test";
import { forgetPackageImages, REPO, useTestDaemon } from "./harness.js";

/** Debian's interpreter: python3-pytest and python3-websocket are installed for it. */
const PYTHON = process.env.SAIL_TEST_PYTHON ?? "/usr/bin/python3";

describe("the Python SDK", () => {
  // sdks/python/tests/test_progress.py needs these images to be built by its creates
  const { daemon } = useTestDaemon({ setup: () => forgetPackageImages([["bc"], ["pv"]]) });

  test("pytest passes sdks/python/tests (the product page run as printed, on arm64 under emulation)", async (t) => {
    const { code, output } = await new Promise<{ code: number | null; output: string }>((resolve, reject) => {
      const child = spawn(PYTHON, ["-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider", join(REPO, "sdks/python/tests")], {
        cwd: join(REPO, "sdks/python"),
        env: { ...daemon.env, PYTHONPATH: join(REPO, "sdks/python"), PYTHONDONTWRITEBYTECODE: "1" },
        stdio: ["ignore", "pipe", "pipe"],
      });
      let output = "";
      child.stdout.on("data", (d) => (output += d));
      child.stderr.on("data", (d) => (output += d));
      child.on("error", reject);
      child.on("close", (exit) => resolve({ code: exit, output }));
    });
    const summary = output.trim().split("\n").slice(-1)[0] ?? "";
    t.diagnostic(`pytest: ${summary}`);
    assert.equal(code, 0, `pytest failed:\n${output}`);
    assert.match(summary, /passed/);
    assert.doesNotMatch(summary, /skipped/, "no Python test may be skipped when a daemon is there");
  });
});
