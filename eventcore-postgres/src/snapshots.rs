//! Snapshots of declared command states: loaded on a command's path,
//! saved off it by a task of the store's own.

use std::sync::{Arc, OnceLock};

use eventcore::{
    CommandId, CommandLookup, Snapshot, SnapshotKey, SnapshotRead, StoreError, StreamId,
    StreamReads, StreamVersion,
};
use sqlx::Row;
use tokio::sync::mpsc;

use crate::{conn::ConnPool, error::store_error};

const LOAD_SNAPSHOT: &str = include_str!("sql/load_snapshot.sql");
const SAVE_SNAPSHOT: &str = include_str!("sql/save_snapshot.sql");
const READ_FROM_SNAPSHOT: &str = include_str!("sql/read_from_snapshot.sql");
const READ_FROM_SNAPSHOT_FOR: &str = include_str!("sql/read_from_snapshot_for.sql");

/// How many snapshots may wait to be written; more are dropped (a command
/// only gets slower without them, never wrong).
const QUEUE: usize = 1024;

/// Queues snapshots and writes them after the commands that made them have
/// returned: the newest per key, each drained batch in one statement (one
/// round trip, on a connection borrowed from the store's pool), whose
/// commit does not wait for the disk (`synchronous_commit` set off for
/// that statement's transaction only). A crash may lose the last
/// snapshots; they are rebuilt from the events.
#[derive(Debug)]
pub(crate) struct SnapshotWriter {
    conns: Arc<ConnPool>,
    queue: OnceLock<Option<mpsc::Sender<Snapshot>>>,
}

impl SnapshotWriter {
    pub(crate) fn new(conns: Arc<ConnPool>) -> Self {
        SnapshotWriter {
            conns,
            queue: OnceLock::new(),
        }
    }

    /// Queues `snapshot` without waiting; drops it if the queue is full or
    /// there is no Tokio runtime to write it from.
    pub(crate) fn offer(&self, snapshot: Snapshot) {
        let queue = self.queue.get_or_init(|| {
            let runtime = tokio::runtime::Handle::try_current().ok()?;
            let (sender, receiver) = mpsc::channel(QUEUE);
            runtime.spawn(write_loop(receiver, self.conns.clone()));
            Some(sender)
        });
        if let Some(queue) = queue {
            // Full: this snapshot is dropped; a later one replaces it.
            let _ = queue.try_send(snapshot);
        }
    }
}

/// Ends when the store (the sender) is dropped and the queue is drained.
async fn write_loop(mut receiver: mpsc::Receiver<Snapshot>, conns: Arc<ConnPool>) {
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
        // No connection or a failed write: these snapshots are dropped;
        // commands fold from the events (or an older snapshot) until a
        // later one is written.
        let _ = save(&conns, newest.values()).await;
    }
}

async fn save<'a>(
    conns: &ConnPool,
    snapshots: impl ExactSizeIterator<Item = &'a Snapshot>,
) -> Result<u64, StoreError> {
    let n = snapshots.len();
    let (mut names, mut keys, mut schemas, mut versions, mut states) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for snapshot in snapshots {
        let key = snapshot.key();
        names.push(key.name());
        keys.push(key.fields_and_streams());
        schemas.push(i64::from(snapshot.schema_version()));
        let listed: Vec<String> = snapshot
            .versions()
            .iter()
            .map(|v| v.get().to_string())
            .collect();
        versions.push(format!("{{{}}}", listed.join(",")));
        states.push(snapshot.state());
    }
    let query = sqlx::query(SAVE_SNAPSHOT)
        .bind(&names)
        .bind(&keys)
        .bind(&schemas)
        .bind(&versions)
        .bind(&states);
    conns.execute("save_snapshot", query).await
}

