import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import WebSocket from "ws";
import { SailboxPausedError, type Sailbox } from "@sail/sdk";
import { eventually, CLI, runCli, useTestDaemon } from "./harness.js";

/**
 * `sail box exec -it` in a real pseudo-terminal: tmux (on its own socket) runs the CLI the way
 * a person's terminal would, `send-keys` types and `capture-pane` reads the screen.
 */
class Tmux {
  private readonly dir = mkdtempSync(join(tmpdir(), "sail-tmux-"));
  private readonly socket = join(this.dir, "tmux.sock");

  run(...args: string[]): string {
    return execFileSync("tmux", ["-S", this.socket, ...args], { encoding: "utf8" });
  }

  /** Start `command` in a detached session of cols x rows; its exit code is printed as EXIT=<n> and the pane stays. */
  start(command: string, env: NodeJS.ProcessEnv, cols = 80, rows = 24): void {
    const exports = Object.entries({ SAIL_CONFIG: env.SAIL_CONFIG ?? "" })
      .map(([k, v]) => `${k}='${v}'`)
      .join(" ");
    this.run("new-session", "-d", "-s", "t", "-x", String(cols), "-y", String(rows), `env ${exports} ${command}; echo EXIT=$?; exec sleep 600`);
  }

  type(keys: string): void {
    this.run("send-keys", "-t", "t", "-l", keys);
    this.run("send-keys", "-t", "t", "Enter");
  }

  screen(): string {
    return this.run("capture-pane", "-p", "-t", "t");
  }

  /** Poll the screen until it matches (no timing is asserted: only what appears). */
  async waitFor(pattern: RegExp): Promise<RegExpMatchArray> {
    return eventually(`the terminal shows ${pattern}`, () => this.screen().match(pattern)).catch((err: Error) => {
      throw new Error(`${err.message}; it shows:\n${this.screen()}`);
    });
  }

