-- Every stream's current version, then the events above p_after (one per
-- stream, in the same order), in global order. A function, so that the
-- statement is planned once per session (force_generic_plan); the LATERAL
-- subqueries with OFFSET 0 leave one plan only, an index range scan per
-- stream. STABLE: every statement in a call sees the same snapshot, so
-- versions and events agree. An event row, after stream, version, position,
-- type and payload: event id, recorded_at in microseconds since the Unix
-- epoch, correlation id, causation id, metadata as JSON text, schema version.
CREATE OR REPLACE FUNCTION eventcore_read_tails(p_streams text[], p_after bigint[])
RETURNS TABLE (out_stream text, out_version bigint, out_position bigint, out_type text,
               out_payload text, out_event_id uuid, out_recorded_at bigint,
               out_correlation text, out_causation text, out_metadata text,
               out_schema_version bigint)
LANGUAGE plpgsql STABLE
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
    RETURN QUERY
        SELECT r.sid,
               coalesce((SELECT max(e.stream_version) FROM eventcore_events AS e
                         WHERE e.stream_id = r.sid), 0),
               NULL::bigint, NULL::text, NULL::text, NULL::uuid, NULL::bigint, NULL::text,
               NULL::text, NULL::text, NULL::bigint
        FROM unnest(p_streams) AS r(sid);
    RETURN QUERY
        SELECT e.stream_id, e.stream_version, e.global_position, e.event_type, e.payload::text,
               e.event_id, (extract(epoch FROM e.recorded_at) * 1000000)::bigint,
               e.correlation_id, e.causation_id, e.metadata::text, e.schema_version
        FROM unnest(p_streams, p_after) AS r(sid, after)
        CROSS JOIN LATERAL (
            SELECT ev.*
            FROM eventcore_events AS ev
            WHERE ev.stream_id = r.sid AND ev.stream_version > r.after
            OFFSET 0 -- never flattened: one index range scan per stream
        ) AS e
        ORDER BY e.global_position;
END
$$;
