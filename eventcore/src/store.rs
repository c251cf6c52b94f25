//! The contract between the execute loop and a storage backend: two I/O
//! methods and an identity, conveniences over them, and the capabilities a
//! store may lack as traits of their own.

use std::{future::Future, sync::Arc, time::Duration};

use crate::{
    AppendOutcome, CommandId, CommandRecord, ReadAnswer, ReadRequest, Snapshot, SnapshotKey,
    StoreError, StoreIdentity, StreamId, StreamReads, StreamVersion, StreamWrites,
};

/// A backend that stores event streams: a [`read`](EventStore::read), an
/// [`append`](EventStore::append) and an [`identity`](EventStore::identity).
/// Everything else a caller needs is built on them
/// ([`EventStoreExt`], [`execute`](crate::execute)); what a store may lack
/// is a trait of its own ([`CommandRecords`], [`EventLog`](crate::EventLog),
/// [`CheckpointStore`](crate::CheckpointStore),
/// [`SubscriptionLeases`](crate::SubscriptionLeases)). What runs in process
/// (kept states, the queue of commands on the same streams) belongs to the
/// [`Executor`](crate::Executor), not to the store, so a store that wraps
/// another forwards these three methods and takes every path the wrapped
/// store takes.
///
/// # Contract
/// An implementation must guarantee, and `eventcore-testing`'s conformance
/// suite checks, that:
/// - [`read`](EventStore::read) answers, in one consistent view, every
///   requested stream's current version (0 if it has no events, possibly
///   below the version the caller holds) and its events after the version
///   held ([`ReadAnswer::after`]), all ordered by global sequence. A
///   networked store does this in one round trip.
/// - With a [snapshot key](ReadRequest::snapshot), the answer carries the
///   snapshot last kept under the key (or an older one, or none), byte for
///   byte, and may start each stream after the snapshot's versions
///   instead, saying so in [`ReadAnswer::after`], but only while the events
///   at those versions are the ones the snapshot was kept with (a store
///   records their ids when it keeps it): a snapshot restored from another
///   database, or written by hand, is not started from. Snapshots are not events:
///   they may be replaced, dropped and deleted, and a command's outcome
///   never depends on them.
/// - With a [command id](ReadRequest::command_id), the answer carries the
///   command's record if an append recorded it, seeing every record
///   committed before the read. A store that does not record command ids
///   fails every request and write that carries one with
///   [`StoreError::Unsupported`], so that a command with an id is never
///   applied twice.
/// - [`append`](EventStore::append) is atomic across streams: it checks that
///   **every** registered stream (read-only participants included) is at its
///   expected version, and then appends all events, numbering each stream's
///   new events from its expected version + 1 with no gap; or it writes
///   nothing and fails. A stale expectation fails with
///   [`StoreError::VersionConflict`]. Concurrent appends behave as if run one
///   at a time. A networked store does this in one round trip.
/// - A write that registers streams but holds no events checks the versions
///   and writes nothing.
/// - A write that carries a snapshot ([`StreamWrites::with_snapshot`]) hands
///   it to the store to keep once the append has succeeded (not when it
///   finds the command already applied); the store may drop it, and must
///   not make the append wait on saving it.
/// - Payloads are stored verbatim as JSON and read back as such; an event is
///   never silently dropped or altered.
/// - An append whose write carries a command id
///   ([`StreamWrites::set_command`]) that is already recorded writes
///   nothing. It returns the recorded outcome with
///   [`already_applied`](AppendOutcome::already_applied) set if the record
///   is of the same command (type and registered streams), and fails with
///   [`StoreError::CommandIdReused`] otherwise; a store that checks
///   versions first may fail with [`StoreError::VersionConflict`] instead
///   when a registered stream moved (`execute` then reads, and the read
///   finds the record). Otherwise the record ([`CommandRecord`]) is
///   written with the events, atomically: a command id is recorded if and
///   only if its events are stored, and two appends with one id never both
///   write. A record stays until [`CommandRecords::prune_commands`] removes
///   it.
/// - Failures that a retry may cure are [`StoreError::Transient`]; nothing
///   is returned as transient after the write has committed unless the store
///   cannot know (a connection lost during commit).
pub trait EventStore: Send + Sync {
    /// Reads what `request` asks for.
    ///
    /// # Errors
    /// [`StoreError::Transient`] or [`StoreError::Backend`] on backend
    /// failure; [`StoreError::Unsupported`] for a command id the store
    /// cannot look up.
    fn read(
        &self,
        request: ReadRequest,
    ) -> impl Future<Output = Result<ReadAnswer, StoreError>> + Send;

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

    /// Which events this store value shows: values with one identity (a
    /// store and its clones) hold the same streams, so
    /// [`execute`](crate::execute) gives them one default
    /// [`Executor`](crate::Executor) (kept states, command queue). A store
    /// that wraps another returns the wrapped store's identity if it shows
    /// the same events (metrics, fault injection), and one of its own if it
    /// changes them (a tenant's prefix on every stream id).
    fn identity(&self) -> &StoreIdentity;
}

