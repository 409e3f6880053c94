-- Captured and accepted events (half of a message's events with the full
-- log) have no destination: they need no entry in the destination index,
-- and each entry is a written row on Cloudflare's bill. Every query by
-- destination (`destination = ?`, a connector's range) implies
-- `destination IS NOT NULL`, so SQLite still uses this index for them
-- (the EXPLAIN test in workers/admin/audit.test.ts).
DROP INDEX events_by_destination;
CREATE INDEX events_by_destination ON events (tenant, destination, at) WHERE destination IS NOT NULL;
