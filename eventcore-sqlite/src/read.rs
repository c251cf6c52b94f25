//! Reads: each one transaction of a read connection, one consistent view.

use std::path::Path;

use eventcore::{
    AppendOutcome, CommandId, CommandRecord, LogPage, LogQuery, Position, ReadAnswer, ReadRequest,
    RecordedEvent, Snapshot, StoreError, StreamId, StreamReads, StreamVersion,
};
use rusqlite::{Connection, OptionalExtension, params};

use crate::{
    SqliteConfig,
    error::{corrupt, sqlite},
    rows::{EVENT_COLUMNS, event, sql_version, stream_id, time, version},
};

/// Opens a read connection.
pub(crate) fn open(path: &Path, config: &SqliteConfig) -> Result<Connection, StoreError> {
    let connection = Connection::open(path).map_err(|e| sqlite("open", e))?;
    connection
        .busy_timeout(config.busy_timeout)
        .and_then(|()| connection.pragma_update(None, "query_only", "ON"))
        .map_err(|e| sqlite("open", e))?;
    Ok(connection)
}

/// The record of command `id`, if one is kept.
pub(crate) fn command(c: &Connection, id: &str) -> rusqlite::Result<Option<CommandRecord>> {
    let row = c
        .prepare_cached(
            "SELECT command_type, streams, events_written, recorded_at FROM eventcore_commands \
             WHERE command_id = ?1",
        )?
        .query_row([id], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, i64>(2)?,
                row.get::<_, i64>(3)?,
            ))
        })
        .optional()?;
    let Some((command_type, streams, events_written, recorded_at)) = row else {
        return Ok(None);
    };
    let streams: Vec<(String, u64)> =
        serde_json::from_str(&streams).map_err(|e| corrupt(1, "streams", e))?;
    let mut versions = Vec::with_capacity(streams.len());
    for (s, v) in streams {
        versions.push((stream_id(1, s)?, StreamVersion::new(v)));
    }
    let command_id = CommandId::try_new(id.to_owned()).map_err(|e| corrupt(0, "command_id", e))?;
    let written = usize::try_from(events_written).map_err(|e| corrupt(2, "events_written", e))?;
    let position = record_position(c, &versions)?;
    Ok(Some(CommandRecord::new(
        command_id,
        command_type,
        AppendOutcome::new(versions, written).with_position(position),
        time(recorded_at),
    )))
}

/// Where a command's record points in the log: the last of the events at
/// its streams' resulting versions, at or after its own last event (a
/// stream it only read may hold a later one).
fn record_position(
    c: &Connection,
    versions: &[(StreamId, StreamVersion)],
) -> rusqlite::Result<Option<Position>> {
    let mut at = c.prepare_cached(
        "SELECT position FROM eventcore_events WHERE stream_id = ?1 AND version = ?2",
    )?;
    let mut last: Option<i64> = None;
    for (stream, version) in versions.iter().filter(|(_, v)| v.get() > 0) {
        let found: Option<i64> = at
            .query_row(params![stream.as_str(), sql_version(*version)], |row| {
                row.get(0)
            })
            .optional()?;
        last = last.max(found);
    }
    Ok(last.map(|p| Position::new(0, u64::try_from(p).unwrap_or(0))))
}

/// A stream's current version (0 if it has no events).
pub(crate) fn stream_version(c: &Connection, stream: &StreamId) -> rusqlite::Result<StreamVersion> {
    let found: Option<i64> = c
        .prepare_cached("SELECT version FROM eventcore_streams WHERE stream_id = ?1")?
        .query_row([stream.as_str()], |row| row.get(0))
        .optional()?;
    found.map_or(Ok(StreamVersion::INITIAL), |v| version(0, v))
}

/// The id of the event at each of `snapshot`'s versions (none at version
/// 0, or past the stream's end).
pub(crate) fn event_ids_at(
    c: &Connection,
    snapshot: &Snapshot,
) -> rusqlite::Result<Vec<Option<String>>> {
    let mut find = c.prepare_cached(
        "SELECT event_id FROM eventcore_events WHERE stream_id = ?1 AND version = ?2",
    )?;
    let mut ids = Vec::with_capacity(snapshot.versions().len());
    for (stream, at) in snapshot.key().streams().iter().zip(snapshot.versions()) {
        ids.push(
            find.query_row(params![stream.as_str(), sql_version(*at)], |row| row.get(0))
                .optional()?,
        );
    }
    Ok(ids)
}

