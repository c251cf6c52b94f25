//! What one append writes: expected versions and new events.

use std::{borrow::Cow, sync::Arc};

use uuid::Uuid;

use crate::{
    CommandId, Event, Metadata, Position, StoreError, StreamId, StreamVersion, metadata::holds_nul,
};

/// One event ready to be appended: its stream, type name and schema
/// version, JSON payload, id and metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingEvent {
    stream_id: StreamId,
    event_type: Cow<'static, str>,
    schema_version: u32,
    payload: String,
    event_id: Uuid,
    metadata: Arc<Metadata>,
}

impl PendingEvent {
    /// The event's id (a UUIDv7 made when it was added to the write); the
    /// store keeps it and returns it on
    /// [`RecordedEvent::event_id`](crate::RecordedEvent::event_id).
    pub fn event_id(&self) -> Uuid {
        self.event_id
    }

    /// The metadata to store with the event.
    pub fn metadata(&self) -> &Arc<Metadata> {
        &self.metadata
    }

    /// The stream the event is appended to.
    pub fn stream_id(&self) -> &StreamId {
        &self.stream_id
    }

    /// The event's type name.
    pub fn event_type(&self) -> &str {
        &self.event_type
    }

    /// The schema version its type is written at
    /// ([`Event::schema_version`]); the store keeps it and returns it on
    /// [`RecordedEvent::schema_version`](crate::RecordedEvent::schema_version).
    pub fn schema_version(&self) -> u32 {
        self.schema_version
    }

    /// The event serialised as JSON text.
    pub fn payload(&self) -> &str {
        &self.payload
    }
}

/// The streams one append checks, each with the version it expects, and the
/// events it appends.
///
/// Every stream a command read is registered, read-only participants
/// included: the store appends only if **every** registered stream is still
/// at its expected version, and rejects the whole write with
/// [`StoreError::VersionConflict`] otherwise. Adding an event for a stream
/// that was not registered fails at once with [`StoreError::UndeclaredStream`].
///
/// ```
/// use eventcore::{StoreError, StreamId, StreamVersion, StreamWrites};
/// # use eventcore::Event;
/// # #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
/// # struct Noted { stream: StreamId }
/// # impl Event for Noted {
/// #     fn stream_id(&self) -> &StreamId { &self.stream }
/// #     fn event_type(&self) -> &'static str { "Noted" }
/// # }
/// let a = StreamId::try_new("a").unwrap();
/// let b = StreamId::try_new("b").unwrap();
/// let mut writes = StreamWrites::new();
/// writes.expect(a.clone(), StreamVersion::new(3))?;
/// writes.append(&Noted { stream: a })?;
/// let err = writes.append(&Noted { stream: b }).unwrap_err();
/// assert!(matches!(err, StoreError::UndeclaredStream { .. }));
/// assert_eq!(writes.events().len(), 1);
/// # Ok::<(), StoreError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamWrites {
    /// Sorted by stream id, one entry per stream.
    expected: Vec<(StreamId, StreamVersion)>,
    events: Vec<PendingEvent>,
    /// What [`append`](Self::append) stores with each event.
    metadata: Arc<Metadata>,
    /// The command these writes apply, by id and type, if it has an id.
    command: Option<(CommandId, Cow<'static, str>)>,
    /// A snapshot to keep once the append succeeds.
    snapshot: Option<crate::Snapshot>,
}

impl StreamWrites {
    /// An empty write that registers no stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Carries `snapshot` for the store to keep once the append succeeds
    /// (not when it finds the command already applied): the state after
    /// these events, which `execute` attaches every so many events. A store
    /// may drop it; the append never waits on it.
    pub fn with_snapshot(mut self, snapshot: crate::Snapshot) -> Self {
        self.snapshot = Some(snapshot);
        self
    }

    /// The snapshot carried, if any.
    pub fn snapshot(&self) -> Option<&crate::Snapshot> {
        self.snapshot.as_ref()
    }

    /// Takes the snapshot carried out of the write, for a store to keep.
    pub fn take_snapshot(&mut self) -> Option<crate::Snapshot> {
        self.snapshot.take()
    }

    /// Registers `stream_id`, which must be at `version` when the write is
    /// appended. Registering a stream again with the same version is a no-op.
    ///
    /// # Errors
    /// [`StoreError::ConflictingExpectation`] if the stream is already
    /// registered with another version.
    pub fn expect(
        &mut self,
        stream_id: StreamId,
        version: StreamVersion,
    ) -> Result<(), StoreError> {
        match self.expected.binary_search_by(|(id, _)| id.cmp(&stream_id)) {
            Ok(i) if self.expected[i].1 == version => Ok(()),
            Ok(i) => Err(StoreError::ConflictingExpectation {
                stream_id,
                first: self.expected[i].1,
                second: version,
            }),
            Err(i) => {
                self.expected.insert(i, (stream_id, version));
                Ok(())
            }
        }
    }

