//! The one writer: every append of the store, committed in groups.

use std::{path::Path, sync::mpsc, time::Duration};

use eventcore::{
    AppendOutcome, CommandRecord, LeaseToken, Position, Snapshot, StoreError, StreamWrites,
    SubscriptionName,
};
use rusqlite::{Connection, TransactionBehavior, params};
use tokio::sync::{Notify, oneshot};

use crate::{
    SqliteConfig, Synchronous,
    error::sqlite,
    read::{self, event_ids_at},
    rows::{now_micros, sql_version},
};

/// What the writer is asked to do.
#[derive(Debug)]
pub(crate) enum Job {
    /// Append, or refuse with a conflict.
    Append {
        writes: StreamWrites,
        reply: oneshot::Sender<Result<AppendOutcome, StoreError>>,
    },
    /// Delete command records older than `older_than`.
    Prune {
        older_than: Duration,
        reply: oneshot::Sender<Result<u64, StoreError>>,
    },
    /// Raise the lease token of `name`.
    Lease {
        name: String,
        reply: oneshot::Sender<Result<LeaseToken, StoreError>>,
    },
    /// Move a checkpoint under a lease token.
    Checkpoint {
        name: SubscriptionName,
        position: Position,
        token: LeaseToken,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// Any other write: runs on the writer's connection, and answers
    /// through a reply it carries.
    Run(Write),
}

/// A write run on the writer's connection by [`Job::Run`].
pub(crate) struct Write(pub(crate) Box<dyn FnOnce(&mut Connection) + Send>);

impl std::fmt::Debug for Write {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Write")
    }
}

/// Opens the write connection and brings the tables up to date.
pub(crate) fn open(path: &Path, config: &SqliteConfig) -> Result<Connection, StoreError> {
    let mut connection = Connection::open(path).map_err(|e| sqlite("open", e))?;
    connection
        .busy_timeout(config.busy_timeout)
        .map_err(|e| sqlite("open", e))?;
    let synchronous = match config.synchronous {
        Synchronous::Full => "FULL",
        Synchronous::Normal => "NORMAL",
    };
    connection
        .pragma_update(None, "journal_mode", "WAL")
        .and_then(|()| connection.pragma_update(None, "synchronous", synchronous))
        .and_then(|()| connection.execute_batch(include_str!("schema.sql")))
        .and_then(|()| upgrade(&mut connection))
        .map_err(|e| sqlite("migrate", e))?;
    Ok(connection)
}

/// Brings the tables of a file made by an earlier version up to
/// `schema.sql`'s, in one write transaction (another process may be
/// opening the file too).
fn upgrade(connection: &mut Connection) -> rusqlite::Result<()> {
    let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let has_commit: bool = tx.query_row(
        "SELECT count(*) > 0 FROM pragma_table_info('eventcore_checkpoints') \
         WHERE name = 'commit_id'",
        [],
        |row| row.get(0),
    )?;
    if !has_commit {
        tx.execute_batch(
            "ALTER TABLE eventcore_checkpoints ADD COLUMN commit_id INTEGER NOT NULL DEFAULT 0",
        )?;
    }
    tx.commit()
}

/// Serves jobs until every sender is gone.
pub(crate) fn run(
    mut connection: Connection,
    jobs: mpsc::Receiver<Job>,
    config: &SqliteConfig,
    appended: &Notify,
) {
    while let Ok(first) = jobs.recv() {
        let mut appends = Vec::new();
        let mut next = Some(first);
        while let Some(job) = next.take() {
            match job {
                Job::Append { writes, reply } => appends.push((writes, reply)),
                Job::Prune { older_than, reply } => {
                    let _ = reply.send(prune(&connection, older_than));
                }
                Job::Lease { name, reply } => {
                    let _ = reply.send(crate::checkpoints::raise_token(&mut connection, &name));
                }
                Job::Checkpoint {
                    name,
                    position,
                    token,
                    reply,
                } => {
                    let _ = reply.send(crate::checkpoints::save(
                        &mut connection,
                        &name,
                        position,
                        token,
                    ));
                }
                Job::Run(Write(write)) => write(&mut connection),
            }
            if appends.len() < config.max_batch {
                next = jobs.try_recv().ok();
            }
        }
        if !appends.is_empty() {
            commit_group(&mut connection, appends, appended);
        }
    }
}

