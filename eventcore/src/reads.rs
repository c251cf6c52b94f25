//! What one read of a set of streams returns.

use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::{StoreError, StreamId, StreamVersion};

/// One event as stored: its place in its stream and in the global log, its
/// type name and its JSON payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    stream_id: StreamId,
    version: StreamVersion,
    global_sequence: u64,
    // Shared, so that a store keeping events in memory hands out copies cheaply.
    event_type: Arc<str>,
    payload: Arc<str>,
}

impl RecordedEvent {
    /// Assembles a recorded event; for store implementations.
    pub fn new(
        stream_id: StreamId,
        version: StreamVersion,
        global_sequence: u64,
        event_type: impl Into<Arc<str>>,
        payload: impl Into<Arc<str>>,
    ) -> Self {
        Self {
            stream_id,
            version,
            global_sequence,
            event_type: event_type.into(),
            payload: payload.into(),
        }
    }

    /// The stream the event belongs to.
    pub fn stream_id(&self) -> &StreamId {
        &self.stream_id
    }

    /// The event's version: `n` for the stream's `n`th event (the first is 1).
    pub fn version(&self) -> StreamVersion {
        self.version
    }

    /// The event's place in the store's global log: strictly increasing,
    /// and increasing along every stream. Not necessarily gap-free.
    pub fn global_sequence(&self) -> u64 {
        self.global_sequence
    }

    /// The type name given by [`Event::event_type`](crate::Event::event_type).
    pub fn event_type(&self) -> &str {
        &self.event_type
    }

    /// The payload as JSON text.
    pub fn payload(&self) -> &str {
        &self.payload
    }

    /// Deserialises the payload.
    ///
    /// # Errors
    /// [`StoreError::Deserialize`] naming the stream, version and type.
    pub fn decode<E: DeserializeOwned>(&self) -> Result<E, StoreError> {
        serde_json::from_str(&self.payload).map_err(|source| StoreError::Deserialize {
            stream_id: self.stream_id.clone(),
            version: self.version,
            event_type: self.event_type.to_string(),
            source,
        })
    }
}

/// The result of reading a set of streams in one call: every requested
/// stream's current version (0 for a stream with no events) and all their
/// events, ordered by global sequence (so each stream's events are in
/// version order).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamReads {
    /// Sorted by stream id, one entry per requested stream.
    versions: Vec<(StreamId, StreamVersion)>,
    events: Vec<RecordedEvent>,
}

impl StreamReads {
    /// Assembles a read; for store implementations. `versions` must name
    /// every requested stream once; `events` must be in global order.
    pub fn new(mut versions: Vec<(StreamId, StreamVersion)>, events: Vec<RecordedEvent>) -> Self {
        versions.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Self { versions, events }
    }

    /// The current version of a requested stream, `None` if it was not requested.
    pub fn version(&self, stream_id: &StreamId) -> Option<StreamVersion> {
        self.versions
            .binary_search_by(|(id, _)| id.cmp(stream_id))
            .ok()
            .map(|i| self.versions[i].1)
    }

    /// Every requested stream with its current version, sorted by stream id.
    pub fn versions(&self) -> &[(StreamId, StreamVersion)] {
        &self.versions
    }

    /// The events of all requested streams, in global order.
    pub fn events(&self) -> &[RecordedEvent] {
        &self.events
    }

    /// The events of one stream, in version order.
    pub fn events_of<'a>(
        &'a self,
        stream_id: &'a StreamId,
    ) -> impl Iterator<Item = &'a RecordedEvent> + 'a {
        self.events
            .iter()
            .filter(move |e| e.stream_id() == stream_id)
    }

    /// Splits the read into versions and events.
    pub fn into_parts(self) -> (Vec<(StreamId, StreamVersion)>, Vec<RecordedEvent>) {
        (self.versions, self.events)
    }
}
