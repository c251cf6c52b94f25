//! Snapshots of declared command states: loaded on a command's path,
//! saved off it by a task of the store's own.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicU64, Ordering::Relaxed},
};

use eventcore::{
    CommandId, ReadAnswer, Snapshot, SnapshotKey, StoreError, StreamId, StreamReads, StreamVersion,
};
use sqlx::Row;
use tokio::sync::mpsc;

use crate::{
    conn::ConnPool,
    error::store_error,
    rows::{EventColumns, column, decode_event_row, from_bigint},
};

const SAVE_SNAPSHOT: &str = include_str!("sql/save_snapshot.sql");
const READ_FROM_SNAPSHOT: &str = include_str!("sql/read_from_snapshot.sql");
const READ_FROM_SNAPSHOT_FOR: &str = include_str!("sql/read_from_snapshot_for.sql");

/// How many snapshots may wait to be written; more are dropped (a command
/// only gets slower without them, never wrong).
const QUEUE: usize = 1024;

/// What the snapshot writer of a store did, counted since the store was
/// connected (shared by its clones). Snapshots that are not written cost
/// only speed: commands fold from the events, or from an older snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SnapshotStats {
    /// Snapshots written.
    pub written: u64,
    /// Snapshots dropped because the queue was full.
    pub dropped_queue_full: u64,
    /// Snapshots dropped because no Tokio runtime was running to write them.
    pub dropped_no_runtime: u64,
    /// Snapshots dropped because their batch's write failed.
    pub dropped_write_failed: u64,
    /// Times the writer task was started again, its runtime having ended.
    pub writer_restarts: u64,
}

#[derive(Debug, Default)]
struct Counters {
    written: AtomicU64,
    dropped_queue_full: AtomicU64,
    dropped_no_runtime: AtomicU64,
    dropped_write_failed: AtomicU64,
    writer_restarts: AtomicU64,
    /// Whether a writer task was ever started.
    started: std::sync::atomic::AtomicBool,
}

/// Counts one more in `counter`; whether the new count is a power of two
/// (warnings about drops go out at those counts, not for every drop).
fn bump(counter: &AtomicU64) -> (u64, bool) {
    let n = counter.fetch_add(1, Relaxed) + 1;
    (n, n.is_power_of_two())
}

/// Queues snapshots and writes them after the commands that made them have
/// returned: the newest per key, each drained batch in one statement (one
/// round trip, on a connection borrowed from the store's pool), whose
/// commit does not wait for the disk (`synchronous_commit` set off for
/// that statement's transaction only). A crash may lose the last
/// snapshots; they are rebuilt from the events. Nothing is dropped without
/// a count in [`SnapshotStats`] and a `tracing` warning; a writer whose
/// runtime ended is started again on the runtime of the next offer.
#[derive(Debug)]
pub(crate) struct SnapshotWriter {
    conns: Arc<ConnPool>,
    queue: Mutex<Option<mpsc::Sender<Snapshot>>>,
    counters: Arc<Counters>,
}

impl SnapshotWriter {
    pub(crate) fn new(conns: Arc<ConnPool>) -> Self {
        SnapshotWriter {
            conns,
            queue: Mutex::new(None),
            counters: Arc::default(),
        }
    }

    /// What the writer did so far.
    pub(crate) fn stats(&self) -> SnapshotStats {
        let c = &self.counters;
        SnapshotStats {
            written: c.written.load(Relaxed),
            dropped_queue_full: c.dropped_queue_full.load(Relaxed),
            dropped_no_runtime: c.dropped_no_runtime.load(Relaxed),
            dropped_write_failed: c.dropped_write_failed.load(Relaxed),
            writer_restarts: c.writer_restarts.load(Relaxed),
        }
    }

