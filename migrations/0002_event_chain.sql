-- Tamper evidence and querying at scale for the event log.
ALTER TABLE events ADD COLUMN chain TEXT;
ALTER TABLE events ADD COLUMN chain_seq INTEGER;
ALTER TABLE events ADD COLUMN prev_hash TEXT;
ALTER TABLE events ADD COLUMN hash TEXT;
-- The envelope's channel fields (file name, partner reference...), JSON.
ALTER TABLE events ADD COLUMN fields TEXT;

-- One row per chain position: a re-sent batch (after a crash between the
-- D1 write and the object's own commit) is ignored, never duplicated.
CREATE UNIQUE INDEX events_chain ON events (chain, chain_seq);
DROP INDEX events_by_message;
CREATE INDEX events_by_message ON events (tenant, message_id, at);
CREATE INDEX events_by_source ON events (tenant, source, at);
CREATE INDEX events_by_destination ON events (tenant, destination, at);
CREATE INDEX events_by_type ON events (tenant, type, at);
