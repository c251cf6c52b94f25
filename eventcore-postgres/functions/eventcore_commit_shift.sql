-- What this cluster adds to its transaction ids to make commit keys (see
-- migration 10). Fixed the first time the log is used on a cluster:
-- 0 when every stored key is below the cluster's next transaction id (the
-- cluster that wrote them, or one already past them), else enough to put
-- every later transaction above the highest key stored. Transactions that
-- start later, and appends already running (which look the shift up here
-- or wait for the one fixing it, on the row's key), all get ids at or
-- above the snapshot's xmax. Kept for the session once read (a setting
-- named after the schema).
CREATE OR REPLACE FUNCTION eventcore_commit_shift() RETURNS numeric
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    setting text := 'eventcore.commit_shift_' || current_schema();
    cached text := current_setting(setting, true);
    cluster bigint;
    found_shift numeric;
    next_id numeric;
    highest numeric;
BEGIN
    IF cached IS NOT NULL AND cached <> '' THEN
        RETURN cached::numeric;
    END IF;
    SELECT system_identifier INTO cluster FROM pg_control_system();
    SELECT c.shift INTO found_shift FROM eventcore_log_clock AS c
    WHERE c.system_identifier = cluster;
    IF NOT FOUND THEN
        next_id := pg_snapshot_xmax(pg_current_snapshot())::text::numeric;
        SELECT e.transaction_id::text::numeric INTO highest
        FROM eventcore_events AS e ORDER BY e.transaction_id DESC LIMIT 1;
        INSERT INTO eventcore_log_clock (system_identifier, shift)
        VALUES (cluster, greatest(0, coalesce(highest - next_id + 1, 0)))
        ON CONFLICT (system_identifier) DO NOTHING;
        SELECT c.shift INTO STRICT found_shift FROM eventcore_log_clock AS c
        WHERE c.system_identifier = cluster;
    END IF;
    PERFORM set_config(setting, found_shift::text, false);
    RETURN found_shift;
END
$$;