    /// Starts the writer task on the current runtime; `None` without one.
    fn start(&self) -> Option<mpsc::Sender<Snapshot>> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let (sender, receiver) = mpsc::channel(QUEUE);
        runtime.spawn(write_loop(
            receiver,
            self.conns.clone(),
            self.counters.clone(),
        ));
        if self.counters.started.swap(true, Relaxed) {
            self.counters.writer_restarts.fetch_add(1, Relaxed);
            tracing::warn!("snapshot writer started again: its runtime had ended");
        }
        Some(sender)
    }

    /// Queues `snapshot` without waiting; counts and drops it if the queue
    /// is full or there is no Tokio runtime to write it from.
    pub(crate) fn offer(&self, snapshot: Snapshot) {
        // Held for a try_send: no await, no I/O. A panic cannot leave the
        // slot inconsistent (it holds a sender or none).
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        // None yet, or its runtime ended: start one on this runtime.
        if queue.as_ref().is_none_or(mpsc::Sender::is_closed) {
            *queue = self.start();
        }
        let sent = match queue.as_ref() {
            Some(sender) => sender.try_send(snapshot),
            None => Err(mpsc::error::TrySendError::Closed(snapshot)),
        };
        match sent {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                let (n, warn) = bump(&self.counters.dropped_queue_full);
                if warn {
                    tracing::warn!(
                        dropped = n,
                        queue = QUEUE,
                        "snapshot dropped: the writer's queue is full"
                    );
                }
            }
            // No runtime, or the one just found is shutting down.
            Err(mpsc::error::TrySendError::Closed(_)) => {
                let (n, warn) = bump(&self.counters.dropped_no_runtime);
                if warn {
                    tracing::warn!(
                        dropped = n,
                        "snapshot dropped: no Tokio runtime to write it from"
                    );
                }
            }
        }
    }
}

/// Ends when the store (the sender) is dropped and the queue is drained,
/// or with its runtime.
async fn write_loop(
    mut receiver: mpsc::Receiver<Snapshot>,
    conns: Arc<ConnPool>,
    counters: Arc<Counters>,
) {
    let mut batch: Vec<Snapshot> = Vec::new();
    while let Some(first) = receiver.recv().await {
        batch.push(first);
        while let Ok(more) = receiver.try_recv() {
            batch.push(more);
        }
        // Only the newest snapshot of each key is worth writing (and one
        // upsert may not touch a row twice).
        let mut newest: std::collections::HashMap<SnapshotKey, Snapshot> =
            std::collections::HashMap::with_capacity(batch.len());
        for snapshot in batch.drain(..) {
            newest.insert(snapshot.key().clone(), snapshot);
        }
        let n = newest.len() as u64;
        // No connection or a failed write: these snapshots are dropped;
        // commands fold from the events (or an older snapshot) until a
        // later one is written.
        match save(&conns, newest.values()).await {
            Ok(_) => {
                counters.written.fetch_add(n, Relaxed);
            }
            Err(error) => {
                let total = counters.dropped_write_failed.fetch_add(n, Relaxed) + n;
                tracing::warn!(%error, snapshots = n, dropped = total, "snapshot write failed; the snapshots are dropped");
            }
        }
    }
}

async fn save<'a>(
    conns: &ConnPool,
    snapshots: impl ExactSizeIterator<Item = &'a Snapshot>,
) -> Result<u64, StoreError> {
    let n = snapshots.len();
    let (mut names, mut keys, mut schemas, mut versions, mut states, mut streams) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for snapshot in snapshots {
        let key = snapshot.key();
        names.push(key.name());
        keys.push(key.streams_text());
        schemas.push(i64::from(snapshot.schema_version()));
        let listed: Vec<String> = snapshot
            .versions()
            .iter()
            .map(|v| v.get().to_string())
            .collect();
        versions.push(format!("{{{}}}", listed.join(",")));
        states.push(snapshot.state());
        let ids: Vec<&str> = key.streams().iter().map(StreamId::as_str).collect();
        // A list of strings always serialises; "[]" would match no event.
        streams.push(serde_json::to_string(&ids).unwrap_or_else(|_| "[]".to_owned()));
    }
    let query = sqlx::query(SAVE_SNAPSHOT)
        .bind(&names)
        .bind(&keys)
        .bind(&schemas)
        .bind(&versions)
        .bind(&states)
        .bind(&streams);
    conns.execute("save_snapshot", query).await
}

