-- Event metadata (issue 10): the correlation and causation ids in columns
-- of their own, so that a trace can be found by correlation id through an
-- index; the caller's key/values in the existing metadata column; the
-- event id (made by the client) and recorded_at were there from 0001.
-- Nullable columns with no default: adding them rewrites no row.
ALTER TABLE eventcore_events
    ADD COLUMN correlation_id text,
    ADD COLUMN causation_id   text;

CREATE INDEX eventcore_events_correlation ON eventcore_events (correlation_id)
    WHERE correlation_id IS NOT NULL;

-- An event row as every read returns it, after stream, version, position,
-- type and payload: event id, recorded_at in microseconds since the Unix
-- epoch, correlation id, causation id, metadata as JSON text.

DROP FUNCTION eventcore_append(text[], bigint[], text[], bigint[], text[], text[], uuid[]);

-- As in 0001, with each event's metadata, correlation and causation ids.
CREATE FUNCTION eventcore_append(
    p_streams        text[],
    p_expected       bigint[],
    p_event_streams  text[],
    p_event_versions bigint[],
    p_event_types    text[],
    p_payloads       text[],
    p_event_ids      uuid[],
    p_metadata       text[],
    p_correlation    text[],
    p_causation      text[]
) RETURNS TABLE (conflict_stream text, expected_version bigint, actual_version bigint)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(l.key)
    FROM (SELECT DISTINCT hashtextextended(s, 0) AS key FROM unnest(p_streams) AS s ORDER BY 1) AS l;

    RETURN QUERY
        SELECT c.sid, c.expected, c.actual
        FROM (
            SELECT r.sid, r.expected,
                   coalesce((SELECT max(e.stream_version) FROM eventcore_events AS e
                             WHERE e.stream_id = r.sid), 0) AS actual
            FROM unnest(p_streams, p_expected) AS r(sid, expected)
        ) AS c
        WHERE c.actual <> c.expected
        ORDER BY c.sid
        LIMIT 1;
    IF FOUND THEN
        RETURN;
    END IF;

    INSERT INTO eventcore_events (stream_id, stream_version, event_type, payload, event_id,
                                  metadata, correlation_id, causation_id)
    SELECT n.sid, n.version, n.event_type, n.payload::jsonb, n.event_id,
           n.metadata::jsonb, n.correlation, n.causation
    FROM unnest(p_event_streams, p_event_versions, p_event_types, p_payloads, p_event_ids,
                p_metadata, p_correlation, p_causation)
        AS n(sid, version, event_type, payload, event_id, metadata, correlation, causation);
END
$$;

-- The reads of 0004, returning the metadata columns too.
DROP FUNCTION eventcore_read_tails(text[], bigint[]);
DROP FUNCTION eventcore_read_from_snapshot(text, text, text[]);

CREATE FUNCTION eventcore_read_tails(p_streams text[], p_after bigint[])
RETURNS TABLE (out_stream text, out_version bigint, out_position bigint, out_type text,
               out_payload text, out_event_id uuid, out_recorded_at bigint,
               out_correlation text, out_causation text, out_metadata text)
LANGUAGE plpgsql STABLE
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
    RETURN QUERY
        SELECT r.sid,
               coalesce((SELECT max(e.stream_version) FROM eventcore_events AS e
                         WHERE e.stream_id = r.sid), 0),
               NULL::bigint, NULL::text, NULL::text, NULL::uuid, NULL::bigint, NULL::text,
               NULL::text, NULL::text
        FROM unnest(p_streams) AS r(sid);
    RETURN QUERY
        SELECT e.stream_id, e.stream_version, e.global_position, e.event_type, e.payload::text,
               e.event_id, (extract(epoch FROM e.recorded_at) * 1000000)::bigint,
               e.correlation_id, e.causation_id, e.metadata::text
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

CREATE FUNCTION eventcore_read_from_snapshot(p_name text, p_key text, p_streams text[])
RETURNS TABLE (out_stream text, out_version bigint, out_position bigint, out_type text,
               out_payload text, out_event_id uuid, out_recorded_at bigint,
               out_correlation text, out_causation text, out_metadata text,
               out_snapshot_versions bigint[], out_after bigint)
LANGUAGE plpgsql STABLE
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    s_schema   bigint;
    s_versions bigint[];
    s_state    text;
    v_after    bigint[];
BEGIN
    SELECT s.schema_version, s.versions, s.state INTO s_schema, s_versions, s_state
    FROM eventcore_snapshots AS s
    WHERE s.state_name = p_name AND md5(s.state_key) = md5(p_key) AND s.state_key = p_key;
    IF FOUND THEN
        RETURN QUERY SELECT NULL::text, s_schema, NULL::bigint, NULL::text, s_state, NULL::uuid,
                            NULL::bigint, NULL::text, NULL::text, NULL::text, s_versions,
                            NULL::bigint;
    END IF;
    IF cardinality(s_versions) = cardinality(p_streams) AND 0 <= ALL (s_versions) THEN
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
               NULL::text, NULL::text, NULL::bigint[], r.after
        FROM unnest(p_streams, v_after) AS r(sid, after);
    RETURN QUERY
        SELECT e.stream_id, e.stream_version, e.global_position, e.event_type, e.payload::text,
               e.event_id, (extract(epoch FROM e.recorded_at) * 1000000)::bigint,
               e.correlation_id, e.causation_id, e.metadata::text,
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
