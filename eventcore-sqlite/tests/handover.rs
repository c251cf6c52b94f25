//! Exactly once across lease handovers on SQLite: the kit's scenario (slow
//! and fast handlers, many handovers, a stale holder), each instance on a
//! store value of its own as another process would be, the lease ended by
//! deleting its lock file, and every write to the checkpoint recorded by a
//! trigger.

mod support;

use std::{collections::HashMap, path::PathBuf, time::Duration};

use eventcore::{
    BoxError, EventContext, Position, SubscriptionConfig, SubscriptionHandle, SubscriptionName,
    Uuid, subscribe,
};
use eventcore_sqlite::{ExactlyOnce, SqliteConfig, SqliteEventStore, SqliteProjection};
use eventcore_testing::{
    fixtures::LedgerEvent,
    handover::{Handover, HandoverPlan, Pace, Paced, exactly_once_across_handovers},
};

/// Adds one to the event's count in `applied`, in the projection's
/// transaction.
struct Count;

impl SqliteProjection<LedgerEvent> for Count {
    fn apply(
        &mut self,
        tx: &rusqlite::Transaction<'_>,
        context: &EventContext,
        _: &LedgerEvent,
    ) -> Result<(), BoxError> {
        tx.execute(
            "INSERT INTO applied (event_id, n) VALUES (?1, 1) \
             ON CONFLICT (event_id) DO UPDATE SET n = n + 1",
            [context.recorded().event_id().to_string()],
        )?;
        Ok(())
    }
}

struct Sqlite {
    path: PathBuf,
    store: SqliteEventStore,
}

impl Sqlite {
    async fn new() -> Self {
        let path = support::fresh_path();
        let store = SqliteEventStore::open(&path, SqliteConfig::default())
            .await
            .expect("open");
        rusqlite::Connection::open(&path)
            .expect("open for the test's tables")
            .execute_batch(
                "CREATE TABLE applied (event_id TEXT PRIMARY KEY, n INTEGER NOT NULL);
                 CREATE TABLE checkpoint_writes (
                     id INTEGER PRIMARY KEY, name TEXT NOT NULL,
                     from_sequence INTEGER, to_sequence INTEGER NOT NULL);
                 CREATE TRIGGER record_checkpoint_insert AFTER INSERT ON eventcore_checkpoints
                 BEGIN
                     INSERT INTO checkpoint_writes (name, to_sequence) VALUES (NEW.name, NEW.sequence);
                 END;
                 CREATE TRIGGER record_checkpoint_update AFTER UPDATE ON eventcore_checkpoints
                 WHEN OLD.sequence IS NOT NEW.sequence
                 BEGIN
                     INSERT INTO checkpoint_writes (name, from_sequence, to_sequence)
                     VALUES (NEW.name, OLD.sequence, NEW.sequence);
                 END;",
            )
            .expect("the test's tables");
        Sqlite { path, store }
    }

    fn sql(&self) -> rusqlite::Connection {
        let c = rusqlite::Connection::open(&self.path).expect("open");
        c.busy_timeout(Duration::from_secs(10))
            .expect("busy timeout");
        c
    }
}

impl Handover for Sqlite {
    type Store = SqliteEventStore;

    fn store(&self) -> &SqliteEventStore {
        &self.store
    }

    async fn start(
        &self,
        _instance: usize,
        name: &SubscriptionName,
        pace: Pace,
        page_size: usize,
    ) -> SubscriptionHandle {
        // Another process: its own writer, connections and lease files.
        let process = SqliteEventStore::open(&self.path, SqliteConfig::default())
            .await
            .expect("open as another process");
        let inner = ExactlyOnce::new(&process, name.clone(), Count).expect("projection");
        let handler = Paced::new(pace, inner);
        let config = SubscriptionConfig::default()
            .with_page_size(page_size)
            .with_poll_interval(Duration::from_millis(10));
        subscribe(process.clone(), process, name.clone(), handler, config)
    }

    /// Deletes the lease's lock file, as its holder's death would free it.
    async fn lose_lease(&self, name: &SubscriptionName) -> bool {
        std::fs::remove_file(self.store.lease_file(name)).is_ok()
    }

    async fn applied(&self) -> HashMap<Uuid, u64> {
        let c = self.sql();
        let mut rows = c.prepare("SELECT event_id, n FROM applied").expect("query");
        rows.query_map([], |row| {
            let id: String = row.get(0)?;
            let n: i64 = row.get(1)?;
            Ok((
                Uuid::parse_str(&id).expect("an id"),
                u64::try_from(n).expect("a count"),
            ))
        })
        .expect("read the counts")
        .collect::<Result<_, _>>()
        .expect("read the counts")
    }

    async fn checkpoint_writes(
        &self,
        name: &SubscriptionName,
    ) -> Vec<(Option<Position>, Position)> {
        let c = self.sql();
        let mut rows = c
            .prepare("SELECT from_sequence, to_sequence FROM checkpoint_writes WHERE name = ?1 ORDER BY id")
            .expect("query");
        let at = |s: i64| Position::new(0, u64::try_from(s).expect("a position"));
        rows.query_map([name.as_ref()], |row| {
            Ok((row.get::<_, Option<i64>>(0)?.map(at), at(row.get(1)?)))
        })
        .expect("read the writes")
        .collect::<Result<_, _>>()
        .expect("read the writes")
    }

    async fn checkpoint(&self, name: &SubscriptionName) -> Option<Position> {
        eventcore::CheckpointStore::load(&self.store, name)
            .await
            .expect("load the checkpoint")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_fast_handovers_apply_every_event_once() {
    exactly_once_across_handovers(&Sqlite::new().await, HandoverPlan::many_fast_handovers()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_handover_applies_every_event_once() {
    exactly_once_across_handovers(&Sqlite::new().await, HandoverPlan::one_slow_handover()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stale_holder_commits_nothing() {
    exactly_once_across_handovers(&Sqlite::new().await, HandoverPlan::stale_holder()).await;
}
