import type { Command } from "commander";
import { InvalidArgumentError } from "@sail/sdk";
import { runInteractive } from "../interactive.js";
import { resolveBox } from "./shared.js";

/** `sail box exec`: a command in the box, its output streamed; `-it` on a terminal. */
export function registerExec(box: Command): void {
  box
    .command("exec")
    .description("Run a command in a Sailbox with /bin/sh -c; exits with the command's exit code. -it: interactively, on a terminal")
    .argument("<box>", "sailbox id, or name with --app")
    .argument("[cmd...]", "the command (put it after --); with -it it may be left out for the box's login shell")
    .option("--app <name>", "app of a box given by name", "default")
    .option("--cwd <dir>", "working directory inside the box")
    .option("-e, --env <KEY=VALUE...>", "environment variables")
    .option("--background", "start it and return; prints the exec id")
    .option("-i, --interactive", "send your keystrokes to it (use with -t)")
    .option("-t, --tty", "run it on a terminal in the box, like docker exec -it: raw mode, Ctrl-C reaches the box, resizes follow your window")
    .addHelpText(
      "after",
      [
        "",
        "Options go before --; everything after -- is the command. Several words after -- are one command and",
        "its arguments, passed as given (each word quoted for the box's shell, as docker exec and kubectl exec do);",
        "a single word is a shell line, so pipes, ; and $(...) in it run in the box.",
        "",
        "Examples:",
        "  sail box exec sb-abc123 -- ls -la /",
        "  sail box exec demo -- sh -c 'stty size; tty; exit 3'   # sh gets -c and one script",
        "  sail box exec demo -- 'echo $(hostname) | tr a-z A-Z'  # one word: a shell line, run in the box",
        "  sail box exec web-demo --cwd /srv --background -- python3 -m http.server 3000",
        "  sail box exec -it web-demo              # a login shell in the box; exit (or Ctrl-D) ends it",
        "  sail box exec -it web-demo -- top       # any full-screen program",
      ].join("\n"),
    )
    .action(async (idOrName: string, cmd: string[], opts: { app: string; cwd?: string; env?: string[]; background?: boolean; interactive?: boolean; tty?: boolean }) => {
      const env = Object.fromEntries((opts.env ?? []).map((kv) => [kv.slice(0, kv.indexOf("=")), kv.slice(kv.indexOf("=") + 1)]));
      const command = shellLine(cmd);
      if (opts.interactive || opts.tty) {
        if (opts.background) throw new InvalidArgumentError("SAIL_INVALID_ARGUMENT", "--background and -it do not go together: a background exec has no terminal", { field: "background" });
        const sb = await resolveBox(idOrName, opts.app);
        process.exitCode = await runInteractive(sb, { cmd: command || undefined, cwd: opts.cwd, env: opts.env ? env : undefined });
        return;
      }
      if (!command) throw new InvalidArgumentError("SAIL_EXEC_INVALID", "Give the command after --, e.g. sail box exec BOX -- uname -a (or -it for a shell)", { field: "cmd" });
      const sb = await resolveBox(idOrName, opts.app);
      if (opts.background) {
        const proc = await sb.exec(command, { cwd: opts.cwd, env, background: true }).wait();
        console.log(`started ${proc.id} in ${sb.id}`);
        return;
      }
      const proc = sb.exec(command, { cwd: opts.cwd, env });
      const pipe = async (from: AsyncIterable<string>, to: NodeJS.WriteStream) => {
        for await (const text of from) to.write(text);
      };
      const [exitCode] = await Promise.all([proc.wait(), pipe(proc.stdout, process.stdout), pipe(proc.stderr, process.stderr)]);
      process.exitCode = exitCode;
    });
}

/**
 * The command for /bin/sh -c from the words after `--`: one word is a shell line as given
 * (`-- 'echo $(hostname)'`); several are a program and its arguments, each quoted for the
 * shell, so `-- sh -c 'stty size; exit 3'` runs sh with two arguments, as docker exec does.
 */
export function shellLine(words: readonly string[]): string {
  if (words.length <= 1) return words[0] ?? "";
  return words.map(shellQuote).join(" ");
}

/** A word the shell reads back as itself: bare when it has no special character, else in single quotes. */
function shellQuote(word: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
}
