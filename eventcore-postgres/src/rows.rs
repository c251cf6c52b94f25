//! Rows of the store's functions and statements, decoded into eventcore's
//! values: one place for every decoding rule (columns, bigint to u64,
//! microseconds to times), shared by the reads, the append and snapshots.

use std::time::{Duration, UNIX_EPOCH};

use eventcore::{
    AppendOutcome, CausationId, CommandId, CommandRecord, CorrelationId, Metadata, Position,
    ReadAnswer, RecordedEvent, StoreError, StreamId, StreamReads, StreamSet, StreamVersion,
};
use sqlx::{Column, Row, postgres::PgRow};

/// Where an event's columns are in the rows of one answer, found by name
/// once per answer (every read names them alike: `out_stream`,
/// `out_version`, ...), so that a new column changes one definition and no
/// position.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EventColumns {
    stream: usize,
    version: usize,
    position: usize,
    event_type: usize,
    payload: usize,
    event_id: usize,
    recorded_at: usize,
    correlation: usize,
    causation: usize,
    metadata: usize,
    schema_version: usize,
}

/// The position of column `name` in `row`.
pub(crate) fn column(row: &PgRow, name: &str) -> Result<usize, sqlx::Error> {
    row.try_column(name).map(Column::ordinal)
}

impl EventColumns {
    /// The event columns of the answer `row` belongs to.
    pub(crate) fn of(row: &PgRow) -> Result<Self, sqlx::Error> {
        Ok(EventColumns {
            stream: column(row, "out_stream")?,
            version: column(row, "out_version")?,
            position: column(row, "out_position")?,
            event_type: column(row, "out_type")?,
            payload: column(row, "out_payload")?,
            event_id: column(row, "out_event_id")?,
            recorded_at: column(row, "out_recorded_at")?,
            correlation: column(row, "out_correlation")?,
            causation: column(row, "out_causation")?,
            metadata: column(row, "out_metadata")?,
            schema_version: column(row, "out_schema_version")?,
        })
    }

    /// The stream id of `row`.
    pub(crate) fn stream<'r>(&self, row: &'r PgRow) -> Result<Option<&'r str>, sqlx::Error> {
        row.try_get(self.stream)
    }

    /// The version column of `row` (a stream's version on version rows).
    pub(crate) fn version(&self, row: &PgRow) -> Result<Option<i64>, sqlx::Error> {
        row.try_get(self.version)
    }

    /// The global position of `row` (none on version rows).
    pub(crate) fn position(&self, row: &PgRow) -> Result<Option<i64>, sqlx::Error> {
        row.try_get(self.position)
    }
}

/// The event columns of an answer, if it has a row.
fn event_columns(rows: &[PgRow]) -> Result<Option<EventColumns>, sqlx::Error> {
    rows.first().map(EventColumns::of).transpose()
}

