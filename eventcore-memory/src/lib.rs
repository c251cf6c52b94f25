//! An in-memory [`EventStore`] for eventcore.
//!
//! [`InMemoryEventStore`] keeps every event in its serialised JSON form, as
//! the PostgreSQL store does, so a command tested here behaves as it will in
//! production: an event type that does not round-trip through serde fails
//! here too, and NUL characters and oversized payloads are refused alike.
//! It passes the same conformance suite (`eventcore-testing`) as every store.
//!
//! ```
//! use eventcore::{EventStoreExt, StreamId};
//! use eventcore_memory::InMemoryEventStore;
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let store = InMemoryEventStore::new();
//! let read = store.read_streams(&[StreamId::try_new("nobody").unwrap()]).await.unwrap();
//! assert!(read.events().is_empty());
//! # });
//! ```
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![forbid(unsafe_code)]

mod checkpoints;
mod outbox;

pub use checkpoints::{ExactlyOnce, InMemoryCheckpointStore, InMemoryLease, MemoryProjection};
pub use outbox::{NoWrites, Reacting};

use std::{
    collections::HashMap,
    sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use eventcore::{
    AfterFailure, AppendOutcome, CheckpointStore, CommandId, CommandRecord, CommandRecords,
    DeadLetter, DeadLetterAction, DeadLetters, EffectAction, EffectKey, EventLog, EventStore,
    LeaseToken, LogPage, LogQuery, Outbox, Position, ReadAnswer, ReadRequest, RecordedEvent,
    Snapshot, SnapshotKey, StoreError, StoreIdentity, StoredEffect, StreamId, StreamReads,
    StreamVersion, StreamWrites, SubscriptionLeases, SubscriptionName,
};

/// The default limit on one event's serialised size: 1 MiB, as on PostgreSQL.
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 1024 * 1024;

/// An event store held in memory. Cheap to clone: clones share the events,
/// the snapshots and the [identity](EventStore::identity) (so `execute` on
/// any clone uses one cache and one queue; an
/// [`Executor`](eventcore::Executor) with a cache of its own is what a
/// second process over the same events would have).
#[derive(Debug, Clone)]
pub struct InMemoryEventStore {
    inner: Arc<RwLock<Log>>,
    appended: Arc<tokio::sync::Notify>,
    checkpoints: InMemoryCheckpointStore,
    snapshots: Arc<std::sync::Mutex<HashMap<SnapshotKey, Kept>>>,
    identity: StoreIdentity,
    max_payload_bytes: usize,
}

#[derive(Debug, Default)]
struct Log {
    /// Every event in global order; an event's global sequence is its index + 1.
    events: Vec<RecordedEvent>,
    /// For each stream, the indexes into `events` of its events, in version order.
    streams: HashMap<StreamId, Vec<usize>>,
    /// Every recorded command id, written under the same lock as its events.
    commands: HashMap<CommandId, CommandRecord>,
}

impl Default for InMemoryEventStore {
    fn default() -> Self {
        Self::new()
    }
}

impl InMemoryEventStore {
    /// An empty store with the default payload limit.
    pub fn new() -> Self {
        Self {
            inner: Arc::default(),
            appended: Arc::default(),
            checkpoints: InMemoryCheckpointStore::default(),
            snapshots: Arc::default(),
            identity: StoreIdentity::new(),
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
        }
    }

    /// Sets the largest serialised event accepted, in bytes.
    pub fn with_max_payload_bytes(mut self, limit: usize) -> Self {
        self.max_payload_bytes = limit;
        self
    }

    /// The subscriptions' checkpoints and leases, shared by the clones of
    /// this store (what [`ExactlyOnce`] projections commit with).
    pub fn checkpoints(&self) -> &InMemoryCheckpointStore {
        &self.checkpoints
    }

    /// Every event in global order, for tests and inspection.
    pub fn all_events(&self) -> Vec<RecordedEvent> {
        self.read_log().events.clone()
    }

    // A panic while the lock is held can only come from a bug in this file,
    // and no method leaves the log half-updated (append validates first), so
    // a poisoned lock still guards a consistent log.
    fn read_log(&self) -> RwLockReadGuard<'_, Log> {
        self.inner
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write_log(&self) -> RwLockWriteGuard<'_, Log> {
        self.inner
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Removes the command records made before `cutoff`.
    fn prune_before(&self, cutoff: SystemTime) -> u64 {
        let mut log = self.write_log();
        let before = log.commands.len();
        log.commands
            .retain(|_, record| record.recorded_at >= cutoff);
        (before - log.commands.len()) as u64
    }

    fn snapshots(&self) -> std::sync::MutexGuard<'_, HashMap<SnapshotKey, Kept>> {
        // A map of plain values: a panic elsewhere cannot leave it inconsistent.
        self.snapshots.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn append_now(&self, writes: &mut StreamWrites) -> Result<AppendOutcome, StoreError> {
        writes.check_payload_limit(self.max_payload_bytes)?;
        let stream_versions = writes.resulting_versions()?;
        // Each event's version once the streams are found at their
        // expected versions (checked below, under the lock).
        let versions = writes.event_versions()?;
        let mut log = self.write_log();
        if let Some((id, _)) = writes.command()
            && let Some(record) = log.commands.get(id)
        {
            return record.repeat(writes);
        }
        for (stream, expected) in writes.expected_versions() {
            let actual = StreamVersion::new(log.streams.get(stream).map_or(0, Vec::len) as u64);
            if actual != *expected {
                return Err(StoreError::VersionConflict {
                    stream_id: stream.clone(),
                    expected: *expected,
                    actual,
                });
            }
        }
        let Log {
            events,
            streams,
            commands,
        } = &mut *log;
        let recorded_at = now_to_the_microsecond();
        for (pending, version) in writes.events().iter().zip(versions) {
            let index = events.len();
            // Look up before inserting: cloning the id only for a new stream.
            let positions = match streams.get_mut(pending.stream_id()) {
                Some(positions) => positions,
                None => streams.entry(pending.stream_id().clone()).or_default(),
            };
            positions.push(index);
            events.push(
                RecordedEvent::new(
                    pending.stream_id().clone(),
                    version,
                    index as u64 + 1,
                    pending.event_type(),
                    pending.payload(),
                )
                .with_schema_version(pending.schema_version())
                .with_event_id(pending.event_id())
                .with_recorded_at(recorded_at)
                .with_metadata(pending.metadata().clone()),
            );
        }
        let last = (!writes.events().is_empty()).then(|| Position::new(0, events.len() as u64));
        let outcome =
            AppendOutcome::new(stream_versions, writes.events().len()).with_position(last);
        if !writes.is_empty()
            && let Some(record) = CommandRecord::of_append(writes, &outcome, recorded_at)
        {
            commands.insert(record.command_id.clone(), record);
        }
        if let Some(snapshot) = writes.take_snapshot() {
            let event_ids = folded_last(&log, &snapshot);
            self.snapshots().insert(
                snapshot.key().clone(),
                Kept {
                    snapshot,
                    event_ids,
                },
            );
        }
        Ok(outcome)
    }
}

/// A snapshot as kept: with the id of the event at each of its versions
/// when it was kept (the last it folded; none at version 0, or past the
/// stream's end).
#[derive(Debug, Clone)]
struct Kept {
    snapshot: Snapshot,
    event_ids: Vec<Option<eventcore::Uuid>>,
}

/// The id of the event at each of `snapshot`'s versions, stream by stream.
fn folded_last(log: &Log, snapshot: &Snapshot) -> Vec<Option<eventcore::Uuid>> {
    snapshot
        .key()
        .streams()
        .iter()
        .zip(snapshot.versions())
        .map(|(stream, version)| {
            let at = usize::try_from(version.get()).ok()?.checked_sub(1)?;
            let index = *log.streams.get(stream)?.get(at)?;
            log.events.get(index).map(RecordedEvent::event_id)
        })
        .collect()
}

/// Every named stream's current version and its events after the given
/// version (0: all), in global order; a stream named twice counts once.
fn read_after<'a>(
    log: &Log,
    streams: impl ExactSizeIterator<Item = (&'a StreamId, StreamVersion)>,
) -> StreamReads {
    let mut versions: Vec<(StreamId, StreamVersion)> = Vec::with_capacity(streams.len());
    let mut indexes: Vec<usize> = Vec::new();
    for (stream, after) in streams {
        if versions.iter().any(|(id, _)| id == stream) {
            continue;
        }
        let positions = log
            .streams
            .get(stream)
            .map(Vec::as_slice)
            .unwrap_or_default();
        versions.push((stream.clone(), StreamVersion::new(positions.len() as u64)));
        let skip = usize::try_from(after.get()).unwrap_or(usize::MAX);
        indexes.extend_from_slice(positions.get(skip..).unwrap_or_default());
    }
    indexes.sort_unstable();
    let events = indexes.into_iter().map(|i| log.events[i].clone()).collect();
    StreamReads::new(versions, events)
}

/// The clock's time, to the microsecond as PostgreSQL keeps it, so that
/// both stores return the same kind of times.
fn now_to_the_microsecond() -> SystemTime {
    let now = SystemTime::now();
    match now.duration_since(UNIX_EPOCH) {
        Ok(since) => {
            UNIX_EPOCH + Duration::from_micros(u64::try_from(since.as_micros()).unwrap_or(u64::MAX))
        }
        Err(_) => now,
    }
}

impl EventStore for InMemoryEventStore {
    /// The snapshot, the command's record and the events are read under
    /// one lock: one consistent view.
    async fn read(&self, request: ReadRequest) -> Result<ReadAnswer, StoreError> {
        let kept = request
            .snapshot()
            .and_then(|key| self.snapshots().get(key).cloned());
        let log = self.read_log();
        if let Some(id) = request.command_id()
            && let Some(record) = log.commands.get(id)
        {
            return Ok(ReadAnswer::recorded(record.clone()));
        }
        // Used only while the events at its versions are the ones it folded.
        let usable = kept
            .as_ref()
            .filter(|k| folded_last(&log, &k.snapshot) == k.event_ids)
            .and_then(|k| k.snapshot.stream_versions());
        let after = usable.unwrap_or_else(|| request.held().to_vec());
        let snapshot = kept.map(|k| k.snapshot);
        let reads = read_after(&log, after.iter().map(|(s, v)| (s, *v)));
        drop(log);
        Ok(ReadAnswer::new(after, reads).with_snapshot(snapshot))
    }

    /// Keeps a snapshot the write carries at once: there is no I/O to wait
    /// for.
    async fn append(&self, mut writes: StreamWrites) -> Result<AppendOutcome, StoreError> {
        let outcome = self.append_now(&mut writes)?;
        if outcome.events_written > 0 {
            self.appended.notify_waiters();
        }
        Ok(outcome)
    }

    fn identity(&self) -> &StoreIdentity {
        &self.identity
    }
}

impl CommandRecords for InMemoryEventStore {
    async fn prune_commands(&self, older_than: Duration) -> Result<u64, StoreError> {
        let cutoff = SystemTime::now()
            .checked_sub(older_than)
            .unwrap_or(UNIX_EPOCH);
        Ok(self.prune_before(cutoff))
    }
}

impl EventLog for InMemoryEventStore {
    /// Appends are applied one at a time under a lock, so the global
    /// sequence is commit order and no reader can skip an event. A page
    /// that is not full has looked at the whole log: its `next` is the last
    /// event of the log, matching or not.
    async fn read_all(&self, query: &LogQuery) -> Result<LogPage, StoreError> {
        let log = self.read_log();
        // Sequence n is at index n - 1.
        let from = query
            .start()
            .map_or(0, |p| usize::try_from(p.sequence()).unwrap_or(usize::MAX));
        let events: Vec<(Position, RecordedEvent)> = log
            .events
            .iter()
            .skip(from)
            .filter(|e| query.matches(e))
            .take(query.limit())
            .map(|e| (Position::new(0, e.global_sequence()), e.clone()))
            .collect();
        let next = if events.len() < query.limit() {
            log.events
                .last()
                .map(|e| Position::new(0, e.global_sequence()))
                .max(query.start())
        } else {
            query.start()
        };
        Ok(LogPage::new(events, next))
    }

    fn appended(&self) -> impl std::future::Future<Output = ()> + Send {
        // Created now, so a notification sent before the first poll counts.
        self.appended.clone().notified_owned()
    }
}

/// The store keeps its subscriptions' checkpoints and leases too (in an
/// [`InMemoryCheckpointStore`] shared by its clones), so one value serves
/// as log and checkpoint store, as the PostgreSQL store does.
impl CheckpointStore for InMemoryEventStore {
    async fn load(&self, name: &SubscriptionName) -> Result<Option<Position>, StoreError> {
        self.checkpoints.load(name).await
    }

    async fn save(
        &self,
        name: &SubscriptionName,
        position: Position,
        token: LeaseToken,
    ) -> Result<(), StoreError> {
        self.checkpoints.save(name, position, token).await
    }
}

impl DeadLetters for InMemoryEventStore {
    async fn park(&self, letter: &DeadLetter, token: LeaseToken) -> Result<(), StoreError> {
        self.checkpoints.park(letter, token).await
    }

    async fn replayed(
        &self,
        name: &SubscriptionName,
        key: &str,
        through: Position,
        token: LeaseToken,
    ) -> Result<(), StoreError> {
        self.checkpoints.replayed(name, key, through, token).await
    }

    async fn release(
        &self,
        name: &SubscriptionName,
        key: &str,
        token: LeaseToken,
    ) -> Result<(), StoreError> {
        self.checkpoints.release(name, key, token).await
    }

    async fn dead_letters(&self, name: &SubscriptionName) -> Result<Vec<DeadLetter>, StoreError> {
        self.checkpoints.dead_letters(name).await
    }

    async fn resolve(
        &self,
        name: &SubscriptionName,
        key: &str,
        action: DeadLetterAction,
    ) -> Result<bool, StoreError> {
        self.checkpoints.resolve(name, key, action).await
    }
}

impl Outbox for InMemoryEventStore {
    async fn claim(&self, limit: usize, lease: Duration) -> Result<Vec<StoredEffect>, StoreError> {
        self.checkpoints.claim(limit, lease).await
    }

    async fn delivered(&self, key: &EffectKey, claim: u64) -> Result<bool, StoreError> {
        self.checkpoints.delivered(key, claim).await
    }

    async fn failed(
        &self,
        key: &EffectKey,
        claim: u64,
        error: &str,
        then: AfterFailure,
    ) -> Result<bool, StoreError> {
        self.checkpoints.failed(key, claim, error, then).await
    }

    async fn release_effect(&self, key: &EffectKey, claim: u64) -> Result<bool, StoreError> {
        self.checkpoints.release_effect(key, claim).await
    }

    async fn effect(&self, key: &EffectKey) -> Result<Option<StoredEffect>, StoreError> {
        self.checkpoints.effect(key).await
    }

    async fn parked_effects(&self) -> Result<Vec<StoredEffect>, StoreError> {
        self.checkpoints.parked_effects().await
    }

    async fn resolve_effect(
        &self,
        key: &EffectKey,
        action: EffectAction,
    ) -> Result<bool, StoreError> {
        self.checkpoints.resolve_effect(key, action).await
    }

    async fn wait_for_effects(&self, timeout: Duration) {
        self.checkpoints.wait_for_effects(timeout).await;
    }
}

impl SubscriptionLeases for InMemoryEventStore {
    type Lease = InMemoryLease;

    async fn try_acquire(
        &self,
        name: &SubscriptionName,
    ) -> Result<Option<InMemoryLease>, StoreError> {
        self.checkpoints.try_acquire(name).await
    }

    fn token(&self, lease: &InMemoryLease) -> LeaseToken {
        self.checkpoints.token(lease)
    }

    async fn still_held(&self, lease: &mut InMemoryLease) -> Result<bool, StoreError> {
        self.checkpoints.still_held(lease).await
    }
}

#[cfg(test)]
mod tests {
    use eventcore::{
        CacheConfig, EventStoreExt, ExecuteError, Executor, Fold, ReadRequest, SnapshotKey,
        StreamId, execute,
    };
    use eventcore_testing::fixtures::{Balance, Credit, Withdraw};

    use super::*;

    /// A kept snapshot is used only while the events at its versions are
    /// the ones it folded: one whose recorded ids are another log's is read
    /// from the start, and an overdraft it would allow is refused.
    #[tokio::test]
    async fn a_snapshot_of_other_events_is_not_used() {
        let store = InMemoryEventStore::new();
        let id = |s: &str| StreamId::try_new(s).unwrap();
        let a = id("tied-a");
        execute(
            &store,
            Credit {
                account: a.clone(),
                amount: 3,
            },
        )
        .await
        .unwrap();
        let key = SnapshotKey::of_fold(<Balance as Fold>::NAME, &a);
        let rich = "1000000";
        let versions = vec![StreamVersion::new(1)];
        store
            .offer_snapshot(Snapshot::new(key.clone(), 1, versions, rich))
            .await
            .unwrap();
        let after = |answer: ReadAnswer| -> Vec<u64> {
            answer.after.iter().map(|(_, v)| v.get()).collect()
        };
        let read = store.read(ReadRequest::from_snapshot(key.clone())).await;
        assert_eq!(after(read.unwrap()), vec![1], "its own events: used");

        // As if restored from another log: the same versions, other events.
        if let Some(kept) = store.snapshots().get_mut(&key) {
            kept.event_ids = vec![Some(eventcore::Uuid::now_v7())];
        }
        let read = store.read(ReadRequest::from_snapshot(key.clone())).await;
        let read = read.unwrap();
        assert!(
            read.snapshot.is_some(),
            "returned, for the caller to replace"
        );
        assert_eq!(after(read), vec![0], "read from the start");
        let fresh = Executor::new(store.clone()).with_cache(CacheConfig::default());
        let err = fresh
            .execute(Withdraw {
                account: a,
                amount: 4,
            })
            .await
            .expect_err("a holds 3 whatever the snapshot says");
        assert!(matches!(err, ExecuteError::Rejected(_)), "{err:?}");
    }
}
