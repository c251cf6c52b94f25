-- Each snapshot records, per stream of its key, the id of the last event it
-- folded (NULL for a stream it holds no event of). A snapshot is used only
-- while the events at its versions still have those ids, so a row restored
-- from another database, or written by hand, is ignored instead of trusted.
-- Rows saved before this migration have none, and are ignored once, then
-- replaced. Adding a column with no default rewrites nothing.
ALTER TABLE eventcore_snapshots ADD COLUMN event_ids uuid[];
