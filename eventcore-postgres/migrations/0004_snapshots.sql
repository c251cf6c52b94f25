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

-- The functions this version needs are defined once each in functions/
-- and re-applied by migrate() whenever their text changes.
