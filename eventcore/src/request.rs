//! A read as a request and what the store answers: the one read of the
//! store contract. A new option is a field here, not a new store method.

use crate::{
    CommandId, CommandRecord, Snapshot, SnapshotKey, StreamId, StreamReads, StreamVersion,
};

/// What [`EventStore::read`](crate::EventStore::read) is asked for: some
/// streams, each with the version whose events the caller already holds
/// (0: it holds none, so the whole stream), optionally a command id to look
/// up and a snapshot to start from.
///
/// ```
/// use eventcore::{CommandId, ReadRequest, StreamId, StreamVersion};
/// let id = |s: &str| StreamId::try_new(s).unwrap();
/// let whole = ReadRequest::streams([id("b"), id("a"), id("b")]);
/// assert_eq!(whole.held(), &[(id("a"), StreamVersion::INITIAL), (id("b"), StreamVersion::INITIAL)]);
///
/// let tails = ReadRequest::tails([(id("a"), StreamVersion::new(7))])
///     .with_command_id(CommandId::try_new("order-17").unwrap());
/// assert!(!tails.is_whole());
/// assert_eq!(tails.command_id().map(CommandId::as_str), Some("order-17"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadRequest {
    /// Sorted by stream id, one entry per stream.
    held: Vec<(StreamId, StreamVersion)>,
    command_id: Option<CommandId>,
    snapshot: Option<SnapshotKey>,
}

impl ReadRequest {
    /// The whole of each stream (a stream named twice counts once).
    pub fn streams(streams: impl IntoIterator<Item = StreamId>) -> Self {
        Self::tails(streams.into_iter().map(|s| (s, StreamVersion::INITIAL)))
    }

    /// The events of each stream after the version the caller holds. A
    /// stream named twice counts once, at the lower version.
    pub fn tails(held: impl IntoIterator<Item = (StreamId, StreamVersion)>) -> Self {
        let mut held: Vec<(StreamId, StreamVersion)> = held.into_iter().collect();
        held.sort_unstable();
        held.dedup_by(|later, first| later.0 == first.0);
        ReadRequest {
            held,
            command_id: None,
            snapshot: None,
        }
    }

    /// The streams of `key`, starting after the snapshot filed under it if
    /// the store has one it uses, from the start otherwise.
    pub fn from_snapshot(key: SnapshotKey) -> Self {
        ReadRequest {
            snapshot: Some(key.clone()),
            ..Self::streams(key.streams().iter().cloned())
        }
    }

    /// No streams: only the record of `command_id`
    /// ([`ReadAnswer::record`]).
    pub fn command(command_id: CommandId) -> Self {
        Self::default().with_command_id(command_id)
    }

    /// Also looks `command_id` up, in the same consistent view: if it is
    /// recorded, the answer carries its record (and the store may leave
    /// the rest of the answer empty).
    pub fn with_command_id(mut self, command_id: CommandId) -> Self {
        self.command_id = Some(command_id);
        self
    }

    /// Every stream asked for, with the version held, sorted by stream id.
    pub fn held(&self) -> &[(StreamId, StreamVersion)] {
        &self.held
    }

    /// Whether every stream is asked for whole (nothing held).
    pub fn is_whole(&self) -> bool {
        self.held.iter().all(|(_, v)| *v == StreamVersion::INITIAL)
    }

    /// The command id to look up, if any.
    pub fn command_id(&self) -> Option<&CommandId> {
        self.command_id.as_ref()
    }

    /// The snapshot to start from, if any; its streams are the ones asked
    /// for.
    pub fn snapshot(&self) -> Option<&SnapshotKey> {
        self.snapshot.as_ref()
    }
}

/// What a store found for a [`ReadRequest`], in one consistent view.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReadAnswer {
    /// The record of the request's command id, if it is recorded: the
    /// command was applied before. A store may then leave the fields below
    /// empty.
    pub record: Option<CommandRecord>,
    /// The snapshot the store found under the request's key, if any,
    /// whatever its content; whether the events start after it is what
    /// [`after`](Self::after) says.
    pub snapshot: Option<Snapshot>,
    /// For every stream asked for, sorted by stream id, the version the
    /// events in [`reads`](Self::reads) start after: the version held, or
    /// the snapshot's.
    pub after: Vec<(StreamId, StreamVersion)>,
    /// Every stream's current version and its events after
    /// [`after`](Self::after), in global order.
    pub reads: StreamReads,
}

impl ReadAnswer {
    /// An answer of events read after the versions in `after`; for store
    /// implementations.
    pub fn new(mut after: Vec<(StreamId, StreamVersion)>, reads: StreamReads) -> Self {
        after.sort_unstable();
        ReadAnswer {
            record: None,
            snapshot: None,
            after,
            reads,
        }
    }

    /// An answer that found the command recorded; for store
    /// implementations.
    pub fn recorded(record: CommandRecord) -> Self {
        ReadAnswer {
            record: Some(record),
            ..Self::default()
        }
    }

    /// Sets the snapshot found.
    pub fn with_snapshot(mut self, snapshot: Option<Snapshot>) -> Self {
        self.snapshot = snapshot;
        self
    }

    /// Sets the command record found.
    pub fn with_record(mut self, record: Option<CommandRecord>) -> Self {
        self.record = record;
        self
    }
}
