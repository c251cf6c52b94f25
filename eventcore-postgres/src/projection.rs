//! Exactly-once projections into the same PostgreSQL database.
//!
//! A subscription's handler normally runs at least once per event: if the
//! process dies after handling an event and before the checkpoint is saved,
//! the event is handled again. When the read model lives in the same
//! database, [`ExactlyOnce`] closes that gap: each event is handled in a
//! transaction that runs the handler, then moves the checkpoint to the
//! event, fenced by the subscription lease's token, so the read model and
//! the checkpoint move together or not at all:
//!
//! - a handler that fails, or a process that dies mid-event, leaves
//!   neither changed; the retry starts from a clean slate;
//! - an instance that lost its lease (its session died, another instance
//!   took over) commits nothing more: its transaction finds a newer token
//!   and rolls back with [`StoreError::LeaseLost`](eventcore::StoreError::LeaseLost),
//!   and the instance goes back to waiting;
//! - an event the checkpoint has already passed (applied by a former
//!   holder, or by this one before a lost commit reply) is not applied
//!   again: the checkpoint only moves forward, and a transaction that would
//!   not move it rolls back.
//! - an event handed over again from a dead letter (see
//!   [`DeadLetters`](eventcore::DeadLetters)) moves the letter's replay mark
//!   instead of the checkpoint, in the same transaction, with the same
//!   fence and the same forward-only rule.
//!
//! **What "exactly once" covers:** the writes the handler makes through the
//! transaction it is given, in this database. Anything else the handler
//! does (an HTTP call, a message, a write to another database) is at least
//! once: it may happen again when the transaction rolls back or the event
//! is delivered again; key it by the event's id.
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

use crate::{PostgresEventStore, checkpoints, dead_letters};

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

impl<R> ExactlyOnce<crate::outbox::Reacting<R>> {
    /// Runs `reactor` for subscription `name`: its database writes, the
    /// external effects it records (in the store's outbox, see
    /// [`Outbox`](eventcore::Outbox)) and the checkpoint commit in one
    /// transaction, fenced by the lease.
    pub fn reactor(store: PostgresEventStore, name: SubscriptionName, reactor: R) -> Self {
        let inner = crate::outbox::Reacting::new(&store, name.clone(), reactor);
        ExactlyOnce { store, name, inner }
    }

    /// Runs `reactor` for `lane` of a subscription run in lanes (see
    /// [`subscribe_lanes`](eventcore::subscribe_lanes)): the lane's
    /// checkpoint moves, the effects and commands are named after the
    /// lanes' subscription ([`Lane::base`](eventcore::Lane::base)), so
    /// their keys and ids do not depend on the lanes.
    pub fn reactor_in_lane(store: PostgresEventStore, lane: &eventcore::Lane, reactor: R) -> Self {
        let inner = crate::outbox::Reacting::new(&store, lane.base().clone(), reactor);
        ExactlyOnce {
            store,
            name: lane.name().clone(),
            inner,
        }
    }
}

impl<E, H> Handler<E> for ExactlyOnce<H>
where
    E: Sync,
    H: ProjectionHandler<E>,
{
    async fn handle(&mut self, context: &EventContext, event: &E) -> Result<(), BoxError> {
        let position = context.position();
        let token = context.lease_token();
        let mut lease = self.store.conns().get("projection").await?;
        let mut tx = lease.conn().begin().await?;
        self.inner.handle(&mut tx, context, event).await?;
        // After the handler, so that a new holder's taking of the lease
        // never waits for an old holder's handler: the fence and the
        // forward-only move are checked last, just before the commit.
        // A parked event handed over again (the checkpoint has passed it):
        // its dead letter's replay mark moves instead.
        let moved = if let Some(key) = context.parked_key() {
            let row = dead_letters::replayed_query(&self.name, key, position, token)?
                .fetch_one(&mut *tx)
                .await?;
            checkpoints::fenced("replay_dead_letter", &self.name, token, Some(&row))?
        } else {
            let row = checkpoints::save_query(&self.name, position, token)?
                .fetch_one(&mut *tx)
                .await?;
            checkpoints::saved(&self.name, token, Some(&row))?
        };
        if !moved {
            // Applied already (the checkpoint is at or past it): undo this
            // second application.
            tx.rollback().await?;
            lease.settle(&Ok::<(), sqlx::Error>(()));
            return Ok(());
        }
        tx.commit().await?;
        // Only a transaction that committed leaves the connection in a known
        // state; after any error above the lease drops it.
        lease.settle(&Ok::<(), sqlx::Error>(()));
        Ok(())
    }
}
