/**
 * Pure input rules, shared so the SDK can fail fast; the server runs the same
 * functions and stays authoritative.
 */
import { sailError } from "./errors.js";
import type { Architecture, ExecRequest } from "./types.js";

/** App and sailbox names: DNS-label-like, so they can appear in URLs later. */
const NAME_PATTERN = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

export function checkName(kind: "app" | "sailbox", name: unknown): string {
  if (typeof name !== "string" || !NAME_PATTERN.test(name)) {
    throw sailError(
      "SAIL_NAME_INVALID",
      `${kind} name ${JSON.stringify(name)} is not valid: use 1-63 lowercase letters, digits and '-', starting and ending with a letter or digit`,
      { field: "name" },
    );
  }
  return name;
}

export const ARCHITECTURES: readonly Architecture[] = ["amd64", "arm64"];

/** Node's `process.arch` to Debian's architecture name. */
export function debianArch(nodeArch: string): Architecture | undefined {
  return ({ x64: "amd64", arm64: "arm64" } as Record<string, Architecture>)[nodeArch];
}

export const RESOURCE_LIMITS = {
  cpuMin: 0.1,
  memoryMiBMin: 64,
  memoryMiBMax: 65536,
} as const;

export function checkResources(cpu: unknown, memoryMiB: unknown, hostCpus: number): void {
  if (cpu !== undefined && (typeof cpu !== "number" || !Number.isFinite(cpu) || cpu < RESOURCE_LIMITS.cpuMin || cpu > hostCpus)) {
    throw sailError("SAIL_RESOURCES_INVALID", `cpu must be a number of cores between ${RESOURCE_LIMITS.cpuMin} and ${hostCpus} (this host's cores), got ${JSON.stringify(cpu)}`, { field: "cpu" });
  }
  if (
    memoryMiB !== undefined &&
    (typeof memoryMiB !== "number" || !Number.isInteger(memoryMiB) || memoryMiB < RESOURCE_LIMITS.memoryMiBMin || memoryMiB > RESOURCE_LIMITS.memoryMiBMax)
  ) {
    throw sailError("SAIL_RESOURCES_INVALID", `memory must be a whole number of MiB between ${RESOURCE_LIMITS.memoryMiBMin} and ${RESOURCE_LIMITS.memoryMiBMax}, got ${JSON.stringify(memoryMiB)}`, { field: "memory" });
  }
}

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
export const EXEC_LIMITS = { cmdMaxBytes: 128 * 1024, envMaxEntries: 256 } as const;

export function checkExec(req: ExecRequest): void {
  const bad = (message: string, field: string) => sailError("SAIL_EXEC_INVALID", message, { field });
  if (typeof req.cmd !== "string" || req.cmd.length === 0) throw bad("cmd must be a non-empty string", "cmd");
  if (new TextEncoder().encode(req.cmd).length > EXEC_LIMITS.cmdMaxBytes) throw bad(`cmd is longer than ${EXEC_LIMITS.cmdMaxBytes} bytes`, "cmd");
  if (req.cmd.includes("\0")) throw bad("cmd must not contain NUL bytes", "cmd");
  if (req.cwd !== undefined && (typeof req.cwd !== "string" || !req.cwd.startsWith("/") || req.cwd.includes("\0"))) {
    throw bad(`cwd must be an absolute path, got ${JSON.stringify(req.cwd)}`, "cwd");
  }
  if (req.background !== undefined && typeof req.background !== "boolean") throw bad("background must be true or false", "background");
  if (req.env === undefined) return;
  if (typeof req.env !== "object" || req.env === null || Array.isArray(req.env)) throw bad("env must be an object of strings", "env");
  const entries = Object.entries(req.env);
  if (entries.length > EXEC_LIMITS.envMaxEntries) throw bad(`env has more than ${EXEC_LIMITS.envMaxEntries} entries`, "env");
  for (const [key, value] of entries) {
    if (!ENV_NAME.test(key)) throw bad(`env name ${JSON.stringify(key)} is not a valid variable name`, "env");
    if (typeof value !== "string" || value.includes("\0")) throw bad(`env ${key} must be a string without NUL bytes`, "env");
  }
}
