-- Appends events to several streams atomically, if and only if every
-- registered stream (p_streams, sorted and unique, read-only participants
-- included) is at its expected version. The caller numbers the events
-- (p_event_versions: expected version + 1, + 2, ... per stream, in order)
-- and sends each event's id, metadata, correlation and causation ids and
-- schema version. Returns at most one row: a version conflict
-- (conflict_stream set) or, for a command id already recorded, its record
-- (out_command_type set); either way nothing is written. Otherwise the command
-- (p_command) is recorded with the events, in the same transaction. Stream
-- locks are taken by eventcore_lock_streams.
CREATE OR REPLACE FUNCTION eventcore_append(
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
                 out_command_type text, out_command_streams text[],
                 out_command_versions bigint[], out_command_events integer)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
    PERFORM eventcore_lock_streams(p_streams);

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
