/**
 * Freezing is bounded: a real cgroup whose task cannot stop is retried, thawed and reported.
 * The task: `dd` allocating past its memory cgroup's limit with the OOM killer off, which waits
 * in mem_cgroup_oom_synchronize (TASK_KILLABLE, not freezable), so the freezer stays FREEZING.
 */
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from "node:fs";
import { after, describe, test } from "node:test";
import { FreezeError, freezeCgroupV1 } from "../../packages/server/src/runtime/freezer.js";

const name = `sail-freeze-test-${process.pid}`;
const memory = `/sys/fs/cgroup/memory/${name}`;
const freezer = `/sys/fs/cgroup/freezer/${name}`;
const v1 = existsSync("/sys/fs/cgroup/freezer/freezer.state") || existsSync("/sys/fs/cgroup/freezer/cgroup.procs");
let task: ChildProcess | undefined;

after(async () => {
  if (existsSync(`${freezer}/freezer.state`)) writeFileSync(`${freezer}/freezer.state`, "THAWED");
  if (task && task.exitCode === null && task.signalCode === null) {
    const exited = new Promise((resolve) => task!.once("exit", resolve));
    task.kill("SIGKILL");
    await exited;
  }
  for (const dir of [freezer, memory]) {
    for (let i = 0; i < 50 && existsSync(dir); i++) {
      try {
        rmdirSync(dir);
      } catch {
        await new Promise((r) => setTimeout(r, 20)); // the killed task is still leaving
      }
    }
  }
});

async function eventually(check: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 400; i++) {
    if (check()) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  assert.fail(`never: ${what}`);
}

describe("the cgroup-v1 freezer", { skip: !v1 && "no cgroup-v1 freezer on this host" }, () => {
  test("a cgroup freezes at once when nothing resists", async () => {
    mkdirSync(freezer);
    task = spawn("sh", ["-c", `echo $$ > ${freezer}/cgroup.procs; exec sleep 60`], { stdio: "ignore" });
    await eventually(() => readFileSync(`${freezer}/cgroup.procs`, "utf8").trim() !== "", "the task is in the cgroup");
    const { attempts } = await freezeCgroupV1(freezer);
    assert.equal(readFileSync(`${freezer}/freezer.state`, "utf8").trim(), "FROZEN");
    console.log(`frozen after ${attempts} attempt(s)`);
    writeFileSync(`${freezer}/freezer.state`, "THAWED");
    const exited = new Promise((resolve) => task!.once("exit", resolve));
    task.kill("SIGKILL");
    await exited;
  });

  test("a task that cannot stop: retried, thawed and reported; the task can still be killed afterwards", async () => {
    mkdirSync(memory, { recursive: true });
    mkdirSync(freezer, { recursive: true });
    writeFileSync(`${memory}/memory.limit_in_bytes`, String(32 << 20));
    writeFileSync(`${memory}/memory.oom_control`, "1"); // no OOM kill: the task waits at the limit
    task = spawn("sh", ["-c", `echo $$ > ${memory}/cgroup.procs; echo $$ > ${freezer}/cgroup.procs; exec dd if=/dev/zero of=/dev/null bs=128M count=1`], { stdio: "ignore" });
    await eventually(() => /under_oom 1/.test(readFileSync(`${memory}/memory.oom_control`, "utf8")), "dd waits at its memory limit");

    const started = Date.now();
    const error = await freezeCgroupV1(freezer).then(
      () => undefined,
      (err: unknown) => err,
    );
    assert.ok(error instanceof FreezeError, `expected FreezeError, got ${String(error)}`);
    assert.match(error.message, /was still FREEZING after 1000 attempts .*thawed it again/);
    assert.equal(readFileSync(`${freezer}/freezer.state`, "utf8").trim(), "THAWED", "never left FREEZING");
    console.log(`gave up after ${Date.now() - started} ms`);

    // what terminate does to a box's processes: SIGKILL reaches a task in a killable wait
    const exited = new Promise((resolve) => task!.once("exit", (_code, signal) => resolve(signal)));
    task.kill("SIGKILL");
    assert.equal(await exited, "SIGKILL");
  });

  test("an aborted freeze stops retrying and thaws too", async () => {
    const controller = new AbortController();
    if (!existsSync(freezer)) mkdirSync(freezer);
    // an empty cgroup freezes at once: abort before the first attempt
    controller.abort(new Error("the sleep step passed its deadline"));
    await assert.rejects(freezeCgroupV1(freezer, { signal: controller.signal }), /could not freeze .*the sleep step passed its deadline; thawed it again/);
    assert.equal(readFileSync(`${freezer}/freezer.state`, "utf8").trim(), "THAWED");
  });
});
