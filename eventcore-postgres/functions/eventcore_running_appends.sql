-- The appends running now, from one snapshot of the lock table: holders
-- of the append's stream locks (eventcore_lock_space) in this database
-- that have a transaction id, with that id. pg_locks shows 32-bit ids;
-- each is placed in the epoch that puts it nearest p_horizon, a full
-- transaction id read before (running ids are within 2^31 of it). An
-- append that holds its locks but has no id yet gets one at or above the
-- next id to be assigned.
CREATE OR REPLACE FUNCTION eventcore_running_appends(p_horizon numeric)
RETURNS TABLE (pid integer, transaction_id numeric)
LANGUAGE sql VOLATILE
AS $$
    SELECT a.pid,
           p_horizon + ((x.transactionid::text::numeric - p_horizon % 4294967296
                         + 6442450944) % 4294967296) - 2147483648
    FROM pg_locks AS a
    JOIN pg_locks AS x ON x.virtualtransaction = a.virtualtransaction
    WHERE a.locktype = 'advisory'
      AND a.objsubid = 2
      AND a.classid = eventcore_lock_space()::oid
      AND a.database = (SELECT d.oid FROM pg_database AS d WHERE d.datname = current_database())
      AND a.granted
      AND x.locktype = 'transactionid'
      AND x.mode = 'ExclusiveLock'
      AND x.granted
    GROUP BY a.pid, x.transactionid
$$;