    /// Sets the metadata that [`append`](Self::append) stores with the
    /// events added after this call (and that
    /// [`append_with_metadata`](Self::append_with_metadata) falls back on).
    ///
    /// # Errors
    /// [`StoreError::InvalidMetadata`] if a key or string value holds
    /// U+0000; the write is then unchanged.
    pub fn set_metadata(&mut self, metadata: Metadata) -> Result<(), StoreError> {
        check_metadata(&metadata)?;
        self.metadata = Arc::new(metadata);
        Ok(())
    }

    /// An empty write whose events get `metadata`, already checked.
    pub(crate) fn with_checked_metadata(metadata: Arc<Metadata>) -> Self {
        StreamWrites {
            metadata,
            ..StreamWrites::default()
        }
    }

    /// Makes the write the application of the command `command_id`, of
    /// type `command_type`: the store records the id with the events, in
    /// the same transaction, and appends nothing if the id is already
    /// recorded (see [`CommandRecord`](crate::CommandRecord)). `execute`
    /// sets it from [`ExecuteOptions::with_command_id`](crate::ExecuteOptions::with_command_id).
    ///
    /// A write with a command id must hold at least one event: a write
    /// that appends nothing records nothing.
    pub fn set_command(
        &mut self,
        command_id: CommandId,
        command_type: impl Into<Cow<'static, str>>,
    ) {
        self.command = Some((command_id, command_type.into()));
    }

    /// The command id and command type set by
    /// [`set_command`](Self::set_command).
    pub fn command(&self) -> Option<(&CommandId, &str)> {
        self.command.as_ref().map(|(id, ty)| (id, ty.as_ref()))
    }

    /// The metadata [`append`](Self::append) stores with each event.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// Serialises `event` and adds it to the write, after the events added
    /// before, with the write's [`metadata`](Self::metadata).
    ///
    /// # Errors
    /// - [`StoreError::InvalidEventType`] if the type name is empty, over 255
    ///   characters or holds a control character;
    /// - [`StoreError::UndeclaredStream`] if the event's stream is not registered;
    /// - [`StoreError::Serialize`] if serde fails;
    /// - [`StoreError::NulCharacter`] if the payload holds U+0000;
    /// - [`StoreError::WouldNotDecode`] if the serialised event does not
    ///   deserialise back into `E` (a non-finite float, say): a stream
    ///   holding it could never be read again.
    ///
    /// On error the write is unchanged.
    pub fn append<E: Event>(&mut self, event: &E) -> Result<(), StoreError> {
        let metadata = self.metadata.clone();
        self.push(event, metadata)
    }

    /// As [`append`](Self::append), with metadata of this event's own:
    /// what `metadata` leaves unset (an id, a key) is taken from the
    /// write's [`metadata`](Self::metadata).
    ///
    /// # Errors
    /// As [`append`](Self::append), and [`StoreError::InvalidMetadata`] if
    /// a key or string value holds U+0000.
    pub fn append_with_metadata<E: Event>(
        &mut self,
        event: &E,
        metadata: Metadata,
    ) -> Result<(), StoreError> {
        check_metadata(&metadata)?;
        let merged = Arc::new(metadata.or(&self.metadata));
        self.push(event, merged)
    }

    fn push<E: Event>(&mut self, event: &E, metadata: Arc<Metadata>) -> Result<(), StoreError> {
        let stream_id = event.stream_id();
        let event_type = event.event_type();
        if !is_storable_name(event_type) {
            return Err(StoreError::InvalidEventType {
                stream_id: stream_id.clone(),
                event_type: event_type.to_owned(),
            });
        }
        if self.expected_version(stream_id).is_none() {
            return Err(StoreError::UndeclaredStream {
                stream_id: stream_id.clone(),
                event_type: event_type.to_owned(),
            });
        }
        let payload = serde_json::to_string(event).map_err(|source| StoreError::Serialize {
            stream_id: stream_id.clone(),
            event_type: event_type.to_owned(),
            source,
        })?;
        if contains_escaped_nul(&payload) {
            return Err(StoreError::NulCharacter {
                stream_id: stream_id.clone(),
                event_type: event_type.to_owned(),
            });
        }
        // What is stored must come back: decode the text that will be kept.
        let de = &mut serde_json::Deserializer::from_str(&payload);
        if let Err(e) = serde_path_to_error::deserialize::<_, E>(de) {
            return Err(StoreError::WouldNotDecode {
                stream_id: stream_id.clone(),
                event_type: event_type.to_owned(),
                path: e.path().to_string(),
                source: e.into_inner(),
            });
        }
        self.events.push(PendingEvent {
            stream_id: stream_id.clone(),
            event_type: Cow::Borrowed(event_type),
            schema_version: E::schema_version(event_type),
            payload,
            event_id: Uuid::now_v7(),
            metadata,
        });
        Ok(())
    }

