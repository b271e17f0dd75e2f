/**
 * One store suite, run against both implementations: SQLite (a temp file) and PostgreSQL (a real
 * PostgreSQL 15 this file starts, test/fixtures/postgres.ts). Each test gets an empty database.
 * A second `open()` on one database is a second connection (SQLite) or a second pool
 * (PostgreSQL): what a second control-plane process has. The races fire at once through them;
 * on SQLite (synchronous, one process) they check the same contract without true overlap.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, afterEach, before, describe, test, type TestContext } from "node:test";
import { Worker } from "node:worker_threads";
import Database from "better-sqlite3";
import pg from "pg";
import type { IngressPortSpec } from "@sail/protocol";
import { MIGRATIONS, migrationSql } from "../../packages/server/src/store/migrations.js";
import { PostgresStore, type PostgresStoreOptions } from "../../packages/server/src/store/postgres-store.js";
import { SqliteStore } from "../../packages/server/src/store/sqlite-store.js";
import {
  hashToken,
  NameTakenError,
  newId,
  OrgLimitReachedError,
  StoreUnavailableError,
  TcpPortsExhaustedError,
  type AppRow,
  type InsertRules,
  type NewSailbox,
  type OrgRow,
  type Store,
} from "../../packages/server/src/store/store.js";
import { startPostgres, type PostgresServer } from "../fixtures/postgres.js";
import type { WorkerTask } from "./store-sqlite-worker.js";

/** An empty database of one backend. */
interface TestDatabase {
  /** A store on it, migrated: each call a new connection (pool), as another process would open. */
  open(options?: PostgresStoreOptions): Promise<Store>;
  /** The migration number the database records. */
  schemaVersion(): Promise<number>;
  /** Migrations 1..n applied as an older Sail did, then `sql` (to leave rows behind). */
  migrateTo(n: number, sql: string): Promise<void>;
  /** PostgreSQL: its URL, for a session behind the store's back. */
  url?: string;
  /** SQLite: its file, for connections in other threads. */
  path?: string;
}

interface Backend {
  name: string;
  start(): Promise<void>;
  stop(): Promise<void>;
  database(): Promise<TestDatabase>;
}

const opened: Store[] = [];
const track = <S extends Store>(store: S): S => (opened.push(store), store);

function sqliteBackend(): Backend {
  let dir = "";
  let databases = 0;
  return {
    name: "SQLite",
    async start() {
      dir = mkdtempSync(join(tmpdir(), "sail-store-"));
    },
    async stop() {
      if (dir) rmSync(dir, { recursive: true, force: true });
    },
    async database() {
      const path = join(dir, `db${++databases}.sqlite`);
      const raw = (work: (db: Database.Database) => void) => {
        const db = new Database(path);
        try {
          work(db);
        } finally {
          db.close();
        }
      };
      return {
        path,
        open: async () => track(new SqliteStore(path)),
        async schemaVersion() {
          let version = 0;
          raw((db) => (version = db.pragma("user_version", { simple: true }) as number));
          return version;
        },
        async migrateTo(n, sql) {
          raw((db) => {
            for (const migration of MIGRATIONS.slice(0, n)) db.exec(migrationSql(migration, "sqlite"));
            db.pragma(`user_version = ${n}`);
            db.exec(sql);
          });
        },
      };
    },
  };
}

function postgresBackend(): Backend {
  let server: PostgresServer | undefined;
  return {
    name: "PostgreSQL",
    async start() {
      server = await startPostgres();
    },
    async stop() {
      await server?.stop();
    },
    async database() {
      const url = await server!.createDatabase();
      const raw = async <T>(work: (client: pg.Client) => Promise<T>): Promise<T> => {
        const client = new pg.Client({ connectionString: url, query_timeout: 30_000 });
        await client.connect();
        try {
          return await work(client);
        } finally {
          await client.end();
        }
      };
      return {
        url,
        open: async (options) => track(await PostgresStore.connect(url, options)),
        schemaVersion: () => raw(async (client) => (await client.query<{ n: number }>("SELECT MAX(version) AS n FROM schema_migrations")).rows[0]!.n),
        migrateTo: (n, sql) =>
          raw(async (client) => {
            await client.query("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)");
            for (const [i, migration] of MIGRATIONS.slice(0, n).entries()) {
              await client.query(migrationSql(migration, "postgres"));
              await client.query("INSERT INTO schema_migrations VALUES ($1, $2)", [i + 1, new Date().toISOString()]);
            }
            await client.query(sql);
          }),
      };
    },
  };
}

const RULES: InsertRules = { tcp: { firstPort: 40_000, lastPort: 40_099 }, tcpEndpointsDefault: 32 };
const tcp = (port: number): IngressPortSpec => ({ port, protocol: "tcp" });
const http = (port: number): IngressPortSpec => ({ port, protocol: "http" });

function boxSpec(org: OrgRow, app: AppRow, fields: Partial<NewSailbox> = {}): NewSailbox {
  return { id: newId("sb-"), appId: app.id, orgId: org.id, name: null, imageName: "debian-12", imageArch: "amd64", imagePackages: "", cpu: 1, memoryMiB: 512, diskMiB: 1024, nodeId: null, ...fields };
}

async function orgAndApp(store: Store, orgName = "acme", appName = "web"): Promise<{ org: OrgRow; app: AppRow }> {
  const org = await store.ensureOrg(orgName);
  return { org, app: await store.mintApp(org.id, appName) };
}

/** Each outcome: "ok", or the class name of the error. */
async function outcomes(promises: Array<Promise<unknown>>): Promise<string[]> {
  const settled = await Promise.allSettled(promises);
  return settled.map((s) => (s.status === "fulfilled" ? "ok" : (s.reason as Error).constructor.name));
}

const count = (items: string[], item: string) => items.filter((i) => i === item).length;

