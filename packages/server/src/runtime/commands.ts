import { constants } from "node:os";
import { spawn, type SpawnOptions } from "node:child_process";

export interface CommandResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Run a program (no shell), collect its output; never throws for a non-zero exit. */
export function runCommand(file: string, args: readonly string[], options: SpawnOptions & { input?: string } = {}): Promise<CommandResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { ...options, stdio: [options.input === undefined ? "ignore" : "pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout!.setEncoding("utf8").on("data", (d: string) => (stdout += d));
    child.stderr!.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    child.on("error", reject);
    child.on("close", (code, signal) => resolve({ code: code ?? 128 + signalNumber(signal), stdout, stderr }));
    if (options.input !== undefined) {
      child.stdin!.on("error", () => {}); // a program that exits early reports through its exit code
      child.stdin!.end(options.input);
    }
  });
}

/** Run a program and throw, with its stderr, when it fails. */
export async function mustRun(file: string, args: readonly string[], options: SpawnOptions & { input?: string } = {}): Promise<string> {
  const result = await runCommand(file, args, options);
  if (result.code !== 0) {
    throw new Error(`${file} ${args.join(" ")} exited ${result.code}: ${(result.stderr || result.stdout).trim().slice(-2000)}`);
  }
  return result.stdout;
}

export function signalNumber(signal: NodeJS.Signals | null): number {
  return signal ? (constants.signals[signal] ?? 0) : 0;
}
