/**
 * Property-based tests of the API's input handling (fast-check, seeded so a failure can be
 * replayed): whatever arrives, the daemon answers a typed error with a stable code whose
 * status matches the code table — or does what was asked — never crashes, never answers
 * 500, and a refused request leaves nothing behind.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { request as httpRequest } from "node:http";
import { describe, test } from "node:test";
import fc from "fast-check";
import { ERROR_CODES, IngressPort, Sailbox, type App, type ErrorCode, type SailError } from "@sail/sdk";
import { leftoversOnceRemoved, useTestDaemon } from "./harness.js";

const { daemon, pool } = useTestDaemon();
const SEED = Number(process.env.SAIL_FUZZ_SEED ?? 20261129);
const RUNS = Number(process.env.SAIL_FUZZ_RUNS ?? 150);

/** One raw request to the API: the status and the parsed JSON body (or the text when not JSON). */
function raw(method: string, path: string, body: string | Buffer | undefined, headers: Record<string, string> = {}): Promise<{ status: number; body: unknown }> {
  const { apiUrl, token } = daemon.credentials();
  return new Promise((resolve, reject) => {
    const req = httpRequest(`${apiUrl}${path}`, { method, headers: { authorization: `Bearer ${token}`, "content-type": "application/json", ...headers } }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => {
        const text = Buffer.concat(chunks).toString();
        let parsed: unknown = text;
        try {
          parsed = JSON.parse(text);
        } catch {
          // an NDJSON exec stream or plain text: keep the text
        }
        resolve({ status: res.statusCode!, body: parsed });
      });
    });
    req.on("error", reject);
    req.end(body);
  });
}

/** A refusal must be a typed error: a known code, the status the code table gives it, a message. */
function assertTypedError(status: number, body: unknown, what: string): ErrorCode {
  const error = (body as { error?: { code?: string; message?: string } })?.error;
  assert.ok(error && typeof error.code === "string", `${what}: answered ${status} without a typed error: ${JSON.stringify(body).slice(0, 300)}`);
  assert.ok(error.code in ERROR_CODES, `${what}: unknown code ${error.code}`);
  assert.equal(status, ERROR_CODES[error.code as ErrorCode].status, `${what}: ${error.code} with status ${status}`);
  assert.notEqual(status, 500, `${what}: internal error ${error.message}`);
  assert.ok(error.message && error.message.length > 10, `${what}: a message that says what is wrong`);
  return error.code as ErrorCode;
}

const json = fc.jsonValue({ maxDepth: 3 });
const port = fc.oneof(fc.integer({ min: -5, max: 70_000 }), fc.constantFrom(0, 22, 80, 3000, 10000, 5432, 6379, 65535, 65536), fc.double(), fc.string({ maxLength: 8 }), json);
const cidr = fc.oneof(
  fc.constantFrom("127.0.0.1/32", "::1", "10.0.0.0/33", "300.1.1.1", "::ffff:10.1.2.3/128", "fe80::/10", "1.2.3.4/0", " 10.0.0.0/8"),
  fc.string({ maxLength: 20 }),
  fc.ipV4(),
  fc.ipV6(),
);
const portSpec = fc.oneof(
  port,
  fc.record(
    {
      port,
      protocol: fc.oneof(fc.constantFrom("http", "tcp", "udp", "TCP", ""), json),
      cidrAllowlist: fc.oneof(fc.array(cidr, { maxLength: 4 }), json),
      allowPublic: fc.oneof(fc.boolean(), json),
    },
    { requiredKeys: ["port"] },
  ),
);
const sshKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJv2Gc3a5wWq1z0oJ4K1t2k9V8Yd8mH2m8C3dAqfLk3T fuzz";
/** Mostly `valid` (undefined: the field is left out), sometimes one of the others: so some bodies pass and each rule is hit alone. */
const mostly = <T>(valid: fc.Arbitrary<T>, ...others: fc.Arbitrary<unknown>[]) => fc.oneof({ arbitrary: valid as fc.Arbitrary<unknown>, weight: 5 * others.length }, ...others);
const createBody = (appId: string) =>
  fc.record({
    appId: mostly(fc.constant(appId), fc.string(), json),
    name: mostly(fc.constant(undefined), fc.stringMatching(/^[a-z0-9-]{1,70}$/), fc.string({ maxLength: 80 }), json),
    // package names here are never valid: a valid one would make the daemon run apt
    image: mostly(
      fc.constant({ name: "debian" }),
      fc.record(
        {
          name: fc.oneof(fc.constant("debian"), fc.string()),
          arch: fc.oneof(fc.constantFrom("amd64", "arm64", "x86"), json),
          aptPackages: fc.oneof(
            fc.array(
              fc.string().map((s) => `${s.toUpperCase()}!`),
              { maxLength: 3 },
            ),
            json,
          ),
          extra: json,
        },
        { requiredKeys: [] },
      ),
      json,
    ),
    cpu: mostly(fc.constant(undefined), fc.double({ min: -1, max: 64 }), fc.constantFrom(0.5, 1, 2), json),
    memoryMiB: mostly(fc.constant(undefined), fc.integer({ min: -10, max: 100_000 }), fc.constantFrom(64, 128, 512), json),
    // valid sizes are small ones (each is an mkfs): the bounds are probed from outside
    diskMiB: mostly(fc.constant(undefined), fc.oneof(fc.integer({ min: -10, max: 63 }), fc.integer({ min: 1_048_577, max: 2_000_000_000 })), fc.constantFrom(64, 256), json),
    ingressPorts: mostly(fc.constant(undefined), fc.array(portSpec, { maxLength: 40 }), fc.array(portSpec, { maxLength: 2 }), json),
    ssh: mostly(fc.constant(undefined), fc.record({ publicKey: fc.oneof(fc.string(), fc.constant(sshKey), json) }), json),
    idleTimeout: mostly(fc.constant(undefined), fc.integer({ min: -5, max: 10_000_000 }), json),
    unexpected: mostly(fc.constant(undefined), json),
  });

