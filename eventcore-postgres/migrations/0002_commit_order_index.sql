-- Serves reads of the global log in commit-consistent order:
-- (transaction_id, global_position) > after, below the snapshot's xmin.
CREATE INDEX eventcore_events_commit_order ON eventcore_events (transaction_id, global_position);
