-- A page of the global log after (p_commit, p_sequence), in commit-key
-- order, below the fence (eventcore_log_fence), read in a statement after
-- the fence's own, so that every append below the fence has ended in the
-- snapshot that reads. Under REPEATABLE READ or SERIALIZABLE the snapshot
-- is the transaction's, older than the fence: the fence is then also kept
-- below the snapshot's xmin.
--
-- Rows of kind 0 are events. Unfiltered, a page is one walk of the
-- commit-order index that stops at the limit. With a stream-prefix or
-- event-type filter the walk stops after p_scan events, matching or not,
-- whatever the filters and the table's statistics, and the matching ones
-- are returned, up to p_limit; when fewer match, one row of kind 1 holds
-- the last event the walk looked at: where the next page starts.
-- Subqueries rather than a shared CTE keep the index order known to the
-- planner (no sort) and nothing spilled to disk.
--
-- The page ends with one row of kind 2 when committed events wait above
-- the fence, held back by an append still running: its out_recorded_at is
-- when the first of them (in commit-key order) was written.
CREATE OR REPLACE FUNCTION eventcore_read_all(
    p_commit   text,
    p_sequence bigint,
    p_prefix   text,
    p_types    text[],
    p_limit    bigint,
    p_scan     bigint
) RETURNS TABLE (out_stream text, out_version bigint, out_position bigint, out_type text,
                 out_payload text, out_event_id uuid, out_recorded_at bigint,
                 out_correlation text, out_causation text, out_metadata text,
                 out_schema_version bigint, out_commit text, out_kind integer)
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_after xid8 := p_commit::xid8;
    v_fence xid8 := eventcore_log_fence();
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        v_fence := least(v_fence, (pg_snapshot_xmin(pg_current_snapshot())::text::numeric
                               + eventcore_commit_shift())::text::xid8);
    END IF;
    IF p_prefix IS NULL AND p_types IS NULL THEN
        RETURN QUERY
            SELECT e.stream_id, e.stream_version, e.global_position, e.event_type,
                   e.payload::text, e.event_id,
                   (extract(epoch FROM e.recorded_at) * 1000000)::bigint,
                   e.correlation_id, e.causation_id, e.metadata::text, e.schema_version,
                   e.transaction_id::text, 0
            FROM eventcore_events AS e
            WHERE (e.transaction_id, e.global_position) > (v_after, p_sequence)
              AND e.transaction_id < v_fence
            ORDER BY e.transaction_id, e.global_position
            LIMIT p_limit;
    ELSE
        RETURN QUERY
            WITH matched AS (
                SELECT w.stream_id, w.stream_version, w.global_position, w.event_type,
                       w.payload::text AS payload, w.event_id,
                       (extract(epoch FROM w.recorded_at) * 1000000)::bigint AS recorded,
                       w.correlation_id, w.causation_id, w.metadata::text AS metadata,
                       w.schema_version, w.transaction_id
                FROM (SELECT *
                      FROM eventcore_events AS e
                      WHERE (e.transaction_id, e.global_position) > (v_after, p_sequence)
                        AND e.transaction_id < v_fence
                      ORDER BY e.transaction_id, e.global_position
                      LIMIT p_scan) AS w
                WHERE (p_prefix IS NULL OR starts_with(w.stream_id, p_prefix))
                  AND (p_types IS NULL OR w.event_type = ANY(p_types))
                ORDER BY w.transaction_id, w.global_position
                LIMIT p_limit
            )
            SELECT m.stream_id, m.stream_version, m.global_position, m.event_type, m.payload,
                   m.event_id, m.recorded, m.correlation_id, m.causation_id, m.metadata,
                   m.schema_version, m.transaction_id::text, 0
            FROM matched AS m
            UNION ALL
            SELECT NULL::text, NULL::bigint, last.global_position, NULL::text, NULL::text,
                   NULL::uuid, NULL::bigint, NULL::text, NULL::text, NULL::text, NULL::bigint,
                   last.transaction_id::text, 1
            FROM (SELECT w.transaction_id, w.global_position
                  FROM (SELECT e.transaction_id, e.global_position
                        FROM eventcore_events AS e
                        WHERE (e.transaction_id, e.global_position) > (v_after, p_sequence)
                          AND e.transaction_id < v_fence
                        ORDER BY e.transaction_id, e.global_position
                        LIMIT p_scan) AS w
                  ORDER BY w.transaction_id DESC, w.global_position DESC
                  LIMIT 1) AS last
            WHERE (SELECT count(*) FROM matched) < p_limit;
    END IF;
    RETURN QUERY
            SELECT NULL::text, NULL::bigint, NULL::bigint, NULL::text, NULL::text, NULL::uuid,
                   (extract(epoch FROM e.recorded_at) * 1000000)::bigint,
                   NULL::text, NULL::text, NULL::text, NULL::bigint, NULL::text, 2
            FROM eventcore_events AS e
            WHERE e.transaction_id >= v_fence
            ORDER BY e.transaction_id, e.global_position
            LIMIT 1;
END
$$;
