import type { ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { createServer, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { ReadStream } from "node:tty";
import { fileURLToPath } from "node:url";
import { signalNumber } from "./commands.js";

/** Where `npm run build` puts the module (native/pty.c): packages/server/native/build, from src/ or dist/. */
const MODULE_PATH = join(dirname(fileURLToPath(import.meta.url)), "../../native/build/pty.node");

/** After crun exits, how long a connection it made may take to be accepted (it is already in the backlog: one loop turn, normally). */
const EXIT_BEFORE_ACCEPT_GRACE_MS = 200;

interface PtyNative {
  receiveFd(socketFd: number): Promise<number>;
  setWindowSize(fd: number, cols: number, rows: number): void;
}

let native: PtyNative | undefined;
function loadNative(): PtyNative {
  native ??= createRequire(import.meta.url)(MODULE_PATH) as PtyNative;
  return native;
}

/** A command on a pseudo-terminal: the master end as a duplex stream, its size, its exit code. */
export interface RunningPty {
  /** The terminal's master: read the program's output (guest bytes: never interpret them here), write its input. */
  terminal: NodeJS.ReadWriteStream & { destroy(): void };
  /** TIOCSWINSZ: the program gets SIGWINCH. */
  resize(cols: number, rows: number): void;
  /** The exit code; 128+N when signal N ended it. */
  exit: Promise<number>;
  /** Hang up: closing the master sends SIGHUP to the terminal's session, as a closed ssh session would. */
  kill(): void;
}

/**
 * Run `spawnCrunExec(consoleSocketPath)` (a `crun exec --tty --console-socket PATH …`) and take
 * the terminal crun opens inside the box: crun connects to PATH and sends the master end as
 * SCM_RIGHTS, which the native helper receives. The socket lives in a fresh 0700 directory
 * for the few milliseconds this takes.
 */
export async function startPty(spawnCrunExec: (consoleSocket: string) => ChildProcess, size: { cols: number; rows: number }): Promise<RunningPty> {
  const pty = loadNative();
  const dir = mkdtempSync(join(tmpdir(), "sail-pty-"));
  const socketPath = join(dir, "console.sock");
  const server = createServer({ pauseOnConnect: true });
  let child: ChildProcess | undefined;
  try {
    await new Promise<void>((resolve, reject) => server.once("error", reject).listen(socketPath, resolve));
    child = spawnCrunExec(socketPath);
    let stderr = "";
    child.stderr?.setEncoding("utf8").on("data", (d: string) => (stderr = (stderr + d).slice(-2000)));
    const exit = new Promise<number>((resolve, reject) => {
      child!.on("error", reject);
      child!.on("close", (code, signal) => resolve(code ?? 128 + signalNumber(signal)));
    });
    exit.catch(() => {});
    let connected = false;
    const fd = await Promise.race([
      new Promise<number>((resolve, reject) => {
        server.once("connection", (socket: Socket) => {
          connected = true;
          // paused (pauseOnConnect): libuv reads nothing, so the message waits for recvmsg
          const handle = (socket as unknown as { _handle: { fd: number } })._handle;
          pty
            .receiveFd(handle.fd)
            .then(resolve, reject)
            .finally(() => socket.destroy());
        });
      }),
      exit.then(async (code) => {
        // crun hands the terminal over before the program starts, so a quick program (`exit 0`) may end
        // before libuv reports the connection already queued on the socket: give it a moment to be accepted
        if (!connected) await new Promise((resolve) => setTimeout(resolve, EXIT_BEFORE_ACCEPT_GRACE_MS));
        if (connected) return new Promise<number>(() => {}); // the terminal is being received: that settles the race
        throw new Error(`crun exec exited ${code} before it opened a terminal: ${stderr.trim() || "no message"}`);
      }),
    ]);
    const terminal = new ReadStream(fd);
    pty.setWindowSize(fd, size.cols, size.rows);
    const running = child;
    return {
      terminal,
      exit,
      resize: (cols, rows) => {
        if (!terminal.destroyed) pty.setWindowSize(fd, cols, rows);
      },
      kill: () => {
        terminal.destroy();
        // crun only waits for the program: the hangup ends it; a program that ignores SIGHUP keeps the box busy until it exits
        running.stdin?.destroy();
      },
    };
  } catch (err) {
    child?.kill("SIGKILL");
    throw err;
  } finally {
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
}
