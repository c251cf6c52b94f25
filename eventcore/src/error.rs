//! Errors of stores, commands and the execute loop.

use crate::{StreamId, StreamVersion};

/// A boxed error from a store's backend (for example an `sqlx::Error`), kept
/// as the [`source`](std::error::Error::source) of a [`StoreError`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What can go wrong when reading from or appending to an event store, or
/// when preparing a [`StreamWrites`](crate::StreamWrites).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A registered stream is not at the version the write expected; nothing
    /// was written to any stream.
    #[error(
        "version conflict on stream `{stream_id}`: expected version {expected}, found {actual}"
    )]
    VersionConflict {
        /// The stream whose version differed.
        stream_id: StreamId,
        /// The version the write was built against.
        expected: StreamVersion,
        /// The stream's version in the store.
        actual: StreamVersion,
    },

    /// An event targets a stream that the write did not register (for a
    /// command: a stream it did not declare).
    #[error("event `{event_type}` targets stream `{stream_id}`, which this write did not register")]
    UndeclaredStream {
        /// The stream the event named.
        stream_id: StreamId,
        /// The event's type name.
        event_type: String,
    },

    /// The same stream was registered twice with two different expected versions.
    #[error("stream `{stream_id}` registered twice, expecting version {first} and then {second}")]
    ConflictingExpectation {
        /// The stream registered twice.
        stream_id: StreamId,
        /// The first expected version.
        first: StreamVersion,
        /// The second expected version.
        second: StreamVersion,
    },

    /// An event's payload contains the NUL character, which PostgreSQL's
    /// text types and `jsonb` cannot hold (a payload cast to `jsonb` in a
    /// query would fail); rejected by every store alike.
    #[error(
        "event `{event_type}` for stream `{stream_id}` contains a NUL character (U+0000), which cannot be stored"
    )]
    NulCharacter {
        /// The event's stream.
        stream_id: StreamId,
        /// The event's type name.
        event_type: String,
    },

    /// An event's type name is empty, longer than 255 characters, or holds
    /// a control character (NUL included), which not every store can keep.
    #[error(
        "event type name {event_type:?} for stream `{stream_id}` must be 1 to 255 characters without control characters"
    )]
    InvalidEventType {
        /// The event's stream.
        stream_id: StreamId,
        /// The offending type name.
        event_type: String,
    },

    /// Metadata that no store can keep.
    #[error("metadata cannot be stored: {reason}")]
    InvalidMetadata {
        /// What is wrong with it.
        reason: &'static str,
    },

    /// An event's serialised payload is larger than the store accepts.
    #[error(
        "event `{event_type}` for stream `{stream_id}` is {size} bytes serialised; the store accepts at most {limit}"
    )]
    PayloadTooLarge {
        /// The event's stream.
        stream_id: StreamId,
        /// The event's type name.
        event_type: String,
        /// The serialised size in bytes.
        size: usize,
        /// The configured limit in bytes.
        limit: usize,
    },

    /// An event could not be serialised to JSON.
    #[error("event `{event_type}` for stream `{stream_id}` could not be serialised")]
    Serialize {
        /// The event's stream.
        stream_id: StreamId,
        /// The event's type name.
        event_type: String,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },

    /// An event's serialised form would not deserialise back into its type,
    /// so a stream holding it could never be read again (a non-finite
    /// float, which JSON writes as `null`; a `Serialize` impl that does not
    /// match its `Deserialize`). Refused before anything is written.
    #[error(
        "event `{event_type}` for stream `{stream_id}` would not deserialise back into its type (at `{path}`); it is not written"
    )]
    WouldNotDecode {
        /// The event's stream.
        stream_id: StreamId,
        /// The event's type name.
        event_type: String,
        /// Where in the event the value that does not come back sits, as a
        /// field path (`amount`, `lines[2].price`; `.` for the whole event).
        path: String,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },

    /// A stored event could not be deserialised into the requested type. The
    /// event is never skipped: reading fails instead.
    #[error(
        "stored event {version} of stream `{stream_id}` (type `{event_type}`) could not be deserialised"
    )]
    Deserialize {
        /// The event's stream.
        stream_id: StreamId,
        /// The event's version in its stream.
        version: StreamVersion,
        /// The stored type name.
        event_type: String,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },

    /// A stored event's schema version is not one its type reads: older,
    /// and the type's [`Event::upcast`](crate::Event::upcast) refused it,
    /// or newer than the type's [`Event::schema_version`](crate::Event::schema_version)
    /// (written by newer code). The event is never skipped: reading fails.
    #[error(
        "stored event {version} of stream `{stream_id}` (type `{event_type}`, schema version {schema_version}) cannot be read as schema version {current}: {source}"
    )]
    Upcast {
        /// The event's stream.
        stream_id: StreamId,
        /// The event's version in its stream.
        version: StreamVersion,
        /// The stored type name.
        event_type: String,
        /// The schema version it was stored at.
        schema_version: u32,
        /// The schema version the reading type has.
        current: u32,
        /// Why it could not be brought up to `current`.
        #[source]
        source: BoxError,
    },

    /// The write would take a stream past the largest representable version.
    #[error("stream `{stream_id}` cannot grow past version {version}")]
    VersionOverflow {
        /// The stream.
        stream_id: StreamId,
        /// Its current version.
        version: StreamVersion,
    },

    /// A snapshot whose versions do not give one version per stream of its
    /// key. Nothing was written.
    #[error("snapshot `{name}` has {versions} versions for {streams} streams")]
    InvalidSnapshot {
        /// The snapshot's name.
        name: String,
        /// How many streams its key names.
        streams: usize,
        /// How many versions it gives.
        versions: usize,
    },

    /// A command id already recorded for another command: another command
    /// type, or the same type over another set of streams. Nothing was
    /// written. A command id names one command; reusing it for a different
    /// one is a caller's mistake, not a repeat.
    #[error(
        "command id `{command_id}` was recorded for `{recorded_type}` on streams {recorded_streams:?}, not for `{command_type}` on streams {streams:?}"
    )]
    CommandIdReused {
        /// The command id.
        command_id: crate::CommandId,
        /// The command type it was recorded for.
        recorded_type: String,
        /// The streams it was recorded for, sorted.
        recorded_streams: Vec<StreamId>,
        /// The command type of the write that reused it.
        command_type: String,
        /// The streams of the write that reused it, sorted.
        streams: Vec<StreamId>,
    },

    /// A subscription's save (of a checkpoint, or of an exactly-once
    /// projection's effects) under a lease that is no longer the newest:
    /// another instance took the lease since. Nothing was written.
    #[error(
        "the lease of subscription `{name}` under token {token} was taken over (the newest is {current}); nothing was written"
    )]
    LeaseLost {
        /// The subscription.
        name: crate::SubscriptionName,
        /// The token the write was made under.
        token: crate::LeaseToken,
        /// The newest token of the name (0 if the store has none).
        current: crate::LeaseToken,
    },

    /// The store does not implement something a caller asked for (for
    /// example command ids, on a store written before they existed).
    /// Nothing was written.
    #[error("{store} does not support {what} (asked for by {operation})")]
    Unsupported {
        /// What is not supported.
        what: &'static str,
        /// The call that needed it.
        operation: &'static str,
        /// The store's type.
        store: &'static str,
    },

    /// A failure that may pass if the operation is tried again (a lost
    /// connection, a serialization failure, a deadlock). Nothing was written,
    /// unless the backend says otherwise in the source.
    #[error("transient store failure during {operation}")]
    Transient {
        /// What the store was doing.
        operation: &'static str,
        /// The backend's error.
        #[source]
        source: BoxError,
    },

    /// Any other failure of the store's backend.
    #[error("store failure during {operation}")]
    Backend {
        /// What the store was doing.
        operation: &'static str,
        /// The backend's error.
        #[source]
        source: BoxError,
    },
}

