-- Which channel fields (file name, partner reference...) a route records in
-- the event log; NULL records them all.
ALTER TABLE routes ADD COLUMN fields TEXT;
