//! The contract between the execute loop and a storage backend.

use std::{future::Future, sync::Arc, time::Duration};

use crate::{
    AppendOutcome, CommandId, CommandLookup, CommandQueue, CommandRecord, Snapshot, SnapshotKey,
    SnapshotRead, StateCache, StoreError, StreamId, StreamReads, StreamVersion, StreamWrites,
};

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
/// - [`read_tails`](EventStore::read_tails) returns the same as
///   `read_streams` less the events at or below the versions the caller
///   holds (every stream's current version is still returned). A networked
///   store does this in one round trip.
/// - A write that registers streams but holds no events checks the versions
///   and writes nothing.
/// - [`load_snapshot`](EventStore::load_snapshot) returns the snapshot last
///   [offered](EventStore::offer_snapshot) under the key (or an older one,
///   or none), byte for byte. Snapshots are not events: they may be
///   replaced, dropped and deleted, and a command's outcome never depends on
///   them.
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
///   write.
/// - [`find_command`](EventStore::find_command) and the `_for` reads see
///   every record committed before their read; a record stays until
///   [`prune_commands`](EventStore::prune_commands) removes it.
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

    /// Reads the events of each stream after the version the caller
    /// already holds, and every stream's current version, in one
    /// consistent view.
    ///
    /// `held` names each stream once with the version whose events the
    /// caller has; the result has every named stream's current version
    /// (which may be below the held one, if the stream is shorter than the
    /// caller believes) and only the events above the held versions, in
    /// global order. The default reads the whole streams and drops what
    /// the caller holds; a store should serve it from an index instead, so
    /// that its cost depends on the new events only.
    ///
    /// # Errors
    /// As [`read_streams`](EventStore::read_streams).
    fn read_tails(
        &self,
        held: &[(StreamId, StreamVersion)],
    ) -> impl Future<Output = Result<StreamReads, StoreError>> + Send {
        async move {
            let ids: Vec<StreamId> = held.iter().map(|(id, _)| id.clone()).collect();
            let (versions, mut events) = self.read_streams(&ids).await?.into_parts();
            events.retain(|e| {
                held.iter()
                    .find(|(id, _)| id == e.stream_id())
                    .is_none_or(|(_, v)| e.version() > *v)
            });
            Ok(StreamReads::new(versions, events))
        }
    }

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

    /// The record of `command_id`, if an append recorded it.
    ///
    /// The default fails with [`StoreError::Unsupported`]: a store that
    /// does not record command ids must say so, so that `execute` with a
    /// command id fails instead of applying a command twice.
    ///
    /// # Errors
    /// [`StoreError::Unsupported`], or a backend failure.
    fn find_command(
        &self,
        command_id: &CommandId,
    ) -> impl Future<Output = Result<Option<CommandRecord>, StoreError>> + Send {
        let _ = command_id;
        async {
            Err(StoreError::Unsupported {
                what: "command ids",
                operation: "find_command",
                store: std::any::type_name::<Self>(),
            })
        }
    }

    /// [`read_streams`](EventStore::read_streams), unless `command_id` is
    /// recorded: `execute` calls it for a command with an id, so that a
    /// command whose first execution's reply was lost finds its record
    /// instead of deciding again on streams that already hold its events.
    /// The default reads, then looks the id up (the look-up sees every
    /// record the read could see); a networked store does both in one round
    /// trip.
    ///
    /// # Errors
    /// As [`read_streams`](EventStore::read_streams) and
    /// [`find_command`](EventStore::find_command).
    fn read_streams_for(
        &self,
        command_id: &CommandId,
        streams: &[StreamId],
    ) -> impl Future<Output = Result<CommandLookup<StreamReads>, StoreError>> + Send {
        async move {
            let read = self.read_streams(streams).await?;
            Ok(match self.find_command(command_id).await? {
                Some(record) => CommandLookup::Recorded(record),
                None => CommandLookup::NotRecorded(read),
            })
        }
    }

    /// [`read_tails`](EventStore::read_tails), unless `command_id` is
    /// recorded; as [`read_streams_for`](EventStore::read_streams_for).
    ///
    /// # Errors
    /// As [`read_streams_for`](EventStore::read_streams_for).
    fn read_tails_for(
        &self,
        command_id: &CommandId,
        held: &[(StreamId, StreamVersion)],
    ) -> impl Future<Output = Result<CommandLookup<StreamReads>, StoreError>> + Send {
        async move {
            let read = self.read_tails(held).await?;
            Ok(match self.find_command(command_id).await? {
                Some(record) => CommandLookup::Recorded(record),
                None => CommandLookup::NotRecorded(read),
            })
        }
    }

    /// [`read_from_snapshot`](EventStore::read_from_snapshot), unless
    /// `command_id` is recorded; as
    /// [`read_streams_for`](EventStore::read_streams_for).
    ///
    /// # Errors
    /// As [`read_streams_for`](EventStore::read_streams_for).
    fn read_from_snapshot_for(
        &self,
        command_id: &CommandId,
        key: &SnapshotKey,
    ) -> impl Future<Output = Result<CommandLookup<SnapshotRead>, StoreError>> + Send {
        async move {
            let read = self.read_from_snapshot(key).await?;
            Ok(match self.find_command(command_id).await? {
                Some(record) => CommandLookup::Recorded(record),
                None => CommandLookup::NotRecorded(read),
            })
        }
    }

    /// Deletes the command records made more than `older_than` ago (by the
    /// store's clock) and returns how many it deleted. Events are never
    /// deleted. Once a record is gone, its command id counts as new: a
    /// command executed again with it is applied again. Keep records for
    /// longer than any caller may retry (an HTTP client's retry window, a
    /// message broker's redelivery limit).
    ///
    /// # Errors
    /// [`StoreError::Unsupported`] by default, or a backend failure.
    fn prune_commands(
        &self,
        older_than: Duration,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send {
        let _ = older_than;
        async {
            Err(StoreError::Unsupported {
                what: "command ids",
                operation: "prune_commands",
                store: std::any::type_name::<Self>(),
            })
        }
    }

    /// The cache of folded states that `execute` uses with this store
    /// value, if any (none by default). See [`StateCache`].
    fn state_cache(&self) -> Option<&StateCache> {
        None
    }

    /// The queue in which `execute` lines up this store value's commands on
    /// the same streams, if any (none by default: such commands then
    /// collide at the version check and retry). A store keeps one
    /// [`CommandQueue`] per value, shared by its clones; a store that wraps
    /// another forwards its queue (and its
    /// [`state_cache`](Self::state_cache)).
    fn command_queue(&self) -> Option<&CommandQueue> {
        None
    }

    /// The snapshot filed under `key`, if the store keeps snapshots and has
    /// one (none by default). A store returns what it has, whatever its
    /// schema version or content: `execute` checks it and ignores what it
    /// cannot use.
    ///
    /// # Errors
    /// A backend failure; `execute` then folds the streams from the start,
    /// so a snapshot never makes a command fail.
    fn load_snapshot(
        &self,
        key: &SnapshotKey,
    ) -> impl Future<Output = Result<Option<Snapshot>, StoreError>> + Send {
        let _ = key;
        async { Ok(None) }
    }

    /// Loads the snapshot filed under `key` and reads the key's streams
    /// after the versions it covers, or from the start when there is no
    /// snapshot or the store does not use it; [`SnapshotRead::after`] says
    /// which. `execute` calls it when a declared state is not kept in
    /// process. The default loads, then reads (a failed load reads from the
    /// start); a networked store does both in one round trip.
    ///
    /// # Errors
    /// As [`read_streams`](EventStore::read_streams).
    fn read_from_snapshot(
        &self,
        key: &SnapshotKey,
    ) -> impl Future<Output = Result<SnapshotRead, StoreError>> + Send {
        async move {
            let snapshot = self.load_snapshot(key).await.ok().flatten();
            let held = snapshot.as_ref().and_then(Snapshot::stream_versions);
            let (after, read) = match held {
                Some(held) => (
                    held.iter().map(|(_, v)| *v).collect(),
                    self.read_tails(&held).await?,
                ),
                None => (
                    vec![StreamVersion::INITIAL; key.streams().len()],
                    self.read_streams(key.streams()).await?,
                ),
            };
            Ok(SnapshotRead::new(snapshot, after, read))
        }
    }

    /// Hands a snapshot to the store to keep, replacing the one filed under
    /// the same key. Must not wait for I/O: `execute` calls it after a
    /// command's append has committed, on the command's own task. A store
    /// that writes snapshots to disk or a server queues the write, and may
    /// drop it when it falls behind. The default drops it.
    fn offer_snapshot(&self, snapshot: Snapshot) {
        let _ = snapshot;
    }
}

