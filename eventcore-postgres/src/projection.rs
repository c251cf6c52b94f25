//! Exactly-once projections into the same PostgreSQL database.
//!
//! A subscription's handler normally runs at least once per event: if the
//! process dies after handling an event and before the checkpoint is saved,
//! the event is handled again. When the read model lives in the same
//! database, [`ExactlyOnce`] closes that gap: each event is handled in a
//! transaction that also saves the checkpoint, so the read model and the
//! checkpoint move together or not at all. A handler that fails, or a
//! process that dies mid-event, leaves neither changed; the retry starts
//! from a clean slate.
//!
//! ```no_run
//! use eventcore::{BoxError, EventContext, SubscriptionConfig, SubscriptionName, subscribe};
//! use eventcore_postgres::{ExactlyOnce, PostgresEventStore, ProjectionHandler};
//! use sqlx::PgConnection;
//!
//! struct Totals;
//!
//! impl ProjectionHandler<serde_json::Value> for Totals {
//!     async fn handle(&mut self, tx: &mut PgConnection, _: &EventContext, _: &serde_json::Value) -> Result<(), BoxError> {
//!         sqlx::query("UPDATE totals SET events = events + 1").execute(tx).await?;
//!         Ok(())
//!     }
//! }
//!
//! # async fn demo(store: PostgresEventStore) {
//! let name = SubscriptionName::try_new("totals").unwrap();
//! let handler = ExactlyOnce::new(store.clone(), name.clone(), Totals);
//! let handle = subscribe(store.clone(), store, name, handler, SubscriptionConfig::default());
//! # }
//! ```

use eventcore::{BoxError, EventContext, Handler, SubscriptionName};
use sqlx::{Acquire, PgConnection};

use crate::PostgresEventStore;

const SAVE: &str = include_str!("sql/save_checkpoint.sql");

/// Handles one event inside the transaction that will also save the
/// subscription's checkpoint.
pub trait ProjectionHandler<E>: Send + 'static {
    /// Applies `event` to the read model through `tx`. Returning an error
    /// rolls back everything done through `tx` for this event.
    fn handle(
        &mut self,
        tx: &mut PgConnection,
        context: &EventContext,
        event: &E,
    ) -> impl std::future::Future<Output = Result<(), BoxError>> + Send;
}

/// Turns a [`ProjectionHandler`] into a subscription [`Handler`] that
/// applies each event exactly once: one transaction per event holds the
/// handler's writes and the checkpoint.
#[derive(Debug)]
pub struct ExactlyOnce<H> {
    store: PostgresEventStore,
    name: SubscriptionName,
    inner: H,
}

impl<H> ExactlyOnce<H> {
    /// Wraps `inner` for subscription `name` (use the same name in
    /// [`subscribe`](eventcore::subscribe), with this store as the
    /// checkpoint store).
    pub fn new(store: PostgresEventStore, name: SubscriptionName, inner: H) -> Self {
        ExactlyOnce { store, name, inner }
    }
}

impl<E, H> Handler<E> for ExactlyOnce<H>
where
    E: Sync,
    H: ProjectionHandler<E>,
{
    async fn handle(&mut self, context: &EventContext, event: &E) -> Result<(), BoxError> {
        let position = context.position();
        let commit = i64::try_from(position.commit())?;
        let sequence = i64::try_from(position.sequence())?;
        let mut lease = self.store.conns().get("projection").await?;
        let mut tx = lease.conn().begin().await?;
        self.inner.handle(&mut tx, context, event).await?;
        sqlx::query(SAVE)
            .bind(self.name.as_ref())
            .bind(commit)
            .bind(sequence)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        // Only a transaction that committed leaves the connection in a known
        // state; after any error above the lease drops it.
        lease.settle(&Ok::<(), sqlx::Error>(()));
        Ok(())
    }
}