/// The snapshot kept under the request's key, and the event ids it was
/// kept with.
fn snapshot(
    c: &Connection,
    request: &ReadRequest,
) -> rusqlite::Result<Option<(Snapshot, Vec<Option<String>>)>> {
    let Some(key) = request.snapshot() else {
        return Ok(None);
    };
    let row = c
        .prepare_cached(
            "SELECT schema_version, versions, event_ids, state FROM eventcore_snapshots \
             WHERE name = ?1 AND streams = ?2",
        )?
        .query_row(params![key.name(), key.streams_text()], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, String>(3)?,
            ))
        })
        .optional()?;
    let Some((schema_version, versions, ids, state)) = row else {
        return Ok(None);
    };
    let versions: Vec<u64> =
        serde_json::from_str(&versions).map_err(|e| corrupt(1, "versions", e))?;
    let ids: Vec<Option<String>> =
        serde_json::from_str(&ids).map_err(|e| corrupt(2, "event_ids", e))?;
    let schema_version =
        u32::try_from(schema_version).map_err(|e| corrupt(0, "schema_version", e))?;
    let snapshot = Snapshot::new(
        key.clone(),
        schema_version,
        versions.into_iter().map(StreamVersion::new).collect(),
        state,
    );
    Ok(Some((snapshot, ids)))
}

/// Answers `request` in one read transaction.
pub(crate) fn read(c: &mut Connection, request: &ReadRequest) -> Result<ReadAnswer, StoreError> {
    let failed = |e| sqlite("read", e);
    let tx = c.transaction().map_err(failed)?;
    if let Some(id) = request.command_id()
        && let Some(record) = command(&tx, id.as_str()).map_err(failed)?
    {
        return Ok(ReadAnswer::recorded(record));
    }
    let kept = snapshot(&tx, request).map_err(failed)?;
    // Started after only while the events at its versions are those it
    // was kept with.
    let mut usable = None;
    if let Some((snapshot, ids)) = &kept
        && event_ids_at(&tx, snapshot).map_err(failed)? == *ids
    {
        usable = snapshot.stream_versions();
    }
    let after = usable.unwrap_or_else(|| request.held().to_vec());
    let mut versions = Vec::with_capacity(after.len());
    let mut events: Vec<RecordedEvent> = Vec::new();
    {
        let mut tail = tx
            .prepare_cached(&format!(
                "SELECT {EVENT_COLUMNS} FROM eventcore_events \
                 WHERE stream_id = ?1 AND version > ?2 ORDER BY version"
            ))
            .map_err(failed)?;
        for (stream, held) in &after {
            if versions.iter().any(|(s, _)| s == stream) {
                continue;
            }
            versions.push((stream.clone(), stream_version(&tx, stream).map_err(failed)?));
            let rows = tail
                .query_map(params![stream.as_str(), sql_version(*held)], event)
                .map_err(failed)?;
            for row in rows {
                events.push(row.map_err(failed)?);
            }
        }
    }
    tx.commit().map_err(failed)?;
    events.sort_unstable_by_key(RecordedEvent::global_sequence);
    Ok(ReadAnswer::new(after, StreamReads::new(versions, events))
        .with_snapshot(kept.map(|(s, _)| s)))
}

/// Rows looked at per query while filling a page of the log.
const CHUNK: i64 = 512;

/// A page of the global log, in one read transaction.
pub(crate) fn read_all(c: &mut Connection, query: &LogQuery) -> Result<LogPage, StoreError> {
    let failed = |e| sqlite("read_all", e);
    let tx = c.transaction().map_err(failed)?;
    let start = query.start().map_or(0, Position::sequence);
    let mut from = i64::try_from(start).unwrap_or(i64::MAX);
    let mut found: Vec<(Position, RecordedEvent)> = Vec::new();
    let mut scanned_to = start;
    {
        let mut page = tx
            .prepare_cached(&format!(
                "SELECT {EVENT_COLUMNS} FROM eventcore_events WHERE position > ?1 \
                 ORDER BY position LIMIT ?2"
            ))
            .map_err(failed)?;
        'pages: loop {
            let rows: Vec<RecordedEvent> = page
                .query_map(params![from, CHUNK], event)
                .map_err(failed)?
                .collect::<Result<_, _>>()
                .map_err(failed)?;
            let short = (rows.len() as i64) < CHUNK;
            for e in rows {
                scanned_to = e.global_sequence();
                from = i64::try_from(scanned_to).unwrap_or(i64::MAX);
                if query.matches(&e) {
                    found.push((Position::new(0, e.global_sequence()), e));
                    if found.len() >= query.limit() {
                        break 'pages;
                    }
                }
            }
            if short {
                break;
            }
        }
    }
    tx.commit().map_err(failed)?;
    // A page that is not full looked at the whole log.
    let next = (scanned_to > 0).then(|| Position::new(0, scanned_to));
    Ok(LogPage::new(found, next.max(query.start())))
}
