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

-- The functions this version needs are defined once each in functions/
-- and re-applied by migrate() whenever their text changes.