/// Appends every write of `group` in one transaction, each in a savepoint
/// of its own, and answers each once the transaction committed (or failed
/// as a whole). Snapshots the writes carried are saved afterwards, in a
/// transaction of their own: an append never waits on one.
fn commit_group(
    connection: &mut Connection,
    group: Vec<(
        StreamWrites,
        oneshot::Sender<Result<AppendOutcome, StoreError>>,
    )>,
    appended: &Notify,
) {
    let (mut writes, replies): (Vec<StreamWrites>, Vec<_>) = group.into_iter().unzip();
    let mut outcomes = Vec::with_capacity(writes.len());
    let mut snapshots = Vec::new();
    let committed = (|| -> rusqlite::Result<()> {
        let mut tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for writes in &mut writes {
            let snapshot = writes.take_snapshot();
            let point = tx.savepoint()?;
            let outcome = append_one(&point, writes);
            if matches!(&outcome, Ok(done) if !done.already_applied) {
                point.commit()?;
                snapshots.extend(snapshot);
            } else {
                // Dropped, the savepoint rolls back what this append wrote.
                drop(point);
            }
            outcomes.push(outcome);
        }
        tx.commit()
    })();
    let Ok(()) = committed.as_ref() else {
        // Nothing of the group is stored; every append is told why, those
        // the transaction did not reach too.
        let error = committed.err();
        for reply in replies {
            let _ = reply.send(Err(error
                .as_ref()
                .map_or_else(|| crate::error::writer_gone("append"), group_failed)));
        }
        return;
    };
    let wrote = outcomes.iter().any(|a| {
        a.as_ref()
            .is_ok_and(|o| o.events_written > 0 && !o.already_applied)
    });
    for (reply, outcome) in replies.into_iter().zip(outcomes) {
        let _ = reply.send(outcome);
    }
    if wrote {
        appended.notify_waiters();
    }
    for snapshot in snapshots {
        // A snapshot may be dropped: a failure to save one is no error.
        let _ = save_snapshot(connection, &snapshot);
    }
}

/// The error each append of a group whose transaction failed is told:
/// transient if SQLite was busy or locked, else a backend failure; nothing
/// of the group is stored.
fn group_failed(error: &rusqlite::Error) -> StoreError {
    let source = Box::new(crate::SqliteError::CommitFailed {
        message: error.to_string(),
    });
    let busy = matches!(
        error.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    );
    if busy {
        StoreError::Transient {
            operation: "append",
            source,
        }
    } else {
        StoreError::Backend {
            operation: "append",
            source,
        }
    }
}

