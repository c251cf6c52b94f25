//! The outbox of reactors in the `eventcore_outbox` table, and the
//! reactors that record into it in the transaction of their checkpoint.

use std::{future::Future, pin::pin, sync::Arc, task::Poll, time::Duration};

use eventcore::{
    AfterFailure, BoxError, Effect, EffectAction, EffectKey, EffectState, EventContext, Handler,
    MAX_EFFECT_ERROR_CHARS, Outbox, Position, Reaction, Reactor, StoreError, StoredEffect,
    SubscriptionName, Uuid,
};
use rusqlite::{Connection, OptionalExtension, Row, Transaction, params};
use tokio::sync::Notify;

use crate::{
    SqliteEventStore, SqliteProjection,
    checkpoints::sql_position,
    error::{corrupt, sqlite},
    projection::{already_applied, apply_once},
    rows::{now_micros, time},
};

/// The columns [`stored`] reads, in order.
const COLUMNS: &str = "id, effect_key, reactor, destination, payload, event_id, commit_id, \
     sequence, state, claims, retried_from, last_error, recorded_at";

/// Microseconds in `d`, as the table keeps times.
fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// A claim number as SQLite keeps it.
fn sql_claim(claim: u64) -> i64 {
    i64::try_from(claim).unwrap_or(i64::MAX)
}

/// One effect, with its row id, from a row of [`COLUMNS`].
fn stored(row: &Row<'_>) -> rusqlite::Result<(i64, StoredEffect)> {
    let count = |i: usize, column: &'static str, v: i64| {
        u64::try_from(v).map_err(|e| corrupt(i, column, e))
    };
    let reactor = SubscriptionName::try_new(row.get::<_, String>(2)?)
        .map_err(|e| corrupt(2, "reactor", e))?;
    let payload: String = row.get(4)?;
    let payload = serde_json::from_str(&payload).map_err(|e| corrupt(4, "payload", e))?;
    let event_id: String = row.get(5)?;
    let event_id = Uuid::parse_str(&event_id).map_err(|e| corrupt(5, "event_id", e))?;
    let position = Position::new(
        count(6, "commit_id", row.get(6)?)?,
        count(7, "sequence", row.get(7)?)?,
    );
    let state: String = row.get(8)?;
    let state = EffectState::from_name(&state)
        .ok_or_else(|| corrupt(8, "state", format!("unknown effect state {state:?}")))?;
    let claims = count(9, "claims", row.get(9)?)?;
    let retried_from = count(10, "retried_from", row.get(10)?)?;
    let mut effect = StoredEffect::pending(Effect::recorded(
        EffectKey::from_stored(row.get::<_, String>(1)?),
        reactor,
        row.get::<_, String>(3)?,
        payload,
        event_id,
        position,
    ));
    effect.state = state;
    effect.claim = claims;
    effect.attempts = u32::try_from(claims.saturating_sub(retried_from)).unwrap_or(u32::MAX);
    effect.last_error = row.get(11)?;
    effect.recorded_at = time(row.get(12)?);
    Ok((row.get(0)?, effect))
}

/// The effects of `rows`, in the order they were recorded.
fn in_order(mut rows: Vec<(i64, StoredEffect)>) -> Vec<StoredEffect> {
    rows.sort_by_key(|(id, _)| *id);
    rows.into_iter().map(|(_, e)| e).collect()
}

/// Records `effects` in the outbox through `tx` (the transaction that
/// moves the reactor's checkpoint), keeping the first of a key recorded
/// twice.
fn record(tx: &Transaction<'_>, effects: &[Effect]) -> rusqlite::Result<()> {
    let mut insert = tx.prepare_cached(
        "INSERT INTO eventcore_outbox (effect_key, reactor, destination, payload, event_id, \
         commit_id, sequence, due_at, recorded_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8) ON CONFLICT (effect_key) DO NOTHING",
    )?;
    let now = now_micros();
    for effect in effects {
        let (commit, sequence) = sql_position(effect.position);
        insert.execute(params![
            effect.key.as_str(),
            effect.reactor.as_ref(),
            effect.destination,
            effect.payload.to_string(),
            effect.event_id.hyphenated().to_string(),
            commit,
            sequence,
            now,
        ])?;
    }
    Ok(())
}

