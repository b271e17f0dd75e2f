/** The documents say what the code does: the lifecycle table and the error catalogue. */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { ERROR_CODES, SAILBOX_TRANSITIONS, statusOf, type ErrorCode } from "@sail/protocol";

const doc = (name: string) => readFileSync(new URL(`../../docs/${name}`, import.meta.url), "utf8");

test("docs/architecture.md shows the lifecycle table @sail/protocol enforces", () => {
  const rows = new Map([...doc("architecture.md").matchAll(/^\| (creating|running|sleeping|paused|terminated|failed) \| (.+) \|$/gm)].map((m) => [m[1], m[2] === "—" ? [] : m[2]!.split(", ")]));
  assert.deepEqual(Object.fromEntries(rows), SAILBOX_TRANSITIONS);
});

test("docs/api.md lists every error code, with the status it is answered with", () => {
  const api = doc("api.md");
  for (const code of Object.keys(ERROR_CODES) as ErrorCode[]) {
    const row = api.split("\n").find((line) => line.startsWith("|") && line.includes(`\`${code}\``));
    assert.ok(row, `${code} is not in docs/api.md's error table`);
    for (const status of new Set([statusOf(code, "api"), statusOf(code, "gateway")])) assert.match(row!, new RegExp(`\\b${status}\\b`), `${code}: status ${status}`);
  }
});