/// One append inside the group's transaction: the command's record if it
/// was applied before, else every version checked, the events written, the
/// streams' versions moved and the command recorded.
fn append_one(tx: &Connection, writes: &StreamWrites) -> Result<AppendOutcome, StoreError> {
    let stream_versions = writes.resulting_versions()?;
    let versions = writes.event_versions()?;
    let failed = |e| sqlite("append", e);
    if let Some((id, _)) = writes.command()
        && let Some(record) = read::command(tx, id.as_str()).map_err(failed)?
    {
        return record.repeat(writes);
    }
    for (stream, expected) in writes.expected_versions() {
        let actual = read::stream_version(tx, stream).map_err(failed)?;
        if actual != *expected {
            return Err(StoreError::VersionConflict {
                stream_id: stream.clone(),
                expected: *expected,
                actual,
            });
        }
    }
    let recorded_at = now_micros();
    let mut position: i64 = tx
        .query_row(
            "SELECT coalesce(max(position), 0) FROM eventcore_events",
            [],
            |row| row.get(0),
        )
        .map_err(failed)?;
    let mut insert = tx
        .prepare_cached(
            "INSERT INTO eventcore_events (position, stream_id, version, event_id, event_type, \
             schema_version, payload, correlation_id, causation_id, metadata, recorded_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )
        .map_err(failed)?;
    for (pending, version) in writes.events().iter().zip(versions) {
        position += 1;
        let metadata = pending.metadata();
        insert
            .execute(params![
                position,
                pending.stream_id().as_str(),
                sql_version(version),
                pending.event_id().hyphenated().to_string(),
                pending.event_type(),
                i64::from(pending.schema_version()),
                pending.payload(),
                metadata.correlation_id().map(|c| c.as_str()),
                metadata.causation_id().map(|c| c.as_str()),
                metadata.values_json(),
                recorded_at,
            ])
            .map_err(failed)?;
    }
    let mut moved = tx
        .prepare_cached(
            "INSERT INTO eventcore_streams (stream_id, version) VALUES (?1, ?2) \
             ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version",
        )
        .map_err(failed)?;
    for ((stream, after), (_, before)) in stream_versions.iter().zip(writes.expected_versions()) {
        if after != before {
            moved
                .execute(params![stream.as_str(), sql_version(*after)])
                .map_err(failed)?;
        }
    }
    let last = (!writes.events().is_empty())
        .then(|| Position::new(0, u64::try_from(position).unwrap_or(0)));
    let outcome = AppendOutcome::new(stream_versions, writes.events().len()).with_position(last);
    if !writes.is_empty()
        && let Some(record) =
            CommandRecord::of_append(writes, &outcome, crate::rows::time(recorded_at))
    {
        let streams: Vec<(&str, u64)> = record
            .outcome
            .stream_versions
            .iter()
            .map(|(s, v)| (s.as_str(), v.get()))
            .collect();
        let streams = serde_json::to_string(&streams).map_err(|e| StoreError::Backend {
            operation: "append",
            source: Box::new(e),
        })?;
        tx.execute(
            "INSERT INTO eventcore_commands (command_id, command_type, streams, events_written, \
             recorded_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                record.command_id.as_str(),
                record.command_type.as_ref(),
                streams,
                i64::try_from(record.outcome.events_written).unwrap_or(i64::MAX),
                recorded_at,
            ],
        )
        .map_err(failed)?;
    }
    Ok(outcome)
}

/// Keeps `snapshot` with the ids of the events at its versions.
fn save_snapshot(connection: &mut Connection, snapshot: &Snapshot) -> rusqlite::Result<()> {
    let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let ids = event_ids_at(&tx, snapshot)?;
    let versions: Vec<u64> = snapshot.versions().iter().map(|v| v.get()).collect();
    let encode = |e: serde_json::Error| rusqlite::Error::ToSqlConversionFailure(Box::new(e));
    tx.execute(
        "INSERT INTO eventcore_snapshots (name, streams, schema_version, versions, event_ids, state) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
         ON CONFLICT (name, streams) DO UPDATE SET schema_version = excluded.schema_version, \
         versions = excluded.versions, event_ids = excluded.event_ids, state = excluded.state",
        params![
            snapshot.key().name(),
            snapshot.key().streams_text(),
            i64::from(snapshot.schema_version()),
            serde_json::to_string(&versions).map_err(encode)?,
            serde_json::to_string(&ids).map_err(encode)?,
            snapshot.state(),
        ],
    )?;
    tx.commit()
}

/// Deletes the command records older than `older_than`.
fn prune(connection: &Connection, older_than: Duration) -> Result<u64, StoreError> {
    let cutoff = now_micros() - i64::try_from(older_than.as_micros()).unwrap_or(i64::MAX);
    connection
        .execute(
            "DELETE FROM eventcore_commands WHERE recorded_at < ?1",
            [cutoff],
        )
        .map(|n| n as u64)
        .map_err(|e| sqlite("prune_commands", e))
}
