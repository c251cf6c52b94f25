-- Snapshots of commands' declared states: the state's JSON text (kept
-- verbatim) and the version of each of its streams it covers, in the order
-- of the streams in state_key. Snapshots are not events: a row is replaced
-- as its state moves on and may be deleted at any time (the next command
-- folds from the events instead), so the immutability triggers cover
-- eventcore_events only.
CREATE TABLE eventcore_snapshots (
    state_name     text        NOT NULL,
    state_key      text        NOT NULL,
    schema_version bigint      NOT NULL,
    versions       bigint[]    NOT NULL,
    state          text        NOT NULL,
    saved_at       timestamptz NOT NULL DEFAULT now()
);

-- Keys can be long (every stream id of the command): index their digest.
CREATE UNIQUE INDEX eventcore_snapshots_key ON eventcore_snapshots (state_name, md5(state_key));

-- The reads of commands with declared states. Functions, like
-- eventcore_append, so that their statements are planned once per session
-- (force_generic_plan): as client statements PostgreSQL re-planned them on
-- every call, which cost more than running them. A generic plan does not
-- know the arrays, and on a table without statistics it may hash-join them
-- with a scan of every event; the LATERAL subqueries with OFFSET 0 leave
-- one plan only, an index range scan per stream. STABLE: every statement
-- in a call sees the same snapshot, so versions and events agree.

-- Every stream's current version, then the events above p_after (one per
-- stream, in the same order), in global order.
CREATE FUNCTION eventcore_read_tails(p_streams text[], p_after bigint[])
RETURNS TABLE (out_stream text, out_version bigint, out_position bigint, out_type text, out_payload text)
LANGUAGE plpgsql STABLE
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
    RETURN QUERY
        SELECT r.sid,
               coalesce((SELECT max(e.stream_version) FROM eventcore_events AS e
                         WHERE e.stream_id = r.sid), 0),
               NULL::bigint, NULL::text, NULL::text
        FROM unnest(p_streams) AS r(sid);
    RETURN QUERY
        SELECT e.stream_id, e.stream_version, e.global_position, e.event_type, e.payload::text
        FROM unnest(p_streams, p_after) AS r(sid, after)
        CROSS JOIN LATERAL (
            SELECT ev.stream_id, ev.stream_version, ev.global_position, ev.event_type, ev.payload
            FROM eventcore_events AS ev
            WHERE ev.stream_id = r.sid AND ev.stream_version > r.after
            OFFSET 0 -- never flattened: one index range scan per stream
        ) AS e
        ORDER BY e.global_position;
END
$$;

-- The snapshot filed under (p_name, p_key), if any, as one row with a NULL
-- stream; then, per stream of p_streams (the key's, in its order), its
-- current version and the version its events are read after (the
-- snapshot's when it holds one non-negative version per stream, else 0;
-- for a stream read from 0 the version row says 0 and the caller takes the
-- highest version among its events); then those events, in global order.
CREATE FUNCTION eventcore_read_from_snapshot(p_name text, p_key text, p_streams text[])
RETURNS TABLE (out_stream text, out_version bigint, out_position bigint, out_type text,
               out_payload text, out_snapshot_versions bigint[], out_after bigint)
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
        RETURN QUERY SELECT NULL::text, s_schema, NULL::bigint, NULL::text, s_state, s_versions,
                            NULL::bigint;
    END IF;
    IF cardinality(s_versions) = cardinality(p_streams) AND 0 <= ALL (s_versions) THEN
        v_after := s_versions;
    ELSE
        v_after := array_fill(0::bigint, ARRAY[cardinality(p_streams)]);
    END IF;
    -- A stream read from the start gets its version from its events (the
    -- caller takes the highest): no probe for it.
    RETURN QUERY
        SELECT r.sid,
               CASE WHEN r.after = 0 THEN 0
                    ELSE coalesce((SELECT max(e.stream_version) FROM eventcore_events AS e
                                   WHERE e.stream_id = r.sid), 0) END,
               NULL::bigint, NULL::text, NULL::text, NULL::bigint[], r.after
        FROM unnest(p_streams, v_after) AS r(sid, after);
    RETURN QUERY
        SELECT e.stream_id, e.stream_version, e.global_position, e.event_type, e.payload::text,
               NULL::bigint[], NULL::bigint
        FROM unnest(p_streams, v_after) AS r(sid, after)
        CROSS JOIN LATERAL (
            SELECT ev.stream_id, ev.stream_version, ev.global_position, ev.event_type, ev.payload
            FROM eventcore_events AS ev
            WHERE ev.stream_id = r.sid AND ev.stream_version > r.after
            OFFSET 0 -- never flattened: one index range scan per stream
        ) AS e
        ORDER BY e.global_position;
END
$$;
