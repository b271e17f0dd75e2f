import assert from "node:assert/strict";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { test } from "node:test";

const root = new URL("../../packages", import.meta.url).pathname;

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((entry) => {
    const path = join(dir, entry);
    if (statSync(path).isDirectory()) return entry === "dist" || entry === "node_modules" ? [] : sources(path);
    return path.endsWith(".ts") ? [path] : [];
  });
}

function imports(file: string): string[] {
  return [...readFileSync(file, "utf8").matchAll(/(?:from|import\()\s*["']([^"']+)["']/g)].map((m) => m[1]!);
}

/** Imports go one way (STYLE.md): protocol ← sdk ← cli; server rooms through interfaces; nobody imports daemon.ts. */
const RULES: Array<[string, RegExp, string]> = [
  ["protocol/", /^(?!\.|node:)/, "protocol depends on nothing"],
  ["sdk/", /^(@sail\/server|@sail\/cli|better-sqlite3)/, "the SDK never imports the server"],
  ["server/src/store/", /\.\.\/(boxes|api|runtime|gateway)\//, "the store holds no business rules"],
  ["server/src/runtime/", /\.\.\/(boxes|api|store|gateway)\//, "the runtime knows nothing of orgs or listeners"],
  ["server/src/boxes/", /\.\.\/(api|gateway)\/|runtime\/local-runtime|node:child_process|node:net/, "boxes use interfaces, no shells or sockets"],
  ["server/src/api/", /\.\.\/(store|runtime)\/(?!store\.js)/, "the API goes through boxes"],
  ["", /daemon(\.js)?$/, "nothing imports daemon.ts"],
];

test("imports go one way between the rooms", () => {
  const violations: string[] = [];
  for (const file of sources(root)) {
    const rel = relative(root, file);
    for (const [prefix, forbidden, why] of RULES) {
      if (!rel.startsWith(prefix) || rel.endsWith("daemon.ts")) continue;
      for (const spec of imports(file)) if (forbidden.test(spec)) violations.push(`${rel} imports ${spec}: ${why}`);
    }
  }
  assert.deepEqual(violations, []);
});
