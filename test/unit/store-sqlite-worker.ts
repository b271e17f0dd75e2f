/**
 * A second "process" on one SQLite file, for store.test.ts: a worker thread with its own
 * connection (better-sqlite3 is synchronous, so two stores in one thread never overlap). It
 * waits on a shared start flag so every worker begins at once, then opens the store (which
 * migrates) and runs its creates, answering each outcome ("ok" or the error's class name).
 */
import { parentPort, workerData } from "node:worker_threads";
import { newId, type InsertRules } from "../../packages/server/src/store/store.js";
import { SqliteStore } from "../../packages/server/src/store/sqlite-store.js";

export interface WorkerTask {
  path: string;
  /** Int32Array over a SharedArrayBuffer: 0 until the test lets every worker go. */
  start: SharedArrayBuffer;
  /** Creates to run after opening: in this org and app, each with one TCP endpoint. */
  creates?: { orgId: string; appId: string; count: number; rules: InsertRules };
}

const task = workerData as WorkerTask;
const start = new Int32Array(task.start);
Atomics.wait(start, 0, 0); // every worker leaves this line together
const outcomes: string[] = [];
try {
  const store = new SqliteStore(task.path);
  outcomes.push("opened");
  const creates = task.creates;
  for (let i = 0; creates && i < creates.count; i++) {
    const box = {
      id: newId("sb-"),
      appId: creates.appId,
      orgId: creates.orgId,
      name: null,
      imageName: "debian-12",
      imageArch: "amd64" as const,
      imagePackages: "",
      cpu: 1,
      memoryMiB: 512,
      diskMiB: 1024,
      nodeId: null,
    };
    await store.insertSailbox({ ...box, ports: [{ port: 22, protocol: "tcp" }] }, creates.rules).then(
      () => outcomes.push("ok"),
      (err: Error) => outcomes.push(`${err.constructor.name}: ${err.message}`),
    );
  }
  await store.close();
} catch (err) {
  outcomes.push(`${(err as Error).constructor.name}: ${(err as Error).message}`);
}
parentPort!.postMessage(outcomes);
