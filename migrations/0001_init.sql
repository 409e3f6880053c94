-- Ferry configuration and event log.
CREATE TABLE tenants (
  id TEXT PRIMARY KEY,
  created_at INTEGER NOT NULL
);

CREATE TABLE connectors (
  id TEXT PRIMARY KEY,
  tenant TEXT NOT NULL REFERENCES tenants(id),
  name TEXT NOT NULL,
  -- pending: token issued, not enrolled; active; revoked
  status TEXT NOT NULL CHECK (status IN ('pending', 'active', 'revoked')),
  public_jwk TEXT,
  created_at INTEGER NOT NULL,
  enrolled_at INTEGER,
  last_seen_at INTEGER,
  UNIQUE (tenant, name)
);

CREATE TABLE enrol_tokens (
  -- SHA-256 of the token: a leaked database never yields a usable token
  token_hash TEXT PRIMARY KEY,
  connector_id TEXT NOT NULL REFERENCES connectors(id),
  expires_at INTEGER NOT NULL,
  used_at INTEGER
);

CREATE TABLE routes (
  id TEXT PRIMARY KEY,
  tenant TEXT NOT NULL REFERENCES tenants(id),
  source TEXT NOT NULL,
  destination TEXT NOT NULL,
  source_connector TEXT NOT NULL,
  destination_connector TEXT NOT NULL,
  protection TEXT NOT NULL DEFAULT 'none',
  ttl_seconds INTEGER NOT NULL,
  archive INTEGER NOT NULL DEFAULT 0,
  retention_seconds INTEGER,
  region TEXT,
  created_at INTEGER NOT NULL,
  UNIQUE (tenant, source, destination)
);
CREATE INDEX routes_by_destination ON routes (tenant, destination_connector);

-- One row per lifecycle event of a message. Written in batches by the
-- channel objects from their own outbox, so logging never blocks delivery.
CREATE TABLE events (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  tenant TEXT NOT NULL,
  message_id TEXT NOT NULL,
  type TEXT NOT NULL,
  at INTEGER NOT NULL,
  place TEXT NOT NULL,
  source TEXT NOT NULL,
  destination TEXT,
  seq INTEGER,
  size INTEGER,
  sha256 TEXT,
  detail TEXT
);
CREATE INDEX events_by_message ON events (message_id, at);
CREATE INDEX events_by_tenant_time ON events (tenant, at);

CREATE TABLE admin_log (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  at INTEGER NOT NULL,
  actor TEXT NOT NULL,
  action TEXT NOT NULL,
  target TEXT,
  detail TEXT
);
