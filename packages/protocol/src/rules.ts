/**
 * Pure input rules, shared so the SDK can fail fast; the server runs the same
 * functions and stays authoritative.
 */
import { sailError } from "./errors.js";
import type { Architecture, ExecRequest, ImageRef, IngressPortSpec, SetOrgLimitsRequest } from "./types.js";

/** App and sailbox names: DNS-label-like, so they can appear in URLs later. */
const NAME_PATTERN = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

export function checkName(kind: "app" | "sailbox" | "org", name: unknown): string {
  if (typeof name !== "string" || !NAME_PATTERN.test(name)) {
    throw sailError("SAIL_NAME_INVALID", `${kind} name ${JSON.stringify(name)} is not valid: use 1-63 lowercase letters, digits and '-', starting and ending with a letter or digit`, {
      field: "name",
    });
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
  /** Room for the guest's writes over its image (MiB); the filesystem takes a little of it for itself. */
  diskMiBMin: 64,
  /** 1 TiB: a box's disk is a sparse file, so the host's free space is what really bounds it. */
  diskMiBMax: 1048576,
} as const;

export function checkResources(cpu: unknown, memoryMiB: unknown, hostCpus: number): void {
  if (cpu !== undefined && (typeof cpu !== "number" || !Number.isFinite(cpu) || cpu < RESOURCE_LIMITS.cpuMin || cpu > hostCpus)) {
    throw sailError("SAIL_RESOURCES_INVALID", `cpu must be a number of cores between ${RESOURCE_LIMITS.cpuMin} and ${hostCpus} (this host's cores), got ${JSON.stringify(cpu)}`, { field: "cpu" });
  }
  if (memoryMiB !== undefined && (typeof memoryMiB !== "number" || !Number.isInteger(memoryMiB) || memoryMiB < RESOURCE_LIMITS.memoryMiBMin || memoryMiB > RESOURCE_LIMITS.memoryMiBMax)) {
    throw sailError("SAIL_RESOURCES_INVALID", `memory must be a whole number of MiB between ${RESOURCE_LIMITS.memoryMiBMin} and ${RESOURCE_LIMITS.memoryMiBMax}, got ${JSON.stringify(memoryMiB)}`, {
      field: "memory",
    });
  }
}

/** Largest value an org limit may have: far above any host, so a typo is caught. */
export const ORG_LIMIT_MAX = 1_000_000;

/** A `PUT /v1/orgs/{name}/limits` body: each field a non-negative number (whole but cpu), null, or absent. */
export function checkOrgLimits(request: unknown): SetOrgLimitsRequest {
  if (typeof request !== "object" || request === null || Array.isArray(request)) throw sailError("SAIL_INVALID_ARGUMENT", "limits must be an object", { field: "limits" });
  const fields = ["sailboxes", "cpu", "memoryMiB", "tcpEndpoints"] as const;
  const unknown = Object.keys(request).find((key) => !(fields as readonly string[]).includes(key));
  if (unknown) throw sailError("SAIL_UNKNOWN_FIELD", `Unknown field ${JSON.stringify(unknown)}: org limits are ${fields.join(", ")}`, { field: unknown });
  const checked: SetOrgLimitsRequest = {};
  for (const field of fields) {
    const value = (request as Record<string, unknown>)[field];
    if (value === undefined) continue;
    const whole = field !== "cpu";
    if (value !== null && (typeof value !== "number" || !Number.isFinite(value) || value < 0 || value > ORG_LIMIT_MAX || (whole && !Number.isInteger(value)))) {
      throw sailError("SAIL_INVALID_ARGUMENT", `${field} must be ${whole ? "a whole number" : "a number"} from 0 to ${ORG_LIMIT_MAX}, or null for no limit; got ${JSON.stringify(value)}`, { field });
    }
    checked[field] = value as number | null;
  }
  return checked;
}

/** A box's disk limit in MiB: what it may write over its image, in bytes (the inodes follow from it). */
export function checkDisk(diskMiB: unknown): void {
  if (diskMiB !== undefined && (typeof diskMiB !== "number" || !Number.isInteger(diskMiB) || diskMiB < RESOURCE_LIMITS.diskMiBMin || diskMiB > RESOURCE_LIMITS.diskMiBMax)) {
    throw sailError("SAIL_RESOURCES_INVALID", `disk must be a whole number of MiB between ${RESOURCE_LIMITS.diskMiBMin} and ${RESOURCE_LIMITS.diskMiBMax}, got ${JSON.stringify(diskMiB)}`, {
      field: "disk",
      min: RESOURCE_LIMITS.diskMiBMin,
      max: RESOURCE_LIMITS.diskMiBMax,
    });
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

// --- ingress ports (the seed's "Ports and cleanup" and "Access controls") ---

/**
 * Services that commonly run without authentication, or with it off by default: publishing
 * one as raw TCP needs a cidrAllowlist or allowPublic: true. The one list, kept here.
 */
export const UNAUTHENTICATED_PORTS: Readonly<Record<number, string>> = {
  1433: "Microsoft SQL Server",
  2375: "Docker API (plain)",
  2379: "etcd",
  3306: "MySQL",
  5432: "PostgreSQL",
  5672: "RabbitMQ (AMQP)",
  5984: "CouchDB",
  6379: "Redis",
  7000: "Cassandra (inter-node)",
  8086: "InfluxDB",
  9042: "Cassandra",
  9200: "Elasticsearch",
  9300: "Elasticsearch (transport)",
  11211: "Memcached",
  27017: "MongoDB",
};

/** Used by the platform itself; never publishable. */
export const RESERVED_PORT = 10000;
/** SSH's port: refused as HTTP, fine as raw TCP. */
export const SSH_PORT = 22;

/**
 * Normalize `ingressPorts` (bare numbers are HTTP) and apply the rules that need no
 * server state: integers 1-65535, unique, 10000 reserved, 22 not as HTTP, cidrAllowlist
 * and allowPublic only on TCP. CIDR syntax and well-known ports are checked by the server.
 */
export function normalizeIngressPorts(input: unknown): IngressPortSpec[] {
  if (input === undefined || input === null) return [];
  if (!Array.isArray(input)) throw sailError("SAIL_PORT_INVALID", 'ingressPorts must be a list of ports, e.g. [3000] or [new IngressPort(5432, "tcp")]', { field: "ingressPorts" });
  const seen = new Set<number>();
  return input.map((entry: unknown) => {
    const spec: Partial<IngressPortSpec> = typeof entry === "number" ? { port: entry, protocol: "http" } : ((entry as Partial<IngressPortSpec>) ?? {});
    if (typeof spec !== "object") throw sailError("SAIL_PORT_INVALID", `ingress port ${JSON.stringify(entry)} must be a number or an IngressPort`, { field: "ingressPorts" });
    const { port, protocol = "http" } = spec;
    if (typeof port !== "number" || !Number.isInteger(port) || port < 1 || port > 65535) {
      throw sailError("SAIL_PORT_INVALID", `ingress port ${JSON.stringify(port)} is not valid: ports are whole numbers from 1 to 65535`, { port: typeof port === "number" ? port : undefined });
    }
    if (protocol !== "http" && protocol !== "tcp") {
      throw sailError("SAIL_PROTOCOL_INVALID", `ingress port ${port} has protocol ${JSON.stringify(protocol)}: use "http" or "tcp"`, { port });
    }
    if (seen.has(port)) throw sailError("SAIL_PORT_DUPLICATE", `ingress port ${port} is listed twice: ports must be unique within a sailbox`, { port });
    seen.add(port);
    if (port === RESERVED_PORT) throw sailError("SAIL_PORT_RESERVED", `ingress port ${RESERVED_PORT} is reserved by the platform: pick another port`, { port });
    if (port === SSH_PORT && protocol === "http") {
      throw sailError("SAIL_PORT_SSH_ON_HTTP", `ingress port 22 is reserved for SSH and cannot be HTTP: publish it as raw TCP (new IngressPort(22, "tcp")) or use ssh: true`, { port });
    }
    const cidrAllowlist = spec.cidrAllowlist;
    if (protocol === "http" && cidrAllowlist !== undefined && (!Array.isArray(cidrAllowlist) || cidrAllowlist.length > 0)) {
      throw sailError("SAIL_CIDR_ON_HTTP", `cidrAllowlist is a TCP-only control; HTTP port ${port} does not accept it: publish it as new IngressPort(${port}, "tcp", { cidrAllowlist })`, { port });
    }
    if (protocol === "http" && spec.allowPublic !== undefined) {
      throw sailError("SAIL_PROTOCOL_INVALID", `allowPublic applies to raw TCP ports only; HTTP port ${port} is always public`, { port });
    }
    if (cidrAllowlist !== undefined && (!Array.isArray(cidrAllowlist) || cidrAllowlist.some((c) => typeof c !== "string"))) {
      throw sailError("SAIL_CIDR_INVALID", `cidrAllowlist of port ${port} must be a list of CIDR strings such as "203.0.113.0/24"`, { port });
    }
    if (spec.allowPublic !== undefined && typeof spec.allowPublic !== "boolean") {
      throw sailError("SAIL_PROTOCOL_INVALID", `allowPublic of port ${port} must be true or false`, { port });
    }
    for (const [option, only] of [
      ["h2c", "http"],
      ["proxyProtocol", "tcp"],
    ] as const) {
      const value = spec[option];
      if (value === undefined) continue;
      if (typeof value !== "boolean") throw sailError("SAIL_PROTOCOL_INVALID", `${option} of port ${port} must be true or false`, { port });
      if (protocol !== only) {
        throw sailError(
          "SAIL_PROTOCOL_INVALID",
          option === "h2c"
            ? `h2c (HTTP/2 to the guest) applies to HTTP ports only; raw TCP port ${port} passes any protocol through`
            : `proxyProtocol applies to raw TCP ports only; HTTP port ${port} gets X-Forwarded-For instead`,
          { port },
        );
      }
    }
    if (protocol === "tcp" && UNAUTHENTICATED_PORTS[port] && (cidrAllowlist ?? []).length === 0 && spec.allowPublic !== true) {
      throw sailError(
        "SAIL_PORT_UNAUTHENTICATED",
        `Port ${port} (${UNAUTHENTICATED_PORTS[port]}) is a well-known unauthenticated service port; exposing it as raw TCP with neither a cidrAllowlist nor allowPublic: true is refused. Set a cidrAllowlist, or pass allowPublic: true to confirm you want it publicly reachable: new IngressPort(${port}, "tcp", { allowPublic: true })`,
        { port },
      );
    }
    const unknown = Object.keys(spec).filter((k) => !["port", "protocol", "cidrAllowlist", "allowPublic", "h2c", "proxyProtocol"].includes(k));
    if (unknown.length) throw sailError("SAIL_UNKNOWN_FIELD", `ingress port ${port} has unknown field "${unknown[0]}"`, { port, field: unknown[0] });
    return protocol === "http"
      ? { port, protocol, h2c: spec.h2c ?? false }
      : { port, protocol, cidrAllowlist: cidrAllowlist ?? [], allowPublic: spec.allowPublic ?? false, proxyProtocol: spec.proxyProtocol ?? false };
  });
}

/**
 * The label of an HTTP listener's hostname: `<port>-<box id without "sb-">`, e.g.
 * `3000-k3j2h4g5f6d7`. Derived, not stored, so URLs survive restarts.
 */
export function httpLabel(sailboxId: string, port: number): string {
  return `${port}-${sailboxId.replace(/^sb-/, "")}`;
}

export function parseHttpLabel(label: string): { sailboxId: string; port: number } | undefined {
  const match = /^(\d{1,5})-([a-z0-9]{12})$/.exec(label);
  return match ? { sailboxId: `sb-${match[2]}`, port: Number(match[1]) } : undefined;
}

const SSH_KEY_TYPES = ["ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com"];

/**
 * An OpenSSH public key line ("type base64 [comment]"), checked by decoding it: the blob
 * must start with its own type name (RFC 4253 §6.6). Returns the key without its comment.
 */
export function checkSshPublicKey(text: unknown, source = "the key"): string {
  const invalid = (why: string) => sailError("SAIL_SSH_KEY_INVALID", `${source} is not an SSH public key (${why}): pass the contents of a .pub file, such as ~/.ssh/id_ed25519.pub`, { field: "ssh" });
  if (typeof text !== "string") throw invalid("not text");
  const [type, blob] = text.trim().split(/\s+/);
  if (!type || !SSH_KEY_TYPES.includes(type)) throw invalid(`unknown key type ${JSON.stringify((type ?? "").slice(0, 40))}`);
  if (!blob || !/^[A-Za-z0-9+/]+={0,2}$/.test(blob)) throw invalid("the key data is not base64");
  const bytes = Uint8Array.from(atob(blob), (c) => c.charCodeAt(0));
  const nameLength = ((bytes[0]! << 24) | (bytes[1]! << 16) | (bytes[2]! << 8) | bytes[3]!) >>> 0;
  const name = new TextDecoder().decode(bytes.subarray(4, 4 + nameLength));
  if (bytes.length < 4 || name !== type) throw invalid("the key data does not match its type");
  return `${type} ${blob}`;
}

/** idleTimeout: whole seconds, at least 1, at most a week. */
export function checkIdleTimeout(value: unknown): number | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "number" || !Number.isInteger(value) || value < 1 || value > 7 * 86_400) {
    throw sailError("SAIL_INVALID_ARGUMENT", `idleTimeout must be a whole number of seconds from 1 to 604800, got ${JSON.stringify(value)}`, { field: "idleTimeout" });
  }
  return value;
}

export const APT_PACKAGE_LIMIT = 64;

/**
 * Debian package names (Debian policy 5.6.1: lowercase letters, digits, `+`, `-`, `.`, at
 * least two characters, starting alphanumeric). Returns them sorted and without duplicates,
 * so the same set always names the same cached image.
 */
export function checkAptPackages(value: unknown): string[] {
  if (value === undefined || value === null) return [];
  const invalid = (why: string) => sailError("SAIL_IMAGE_PACKAGES_INVALID", `image.aptPackages ${why}`, { field: "image.aptPackages" });
  if (!Array.isArray(value)) throw invalid('must be a list of Debian package names, e.g. ["postgresql"]');
  if (value.length > APT_PACKAGE_LIMIT) throw invalid(`has ${value.length} packages; at most ${APT_PACKAGE_LIMIT} are allowed`);
  for (const name of value) {
    if (typeof name !== "string" || !/^[a-z0-9][a-z0-9+.-]{1,99}$/.test(name)) {
      throw invalid(`has ${JSON.stringify(typeof name === "string" ? name.slice(0, 100) : name)}, which is not a Debian package name (lowercase letters, digits, "+", "-" and ".", e.g. "postgresql")`);
    }
  }
  return [...new Set(value as string[])].sort();
}

/**
 * An image's name as the SDKs print it and the CLI takes it: the base (`debian`,
 * `debian_amd64`, `debian_arm64`), then `+` and its packages, comma-separated:
 * "debian_arm64+postgresql,redis-server" (the first `+` ends the base; package names have no `,`).
 */
export function imageName(ref: { arch?: Architecture; aptPackages?: readonly string[] }): string {
  const base = ref.arch ? `debian_${ref.arch}` : "debian";
  return ref.aptPackages?.length ? `${base}+${ref.aptPackages.join(",")}` : base;
}

/** The image an `imageName` names; `extraPackages` are added (the CLI's `--apt`). */
export function parseImageName(text: string, extraPackages: readonly string[] = []): ImageRef {
  const plus = text.indexOf("+");
  const base = plus < 0 ? text : text.slice(0, plus);
  const match = /^debian(?:_(amd64|arm64))?$/.exec(base);
  if (!match) {
    throw sailError("SAIL_IMAGE_UNKNOWN", `Unknown image ${JSON.stringify(text.slice(0, 100))}: use debian, debian_amd64 or debian_arm64, optionally with +package,package`, { field: "image" });
  }
  const listed = plus < 0 ? [] : text.slice(plus + 1).split(",");
  const aptPackages = checkAptPackages([...listed, ...extraPackages]);
  return { name: "debian", ...(match[1] ? { arch: match[1] as Architecture } : {}), ...(aptPackages.length ? { aptPackages } : {}) };
}

/**
 * An `Idempotency-Key` header (draft-ietf-httpapi-idempotency-key-header): 1-255 visible
 * ASCII characters, e.g. a UUID. The SDKs make one per create call.
 */
export function checkIdempotencyKey(value: unknown): string {
  if (typeof value !== "string" || !/^[\x21-\x7e]{1,255}$/.test(value)) {
    throw sailError("SAIL_IDEMPOTENCY_KEY_INVALID", "The Idempotency-Key header must be 1-255 visible ASCII characters (no spaces), e.g. a UUID", { field: "Idempotency-Key" });
  }
  return value;
}

/** Token labels: free text for people, one line, at most 100 characters. */
export function checkTokenLabel(value: unknown): string {
  if (value === undefined || value === null) return "";
  // eslint-disable-next-line no-control-regex -- control characters are what it refuses
  if (typeof value !== "string" || value.length > 100 || /[\x00-\x1f\x7f]/.test(value)) {
    throw sailError("SAIL_INVALID_ARGUMENT", "label must be one line of text of at most 100 characters", { field: "label" });
  }
  return value;
}
