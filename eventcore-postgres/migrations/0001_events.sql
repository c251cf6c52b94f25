-- The event log. One row per event; (stream_id, stream_version) is the
-- stream's own order, global_position the log's. transaction_id records the
-- writing transaction so that readers in global order can wait for every
-- transaction older than their snapshot's xmin (see the crate docs).
CREATE TABLE eventcore_events (
    global_position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream_id       text        NOT NULL,
    stream_version  bigint      NOT NULL CHECK (stream_version > 0),
    event_type      text        NOT NULL,
    payload         jsonb       NOT NULL,
    metadata        jsonb       NOT NULL DEFAULT '{}'::jsonb,
    event_id        uuid        NOT NULL,
    transaction_id  xid8        NOT NULL DEFAULT pg_current_xact_id(),
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT eventcore_events_stream_version_key UNIQUE (stream_id, stream_version)
);

-- Stored events are immutable.
CREATE FUNCTION eventcore_reject_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'eventcore events are immutable: % on % is not allowed', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'EC001',
              HINT = 'Append a compensating event instead of changing history.';
END
$$;

CREATE TRIGGER eventcore_events_immutable_rows
    BEFORE UPDATE OR DELETE ON eventcore_events
    FOR EACH ROW EXECUTE FUNCTION eventcore_reject_change();

CREATE TRIGGER eventcore_events_no_truncate
    BEFORE TRUNCATE ON eventcore_events
    FOR EACH STATEMENT EXECUTE FUNCTION eventcore_reject_change();

-- Appends events to several streams atomically, if and only if every
-- registered stream (p_streams, sorted and unique, read-only participants
-- included) is at its expected version. The caller numbers the events
-- (p_event_versions: expected version + 1, + 2, ... per stream, in order).
-- Returns no row on success, or one row naming the first stream whose
-- version differs, and then writes nothing.
CREATE FUNCTION eventcore_append(
    p_streams        text[],
    p_expected       bigint[],
    p_event_streams  text[],
    p_event_versions bigint[],
    p_event_types    text[],
    p_payloads       text[],
    p_event_ids      uuid[]
) RETURNS TABLE (conflict_stream text, expected_version bigint, actual_version bigint)
LANGUAGE plpgsql
-- The statements below take arrays, whose custom plans the planner never
-- finds cheaper than the generic ones; without this it re-plans every
-- statement on every call, which more than doubled the call's cost.
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
    -- Lock every registered stream for the rest of the transaction, in one
    -- canonical order (by lock key) so that writers over overlapping sets
    -- of streams cannot deadlock. Writers to disjoint streams never wait.
    PERFORM pg_advisory_xact_lock(l.key)
    FROM (SELECT DISTINCT hashtextextended(s, 0) AS key FROM unnest(p_streams) AS s ORDER BY 1) AS l;

    -- Under the locks, this statement's snapshot sees every committed
    -- write to these streams: compare versions.
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

    -- unnest returns the arrays' elements in order, so global positions
    -- follow the order of the events in the write.
    INSERT INTO eventcore_events (stream_id, stream_version, event_type, payload, event_id)
    SELECT n.sid, n.version, n.event_type, n.payload::jsonb, n.event_id
    FROM unnest(p_event_streams, p_event_versions, p_event_types, p_payloads, p_event_ids)
        AS n(sid, version, event_type, payload, event_id);
END
$$;
