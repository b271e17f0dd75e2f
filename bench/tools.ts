import { spawn, execFileSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface WrkResult {
  rps: number;
  p50Ms: number;
  p99Ms: number;
  errors: number;
}

/** wrk with latency percentiles; HTTPS targets are given a Host header for routing. */
export function wrk(url: string, options: { host?: string; seconds?: number; connections?: number; threads?: number; headers?: string[] } = {}): WrkResult {
  const args = [`-t${options.threads ?? 2}`, `-c${options.connections ?? 64}`, `-d${options.seconds ?? 8}s`, "--latency"];
  if (options.host) args.push("-H", `Host: ${options.host}`);
  for (const header of options.headers ?? []) args.push("-H", header);
  const out = execFileSync("wrk", [...args, url], { encoding: "utf8" });
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

/** A throwaway nginx with the given http{} body: `worker_processes auto`, as its users run it. */
export function startNginx(httpBlock: string, options: { netns?: string; workers?: string } = {}): { stop(): void } {
  const dir = mkdtempSync(join(tmpdir(), "sail-bench-nginx-"));
  const conf = join(dir, "nginx.conf");
  writeFileSync(
    conf,
    `worker_processes ${options.workers ?? "auto"};\ndaemon off;\npid ${dir}/nginx.pid;\nerror_log ${dir}/error.log warn;\nevents { worker_connections 4096; }\n` +
      `http {\n access_log off;\n client_body_temp_path ${dir}/body;\n proxy_temp_path ${dir}/proxy;\n fastcgi_temp_path ${dir}/fcgi;\n uwsgi_temp_path ${dir}/uwsgi;\n scgi_temp_path ${dir}/scgi;\n${httpBlock}\n}\n`,
  );
  const argv = ["nginx", "-c", conf, "-p", dir];
  const child: ChildProcess = options.netns ? spawn("ip", ["netns", "exec", options.netns, ...argv], { stdio: "inherit" }) : spawn(argv[0]!, argv.slice(1), { stdio: "inherit" });
  return {
    stop() {
      child.kill("SIGTERM");
    },
  };
}

export interface H2loadResult {
  rps: number;
  meanMs: number;
  failed: number;
}

/** h2load (nghttp2-client): HTTP/2 over TLS, `clients` connections with `streams` concurrent streams each. */
export function h2load(url: string, options: { requests?: number; clients?: number; streams?: number; host?: string } = {}): H2loadResult {
  const args = ["-n", String(options.requests ?? 200_000), "-c", String(options.clients ?? 64), "-m", String(options.streams ?? 10), "-t", "2"];
  if (options.host) args.push("-H", `:authority: ${options.host}`);
  const out = execFileSync("h2load", [...args, url], { encoding: "utf8" });
  const unit = (value: string, u: string) => Number(value) * ({ us: 0.001, ms: 1, s: 1000 } as Record<string, number>)[u]!;
  const mean = /time for request:\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)/.exec(out);
  return {
    rps: Number(/finished in [\d.]+\w+, ([\d.]+) req\/s/.exec(out)?.[1] ?? 0),
    meanMs: mean ? unit(mean[1]!, mean[2]!) : Number.NaN,
    failed: Number(/requests: \d+ total, \d+ started, \d+ done, \d+ succeeded, (\d+) failed/.exec(out)?.[1] ?? 0),
  };
}

export async function waitForPort(check: () => Promise<boolean>): Promise<void> {
  for (let i = 0; i < 100; i++) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error("benchmark target never came up");
}