    /// The version `stream_id` is expected at, if it is registered.
    pub fn expected_version(&self, stream_id: &StreamId) -> Option<StreamVersion> {
        self.expected
            .binary_search_by(|(id, _)| id.cmp(stream_id))
            .ok()
            .map(|i| self.expected[i].1)
    }

    /// Every registered stream with its expected version, sorted by stream id.
    pub fn expected_versions(&self) -> &[(StreamId, StreamVersion)] {
        &self.expected
    }

    /// The events to append, in the order they were added.
    pub fn events(&self) -> &[PendingEvent] {
        &self.events
    }

    /// Whether the write appends no event (it may still check versions).
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Checks every payload against a store's size limit.
    ///
    /// # Errors
    /// [`StoreError::PayloadTooLarge`] naming the first event over `limit` bytes.
    pub fn check_payload_limit(&self, limit: usize) -> Result<(), StoreError> {
        match self.events.iter().find(|e| e.payload.len() > limit) {
            Some(e) => Err(StoreError::PayloadTooLarge {
                stream_id: e.stream_id.clone(),
                event_type: e.event_type.clone().into_owned(),
                size: e.payload.len(),
                limit,
            }),
            None => Ok(()),
        }
    }

    /// The versions every registered stream reaches if the write is
    /// appended, sorted by stream id.
    ///
    /// # Errors
    /// [`StoreError::VersionOverflow`] if a stream would pass `u64::MAX`.
    pub fn resulting_versions(&self) -> Result<Vec<(StreamId, StreamVersion)>, StoreError> {
        let mut at: Vec<StreamVersion> = self.expected.iter().map(|(_, v)| *v).collect();
        self.number(&mut at, |_| ())?;
        Ok(self
            .expected
            .iter()
            .zip(at)
            .map(|((id, _), v)| (id.clone(), v))
            .collect())
    }

    /// The version each event takes in its stream, in the order of
    /// [`events`](Self::events): its stream's expected version plus its
    /// place among that stream's events in this write. The one numbering
    /// of events every store uses.
    ///
    /// # Errors
    /// [`StoreError::VersionOverflow`] if a stream would pass `u64::MAX`.
    pub fn event_versions(&self) -> Result<Vec<StreamVersion>, StoreError> {
        let mut at: Vec<StreamVersion> = self.expected.iter().map(|(_, v)| *v).collect();
        let mut versions = Vec::with_capacity(self.events.len());
        self.number(&mut at, |v| versions.push(v))?;
        Ok(versions)
    }

    /// Walks the events in order, moving each one's stream in `at` (the
    /// registered streams' versions, in their order) one version on and
    /// handing `each` the version the event takes.
    fn number(
        &self,
        at: &mut [StreamVersion],
        mut each: impl FnMut(StreamVersion),
    ) -> Result<(), StoreError> {
        for event in &self.events {
            // Every event's stream was registered by `append`.
            let Ok(i) = self
                .expected
                .binary_search_by(|(id, _)| id.cmp(&event.stream_id))
            else {
                continue;
            };
            at[i] = at[i]
                .checked_add(1)
                .ok_or_else(|| StoreError::VersionOverflow {
                    stream_id: event.stream_id.clone(),
                    version: self.expected[i].1,
                })?;
            each(at[i]);
        }
        Ok(())
    }
}

pub(crate) fn check_metadata(metadata: &Metadata) -> Result<(), StoreError> {
    if holds_nul(metadata.values()) {
        return Err(StoreError::InvalidMetadata {
            reason: "a key or string value holds U+0000, which no store accepts",
        });
    }
    Ok(())
}

/// Whether a name (an event type, a fold's) can be stored by
/// every store: 1 to 255 characters, none of them a control character.
pub(crate) fn is_storable_name(name: &str) -> bool {
    crate::stream::check_text(name, 255).is_ok()
}

/// Whether JSON text holds the escape `\u0000` (serde_json escapes every
/// control character, so a NUL in any string or key shows up this way). An
/// escaped backslash followed by `u0000` is text, not a NUL.
fn contains_escaped_nul(json: &str) -> bool {
    let bytes = json.as_bytes();
    if !bytes.contains(&b'\\') {
        return false;
    }
    let needle = b"\\u0000";
    let mut from = 0;
    while let Some(offset) = json[from..].find("\\u0000") {
        let at = from + offset;
        let backslashes_before = bytes[..at]
            .iter()
            .rev()
            .take_while(|&&b| b == b'\\')
            .count();
        if backslashes_before % 2 == 0 {
            return true;
        }
        from = at + needle.len();
    }
    false
}