/// Forwarding impls for `&S`, `Arc<S>` and `Box<S>`, so that
/// `execute(&store, ..)` and `execute(store.clone(), ..)` both work. Every
/// method is forwarded, default ones included (the lint below catches one
/// forgotten), so a wrapper never falls back to a slower default.
macro_rules! forward_event_store {
    ($($wrapper:ty),+) => {$(
        #[warn(clippy::missing_trait_methods)]
        impl<S: EventStore + ?Sized> EventStore for $wrapper {
            fn read_streams(
                &self,
                streams: &[StreamId],
            ) -> impl Future<Output = Result<StreamReads, StoreError>> + Send {
                (**self).read_streams(streams)
            }

            fn read_tails(
                &self,
                held: &[(StreamId, StreamVersion)],
            ) -> impl Future<Output = Result<StreamReads, StoreError>> + Send {
                (**self).read_tails(held)
            }

            fn append(
                &self,
                writes: StreamWrites,
            ) -> impl Future<Output = Result<AppendOutcome, StoreError>> + Send {
                (**self).append(writes)
            }

            fn find_command(
                &self,
                command_id: &CommandId,
            ) -> impl Future<Output = Result<Option<CommandRecord>, StoreError>> + Send {
                (**self).find_command(command_id)
            }

            fn read_streams_for(
                &self,
                command_id: &CommandId,
                streams: &[StreamId],
            ) -> impl Future<Output = Result<CommandLookup<StreamReads>, StoreError>> + Send {
                (**self).read_streams_for(command_id, streams)
            }

            fn read_tails_for(
                &self,
                command_id: &CommandId,
                held: &[(StreamId, StreamVersion)],
            ) -> impl Future<Output = Result<CommandLookup<StreamReads>, StoreError>> + Send {
                (**self).read_tails_for(command_id, held)
            }

            fn read_from_snapshot_for(
                &self,
                command_id: &CommandId,
                key: &SnapshotKey,
            ) -> impl Future<Output = Result<CommandLookup<SnapshotRead>, StoreError>> + Send {
                (**self).read_from_snapshot_for(command_id, key)
            }

            fn prune_commands(
                &self,
                older_than: Duration,
            ) -> impl Future<Output = Result<u64, StoreError>> + Send {
                (**self).prune_commands(older_than)
            }

            fn state_cache(&self) -> Option<&StateCache> {
                (**self).state_cache()
            }

            fn command_queue(&self) -> Option<&CommandQueue> {
                (**self).command_queue()
            }

            fn load_snapshot(
                &self,
                key: &SnapshotKey,
            ) -> impl Future<Output = Result<Option<Snapshot>, StoreError>> + Send {
                (**self).load_snapshot(key)
            }

            fn read_from_snapshot(
                &self,
                key: &SnapshotKey,
            ) -> impl Future<Output = Result<SnapshotRead, StoreError>> + Send {
                (**self).read_from_snapshot(key)
            }

            fn offer_snapshot(&self, snapshot: Snapshot) {
                (**self).offer_snapshot(snapshot)
            }
        }
    )+};
}

forward_event_store!(&S, Arc<S>, Box<S>);
