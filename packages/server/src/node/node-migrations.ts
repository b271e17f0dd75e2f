/**
 * The node's own numbered migrations (node.db, apart from the control plane's store), applied in
 * order inside one transaction each; the applied number lives in `PRAGMA user_version`. Never
 * edit a shipped one: add the next.
 */
export const NODE_MIGRATIONS: readonly string[] = [
  // 1: the node's identity; its boxes (no org, app or name: the control plane's), each with its
  // network slot, unique among the boxes that hold one (a failed box's leftovers are removed, so
  // its slot is free; one adopted lost has none); their published ports. "terminated" is no
  // status here: the row goes.
  `
  CREATE TABLE node (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
  );
  CREATE TABLE boxes (
    id TEXT PRIMARY KEY,
    hostname TEXT NOT NULL,
    arch TEXT NOT NULL,
    apt_packages TEXT NOT NULL DEFAULT '',
    cpu REAL NOT NULL,
    memory_mib INTEGER NOT NULL,
    disk_mib INTEGER,
    idle_timeout INTEGER,
    network_policy TEXT NOT NULL,
    ssh_public_key TEXT,
    net_slot INTEGER,
    status TEXT NOT NULL CHECK (status IN ('creating', 'running', 'sleeping', 'paused', 'failed')),
    failure_reason TEXT,
    seq INTEGER NOT NULL DEFAULT 1,
    created_at TEXT NOT NULL
  );
  CREATE UNIQUE INDEX boxes_live_slot ON boxes(net_slot) WHERE status <> 'failed';
  CREATE TABLE listeners (
    sailbox_id TEXT NOT NULL REFERENCES boxes(id) ON DELETE CASCADE,
    port INTEGER NOT NULL,
    protocol TEXT NOT NULL CHECK (protocol IN ('http', 'tcp')),
    cidr_allowlist TEXT NOT NULL DEFAULT '[]',
    allow_public INTEGER NOT NULL DEFAULT 0,
    public_port INTEGER,
    h2c INTEGER NOT NULL DEFAULT 0,
    proxy_protocol INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (sailbox_id, port)
  );
  CREATE INDEX listeners_public_port ON listeners(public_port) WHERE public_port IS NOT NULL;
  `,
  // 2: the inodes of each box's disk, known once the runtime made it (what `df -i` in the box shows)
  `
  ALTER TABLE boxes ADD COLUMN disk_inodes INTEGER;
  `,
];
