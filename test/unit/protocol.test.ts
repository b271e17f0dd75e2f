import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  AuthError,
  checkAptPackages,
  checkExec,
  checkName,
  checkResources,
  ConflictError,
  ERROR_CODES,
  errorFromWire,
  InternalError,
  InvalidArgumentError,
  NotFoundError,
  sailError,
  SailError,
  SailboxPausedError,
} from "@sail/protocol";

describe("errors", () => {
  test("every code carries an HTTP status and rebuilds into its class from the wire", () => {
    for (const code of Object.keys(ERROR_CODES) as Array<keyof typeof ERROR_CODES>) {
      const original = sailError(code, `message for ${code}`, { sailboxId: "sb-x", port: 1 });
      assert.equal(original.status, ERROR_CODES[code].status);
      const rebuilt = errorFromWire(JSON.parse(JSON.stringify(original.toWire())), original.status);
      assert.equal(rebuilt.constructor, original.constructor, code);
      assert.equal(rebuilt.code, code);
      assert.equal(rebuilt.message, `message for ${code}`);
      assert.equal(rebuilt.sailboxId, "sb-x");
      assert.ok(rebuilt instanceof SailError);
    }
  });

  test("codes map to the classes users instanceof on", () => {
    assert.ok(sailError("SAIL_NAME_TAKEN", "x") instanceof ConflictError);
    assert.ok(sailError("SAIL_SAILBOX_NOT_FOUND", "x") instanceof NotFoundError);
    assert.ok(sailError("SAIL_AUTH_INVALID", "x") instanceof AuthError);
    assert.ok(sailError("SAIL_SAILBOX_PAUSED", "x") instanceof SailboxPausedError);
    assert.ok(sailError("SAIL_IMAGE_ARCH_UNSUPPORTED", "x") instanceof InvalidArgumentError);
  });

  test("an answer without an error body becomes an InternalError naming the status", () => {
    const err = errorFromWire("<html>", 502);
    assert.ok(err instanceof InternalError);
    assert.match(err.message, /502/);
  });
});

describe("rules", () => {
  test("names are DNS-label-like", () => {
    for (const ok of ["a", "web-demo", "x1", "a".repeat(63)]) assert.equal(checkName("sailbox", ok), ok);
    for (const bad of ["", "-a", "a-", "A", "a_b", "a.b", "a".repeat(64), 7, null]) {
      assert.throws(
        () => checkName("app", bad),
        (e: SailError) => e.code === "SAIL_NAME_INVALID",
      );
    }
  });

  test("resources are bounded by the host's cores and sane memory", () => {
    checkResources(undefined, undefined, 2);
    checkResources(0.5, 256, 2);
    for (const [cpu, mem] of [
      [0, undefined],
      [3, undefined],
      [Number.NaN, undefined],
      [undefined, 63],
      [undefined, 100.5],
      [undefined, "512"],
    ] as const) {
      assert.throws(
        () => checkResources(cpu, mem, 2),
        (e: SailError) => e.code === "SAIL_RESOURCES_INVALID",
      );
    }
  });

  test("exec requests need a command, an absolute cwd and string env", () => {
    checkExec({ cmd: "true", cwd: "/srv", env: { A_1: "x" }, background: true });
    const bad = [
      { cmd: "" },
      { cmd: "a\0b" },
      { cmd: "true", cwd: "relative" },
      { cmd: "true", env: { "1A": "x" } },
      { cmd: "true", env: { A: 1 as unknown as string } },
      { cmd: "true", env: [] as unknown as Record<string, string> },
      { cmd: "true", background: "yes" as unknown as boolean },
      { cmd: "x".repeat(128 * 1024 + 1) },
    ];
    for (const req of bad)
      assert.throws(
        () => checkExec(req),
        (e: SailError) => e.code === "SAIL_EXEC_INVALID",
        JSON.stringify(req).slice(0, 80),
      );
  });
});

describe("apt packages", () => {
  test("Debian package names are accepted, sorted and deduplicated; anything else is refused with its code", () => {
    assert.deepEqual(checkAptPackages(["postgresql", "curl", "postgresql", "libc6-dev", "g++"]), ["curl", "g++", "libc6-dev", "postgresql"]);
    assert.deepEqual(checkAptPackages(undefined), []);
    for (const bad of [["Bad"], ["a"], ["-rf"], ["curl; rm -rf /"], ["$(id)"], [7], "postgresql", Array.from({ length: 65 }, (_, i) => `pkg${i}`)]) {
      assert.throws(
        () => checkAptPackages(bad),
        (e: SailError) => e.code === "SAIL_IMAGE_PACKAGES_INVALID" && /image\.aptPackages/.test(e.message),
        JSON.stringify(bad),
      );
    }
  });
});
