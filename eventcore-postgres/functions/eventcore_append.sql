-- Appends events to several streams atomically, if and only if every
-- registered stream (p_streams, sorted and unique, read-only participants
-- included) is at its expected version. The caller numbers the events
-- (p_event_versions: expected version + 1, + 2, ... per stream, in order)
-- and sends each event's id, metadata, correlation and causation ids and
-- schema version. Returns at most one row: a version conflict
-- (conflict_stream set) or, for a command id already recorded, its record
-- (out_command_type set); either way nothing is written. Otherwise the command
-- (p_command) is recorded with the events, in the same transaction, and the
-- row holds the commit key and global position of the last event
-- (out_commit, out_position; null when no event was written). Stream locks
-- are taken by eventcore_lock_streams before the transaction has an id:
-- the log's fence (eventcore_log_fence) sees every append that might still
-- commit events, so an append must be its transaction's first write.
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
                 out_command_versions bigint[], out_command_events integer,
                 out_command_commit text, out_command_position bigint,
                 out_commit text, out_position bigint)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    shift text;
    commit_key xid8;
    last_position bigint;
BEGIN
    IF pg_current_xact_id_if_assigned() IS NOT NULL THEN
        RAISE EXCEPTION 'eventcore_append must be the first write of its transaction'
            USING ERRCODE = 'EC002',
                  HINT = 'The global log fences appends by their stream locks, taken '
                         'before the transaction has an id; append in a transaction of its own.';
    END IF;
    PERFORM eventcore_lock_streams(p_streams);

    RETURN QUERY
        SELECT c.sid, c.expected, c.actual, NULL::text, NULL::text[], NULL::bigint[], NULL::integer,
               NULL::text, NULL::bigint, NULL::text, NULL::bigint
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
                       c.command_type, c.streams, c.versions, c.events_written,
                       rp.out_commit, rp.out_position, NULL::text, NULL::bigint
                FROM eventcore_commands AS c
                LEFT JOIN LATERAL eventcore_record_position(c.streams, c.versions) AS rp ON true
                WHERE c.command_id = p_command;
            IF FOUND THEN
                RETURN;
            END IF;
        END IF;
    END IF;

    IF cardinality(p_event_streams) = 0 THEN
        RETURN QUERY SELECT NULL::text, NULL::bigint, NULL::bigint, NULL::text, NULL::text[],
                            NULL::bigint[], NULL::integer, NULL::text, NULL::bigint,
                            NULL::text, NULL::bigint;
        RETURN;
    END IF;
    -- The session keeps the cluster's shift (eventcore_commit_shift); it
    -- is 0 on the cluster that wrote the log.
    shift := current_setting('eventcore.commit_shift_' || current_schema(), true);
    IF shift IS NULL OR shift = '' THEN
        shift := eventcore_commit_shift()::text;
    END IF;
    IF shift = '0' THEN
        commit_key := pg_current_xact_id();
    ELSE
        commit_key := (pg_current_xact_id()::text::numeric + shift::numeric)::text::xid8;
    END IF;
    INSERT INTO eventcore_events (stream_id, stream_version, event_type, payload, event_id,
                                  metadata, correlation_id, causation_id, schema_version,
                                  transaction_id)
    SELECT n.sid, n.version, n.event_type, n.payload::json, n.event_id,
           n.metadata::jsonb, n.correlation, n.causation, n.schema_version, commit_key
    FROM unnest(p_event_streams, p_event_versions, p_event_types, p_payloads, p_event_ids,
                p_metadata, p_correlation, p_causation, p_schema_versions)
        AS n(sid, version, event_type, payload, event_id, metadata, correlation, causation,
             schema_version);
    -- The rows took ascending values of the identity's sequence, the last
    -- of them last in this session.
    last_position := currval('eventcore_events_global_position_seq'::regclass);
    RETURN QUERY SELECT NULL::text, NULL::bigint, NULL::bigint, NULL::text, NULL::text[],
                        NULL::bigint[], NULL::integer, NULL::text, NULL::bigint,
                        commit_key::text, last_position;
END
$$;