/// Whether any effect is due now (a read that spares the writer a claim
/// that would find nothing).
fn any_due(c: &Connection) -> rusqlite::Result<bool> {
    c.query_row(
        "SELECT 1 FROM eventcore_outbox WHERE state = 'pending' AND due_at <= ?1 LIMIT 1",
        [now_micros()],
        |_| Ok(()),
    )
    .optional()
    .map(|found| found.is_some())
}

impl Outbox for SqliteEventStore {
    async fn claim(&self, limit: usize, lease: Duration) -> Result<Vec<StoredEffect>, StoreError> {
        const OP: &str = "claim_effects";
        let due = self
            .with_reader(OP, |c| any_due(c).map_err(|e| sqlite(OP, e)))
            .await?;
        if !due || limit == 0 {
            return Ok(Vec::new());
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.write_with(OP, move |c| {
            let failed = |e| sqlite(OP, e);
            let now = now_micros();
            let mut claim = c
                .prepare_cached(&format!(
                    "UPDATE eventcore_outbox SET claims = claims + 1, held = 1, due_at = ?2 \
                     WHERE id IN (SELECT id FROM eventcore_outbox \
                         WHERE state = 'pending' AND due_at <= ?3 ORDER BY id LIMIT ?1) \
                     RETURNING {COLUMNS}"
                ))
                .map_err(failed)?;
            let rows = claim
                .query_map(
                    params![limit, now.saturating_add(micros(lease)), now],
                    stored,
                )
                .map_err(failed)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(failed)?;
            Ok(in_order(rows))
        })
        .await
    }

    async fn delivered(&self, key: &EffectKey, claim: u64) -> Result<bool, StoreError> {
        const OP: &str = "effect_delivered";
        let key = key.as_str().to_owned();
        self.write_with(OP, move |c| {
            c.execute(
                "UPDATE eventcore_outbox SET state = 'delivered', held = 0, done_at = ?3 \
                 WHERE effect_key = ?1 AND claims = ?2 AND held = 1 AND state = 'pending'",
                params![key, sql_claim(claim), now_micros()],
            )
            .map(|n| n == 1)
            .map_err(|e| sqlite(OP, e))
        })
        .await
    }

    async fn failed(
        &self,
        key: &EffectKey,
        claim: u64,
        error: &str,
        then: AfterFailure,
    ) -> Result<bool, StoreError> {
        const OP: &str = "effect_failed";
        let key = key.as_str().to_owned();
        let error: String = error.chars().take(MAX_EFFECT_ERROR_CHARS).collect();
        let (park, wait) = match then {
            AfterFailure::Park => (true, Duration::ZERO),
            AfterFailure::RetryAfter(wait) => (false, wait),
        };
        self.write_with(OP, move |c| {
            c.execute(
                "UPDATE eventcore_outbox SET last_error = ?3, held = 0, \
                 state = CASE WHEN ?4 THEN 'parked' ELSE 'pending' END, \
                 due_at = CASE WHEN ?4 THEN due_at ELSE ?5 END \
                 WHERE effect_key = ?1 AND claims = ?2 AND held = 1 AND state = 'pending'",
                params![
                    key,
                    sql_claim(claim),
                    error,
                    park,
                    now_micros().saturating_add(micros(wait))
                ],
            )
            .map(|n| n == 1)
            .map_err(|e| sqlite(OP, e))
        })
        .await
    }

    async fn release_effect(&self, key: &EffectKey, claim: u64) -> Result<bool, StoreError> {
        const OP: &str = "release_effect";
        let key = key.as_str().to_owned();
        self.write_with(OP, move |c| {
            // The claim is not an attempt: `retried_from` counts it out.
            c.execute(
                "UPDATE eventcore_outbox SET held = 0, due_at = ?3, \
                 retried_from = retried_from + 1 \
                 WHERE effect_key = ?1 AND claims = ?2 AND held = 1 AND state = 'pending'",
                params![key, sql_claim(claim), now_micros()],
            )
            .map(|n| n == 1)
            .map_err(|e| sqlite(OP, e))
        })
        .await
    }

    async fn effect(&self, key: &EffectKey) -> Result<Option<StoredEffect>, StoreError> {
        const OP: &str = "effect";
        let key = key.as_str().to_owned();
        self.with_reader(OP, move |c| {
            c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM eventcore_outbox WHERE effect_key = ?1"
            ))
            .and_then(|mut q| q.query_row([key], stored).optional())
            .map(|found| found.map(|(_, e)| e))
            .map_err(|e| sqlite(OP, e))
        })
        .await
    }

    async fn parked_effects(&self) -> Result<Vec<StoredEffect>, StoreError> {
        const OP: &str = "parked_effects";
        self.with_reader(OP, |c| {
            let failed = |e| sqlite(OP, e);
            let mut query = c
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM eventcore_outbox WHERE state = 'parked' ORDER BY id"
                ))
                .map_err(failed)?;
            let rows = query
                .query_map([], stored)
                .map_err(failed)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(failed)?;
            Ok(in_order(rows))
        })
        .await
    }

    async fn resolve_effect(
        &self,
        key: &EffectKey,
        action: EffectAction,
    ) -> Result<bool, StoreError> {
        const OP: &str = "resolve_effect";
        let key = key.as_str().to_owned();
        let retry = action == EffectAction::Retry;
        let resolved = self
            .write_with(OP, move |c| {
                c.execute(
                    "UPDATE eventcore_outbox SET \
                     state = CASE WHEN ?2 THEN 'pending' ELSE 'skipped' END, \
                     retried_from = CASE WHEN ?2 THEN claims ELSE retried_from END, \
                     held = 0, due_at = ?3 \
                     WHERE effect_key = ?1 AND state = 'parked'",
                    params![key, retry, now_micros()],
                )
                .map(|n| n == 1)
                .map_err(|e| sqlite(OP, e))
            })
            .await?;
        if resolved && retry {
            self.inner.effects.notify_one();
        }
        Ok(resolved)
    }

    /// Wakes at a reactor's commit in this process at once, at any commit
    /// to the file by another process within the watcher's 5 ms.
    async fn wait_for_effects(&self, timeout: Duration) {
        let mut recorded = pin!(self.inner.effects.notified());
        let mut committed = pin!(eventcore::EventLog::appended(self));
        let mut timer = pin!(tokio::time::sleep(timeout));
        std::future::poll_fn(|cx| {
            let woke = recorded.as_mut().poll(cx).is_ready()
                || committed.as_mut().poll(cx).is_ready()
                || timer.as_mut().poll(cx).is_ready();
            if woke { Poll::Ready(()) } else { Poll::Pending }
        })
        .await;
    }
}

