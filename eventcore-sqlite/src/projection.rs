//! Exactly-once projections into the same SQLite file.
//!
//! [`ExactlyOnce`] runs a [`SqliteProjection`] for each event in one write
//! transaction that also moves the subscription's checkpoint, fenced by the
//! lease's token: the read model and the checkpoint move together or not
//! at all. An instance that lost its lease commits nothing more (its
//! transaction finds a newer token and rolls back with
//! [`StoreError::LeaseLost`]); an event the checkpoint has passed is not
//! applied again. An event handed over again from a dead letter (see
//! [`DeadLetters`](eventcore::DeadLetters)) moves the letter's replay mark
//! instead of the checkpoint, in the same transaction, fenced and forward
//! only as well. "Exactly once" covers what the projection writes through
//! the transaction it is given; anything else it does is at least once.
//!
//! ```
//! use eventcore::{BoxError, EventContext, SubscriptionConfig, SubscriptionName, execute, subscribe};
//! use eventcore_sqlite::{ExactlyOnce, SqliteConfig, SqliteEventStore, SqliteProjection};
//! use eventcore_testing::fixtures::{Credit, LedgerEvent, stream};
//!
//! struct Count;
//!
//! impl SqliteProjection<LedgerEvent> for Count {
//!     fn apply(&mut self, tx: &rusqlite::Transaction<'_>, _: &EventContext, _: &LedgerEvent) -> Result<(), BoxError> {
//!         tx.execute("CREATE TABLE IF NOT EXISTS counted (n INTEGER NOT NULL)", [])?;
//!         tx.execute("INSERT INTO counted VALUES (1)", [])?;
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let path = std::env::temp_dir().join(format!("eventcore-projection-doc-{}.db", std::process::id()));
//! let store = SqliteEventStore::open(&path, SqliteConfig::default()).await?;
//! execute(&store, Credit { account: stream("a"), amount: 5 }).await?;
//! let name = SubscriptionName::try_new("count").unwrap();
//! let handler = ExactlyOnce::new(&store, name.clone(), Count)?;
//! let handle = subscribe(store.clone(), store.clone(), name, handler, SubscriptionConfig::default());
//! handle.position().wait_for(Option::is_some).await?;
//! handle.stop().await?;
//! let counted: i64 = rusqlite::Connection::open(&path)?
//!     .query_row("SELECT count(*) FROM counted", [], |row| row.get(0))?;
//! assert_eq!(counted, 1);
//! # drop(store);
//! # for suffix in ["", "-wal", "-shm"] { let _ = std::fs::remove_file(format!("{}{suffix}", path.display())); }
//! # let _ = std::fs::remove_dir_all(format!("{}.leases", path.display()));
//! # Ok(())
//! # }
//! ```

use eventcore::{BoxError, EventContext, Handler, StoreError, SubscriptionName};
use rusqlite::{Connection, TransactionBehavior, params};

use crate::{SqliteEventStore, error::sqlite};

/// Applies one event to a read model in the store's file, inside the
/// transaction that also moves the subscription's checkpoint.
pub trait SqliteProjection<E>: Send + 'static {
    /// Applies `event` through `tx`. An error rolls back everything done
    /// through `tx` for this event, and the subscription retries it.
    ///
    /// # Errors
    /// Whatever stops the event from being applied.
    fn apply(
        &mut self,
        tx: &rusqlite::Transaction<'_>,
        context: &EventContext,
        event: &E,
    ) -> Result<(), BoxError>;
}

/// A subscription [`Handler`] that applies each event of a
/// [`SqliteProjection`] exactly once per file, across lease handovers.
///
/// It writes through a connection of its own, on the subscription's task:
/// keep `apply` short (it holds the file's write lock while it runs).
#[derive(Debug)]
pub struct ExactlyOnce<P> {
    connection: Connection,
    name: SubscriptionName,
    projection: P,
}

impl<P> ExactlyOnce<P> {
    /// Wraps `projection` for subscription `name` of `store` (pass the
    /// same name and store to [`subscribe`](eventcore::subscribe)).
    ///
    /// # Errors
    /// [`StoreError::Backend`] if the file cannot be opened.
    pub fn new(
        store: &SqliteEventStore,
        name: SubscriptionName,
        projection: P,
    ) -> Result<Self, StoreError> {
        Ok(ExactlyOnce {
            connection: store.own_connection()?,
            name,
            projection,
        })
    }
}

impl<E, P> Handler<E> for ExactlyOnce<P>
where
    E: Sync,
    P: SqliteProjection<E>,
{
    async fn handle(&mut self, context: &EventContext, event: &E) -> Result<(), BoxError> {
        let projection = &mut self.projection;
        apply_once(&mut self.connection, &self.name, context, |tx| {
            projection.apply(tx, context, event)
        })?;
        Ok(())
    }
}

/// Runs `apply` for the event of `context` in one immediate transaction of
/// `connection` that also moves the checkpoint of `name` to it (or, for a
/// parked event handed over again, its dead letter's replay mark), fenced
/// by the lease's token: [`StoreError::LeaseLost`] if a newer token was
/// taken, nothing done if the event was applied already. Whether it
/// committed.
pub(crate) fn apply_once(
    connection: &mut Connection,
    name: &SubscriptionName,
    context: &EventContext,
    apply: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<(), BoxError>,
) -> Result<bool, BoxError> {
    let failed = |e| sqlite("exactly_once", e);
    let tx = connection
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(failed)?;
    let current = crate::checkpoints::newest_token(&tx, name.as_ref()).map_err(failed)?;
    if current != context.lease_token() {
        return Err(Box::new(StoreError::LeaseLost {
            name: name.clone(),
            token: context.lease_token(),
            current,
        }));
    }
    if let Some(key) = context.parked_key() {
        // A parked event handed over again (the checkpoint has passed it):
        // its dead letter's replay mark moves instead, forward only, in
        // this transaction.
        let moved = crate::dead_letters::move_replay_mark(&tx, name, key, context.position())
            .map_err(failed)?;
        if !moved {
            // Applied already (or the letter is gone): dropped, the
            // transaction rolls back.
            return Ok(false);
        }
        apply(&tx)?;
        tx.commit().map_err(failed)?;
        return Ok(true);
    }
    let at = context.position();
    if already_applied(&tx, name, at).map_err(failed)? {
        // Applied already, by this holder or a former one.
        return Ok(false);
    }
    apply(&tx)?;
    let (commit, sequence) = crate::checkpoints::sql_position(at);
    tx.execute(
        "INSERT INTO eventcore_checkpoints (name, commit_id, sequence) VALUES (?1, ?2, ?3) \
         ON CONFLICT (name) DO UPDATE SET \
         commit_id = excluded.commit_id, sequence = excluded.sequence",
        params![name.as_ref(), commit, sequence],
    )
    .map_err(failed)?;
    tx.commit().map_err(failed)?;
    Ok(true)
}

/// Whether the checkpoint of `name` is at or past `at`.
pub(crate) fn already_applied(
    c: &Connection,
    name: &SubscriptionName,
    at: eventcore::Position,
) -> rusqlite::Result<bool> {
    Ok(crate::checkpoints::saved(c, name.as_ref())?.is_some_and(|s| s >= at))
}
