//! Reactors and the outbox on PostgreSQL: the kit's scenarios, each
//! instance on a store value of its own as another process would be, the
//! reactor's database write made in the transaction that records its
//! effects and moves its checkpoint.

mod support;

use eventcore::{BoxError, Lane, Reaction, Reactor, SubscriptionName, Uuid};
use eventcore_postgres::{ExactlyOnce, PgReactor, PostgresEventStore, Reacting};
use eventcore_testing::{
    fixtures::LedgerEvent,
    reactors::{
        ReactorFixture, Statements, a_poison_effect_parks_while_others_are_delivered,
        outbox_claims_are_fenced, reactors_act_once_across_kills,
        reactors_in_lanes_act_once_across_kills,
    },
};
use sqlx::Row;

/// The kit's reactor, with its database write first, in the transaction.
struct Writing(Statements<PostgresEventStore>);

impl PgReactor<LedgerEvent> for Writing {
    async fn react(
        &mut self,
        tx: &mut sqlx::PgConnection,
        reaction: &mut Reaction,
        event: &LedgerEvent,
    ) -> Result<(), BoxError> {
        sqlx::query("INSERT INTO written (event_id) VALUES ($1)")
            .bind(reaction.context().recorded().event_id())
            .execute(&mut *tx)
            .await?;
        self.0.react(reaction, event).await
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
        sqlx::raw_sql("CREATE TABLE written (id bigserial PRIMARY KEY, event_id uuid NOT NULL)")
            .execute(&sql)
            .await
            .expect("the test's table");
        Postgres { schema, store, sql }
    }
}

impl ReactorFixture for Postgres {
    type Store = PostgresEventStore;
    type Handler = ExactlyOnce<Reacting<Writing>>;

    fn store(&self) -> &PostgresEventStore {
        &self.store
    }

    async fn process(&self, instance: usize) -> PostgresEventStore {
        support::store_with(
            support::config(self.schema.clone()).application_name(format!("reactor-{instance}")),
        )
        .await
    }

    fn reacting(
        &self,
        store: &PostgresEventStore,
        name: &SubscriptionName,
        reactor: Statements<PostgresEventStore>,
    ) -> Self::Handler {
        ExactlyOnce::reactor(store.clone(), name.clone(), Writing(reactor))
    }

    fn reacting_in_lanes(
        &self,
        store: &PostgresEventStore,
    ) -> impl FnMut(&Lane, Statements<PostgresEventStore>) -> Self::Handler + Send + 'static {
        let store = store.clone();
        move |lane, reactor| ExactlyOnce::reactor_in_lane(store.clone(), lane, Writing(reactor))
    }

    /// Terminates the session that holds the lease's advisory lock.
    async fn lose_lease(&self, name: &SubscriptionName) -> bool {
        support::lose_lease(&self.sql, name).await
    }

    async fn written(&self) -> Vec<Uuid> {
        sqlx::query("SELECT event_id FROM written ORDER BY id")
            .fetch_all(&self.sql)
            .await
            .expect("read the writes")
            .iter()
            .map(|row| row.get::<Uuid, _>("event_id"))
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reactors_act_once_across_kills_on_postgres() {
    reactors_act_once_across_kills(&Postgres::new().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_poison_effect_parks_while_others_are_delivered_on_postgres() {
    a_poison_effect_parks_while_others_are_delivered(&Postgres::new().await).await;
}

#[tokio::test]
async fn outbox_claims_are_fenced_on_postgres() {
    outbox_claims_are_fenced(&Postgres::new().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reactors_in_lanes_act_once_across_kills_on_postgres() {
    reactors_in_lanes_act_once_across_kills(&Postgres::new().await).await;
}
