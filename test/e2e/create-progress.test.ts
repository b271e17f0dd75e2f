/**
 * Long creates on a real daemon: an image build streams its progress to the CLI and the SDK
 * (on stderr), no HTTP client timeout cuts it short, a client that leaves during it leaves no
 * box, and an Idempotency-Key makes a retried create one box. Each build here is of a small
 * Debian package whose cached image is removed first, so a build really happens.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { getGlobalDispatcher, setGlobalDispatcher, Agent } from "undici";
import { AbortedError, App, ConflictError, Sailbox, TimeoutError, type SailboxInfo, type SailError } from "@sail/sdk";
import { DATA_DIR, eventually, forgetPackageImages, packageImages, REPO, runCli, runProcess, useTestDaemon } from "./harness.js";

/** One package per test, so each test's create is the one that builds; `units` is prebuilt by the daemon. */
const PACKAGES = { cli: "sl", sdk: "hello", abandoned: "tree", prebuilt: "units" };
forgetPackageImages(Object.values(PACKAGES).map((p) => [p]));

/** Apps of this run only: a list shows an app's terminated boxes too, and the data dir outlives runs. */
const RUN = Date.now().toString(36);
const appName = (what: string) => `progress-${what}-${RUN}`;

const boxDirs = () => (existsSync(join(DATA_DIR, "boxes")) ? readdirSync(join(DATA_DIR, "boxes")) : []);

