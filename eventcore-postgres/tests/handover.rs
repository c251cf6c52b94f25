//! Exactly once across lease handovers on PostgreSQL: the kit's scenario
//! (slow and fast handlers, many handovers, a stale holder), each instance
//! on a store value of its own as another process would be, the lease
//! ended by terminating the holder's session with `pg_terminate_backend`,
//! and every write to the checkpoint recorded by a trigger.

mod support;

use std::{collections::HashMap, time::Duration};

use eventcore::{
    BoxError, EventContext, Position, SubscriptionConfig, SubscriptionHandle, SubscriptionName,
    Uuid, subscribe,
};
use eventcore_postgres::{ExactlyOnce, PostgresEventStore, ProjectionHandler};
use eventcore_testing::{
    fixtures::LedgerEvent,
    handover::{Handover, HandoverPlan, Pace, exactly_once_across_handovers},
};
use sqlx::Row;

/// Adds one to the event's count in `applied`, in the projection's
/// transaction, after spending the pace's time in it.
struct Count {
    pace: Pace,
    first: bool,
}

impl ProjectionHandler<LedgerEvent> for Count {
    async fn handle(
        &mut self,
        tx: &mut sqlx::PgConnection,
        context: &EventContext,
        _: &LedgerEvent,
    ) -> Result<(), BoxError> {
        sqlx::query(
            "INSERT INTO applied (event_id, n) VALUES ($1, 1)
             ON CONFLICT (event_id) DO UPDATE SET n = applied.n + 1",
        )
        .bind(context.recorded().event_id())
        .execute(&mut *tx)
        .await?;
        let mut wait = self.pace.per_event;
        if std::mem::take(&mut self.first) {
            wait += self.pace.first_event;
        }
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        Ok(())
    }
}

/// The double application of issue 14, seeded: a projection that commits
/// its effect and its checkpoint in one transaction, but never asks
/// whether it still holds the lease (nor where the checkpoint stands), so
/// a holder that lost its lease mid-page commits events its successor has
/// applied already.
struct Unleased {
    pool: sqlx::PgPool,
    name: SubscriptionName,
    pace: Pace,
    first: bool,
}

impl eventcore::Handler<LedgerEvent> for Unleased {
    async fn handle(&mut self, context: &EventContext, _: &LedgerEvent) -> Result<(), BoxError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO applied (event_id, n) VALUES ($1, 1)
             ON CONFLICT (event_id) DO UPDATE SET n = applied.n + 1",
        )
        .bind(context.recorded().event_id())
        .execute(&mut *tx)
        .await?;
        if std::mem::take(&mut self.first) {
            tokio::time::sleep(self.pace.first_event).await;
        }
        let at = context.position();
        sqlx::query(
            "INSERT INTO eventcore_checkpoints AS c (name, commit_id, sequence) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE
             SET commit_id = EXCLUDED.commit_id, sequence = EXCLUDED.sequence, updated_at = now()
             WHERE (c.commit_id, c.sequence) < (EXCLUDED.commit_id, EXCLUDED.sequence)",
        )
        .bind(self.name.as_ref())
        .bind(i64::try_from(at.commit())?)
        .bind(i64::try_from(at.sequence())?)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

struct Postgres {
    schema: eventcore_postgres::SchemaName,
    store: PostgresEventStore,
    sql: sqlx::PgPool,
    /// Whether instances run the seeded [`Unleased`] projection.
    unleased: bool,
}

impl Postgres {
    async fn unleased() -> Self {
        Postgres {
            unleased: true,
            ..Self::new().await
        }
    }

    async fn new() -> Self {
        let schema = support::unique_schema();
        let store = support::store_with(support::config(schema.clone())).await;
        let sql = support::sql(&store);
        sqlx::raw_sql(
            "CREATE TABLE applied (event_id uuid PRIMARY KEY, n bigint NOT NULL);
             CREATE TABLE checkpoint_writes (
                 id bigserial PRIMARY KEY, name text NOT NULL,
                 from_commit bigint, from_sequence bigint,
                 to_commit bigint NOT NULL, to_sequence bigint NOT NULL);
             CREATE FUNCTION record_checkpoint_write() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 IF TG_OP = 'INSERT' THEN
                     INSERT INTO checkpoint_writes (name, to_commit, to_sequence)
                     VALUES (NEW.name, NEW.commit_id, NEW.sequence);
                 ELSIF (OLD.commit_id, OLD.sequence) IS DISTINCT FROM (NEW.commit_id, NEW.sequence) THEN
                     INSERT INTO checkpoint_writes (name, from_commit, from_sequence, to_commit, to_sequence)
                     VALUES (NEW.name, OLD.commit_id, OLD.sequence, NEW.commit_id, NEW.sequence);
                 END IF;
                 RETURN NEW;
             END $$;
             CREATE TRIGGER record_checkpoint_writes AFTER INSERT OR UPDATE ON eventcore_checkpoints
             FOR EACH ROW EXECUTE FUNCTION record_checkpoint_write();",
        )
        .execute(&sql)
        .await
        .expect("the test's tables");
        Postgres {
            schema,
            store,
            sql,
            unleased: false,
        }
    }
}

