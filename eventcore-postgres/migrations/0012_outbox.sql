-- The outbox of reactors (issue 26): the external effects a reactor
-- recorded in the transaction that moved its checkpoint, keyed by
-- (reactor, event, index), waiting for a dispatcher. `claims` counts the
-- claims made on an effect (a dispatcher's marks must name the current
-- one); `due_at` is when it may be claimed next: at once when recorded,
-- after a backoff when it failed, after its claim's lease while claimed.
-- `held` says the current claim has not marked it yet (a failure or a
-- delivery marks once). `retried_from` is `claims` when an operator last retried it, so the
-- attempts of this round are claims - retried_from.
CREATE TABLE eventcore_outbox (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    effect_key    text        NOT NULL UNIQUE,
    reactor       text        NOT NULL,
    destination   text        NOT NULL,
    payload       jsonb       NOT NULL,
    event_id      uuid        NOT NULL,
    commit_id     bigint      NOT NULL,
    sequence      bigint      NOT NULL,
    state         text        NOT NULL DEFAULT 'pending'
                              CHECK (state IN ('pending', 'delivered', 'parked', 'skipped')),
    claims        bigint      NOT NULL DEFAULT 0 CHECK (claims >= 0),
    held          boolean     NOT NULL DEFAULT false,
    retried_from  bigint      NOT NULL DEFAULT 0 CHECK (retried_from >= 0),
    due_at        timestamptz NOT NULL DEFAULT now(),
    last_error    text,
    recorded_at   timestamptz NOT NULL DEFAULT now(),
    done_at       timestamptz
);

-- What a claim looks through: pending effects in the order recorded.
CREATE INDEX eventcore_outbox_pending ON eventcore_outbox (id) WHERE state = 'pending';
-- What an operator looks through.
CREATE INDEX eventcore_outbox_parked ON eventcore_outbox (id) WHERE state = 'parked';
