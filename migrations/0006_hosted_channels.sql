-- Hosted channels: addresses that live in the network (no connector).
-- ingress: messages arrive by HTTPS POST to the edge; egress: the edge
-- delivers them by HTTPS POST. The secret authenticates ingress requests
-- and signs egress deliveries (HMAC), so the edge must keep it.
CREATE TABLE hosted_channels (
  tenant TEXT NOT NULL REFERENCES tenants(id),
  address TEXT NOT NULL,
  kind TEXT NOT NULL CHECK (kind IN ('ingress', 'egress')),
  url TEXT,
  secret TEXT,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (tenant, address, kind)
);