/// The database writes of a [`Reacting`] that has none.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoWrites;

impl<E> SqliteProjection<E> for NoWrites {
    fn apply(
        &mut self,
        _: &rusqlite::Transaction<'_>,
        _: &EventContext,
        _: &E,
    ) -> Result<(), BoxError> {
        Ok(())
    }
}

/// Turns a [`Reactor`] into a subscription [`Handler`] whose external
/// effects are recorded in the store's outbox in the transaction that
/// moves the reactor's checkpoint, fenced by the lease token like
/// [`ExactlyOnce`](crate::ExactlyOnce): a reaction that fails, or whose
/// lease was taken over, records nothing; an event the checkpoint has
/// passed is not reacted to again. Commands the reactor issues with its
/// reaction's ids apply once however often it is replayed; its database
/// writes (see [`Reacting::with_writes`]) commit with the checkpoint.
///
/// The reactor runs first, outside any transaction (it may await the
/// commands it issues); the writes, the effects and the checkpoint then
/// commit in one immediate transaction of a connection of its own.
///
/// ```
/// use eventcore::{BoxError, Outbox, Reaction, Reactor, SubscriptionConfig, SubscriptionName, execute, subscribe};
/// use eventcore_sqlite::{Reacting, SqliteConfig, SqliteEventStore};
/// use eventcore_testing::fixtures::{Credit, LedgerEvent, stream};
///
/// struct Receipts;
///
/// impl Reactor<LedgerEvent> for Receipts {
///     async fn react(&mut self, reaction: &mut Reaction, event: &LedgerEvent) -> Result<(), BoxError> {
///         if let LedgerEvent::Credited { amount, .. } = event {
///             reaction.effect("receipts", serde_json::json!({ "amount": amount }));
///         }
///         Ok(())
///     }
/// }
///
/// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let path = std::env::temp_dir().join(format!("eventcore-reacting-doc-{}.db", std::process::id()));
/// let store = SqliteEventStore::open(&path, SqliteConfig::default()).await?;
/// execute(&store, Credit { account: stream("a"), amount: 5 }).await?;
/// let name = SubscriptionName::try_new("receipts").unwrap();
/// let reacting = Reacting::new(&store, name.clone(), Receipts)?;
/// let handle = subscribe(store.clone(), store.clone(), name, reacting, SubscriptionConfig::default());
/// handle.position().wait_for(Option::is_some).await?;
/// handle.stop().await?;
/// let claimed = store.claim(10, std::time::Duration::from_secs(5)).await?;
/// assert_eq!(claimed[0].effect.payload, serde_json::json!({ "amount": 5 }));
/// # drop(store);
/// # for suffix in ["", "-wal", "-shm"] { let _ = std::fs::remove_file(format!("{}{suffix}", path.display())); }
/// # let _ = std::fs::remove_dir_all(format!("{}.leases", path.display()));
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Reacting<R, P = NoWrites> {
    connection: Connection,
    effects: Arc<Notify>,
    /// The subscription whose checkpoint moves (a lane's, in lanes).
    name: SubscriptionName,
    /// What the effects and commands are named after.
    reactor: SubscriptionName,
    inner: R,
    writes: P,
}

