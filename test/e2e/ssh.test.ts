import assert from "node:assert/strict";
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { before, describe, test } from "node:test";
import { IngressPort, InvalidArgumentError, Sailbox, type SailError } from "@sail/sdk";
import { eventually, runCli, sshOptions, useTestDaemon } from "./harness.js";

const { daemon, pool } = useTestDaemon();
const keys = mkdtempSync(join(tmpdir(), "sail-ssh-"));
const key = join(keys, "id_ed25519");
const otherKey = join(keys, "other");

before(async () => {
  execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", key]);
  execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", otherKey]);
});

function ssh(port: number, command: string, identity = key, extra: string[] = []) {
  return spawnSync("ssh", [...sshOptions(identity), ...extra, "-p", String(port), "root@127.0.0.1", command], { encoding: "utf8" });
}
function hostKey(port: number): string {
  return execFileSync("ssh-keyscan", ["-p", String(port), "-t", "ed25519", "127.0.0.1"], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
}

async function sshBox() {
  const sb = await pool.create({ ssh: `${key}.pub` });
  const endpoint = (await sb.listener(22).wait({ timeout: 60 })).endpoint;
  return { sb, port: endpoint.port, host: endpoint.host };
}

describe("SSH into a Sailbox with the user's own OpenSSH client", () => {
  test("ssh runs a command with its exit code; scp copies both ways intact; sftp lists a directory", async () => {
    const { sb, port, host } = await sshBox();
    assert.equal(host, "localhost");
    const run = ssh(port, "echo hi from $(hostname); exit 7");
    assert.equal(run.stdout, `hi from ${sb.id}\n`);
    assert.equal(run.status, 7);

    const up = join(keys, "up.bin");
    const data = randomBytes(3 * 1024 * 1024);
    writeFileSync(up, data);
    const scp = ["-P", String(port), ...sshOptions(key)];
    assert.equal(spawnSync("scp", [...scp, up, "root@127.0.0.1:/root/up.bin"]).status, 0);
    const inBox = (await sb.exec("sha256sum /root/up.bin").output()).stdout.split(" ")[0];
    assert.equal(inBox, createHash("sha256").update(data).digest("hex"));
    const down = join(keys, "down.bin");
    assert.equal(spawnSync("scp", [...scp, "root@127.0.0.1:/root/up.bin", down]).status, 0);
    assert.ok(readFileSync(down).equals(data));

    const sftp = spawnSync("sftp", ["-P", String(port), ...sshOptions(key), "-b", "-", "root@127.0.0.1"], { input: "ls /root\n", encoding: "utf8" });
    assert.equal(sftp.status, 0);
    assert.match(sftp.stdout, /up\.bin/);
  });

  test("ssh -L reaches a port inside the box, even one bound to 127.0.0.1", async () => {
    const { sb, port } = await sshBox();
    await sb.exec("mkdir -p /srv && echo forwarded > /srv/f.txt").wait();
    await sb.exec("python3 -m http.server 8000 --bind 127.0.0.1", { background: true, cwd: "/srv" }).wait();
    await sb.exec("for i in $(seq 100); do curl -sf localhost:8000/f.txt && exit 0; sleep 0.1; done; exit 1").wait();
    const localPort = 20000 + Math.floor(Math.random() * 5000) + 10000;
    const tunnel = spawn("ssh", [...sshOptions(key), "-N", "-o", "ExitOnForwardFailure=yes", "-L", `127.0.0.1:${localPort}:127.0.0.1:8000`, "-p", String(port), "root@127.0.0.1"], { stdio: "ignore" });
    try {
      await eventually("the file arrives through the SSH tunnel", () => spawnSync("curl", ["-s", `http://127.0.0.1:${localPort}/f.txt`], { encoding: "utf8" }).stdout === "forwarded\n");
    } finally {
      tunnel.kill();
    }
  });

  test("the host key stays the same across startSshd, an sshd restart and a daemon restart", async () => {
    const { sb, port } = await sshBox();
    const first = hostKey(port);
    assert.match(first, /ssh-ed25519 /);
    await sb.startSshd();
    assert.equal(hostKey(port), first);
    await sb.exec("pkill -x sshd; while pgrep -x sshd >/dev/null; do sleep 0.05; done").wait();
    assert.notEqual(ssh(port, "true").status, 0, "sshd is down");
    await sb.startSshd();
    assert.equal(ssh(port, "true").status, 0);
    assert.equal(hostKey(port), first);
    await daemon.restart();
    const again = await Sailbox.fromId(sb.id, { client: daemon.client() });
    assert.equal((await again.listener(22).wait({ timeout: 60 })).endpoint.port, port);
    assert.equal(hostKey(port), first);
  });

  test("startSshd is idempotent: called twice, and three times at once, one sshd runs", async () => {
    const { sb } = await sshBox();
    await sb.startSshd();
    await sb.startSshd();
    await Promise.all([sb.startSshd(), sb.startSshd(), sb.startSshd()]);
    assert.equal((await sb.exec("pgrep -c -x sshd").output()).stdout.trim(), "1");
  });

  test("a wrong key and a password are both refused", async () => {
    const { port } = await sshBox();
    const wrong = ssh(port, "true", otherKey);
    assert.notEqual(wrong.status, 0);
    assert.match(wrong.stderr, /Permission denied \(publickey\)/);
    const password = ssh(port, "true", otherKey, ["-o", "PreferredAuthentications=password,keyboard-interactive", "-o", "PubkeyAuthentication=no"]);
    assert.notEqual(password.status, 0);
    assert.match(password.stderr, /Permission denied \(publickey\)/); // the only method offered
  });

  test("ssh adds port 22 as a TCP listener, or uses the user's own with a cidrAllowlist", async () => {
    const plain = await pool.create({ ssh: readFileSync(`${key}.pub`, "utf8") });
    assert.deepEqual(
      (await plain.listeners()).map((l) => [l.port, l.protocol]),
      [[22, "tcp"]],
    );
    const restricted = await pool.create({ ssh: `${key}.pub`, ingressPorts: [new IngressPort(22, "tcp", { cidrAllowlist: ["127.0.0.2/32"] })] });
    const port = (await restricted.listener(22).wait({ timeout: 60 })).endpoint.port;
    assert.notEqual(ssh(port, "true").status, 0); // from 127.0.0.1: reset at accept
    assert.equal(ssh(port, "true", key, ["-o", "BindAddress=127.0.0.2"]).status, 0);
  });

  test("a key that does not parse is refused with SAIL_SSH_KEY_INVALID and nothing is created", async () => {
    const app = await pool.app("ssh-refusals");
    const before = (await Sailbox.list({ app })).length;
    await assert.rejects(Sailbox.create({ app, ssh: "ssh-ed25519 AAAAnotakey" }), (e: SailError) => e instanceof InvalidArgumentError && e.code === "SAIL_SSH_KEY_INVALID");
    await assert.rejects(Sailbox.create({ app, ssh: join(keys, "missing.pub") }), (e: SailError) => e.code === "SAIL_SSH_KEY_INVALID" && /missing\.pub/.test(e.message));
    const raw = daemon.client().request("POST", "/v1/sailboxes", { appId: app.id, image: { name: "debian" }, ssh: { publicKey: "ssh-rsa AAAAB3NzaC1lZDI1NTE5AAAA" } });
    await assert.rejects(raw, (e: SailError) => e.code === "SAIL_SSH_KEY_INVALID" && /does not match its type/.test(e.message));
    assert.equal((await Sailbox.list({ app })).length, before);
  });

  test("sail box create --enable-ssh prints the ssh command, which works as printed", async () => {
    const create = await runCli(daemon, ["box", "create", "--app", "cli-ssh", "--enable-ssh", "--ssh-key", `${key}.pub`]);
    assert.equal(create.code, 0, create.stderr);
    const id = /sb-[a-z0-9]{12}/.exec(create.stdout)![0];
    try {
      const line = /SSH: (ssh -p (\d+) root@localhost)/.exec(create.stdout);
      assert.ok(line, create.stdout);
      const run = spawnSync("ssh", [...sshOptions(key), "-p", line[2]!, "root@localhost", "echo ok"], { encoding: "utf8" });
      assert.equal(run.stdout, "ok\n");
    } finally {
      await runCli(daemon, ["box", "terminate", id]);
    }
  });
});
