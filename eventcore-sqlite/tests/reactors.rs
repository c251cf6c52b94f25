//! Reactors and the outbox on SQLite: the kit's scenarios, each instance
//! on a store value of its own as another process would be (its own
//! writer, connections and lease files), the reactor's database write made
//! in the transaction that records its effects and moves its checkpoint,
//! the lease ended by deleting its lock file.

mod support;

use std::{path::PathBuf, time::Duration};

use eventcore::{BoxError, EventContext, Lane, SubscriptionName, Uuid};
use eventcore_sqlite::{Reacting, SqliteConfig, SqliteEventStore, SqliteProjection};
use eventcore_testing::{
    fixtures::LedgerEvent,
    reactors::{
        ReactorFixture, Statements, a_poison_effect_parks_while_others_are_delivered,
        outbox_claims_are_fenced, reactors_act_once_across_kills,
        reactors_in_lanes_act_once_across_kills,
    },
};

/// The reactor's database write: the event's id, in the transaction.
struct Write;

impl SqliteProjection<LedgerEvent> for Write {
    fn apply(
        &mut self,
        tx: &rusqlite::Transaction<'_>,
        context: &EventContext,
        _: &LedgerEvent,
    ) -> Result<(), BoxError> {
        tx.execute(
            "INSERT INTO written (event_id) VALUES (?1)",
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
            .expect("open for the test's table")
            .execute_batch("CREATE TABLE written (id INTEGER PRIMARY KEY, event_id TEXT NOT NULL)")
            .expect("the test's table");
        Sqlite { path, store }
    }
}

impl ReactorFixture for Sqlite {
    type Store = SqliteEventStore;
    type Handler = Reacting<Statements<SqliteEventStore>, Write>;

    fn store(&self) -> &SqliteEventStore {
        &self.store
    }

    async fn process(&self, _instance: usize) -> SqliteEventStore {
        SqliteEventStore::open(&self.path, SqliteConfig::default())
            .await
            .expect("open as another process")
    }

    fn reacting(
        &self,
        store: &SqliteEventStore,
        name: &SubscriptionName,
        reactor: Statements<SqliteEventStore>,
    ) -> Self::Handler {
        Reacting::new(store, name.clone(), reactor)
            .expect("the reactor's connection")
            .with_writes(Write)
    }

    fn reacting_in_lanes(
        &self,
        store: &SqliteEventStore,
    ) -> impl FnMut(&Lane, Statements<SqliteEventStore>) -> Self::Handler + Send + 'static {
        let store = store.clone();
        move |lane, reactor| {
            Reacting::in_lane(&store, lane, reactor)
                .expect("the reactor's connection")
                .with_writes(Write)
        }
    }

    /// Deletes the lease's lock file, as its holder's death would free it.
    async fn lose_lease(&self, name: &SubscriptionName) -> bool {
        std::fs::remove_file(self.store.lease_file(name)).is_ok()
    }

    async fn written(&self) -> Vec<Uuid> {
        let c = rusqlite::Connection::open(&self.path).expect("open");
        c.busy_timeout(Duration::from_secs(10))
            .expect("busy timeout");
        let mut query = c
            .prepare("SELECT event_id FROM written ORDER BY id")
            .expect("prepare");
        query
            .query_map([], |row| row.get::<_, String>(0))
            .expect("read the writes")
            .map(|id| Uuid::parse_str(&id.expect("a row")).expect("an event id"))
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reactors_act_once_across_kills_on_sqlite() {
    reactors_act_once_across_kills(&Sqlite::new().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_poison_effect_parks_while_others_are_delivered_on_sqlite() {
    a_poison_effect_parks_while_others_are_delivered(&Sqlite::new().await).await;
}

#[tokio::test]
async fn outbox_claims_are_fenced_on_sqlite() {
    outbox_claims_are_fenced(&Sqlite::new().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reactors_in_lanes_act_once_across_kills_on_sqlite() {
    reactors_in_lanes_act_once_across_kills(&Sqlite::new().await).await;
}
