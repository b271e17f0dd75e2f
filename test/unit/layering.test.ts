import assert from "node:assert/strict";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { test } from "node:test";

const root = new URL("../../packages", import.meta.url).pathname;

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((entry) => {
    const path = join(dir, entry);
    if (statSync(path).isDirectory()) return entry === "dist" || entry === "node_modules" ? [] : sources(path);
    return path.endsWith(".ts") || path.endsWith(".tsx") ? [path] : [];
  });
}

function imports(file: string): string[] {
  return [...readFileSync(file, "utf8").matchAll(/(?:from|import\()\s*["']([^"']+)["']/g)].map((m) => m[1]!);
}

/**
 * Imports go one way (STYLE.md): protocol ← sdk ← cli; the server's rooms meet only in
 * daemon.ts, which nothing imports. No file is exempt.
 */
const RULES: Array<[string, RegExp, string]> = [
  ["protocol/", /^(?!\.|node:|ipaddr\.js$)/, "protocol depends on nothing but ipaddr.js (address parsing)"],
  ["sdk/", /^(@sail\/server|@sail\/cli|better-sqlite3)|^\.\.\/\.\.\//, "the SDK never imports the server"],
  ["cli/", /^@sail\/server\/(?!config$)|^\.\.\/\.\.\/server/, "the CLI uses the SDK; of the server only `sail up` (its entry point and config schema)"],
  ["server/src/store/", /\.\.\/(boxes|api|runtime|gateway)\//, "the store holds no business rules"],
  ["server/src/runtime/", /\.\.\/(boxes|api|store|gateway)\//, "the runtime knows nothing of orgs or listeners"],
  [
    "server/src/boxes/",
    /\.\.\/(api|gateway|runtime|egress|node)\/|node:child_process|node:net/,
    "the control plane reaches a host only through the node wire's NodeApi: no runtime, no node internals, no shells or sockets",
  ],
  ["server/src/api/", /\.\.\/(store|runtime|gateway|node|egress)\//, "the API goes through boxes"],
  ["server/src/node-wire/", /\.\.\/(store|boxes|api|runtime|gateway|egress|node)\//, "the node wire carries the boundary's types and bytes; it holds no side's state"],
  [
    "server/src/gateway/",
    /\.\.\/(store|runtime|api|boxes)\/|\.\.\/node\/(?!(routes|idle|ingress-policy|tcp-binds)\.js$)/,
    "the gateway follows the node's routes, asks its ingress policy and reports which TCP ports it holds; it reaches nothing else",
  ],
  ["server/src/egress/", /\.\.\/(store|runtime|api|gateway|boxes)\/|\.\.\/node\/(?!(outbound|logger|token-bucket)\.js$)/, "the resolver asks the node's outbound policy; it reaches nothing else"],
  ["server/src/node/", /\.\.\/(store|boxes|api)\//, "the node agent never reads the control plane's store, nor uses its domain or its API"],
  ["server/src/wire/", /^\.\.?\//, "wire formats depend on no room"],
  [
    "server/src/edge/",
    /\.\.\/(store|boxes|runtime|api|node|egress)\/|\.\.\/gateway\/(?!(haproxy-process|runtime-api)\.js$)/,
    "the edge follows the route feed over the wire and drives its HAProxy: no store, no domain, no node internals",
  ],
  ["console/", /^@sail\/(server|sdk|cli)|^\.\.\/\.\.\//, "the console is a page: it talks to the API and shares only the protocol"],
  ["", /daemon(\.js)?$/, "nothing imports daemon.ts"],
];

test("imports go one way between the rooms", () => {
  const violations: string[] = [];
  for (const file of sources(root)) {
    const rel = relative(root, file);
    for (const [prefix, forbidden, why] of RULES) {
      if (!rel.startsWith(prefix)) continue;
      for (const spec of imports(file)) if (forbidden.test(spec)) violations.push(`${rel} imports ${spec}: ${why}`);
    }
  }
  assert.deepEqual(violations, []);
});

test("the rules catch what they forbid", () => {
  const caught = (rel: string, spec: string) => RULES.some(([prefix, forbidden]) => rel.startsWith(prefix) && forbidden.test(spec));
  assert.ok(caught("server/src/api/server.ts", "../store/store.js"));
  assert.ok(caught("server/src/gateway/tcp-gateway.ts", "../boxes/create.js"));
  assert.ok(caught("server/src/boxes/create.ts", "../runtime/local-runtime.js"));
  assert.ok(caught("server/src/boxes/create.ts", "../node/node-agent.js"));
  assert.ok(caught("server/src/node-wire/client.ts", "../node/node-store.js"));
  assert.ok(caught("server/src/boxes/create.ts", "node:child_process"));
  assert.ok(caught("cli/src/box/create.ts", "@sail/server/dist/boxes/boxes.js"));
  assert.ok(caught("protocol/src/cidr.ts", "netmask"));
  assert.ok(!caught("protocol/src/cidr.ts", "ipaddr.js"));
  assert.ok(!caught("server/src/gateway/tcp-gateway.ts", "../node/routes.js"));
  assert.ok(caught("server/src/gateway/tcp-gateway.ts", "../node/node-agent.js"));
  assert.ok(caught("server/src/node/node-agent.ts", "../store/store.js"));
  assert.ok(caught("server/src/node/power.ts", "../boxes/lifecycle.js"));
  assert.ok(!caught("server/src/node/node-agent.ts", "../gateway/traffic-ledger.js"));
  assert.ok(!caught("cli/src/up.ts", "@sail/server/config"));
  assert.ok(caught("server/src/edge/edge.ts", "../store/store.js"));
  assert.ok(caught("server/src/edge/edge.ts", "../boxes/route-feed.js"));
  assert.ok(caught("server/src/edge/edge.ts", "../gateway/tcp-gateway.js"));
  assert.ok(!caught("server/src/edge/edge.ts", "../gateway/runtime-api.js"));
  assert.ok(!caught("server/src/edge/route-poller.ts", "../node-wire/wire.js"));
});

test("every status change goes through a lifecycle core (only boxes/lifecycle.ts and, on the node, node/lifecycle.ts write a status)", () => {
  const writers = sources(root)
    // a store's status writes (setStatus, applyNodeState), on whatever receiver but a lifecycle core's own methods
    .filter((file) => /(?<!lifecycle)\.(setStatus|applyNodeState)\(/.test(readFileSync(file, "utf8")))
    .map((file) => relative(root, file))
    .filter((rel) => rel !== "server/src/store/store.ts");
  assert.deepEqual(writers, ["server/src/boxes/lifecycle.ts", "server/src/node/lifecycle.ts"]);
});
