/** The documents say what the code does: the lifecycle table, the error catalogue, and the files they name. */
import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { ERROR_CODES, SAILBOX_TRANSITIONS, statusOf, type ErrorCode } from "@sail/protocol";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const doc = (name: string) => readFileSync(join(ROOT, "docs", name), "utf8");

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

/** What `npm run build` makes (packages/console/dist, native/build): named by the docs, absent from a fresh checkout. */
const BUILD_OUTPUTS = new Set(["dist", "build"]);
const SOURCE_FILE = /\.(ts|tsx|c|mjs|js|py|sh|md)$/;

/** Every file and directory of the repository (no dependencies, no build outputs), as paths from its root. */
function repositoryPaths(dir = ""): string[] {
  return readdirSync(join(ROOT, dir), { withFileTypes: true }).flatMap((entry) => {
    if (entry.name.startsWith(".") || entry.name === "node_modules" || BUILD_OUTPUTS.has(entry.name)) return [];
    const path = dir ? `${dir}/${entry.name}` : entry.name;
    return entry.isDirectory() ? [path, ...repositoryPaths(path)] : [path];
  });
}

/**
 * Where a backticked name in a doc points, or undefined for what is not a repository path (an
 * absolute path on the host, a data-dir file, a URL, a package name). The docs name files three
 * ways: from the repository's root (`test/e2e/load.test.ts`, `packages/server/native/disk.c`),
 * from a package (`server/src/gateway`), and by their last segments inside the room the text
 * is about (`api/pty-socket.ts`, `native/mounts.c`, `routes.ts`), which must end some file's path.
 */
function resolveName(name: string, topLevel: Set<string>, packages: Set<string>): { path: string } | { suffix: string } | undefined {
  if (!/^[\w.-]+(\/[\w.*-]+)*\/?$/.test(name) || name.startsWith(".") || name.startsWith("-")) return undefined;
  const segments = name.replace(/\/$/, "").split("/");
  // `test/unit/*` names a directory; `packages/console/dist` the package the build fills
  const end = segments.findIndex((s) => s.includes("*") || BUILD_OUTPUTS.has(s));
  const existing = (end === -1 ? segments : segments.slice(0, end)).join("/");
  if (segments.length > 1 && topLevel.has(segments[0]!)) return { path: existing };
  if (segments.length > 1 && packages.has(segments[0]!)) return { path: `packages/${existing}` };
  if (SOURCE_FILE.test(name)) return { suffix: name };
  return undefined;
}

test("every repository path README.md and docs/*.md name exists", () => {
  const paths = repositoryPaths();
  const topLevel = new Set(paths.filter((p) => !p.includes("/")));
  const packages = new Set(readdirSync(join(ROOT, "packages")));
  const documents = [
    "README.md",
    ...readdirSync(join(ROOT, "docs"))
      .filter((f) => f.endsWith(".md"))
      .map((f) => `docs/${f}`),
  ];
  const missing: string[] = [];
  for (const document of documents) {
    const text = readFileSync(join(ROOT, document), "utf8");
    for (const [, name] of text.matchAll(/`([^`\s]+)`/g)) {
      const target = resolveName(name!, topLevel, packages);
      if (target && "path" in target && !existsSync(join(ROOT, target.path))) missing.push(`${document}: \`${name}\``);
      if (target && "suffix" in target && !paths.some((p) => p === target.suffix || p.endsWith(`/${target.suffix}`))) missing.push(`${document}: \`${name}\``);
    }
    // markdown links to files of the repository, relative to the document
    for (const [, link] of text.matchAll(/\]\(([^)\s#]+)(?:#[^)]*)?\)/g)) {
      if (/^[a-z]+:/.test(link!)) continue;
      if (!existsSync(join(ROOT, dirname(document), link!))) missing.push(`${document}: (${link})`);
    }
  }
  assert.deepEqual(missing, [], "paths the docs name that the repository does not have");
});