describe("long creates", () => {
  const { daemon, pool } = useTestDaemon({ upArgs: ["--prebuild-image", `debian+${PACKAGES.prebuilt}`] });

  test("sail box create shows an image build's steps on stderr, a line each, then prints the box", async () => {
    const create = await runCli(daemon, ["box", "create", "--app", appName("cli"), "--apt", PACKAGES.cli, "--json"]);
    assert.equal(create.code, 0, create.stderr);
    const box = JSON.parse(create.stdout) as SailboxInfo;
    pool.adopt(box.id);
    assert.deepEqual(box.image.aptPackages, [PACKAGES.cli]);
    assert.match(create.stderr, new RegExp(`^sail: building debian\\+${PACKAGES.cli}: copying base image \\(\\d+ s\\)$`, "m"));
    assert.match(create.stderr, new RegExp(`^sail: building debian\\+${PACKAGES.cli}: retrieving`, "m"));
    assert.match(create.stderr, new RegExp(`^sail: building debian\\+${PACKAGES.cli}: ready \\(\\d+ s\\)$`, "m"));
  });

  test("a create that builds outlasts a 1 s headers timeout and prints its progress (the SDK), where the one-answer create of before failed and left no box", async () => {
    const client = daemon.client();
    const app = await App.find({ name: appName("old"), mintIfMissing: true, client });
    // the SDK, in its own process whose HTTP client waits 1 s for an answer's headers
    const sdk = runProcess(process.execPath, ["--import", "tsx", join(REPO, "test/fixtures/create-under-headers-timeout.ts"), `debian+${PACKAGES.sdk}`], { ...daemon.env, HEADERS_TIMEOUT_MS: "1000" });
    // the same create as the SDK sent it before streaming: one JSON answer at the end, under the same 1 s
    const previous = getGlobalDispatcher();
    setGlobalDispatcher(new Agent({ headersTimeout: 1000 }));
    try {
      await assert.rejects(
        client.request("POST", "/v1/sailboxes", { appId: app.id, image: { name: "debian", aptPackages: [PACKAGES.sdk] } }),
        (e: SailError) => e.code === "SAIL_UNAVAILABLE" && /UND_ERR_HEADERS_TIMEOUT/.test(e.message),
      );
    } finally {
      setGlobalDispatcher(previous);
    }
    const { code, stdout, stderr } = await sdk;
    assert.equal(code, 0, stderr);
    const box = JSON.parse(stdout) as SailboxInfo;
    pool.adopt(box.id);
    assert.equal(box.status, "running");
    assert.match(stderr, new RegExp(`^sail: building debian\\+${PACKAGES.sdk}: \\S+`, "m"));
    // the build is over (the SDK's create waited for it): the create whose client gave up made nothing
    assert.deepEqual(await Sailbox.list({ app }), []);
  });

  test("a client that leaves mid-build leaves no box; its retry with the same Idempotency-Key makes exactly one, again and again; another body with the key is refused", async () => {
    const client = daemon.client();
    const app = await App.find({ name: appName("keyed"), mintIfMissing: true, client });
    const before = boxDirs();
    const key = randomUUID();
    const body = { appId: app.id, cpu: 1, image: { name: "debian", aptPackages: [PACKAGES.abandoned] } };
    const leaving = new AbortController();
    const steps: string[] = [];
    await assert.rejects(
      client.longCall("/v1/sailboxes", body, "sailbox", {
        idempotencyKey: key,
        signal: leaving.signal,
        onEvent: (event) => {
          if ("progress" in event) steps.push(event.progress.step ?? "");
          leaving.abort(); // gone at the first line, while the image builds
        },
      }),
      (e: SailError) => e instanceof AbortedError && e.code === "SAIL_ABORTED",
    );
    assert.ok(steps.length > 0, "the create was building when its client left");
    // the answer was lost: the same request, with the same key
    const box = await client.longCall<SailboxInfo>("/v1/sailboxes", body, "sailbox", { idempotencyKey: key });
    pool.adopt(box.id);
    assert.deepEqual(
      (await Sailbox.list({ app })).map((sb) => sb.id),
      [box.id],
    );
    const replay = await fetch(`${client.apiUrl}/v1/sailboxes`, {
      method: "POST",
      headers: { authorization: `Bearer ${daemon.credentials().token}`, "content-type": "application/json", "idempotency-key": key },
      body: JSON.stringify(body),
    });
    assert.equal(replay.status, 201);
    assert.equal(replay.headers.get("idempotent-replayed"), "true");
    assert.equal(((await replay.json()) as SailboxInfo).id, box.id);
    await assert.rejects(
      client.longCall("/v1/sailboxes", { ...body, cpu: 0.5 }, "sailbox", { idempotencyKey: key }),
      (e: SailError) => e instanceof ConflictError && e.code === "SAIL_IDEMPOTENCY_KEY_REUSED" && e.status === 422,
    );
    assert.equal((await Sailbox.list({ app })).length, 1);
    // nothing of the abandoned create is on the host: the one new box directory is the box's
    assert.deepEqual(
      boxDirs().filter((dir) => !before.includes(dir)),
      [box.id],
    );
  });

  test("timeoutMs and signal end any call with the SDK's typed error; a create cancelled before it starts makes nothing", async () => {
    const client = daemon.client();
    const app = await App.find({ name: appName("cancel"), mintIfMissing: true, client });
    const sb = await pool.create({ app, ingressPorts: [3000] });
    // the daemon holds a listener wait up to waitMs: the client's own limits end it first
    const waitPath = `/v1/sailboxes/${sb.id}/listeners/3000?waitMs=60000`;
    await assert.rejects(client.request("GET", waitPath, undefined, { timeoutMs: 300 }), (e: SailError) => e instanceof TimeoutError && e.code === "SAIL_TIMEOUT" && /within 300 ms/.test(e.message));
    const cancel = new AbortController();
    setTimeout(() => cancel.abort(new Error("the user pressed Ctrl-C")), 300);
    await assert.rejects(client.request("GET", waitPath, undefined, { signal: cancel.signal }), (e: SailError) => e instanceof AbortedError && e.code === "SAIL_ABORTED" && /Ctrl-C/.test(e.message));
    await assert.rejects(sb.listener(3000).wait({ timeout: 60, signal: AbortSignal.abort() }), (e: SailError) => e instanceof AbortedError);
    await assert.rejects(Sailbox.create({ app, name: "never", signal: AbortSignal.abort() }), (e: SailError) => e instanceof AbortedError);
    assert.deepEqual(
      (await Sailbox.list({ app })).map((b) => b.id),
      [sb.id],
    );
  });

  test("sail up --prebuild-image builds in the background after start; sail image build then finds it built", async () => {
    await eventually(`the prebuilt image debian+${PACKAGES.prebuilt}`, () => packageImages().some((image) => image.packages.join(" ") === PACKAGES.prebuilt), { attempts: 6000 }); // a build may take minutes on a busy host
    const build = await runCli(daemon, ["image", "build", "debian", "--apt", PACKAGES.prebuilt, "--json"]);
    assert.equal(build.code, 0, build.stderr);
    assert.deepEqual(JSON.parse(build.stdout), { name: "debian", arch: process.arch === "arm64" ? "arm64" : "amd64", aptPackages: [PACKAGES.prebuilt], emulated: false });
    assert.equal(build.stderr, "", "a built image has no progress to show");
    const unknown = await runCli(daemon, ["image", "build", "debian_sparc"]);
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /SAIL_IMAGE_UNKNOWN: Unknown image "debian_sparc"/);
  });
});
