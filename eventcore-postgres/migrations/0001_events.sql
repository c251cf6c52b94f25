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
-- included) is at its expected version. Returns no row on success, or one
-- row naming the first stream whose version differs (nothing written).
CREATE FUNCTION eventcore_append(
    p_streams       text[],
    p_expected      bigint[],
    p_event_streams text[],
    p_event_types   text[],
    p_payloads      text[],
    p_event_ids     uuid[]
) RETURNS TABLE (conflict_stream text, expected_version bigint, actual_version bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_key bigint;
BEGIN
    -- Lock every registered stream for the rest of the transaction, in one
    -- canonical order (by lock key) so that writers over overlapping sets
    -- of streams cannot deadlock. Writers to disjoint streams never wait.
    FOR v_key IN
        SELECT DISTINCT hashtextextended(s, 0) FROM unnest(p_streams) AS s ORDER BY 1
    LOOP
        PERFORM pg_advisory_xact_lock(v_key);
    END LOOP;

    -- Under the locks, this statement's snapshot sees every committed
    -- write to these streams: compare versions.
    RETURN QUERY
        SELECT r.sid, r.expected, coalesce(cur.version, 0)
        FROM unnest(p_streams, p_expected) AS r(sid, expected)
        LEFT JOIN LATERAL (
            SELECT e.stream_version AS version
            FROM eventcore_events AS e
            WHERE e.stream_id = r.sid
            ORDER BY e.stream_version DESC
            LIMIT 1
        ) AS cur ON true
        WHERE coalesce(cur.version, 0) <> r.expected
        ORDER BY r.sid
        LIMIT 1;
    IF FOUND THEN
        RETURN;
    END IF;

    INSERT INTO eventcore_events (stream_id, stream_version, event_type, payload, event_id)
    SELECT n.sid,
           r.expected + row_number() OVER (PARTITION BY n.sid ORDER BY n.ord),
           n.event_type,
           n.payload::jsonb,
           n.event_id
    FROM unnest(p_event_streams, p_event_types, p_payloads, p_event_ids)
             WITH ORDINALITY AS n(sid, event_type, payload, event_id, ord)
    JOIN unnest(p_streams, p_expected) AS r(sid, expected) ON r.sid = n.sid
    ORDER BY n.ord;
END
$$;