/// The snapshot filed under `key` and the events of its streams after it,
/// in one query: a row for the snapshot (if any), a row per stream with its
/// current version and the version the events start after, then the events.
pub(crate) async fn read_from(
    conns: &ConnPool,
    key: &SnapshotKey,
) -> Result<SnapshotRead, StoreError> {
    let ids: Vec<&str> = key.streams().iter().map(StreamId::as_str).collect();
    let rows = conns
        .fetch_all(
            "read_from_snapshot",
            sqlx::query(READ_FROM_SNAPSHOT)
                .bind(key.name())
                .bind(key.fields_and_streams())
                .bind(&ids),
        )
        .await?;
    decode_read_from(key, &rows).map_err(|e| store_error("read_from_snapshot", e))
}

/// As [`read_from`], unless the command id is recorded: one query.
pub(crate) async fn read_from_for(
    conns: &ConnPool,
    command_id: &CommandId,
    key: &SnapshotKey,
) -> Result<CommandLookup<SnapshotRead>, StoreError> {
    let ids: Vec<&str> = key.streams().iter().map(StreamId::as_str).collect();
    let rows = conns
        .fetch_all(
            "read_from_snapshot",
            sqlx::query(READ_FROM_SNAPSHOT_FOR)
                .bind(key.name())
                .bind(key.fields_and_streams())
                .bind(&ids)
                .bind(command_id.as_str()),
        )
        .await?;
    crate::store::lookup(command_id, &rows, 13, || decode_read_from(key, &rows))
        .map_err(|e| store_error("read_from_snapshot", e))
}

fn decode_read_from(
    key: &SnapshotKey,
    rows: &[sqlx::postgres::PgRow],
) -> Result<SnapshotRead, sqlx::Error> {
    let streams = key.streams();
    let mut versions: Vec<(StreamId, StreamVersion)> = streams
        .iter()
        .map(|id| (id.clone(), StreamVersion::INITIAL))
        .collect();
    let mut after = vec![StreamVersion::INITIAL; streams.len()];
    let mut snapshot = None;
    let mut events = Vec::with_capacity(rows.len());
    for row in rows {
        let stream: Option<&str> = row.try_get(0)?;
        let position: Option<i64> = row.try_get(2)?;
        match (stream, position) {
            (None, _) => {
                let schema: i64 = row.try_get(1)?;
                let stored: Vec<i64> = row.try_get(11)?;
                let state: String = row.try_get(4)?;
                snapshot = snapshot_from(key, schema, stored, state);
            }
            (Some(id), None) => {
                let current: i64 = row.try_get(1)?;
                let from: i64 = row.try_get(12)?;
                if let Ok(i) = streams.binary_search_by(|s| s.as_str().cmp(id)) {
                    let current = StreamVersion::new(u64::try_from(current).unwrap_or(0));
                    versions[i].1 = versions[i].1.max(current);
                    after[i] = StreamVersion::new(u64::try_from(from).unwrap_or(0));
                }
            }
            (Some(_), Some(_)) => events.push(crate::store::decode_event_row(row, &mut versions)?),
        }
    }
    Ok(SnapshotRead::new(
        snapshot,
        after,
        StreamReads::new(versions, events),
    ))
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

/// The snapshot filed under `key`, as stored. A row that cannot be a
/// snapshot of this key (a schema version or version out of range) is
/// returned as none: the command folds from the events instead.
pub(crate) async fn load(
    conns: &ConnPool,
    key: &SnapshotKey,
) -> Result<Option<Snapshot>, StoreError> {
    let load = sqlx::query(LOAD_SNAPSHOT)
        .bind(key.name())
        .bind(key.fields_and_streams());
    let rows = conns.fetch_all("load_snapshot", load).await?;
    let Some(row) = rows.first() else {
        return Ok(None);
    };
    let decoded = (|| -> Result<Option<Snapshot>, sqlx::Error> {
        Ok(snapshot_from(
            key,
            row.try_get(0)?,
            row.try_get(1)?,
            row.try_get(2)?,
        ))
    })();
    decoded.map_err(|e| store_error("load_snapshot", e))
}
