//! What one read of a set of streams returns.

use std::{sync::Arc, time::SystemTime};

use uuid::Uuid;

use crate::{Event, Metadata, StoreError, StreamId, StreamVersion};

/// One event as stored: its place in its stream and in the global log, its
/// type name and schema version, its JSON payload, its id, when it was
/// recorded and its [`Metadata`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    stream_id: StreamId,
    version: StreamVersion,
    global_sequence: u64,
    // Shared, so that a store keeping events in memory hands out copies cheaply.
    event_type: Arc<str>,
    schema_version: u32,
    payload: Arc<str>,
    event_id: Uuid,
    recorded_at: SystemTime,
    metadata: Arc<Metadata>,
}

impl RecordedEvent {
    /// Assembles a recorded event (at schema version 1); for store
    /// implementations, which then set its schema version, id, time and
    /// metadata with the `with_` methods (a store must return what was
    /// appended: the conformance suite checks it).
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
            schema_version: 1,
            payload: payload.into(),
            event_id: Uuid::nil(),
            recorded_at: SystemTime::UNIX_EPOCH,
            metadata: Arc::default(),
        }
    }

    /// Sets the schema version the event was appended at
    /// ([`PendingEvent::schema_version`](crate::PendingEvent::schema_version)).
    pub fn with_schema_version(mut self, schema_version: u32) -> Self {
        self.schema_version = schema_version;
        self
    }

    /// Sets the id the event was appended with
    /// ([`PendingEvent::event_id`](crate::PendingEvent::event_id)).
    pub fn with_event_id(mut self, event_id: Uuid) -> Self {
        self.event_id = event_id;
        self
    }

    /// Sets when the store recorded the event (microsecond precision).
    pub fn with_recorded_at(mut self, recorded_at: SystemTime) -> Self {
        self.recorded_at = recorded_at;
        self
    }

    /// Sets the metadata the event was appended with.
    pub fn with_metadata(mut self, metadata: impl Into<Arc<Metadata>>) -> Self {
        self.metadata = metadata.into();
        self
    }

    /// The event's id: a UUIDv7 made when it was added to a
    /// [`StreamWrites`](crate::StreamWrites), unique per stored event.
    pub fn event_id(&self) -> Uuid {
        self.event_id
    }

    /// When the store recorded the event, by the store's clock (on
    /// PostgreSQL the server's, at the start of the appending transaction;
    /// every event of one append has the same time), to the microsecond.
    pub fn recorded_at(&self) -> SystemTime {
        self.recorded_at
    }

    /// The correlation and causation ids and key/values the event was
    /// appended with.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
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

    /// The schema version of the event's type it was written at
    /// ([`Event::schema_version`](crate::Event::schema_version) of the
    /// code that wrote it; 1 for events written before schema versions
    /// were stored).
    pub fn schema_version(&self) -> u32 {
        self.schema_version
    }

    /// The payload as JSON text, exactly as it was written (never upcast).
    pub fn payload(&self) -> &str {
        &self.payload
    }

    /// Deserialises the event into `E`: an [`Event`] type (see
    /// [`Decode`]) or the payload as stored, as a `serde_json::Value`.
    ///
    /// # Errors
    /// As [`Decode::decode`].
    pub fn decode<E: Decode>(&self) -> Result<E, StoreError> {
        E::decode(self)
    }

    fn decode_event<E: Event>(&self) -> Result<E, StoreError> {
        let current = E::schema_version(&self.event_type);
        if self.schema_version == current {
            return serde_json::from_str(&self.payload).map_err(|e| self.undecodable(e));
        }
        let refused = |source: crate::BoxError| StoreError::Upcast {
            stream_id: self.stream_id.clone(),
            version: self.version,
            event_type: self.event_type.to_string(),
            schema_version: self.schema_version,
            current,
            source,
        };
        if self.schema_version > current {
            return Err(refused(
                "it was written by newer code than this reader's".into(),
            ));
        }
        let stored: serde_json::Value =
            serde_json::from_str(&self.payload).map_err(|e| self.undecodable(e))?;
        let upcast = E::upcast(&self.event_type, self.schema_version, stored).map_err(refused)?;
        serde_json::from_value(upcast).map_err(|e| self.undecodable(e))
    }

    fn undecodable(&self, source: serde_json::Error) -> StoreError {
        StoreError::Deserialize {
            stream_id: self.stream_id.clone(),
            version: self.version,
            event_type: self.event_type.to_string(),
            source,
        }
    }
}

/// What a stored event can be decoded into: any [`Event`] type, or
/// `serde_json::Value` for the payload exactly as stored (for readers of
/// every kind of event, such as an audit log or a forwarder, which do not
/// upcast).
///
/// For an [`Event`] type, an event stored at an older schema version than
/// the type writes it at is first brought up to date by [`Event::upcast`];
/// one at the current version costs nothing more than deserialising.
pub trait Decode: Sized + Send + Sync + 'static {
    /// Decodes `recorded`.
    ///
    /// # Errors
    /// - [`StoreError::Deserialize`] naming the stream, version and type if
    ///   the (upcast) payload does not deserialise;
    /// - [`StoreError::Upcast`] if the stored schema version is newer than
    ///   the type's, or older and the upcaster refused it.
    fn decode(recorded: &RecordedEvent) -> Result<Self, StoreError>;
}

impl<E: Event> Decode for E {
    fn decode(recorded: &RecordedEvent) -> Result<Self, StoreError> {
        recorded.decode_event()
    }
}

impl Decode for serde_json::Value {
    fn decode(recorded: &RecordedEvent) -> Result<Self, StoreError> {
        serde_json::from_str(&recorded.payload).map_err(|e| recorded.undecodable(e))
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
/// What a recorded event hands on to what is written because of it. Here,
/// with the event, so that metadata does not depend on reads.
impl Metadata {
    /// Metadata for what a handler writes because of `event`: the event's
    /// correlation id (its own id if it has none) and the event's id as
    /// causation id. Values are not carried over.
    pub fn caused_by(event: &RecordedEvent) -> Self {
        let correlation_id = event
            .metadata()
            .correlation_id()
            .cloned()
            .unwrap_or_else(|| crate::CorrelationId::from(event.event_id()));
        Metadata::new()
            .with_correlation_id(correlation_id)
            .with_causation_id(crate::CausationId::from(event.event_id()))
    }
}