/// The snapshot filed under `key` and the events of its streams after it,
/// in one query: a row for the snapshot (if any), a row per stream with its
/// current version and the version the events start after, then the events;
/// with a command id, the command's record instead if it is recorded.
pub(crate) async fn read_from(
    conns: &ConnPool,
    key: &SnapshotKey,
    command_id: Option<&CommandId>,
) -> Result<ReadAnswer, StoreError> {
    let ids: Vec<&str> = key.streams().iter().map(StreamId::as_str).collect();
    let query = match command_id {
        None => sqlx::query(READ_FROM_SNAPSHOT),
        Some(_) => sqlx::query(READ_FROM_SNAPSHOT_FOR),
    }
    .bind(key.name())
    .bind(key.streams_text())
    .bind(&ids);
    let decoded = match command_id {
        None => {
            let rows = conns.fetch_all("read_from_snapshot", query).await?;
            decode_read_from(key, &rows)
        }
        Some(id) => {
            let rows = conns
                .fetch_all("read_from_snapshot", query.bind(id.as_str()))
                .await?;
            crate::rows::lookup(id, &rows, || decode_read_from(key, &rows))
        }
    };
    decoded.map_err(|e| store_error("read_from_snapshot", e))
}

fn decode_read_from(
    key: &SnapshotKey,
    rows: &[sqlx::postgres::PgRow],
) -> Result<ReadAnswer, sqlx::Error> {
    let streams = key.streams();
    let mut versions: Vec<(StreamId, StreamVersion)> = streams
        .iter()
        .map(|id| (id.clone(), StreamVersion::INITIAL))
        .collect();
    let mut after = vec![StreamVersion::INITIAL; streams.len()];
    let mut snapshot = None;
    let mut events = Vec::with_capacity(rows.len());
    let Some(first) = rows.first() else {
        return Ok(answer(streams, after, snapshot, versions, events));
    };
    let columns = EventColumns::of(first)?;
    let (stored_at, after_at) = (
        column(first, "out_snapshot_versions")?,
        column(first, "out_after")?,
    );
    for row in rows {
        match (columns.stream(row)?, columns.position(row)?) {
            // The snapshot's row: its schema version in `out_version`, its
            // state in `out_payload`.
            (None, _) => {
                let schema = columns.version(row)?.unwrap_or(0);
                let stored: Vec<i64> = row.try_get(stored_at)?;
                let state: String = row.try_get(column(row, "out_payload")?)?;
                snapshot = snapshot_from(key, schema, stored, state);
            }
            (Some(id), None) => {
                let current = columns.version(row)?.unwrap_or(0);
                let from: i64 = row.try_get(after_at)?;
                if let Ok(i) = streams.binary_search_by(|s| s.as_str().cmp(id)) {
                    let current = StreamVersion::new(from_bigint(current));
                    versions[i].1 = versions[i].1.max(current);
                    after[i] = StreamVersion::new(from_bigint(from));
                }
            }
            (Some(_), Some(_)) => events.push(decode_event_row(row, &columns, &mut versions)?),
        }
    }
    Ok(answer(streams, after, snapshot, versions, events))
}

fn answer(
    streams: &[StreamId],
    after: Vec<StreamVersion>,
    snapshot: Option<Snapshot>,
    versions: Vec<(StreamId, StreamVersion)>,
    events: Vec<eventcore::RecordedEvent>,
) -> ReadAnswer {
    let after = streams.iter().cloned().zip(after).collect();
    ReadAnswer::new(after, StreamReads::new(versions, events)).with_snapshot(snapshot)
}

/// A snapshot from a row's values, or none if they cannot be one.
fn snapshot_from(
    key: &SnapshotKey,
    schema: i64,
    stored: Vec<i64>,
    state: String,
) -> Option<Snapshot> {
    let schema_version = u32::try_from(schema).ok()?;
    let versions = stored
        .into_iter()
        .map(|v| u64::try_from(v).map(StreamVersion::new))
        .collect::<Result<Vec<_>, _>>()
        .ok()?;
    Some(Snapshot::new(key.clone(), schema_version, versions, state))
}