/** Polls until `probe` is true; the attempts only keep a broken store from hanging the run. */
async function eventually(what: string, probe: () => Promise<boolean>): Promise<void> {
  for (let attempt = 0; attempt < 1000; attempt++) {
    if (await probe()) return;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  throw new Error(`never happened: ${what}`);
}

for (const backend of [sqliteBackend(), postgresBackend()]) {
  describe(`the store on ${backend.name}`, () => {
    before(() => backend.start());
    after(() => backend.stop());
    afterEach(async () => {
      await Promise.all(opened.splice(0).map((store) => store.close()));
    });

    describe("migrations", () => {
      test("an empty database is migrated to the latest, and opening it again changes nothing", async () => {
        const db = await backend.database();
        const store = await db.open();
        assert.equal(await db.schemaVersion(), MIGRATIONS.length);
        const { org } = await orgAndApp(store);
        await store.close();
        opened.splice(opened.indexOf(store), 1);
        const again = await db.open();
        assert.equal(await db.schemaVersion(), MIGRATIONS.length);
        assert.deepEqual(await again.findOrgByName("acme"), org);
      });

      test("three processes opening one empty database at once migrate it once", async () => {
        const db = await backend.database();
        const stores = await Promise.all([db.open(), db.open(), db.open()]);
        assert.equal(await db.schemaVersion(), MIGRATIONS.length);
        // every one of them works on the one schema
        const orgs = await Promise.all(stores.map((store) => store.ensureOrg("acme")));
        assert.equal(new Set(orgs.map((o) => o.id)).size, 1);
      });

      test("a database of migration 10 with a live box is brought to the latest and keeps the box", async () => {
        const db = await backend.database();
        await db.migrateTo(
          10,
          `INSERT INTO orgs (id, name, created_at, operator) VALUES ('org-1', 'default', '2026-01-01T00:00:00.000Z', 1);
           INSERT INTO apps (id, org_id, name, created_at) VALUES ('app-1', 'org-1', 'web', '2026-01-01T00:00:00.000Z');
           INSERT INTO sailboxes (id, app_id, org_id, name, status, image_name, image_arch, cpu, memory_mib, net_slot, created_at)
             VALUES ('sb-1', 'app-1', 'org-1', 'api', 'running', 'debian-12', 'amd64', 0.5, 256, 3, '2026-01-01T00:00:00.000Z');
           INSERT INTO listeners (sailbox_id, port, protocol, public_port) VALUES ('sb-1', 22, 'tcp', 40007);`,
        );
        const store = await db.open();
        assert.equal(await db.schemaVersion(), MIGRATIONS.length);
        const box = await store.getSailbox("sb-1");
        assert.equal(box?.status, "running");
        assert.equal(box?.cpu, 0.5);
        assert.equal(box?.nodeId, null);
        assert.deepEqual([box?.diskMiB, box?.diskInodes], [null, null], "a box from before disk limits has none");
        assert.equal((await store.listListeners("sb-1"))[0]?.publicPort, 40007);
        // the name is still held: migration 1's unique index survived migration 11
        const org = (await store.findOrgByName("default"))!;
        const app = (await store.findApp(org.id, "web"))!;
        await assert.rejects(store.insertSailbox(boxSpec(org, app, { name: "api" }), RULES), NameTakenError);
      });
    });

    describe("orgs, tokens and apps", () => {
      test("ensureOrg and mintApp find or create, also when two processes race for the same name", async () => {
        const db = await backend.database();
        const [a, b] = await Promise.all([db.open(), db.open()]);
        const orgs = await Promise.all([a.ensureOrg("acme"), b.ensureOrg("acme"), a.ensureOrg("acme", { operator: true })]);
        assert.equal(new Set(orgs.map((o) => o.id)).size, 1);
        // whichever insert came first decided the flag: every caller got that one org, and a later ensure does not change it
        assert.equal(new Set(orgs.map((o) => o.operator)).size, 1, "every caller sees the one org as it was made");
        assert.equal((await b.ensureOrg("acme", { operator: !orgs[0]!.operator })).operator, orgs[0]!.operator, "a later ensure changes nothing");
        const apps = await Promise.all([a.mintApp(orgs[0]!.id, "web"), b.mintApp(orgs[0]!.id, "web")]);
        assert.equal(apps[0]!.id, apps[1]!.id);
        const operator = await a.ensureOrg("root", { operator: true });
        assert.equal(operator.operator, true);
        assert.deepEqual(await b.findOrgByName("root"), operator);
        assert.equal(await b.findOrgByName("nobody"), undefined);
      });

      test("a token finds its org until it is revoked; only its own org sees it", async () => {
        const store = await (await backend.database()).open();
        const acme = await store.ensureOrg("acme");
        const other = await store.ensureOrg("other");
        const first = await store.createToken(acme.id, "ci");
        const second = await store.createToken(acme.id, "laptop");
        assert.match(first.token, /^sail_/);
        assert.deepEqual(await store.orgForToken(first.token), acme);
        assert.deepEqual(await store.orgForTokenHash(hashToken(first.token)), acme, "found by its hash (the console's sessions keep only that)");
        assert.equal(await store.orgForToken("sail_unknown"), undefined);
        assert.equal(await store.orgForToken(first.token + "x"), undefined);
        assert.deepEqual(
          (await store.listTokens(acme.id)).map((t) => [t.id, t.org, t.label, t.revokedAt]).sort(),
          [
            [first.id, "acme", "ci", null],
            [second.id, "acme", "laptop", null],
          ].sort(),
        );
        assert.equal((await store.getToken(first.id, acme.id))?.label, "ci");
        assert.equal((await store.getToken(first.id, undefined))?.label, "ci");
        assert.equal(await store.getToken(first.id, other.id), undefined);
        await store.revokeToken(first.id);
        assert.equal(await store.orgForToken(first.token), undefined);
        assert.equal(await store.orgForTokenHash(hashToken(first.token)), undefined, "a revoked token's hash finds nothing either");
        assert.deepEqual(await store.orgForToken(second.token), acme);
        assert.notEqual((await store.getToken(first.id, acme.id))?.revokedAt, null);
      });

      test("apps are per org and listed by name", async () => {
        const store = await (await backend.database()).open();
        const acme = await store.ensureOrg("acme");
        const other = await store.ensureOrg("other");
        const web = await store.mintApp(acme.id, "web");
        await store.mintApp(acme.id, "api");
        await store.mintApp(other.id, "web");
        assert.deepEqual(
          (await store.listApps(acme.id)).map((a) => a.name),
          ["api", "web"],
        );
        assert.deepEqual(await store.getApp(acme.id, web.id), web);
        assert.equal(await store.getApp(other.id, web.id), undefined);
        assert.deepEqual(await store.findApp(acme.id, "web"), web);
        assert.equal(await store.findApp(acme.id, "nope"), undefined);
      });
    });

    describe("sailboxes", () => {
      test("an inserted box reads back as written, lists newest first, and ends with its status", async () => {
        const store = await (await backend.database()).open();
        const { org, app } = await orgAndApp(store);
        const other = await store.mintApp(org.id, "other");
        const first = await store.insertSailbox(boxSpec(org, app, { name: "one", cpu: 0.5, memoryMiB: 256, imagePackages: "curl git", idleTimeout: 300, nodeId: "node-a" }), RULES);
        assert.equal(first.status, "creating");
        assert.equal(first.cpu, 0.5);
        assert.equal(first.idleTimeout, 300);
        assert.equal(first.nodeId, "node-a");
        assert.equal(first.networkPolicy, '{"outbound":"open","allowOut":[],"denyOut":[]}');
        assert.deepEqual(await store.getSailbox(first.id), first);
        // a later millisecond: boxes made in the same one list in id order
        await eventually("the clock passed the first box's millisecond", async () => Date.now() > Date.parse(first.createdAt));
        const second = await store.insertSailbox(boxSpec(org, other, { networkPolicy: '{"outbound":"blocked","allowOut":[],"denyOut":[]}' }), RULES);
        assert.deepEqual(
          (await store.listSailboxes({ orgId: org.id })).map((b) => b.id),
          [second.id, first.id],
        );
        assert.deepEqual(
          (await store.listSailboxes({ orgId: org.id, appId: app.id })).map((b) => b.id),
          [first.id],
        );
        assert.deepEqual(
          (await store.listSailboxes({ orgId: org.id, name: "one" })).map((b) => b.id),
          [first.id],
        );
        await store.setStatus(first.id, "running");
        await store.setStatus(second.id, "running");
        assert.deepEqual(
          (await store.idleCandidates()).map((b) => b.id),
          [first.id],
        );
        await store.setStatus(second.id, "failed", "the image would not start");
        const failed = (await store.getSailbox(second.id))!;
        assert.equal(failed.failureReason, "the image would not start");
        assert.notEqual(failed.terminatedAt, null);
        assert.deepEqual(
          (await store.listSailboxes({ orgId: org.id, liveOnly: true })).map((b) => b.id),
          [first.id],
        );
        assert.deepEqual(
          (await store.liveSailboxes()).map((b) => b.id),
          [first.id],
        );
        assert.deepEqual(await store.countLiveByStatus(), { running: 1 });
        await store.setNetworkPolicy(first.id, '{"outbound":"blocked","allowOut":[],"denyOut":[]}');
        assert.equal((await store.getSailbox(first.id))?.networkPolicy, '{"outbound":"blocked","allowOut":[],"denyOut":[]}');
        assert.equal(await store.getSailbox("sb-nothing"), undefined);
      });

      test("a name belongs to one live box of an app; it is free again once that box ends", async () => {
        const store = await (await backend.database()).open();
        const { org, app } = await orgAndApp(store);
        const other = await store.mintApp(org.id, "other");
        const box = await store.insertSailbox(boxSpec(org, app, { name: "api" }), RULES);
        await assert.rejects(store.insertSailbox(boxSpec(org, app, { name: "api" }), RULES), NameTakenError);
        await store.insertSailbox(boxSpec(org, other, { name: "api" }), RULES); // another app: its own names
        await store.insertSailbox(boxSpec(org, app), RULES); // unnamed boxes never collide
        await store.insertSailbox(boxSpec(org, app), RULES);
        await store.setStatus(box.id, "terminated");
        await store.insertSailbox(boxSpec(org, app, { name: "api" }), RULES);
      });

      test("a box's disk reads back as created, and its inodes once its node made it", async () => {
        const store = await (await backend.database()).open();
        const { org, app } = await orgAndApp(store);
        const box = await store.insertSailbox(boxSpec(org, app, { diskMiB: 2048 }), RULES);
        assert.deepEqual([box.diskMiB, box.diskInodes], [2048, null], "the inodes are the node's word, not known yet");
        const other = await store.insertSailbox(boxSpec(org, app, { diskMiB: 65_536 }), RULES);
        await store.setDiskInodes(box.id, 131_072);
        const read = (await store.getSailbox(box.id))!;
        assert.deepEqual([read.diskMiB, read.diskInodes], [2048, 131_072]);
        const listed = new Map((await store.listSailboxes({ orgId: org.id })).map((b) => [b.id, [b.diskMiB, b.diskInodes]]));
        assert.deepEqual(listed.get(box.id), [2048, 131_072], "a list reads them too");
        assert.deepEqual(listed.get(other.id), [65_536, null], "another box's disk is untouched");
      });

      test("applyNodeState keeps only a newer word, and none on a box being created or ended", async () => {
        const store = await (await backend.database()).open();
        const { org, app } = await orgAndApp(store);
        const box = await store.insertSailbox(boxSpec(org, app), RULES);
        assert.equal(await store.applyNodeState(box.id, { status: "sleeping", seq: 1 }), false, "still creating");
        await store.setStatus(box.id, "running");
        assert.equal(await store.applyNodeState(box.id, { status: "sleeping", seq: 2 }), true);
        assert.equal(await store.applyNodeState(box.id, { status: "running", seq: 1 }), false, "older than the last word");
        assert.equal((await store.getSailbox(box.id))?.status, "sleeping");
        assert.equal(await store.applyNodeState(box.id, { status: "failed", seq: 3, failureReason: "the node lost it" }), true);
        const failed = (await store.getSailbox(box.id))!;
        assert.equal(failed.failureReason, "the node lost it");
        assert.notEqual(failed.terminatedAt, null);
        assert.equal(await store.applyNodeState(box.id, { status: "running", seq: 4 }), false, "ended");
      });

      test("deleteSailbox forgets a box with its listeners, execs and idempotency key", async () => {
        const store = await (await backend.database()).open();
        const { org, app } = await orgAndApp(store);
        const box = await store.insertSailbox(boxSpec(org, app, { name: "gone", ports: [tcp(22), http(80)] }), RULES);
        await store.insertExec({ id: "ex-1", sailboxId: box.id, cmd: "true", background: true });
        await store.rememberIdempotentCreate(org.id, "key-1", "sha", box.id);
        await store.deleteSailbox(box.id);
        assert.equal(await store.getSailbox(box.id), undefined);
        assert.deepEqual(await store.listListeners(box.id), []);
        assert.equal(await store.getExec(box.id, "ex-1"), undefined);
        assert.equal(await store.findIdempotentCreate(org.id, "key-1"), undefined);
        // its name and its public port are free
        const again = await store.insertSailbox(boxSpec(org, app, { name: "gone", ports: [tcp(22)] }), RULES);
        assert.equal((await store.listListeners(again.id))[0]?.publicPort, RULES.tcp!.firstPort);
      });
    });

    describe("listeners", () => {
      test("listeners keep their flags; TCP ones get the lowest free public ports, freed when the box ends", async () => {
        const store = await (await backend.database()).open();
        const { org, app } = await orgAndApp(store);
        const ports: IngressPortSpec[] = [
          { port: 5432, protocol: "tcp", cidrAllowlist: ["203.0.113.0/24"], allowPublic: true, proxyProtocol: true },
          { port: 8080, protocol: "http", h2c: true },
          tcp(22),
        ];
        const first = await store.insertSailbox(boxSpec(org, app, { ports }), RULES);
        assert.deepEqual(await store.listListeners(first.id), [
          { sailboxId: first.id, port: 22, protocol: "tcp", cidrAllowlist: [], allowPublic: false, publicPort: 40_001, h2c: false, proxyProtocol: false },
          { sailboxId: first.id, port: 5432, protocol: "tcp", cidrAllowlist: ["203.0.113.0/24"], allowPublic: true, publicPort: 40_000, h2c: false, proxyProtocol: true },
          { sailboxId: first.id, port: 8080, protocol: "http", cidrAllowlist: [], allowPublic: false, publicPort: null, h2c: true, proxyProtocol: false },
        ]);
        const second = await store.insertSailbox(boxSpec(org, app, { ports: [tcp(22)] }), RULES);
        assert.equal((await store.listListeners(second.id))[0]?.publicPort, 40_002);
        const bare = await store.insertSailbox(boxSpec(org, app), RULES);
        // several boxes' listeners in one call, each box's as listListeners gives them; a box without any has an empty list
        const many = await store.listListenersOf([second.id, bare.id, first.id]);
        assert.deepEqual([...many.keys()].sort(), [first.id, second.id, bare.id].sort());
        assert.deepEqual(many.get(first.id), await store.listListeners(first.id));
        assert.deepEqual(many.get(second.id), await store.listListeners(second.id));
        assert.deepEqual(many.get(bare.id), []);
        assert.deepEqual(await store.listListenersOf([]), new Map());
        await store.setStatus(bare.id, "terminated");
        await store.setStatus(first.id, "running");
        assert.deepEqual(
          (await store.liveListeners()).map((l) => [l.sailboxId, l.port, l.status]),
          [
            [first.id, 22, "running"],
            [first.id, 5432, "running"],
            [first.id, 8080, "running"],
            [second.id, 22, "creating"],
          ].sort((a, b) => String(a[0]).localeCompare(String(b[0])) || Number(a[1]) - Number(b[1])),
        );
        assert.equal(await store.countLiveTcpListeners(org.id), 3);
        await store.setStatus(first.id, "terminated");
        assert.equal(await store.countLiveTcpListeners(org.id), 1);
        const third = await store.insertSailbox(boxSpec(org, app, { ports: [tcp(1), tcp(2)] }), RULES);
        assert.deepEqual(
          (await store.listListeners(third.id)).map((l) => l.publicPort),
          [40_000, 40_001],
        );
      });

      test("when the public port range runs out the create is refused and nothing is written", async () => {
        const store = await (await backend.database()).open();
        const { org, app } = await orgAndApp(store);
        const rules: InsertRules = { tcp: { firstPort: 41_000, lastPort: 41_002 }, tcpEndpointsDefault: 32 };
        await store.insertSailbox(boxSpec(org, app, { ports: [tcp(1), tcp(2)] }), rules);
        const refused = boxSpec(org, app, { name: "late", ports: [tcp(1), tcp(2)] });
        await assert.rejects(store.insertSailbox(refused, rules), TcpPortsExhaustedError);
        assert.equal(await store.getSailbox(refused.id), undefined);
        assert.deepEqual(await store.listListeners(refused.id), []);
        await store.insertSailbox(boxSpec(org, app, { name: "late", ports: [tcp(1)] }), rules);
      });
    });

    describe("execs and idempotent creates", () => {
      test("execs are found by their box; background ones list newest first", async () => {
        const store = await (await backend.database()).open();
        const { org, app } = await orgAndApp(store);
        const box = await store.insertSailbox(boxSpec(org, app), RULES);
        const other = await store.insertSailbox(boxSpec(org, app), RULES);
        const foreground = await store.insertExec({ id: "ex-a", sailboxId: box.id, cmd: "ls", background: false });
        assert.deepEqual(await store.getExec(box.id, "ex-a"), foreground);
        assert.equal(await store.getExec(other.id, "ex-a"), undefined);
        for (const id of ["ex-b", "ex-c", "ex-d"]) {
          await store.insertExec({ id, sailboxId: box.id, cmd: "sleep 9", background: true });
          await new Promise((resolve) => setTimeout(resolve, 2)); // distinct started_at (ms)
        }
        assert.deepEqual(
          (await store.listBackgroundExecs(box.id)).map((e) => e.id),
          ["ex-d", "ex-c", "ex-b"],
        );
        assert.deepEqual(
          (await store.listBackgroundExecs(box.id, 2)).map((e) => e.id),
          ["ex-d", "ex-c"],
        );
        assert.equal((await store.getExec(box.id, "ex-b"))?.background, true);
      });

      test("an idempotency key remembers its box, is replaced by a newer one, and is forgotten by age", async () => {
        const store = await (await backend.database()).open();
        const { org, app } = await orgAndApp(store);
        const other = await store.ensureOrg("other");
        const first = await store.insertSailbox(boxSpec(org, app), RULES);
        const second = await store.insertSailbox(boxSpec(org, app), RULES);
        await store.rememberIdempotentCreate(org.id, "k", "sha-1", first.id);
        assert.deepEqual(await store.findIdempotentCreate(org.id, "k"), { requestSha256: "sha-1", sailboxId: first.id });
        assert.equal(await store.findIdempotentCreate(other.id, "k"), undefined, "keys are per org");
        await store.rememberIdempotentCreate(org.id, "k", "sha-2", second.id);
        assert.deepEqual(await store.findIdempotentCreate(org.id, "k"), { requestSha256: "sha-2", sailboxId: second.id });
        assert.equal(await store.forgetIdempotentCreates("2000-01-01T00:00:00.000Z"), 0);
        assert.equal(await store.forgetIdempotentCreates(new Date(Date.now() + 60_000).toISOString()), 1);
        assert.equal(await store.findIdempotentCreate(org.id, "k"), undefined);
      });
    });

    describe("org limits", () => {
      test("limits change field by field and null clears one; usage counts live boxes only", async () => {
        const store = await (await backend.database()).open();
        const { org, app } = await orgAndApp(store);
        assert.deepEqual(await store.orgLimits(org.id), { sailboxes: null, cpu: null, memoryMiB: null, tcpEndpoints: null });
        await store.setOrgLimits(org.id, { sailboxes: 5, cpu: 2.5 });
        await store.setOrgLimits(org.id, { memoryMiB: 4096, tcpEndpoints: 4 });
        await store.setOrgLimits(org.id, { sailboxes: null });
        assert.deepEqual(await store.orgLimits(org.id), { sailboxes: null, cpu: 2.5, memoryMiB: 4096, tcpEndpoints: 4 });
        const ended = await store.insertSailbox(boxSpec(org, app, { cpu: 1, memoryMiB: 1024 }), RULES);
        await store.insertSailbox(boxSpec(org, app, { cpu: 0.5, memoryMiB: 256 }), RULES);
        await store.setStatus(ended.id, "terminated");
        assert.deepEqual(await store.orgUsage(org.id), { sailboxes: 1, cpu: 0.5, memoryMiB: 256 });
      });

      test("each cap refuses the create that would pass it, says which, and writes nothing", async () => {
        const store = await (await backend.database()).open();
        const { org, app } = await orgAndApp(store);
        await store.setOrgLimits(org.id, { sailboxes: 2, cpu: 2, memoryMiB: 1024 });
        await store.insertSailbox(boxSpec(org, app, { cpu: 1, memoryMiB: 512 }), RULES);
        const refusal = async (box: NewSailbox, rules = RULES) => {
          const err = await store.insertSailbox(box, rules).then(
            () => assert.fail("the create was not refused"),
            (e: unknown) => e,
          );
          assert.ok(err instanceof OrgLimitReachedError, String(err));
          assert.equal(await store.getSailbox(box.id), undefined);
          return [err.limit, err.max, err.inUse, err.requested];
        };
        assert.deepEqual(await refusal(boxSpec(org, app, { cpu: 1.5, memoryMiB: 256 })), ["cpu", 2, 1, 1.5]);
        assert.deepEqual(await refusal(boxSpec(org, app, { cpu: 1, memoryMiB: 768 })), ["memory", 1024, 512, 768]);
        await store.insertSailbox(boxSpec(org, app, { cpu: 1, memoryMiB: 512 }), RULES);
        assert.deepEqual(await refusal(boxSpec(org, app, { cpu: 0, memoryMiB: 0 })), ["sailboxes", 2, 2, 1]);
        // raw TCP endpoints: the daemon's default until the org has its own limit
        const other = await orgAndApp(store, "other");
        await store.insertSailbox(boxSpec(other.org, other.app, { ports: [tcp(1), tcp(2)] }), { ...RULES, tcpEndpointsDefault: 3 });
        assert.deepEqual(await refusal(boxSpec(other.org, other.app, { ports: [tcp(1), tcp(2)] }), { ...RULES, tcpEndpointsDefault: 3 }), ["tcpEndpoints", 3, 2, 2]);
        await store.setOrgLimits(other.org.id, { tcpEndpoints: 4 });
        await store.insertSailbox(boxSpec(other.org, other.app, { ports: [tcp(1), tcp(2)] }), { ...RULES, tcpEndpointsDefault: 3 });
      });

      test("ten boxes of 0.1 core fit a 1-core cap exactly, and the eleventh does not", async () => {
        const store = await (await backend.database()).open();
        const { org, app } = await orgAndApp(store);
        await store.setOrgLimits(org.id, { cpu: 1 });
        for (let i = 0; i < 10; i++) await store.insertSailbox(boxSpec(org, app, { cpu: 0.1 }), RULES);
        await assert.rejects(store.insertSailbox(boxSpec(org, app, { cpu: 0.1 }), RULES), OrgLimitReachedError);
        assert.ok(Math.abs((await store.orgUsage(org.id)).cpu - 1) < 1e-9);
      });
    });

    describe("leases", () => {
      test("one holder at a time: the other is refused until the lease is released", async () => {
        const db = await backend.database();
        const [a, b] = await Promise.all([db.open(), db.open()]);
        const { org, app } = await orgAndApp(a);
        const box = await a.insertSailbox(boxSpec(org, app), RULES);
        assert.equal(await a.takeLease(box.id, "cp-a", 60_000), true);
        assert.equal(await b.takeLease(box.id, "cp-b", 60_000), false);
        assert.equal(await a.takeLease(box.id, "cp-a", 60_000), true, "the holder may take it again");
        assert.equal(await a.renewLease(box.id, "cp-a", 60_000), true);
        assert.equal(await b.renewLease(box.id, "cp-b", 60_000), false, "only the holder renews");
        await b.releaseLease(box.id, "cp-b"); // not b's to release: nothing happens
        assert.equal(await b.takeLease(box.id, "cp-b", 60_000), false);
        await a.releaseLease(box.id, "cp-a");
        assert.equal(await b.takeLease(box.id, "cp-b", 60_000), true);
        assert.equal(await a.takeLease("sb-nothing", "cp-a", 60_000), false, "no box, no lease");
      });

      test("a lease that expires is taken by the other holder, and the first can no longer renew it", async () => {
        const db = await backend.database();
        const [a, b] = await Promise.all([db.open(), db.open()]);
        const { org, app } = await orgAndApp(a);
        const box = await a.insertSailbox(boxSpec(org, app), RULES);
        assert.equal(await a.takeLease(box.id, "cp-a", 1), true); // a holder that crashes right away
        await eventually("the expired lease is taken by cp-b", () => b.takeLease(box.id, "cp-b", 60_000));
        assert.equal(await a.renewLease(box.id, "cp-a", 60_000), false);
        assert.equal(await a.takeLease(box.id, "cp-a", 60_000), false);
        await a.releaseLease(box.id, "cp-a");
        assert.equal(await b.renewLease(box.id, "cp-b", 60_000), true, "cp-a's release did not free cp-b's lease");
      });

      test("holders in several processes racing for one lease: exactly one gets it", async () => {
        const db = await backend.database();
        const stores = await Promise.all([db.open(), db.open(), db.open(), db.open()]);
        const { org, app } = await orgAndApp(stores[0]!);
        for (let round = 0; round < 5; round++) {
          const box = await stores[0]!.insertSailbox(boxSpec(org, app), RULES);
          const taken = await Promise.all(stores.flatMap((store, i) => [store.takeLease(box.id, `cp-${i}-x`, 60_000), store.takeLease(box.id, `cp-${i}-y`, 60_000)]));
          assert.equal(taken.filter(Boolean).length, 1, `round ${round}: ${taken}`);
        }
      });
    });

    describe("nodes", () => {
      const info = (maxBoxes = 10) => JSON.stringify({ nodeId: "x", version: 1, hostArch: "amd64", maxBoxes });

      test("a node joins with a lease, beats to renew it, lists with what its live boxes hold, and drains", async () => {
        const db = await backend.database();
        const store = await db.open();
        const { org, app } = await orgAndApp(store);
        const joined = await store.heartbeatNode({ id: "node-a", url: "http://198.51.100.131:7080", info: info() }, 60_000);
        assert.equal(joined.wasLost, false);
        assert.equal(joined.node.generation, 1);
        assert.equal(joined.node.draining, false);
        await store.heartbeatNode({ id: "node-local", url: "", info: info() }, null);
        await store.insertSailbox(boxSpec(org, app, { nodeId: "node-a", cpu: 0.5, memoryMiB: 256 }), RULES);
        const ended = await store.insertSailbox(boxSpec(org, app, { nodeId: "node-a" }), RULES);
        await store.setStatus(ended.id, "terminated");
        const [a, local] = await store.listNodes();
        assert.deepEqual([a!.id, a!.boxes, a!.cpu, a!.memoryMiB], ["node-a", 1, 0.5, 256], "only live boxes count");
        assert.ok(a!.leaseUntil! > a!.nowMs && a!.leaseUntil! <= a!.nowMs + 60_000);
        assert.deepEqual([local!.id, local!.boxes, local!.leaseUntil], ["node-local", 0, null]);
        assert.equal(await store.setNodeDraining("node-a", true), true);
        assert.equal((await store.getNode("node-a"))!.draining, true);
        assert.equal(await store.setNodeDraining("node-nobody", true), false);
        assert.deepEqual(
          (await store.liveSailboxesOn("node-a")).map((b) => b.cpu),
          [0.5],
        );
      });

      test("a lapsed node is declared lost once, by one of several sweepers; the in-process node never lapses; it rejoins as its next generation", async () => {
        const db = await backend.database();
        const stores = await Promise.all([db.open(), db.open(), db.open()]);
        await stores[0]!.heartbeatNode({ id: "node-gone", url: "http://198.51.100.132:7080", info: info() }, 1);
        await stores[0]!.heartbeatNode({ id: "node-live", url: "http://198.51.100.133:7080", info: info() }, 600_000);
        await stores[0]!.heartbeatNode({ id: "node-local", url: "", info: info() }, null);
        await eventually("node-gone's lease lapsed", async () => (await stores[0]!.getNode("node-gone"))!.leaseUntil! < (await stores[0]!.listNodes())[0]!.nowMs);
        const declared = await Promise.all(stores.map((store) => store.declareLapsedNodesLost(0)));
        assert.deepEqual(declared.flat(), ["node-gone"], `each sweeper declared: ${JSON.stringify(declared)}`);
        assert.deepEqual(await stores[1]!.declareLapsedNodesLost(0), [], "declared once");
        const lost = (await stores[1]!.getNode("node-gone"))!;
        assert.ok(lost.lostAt);
        const back = await stores[2]!.heartbeatNode({ id: "node-gone", url: "http://198.51.100.132:7080", info: info() }, 600_000);
        assert.equal(back.wasLost, true);
        assert.equal(back.node.generation, 2);
        assert.equal(back.node.lostAt, null);
        const again = await stores[2]!.heartbeatNode({ id: "node-gone", url: "http://198.51.100.132:7080", info: info() }, 600_000);
        assert.deepEqual([again.wasLost, again.node.generation], [false, 2], "a beat of a node that was not lost is the same generation");
      });

      test("extending the leases gives every live node a whole lease again; a lost node stays lost, the in-process node keeps none", async () => {
        const db = await backend.database();
        const store = await db.open();
        for (const id of ["node-late", "node-gone"]) await store.heartbeatNode({ id, url: `http://${id}:7080`, info: info() }, 1);
        await store.heartbeatNode({ id: "node-local", url: "", info: info() }, null);
        await eventually("both leases lapsed", async () => (await store.listNodes()).filter((n) => n.leaseUntil !== null && n.leaseUntil < n.nowMs).length === 2);
        await store.heartbeatNode({ id: "node-gone", url: "http://node-gone:7080", info: info() }, 1);
        await eventually("node-gone lapsed again", async () => (await store.getNode("node-gone"))!.leaseUntil! < (await store.listNodes())[0]!.nowMs);
        assert.equal((await store.declareLapsedNodesLost(0)).length, 2);
        await store.heartbeatNode({ id: "node-late", url: "http://node-late:7080", info: info() }, 1); // back, and lapsing again
        await eventually("node-late lapsed", async () => (await store.getNode("node-late"))!.leaseUntil! < (await store.listNodes())[0]!.nowMs);
        await store.extendNodeLeases(600_000);
        assert.deepEqual(await store.declareLapsedNodesLost(0), [], "extended: not lapsed");
        const rows = new Map((await store.listNodes()).map((n) => [n.id, n]));
        assert.ok(rows.get("node-late")!.leaseUntil! > rows.get("node-late")!.nowMs + 500_000);
        assert.ok(rows.get("node-gone")!.lostAt, "a lost node stays lost");
        assert.equal(rows.get("node-local")!.leaseUntil, null, "the in-process node still never lapses");
      });

      test("a node's grace: lapsed, but not yet past the grace, it is not declared", async () => {
        const db = await backend.database();
        const store = await db.open();
        await store.heartbeatNode({ id: "node-slow", url: "http://198.51.100.134:7080", info: info() }, 1);
        await eventually("its lease lapsed", async () => (await store.getNode("node-slow"))!.leaseUntil! < (await store.listNodes())[0]!.nowMs);
        assert.deepEqual(await store.declareLapsedNodesLost(3_600_000), []);
        assert.deepEqual(await store.declareLapsedNodesLost(0), ["node-slow"]);
      });
    });

    describe("races between control-plane processes", () => {
      test("two creates of one name at once: exactly one wins, the other gets NameTakenError", async () => {
        const db = await backend.database();
        const [a, b] = await Promise.all([db.open(), db.open()]);
        const { org, app } = await orgAndApp(a);
        for (let round = 0; round < 10; round++) {
          const name = `api-${round}`;
          const results = await outcomes([a.insertSailbox(boxSpec(org, app, { name }), RULES), b.insertSailbox(boxSpec(org, app, { name }), RULES)]);
          assert.deepEqual(results.sort(), ["NameTakenError", "ok"], `round ${round}`);
          assert.equal((await a.listSailboxes({ orgId: org.id, name, liveOnly: true })).length, 1);
        }
      });

      test("33 creates at once, each with one TCP endpoint, in an org limited to 32: exactly one is refused", async () => {
        const db = await backend.database();
        const stores = await Promise.all([db.open(), db.open(), db.open(), db.open()]);
        const { org, app } = await orgAndApp(stores[0]!);
        const creates = Array.from({ length: 33 }, (_, i) => stores[i % stores.length]!.insertSailbox(boxSpec(org, app, { ports: [tcp(22)] }), RULES));
        const results = await outcomes(creates);
        assert.equal(count(results, "ok"), 32, results.join(" "));
        assert.equal(count(results, "OrgLimitReachedError"), 1, results.join(" "));
        const refused = await Promise.allSettled(creates).then((all) => all.find((r) => r.status === "rejected"));
        assert.equal((refused as PromiseRejectedResult).reason.limit, "tcpEndpoints");
        assert.equal(await stores[0]!.countLiveTcpListeners(org.id), 32);
        assert.equal((await stores[0]!.orgUsage(org.id)).sailboxes, 32);
      });

      test("creates in many orgs at once never share a public TCP port", async () => {
        const db = await backend.database();
        const stores = await Promise.all([db.open(), db.open(), db.open(), db.open()]);
        const tenants = await Promise.all(Array.from({ length: 8 }, (_, i) => orgAndApp(stores[0]!, `org-${i}`)));
        const creates = tenants.flatMap(({ org, app }, i) =>
          Array.from({ length: 4 }, (_, j) => stores[(i + j) % stores.length]!.insertSailbox(boxSpec(org, app, { ports: [tcp(22), tcp(5432)] }), RULES)),
        );
        const boxes = await Promise.all(creates);
        const ports = (await stores[0]!.liveListeners()).map((l) => l.publicPort);
        assert.equal(ports.length, boxes.length * 2);
        assert.equal(new Set(ports).size, ports.length, `a port was given twice: ${ports.sort().join(" ")}`);
        assert.deepEqual(
          [...ports].sort((x, y) => x! - y!),
          Array.from({ length: 64 }, (_, i) => 40_000 + i),
        );
      });

      test("org caps hold for creates racing through different processes", async () => {
        const db = await backend.database();
        const stores = await Promise.all([db.open(), db.open(), db.open()]);
        const { org, app } = await orgAndApp(stores[0]!);
        await stores[0]!.setOrgLimits(org.id, { sailboxes: 5 });
        const results = await outcomes(Array.from({ length: 12 }, (_, i) => stores[i % stores.length]!.insertSailbox(boxSpec(org, app), RULES)));
        assert.equal(count(results, "ok"), 5, results.join(" "));
        assert.equal(count(results, "OrgLimitReachedError"), 7, results.join(" "));
      });
    });

    if (backend.name === "SQLite") sqliteOnly(backend);
    if (backend.name === "PostgreSQL") postgresOnly(backend);
  });
}

/**
 * SQLite's own races: in one thread its calls never overlap, so these run the contenders in
 * worker threads, each with its own connection to the file, as two processes would.
 */
function sqliteOnly(backend: Backend) {
  describe("SQLite connections in other threads", () => {
    // a race is won or lost by timing: each round gives a broken store another chance to show it
    test("four connections opening an empty file at once migrate it once (five rounds)", async () => {
      for (let round = 0; round < 5; round++) {
        const db = await backend.database();
        // already in WAL mode, as a file the daemon made: the first switch to WAL takes an
        // exclusive lock, which would queue the openers before they reach the migrations
        const file = new Database(db.path!);
        file.pragma("journal_mode = WAL");
        file.close();
        const outcomes = await inWorkers(db.path!, [{}, {}, {}, {}]);
        assert.deepEqual(outcomes, Array(4).fill(["opened"]), `round ${round}`);
        assert.equal(await db.schemaVersion(), MIGRATIONS.length);
      }
    });

    test("80 creates from four connections against a 60-endpoint limit: 60 succeed, 20 are refused, none finds the file locked (two rounds)", async () => {
      for (let round = 0; round < 2; round++) {
        const db = await backend.database();
        const store = await db.open();
        const { org, app } = await orgAndApp(store);
        const creates = { orgId: org.id, appId: app.id, count: 20, rules: { ...RULES, tcpEndpointsDefault: 60 } };
        const outcomes = (await inWorkers(db.path!, [{ creates }, { creates }, { creates }, { creates }])).flat().filter((o) => o !== "opened");
        assert.equal(count(outcomes, "ok"), 60, outcomes.join("\n"));
        assert.equal(outcomes.filter((o) => o.startsWith("OrgLimitReachedError")).length, 20, outcomes.join("\n"));
        assert.equal(await store.countLiveTcpListeners(org.id), 60);
        const ports = (await store.liveListeners()).map((l) => l.publicPort);
        assert.equal(new Set(ports).size, 60);
      }
    });
  });
}

/** Runs one worker per task, all released at once; each answers its outcomes. */
async function inWorkers(path: string, tasks: Array<Omit<WorkerTask, "path" | "start">>): Promise<string[][]> {
  const start = new SharedArrayBuffer(4);
  const workers = tasks.map((task) => new Worker(new URL("./store-sqlite-worker.ts", import.meta.url), { workerData: { ...task, path, start } satisfies WorkerTask }));
  const answers = workers.map(
    (worker) =>
      new Promise<string[]>((resolve, reject) => {
        worker.once("message", resolve);
        worker.once("error", reject);
      }),
  );
  await Promise.all(workers.map((worker) => new Promise((resolve) => worker.once("online", resolve))));
  const flag = new Int32Array(start);
  Atomics.store(flag, 0, 1);
  Atomics.notify(flag, 0);
  try {
    return await Promise.all(answers);
  } finally {
    await Promise.all(workers.map((worker) => worker.terminate()));
  }
}

/** What only a server store has: deadlines on the network and a clock of its own. */
function postgresOnly(backend: Backend) {
  describe("PostgreSQL's deadlines and clock", () => {
    test("a create that waits on a lock past its deadline fails with StoreUnavailableError and writes nothing", async () => {
      const db = await backend.database();
      const store = await db.open({ statementTimeoutMs: 300 });
      const { org, app } = await orgAndApp(store);
      // another session holds the org's row, as a stalled control plane would
      const blocker = new pg.Client({ connectionString: db.url, query_timeout: 30_000 });
      await blocker.connect();
      await blocker.query("BEGIN");
      await blocker.query("SELECT 1 FROM orgs WHERE id = $1 FOR UPDATE", [org.id]);
      const box = boxSpec(org, app);
      await assert.rejects(store.insertSailbox(box, RULES), StoreUnavailableError);
      await blocker.query("ROLLBACK");
      await blocker.end();
      assert.equal(await store.getSailbox(box.id), undefined);
      await store.insertSailbox(box, RULES); // the pool is usable again
    });

    test("a server that is not there fails with StoreUnavailableError, not a hang", async (t: TestContext) => {
      const dir = mkdtempSync(join(tmpdir(), "sail-nopg-"));
      t.after(() => rmSync(dir, { recursive: true, force: true }));
      await assert.rejects(PostgresStore.connect(`postgres://sail@/sail?host=${encodeURIComponent(dir)}`, { connectTimeoutMs: 1000 }), StoreUnavailableError);
    });

    test("a server that takes no writes (a standby, or a primary a failover demoted) refuses a write with StoreUnavailableError, not an internal error", async (t: TestContext) => {
      const db = await backend.database();
      const { org, app } = await orgAndApp(await db.open());
      const admin = new pg.Client({ connectionString: db.url, query_timeout: 30_000 });
      await admin.connect();
      t.after(() => admin.end());
      const { database } = (await admin.query<{ database: string }>("SELECT current_database() AS database")).rows[0]!;
      // every new session of the database then answers a write as a hot standby does: SQLSTATE 25006
      await admin.query(`ALTER DATABASE ${database} SET default_transaction_read_only = on`);
      const readOnly = new PostgresStore(db.url!);
      t.after(() => readOnly.close());
      await assert.rejects(readOnly.insertSailbox(boxSpec(org, app), RULES), StoreUnavailableError);
      await assert.rejects(readOnly.mintApp(org.id, "other"), StoreUnavailableError);
      await assert.rejects(readOnly.open(), StoreUnavailableError, "a control plane started on a standby: not now, rather than a failed migration");
      assert.equal((await readOnly.findApp(org.id, app.name))?.id, app.id, "reads still answer");
      // the database takes writes again (a new primary behind the same address): a pooled session
      // that was read-only is not kept, so after at most one more refusal the store writes
      await admin.query(`ALTER DATABASE ${database} RESET default_transaction_read_only`);
      await readOnly.insertSailbox(boxSpec(org, app), RULES).catch((err: unknown) => assert.ok(err instanceof StoreUnavailableError, String(err)));
      const box = await readOnly.insertSailbox(boxSpec(org, app), RULES);
      assert.equal((await readOnly.getSailbox(box.id))?.status, "creating");
    });

    test("a holder whose clock runs an hour ahead cannot take a live lease: expiry is the database's clock", async (t: TestContext) => {
      const db = await backend.database();
      const [a, b] = await Promise.all([db.open(), db.open()]);
      const { org, app } = await orgAndApp(a);
      const box = await a.insertSailbox(boxSpec(org, app), RULES);
      assert.equal(await a.takeLease(box.id, "cp-a", 60_000), true);
      const realNow = Date.now.bind(Date);
      t.mock.method(Date, "now", () => realNow() + 3_600_000);
      assert.equal(await b.takeLease(box.id, "cp-b", 60_000), false);
    });
  });
}