/// What kind of failure a [`StoreError`] is: the few cases a caller
/// branches on, whatever variant (and detail) the error has.
///
/// ```
/// use eventcore::{StoreError, StoreErrorKind};
/// let error = StoreError::InvalidMetadata { reason: "too large" };
/// assert_eq!(error.kind(), StoreErrorKind::InvalidInput);
/// assert!(!error.is_retryable());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// A stream was not at the expected version: read again and retry.
    Conflict,
    /// The write (or a read's request) is refused as given: an undeclared
    /// stream, a payload or name no store can keep, an event that would
    /// not read back. Nothing was written; retrying the same input fails
    /// the same way.
    InvalidInput,
    /// A stored event cannot be read as the requested type (it does not
    /// deserialise, or its schema version has no upcaster). Never skipped.
    Unreadable,
    /// A command id already recorded for another command.
    CommandIdReused,
    /// A subscription's lease was taken over by another instance.
    LeaseLost,
    /// The store does not implement what was asked.
    Unsupported,
    /// A failure that may pass when tried again (a lost connection).
    Transient,
    /// Any other failure of the store's backend.
    Backend,
}

impl StoreError {
    /// What a store that does not record command ids answers a read or an
    /// append that carries one: [`StoreError::Unsupported`] naming the
    /// operation and the store `S`.
    pub fn command_ids_unsupported<S: ?Sized>(operation: &'static str) -> Self {
        StoreError::Unsupported {
            what: "command ids",
            operation,
            store: std::any::type_name::<S>(),
        }
    }

