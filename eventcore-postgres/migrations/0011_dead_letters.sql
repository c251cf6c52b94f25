-- Dead letters of subscription lanes (issue 25): one row per parked key of
-- a lane, naming the event its handler kept failing on and why. A lane's
-- writes here are fenced by its token in eventcore_leases, as its
-- checkpoint saves are; `action` is an operator's request (retry or skip),
-- and (after_commit, after_sequence) how far a replay of the key got.
CREATE TABLE eventcore_dead_letters (
    name            text        NOT NULL,
    key             text        NOT NULL,
    commit_id       bigint      NOT NULL,
    sequence        bigint      NOT NULL,
    event_id        uuid        NOT NULL,
    stream_id       text        NOT NULL,
    event_type      text        NOT NULL,
    error           text        NOT NULL,
    attempts        bigint      NOT NULL CHECK (attempts >= 0),
    parked_at       timestamptz NOT NULL,
    action          text        CHECK (action IN ('retry', 'skip')),
    after_commit    bigint,
    after_sequence  bigint,
    PRIMARY KEY (name, key),
    CHECK ((after_commit IS NULL) = (after_sequence IS NULL))
);
