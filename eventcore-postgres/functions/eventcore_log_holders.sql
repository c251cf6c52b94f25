-- What holds the global log back: the appends still running whose commit
-- keys are below committed events (readers see none of those events until
-- these appends end), oldest first, with their sessions from
-- pg_stat_activity, and the commit key and write time of the first event
-- waiting.
CREATE OR REPLACE FUNCTION eventcore_log_holders()
RETURNS TABLE (out_pid integer, out_commit text, out_transaction_started bigint,
               out_state text, out_application text, out_waiting_commit text,
               out_waiting_since bigint)
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    horizon numeric := pg_snapshot_xmax(pg_current_snapshot())::text::numeric;
    shift numeric := eventcore_commit_shift();
BEGIN
    RETURN QUERY
        WITH running AS (
            SELECT r.pid, r.transaction_id + shift AS commit_key
            FROM eventcore_running_appends(horizon) AS r
        ),
        waiting AS (
            SELECT e.transaction_id, e.recorded_at
            FROM eventcore_events AS e
            WHERE e.transaction_id > (SELECT min(r.commit_key) FROM running AS r)::text::xid8
            ORDER BY e.transaction_id, e.global_position
            LIMIT 1
        )
        SELECT r.pid, r.commit_key::text,
               (extract(epoch FROM s.xact_start) * 1000000)::bigint,
               s.state, s.application_name, w.transaction_id::text,
               (extract(epoch FROM w.recorded_at) * 1000000)::bigint
        FROM running AS r
        CROSS JOIN waiting AS w
        LEFT JOIN pg_stat_activity AS s ON s.pid = r.pid
        WHERE r.commit_key < w.transaction_id::text::numeric
        ORDER BY r.commit_key;
END
$$;