impl<R> Reacting<R> {
    /// Wraps `reactor` for subscription `name` of `store` (pass the same
    /// name and store to [`subscribe`](eventcore::subscribe)); its effects
    /// go to the store's outbox.
    ///
    /// # Errors
    /// [`StoreError::Backend`] if the file cannot be opened.
    pub fn new(
        store: &SqliteEventStore,
        name: SubscriptionName,
        reactor: R,
    ) -> Result<Self, StoreError> {
        Ok(Reacting {
            connection: store.own_connection()?,
            effects: store.inner.effects.clone(),
            reactor: name.clone(),
            name,
            inner: reactor,
            writes: NoWrites,
        })
    }

    /// Wraps `reactor` for `lane` of a subscription run in lanes (see
    /// [`subscribe_lanes`](eventcore::subscribe_lanes)): the lane's
    /// checkpoint moves, the effects and commands are named after the
    /// lanes' subscription ([`Lane::base`](eventcore::Lane::base)), so
    /// their keys and ids do not depend on the lanes.
    ///
    /// # Errors
    /// [`StoreError::Backend`] if the file cannot be opened.
    pub fn in_lane(
        store: &SqliteEventStore,
        lane: &eventcore::Lane,
        reactor: R,
    ) -> Result<Self, StoreError> {
        let mut reacting = Reacting::new(store, lane.name().clone(), reactor)?;
        reacting.reactor = lane.base().clone();
        Ok(reacting)
    }
}

impl<R, P> Reacting<R, P> {
    /// Also applies `writes` to a read model in the store's file for every
    /// event the reactor reacts to, in the transaction that records its
    /// effects and moves the checkpoint: a reactor's database writes,
    /// exactly once.
    pub fn with_writes<Q>(self, writes: Q) -> Reacting<R, Q> {
        Reacting {
            connection: self.connection,
            effects: self.effects,
            name: self.name,
            reactor: self.reactor,
            inner: self.inner,
            writes,
        }
    }
}

impl<E, R, P> Handler<E> for Reacting<R, P>
where
    E: Sync,
    R: Reactor<E>,
    P: SqliteProjection<E>,
{
    async fn handle(&mut self, context: &EventContext, event: &E) -> Result<(), BoxError> {
        if context.parked_key().is_none()
            && already_applied(&self.connection, &self.name, context.position())
                .map_err(|e| sqlite("reactor", e))?
        {
            return Ok(());
        }
        let mut reaction = Reaction::new(&self.reactor, context);
        self.inner.react(&mut reaction, event).await?;
        let effects = reaction.into_effects();
        let writes = &mut self.writes;
        let committed = apply_once(&mut self.connection, &self.name, context, |tx| {
            writes.apply(tx, context, event)?;
            record(tx, &effects).map_err(|e| Box::new(sqlite("record_effects", e)) as BoxError)
        })?;
        if committed && !effects.is_empty() {
            self.effects.notify_one();
        }
        Ok(())
    }
}