/// Conveniences over [`EventStore::read`] and [`EventStore::append`], for
/// every store (a blanket impl: a store cannot override them, so they take
/// the store's own paths).
pub trait EventStoreExt: EventStore {
    /// The whole of each stream: its current version and all its events.
    ///
    /// # Errors
    /// As [`EventStore::read`].
    fn read_streams(
        &self,
        streams: &[StreamId],
    ) -> impl Future<Output = Result<StreamReads, StoreError>> + Send {
        let request = ReadRequest::streams(streams.iter().cloned());
        async move { Ok(self.read(request).await?.reads) }
    }

    /// Each stream's current version and its events after the version held.
    ///
    /// # Errors
    /// As [`EventStore::read`].
    fn read_tails(
        &self,
        held: &[(StreamId, StreamVersion)],
    ) -> impl Future<Output = Result<StreamReads, StoreError>> + Send {
        let request = ReadRequest::tails(held.iter().cloned());
        async move { Ok(self.read(request).await?.reads) }
    }

    /// The record of `command_id`, if an append recorded it.
    ///
    /// # Errors
    /// [`StoreError::Unsupported`] from a store that does not record
    /// command ids, or a backend failure.
    fn find_command(
        &self,
        command_id: &CommandId,
    ) -> impl Future<Output = Result<Option<CommandRecord>, StoreError>> + Send {
        let request = ReadRequest::command(command_id.clone());
        async move { Ok(self.read(request).await?.record) }
    }

    /// The snapshot kept under `key`, if the store keeps snapshots and has
    /// one.
    ///
    /// # Errors
    /// As [`EventStore::read`].
    fn load_snapshot(
        &self,
        key: &SnapshotKey,
    ) -> impl Future<Output = Result<Option<Snapshot>, StoreError>> + Send {
        let request = ReadRequest::from_snapshot(key.clone());
        async move { Ok(self.read(request).await?.snapshot) }
    }

    /// Hands `snapshot` to the store to keep if its streams still stand at
    /// the versions it covers (an append of no events that expects them).
    ///
    /// # Errors
    /// [`StoreError::VersionConflict`] if a stream moved past the
    /// snapshot; [`StoreError::InvalidSnapshot`] if the snapshot does not
    /// give one version per stream of its key.
    fn offer_snapshot(
        &self,
        snapshot: Snapshot,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        async move {
            let Some(held) = snapshot.stream_versions() else {
                return Err(StoreError::InvalidSnapshot {
                    name: snapshot.key().name().to_owned(),
                    streams: snapshot.key().streams().len(),
                    versions: snapshot.versions().len(),
                });
            };
            let mut writes = StreamWrites::new();
            for (stream, version) in held {
                writes.expect(stream, version)?;
            }
            self.append(writes.with_snapshot(snapshot)).await.map(drop)
        }
    }
}

impl<S: EventStore + ?Sized> EventStoreExt for S {}

/// A store that records command ids and can forget the old ones.
pub trait CommandRecords: EventStore {
    /// Deletes the command records made more than `older_than` ago (by the
    /// store's clock) and returns how many it deleted. Events are never
    /// deleted. Once a record is gone, its command id counts as new: a
    /// command executed again with it is applied again. Keep records for
    /// longer than any caller may retry (an HTTP client's retry window, a
    /// message broker's redelivery limit).
    ///
    /// # Errors
    /// A backend failure.
    fn prune_commands(
        &self,
        older_than: Duration,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

/// Forwarding impls for `&S`, `Arc<S>` and `Box<S>`, so that
/// `execute(&store, ..)` and `execute(store.clone(), ..)` both work. Every
/// method is forwarded (the lint refuses a forgotten one), so a wrapper
/// never falls back to a default.
macro_rules! forward_event_store {
    ($($wrapper:ty),+) => {$(
        #[deny(clippy::missing_trait_methods)]
        impl<S: EventStore + ?Sized> EventStore for $wrapper {
            fn read(
                &self,
                request: ReadRequest,
            ) -> impl Future<Output = Result<ReadAnswer, StoreError>> + Send {
                (**self).read(request)
            }

            fn append(
                &self,
                writes: StreamWrites,
            ) -> impl Future<Output = Result<AppendOutcome, StoreError>> + Send {
                (**self).append(writes)
            }

            fn identity(&self) -> &StoreIdentity {
                (**self).identity()
            }
        }

        #[deny(clippy::missing_trait_methods)]
        impl<S: CommandRecords + ?Sized> CommandRecords for $wrapper {
            fn prune_commands(
                &self,
                older_than: Duration,
            ) -> impl Future<Output = Result<u64, StoreError>> + Send {
                (**self).prune_commands(older_than)
            }
        }
    )+};
}

forward_event_store!(&S, Arc<S>, Box<S>);
