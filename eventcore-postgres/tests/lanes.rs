//! Lanes and dead letters on PostgreSQL: the kit's scenarios, each instance
//! on a store value of its own as another process would be (its own
//! sessions and leases, ended with it when it is killed), the exactly-once
//! projection recording each application in a table, in its transaction.

mod support;

use eventcore::{BoxError, EventContext, Lane, Uuid};
use eventcore_postgres::{ExactlyOnce, PostgresEventStore, ProjectionHandler};
use eventcore_testing::{
    fixtures::LedgerEvent,
    lanes::{
        Application, LanesFixture, a_poison_event_parks_only_its_key, dead_letters_are_fenced,
        lanes_share_the_work_across_kills,
    },
};
use sqlx::Row;

/// Records the application in `applied`, in the projection's transaction.
struct Record {
    lane: String,
}

impl ProjectionHandler<LedgerEvent> for Record {
    async fn handle(
        &mut self,
        tx: &mut sqlx::PgConnection,
        context: &EventContext,
        _: &LedgerEvent,
    ) -> Result<(), BoxError> {
        sqlx::query("INSERT INTO applied (event_id, lane) VALUES ($1, $2)")
            .bind(context.recorded().event_id())
            .bind(self.lane.as_str())
            .execute(&mut *tx)
            .await?;
        Ok(())
    }
}

struct Postgres {
    schema: eventcore_postgres::SchemaName,
    store: PostgresEventStore,
    sql: sqlx::PgPool,
}

impl Postgres {
    async fn new() -> Self {
        let schema = support::unique_schema();
        let store = support::store_with(support::config(schema.clone())).await;
        let sql = support::sql(&store);
        sqlx::raw_sql(
            "CREATE TABLE applied (
                 id bigserial PRIMARY KEY, event_id uuid NOT NULL, lane text NOT NULL)",
        )
        .execute(&sql)
        .await
        .expect("the test's table");
        Postgres { schema, store, sql }
    }
}

impl LanesFixture for Postgres {
    type Store = PostgresEventStore;
    type Projection = ExactlyOnce<Record>;

    fn store(&self) -> &PostgresEventStore {
        &self.store
    }

    async fn process(&self, instance: usize) -> PostgresEventStore {
        support::store_with(
            support::config(self.schema.clone()).application_name(format!("lanes-{instance}")),
        )
        .await
    }

    fn projector(
        &self,
        store: &PostgresEventStore,
    ) -> impl FnMut(&Lane) -> ExactlyOnce<Record> + Send + 'static {
        let store = store.clone();
        move |lane: &Lane| {
            let record = Record {
                lane: lane.name().to_string(),
            };
            ExactlyOnce::new(store.clone(), lane.name().clone(), record)
        }
    }

    async fn applied(&self) -> Vec<Application> {
        sqlx::query("SELECT event_id, lane FROM applied ORDER BY id")
            .fetch_all(&self.sql)
            .await
            .expect("read the applications")
            .iter()
            .map(|row| Application {
                event_id: row.get::<Uuid, _>("event_id"),
                lane: row.get("lane"),
            })
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lanes_share_the_work_across_kills_on_postgres() {
    lanes_share_the_work_across_kills(&Postgres::new().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_poison_event_parks_only_its_key_on_postgres() {
    a_poison_event_parks_only_its_key(&Postgres::new().await).await;
}

#[tokio::test]
async fn dead_letters_are_fenced_on_postgres() {
    dead_letters_are_fenced(&support::fresh_store().await).await;
}