  dispose(): void {
    try {
      this.run("kill-server");
    } catch {
      // no server left
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

const { daemon, pool } = useTestDaemon();

describe("interactive exec (PTY)", () => {
  let box: Sailbox;

  test("sail box exec -it runs a login shell: typed commands run, resizes reach stty, Ctrl-C stops a sleep, and the exit code comes back", async (t) => {
    box = await pool.create({ name: "pty-shell" });
    const tmux = new Tmux();
    t.after(() => tmux.dispose());
    tmux.start(`${process.execPath} ${CLI} box exec -it ${box.id}`, daemon.env, 80, 24);
    await tmux.waitFor(/root@pty-shell:~#/);

    tmux.type("echo $((6 * 7)) $TERM");
    await tmux.waitFor(/^42 xterm-256color$/m);

    tmux.type("stty size");
    await tmux.waitFor(/^24 80$/m);
    tmux.run("resize-window", "-t", "t", "-x", "100", "-y", "30");
    tmux.type("stty size");
    await tmux.waitFor(/^30 100$/m);

    tmux.type("sleep 600");
    await tmux.waitFor(/# sleep 600\n/);
    tmux.run("send-keys", "-t", "t", "C-c");
    await tmux.waitFor(/\^C\n.*root@pty-shell:~#/);
    tmux.type("echo last status $?");
    await tmux.waitFor(/^last status 130$/m); // 128 + SIGINT, sent by the box's own line discipline

    tmux.type("exit 7");
    await tmux.waitFor(/^EXIT=7$/m);
  });

  test("sail box exec -it -- sh -c SCRIPT passes the script as one argument, as docker exec -it does", async (t) => {
    const tmux = new Tmux();
    t.after(() => tmux.dispose());
    tmux.start(`${process.execPath} ${CLI} box exec -it ${box.id} -- sh -c 'echo "[$1]"; stty size; tty; exit 3' zero 'one two'`, daemon.env, 90, 20);
    await tmux.waitFor(/^\[one two\]\n20 90\n\/dev\/pts\/\d+\n/m);
    await tmux.waitFor(/^EXIT=3$/m);
  });

  test("sail box exec -it -- CMD runs the command on a terminal and returns its exit code", async (t) => {
    const tmux = new Tmux();
    t.after(() => tmux.dispose());
    tmux.start(`${process.execPath} ${CLI} box exec -it ${box.id} -- 'test -t 0 && test -t 1 && echo on a tty; tty; exit 3'`, daemon.env);
    await tmux.waitFor(/^on a tty\n\/dev\/pts\/\d+\n/m);
    await tmux.waitFor(/^EXIT=3$/m);
  });

  test("the SDK's pty() streams bytes both ways, resizes and ends with the exit code", async () => {
    const pty = await box.pty({ cols: 50, rows: 10, cmd: "stty size; read line; echo got:$line; exit 4" });
    let output = "";
    const sawPrompt = new Promise<void>((resolve) =>
      pty.onData((chunk) => {
        output += Buffer.from(chunk).toString("utf8");
        if (output.includes("10 50")) resolve();
      }),
    );
    await sawPrompt;
    pty.write("hello\r");
    assert.equal(await pty.wait(), 4);
    assert.match(output, /got:hello/);
  });

  test("closing the terminal hangs up: the program gets SIGHUP and the box is left with nothing running", async () => {
    const pty = await box.pty({ cmd: "echo ready; exec sleep 600" });
    for await (const chunk of pty.output) if (Buffer.from(chunk).toString().includes("ready")) break;
    pty.close();
    await assert.rejects(pty.wait());
    // the hangup ended the sleep: the box's process table no longer has it
    await eventually("the hangup ends the sleep", async () => (await box.exec("ps -eo args= | grep -qx 'sleep 600' && echo alive || echo gone").output()).stdout.trim() === "gone");
  });

  test("a terminal wakes a sleeping box; a paused box refuses it with SailboxPausedError from the SDK and the CLI", async (t) => {
    await box.sleep();
    const pty = await box.pty({ cmd: "exit 0" });
    assert.equal(await pty.wait(), 0);
    assert.equal(await box.status(), "running");

    await box.pause();
    t.after(() => box.resume());
    const paused = await box.pty({ cmd: "true" });
    await assert.rejects(paused.wait(), (err: unknown) => err instanceof SailboxPausedError && err.code === "SAIL_SAILBOX_PAUSED");

    const tmux = new Tmux();
    t.after(() => tmux.dispose());
    tmux.start(`${process.execPath} ${CLI} box exec -it ${box.id}`, daemon.env);
    await tmux.waitFor(/sail: SAIL_SAILBOX_PAUSED: .*paused/);
    await tmux.waitFor(/^EXIT=1$/m);
  });

  test("bad sizes and unknown parameters are refused with their codes and open nothing", async () => {
    await assert.rejects(box.pty({ cols: 0 }), { code: "SAIL_INVALID_ARGUMENT" });
    const { apiUrl, token } = daemon.credentials();
    const answer = await upgrade(`${apiUrl.replace("http", "ws")}/v1/sailboxes/${box.id}/pty?cols=80&rows=24&shell=zsh`, { authorization: `Bearer ${token}` });
    assert.equal(answer.kind, "message");
    assert.deepEqual(JSON.parse(answer.text).error.code, "SAIL_UNKNOWN_FIELD");
    assert.equal(answer.closeCode, 4400);
  });

  test("an upgrade without a token is refused with 401 and the usual JSON error body, before any WebSocket exists", async () => {
    const { apiUrl } = daemon.credentials();
    const answer = await upgrade(`${apiUrl.replace("http", "ws")}/v1/sailboxes/${box.id}/pty`, {});
    assert.equal(answer.kind, "refused");
    assert.equal(answer.status, 401);
    assert.equal(JSON.parse(answer.text).error.code, "SAIL_AUTH_MISSING");
  });

  test("sail box exec -it without a terminal says so, and so does a missing command without -it", async () => {
    const noTty = await runCli(daemon, ["box", "exec", "-it", box.id]);
    assert.equal(noTty.code, 1);
    assert.match(noTty.stderr, /SAIL_INVALID_ARGUMENT: -it needs a terminal, and stdin is not one/);
    const noCommand = await runCli(daemon, ["box", "exec", box.id]);
    assert.equal(noCommand.code, 1);
    assert.match(noCommand.stderr, /SAIL_EXEC_INVALID: Give the command after --/);
  });
});

/** One WebSocket attempt: the refusal before the upgrade, or the first message and the close code after it. */
function upgrade(url: string, headers: Record<string, string>): Promise<{ kind: "refused"; status: number; text: string } | { kind: "message"; text: string; closeCode: number }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers });
    let text = "";
    ws.on("unexpected-response", (_req, res) => {
      let body = "";
      res.setEncoding("utf8").on("data", (d: string) => (body += d));
      res.on("end", () => resolve({ kind: "refused", status: res.statusCode ?? 0, text: body }));
    });
    ws.on("message", (data) => (text ||= data.toString()));
    ws.on("close", (code) => resolve({ kind: "message", text, closeCode: code }));
    ws.on("error", (err) => (err.message.includes("Unexpected server response") ? undefined : reject(err)));
  });
}