/// What a successful append did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AppendOutcome {
    /// Every registered stream with its version after the append, sorted by
    /// stream id (read-only participants keep their expected version).
    pub stream_versions: Vec<(StreamId, StreamVersion)>,
    /// How many events were appended.
    pub events_written: usize,
    /// Whether the write carried a command id that was already recorded for
    /// the same command: then nothing was written, and the versions and
    /// event count are those of the append that recorded it.
    pub already_applied: bool,
    /// Where the append's last event is in the global log ([`EventLog`](crate::EventLog)),
    /// for read-your-writes: a subscription that has passed it has seen
    /// every event of the append. For a repeat of an applied command, a
    /// position at or after the first append's last event. `None` when
    /// nothing was written, or the store has no global log.
    pub position: Option<Position>,
}

impl AppendOutcome {
    /// Assembles an outcome; for store implementations.
    pub fn new(stream_versions: Vec<(StreamId, StreamVersion)>, events_written: usize) -> Self {
        AppendOutcome {
            stream_versions,
            events_written,
            already_applied: false,
            position: None,
        }
    }

    /// The outcome with the position of its last event; for store
    /// implementations.
    pub fn with_position(mut self, position: Option<Position>) -> Self {
        self.position = position;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn nul_detection_matches_the_decoded_text(s in "[a\\\\u0\\x00]{0,12}") {
            let json = serde_json::to_string(&s).unwrap();
            prop_assert_eq!(contains_escaped_nul(&json), s.contains('\0'));
        }
    }

    #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
    struct Typed {
        stream: StreamId,
        #[serde(skip)]
        kind: &'static str,
    }

    impl Event for Typed {
        fn stream_id(&self) -> &StreamId {
            &self.stream
        }
        fn event_type(&self) -> &'static str {
            self.kind
        }
    }

    #[test]
    fn event_type_names_are_validated() {
        let stream = StreamId::try_new("s").unwrap();
        let mut writes = StreamWrites::new();
        writes
            .expect(stream.clone(), StreamVersion::INITIAL)
            .unwrap();
        let long: &'static str = Box::leak("x".repeat(256).into_boxed_str());
        for bad in ["", "a\0b", "tab\there", long] {
            let err = writes
                .append(&Typed {
                    stream: stream.clone(),
                    kind: bad,
                })
                .unwrap_err();
            assert!(
                matches!(err, StoreError::InvalidEventType { .. }),
                "{bad:?}: {err:?}"
            );
        }
        writes
            .append(&Typed {
                stream,
                kind: "Good-Type.v2 é",
            })
            .unwrap();
        assert_eq!(writes.events().len(), 1, "only the valid event was added");
    }

    #[test]
    fn events_are_numbered_from_their_streams_expected_versions() {
        let (a, b) = (
            StreamId::try_new("a").unwrap(),
            StreamId::try_new("b").unwrap(),
        );
        let mut writes = StreamWrites::new();
        writes.expect(a.clone(), StreamVersion::new(3)).unwrap();
        writes.expect(b.clone(), StreamVersion::INITIAL).unwrap();
        for stream in [&a, &b, &a, &b, &b] {
            writes
                .append(&Typed {
                    stream: stream.clone(),
                    kind: "E",
                })
                .unwrap();
        }
        let numbered: Vec<u64> = writes
            .event_versions()
            .unwrap()
            .iter()
            .map(|v| v.get())
            .collect();
        assert_eq!(numbered, [4, 1, 5, 2, 3]);
        assert_eq!(
            writes.resulting_versions().unwrap(),
            vec![(a, StreamVersion::new(5)), (b, StreamVersion::new(3))]
        );

        let full = StreamId::try_new("full").unwrap();
        let mut writes = StreamWrites::new();
        writes
            .expect(full.clone(), StreamVersion::new(u64::MAX))
            .unwrap();
        writes
            .append(&Typed {
                stream: full,
                kind: "E",
            })
            .unwrap();
        assert!(matches!(
            writes.event_versions(),
            Err(StoreError::VersionOverflow { .. })
        ));
        assert!(matches!(
            writes.resulting_versions(),
            Err(StoreError::VersionOverflow { .. })
        ));
    }

    #[test]
    fn escaped_backslash_before_u0000_is_not_a_nul() {
        let json = serde_json::to_string(r"\u0000").unwrap();
        assert!(!contains_escaped_nul(&json));
        assert!(contains_escaped_nul(&serde_json::to_string("x\0").unwrap()));
    }
}
