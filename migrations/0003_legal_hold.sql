-- A legal hold on a route suspends the purging of its archives and log rows.
ALTER TABLE routes ADD COLUMN legal_hold INTEGER NOT NULL DEFAULT 0;
