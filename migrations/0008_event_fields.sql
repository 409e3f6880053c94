-- The metadata-field query (`field=NAME:VALUE`) by index, not by reading
-- every event's JSON: one row per channel field of every event, kept in step
-- with `events` by triggers (the log's writers need not know), looked up by
-- (tenant, name, value). WITHOUT ROWID: the key is the whole row.
CREATE TABLE event_fields (
  tenant TEXT NOT NULL,
  name TEXT NOT NULL,
  value TEXT NOT NULL,
  event_id INTEGER NOT NULL,
  PRIMARY KEY (tenant, name, value, event_id)
) WITHOUT ROWID;

-- Fields are strings (wire: Record<string, string>); anything else is not indexed.
CREATE TRIGGER event_fields_insert AFTER INSERT ON events
WHEN NEW.fields IS NOT NULL AND json_valid(NEW.fields)
BEGIN
  INSERT OR IGNORE INTO event_fields (tenant, name, value, event_id)
  SELECT NEW.tenant, key, value, NEW.id FROM json_each(NEW.fields) WHERE type = 'text';
END;

-- Purged rows (retention) take their index rows with them, found by key.
CREATE TRIGGER event_fields_delete AFTER DELETE ON events
WHEN OLD.fields IS NOT NULL AND json_valid(OLD.fields)
BEGIN
  DELETE FROM event_fields
  WHERE tenant = OLD.tenant AND event_id = OLD.id
    AND name IN (SELECT key FROM json_each(OLD.fields)) AND value IN (SELECT value FROM json_each(OLD.fields) WHERE type = 'text');
END;

-- Rows already in the log.
INSERT OR IGNORE INTO event_fields (tenant, name, value, event_id)
SELECT e.tenant, j.key, j.value, e.id FROM events AS e, json_each(e.fields) AS j
WHERE e.fields IS NOT NULL AND json_valid(e.fields) AND j.type = 'text';
