-- How much of a route's traffic the event log records: 'full' (every
-- message's lifecycle: captured, accepted, delivered, receipts) or
-- 'exceptions' (only what went wrong or was done by hand: rejections,
-- expiries and dead letters, failed hosted attempts, redrives, discards,
-- purges). The log's rows are most of a message's cost (docs/performance.md).
ALTER TABLE routes ADD COLUMN log TEXT NOT NULL DEFAULT 'full';
