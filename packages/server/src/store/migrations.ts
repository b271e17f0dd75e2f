/**
 * Numbered migrations, applied in order inside one transaction each; the applied number lives
 * in `PRAGMA user_version` (SQLite) or the `schema_migrations` table (PostgreSQL). Never edit a
 * shipped one: add the next. Shared SQL keeps SQLite's types, which PostgreSQL reads alike: TEXT
 * ISO timestamps, 0/1 INTEGER flags, BIGINT epoch ms. A dialect gets its own text only where the
 * two differ in meaning.
 */
/** One migration: the same SQL for SQLite and PostgreSQL, or each dialect's own where they differ. */
export type Migration = string | { sqlite: string; postgres: string };

/** The text of `migration` in `dialect`. */
export const migrationSql = (migration: Migration, dialect: "sqlite" | "postgres") => (typeof migration === "string" ? migration : migration[dialect]);

// Cores are fractional: SQLite's REAL is 8 bytes, PostgreSQL's is float4, where 0.1 core reads
// back as 0.100000001490116 and ten of them pass a 1-core cap. DOUBLE PRECISION is SQLite's REAL.
const SCHEMA_1 = (cores: string) => `
  CREATE TABLE orgs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
  );
  CREATE TABLE tokens (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES orgs(id),
    sha256 TEXT NOT NULL UNIQUE,
    label TEXT NOT NULL,
    created_at TEXT NOT NULL,
    revoked_at TEXT
  );
  CREATE TABLE apps (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES orgs(id),
    name TEXT NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (org_id, name)
  );
  CREATE TABLE sailboxes (
    id TEXT PRIMARY KEY,
    app_id TEXT NOT NULL REFERENCES apps(id),
    org_id TEXT NOT NULL REFERENCES orgs(id),
    name TEXT,
    status TEXT NOT NULL,
    live INTEGER NOT NULL DEFAULT 1,
    image_name TEXT NOT NULL,
    image_arch TEXT NOT NULL,
    cpu ${cores} NOT NULL,
    memory_mib INTEGER NOT NULL,
    net_slot INTEGER NOT NULL,
    failure_reason TEXT,
    created_at TEXT NOT NULL,
    terminated_at TEXT
  );
  -- a name and an address belong to at most one live sailbox
  CREATE UNIQUE INDEX sailboxes_live_name ON sailboxes(app_id, name) WHERE live = 1 AND name IS NOT NULL;
  CREATE UNIQUE INDEX sailboxes_live_slot ON sailboxes(net_slot) WHERE live = 1;
  CREATE INDEX sailboxes_org ON sailboxes(org_id, created_at);
  CREATE TABLE execs (
    id TEXT PRIMARY KEY,
    sailbox_id TEXT NOT NULL REFERENCES sailboxes(id),
    cmd TEXT NOT NULL,
    background INTEGER NOT NULL,
    started_at TEXT NOT NULL
  );
  `;
const ORG_CAPS_9 = (cores: string) => `
  ALTER TABLE orgs ADD COLUMN sailbox_limit INTEGER;
  ALTER TABLE orgs ADD COLUMN cpu_limit ${cores};
  ALTER TABLE orgs ADD COLUMN memory_limit_mib INTEGER;
  `;