fn position(commit: i64, sequence: i64) -> Position {
    Position::new(
        u64::try_from(commit).expect("a position part"),
        u64::try_from(sequence).expect("a position part"),
    )
}

impl Handover for Postgres {
    type Store = PostgresEventStore;

    fn store(&self) -> &PostgresEventStore {
        &self.store
    }

    async fn start(
        &self,
        instance: usize,
        name: &SubscriptionName,
        pace: Pace,
        page_size: usize,
    ) -> SubscriptionHandle {
        // Another process: its own connections, sessions and cache.
        let process = support::store_with(
            support::config(self.schema.clone()).application_name(format!("handover-{instance}")),
        )
        .await;
        let config = SubscriptionConfig::default()
            .with_page_size(page_size)
            .with_poll_interval(Duration::from_millis(10));
        if self.unleased {
            let handler = Unleased {
                pool: support::sql(&process),
                name: name.clone(),
                pace,
                first: true,
            };
            return subscribe(process.clone(), process, name.clone(), handler, config);
        }
        let handler = ExactlyOnce::new(process.clone(), name.clone(), Count { pace, first: true });
        subscribe(process.clone(), process, name.clone(), handler, config)
    }

    /// Terminates the session that holds the lease's advisory lock.
    async fn lose_lease(&self, name: &SubscriptionName) -> bool {
        support::lose_lease(&self.sql, name).await
    }

    async fn applied(&self) -> HashMap<Uuid, u64> {
        sqlx::query("SELECT event_id, n FROM applied")
            .fetch_all(&self.sql)
            .await
            .expect("read the counts")
            .iter()
            .map(|row| {
                let n: i64 = row.get(1);
                (row.get(0), u64::try_from(n).expect("a count"))
            })
            .collect()
    }

    async fn checkpoint_writes(
        &self,
        name: &SubscriptionName,
    ) -> Vec<(Option<Position>, Position)> {
        sqlx::query(
            "SELECT from_commit, from_sequence, to_commit, to_sequence FROM checkpoint_writes
             WHERE name = $1 ORDER BY id",
        )
        .bind(name.as_ref())
        .fetch_all(&self.sql)
        .await
        .expect("read the checkpoint's writes")
        .iter()
        .map(|row| {
            let from = match (row.get::<Option<i64>, _>(0), row.get::<Option<i64>, _>(1)) {
                (Some(c), Some(s)) => Some(position(c, s)),
                _ => None,
            };
            (from, position(row.get(2), row.get(3)))
        })
        .collect()
    }

    async fn checkpoint(&self, name: &SubscriptionName) -> Option<Position> {
        eventcore::CheckpointStore::load(&self.store, name)
            .await
            .expect("load the checkpoint")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_fast_handovers_apply_every_event_once() {
    exactly_once_across_handovers(&Postgres::new().await, HandoverPlan::many_fast_handovers())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_handover_applies_every_event_once() {
    exactly_once_across_handovers(&Postgres::new().await, HandoverPlan::one_slow_handover()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stale_holder_commits_nothing() {
    exactly_once_across_handovers(&Postgres::new().await, HandoverPlan::stale_holder()).await;
}

/// The scenario catches a projection that commits after its lease was
/// lost: the stale holder's slow first event lands after its successor
/// applied it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_projection_that_commits_after_losing_its_lease_is_caught() {
    let fixture = Postgres::unleased().await;
    let caught = tokio::spawn(async move {
        exactly_once_across_handovers(&fixture, HandoverPlan::stale_holder()).await;
    })
    .await;
    let panic = caught.expect_err("the scenario passed a projection that ignores its lease");
    let message = panic
        .into_panic()
        .downcast::<String>()
        .map(|m| *m)
        .unwrap_or_default();
    assert!(
        message.contains("applied more than once"),
        "caught for another reason: {message}"
    );
}
