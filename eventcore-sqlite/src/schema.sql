-- eventcore's tables in one SQLite file. Applied at every open: each
-- statement is idempotent.

-- Every event, numbered by its place in the global log. The position is
-- assigned by the one writer, under SQLite's write lock, as the last one
-- plus one: contiguous, and in commit order, so a reader of the log never
-- skips an event committed late.
CREATE TABLE IF NOT EXISTS eventcore_events (
    position       INTEGER PRIMARY KEY,
    stream_id      TEXT    NOT NULL,
    version        INTEGER NOT NULL,
    event_id       TEXT    NOT NULL UNIQUE,
    event_type     TEXT    NOT NULL,
    schema_version INTEGER NOT NULL,
    payload        TEXT    NOT NULL,
    correlation_id TEXT,
    causation_id   TEXT,
    metadata       TEXT    NOT NULL,
    recorded_at    INTEGER NOT NULL, -- microseconds since the Unix epoch
    UNIQUE (stream_id, version)
) STRICT;

-- Stored events are immutable.
CREATE TRIGGER IF NOT EXISTS eventcore_events_no_update
BEFORE UPDATE ON eventcore_events
BEGIN
    SELECT RAISE(ABORT, 'eventcore events are immutable: UPDATE refused');
END;

CREATE TRIGGER IF NOT EXISTS eventcore_events_no_delete
BEFORE DELETE ON eventcore_events
BEGIN
    SELECT RAISE(ABORT, 'eventcore events are immutable: DELETE refused');
END;

-- Each stream's current version, for the version check of an append.
CREATE TABLE IF NOT EXISTS eventcore_streams (
    stream_id TEXT    PRIMARY KEY,
    version   INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- A command's id, recorded in the transaction of its events.
CREATE TABLE IF NOT EXISTS eventcore_commands (
    command_id     TEXT    PRIMARY KEY,
    command_type   TEXT    NOT NULL,
    streams        TEXT    NOT NULL, -- JSON: [[stream, version after], ...]
    events_written INTEGER NOT NULL,
    recorded_at    INTEGER NOT NULL  -- microseconds since the Unix epoch
) STRICT, WITHOUT ROWID;

-- Snapshots are not events: replaced, dropped, deleted at will. Each keeps
-- the ids of the events at its versions, and is used only while those are
-- the stream's events.
CREATE TABLE IF NOT EXISTS eventcore_snapshots (
    name           TEXT    NOT NULL,
    streams        TEXT    NOT NULL, -- the key's text form
    schema_version INTEGER NOT NULL,
    versions       TEXT    NOT NULL, -- JSON: [version, ...]
    event_ids      TEXT    NOT NULL, -- JSON: [id or null, ...]
    state          TEXT    NOT NULL,
    PRIMARY KEY (name, streams)
) STRICT, WITHOUT ROWID;

-- Each subscription's checkpoint: the position of the last event handled,
-- both its parts (this store's log numbers its events in `sequence` alone;
-- a lane's member slot counts its beats in `commit_id`). A file from before
-- `commit_id` gains it when opened (see writer.rs).
CREATE TABLE IF NOT EXISTS eventcore_checkpoints (
    name      TEXT    PRIMARY KEY,
    sequence  INTEGER NOT NULL,
    commit_id INTEGER NOT NULL DEFAULT 0
) STRICT, WITHOUT ROWID;

-- Each subscription's newest lease token: raised by every lease taken, so
-- that a former holder's checkpoint is refused.
CREATE TABLE IF NOT EXISTS eventcore_leases (
    name  TEXT    PRIMARY KEY,
    token INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- Dead letters of subscription lanes: one row per parked key of a lane,
-- naming the event its handler kept failing on and why. A lane's writes
-- here are fenced by its token in eventcore_leases, as its checkpoint
-- saves are; `action` is an operator's request, (after_commit,
-- after_sequence) how far a replay of the key got.
CREATE TABLE IF NOT EXISTS eventcore_dead_letters (
    name           TEXT    NOT NULL,
    key            TEXT    NOT NULL,
    commit_id      INTEGER NOT NULL, -- the position's two parts
    sequence       INTEGER NOT NULL,
    event_id       TEXT    NOT NULL,
    stream_id      TEXT    NOT NULL,
    event_type     TEXT    NOT NULL,
    error          TEXT    NOT NULL,
    attempts       INTEGER NOT NULL CHECK (attempts >= 0),
    parked_at      INTEGER NOT NULL, -- microseconds since the Unix epoch
    action         TEXT    CHECK (action IN ('retry', 'skip')),
    after_commit   INTEGER,
    after_sequence INTEGER,
    PRIMARY KEY (name, key),
    CHECK ((after_commit IS NULL) = (after_sequence IS NULL))
) STRICT, WITHOUT ROWID;

-- The outbox of reactors: external effects recorded in the transaction
-- that moves the reactor's checkpoint, in the order recorded (`id`), one
-- row per idempotency key. A dispatcher claims a pending effect whose
-- `due_at` has come (raising `claims`, setting `held` and a lease in
-- `due_at`), delivers it with no transaction open, and marks it once under
-- that claim. Times are microseconds since the Unix epoch.
CREATE TABLE IF NOT EXISTS eventcore_outbox (
    id           INTEGER PRIMARY KEY,
    effect_key   TEXT    NOT NULL UNIQUE,
    reactor      TEXT    NOT NULL,
    destination  TEXT    NOT NULL,
    payload      TEXT    NOT NULL,
    event_id     TEXT    NOT NULL,
    commit_id    INTEGER NOT NULL,
    sequence     INTEGER NOT NULL,
    state        TEXT    NOT NULL DEFAULT 'pending'
                 CHECK (state IN ('pending', 'delivered', 'parked', 'skipped')),
    claims       INTEGER NOT NULL DEFAULT 0 CHECK (claims >= 0),
    retried_from INTEGER NOT NULL DEFAULT 0 CHECK (retried_from >= 0),
    held         INTEGER NOT NULL DEFAULT 0 CHECK (held IN (0, 1)),
    last_error   TEXT,
    due_at       INTEGER NOT NULL,
    recorded_at  INTEGER NOT NULL,
    done_at      INTEGER
) STRICT;

CREATE INDEX IF NOT EXISTS eventcore_outbox_due
    ON eventcore_outbox (due_at) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS eventcore_outbox_parked
    ON eventcore_outbox (id) WHERE state = 'parked';
