/**
 * Numbered migrations, applied in order inside one transaction each; the
 * applied number lives in `PRAGMA user_version`. Never edit a shipped one: add the next.
 */
export const MIGRATIONS: readonly string[] = [
  // 1: orgs, tokens (hashed), apps, sailboxes, execs
  `
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
    cpu REAL NOT NULL,
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
  `,
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
  `
  ALTER TABLE orgs ADD COLUMN sailbox_limit INTEGER;
  ALTER TABLE orgs ADD COLUMN cpu_limit REAL;
  ALTER TABLE orgs ADD COLUMN memory_limit_mib INTEGER;
  `,
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
];
