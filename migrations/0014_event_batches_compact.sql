-- Batches written from now on hold each event without what the whole batch
-- shares (docs/decisions.md D26). A format-1 row repeated, in every event,
-- the chain, tenant, place, source and destination (columns of the batch)
-- and the previous event's hash (the hash of the event before it in the
-- same array): about two fifths of each event's bytes, written, sent to D1
-- and kept for the log's whole retention.
--
-- Format 2: each event is [chain_seq, message_id, type, at, seq, size,
-- sha256, fields, detail, hash]; the batch row holds the rest, with
-- `prev_hash` (the hash before its first event) and `place`. Every value
-- an event was hashed with is still stored, once: readers rebuild the
-- canonical row (workers/event-log.ts expandBatch) and verification works
-- as before. Batches already written stay in format 1 and read as they are.

ALTER TABLE event_batches ADD COLUMN format INTEGER NOT NULL DEFAULT 1;
ALTER TABLE event_batches ADD COLUMN prev_hash TEXT;
ALTER TABLE event_batches ADD COLUMN place TEXT;

-- The purge trigger reads message ids and fields where each format keeps them.
DROP TRIGGER event_batches_delete;
CREATE TRIGGER event_batches_delete AFTER DELETE ON event_batches
WHEN OLD.type = 'accepted'
BEGIN
  DELETE FROM message_index
  WHERE tenant = OLD.tenant AND chain = OLD.chain
    AND message_id IN (SELECT json_extract(value, CASE OLD.format WHEN 2 THEN '$[1]' ELSE '$[4]' END) FROM json_each(OLD.events));
  DELETE FROM message_fields
  WHERE tenant = OLD.tenant AND chain = OLD.chain AND mseq BETWEEN OLD.mseq_lo AND OLD.mseq_hi
    AND (name, value) IN (
      SELECT f.key, f.value FROM json_each(OLD.events) AS e, json_each(json_extract(e.value, CASE OLD.format WHEN 2 THEN '$[7]' ELSE '$[13]' END)) AS f
      WHERE f.type = 'text');
END;

-- Every event as one table, for ad-hoc SQL, in either format.
DROP VIEW event_log;
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
FROM event_batches AS b, json_each(b.events) AS j
WHERE b.format = 1
UNION ALL
SELECT 1099511627776 + b.id * 4096 + j.key AS id,
  b.tenant, json_extract(j.value, '$[1]') AS message_id, json_extract(j.value, '$[2]') AS type,
  json_extract(j.value, '$[3]') AS at, b.place, b.source,
  b.destination, json_extract(j.value, '$[4]') AS seq, json_extract(j.value, '$[5]') AS size,
  json_extract(j.value, '$[6]') AS sha256, json_extract(j.value, '$[7]') AS fields, json_extract(j.value, '$[8]') AS detail,
  b.chain, json_extract(j.value, '$[0]') AS chain_seq,
  CASE WHEN j.key = 0 THEN b.prev_hash ELSE json_extract(b.events, '$[' || (j.key - 1) || '][9]') END AS prev_hash,
  json_extract(j.value, '$[9]') AS hash
FROM event_batches AS b, json_each(b.events) AS j
WHERE b.format = 2;
