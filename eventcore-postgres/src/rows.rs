//! Rows of the store's functions and statements, decoded into eventcore's
//! values: one place for every decoding rule (columns, bigint to u64,
//! microseconds to times), shared by the reads, the append and snapshots.

use std::time::{Duration, UNIX_EPOCH};

use eventcore::{
    AppendOutcome, CausationId, CommandId, CommandLookup, CommandRecord, CorrelationId, Metadata,
    RecordedEvent, StoreError, StreamId, StreamReads, StreamVersion,
};
use sqlx::Row;

/// The rows of `read_streams.sql`: every event of the streams.
pub(crate) fn decode_streams(
    streams: &[StreamId],
    rows: &[sqlx::postgres::PgRow],
) -> Result<StreamReads, sqlx::Error> {
    let mut versions: Vec<(StreamId, StreamVersion)> = streams
        .iter()
        .map(|s| (s.clone(), StreamVersion::INITIAL))
        .collect();
    versions.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    versions.dedup_by(|a, b| a.0 == b.0);
    let mut events = Vec::with_capacity(rows.len());
    for row in rows {
        events.push(decode_event_row(row, &mut versions)?);
    }
    Ok(StreamReads::new(versions, events))
}

/// The rows of `read_tails.sql`: a row with each stream's current version
/// (no position), then the events.
pub(crate) fn decode_tails(
    held: Vec<(StreamId, StreamVersion)>,
    rows: &[sqlx::postgres::PgRow],
) -> Result<StreamReads, sqlx::Error> {
    let mut versions: Vec<(StreamId, StreamVersion)> = held
        .into_iter()
        .map(|(id, _)| (id, StreamVersion::INITIAL))
        .collect();
    let mut events = Vec::with_capacity(rows.len().saturating_sub(versions.len()));
    for row in rows {
        if row.try_get::<Option<i64>, _>(2)?.is_some() {
            events.push(decode_event_row(row, &mut versions)?);
        } else {
            let id: &str = row.try_get(0)?;
            let version: i64 = row.try_get(1)?;
            if let Ok(i) = versions.binary_search_by(|(s, _)| s.as_str().cmp(id)) {
                versions[i].1 = StreamVersion::new(from_bigint(version));
            }
        }
    }
    Ok(StreamReads::new(versions, events))
}

/// The command record among `rows`, if one row has it: columns from
/// `first` on hold its type, streams, versions, event count and (except
/// in the append's reply) recorded_at in microseconds.
/// The command's record if `rows` hold one (its columns from `first` on),
/// else what `decode` makes of them: the one answer of a read for a
/// command with an id.
pub(crate) fn lookup<T>(
    command_id: &CommandId,
    rows: &[sqlx::postgres::PgRow],
    first: usize,
    decode: impl FnOnce() -> Result<T, sqlx::Error>,
) -> Result<CommandLookup<T>, sqlx::Error> {
    match find_record(command_id, rows, first)? {
        Some(record) => Ok(CommandLookup::Recorded(record)),
        None => decode().map(CommandLookup::NotRecorded),
    }
}

pub(crate) fn find_record(
    command_id: &CommandId,
    rows: &[sqlx::postgres::PgRow],
    first: usize,
) -> Result<Option<CommandRecord>, sqlx::Error> {
    for row in rows {
        if let Some(record) = record_from_row(command_id, row, first)? {
            return Ok(Some(record));
        }
    }
    Ok(None)
}

