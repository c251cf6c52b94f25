-- The snapshot filed under (p_name, p_key), if any, as one row with a NULL
-- stream; then, per stream of p_streams (the key's, in its order), its
-- current version and the version its events are read after (the
-- snapshot's when it holds one non-negative version per stream and the
-- events at those versions still have the ids it recorded, else 0;
-- for a stream read from 0 the version row says 0 and the caller takes the
-- highest version among its events); then those events, in global order.
CREATE OR REPLACE FUNCTION eventcore_read_from_snapshot(p_name text, p_key text, p_streams text[])
RETURNS TABLE (out_stream text, out_version bigint, out_position bigint, out_type text,
               out_payload text, out_event_id uuid, out_recorded_at bigint,
               out_correlation text, out_causation text, out_metadata text,
               out_schema_version bigint,
               out_snapshot_versions bigint[], out_after bigint)
LANGUAGE plpgsql STABLE
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    s_schema   bigint;
    s_versions bigint[];
    s_state    text;
    s_ids      uuid[];
    v_after    bigint[];
BEGIN
    SELECT s.schema_version, s.versions, s.state, s.event_ids
    INTO s_schema, s_versions, s_state, s_ids
    FROM eventcore_snapshots AS s
    WHERE s.state_name = p_name AND md5(s.state_key) = md5(p_key) AND s.state_key = p_key;
    IF FOUND THEN
        RETURN QUERY SELECT NULL::text, s_schema, NULL::bigint, NULL::text, s_state, NULL::uuid,
                            NULL::bigint, NULL::text, NULL::text, NULL::text, NULL::bigint,
                            s_versions,
                            NULL::bigint;
    END IF;
    -- Arrays compare NULL elements as equal: a stream at version 0 matches.
    IF cardinality(s_versions) = cardinality(p_streams) AND 0 <= ALL (s_versions)
       AND s_ids IS NOT NULL
       AND s_ids = ARRAY(SELECT ev.event_id
                         FROM unnest(p_streams, s_versions) WITH ORDINALITY AS r(sid, v, n)
                         LEFT JOIN eventcore_events AS ev
                                ON ev.stream_id = r.sid AND ev.stream_version = r.v
                         ORDER BY r.n) THEN
        v_after := s_versions;
    ELSE
        v_after := array_fill(0::bigint, ARRAY[cardinality(p_streams)]);
    END IF;
    RETURN QUERY
        SELECT r.sid,
               CASE WHEN r.after = 0 THEN 0
                    ELSE coalesce((SELECT max(e.stream_version) FROM eventcore_events AS e
                                   WHERE e.stream_id = r.sid), 0) END,
               NULL::bigint, NULL::text, NULL::text, NULL::uuid, NULL::bigint, NULL::text,
               NULL::text, NULL::text, NULL::bigint, NULL::bigint[], r.after
        FROM unnest(p_streams, v_after) AS r(sid, after);
    RETURN QUERY
        SELECT e.stream_id, e.stream_version, e.global_position, e.event_type, e.payload::text,
               e.event_id, (extract(epoch FROM e.recorded_at) * 1000000)::bigint,
               e.correlation_id, e.causation_id, e.metadata::text, e.schema_version,
               NULL::bigint[], NULL::bigint
        FROM unnest(p_streams, v_after) AS r(sid, after)
        CROSS JOIN LATERAL (
            SELECT ev.*
            FROM eventcore_events AS ev
            WHERE ev.stream_id = r.sid AND ev.stream_version > r.after
            OFFSET 0 -- never flattened: one index range scan per stream
        ) AS e
        ORDER BY e.global_position;
END
$$;