    /// The kind of failure: what a caller branches on.
    pub fn kind(&self) -> StoreErrorKind {
        match self {
            StoreError::VersionConflict { .. } => StoreErrorKind::Conflict,
            StoreError::UndeclaredStream { .. }
            | StoreError::ConflictingExpectation { .. }
            | StoreError::NulCharacter { .. }
            | StoreError::InvalidEventType { .. }
            | StoreError::InvalidMetadata { .. }
            | StoreError::PayloadTooLarge { .. }
            | StoreError::Serialize { .. }
            | StoreError::WouldNotDecode { .. }
            | StoreError::VersionOverflow { .. }
            | StoreError::InvalidSnapshot { .. } => StoreErrorKind::InvalidInput,
            StoreError::Deserialize { .. } | StoreError::Upcast { .. } => {
                StoreErrorKind::Unreadable
            }
            StoreError::CommandIdReused { .. } => StoreErrorKind::CommandIdReused,
            StoreError::LeaseLost { .. } => StoreErrorKind::LeaseLost,
            StoreError::Unsupported { .. } => StoreErrorKind::Unsupported,
            StoreError::Transient { .. } => StoreErrorKind::Transient,
            StoreError::Backend { .. } => StoreErrorKind::Backend,
        }
    }

    /// Whether retrying the whole read-decide-append cycle may succeed:
    /// version conflicts and transient failures.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.kind(),
            StoreErrorKind::Conflict | StoreErrorKind::Transient
        )
    }
}

/// A refusal that is only a message: what [`require!`](crate::require)
/// makes from a message, and the [`CommandLogic::Error`](crate::CommandLogic::Error)
/// of a command with nothing more to say. A command with refusals worth
/// telling apart declares its own error type instead (one that implements
/// `From<Refusal>` if it also uses `require!` with messages).
///
/// ```
/// use eventcore::Refusal;
/// let refusal = Refusal::new("the account holds only 3");
/// assert_eq!(refusal.to_string(), "the account holds only 3");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    message: String,
}

impl Refusal {
    /// A refusal saying `message`.
    pub fn new(message: impl Into<String>) -> Self {
        Refusal {
            message: message.into(),
        }
    }

