import { spawn, execFileSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";

export interface WrkResult {
  rps: number;
  p50Ms: number;
  p99Ms: number;
  errors: number;
}

/**
 * A client's command line, run where `names` resolve to 127.0.0.1: a private mount namespace
 * with its own /etc/hosts (util-linux `unshare -m` makes mounts private, so the host's file is
 * untouched). The load generators then put the box's name in the URL and send it as the TLS SNI
 * and the Host, as a browser does: wrk sends the URL's host as SNI even when it is an address, and
 * a proxy that picks its certificate by SNI (Caddy) has none for 127.0.0.1.
 */
export function withLoopbackNames(names: string[], argv: string[], address = "127.0.0.1"): string[] {
  return ["unshare", "-m", "sh", "-c", 'mount --bind "$0" /etc/hosts && exec "$@"', hostsFile(names, address), ...argv];
}

const hostsFiles = new Map<string, string>();
/** A hosts file where `names` are `address` (loopback unless a bench runs against another machine's address, e.g. a cluster node's). */
function hostsFile(names: string[], address: string): string {
  const key = `${address} ${names.join(" ")}`;
  if (!hostsFiles.has(key)) {
    const dir = mkdtempSync(join(tmpdir(), "sail-bench-hosts-"));
    const file = join(dir, "hosts");
    writeFileSync(file, ["127.0.0.1 localhost", ...names.map((name) => `${address} ${name}`)].join("\n") + "\n");
    hostsFiles.set(key, file);
    // kept while the bench runs (each load generator reads it), removed when the bench exits
    if (hostsFiles.size === 1) process.once("exit", () => hostsFiles.forEach((f) => rmSync(dirname(f), { recursive: true, force: true })));
  }
  return hostsFiles.get(key)!;
}

/** A load generator's output; past `timeoutMs` it is killed and this throws (ETIMEDOUT). */
const run = (argv: string[], timeoutMs: number) => execFileSync(argv[0]!, argv.slice(1), { encoding: "utf8", timeout: timeoutMs, killSignal: "SIGKILL" });

/** wrk with latency percentiles; errors are non-2xx/3xx answers plus socket errors. `names`: see withLoopbackNames. */
export function wrk(url: string, options: { names?: string[]; address?: string; seconds?: number; connections?: number; threads?: number; headers?: string[] } = {}): WrkResult {
  const args = [`-t${options.threads ?? 2}`, `-c${options.connections ?? 64}`, `-d${options.seconds ?? 8}s`, "--latency"];
  for (const header of options.headers ?? []) args.push("-H", header);
  const argv = ["wrk", ...args, url];
  const out = run(options.names ? withLoopbackNames(options.names, argv, options.address) : argv, ((options.seconds ?? 8) + 60) * 1000);
  const unit = (value: string, u: string) => Number(value) * ({ us: 0.001, ms: 1, s: 1000 } as Record<string, number>)[u]!;
  const pct = (p: string) => {
    const m = new RegExp(`^\\s*${p}%\\s+([\\d.]+)(us|ms|s)`, "m").exec(out);
    return m ? unit(m[1]!, m[2]!) : Number.NaN;
  };
  const errors = /Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? "0";
  const socketErrors = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  return {
    rps: Number(/Requests\/sec:\s+([\d.]+)/.exec(out)![1]),
    p50Ms: pct("50"),
    p99Ms: pct("99"),
    errors: Number(errors) + (socketErrors ? socketErrors.slice(1).reduce((a, b) => a + Number(b), 0) : 0),
  };
}

/** A child process the bench started; stop() ends it by its PID and waits, so its ports are free again. */
export interface Started {
  stop(): Promise<void>;
}

/** `dir`: its temporary directory, removed once it has exited. */
function started(child: ChildProcess, name: string, dir: string): Started {
  let exited = child.exitCode !== null;
  child.once("exit", () => (exited = true));
  return {
    async stop() {
      if (!exited) {
        const exit = new Promise((resolve) => child.once("exit", resolve));
        child.kill("SIGTERM");
        const timer = setTimeout(() => {
          console.error(`${name} (pid ${child.pid}) ignored SIGTERM for 5 s; killing it`);
          child.kill("SIGKILL");
        }, 5000);
        await exit;
        clearTimeout(timer);
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * A throwaway nginx with the given http{} body: `worker_processes auto`, as its users run it.
 * `modules`: dynamic modules to load (Debian ships ngx_http_lua as one, after its NDK dependency).
 */
export function startNginx(httpBlock: string, options: { netns?: string; workers?: string; modules?: string[] } = {}): Started {
  const dir = mkdtempSync(join(tmpdir(), "sail-bench-nginx-"));
  const conf = join(dir, "nginx.conf");
  const modules = (options.modules ?? []).map((name) => `load_module /usr/lib/nginx/modules/${name}.so;\n`).join("");
  writeFileSync(
    conf,
    `${modules}worker_processes ${options.workers ?? "auto"};\ndaemon off;\npid ${dir}/nginx.pid;\nerror_log ${dir}/error.log warn;\nevents { worker_connections 4096; }\n` +
      `http {\n access_log off;\n client_body_temp_path ${dir}/body;\n proxy_temp_path ${dir}/proxy;\n fastcgi_temp_path ${dir}/fcgi;\n uwsgi_temp_path ${dir}/uwsgi;\n scgi_temp_path ${dir}/scgi;\n${httpBlock}\n}\n`,
  );
  // errors go to stderr until the config is read, then to error.log: a bad config shows in the bench's output
  const argv = ["nginx", "-c", conf, "-p", dir];
  const child = options.netns ? spawn("ip", ["netns", "exec", options.netns, ...argv], { stdio: "inherit" }) : spawn(argv[0]!, argv.slice(1), { stdio: "inherit" });
  return started(child, `nginx ${conf}`, dir);
}

/**
 * A throwaway Caddy with the given JSON config (`caddy run`, no Caddyfile adapter in between). Its
 * state (autosaved config, storage) stays in a temporary directory instead of the user's home.
 */
export function startCaddy(config: object): Started {
  const dir = mkdtempSync(join(tmpdir(), "sail-bench-caddy-"));
  const file = join(dir, "caddy.json");
  writeFileSync(file, JSON.stringify(config, null, 1));
  const child = spawn("caddy", ["run", "--config", file], { stdio: "inherit", env: { ...process.env, HOME: dir, XDG_CONFIG_HOME: dir, XDG_DATA_HOME: dir } });
  return started(child, `caddy ${file}`, dir);
}

export interface H2loadResult {
  rps: number;
  meanMs: number;
  failed: number;
}

/**
 * h2load (nghttp2-client): `requests` over HTTP/2 with TLS, `clients` connections with `streams`
 * concurrent streams each. h2load counts as failed a request without an answer or with a 4xx/5xx
 * one; a connection silent for 10 s is closed and its requests fail. A request count, not a
 * duration (-D): on a busy machine h2load 1.52's duration began before its last clients had
 * connected, and one of them went on sending after "Stopped all clients" (12 minutes into a 2 s run).
 */
export function h2load(url: string, options: { requests?: number; clients?: number; streams?: number; names?: string[] } = {}): H2loadResult {
  const args = ["-n", String(options.requests ?? 200_000), "-c", String(options.clients ?? 64), "-m", String(options.streams ?? 10), "-t", "2", "-N", "10"];
  const argv = ["h2load", ...args, url];
  const out = run(options.names ? withLoopbackNames(options.names, argv) : argv, 15 * 60_000);
  const unit = (value: string, u: string) => Number(value) * ({ us: 0.001, ms: 1, s: 1000 } as Record<string, number>)[u]!;
  const mean = /time for request:\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)/.exec(out);
  return {
    rps: Number(/finished in [\d.]+\w+, ([\d.]+) req\/s/.exec(out)?.[1] ?? 0),
    meanMs: mean ? unit(mean[1]!, mean[2]!) : Number.NaN,
    failed: Number(/requests: \d+ total, \d+ started, \d+ done, \d+ succeeded, (\d+) failed/.exec(out)?.[1] ?? 0),
  };
}

/**
 * CPU seconds (user + system, all threads) used so far by the processes listening on 127.0.0.1:`port`
 * in this network namespace: nginx's master and workers, Caddy, HAProxy. Per request, it is what a
 * proxy costs, which a busy machine disturbs less than throughput: there a multi-threaded process
 * can simply get a larger share of the CPU.
 */
export function cpuSecondsListening(port: number): number {
  const sockets = execFileSync("ss", ["-ltnpH", `src 127.0.0.1:${port}`], { encoding: "utf8" });
  const pids = new Set([...sockets.matchAll(/pid=(\d+)/g)].map((m) => m[1]!));
  if (!pids.size) throw new Error(`no process listens on 127.0.0.1:${port}`);
  let ticks = 0;
  for (const pid of pids) {
    // proc(5): utime and stime are fields 14 and 15, counted after the ")" that ends the command name
    const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
    ticks += Number(fields[11]) + Number(fields[12]);
  }
  return ticks / CLOCK_TICKS_PER_SECOND;
}

/** USER_HZ: 100 on every Linux architecture Sail runs on (getconf CLK_TCK). */
const CLOCK_TICKS_PER_SECOND = 100;

export async function waitForPort(check: () => Promise<boolean>, what = "benchmark target"): Promise<void> {
  for (let i = 0; i < 100; i++) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${what} never came up (its own errors are above)`);
}
