import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Sailbox } from "@sail/sdk";
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { CLI, DATA_DIR, runCli, runProcess, terminateLeftovers, TestDaemon } from "./harness.js";

const daemon = new TestDaemon();
const created: string[] = [];

before(async () => {
  await daemon.start();
  await terminateLeftovers(daemon);
});
after(async () => {
  for (const id of created) await (await Sailbox.fromId(id, { client: daemon.client() })).terminate().catch(() => {});
  await daemon.dispose();
});

describe("the sail CLI", () => {
  test("box create, ls, exec and terminate work on a real box, with --json listings", async () => {
    const create = await runCli(daemon, ["box", "create", "--app", "cli", "--name", "cli-box", "--json"]);
    assert.equal(create.code, 0, create.stderr);
    const box = JSON.parse(create.stdout) as { id: string; status: string; name: string };
    created.push(box.id);
    assert.equal(box.status, "running");

    const ls = await runCli(daemon, ["box", "ls", "--app", "cli", "--json"]);
    assert.deepEqual(
      (JSON.parse(ls.stdout) as Array<{ id: string }>).map((b) => b.id),
      [box.id],
    );
    const table = await runCli(daemon, ["box", "ls", "--app", "cli"]);
    assert.match(table.stdout, new RegExp(`${box.id}\\s+cli-box\\s+running`));

    const apps = await runCli(daemon, ["app", "ls", "--json"]);
    assert.ok((JSON.parse(apps.stdout) as Array<{ name: string }>).some((a) => a.name === "cli"));

    const exec = await runCli(daemon, ["box", "exec", "cli-box", "--app", "cli", "--", "echo out; echo err >&2; exit 3"]);
    assert.deepEqual(exec, { code: 3, stdout: "out\n", stderr: "err\n" });
    // several words after -- are one program and its arguments, as docker exec and kubectl exec take them
    const argv = await runCli(daemon, ["box", "exec", "cli-box", "--app", "cli", "--", "sh", "-c", 'echo "[$0] [$1]"; echo two words; exit 4', "it's", "a b"]);
    assert.deepEqual(argv, { code: 4, stdout: "[it's] [a b]\ntwo words\n", stderr: "" });
    const printf = await runCli(daemon, ["box", "exec", "cli-box", "--app", "cli", "--", "printf", "%s|", "$HOME", "*", ""]);
    assert.equal(printf.stdout, "$HOME|*||", "no word is expanded by the box's shell");

    const term = await runCli(daemon, ["box", "terminate", box.id]);
    assert.equal(term.code, 0);
    const after = await runCli(daemon, ["box", "ls", "--app", "cli", "--json"]);
    assert.deepEqual(JSON.parse(after.stdout), []);
  });

  test("box create --arch runs the other architecture under emulation, and box ls says so", async (t) => {
    const foreign = process.arch === "arm64" ? "amd64" : "arm64";
    // on a fresh data dir this create builds the image under emulation (minutes): it must show its steps, and no timeout may cut it short
    const images = join(DATA_DIR, "images");
    const built = existsSync(images) && readdirSync(images).some((dir) => dir.startsWith(`debian-${foreign}-`) && existsSync(join(images, dir, "complete")));
    const started = Date.now();
    const create = await runCli(daemon, ["box", "create", "--app", "cli", "--name", "cli-foreign", "--arch", foreign, "--json"]);
    t.diagnostic(`create --arch ${foreign}: ${Math.round((Date.now() - started) / 1000)} s, the image ${built ? "cached" : "built"}; ${create.stderr.trim().split("\n").slice(-2).join(" | ")}`);
    assert.equal(create.code, 0, create.stderr);
    if (!built) assert.match(create.stderr, new RegExp(`^sail: building debian_${foreign}: retrieving \\(${foreign}, emulated\\)`, "m"));
    const box = JSON.parse(create.stdout) as { id: string; image: { arch: string; emulated: boolean } };
    created.push(box.id);
    assert.deepEqual(box.image, { name: "debian", arch: foreign, aptPackages: [], emulated: true });
    const uname = await runCli(daemon, ["box", "exec", box.id, "--", "uname -m"]);
    assert.equal(uname.stdout.trim(), foreign === "arm64" ? "aarch64" : "x86_64");
    assert.match((await runCli(daemon, ["box", "ls", "--app", "cli"])).stdout, new RegExp(`${box.id}\\s+cli-foreign\\s+running\\s+debian/${foreign} \\(emulated\\)`));
    await runCli(daemon, ["box", "terminate", box.id]);
    const unknown = await runCli(daemon, ["box", "create", "--arch", "sparc"]);
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /SAIL_IMAGE_UNKNOWN: --arch "sparc" is not an architecture Sail knows: use amd64 or arm64/);
  });

  test("errors exit non-zero with the stable code on stderr", async () => {
    const missing = await runCli(daemon, ["box", "exec", "sb-nosuchbox00", "--", "true"]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /SAIL_SAILBOX_NOT_FOUND/);
    const bad = await runCli(daemon, ["box", "create", "--name", "NOT OK"]);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /SAIL_NAME_INVALID/);
    const noDaemon = await runProcess(process.execPath, [CLI, "app", "ls"], { ...daemon.env, SAIL_API_URL: "http://127.0.0.1:9", SAIL_TOKEN: "x" });
    assert.equal(noDaemon.code, 1);
    assert.match(noDaemon.stderr, /Cannot reach the Sail daemon/);
  });

  test("--help teaches every command", async () => {
    for (const args of [["--help"], ["up", "--help"], ["box", "--help"], ["box", "create", "--help"], ["box", "exec", "--help"], ["app", "ls", "--help"]]) {
      const help = await runCli(daemon, args);
      assert.equal(help.code, 0);
      assert.match(help.stdout, /Usage: sail/);
    }
    assert.match((await runCli(daemon, ["box", "exec", "--help"])).stdout, /Examples:/);
  });
});