/// The rows of `read_streams.sql`: every event of the streams (each once,
/// sorted: a request's).
pub(crate) fn decode_streams(
    streams: &StreamSet,
    rows: &[sqlx::postgres::PgRow],
) -> Result<StreamReads, sqlx::Error> {
    let mut versions: Vec<(StreamId, StreamVersion)> = streams
        .iter()
        .map(|s| (s.clone(), StreamVersion::INITIAL))
        .collect();
    let mut events = Vec::with_capacity(rows.len());
    if let Some(columns) = event_columns(rows)? {
        for row in rows {
            events.push(decode_event_row(row, &columns, &mut versions)?);
        }
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
    let Some(columns) = event_columns(rows)? else {
        return Ok(StreamReads::new(versions, events));
    };
    for row in rows {
        if columns.position(row)?.is_some() {
            events.push(decode_event_row(row, &columns, &mut versions)?);
        } else if let (Some(id), Some(version)) = (columns.stream(row)?, columns.version(row)?)
            && let Ok(i) = versions.binary_search_by(|(s, _)| s.as_str().cmp(id))
        {
            versions[i].1 = StreamVersion::new(from_bigint(version));
        }
    }
    Ok(StreamReads::new(versions, events))
}

/// The command's record if `rows` hold one (columns `out_command_type`,
/// `_streams`, `_versions`, `_events` and, except in the append's reply,
/// `_recorded_at` in microseconds), else what `decode` makes of them: the
/// one answer of a read for a command with an id.
pub(crate) fn lookup(
    command_id: &CommandId,
    rows: &[sqlx::postgres::PgRow],
    decode: impl FnOnce() -> Result<ReadAnswer, sqlx::Error>,
) -> Result<ReadAnswer, sqlx::Error> {
    match find_record(command_id, rows)? {
        Some(record) => Ok(ReadAnswer::recorded(record)),
        None => decode(),
    }
}

pub(crate) fn find_record(
    command_id: &CommandId,
    rows: &[sqlx::postgres::PgRow],
) -> Result<Option<CommandRecord>, sqlx::Error> {
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let columns = RecordColumns::of(first)?;
    for row in rows {
        if let Some(record) = record_from_row(command_id, row, &columns)? {
            return Ok(Some(record));
        }
    }
    Ok(None)
}

/// Where a command record's columns are in an answer's rows, by name.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecordColumns {
    command_type: usize,
    streams: usize,
    versions: usize,
    events: usize,
    /// None in the append's reply.
    recorded_at: Option<usize>,
    /// The commit key and global position the record points at.
    commit: usize,
    position: usize,
}

impl RecordColumns {
    /// The record columns of the answer `row` belongs to.
    pub(crate) fn of(row: &PgRow) -> Result<Self, sqlx::Error> {
        Ok(RecordColumns {
            command_type: column(row, "out_command_type")?,
            streams: column(row, "out_command_streams")?,
            versions: column(row, "out_command_versions")?,
            events: column(row, "out_command_events")?,
            recorded_at: column(row, "out_command_recorded_at").ok(),
            commit: column(row, "out_command_commit")?,
            position: column(row, "out_command_position")?,
        })
    }
}

