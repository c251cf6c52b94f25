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

-- The functions this version needs are defined once each in functions/
-- and re-applied by migrate() whenever their text changes.
