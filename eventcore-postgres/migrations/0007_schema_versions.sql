-- Schema versions (issue 13): each event keeps the schema version of its
-- type it was written at, so a reader whose type has moved on knows to
-- upcast it. Rows written before this migration read as version 1 (a
-- constant default: no table rewrite, and no UPDATE, which the
-- immutability triggers would refuse anyway).
ALTER TABLE eventcore_events ADD COLUMN schema_version bigint NOT NULL DEFAULT 1;

-- The functions of 0005 and 0006 whose rows gain the column (after the
-- metadata) or whose append writes it; their result types change, so they
-- are dropped and made again, otherwise as they were.
DROP FUNCTION eventcore_read_streams_for(text[], text);
DROP FUNCTION eventcore_read_tails_for(text[], bigint[], text);
DROP FUNCTION eventcore_read_from_snapshot_for(text, text, text[], text);
DROP FUNCTION eventcore_read_tails(text[], bigint[]);
DROP FUNCTION eventcore_read_from_snapshot(text, text, text[]);
DROP FUNCTION eventcore_append(text[], bigint[], text[], bigint[], text[], text[], uuid[],
                               text[], text[], text[], text, text, bigint[]);

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
    p_causation      text[],
    p_command        text,
    p_command_type   text,
    p_resulting      bigint[],
    p_schema_versions bigint[]
) RETURNS TABLE (conflict_stream text, expected_version bigint, actual_version bigint,
                 recorded_type text, recorded_streams text[], recorded_versions bigint[],
                 recorded_events integer)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(l.key)
    FROM (SELECT DISTINCT hashtextextended(s, 0) AS key FROM unnest(p_streams) AS s ORDER BY 1) AS l;

    RETURN QUERY
        SELECT c.sid, c.expected, c.actual, NULL::text, NULL::text[], NULL::bigint[], NULL::integer
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

    -- The record, after the version check (a conflicting append writes
    -- nothing, and a repeat of an applied command almost always conflicts:
    -- its streams moved; `execute` then reads, and the read finds the
    -- record). An id already recorded, or recorded meanwhile by an append
    -- on other streams (ON CONFLICT waits for it to commit), returns that
    -- record instead, and nothing is written.
    IF p_command IS NOT NULL THEN
        IF cardinality(p_event_streams) > 0 THEN
            INSERT INTO eventcore_commands (command_id, command_type, streams, versions,
                                            events_written)
            VALUES (p_command, p_command_type, p_streams, p_resulting,
                    cardinality(p_event_streams))
            ON CONFLICT (command_id) DO NOTHING;
            IF FOUND THEN
                p_command := NULL;
            END IF;
        END IF;
        IF p_command IS NOT NULL THEN
            RETURN QUERY
                SELECT NULL::text, NULL::bigint, NULL::bigint,
                       c.command_type, c.streams, c.versions, c.events_written
                FROM eventcore_commands AS c
                WHERE c.command_id = p_command;
            IF FOUND THEN
                RETURN;
            END IF;
        END IF;
    END IF;

    INSERT INTO eventcore_events (stream_id, stream_version, event_type, payload, event_id,
                                  metadata, correlation_id, causation_id, schema_version)
    SELECT n.sid, n.version, n.event_type, n.payload::json, n.event_id,
           n.metadata::jsonb, n.correlation, n.causation, n.schema_version
    FROM unnest(p_event_streams, p_event_versions, p_event_types, p_payloads, p_event_ids,
                p_metadata, p_correlation, p_causation, p_schema_versions)
        AS n(sid, version, event_type, payload, event_id, metadata, correlation, causation,
             schema_version);
END
$$;

CREATE FUNCTION eventcore_read_tails(p_streams text[], p_after bigint[])
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

CREATE FUNCTION eventcore_read_from_snapshot(p_name text, p_key text, p_streams text[])
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
    v_after    bigint[];
BEGIN
    SELECT s.schema_version, s.versions, s.state INTO s_schema, s_versions, s_state
    FROM eventcore_snapshots AS s
    WHERE s.state_name = p_name AND md5(s.state_key) = md5(p_key) AND s.state_key = p_key;
    IF FOUND THEN
        RETURN QUERY SELECT NULL::text, s_schema, NULL::bigint, NULL::text, s_state, NULL::uuid,
                            NULL::bigint, NULL::text, NULL::text, NULL::text, NULL::bigint,
                            s_versions,
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