pub(crate) fn record_from_row(
    command_id: &CommandId,
    row: &sqlx::postgres::PgRow,
    columns: &RecordColumns,
) -> Result<Option<CommandRecord>, sqlx::Error> {
    let Some(command_type) = row.try_get::<Option<String>, _>(columns.command_type)? else {
        return Ok(None);
    };
    let streams: Vec<String> = row.try_get(columns.streams)?;
    let versions: Vec<i64> = row.try_get(columns.versions)?;
    let events: i32 = row.try_get(columns.events)?;
    // The append's reply has no time (its record only answers `repeat`
    // and is never returned); a read's must: NULL or unreadable is an error.
    let recorded_at = match columns.recorded_at {
        Some(at) => from_micros(row.try_get::<i64, _>(at)?),
        None => UNIX_EPOCH,
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
    let position = log_position(row, columns.commit, columns.position)?;
    Ok(Some(CommandRecord::new(
        command_id.clone(),
        command_type,
        AppendOutcome::new(stream_versions, usize::try_from(events).unwrap_or(0))
            .with_position(position),
        recorded_at,
    )))
}

/// A log position from a row's commit key (sent as text) and global
/// position columns; `None` when they are null.
pub(crate) fn log_position(
    row: &PgRow,
    commit: usize,
    position: usize,
) -> Result<Option<Position>, sqlx::Error> {
    let (Some(key), Some(sequence)) = (
        row.try_get::<Option<&str>, _>(commit)?,
        row.try_get::<Option<i64>, _>(position)?,
    ) else {
        return Ok(None);
    };
    let key = key.parse::<u64>().map_err(|e| sqlx::Error::ColumnDecode {
        index: "out_commit".into(),
        source: Box::new(e),
    })?;
    Ok(Some(Position::new(key, from_bigint(sequence))))
}

pub(crate) fn from_micros(micros: i64) -> std::time::SystemTime {
    if micros >= 0 {
        UNIX_EPOCH + Duration::from_micros(micros.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_micros(micros.unsigned_abs())
    }
}

/// Decodes one event row (its columns as `columns` found them) and raises
/// its stream's entry in `versions` (sorted by id) to the row's version.
/// The stream id is taken from `versions`, which the query matched
/// exactly, rather than validated again.
pub(crate) fn decode_event_row(
    row: &PgRow,
    columns: &EventColumns,
    versions: &mut [(StreamId, StreamVersion)],
) -> Result<RecordedEvent, sqlx::Error> {
    let raw_id: &str = row.try_get(columns.stream)?;
    let version = StreamVersion::new(from_bigint(row.try_get(columns.version)?));
    let stream_id = match versions.binary_search_by(|(id, _)| id.as_str().cmp(raw_id)) {
        Ok(i) => {
            versions[i].1 = versions[i].1.max(version);
            versions[i].0.clone()
        }
        Err(_) => StreamId::try_new(raw_id).map_err(|e| sqlx::Error::ColumnDecode {
            index: "out_stream".into(),
            source: Box::new(e),
        })?,
    };
    decode_event(row, columns, stream_id, version)
}

/// Decodes one event row whose stream and version are known.
pub(crate) fn decode_event(
    row: &PgRow,
    columns: &EventColumns,
    stream_id: StreamId,
    version: StreamVersion,
) -> Result<RecordedEvent, sqlx::Error> {
    let decode =
        |index: &str, e: Box<dyn std::error::Error + Send + Sync>| sqlx::Error::ColumnDecode {
            index: index.into(),
            source: e,
        };
    let event = RecordedEvent::new(
        stream_id,
        version,
        from_bigint(row.try_get(columns.position)?),
        row.try_get::<&str, _>(columns.event_type)?,
        row.try_get::<&str, _>(columns.payload)?,
    );
    let recorded_at = from_micros(row.try_get(columns.recorded_at)?);
    let mut metadata = Metadata::new();
    if let Some(id) = row.try_get::<Option<&str>, _>(columns.correlation)? {
        metadata = metadata.with_correlation_id(
            CorrelationId::try_new(id).map_err(|e| decode("out_correlation", Box::new(e)))?,
        );
    }
    if let Some(id) = row.try_get::<Option<&str>, _>(columns.causation)? {
        metadata = metadata.with_causation_id(
            CausationId::try_new(id).map_err(|e| decode("out_causation", Box::new(e)))?,
        );
    }
    let values: &str = row.try_get(columns.metadata)?;
    if values != "{}" {
        let values: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(values).map_err(|e| decode("out_metadata", Box::new(e)))?;
        metadata = metadata.with_values(values);
    }
    let schema_version = u32::try_from(row.try_get::<i64, _>(columns.schema_version)?)
        .map_err(|e| decode("out_schema_version", Box::new(e)))?;
    Ok(event
        .with_schema_version(schema_version)
        .with_event_id(row.try_get(columns.event_id)?)
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

/// The store's one policy between u64 and PostgreSQL's bigint:
/// - a value read back (a version, a position, a token, a count) cannot be
///   negative in its column (a CHECK, an identity, a counter from 1), so a
///   negative one reads as 0 ([`from_bigint`]);
/// - a bound or limit sent (read after a version, at most n rows) past
///   `i64::MAX` means "past everything" and is clamped to it
///   ([`clamp_to_bigint`]);
/// - a value to be stored that does not fit (a version, a checkpoint's
///   position) is refused with a typed error before anything is written
///   (`to_bigint` in the store, the checkpoint's save).
pub(crate) fn from_bigint(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// A bound or limit, sent as a bigint: see [`from_bigint`] for the policy.
pub(crate) fn clamp_to_bigint(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