export const MIGRATIONS: readonly Migration[] = [
  // 1: orgs, tokens (hashed), apps, sailboxes, execs
  { sqlite: SCHEMA_1("REAL"), postgres: SCHEMA_1("DOUBLE PRECISION") },
  // 2: published ports (listeners); public_port is the gateway port of a TCP listener
  `
  CREATE TABLE listeners (
    sailbox_id TEXT NOT NULL REFERENCES sailboxes(id),
    port INTEGER NOT NULL,
    protocol TEXT NOT NULL CHECK (protocol IN ('http', 'tcp')),
    cidr_allowlist TEXT NOT NULL DEFAULT '[]',
    allow_public INTEGER NOT NULL DEFAULT 0,
    public_port INTEGER,
    PRIMARY KEY (sailbox_id, port)
  );
  `,
  // 3: a per-org override of the raw-TCP endpoint limit (NULL: the daemon's setting)
  `
  ALTER TABLE orgs ADD COLUMN tcp_limit INTEGER;
  `,
  // 4: idle auto-sleep
  `
  ALTER TABLE sailboxes ADD COLUMN idle_timeout INTEGER;
  `,
  // 5: Debian packages on top of the base image, space-separated and sorted ('' = none)
  `
  ALTER TABLE sailboxes ADD COLUMN image_packages TEXT NOT NULL DEFAULT '';
  `,
  // 6: the operator's org (the one sail up made) may mint tokens for other orgs
  `
  ALTER TABLE orgs ADD COLUMN operator INTEGER NOT NULL DEFAULT 0;
  UPDATE orgs SET operator = 1 WHERE name = 'default';
  `,
  // 7: HTTP/2 to the guest (h2c) for an HTTP listener; a PROXY protocol v2 header for a TCP one
  `
  ALTER TABLE listeners ADD COLUMN h2c INTEGER NOT NULL DEFAULT 0;
  ALTER TABLE listeners ADD COLUMN proxy_protocol INTEGER NOT NULL DEFAULT 0;
  `,
  // 8: each box's outbound policy (JSON: NetworkInfo); boxes from before had no way out: blocked
  `
  ALTER TABLE sailboxes ADD COLUMN network_policy TEXT NOT NULL DEFAULT '{"outbound":"blocked","allowOut":[],"denyOut":[]}';
  `,
  // 9: the operator's caps on an org's live boxes (NULL: none)
  { sqlite: ORG_CAPS_9("REAL"), postgres: ORG_CAPS_9("DOUBLE PRECISION") },
  // 10: creates that answered with a box, by the org's Idempotency-Key, kept a bounded time (boxes/creates.ts)
  `
  CREATE TABLE idempotent_creates (
    org_id TEXT NOT NULL REFERENCES orgs(id),
    key TEXT NOT NULL,
    request_sha256 TEXT NOT NULL,
    sailbox_id TEXT NOT NULL REFERENCES sailboxes(id),
    created_at TEXT NOT NULL,
    PRIMARY KEY (org_id, key)
  );
  CREATE INDEX idempotent_creates_age ON idempotent_creates(created_at);
  `,
  // 11: each box's disk limit (MiB) and the inodes its filesystem has; NULL: a box from before disk limits
  `
  ALTER TABLE sailboxes ADD COLUMN disk_mib INTEGER;
  ALTER TABLE sailboxes ADD COLUMN disk_inodes INTEGER;
  `,
  // 12: what only a node knows leaves the store (a node owns its network slots, kept beside
  // each box); the node that runs a box; box leases (one holder drives a box at a time, across
  // control-plane processes; lease_until is epoch ms); the sequence number of the node's last word on
  // the box (node_seq: an older report never overwrites a newer one); whether its node runs its
  // image under emulation (image_emulated, 0/1: the control plane answers it without the node). Names stay unique among
  // live boxes in the database itself by migration 1's sailboxes_live_name. SQLite refuses to
  // drop an indexed column, so the slot's index goes first.
  `
  DROP INDEX sailboxes_live_slot;
  ALTER TABLE sailboxes DROP COLUMN net_slot;
  ALTER TABLE sailboxes ADD COLUMN node_id TEXT;
  ALTER TABLE sailboxes ADD COLUMN lease_holder TEXT;
  ALTER TABLE sailboxes ADD COLUMN lease_until BIGINT;
  ALTER TABLE sailboxes ADD COLUMN node_seq BIGINT NOT NULL DEFAULT 0;
  ALTER TABLE sailboxes ADD COLUMN image_emulated INTEGER;
  CREATE INDEX sailboxes_org_live ON sailboxes(org_id, live);
  CREATE INDEX listeners_public_port ON listeners(public_port) WHERE public_port IS NOT NULL;
  `,
  // 13: the nodes that joined, each with its lease (epoch ms by the store's clock; NULL: the node in
  // the control plane's own process, which never lapses), whether it takes new boxes (draining), and
  // when it was declared lost; a node that joins again after that is a new generation
  `
  CREATE TABLE nodes (
    id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    info TEXT NOT NULL,
    generation INTEGER NOT NULL DEFAULT 1,
    lease_until BIGINT,
    draining INTEGER NOT NULL DEFAULT 0,
    lost_at TEXT,
    joined_at TEXT NOT NULL
  );
  CREATE INDEX sailboxes_node_live ON sailboxes(node_id, live);
  `,
];