describe("fuzzing the API", () => {
  let app: App;
  const created: string[] = [];

  test(`POST /v1/sailboxes with ${RUNS} generated bodies: a box or a typed error, never a 500, nothing half-created (seed ${SEED})`, async () => {
    app = await pool.app("fuzz");
    const before = (await Sailbox.list({ app })).length;
    const refusals = new Map<string, number>();
    await fc.assert(
      fc.asyncProperty(createBody(app.id), async (body) => {
        const { status, body: answer } = await raw("POST", "/v1/sailboxes", JSON.stringify(body));
        if (status === 201) {
          const id = (answer as { id: string }).id;
          created.push(id);
          const gone = await raw("DELETE", `/v1/sailboxes/${id}`, undefined);
          assert.equal(gone.status, 200);
          return;
        }
        const code = assertTypedError(status, answer, `POST ${JSON.stringify(body).slice(0, 200)}`);
        refusals.set(code, (refusals.get(code) ?? 0) + 1);
      }),
      { seed: SEED, numRuns: RUNS, endOnFailure: true, includeErrorInReport: true },
    );
    // every refused create left nothing: the app holds exactly the boxes that were created
    assert.equal((await Sailbox.list({ app })).length, before + created.length);
    for (const id of created) assert.deepEqual(await leftoversOnceRemoved(id), [], `box ${id}`);
    assert.ok(refusals.size >= 8, `the generator reaches many rules: ${[...refusals.keys()].join(", ")}`);
    assert.ok(created.length >= 3, `some generated bodies are valid: ${created.length} created`);
  });

  test("malformed JSON, wrong types, oversized bodies, unknown routes and methods: typed errors, the daemon keeps serving", async () => {
    const sb = await pool.create({ app, ingressPorts: [new IngressPort(7000, "tcp", { allowPublic: true })] });
    const paths = ["/v1/sailboxes", `/v1/sailboxes/${sb.id}/exec`, `/v1/sailboxes/${sb.id}/sleep`, "/v1/tokens", `/v1/apps/fuzz`];
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...paths),
        fc.oneof(
          fc.string(),
          fc.uint8Array({ maxLength: 256 }).map((a) => Buffer.from(a)),
          json.map((v) => JSON.stringify(v)),
        ),
        async (path, body) => {
          const method = path.startsWith("/v1/apps") ? "PUT" : "POST";
          const { status, body: answer } = await raw(method, path, body);
          if (status < 300) return; // e.g. "{}" is a fine body for some routes
          assertTypedError(status, answer, `${method} ${path} ${String(body).slice(0, 80)}`);
        },
      ),
      { seed: SEED, numRuns: RUNS, endOnFailure: true, includeErrorInReport: true },
    );
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom("GET", "POST", "PUT", "DELETE", "PATCH"),
        fc.array(fc.oneof(fc.constantFrom("v1", "sailboxes", sb.id, "listeners", "execs", "..", "%00", "7000"), fc.string({ maxLength: 12 }).map(encodeURIComponent)), { maxLength: 6 }),
        async (method, segments) => {
          const path = "/" + segments.join("/");
          const { status, body } = await raw(method, path, method === "GET" || method === "DELETE" ? undefined : "{}");
          if (status < 300) return;
          if (status === 303 && ["/", "/console"].includes(new URL(path, "http://api").pathname)) return; // the console's front door (docs/api.md), after dot segments
          assertTypedError(status, body, `${method} ${path}`);
        },
      ),
      { seed: SEED, numRuns: RUNS, endOnFailure: true, includeErrorInReport: true },
    );
    // exec bodies: the command itself is harmless, everything around it is generated
    await fc.assert(
      fc.asyncProperty(
        fc.record(
          {
            cmd: fc.oneof(
              fc.constant("true"),
              fc.string({ maxLength: 5 }).map(() => "echo fuzz"),
              json,
            ),
            cwd: fc.oneof(fc.constantFrom("/", "/tmp", "relative", "/nonexistent"), json),
            env: fc.oneof(fc.dictionary(fc.string({ maxLength: 6 }), fc.oneof(fc.string({ maxLength: 6 }), json), { maxKeys: 3 }), json),
            background: fc.oneof(fc.boolean(), json),
            other: json,
          },
          { requiredKeys: [] },
        ),
        async (body) => {
          const { status, body: answer } = await raw("POST", `/v1/sailboxes/${sb.id}/exec`, JSON.stringify(body));
          if (status < 300) return;
          assertTypedError(status, answer, `exec ${JSON.stringify(body).slice(0, 200)}`);
        },
      ),
      { seed: SEED, numRuns: Math.ceil(RUNS / 2), endOnFailure: true, includeErrorInReport: true },
    );
    const big = await raw("POST", "/v1/sailboxes", Buffer.alloc(3 * 1024 * 1024, "a"));
    assert.equal(assertTypedError(big.status, big.body, "3 MiB body"), "SAIL_BODY_TOO_LARGE");
    const noAuth = await raw("GET", "/v1/apps", undefined, { authorization: "Bearer nope" });
    assert.equal(assertTypedError(noAuth.status, noAuth.body, "bad token"), "SAIL_AUTH_INVALID");

    // still serving, and the box it was all aimed at is as it was
    assert.equal(await sb.status(), "running");
    assert.equal((await sb.exec("echo alive").output()).stdout, "alive\n");
    assert.ok(execFileSync("ip", ["netns", "list"], { encoding: "utf8" }).includes(`sail-${sb.id}`));
  });

  test("the SDK refuses bad ports, CIDRs, names and resources with typed errors before or at the server", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.record({ port, protocol: fc.constantFrom("http", "tcp"), cidrAllowlist: fc.array(cidr, { maxLength: 3 }), allowPublic: fc.boolean() }),
        fc.oneof(fc.constant(undefined), fc.string({ maxLength: 70 })),
        fc.oneof(fc.constant(undefined), fc.integer({ min: -10, max: 100_000 })),
        async (spec, name, memory) => {
          let sb: Sailbox | undefined;
          try {
            const ingress =
              spec.protocol === "http" && spec.cidrAllowlist.length === 0
                ? (spec.port as number)
                : new IngressPort(spec.port as number, spec.protocol, { cidrAllowlist: spec.cidrAllowlist, allowPublic: spec.allowPublic });
            sb = await Sailbox.create({ app, name, memory, ingressPorts: [ingress] });
          } catch (err) {
            const e = err as SailError;
            assert.ok(typeof e.code === "string" && e.code in ERROR_CODES, `not a typed error: ${String(err)}`);
            assert.notEqual(e.status, 500, e.message);
            return;
          }
          await sb.terminate();
        },
      ),
      { seed: SEED, numRuns: Math.ceil(RUNS / 2), endOnFailure: true, includeErrorInReport: true },
    );
  });
});
