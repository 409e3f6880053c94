-- Scoped admin tokens per tenant, and the tenant on every admin-log row.
CREATE TABLE admin_tokens (
  id TEXT PRIMARY KEY,
  tenant TEXT NOT NULL REFERENCES tenants(id),
  name TEXT NOT NULL,
  scope TEXT NOT NULL CHECK (scope IN ('read', 'operator', 'owner')),
  -- SHA-256 of the token: a leaked database yields no usable token
  token_hash TEXT NOT NULL UNIQUE,
  created_at INTEGER NOT NULL,
  revoked_at INTEGER
);
CREATE INDEX admin_tokens_by_tenant ON admin_tokens (tenant);
ALTER TABLE admin_log ADD COLUMN tenant TEXT;
CREATE INDEX admin_log_by_tenant ON admin_log (tenant, id);
