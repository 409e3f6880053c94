-- The event log written per batch (docs/decisions.md D21). A message's
-- lifecycle events (captured, accepted, delivered) are most of the log and
-- each row of `events` costs six or seven written rows with its indexes:
-- Cloudflare bills every one. They now go to D1 as batches: one row per
-- staged group of events of one type (and destination), the events inside
-- as the JSON array of their canonical rows, each with its hash appended,
-- exactly as `events` held them column by column, so every event is still
-- verified one by one; an ack's signed receipt ends the batch of the
-- delivered events it covers. Exceptions (rejected, expired, attempts,
-- redrives, discards, archive events) stay one row of `events` each: they
-- are rare and are what people search for.

CREATE TABLE event_batches (
  -- Events inside are numbered 2^40 + id * 4096 + position (the API's event id).
  id INTEGER PRIMARY KEY,
  chain TEXT NOT NULL,
  -- Chain positions of the first and last event: consecutive, no gaps.
  chain_seq INTEGER NOT NULL,
  last_seq INTEGER NOT NULL,
  tenant TEXT NOT NULL,
  source TEXT NOT NULL,
  destination TEXT,
  type TEXT NOT NULL,
  -- Earliest and latest event time inside.
  at_lo INTEGER NOT NULL,
  at_hi INTEGER NOT NULL,
  -- The channel's positions (mseq) of the messages inside: never more than
  -- 4096 apart, so a message's batches are found by a bounded index range.
  mseq_lo INTEGER NOT NULL,
  mseq_hi INTEGER NOT NULL,
  n INTEGER NOT NULL,
  events TEXT NOT NULL
);
-- No index by type: a batch is one of three types, so a walk by time reads
-- at most three times the batches it needs, and an index entry is a row
-- written for every batch.
-- A re-sent flush (a crash between the D1 write and the object's commit)
-- brings the same batches at the same positions: ignored, never doubled.
CREATE UNIQUE INDEX event_batches_chain ON event_batches (chain, chain_seq);
CREATE INDEX event_batches_by_time ON event_batches (tenant, at_hi);
CREATE INDEX event_batches_by_source ON event_batches (chain, at_hi);
CREATE INDEX event_batches_by_destination ON event_batches (tenant, destination, at_hi) WHERE destination IS NOT NULL;
CREATE INDEX event_batches_by_mseq ON event_batches (chain, mseq_lo);

-- A chain position is in `events` or in one batch, never both: a re-sent
-- flush that would place an event at a position already written (in either
-- table) is skipped. Batches never overlap (this check), so the one that
-- starts last at or before a range is the only one that can overlap it:
-- one index lookup, reads only, nothing more is written.
CREATE TRIGGER event_batches_once BEFORE INSERT ON event_batches
WHEN EXISTS (SELECT 1 FROM events WHERE chain = NEW.chain AND chain_seq BETWEEN NEW.chain_seq AND NEW.last_seq)
  OR (SELECT last_seq FROM event_batches WHERE chain = NEW.chain AND chain_seq <= NEW.last_seq ORDER BY chain_seq DESC LIMIT 1) >= NEW.chain_seq
BEGIN
  SELECT RAISE(IGNORE);
END;
CREATE TRIGGER events_once BEFORE INSERT ON events
WHEN NEW.chain IS NOT NULL AND (SELECT last_seq FROM event_batches WHERE chain = NEW.chain AND chain_seq <= NEW.chain_seq ORDER BY chain_seq DESC LIMIT 1) >= NEW.chain_seq
BEGIN
  SELECT RAISE(IGNORE);
END;

-- One row per accepted message: its id finds its chain and position, and
-- from there the batches whose range covers it. The one written row per
-- message the full log costs.
CREATE TABLE message_index (
  tenant TEXT NOT NULL,
  message_id TEXT NOT NULL,
  chain TEXT NOT NULL,
  mseq INTEGER NOT NULL,
  PRIMARY KEY (tenant, message_id, chain)
) WITHOUT ROWID;

-- The metadata-field query for batched events: one row per recorded field
-- of each accepted message (not per event, as event_fields does for rows).
CREATE TABLE message_fields (
  tenant TEXT NOT NULL,
  name TEXT NOT NULL,
  value TEXT NOT NULL,
  chain TEXT NOT NULL,
  mseq INTEGER NOT NULL,
  message_id TEXT NOT NULL,
  PRIMARY KEY (tenant, name, value, chain, mseq)
) WITHOUT ROWID;

-- Purged batches (retention) take their messages' index rows with them:
-- the accepted batch names every message and its fields.
CREATE TRIGGER event_batches_delete AFTER DELETE ON event_batches
WHEN OLD.type = 'accepted'
BEGIN
  DELETE FROM message_index
  WHERE tenant = OLD.tenant AND chain = OLD.chain
    AND message_id IN (SELECT json_extract(value, '$[4]') FROM json_each(OLD.events));
  DELETE FROM message_fields
  WHERE tenant = OLD.tenant AND chain = OLD.chain AND mseq BETWEEN OLD.mseq_lo AND OLD.mseq_hi
    AND (name, value) IN (SELECT f.key, f.value FROM json_each(OLD.events) AS e, json_each(json_extract(e.value, '$[13]')) AS f WHERE f.type = 'text');
END;

-- Every event as one table, rows and batches alike, for ad-hoc SQL (the
-- D1 console, an auditor's query). The API reads through indexes instead
-- (workers/event-log.ts): this view cannot look inside a batch by index.
CREATE VIEW event_log AS
SELECT id, tenant, message_id, type, at, place, source, destination, seq, size, sha256, fields, detail, chain, chain_seq, prev_hash, hash FROM events
UNION ALL
SELECT 1099511627776 + b.id * 4096 + j.key AS id,
  json_extract(j.value, '$[3]') AS tenant, json_extract(j.value, '$[4]') AS message_id, json_extract(j.value, '$[5]') AS type,
  json_extract(j.value, '$[6]') AS at, json_extract(j.value, '$[7]') AS place, json_extract(j.value, '$[8]') AS source,
  json_extract(j.value, '$[9]') AS destination, json_extract(j.value, '$[10]') AS seq, json_extract(j.value, '$[11]') AS size,
  json_extract(j.value, '$[12]') AS sha256, json_extract(j.value, '$[13]') AS fields, json_extract(j.value, '$[14]') AS detail,
  json_extract(j.value, '$[0]') AS chain, json_extract(j.value, '$[1]') AS chain_seq, json_extract(j.value, '$[2]') AS prev_hash,
  json_extract(j.value, '$[15]') AS hash
FROM event_batches AS b, json_each(b.events) AS j;