pub(crate) fn record_from_row(
    command_id: &CommandId,
    row: &sqlx::postgres::PgRow,
    first: usize,
) -> Result<Option<CommandRecord>, sqlx::Error> {
    let Some(command_type) = row.try_get::<Option<String>, _>(first)? else {
        return Ok(None);
    };
    let streams: Vec<String> = row.try_get(first + 1)?;
    let versions: Vec<i64> = row.try_get(first + 2)?;
    let events: i32 = row.try_get(first + 3)?;
    // The append's reply has no time (its record only answers `repeat`
    // and is never returned); a read's must: NULL or unreadable is an error.
    let recorded_at = if row.len() > first + 4 {
        from_micros(row.try_get::<i64, _>(first + 4)?)
    } else {
        UNIX_EPOCH
    };
    let bad = |what: &str| sqlx::Error::ColumnDecode {
        index: what.into(),
        source: "a command record whose streams and versions do not match".into(),
    };
    if streams.len() != versions.len() {
        return Err(bad("versions"));
    }
    let stream_versions = streams
        .into_iter()
        .zip(versions)
        .map(|(id, v)| {
            StreamId::try_new(id)
                .map(|id| (id, StreamVersion::new(from_bigint(v))))
                .map_err(|e| sqlx::Error::ColumnDecode {
                    index: "streams".into(),
                    source: Box::new(e),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(CommandRecord::new(
        command_id.clone(),
        command_type,
        AppendOutcome::new(stream_versions, usize::try_from(events).unwrap_or(0)),
        recorded_at,
    )))
}

pub(crate) fn from_micros(micros: i64) -> std::time::SystemTime {
    if micros >= 0 {
        UNIX_EPOCH + Duration::from_micros(micros.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_micros(micros.unsigned_abs())
    }
}

/// Decodes one event row of `read_streams.sql`, `read_tails.sql` or
/// `read_from_snapshot.sql` (columns by position: stream, version, global
/// position, type, payload) and raises its stream's entry in `versions`
/// (sorted by id) to the row's version. The stream id is taken from
/// `versions`, which the query matched exactly, rather than validated again.
pub(crate) fn decode_event_row(
    row: &sqlx::postgres::PgRow,
    versions: &mut [(StreamId, StreamVersion)],
) -> Result<RecordedEvent, sqlx::Error> {
    let raw_id: &str = row.try_get(0)?;
    let version = StreamVersion::new(from_bigint(row.try_get(1)?));
    let stream_id = match versions.binary_search_by(|(id, _)| id.as_str().cmp(raw_id)) {
        Ok(i) => {
            versions[i].1 = versions[i].1.max(version);
            versions[i].0.clone()
        }
        Err(_) => StreamId::try_new(raw_id).map_err(|e| sqlx::Error::ColumnDecode {
            index: "stream_id".into(),
            source: Box::new(e),
        })?,
    };
    let event = RecordedEvent::new(
        stream_id,
        version,
        from_bigint(row.try_get(2)?),
        row.try_get::<&str, _>(3)?,
        row.try_get::<&str, _>(4)?,
    );
    with_metadata(event, row)
}

/// Reads the metadata columns (5 to 10: event id, recorded_at in
/// microseconds, correlation id, causation id, key/values as JSON text,
/// schema version) of an event row into `event`.
pub(crate) fn with_metadata(
    event: RecordedEvent,
    row: &sqlx::postgres::PgRow,
) -> Result<RecordedEvent, sqlx::Error> {
    let decode =
        |index: &str, e: Box<dyn std::error::Error + Send + Sync>| sqlx::Error::ColumnDecode {
            index: index.into(),
            source: e,
        };
    let recorded_at = from_micros(row.try_get(6)?);
    let mut metadata = Metadata::new();
    if let Some(id) = row.try_get::<Option<&str>, _>(7)? {
        metadata = metadata.with_correlation_id(
            CorrelationId::try_new(id).map_err(|e| decode("correlation_id", Box::new(e)))?,
        );
    }
    if let Some(id) = row.try_get::<Option<&str>, _>(8)? {
        metadata = metadata.with_causation_id(
            CausationId::try_new(id).map_err(|e| decode("causation_id", Box::new(e)))?,
        );
    }
    let values: &str = row.try_get(9)?;
    if values != "{}" {
        let values: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(values).map_err(|e| decode("metadata", Box::new(e)))?;
        metadata = metadata.with_values(values);
    }
    let schema_version = u32::try_from(row.try_get::<i64, _>(10)?)
        .map_err(|e| decode("schema_version", Box::new(e)))?;
    Ok(event
        .with_schema_version(schema_version)
        .with_event_id(row.try_get(5)?)
        .with_recorded_at(recorded_at)
        .with_metadata(metadata))
}

pub(crate) fn conflict_from_row(row: &sqlx::postgres::PgRow) -> Result<StoreError, sqlx::Error> {
    let stream_id: String = row.try_get("conflict_stream")?;
    Ok(StoreError::VersionConflict {
        stream_id: StreamId::try_new(stream_id).map_err(|e| sqlx::Error::ColumnDecode {
            index: "conflict_stream".into(),
            source: Box::new(e),
        })?,
        expected: StreamVersion::new(from_bigint(row.try_get("expected_version")?)),
        actual: StreamVersion::new(from_bigint(row.try_get("actual_version")?)),
    })
}

/// Versions and positions are positive in the table (a CHECK and an identity).
pub(crate) fn from_bigint(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}
