-- The appends running now, from one snapshot of the lock table: holders
-- of the append's stream locks (eventcore_lock_space) in this database
-- that have a transaction id, with that id. pg_locks shows 32-bit ids;
-- each is placed in the epoch that puts it nearest p_horizon, a full
-- transaction id read before (running ids are within 2^31 of it). An
-- append that holds its locks but has no id yet gets one at or above the
-- next id to be assigned.
CREATE OR REPLACE FUNCTION eventcore_running_appends(p_horizon numeric)
RETURNS TABLE (pid integer, transaction_id numeric)
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    -- plpgsql, not sql: its plan is kept for the session (a sql function
    -- that returns a set is planned again on every call).
    -- One pass over pg_locks (each read of it copies the lock table and
    -- visits every backend), by transaction: those that hold a stream lock
    -- here and have an id.
    RETURN QUERY
    SELECT r.pid,
           p_horizon + ((r.xid - p_horizon % 4294967296 + 6442450944) % 4294967296)
               - 2147483648
    FROM (
        SELECT min(l.pid) AS pid,
               min(l.transactionid::text::numeric)
                   FILTER (WHERE l.locktype = 'transactionid' AND l.mode = 'ExclusiveLock')
                   AS xid,
               bool_or(l.locktype = 'advisory'
                       AND l.objsubid = 2
                       AND l.classid = eventcore_lock_space()::oid
                       AND l.database = (SELECT d.oid FROM pg_database AS d
                                         WHERE d.datname = current_database())) AS appending
        FROM pg_locks AS l
        WHERE l.locktype IN ('advisory', 'transactionid') AND l.granted
        GROUP BY l.virtualtransaction
    ) AS r
    WHERE r.appending AND r.xid IS NOT NULL;
END
$$;
