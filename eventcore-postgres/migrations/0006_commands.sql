-- Command ids (issue 10): a command executed with an id is recorded in the
-- same transaction as its events, so an id is recorded if and only if its
-- events are stored. A repeat finds the record and writes nothing.
-- Records are not events: `prune_commands` deletes old ones.
CREATE TABLE eventcore_commands (
    command_id     text        PRIMARY KEY,
    command_type   text        NOT NULL,
    -- Every stream the append registered, sorted, with its version after it.
    streams        text[]      NOT NULL,
    versions       bigint[]    NOT NULL,
    events_written integer     NOT NULL,
    recorded_at    timestamptz NOT NULL DEFAULT now()
);

-- Payloads kept verbatim (issue 11): `json` stores the text as sent, where
-- `jsonb` renormalised numbers (-0.0 came back as 0, 1e308 as 309 digits),
-- so an event is read back exactly as it was written, as on every store.
-- Rows already stored keep the text `jsonb` had made of them.
ALTER TABLE eventcore_events ALTER COLUMN payload TYPE json USING payload::text::json;

DROP FUNCTION eventcore_append(text[], bigint[], text[], bigint[], text[], text[], uuid[],
                               text[], text[], text[]);

-- As in 0005, with the command recorded with the events. Returns at most
-- one row: a version conflict (conflict_stream set) or, for a command id
-- already recorded, its record (recorded_type set); either way nothing is
-- written.
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
    p_resulting      bigint[]
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
                                  metadata, correlation_id, causation_id)
    SELECT n.sid, n.version, n.event_type, n.payload::json, n.event_id,
           n.metadata::jsonb, n.correlation, n.causation
    FROM unnest(p_event_streams, p_event_versions, p_event_types, p_payloads, p_event_ids,
                p_metadata, p_correlation, p_causation)
        AS n(sid, version, event_type, payload, event_id, metadata, correlation, causation);
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
               out_command_type text, out_command_streams text[],
               out_command_versions bigint[], out_command_events integer,
               out_command_recorded_at bigint)
LANGUAGE plpgsql STABLE
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
    RETURN QUERY
        SELECT NULL::text, NULL::bigint, NULL::bigint, NULL::text, NULL::text, NULL::uuid,
               NULL::bigint, NULL::text, NULL::text, NULL::text,
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
               e.correlation_id, e.causation_id, e.metadata::text,
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
               out_command_type text, out_command_streams text[],
               out_command_versions bigint[], out_command_events integer,
               out_command_recorded_at bigint)
LANGUAGE plpgsql STABLE
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
    RETURN QUERY
        SELECT NULL::text, NULL::bigint, NULL::bigint, NULL::text, NULL::text, NULL::uuid,
               NULL::bigint, NULL::text, NULL::text, NULL::text,
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
               NULL::bigint, NULL::text, NULL::text, NULL::text, NULL::bigint[], NULL::bigint,
               c.command_type, c.streams, c.versions, c.events_written,
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
