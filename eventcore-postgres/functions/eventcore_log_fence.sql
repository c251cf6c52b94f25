-- The global log's fence, as a commit key: every append whose commit key
-- is below it has ended. An append holds its stream locks (in
-- eventcore_lock_space) from before its transaction has an id until after
-- its commit is visible, so the appends still running are the holders of
-- those locks, and their transaction ids come from the same snapshot of
-- the lock table (pg_locks). The fence is the lowest of them, or, when no
-- append runs, the xmax read before that snapshot (every later
-- transaction id is at or above it). A transaction that holds no stream
-- lock (one that writes no events, in this database or another) does not
-- move the fence. The caller must read the events in a later snapshot than
-- this function's: eventcore_read_all does, in a statement of its own.
CREATE OR REPLACE FUNCTION eventcore_log_fence() RETURNS xid8
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    -- Read before pg_locks is.
    horizon numeric := pg_snapshot_xmax(pg_current_snapshot())::text::numeric;
    shift text := current_setting('eventcore.commit_shift_' || current_schema(), true);
    held numeric;
BEGIN
    SELECT min(r.transaction_id) INTO held FROM eventcore_running_appends(horizon) AS r;
    IF shift IS NULL OR shift = '' THEN
        shift := eventcore_commit_shift()::text;
    END IF;
    RETURN (least(horizon, coalesce(held, horizon)) + shift::numeric)::text::xid8;
END
$$;
