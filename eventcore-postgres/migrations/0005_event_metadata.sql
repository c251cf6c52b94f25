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

-- The functions this version needs are defined once each in functions/
-- and re-applied by migrate() whenever their text changes.
