import { InvalidArgumentError, type Sailbox } from "@sail/sdk";

/**
 * `sail box exec -it`: the box's terminal in this one, like `docker exec -it`. The local
 * terminal goes to raw mode (so Ctrl-C, arrows and Tab reach the box), its size follows
 * SIGWINCH, and the exit code is the program's.
 */
export async function runInteractive(sb: Sailbox, options: { cmd?: string; cwd?: string; env?: Record<string, string> }): Promise<number> {
  const { stdin, stdout } = process;
  if (!stdin.isTTY) {
    throw new InvalidArgumentError("SAIL_INVALID_ARGUMENT", "-it needs a terminal, and stdin is not one: run it in a terminal, or drop -it to run a command without one (sail box exec BOX -- CMD)", {
      field: "tty",
    });
  }
  const pty = await sb.pty({ ...options, cols: stdout.columns || 80, rows: stdout.rows || 24 });
  const onInput = (chunk: Buffer) => pty.write(chunk);
  const onResize = () => pty.resize(stdout.columns || 80, stdout.rows || 24);
  const hangUp = () => pty.close();
  pty.onData((chunk) => stdout.write(chunk));
  stdin.setRawMode(true);
  stdin.on("data", onInput);
  stdin.resume();
  stdout.on("resize", onResize);
  process.once("SIGHUP", hangUp);
  process.once("SIGTERM", hangUp);
  try {
    return await pty.wait();
  } finally {
    stdin.off("data", onInput);
    stdin.setRawMode(false);
    stdin.pause();
    stdout.off("resize", onResize);
    process.off("SIGHUP", hangUp);
    process.off("SIGTERM", hangUp);
  }
}
