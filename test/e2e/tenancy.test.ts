import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { describe, test } from "node:test";
import { App, AuthError, LimitExceededError, NotFoundError, Orgs, SailClient, Sailbox, Tokens, type SailError } from "@sail/sdk";
import { join } from "node:path";
import { CLI, REPO, runCli, runProcess, useTestDaemon } from "./harness.js";

const { daemon, pool } = useTestDaemon();

const clientFor = (token: string) => new SailClient({ apiUrl: daemon.credentials().apiUrl, token });

describe("tenancy", () => {
  test("a second org sees 404 for every route that names the first org's apps, boxes, listeners, execs and tokens", async () => {
    const operator = daemon.client();
    const app = await pool.app("tenant-a-app");
    const box = await pool.create({ app, ingressPorts: [3000] });
    const exec = await box.exec("sleep 300", { background: true }).wait();
    const operatorTokens = await Tokens.list({ client: operator });

    // a fresh org each run: the test data dir (and its orgs) outlives runs
    const tenant = `tenant-b-${randomBytes(4).toString("hex")}`;
    const other = await Tokens.create({ org: tenant, label: "tenancy test", client: operator });
    assert.equal(other.org, tenant);
    assert.match(other.token, /^sail_/);
    const b = clientFor(other.token);

    const id = box.id;
    const notFound: Array<[string, string, unknown?]> = [
      ["GET", `/v1/apps/${app.name}`],
      ["GET", `/v1/sailboxes/${id}`],
      ["DELETE", `/v1/sailboxes/${id}`],
      ["GET", `/v1/sailboxes/${id}/listeners`],
      ["GET", `/v1/sailboxes/${id}/listeners/3000`],
      ["POST", `/v1/sailboxes/${id}/exec`, { cmd: "id" }],
      ["POST", `/v1/sailboxes/${id}/exec`, { cmd: "id", background: true }],
      ["GET", `/v1/sailboxes/${id}/execs/${exec.id}/log`],
      ["POST", `/v1/sailboxes/${id}/sshd`, {}],
      ["POST", `/v1/sailboxes/${id}/sleep`, {}],
      ["POST", `/v1/sailboxes/${id}/pause`, {}],
      ["POST", `/v1/sailboxes/${id}/resume`, {}],
      ["POST", "/v1/sailboxes", { appId: app.id, image: { name: "debian" } }],
      ["DELETE", `/v1/tokens/${operatorTokens[0]!.id}`],
    ];
    for (const [method, path, body] of notFound) {
      await assert.rejects(b.request(method as "GET", path, body), (e: SailError) => e instanceof NotFoundError && e.status === 404, `${method} ${path}`);
    }
    assert.deepEqual(await Sailbox.list({ client: b }), []);
    assert.deepEqual((await b.request<{ apps: unknown[] }>("GET", "/v1/apps")).apps, []);
    assert.deepEqual(
      (await Tokens.list({ client: b })).map((t) => t.org),
      [tenant],
    );
    // a tenant cannot reach into other orgs through the token API either
    await assert.rejects(Tokens.create({ org: "default", client: b }), (e: SailError) => e instanceof AuthError && e.code === "SAIL_FORBIDDEN");
    await assert.rejects(Tokens.list({ org: "default", client: b }), (e: SailError) => e.code === "SAIL_FORBIDDEN");

    // the same app name in tenant-b is its own app; the first org's box is untouched
    const mine = await b.request<{ id: string }>("PUT", `/v1/apps/${app.name}`, {});
    assert.notEqual(mine.id, app.id);
    assert.equal(await box.status(), "running");
    assert.equal((await box.listeners()).length, 1);
  });

  test("sail token create|ls|revoke: a revoked token is refused on the next request", async () => {
    const tenant = `tenant-c-${randomBytes(4).toString("hex")}`;
    const created = await runCli(daemon, ["token", "create", "--org", tenant, "--label", "ci", "--json"]);
    assert.equal(created.code, 0, created.stderr);
    const token = JSON.parse(created.stdout) as { id: string; token: string; org: string; label: string };
    assert.equal(token.org, tenant);
    const c = clientFor(token.token);
    assert.equal((await c.request<{ org: string }>("GET", "/v1/whoami")).org, tenant);

    const listed = await runCli(daemon, ["token", "ls", "--org", tenant]);
    assert.match(listed.stdout, new RegExp(`${token.id}\\s+${tenant}\\s+ci`));
    assert.doesNotMatch(listed.stdout, new RegExp(token.token), "ls never prints secrets");

    const revoked = await runCli(daemon, ["token", "revoke", token.id]);
    assert.equal(revoked.code, 0, revoked.stderr);
    assert.match(revoked.stdout, new RegExp(`Revoked token ${token.id}`));
    await assert.rejects(c.request("GET", "/v1/whoami"), (e: SailError) => e instanceof AuthError && e.code === "SAIL_AUTH_INVALID");
    assert.match((await runCli(daemon, ["token", "ls", "--org", tenant, "--json"])).stdout, /"revokedAt": "20/);

    const unknown = await runCli(daemon, ["token", "revoke", "tok-doesnotexist"]);
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /SAIL_TOKEN_NOT_FOUND/);
  });

  test("the operator caps a tenant's live boxes, cores and memory: past a cap the SDKs and the CLI are refused and nothing is made", async () => {
    const tenant = `tenant-d-${randomBytes(4).toString("hex")}`;
    const { token } = await Tokens.create({ org: tenant, label: "limits test", client: daemon.client() });
    const t = clientFor(token);
    const tenantEnv = { ...daemon.env, SAIL_API_URL: daemon.credentials().apiUrl, SAIL_TOKEN: token, PYTHONPATH: join(REPO, "sdks/python") };
    await assert.rejects(Orgs.setLimits(tenant, { sailboxes: 100 }, { client: t }), (e: SailError) => e.code === "SAIL_FORBIDDEN", "a tenant cannot raise its own limits");
    const set = await runCli(daemon, ["org", "limit", tenant, "--boxes", "1", "--memory", "1024"]);
    assert.equal(set.code, 0, set.stderr);
    assert.match(set.stdout, /sailboxes\s+1\s+0/);

    const app = await App.find({ name: "capped", mintIfMissing: true, client: t });
    const first = await Sailbox.create({ app, memory: 512 });
    try {
      await first.sleep(); // a sleeping box still holds its memory: it counts
      await assert.rejects(Sailbox.create({ app, memory: 256 }), (e: SailError) => e instanceof LimitExceededError && e.code === "SAIL_ORG_LIMIT_EXCEEDED" && e.details.limit === "sailboxes");
      const cli = await runProcess(process.execPath, [CLI, "box", "create", "--app", "capped"], tenantEnv);
      assert.equal(cli.code, 1);
      assert.match(cli.stderr, /^sail: SAIL_ORG_LIMIT_EXCEEDED: Org "tenant-d-[0-9a-f]+" may have 1 live sailboxes at once and has 1\. /);
      const py = await runProcess(
        "python3",
        ["-c", "import sail\ntry:\n    sail.Sailbox.create(app=sail.App.find(name='capped'), image=sail.Image.debian)\nexcept sail.LimitExceededError as e:\n    print(e.code, e.details['limit'])"],
        tenantEnv,
      );
      assert.equal(py.stdout.trim(), "SAIL_ORG_LIMIT_EXCEEDED sailboxes", py.stderr);
      const cleared = await runCli(daemon, ["org", "limit", tenant, "--boxes", "none"]);
      assert.equal(cleared.code, 0, cleared.stderr);
      assert.match(cleared.stdout, /sailboxes\s+none\s+1/);
      await assert.rejects(Sailbox.create({ app, memory: 1024 }), (e: SailError) => e.code === "SAIL_ORG_LIMIT_EXCEEDED" && e.details.limit === "memory" && e.details.inUse === 512);
      assert.deepEqual(
        (await Sailbox.list({ app })).map((sb) => sb.id),
        [first.id],
        "the refused creates made nothing",
      );
      const shown = await Orgs.limits(tenant, { client: t });
      assert.deepEqual([shown.limits.sailboxes, shown.limits.memoryMiB, shown.usage.sailboxes, shown.usage.memoryMiB], [null, 1024, 1, 512]);
    } finally {
      await first.terminate();
    }
    const second = await Sailbox.create({ app, memory: 1024 });
    await second.terminate();
  });
});
