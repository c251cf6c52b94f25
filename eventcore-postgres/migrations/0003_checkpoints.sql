-- Checkpoints of subscriptions: the position of the last event handled.
CREATE TABLE eventcore_checkpoints (
    name        text        PRIMARY KEY,
    commit_id   bigint      NOT NULL,
    sequence    bigint      NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
