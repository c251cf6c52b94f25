//! The contract between the execute loop and a storage backend.

use std::{future::Future, sync::Arc};

use crate::{StoreError, StreamId, StreamReads, StreamVersion, StreamWrites};

/// What a successful append did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendOutcome {
    /// Every registered stream with its version after the append, sorted by
    /// stream id (read-only participants keep their expected version).
    pub stream_versions: Vec<(StreamId, StreamVersion)>,
    /// How many events were appended.
    pub events_written: usize,
}

/// A backend that stores event streams.
///
/// # Contract
/// An implementation must guarantee, and `eventcore-testing`'s conformance
/// suite checks, that:
/// - [`read_streams`](EventStore::read_streams) returns, for every requested
///   stream, its current version (0 if it has no events) and all its events,
///   in one consistent view; the events of all streams come ordered by global
///   sequence. A networked store does this in one round trip.
/// - [`append`](EventStore::append) is atomic across streams: it checks that
///   **every** registered stream (read-only participants included) is at its
///   expected version, and then appends all events, numbering each stream's
///   new events from its expected version + 1 with no gap; or it writes
///   nothing and fails. A stale expectation fails with
///   [`StoreError::VersionConflict`]. Concurrent appends behave as if run one
///   at a time. A networked store does this in one round trip.
/// - A write that registers streams but holds no events checks the versions
///   and writes nothing.
/// - Payloads are stored verbatim as JSON and read back as such; an event is
///   never silently dropped or altered.
/// - Failures that a retry may cure are [`StoreError::Transient`]; nothing
///   is returned as transient after the write has committed unless the store
///   cannot know (a connection lost during commit).
pub trait EventStore: Send + Sync {
    /// Reads the given streams: their current versions and events.
    ///
    /// # Errors
    /// [`StoreError::Transient`] or [`StoreError::Backend`] on backend failure.
    fn read_streams(
        &self,
        streams: &[StreamId],
    ) -> impl Future<Output = Result<StreamReads, StoreError>> + Send;

    /// Appends `writes` atomically, or nothing.
    ///
    /// # Errors
    /// [`StoreError::VersionConflict`] if a registered stream moved;
    /// [`StoreError::PayloadTooLarge`] if an event exceeds the store's limit;
    /// [`StoreError::Transient`] or [`StoreError::Backend`] on backend failure.
    fn append(
        &self,
        writes: StreamWrites,
    ) -> impl Future<Output = Result<AppendOutcome, StoreError>> + Send;
}

impl<S: EventStore + ?Sized> EventStore for &S {
    fn read_streams(
        &self,
        streams: &[StreamId],
    ) -> impl Future<Output = Result<StreamReads, StoreError>> + Send {
        (**self).read_streams(streams)
    }

    fn append(
        &self,
        writes: StreamWrites,
    ) -> impl Future<Output = Result<AppendOutcome, StoreError>> + Send {
        (**self).append(writes)
    }
}

impl<S: EventStore + ?Sized> EventStore for Arc<S> {
    fn read_streams(
        &self,
        streams: &[StreamId],
    ) -> impl Future<Output = Result<StreamReads, StoreError>> + Send {
        (**self).read_streams(streams)
    }

    fn append(
        &self,
        writes: StreamWrites,
    ) -> impl Future<Output = Result<AppendOutcome, StoreError>> + Send {
        (**self).append(writes)
    }
}

impl<S: EventStore + ?Sized> EventStore for Box<S> {
    fn read_streams(
        &self,
        streams: &[StreamId],
    ) -> impl Future<Output = Result<StreamReads, StoreError>> + Send {
        (**self).read_streams(streams)
    }

    fn append(
        &self,
        writes: StreamWrites,
    ) -> impl Future<Output = Result<AppendOutcome, StoreError>> + Send {
        (**self).append(writes)
    }
}