-- Reads for a command with an id: the command's record if it is there
-- (then the streams are not read), else the read, in one consistent view
-- (a STABLE function sees one snapshot). A record row has no stream and
-- its record in the last five columns: command type, streams, versions,
-- events written, recorded_at in microseconds. Functions, so that their
-- plans are made once per session.
CREATE FUNCTION eventcore_read_streams_for(p_streams text[], p_command text)
RETURNS TABLE (out_stream text, out_version bigint, out_position bigint, out_type text,
               out_payload text, out_event_id uuid, out_recorded_at bigint,
               out_correlation text, out_causation text, out_metadata text,
               out_schema_version bigint,
               out_command_type text, out_command_streams text[],
               out_command_versions bigint[], out_command_events integer,
               out_command_recorded_at bigint)
LANGUAGE plpgsql STABLE
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
    RETURN QUERY
        SELECT NULL::text, NULL::bigint, NULL::bigint, NULL::text, NULL::text, NULL::uuid,
               NULL::bigint, NULL::text, NULL::text, NULL::text, NULL::bigint,
               c.command_type, c.streams, c.versions, c.events_written,
               (extract(epoch FROM c.recorded_at) * 1000000)::bigint
        FROM eventcore_commands AS c
        WHERE c.command_id = p_command;
    IF FOUND THEN
        RETURN;
    END IF;
    RETURN QUERY
        SELECT e.stream_id, e.stream_version, e.global_position, e.event_type, e.payload::text,
               e.event_id, (extract(epoch FROM e.recorded_at) * 1000000)::bigint,
               e.correlation_id, e.causation_id, e.metadata::text, e.schema_version,
               NULL::text, NULL::text[], NULL::bigint[], NULL::integer, NULL::bigint
        FROM eventcore_events AS e
        WHERE e.stream_id = ANY (p_streams)
        ORDER BY e.global_position;
END
$$;

CREATE FUNCTION eventcore_read_tails_for(p_streams text[], p_after bigint[], p_command text)
RETURNS TABLE (out_stream text, out_version bigint, out_position bigint, out_type text,
               out_payload text, out_event_id uuid, out_recorded_at bigint,
               out_correlation text, out_causation text, out_metadata text,
               out_schema_version bigint,
               out_command_type text, out_command_streams text[],
               out_command_versions bigint[], out_command_events integer,
               out_command_recorded_at bigint)
LANGUAGE plpgsql STABLE
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
    RETURN QUERY
        SELECT NULL::text, NULL::bigint, NULL::bigint, NULL::text, NULL::text, NULL::uuid,
               NULL::bigint, NULL::text, NULL::text, NULL::text, NULL::bigint,
               c.command_type, c.streams, c.versions, c.events_written,
               (extract(epoch FROM c.recorded_at) * 1000000)::bigint
        FROM eventcore_commands AS c
        WHERE c.command_id = p_command;
    IF FOUND THEN
        RETURN;
    END IF;
    RETURN QUERY
        SELECT t.*, NULL::text, NULL::text[], NULL::bigint[], NULL::integer, NULL::bigint
        FROM eventcore_read_tails(p_streams, p_after) AS t;
END
$$;

CREATE FUNCTION eventcore_read_from_snapshot_for(p_name text, p_key text, p_streams text[],
                                                 p_command text)
RETURNS TABLE (out_stream text, out_version bigint, out_position bigint, out_type text,
               out_payload text, out_event_id uuid, out_recorded_at bigint,
               out_correlation text, out_causation text, out_metadata text,
               out_schema_version bigint,
               out_snapshot_versions bigint[], out_after bigint,
               out_command_type text, out_command_streams text[],
               out_command_versions bigint[], out_command_events integer,
               out_command_recorded_at bigint)
LANGUAGE plpgsql STABLE
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
    RETURN QUERY
        SELECT NULL::text, NULL::bigint, NULL::bigint, NULL::text, NULL::text, NULL::uuid,
               NULL::bigint, NULL::text, NULL::text, NULL::text, NULL::bigint, NULL::bigint[],
               NULL::bigint, c.command_type, c.streams, c.versions, c.events_written,
               (extract(epoch FROM c.recorded_at) * 1000000)::bigint
        FROM eventcore_commands AS c
        WHERE c.command_id = p_command;
    IF FOUND THEN
        RETURN;
    END IF;
    RETURN QUERY
        SELECT t.*, NULL::text, NULL::text[], NULL::bigint[], NULL::integer, NULL::bigint
        FROM eventcore_read_from_snapshot(p_name, p_key, p_streams) AS t;
END
$$;