    /// What the refusal says.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// What [`execute`](crate::execute) can fail with. `E` is the command's own
/// error type ([`CommandLogic::Error`](crate::CommandLogic::Error)), carried
/// by [`Rejected`](ExecuteError::Rejected) so that callers can `match` on it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExecuteError<E = Refusal> {
    /// The command declared no streams; nothing was read or written.
    #[error("command declared no streams")]
    NoStreams,

    /// A [`Fold`](crate::Fold) of the command's state has an empty
    /// [`NAME`](crate::Fold::NAME), one over 255 characters, or one holding
    /// a control character; nothing was read or written.
    #[error("fold name {name:?} must be 1 to 255 characters without control characters")]
    InvalidFoldName {
        /// The fold's name.
        name: &'static str,
    },

    /// The command's [`command_name`](crate::CommandStreams::command_name),
    /// which is recorded with its command id, is empty, over 255
    /// characters or holds a control character; nothing was read or
    /// written.
    #[error("command name {name:?} must be 1 to 255 characters without control characters")]
    InvalidCommandName {
        /// The name.
        name: String,
    },

    /// The command kept naming streams to discover after
    /// [`MAX_DISCOVERY_ROUNDS`](crate::MAX_DISCOVERY_ROUNDS) rounds of
    /// reads; nothing was written.
    #[error("command named new streams to read after {rounds} rounds of discovery")]
    TooManyDiscoveryRounds {
        /// The rounds read.
        rounds: u32,
    },

    /// The command's `handle` refused with its own error; nothing was
    /// written, and the command was not retried.
    #[error("command refused: {0}")]
    Rejected(#[source] E),

    /// Every attempt allowed by the [`RetryPolicy`](crate::RetryPolicy) met a
    /// conflict or a transient failure; nothing of this command was written.
    #[error("gave up after {attempts} attempts")]
    RetriesExhausted {
        /// How many times the command was read, decided and appended.
        attempts: u32,
        /// The error of the last attempt.
        #[source]
        last_error: StoreError,
    },

    /// The store failed in a way that retrying cannot fix, or the command
    /// produced a write the store refuses (an undeclared stream, a payload
    /// that cannot be stored).
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[cfg(test)]
mod tests {
    use super::{StoreError, StoreErrorKind};
    use crate::{StreamId, StreamVersion};

    #[test]
    fn kinds_sort_errors_into_what_callers_branch_on() {
        let stream = StreamId::try_new("s").unwrap();
        let cases = [
            (
                StoreError::VersionConflict {
                    stream_id: stream.clone(),
                    expected: StreamVersion::new(1),
                    actual: StreamVersion::new(2),
                },
                StoreErrorKind::Conflict,
                true,
            ),
            (
                StoreError::PayloadTooLarge {
                    stream_id: stream.clone(),
                    event_type: "E".into(),
                    size: 2,
                    limit: 1,
                },
                StoreErrorKind::InvalidInput,
                false,
            ),
            (
                StoreError::VersionOverflow {
                    stream_id: stream.clone(),
                    version: StreamVersion::new(u64::MAX),
                },
                StoreErrorKind::InvalidInput,
                false,
            ),
            (
                StoreError::Upcast {
                    stream_id: stream,
                    version: StreamVersion::new(1),
                    event_type: "E".into(),
                    schema_version: 3,
                    current: 2,
                    source: "newer".into(),
                },
                StoreErrorKind::Unreadable,
                false,
            ),
            (
                StoreError::Unsupported {
                    what: "command ids",
                    operation: "find_command",
                    store: "Minimal",
                },
                StoreErrorKind::Unsupported,
                false,
            ),
            (
                StoreError::Transient {
                    operation: "read",
                    source: "lost".into(),
                },
                StoreErrorKind::Transient,
                true,
            ),
            (
                StoreError::Backend {
                    operation: "read",
                    source: "disk".into(),
                },
                StoreErrorKind::Backend,
                false,
            ),
        ];
        for (error, kind, retryable) in cases {
            assert_eq!(error.kind(), kind, "{error}");
            assert_eq!(error.is_retryable(), retryable, "{error}");
        }
    }
}
