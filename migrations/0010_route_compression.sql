-- Large payloads of a route may travel gzip-compressed ("gzip"), when it pays
-- (the sender decides per file from a sample). Shared by every route of a
-- source, like protection: a payload is stored once for all its destinations.
ALTER TABLE routes ADD COLUMN compress TEXT NOT NULL DEFAULT 'none';
