//! Lanes and dead letters on SQLite: the kit's scenarios, each instance on
//! a store value of its own opened on the same file, as another process
//! would be (its own writer, connections and lock files, ended with it when
//! it is killed), the exactly-once projection recording each application
//! in a table, in its transaction.

mod support;

use std::path::PathBuf;

use eventcore::{BoxError, EventContext, Lane, Uuid};
use eventcore_sqlite::{ExactlyOnce, SqliteConfig, SqliteEventStore, SqliteProjection};
use eventcore_testing::{
    fixtures::LedgerEvent,
    lanes::{
        Application, LanesFixture, a_poison_event_parks_only_its_key, dead_letters_are_fenced,
        lanes_share_the_work_across_kills,
    },
};

/// Records the application in `applied`, in the projection's transaction.
struct Record {
    lane: String,
}

impl SqliteProjection<LedgerEvent> for Record {
    fn apply(
        &mut self,
        tx: &rusqlite::Transaction<'_>,
        context: &EventContext,
        _: &LedgerEvent,
    ) -> Result<(), BoxError> {
        tx.execute(
            "INSERT INTO applied (event_id, lane) VALUES (?1, ?2)",
            [context.recorded().event_id().to_string(), self.lane.clone()],
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
            .execute_batch(
                "CREATE TABLE applied (
                     id INTEGER PRIMARY KEY, event_id TEXT NOT NULL, lane TEXT NOT NULL)",
            )
            .expect("the test's table");
        Sqlite { path, store }
    }
}

impl LanesFixture for Sqlite {
    type Store = SqliteEventStore;
    type Projection = ExactlyOnce<Record>;

    fn store(&self) -> &SqliteEventStore {
        &self.store
    }

    async fn process(&self, _instance: usize) -> SqliteEventStore {
        SqliteEventStore::open(&self.path, SqliteConfig::default())
            .await
            .expect("open the file again")
    }

    fn projector(
        &self,
        store: &SqliteEventStore,
    ) -> impl FnMut(&Lane) -> ExactlyOnce<Record> + Send + 'static {
        let store = store.clone();
        move |lane: &Lane| {
            let record = Record {
                lane: lane.name().to_string(),
            };
            ExactlyOnce::new(&store, lane.name().clone(), record)
                .expect("open the projection's connection")
        }
    }

    async fn applied(&self) -> Vec<Application> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let c = rusqlite::Connection::open(path).expect("open");
            let mut query = c
                .prepare("SELECT event_id, lane FROM applied ORDER BY id")
                .expect("prepare");
            query
                .query_map([], |row| {
                    let id: String = row.get(0)?;
                    Ok(Application {
                        event_id: Uuid::parse_str(&id).expect("an event id"),
                        lane: row.get(1)?,
                    })
                })
                .expect("read the applications")
                .collect::<rusqlite::Result<Vec<_>>>()
                .expect("rows")
        })
        .await
        .expect("the read")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lanes_share_the_work_across_kills_on_sqlite() {
    lanes_share_the_work_across_kills(&Sqlite::new().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_poison_event_parks_only_its_key_on_sqlite() {
    a_poison_event_parks_only_its_key(&Sqlite::new().await).await;
}

#[tokio::test]
async fn dead_letters_are_fenced_on_sqlite() {
    dead_letters_are_fenced(&support::fresh_store().await).await;
}
