//! Rows as eventcore's values, and back.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use eventcore::{
    CausationId, CorrelationId, Metadata, RecordedEvent, StreamId, StreamVersion, Uuid,
};
use rusqlite::Row;

use crate::error::corrupt;

/// The columns [`event`] reads, in order.
pub(crate) const EVENT_COLUMNS: &str = "position, stream_id, version, event_id, event_type, \
     schema_version, payload, correlation_id, causation_id, metadata, recorded_at";

/// Microseconds since the Unix epoch, now.
pub(crate) fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// A time kept as microseconds since the Unix epoch.
pub(crate) fn time(micros: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(u64::try_from(micros).unwrap_or_default())
}

/// A version as SQLite keeps it.
pub(crate) fn sql_version(version: StreamVersion) -> i64 {
    i64::try_from(version.get()).unwrap_or(i64::MAX)
}

/// A version read back.
pub(crate) fn version(index: usize, value: i64) -> rusqlite::Result<StreamVersion> {
    u64::try_from(value)
        .map(StreamVersion::new)
        .map_err(|e| corrupt(index, "version", e))
}

/// A stream id read back.
pub(crate) fn stream_id(index: usize, value: String) -> rusqlite::Result<StreamId> {
    StreamId::try_new(value).map_err(|e| corrupt(index, "stream_id", e))
}

/// An event from a row of [`EVENT_COLUMNS`].
pub(crate) fn event(row: &Row<'_>) -> rusqlite::Result<RecordedEvent> {
    let position: i64 = row.get(0)?;
    let event_id: String = row.get(3)?;
    let event_id = Uuid::parse_str(&event_id).map_err(|e| corrupt(3, "event_id", e))?;
    let schema_version: i64 = row.get(5)?;
    let mut metadata = Metadata::new();
    if let Some(id) = row.get::<_, Option<String>>(7)? {
        let id = CorrelationId::try_new(id).map_err(|e| corrupt(7, "correlation_id", e))?;
        metadata = metadata.with_correlation_id(id);
    }
    if let Some(id) = row.get::<_, Option<String>>(8)? {
        let id = CausationId::try_new(id).map_err(|e| corrupt(8, "causation_id", e))?;
        metadata = metadata.with_causation_id(id);
    }
    let values: String = row.get(9)?;
    if values != "{}" {
        let values = serde_json::from_str(&values).map_err(|e| corrupt(9, "metadata", e))?;
        metadata = metadata.with_values(values);
    }
    Ok(RecordedEvent::new(
        stream_id(1, row.get(1)?)?,
        version(2, row.get(2)?)?,
        u64::try_from(position).map_err(|e| corrupt(0, "position", e))?,
        row.get::<_, String>(4)?,
        row.get::<_, String>(6)?,
    )
    .with_schema_version(
        u32::try_from(schema_version).map_err(|e| corrupt(5, "schema_version", e))?,
    )
    .with_event_id(event_id)
    .with_recorded_at(time(row.get(10)?))
    .with_metadata(metadata))
}
