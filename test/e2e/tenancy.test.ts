import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { describe, test } from "node:test";
import { AuthError, NotFoundError, SailClient, Sailbox, Tokens, type SailError } from "@sail/sdk";
import { runCli, useTestDaemon } from "./harness.js";

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
});
