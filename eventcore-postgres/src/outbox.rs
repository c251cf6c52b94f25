//! The outbox of reactors in the `eventcore_outbox` table, and the
//! reactors that record into it in the transaction of their checkpoint.

use std::time::Duration;

use eventcore::{
    AfterFailure, BoxError, Effect, EffectAction, EffectKey, EffectState, EventContext,
    MAX_EFFECT_ERROR_CHARS, Outbox, Position, Reaction, StoreError, StoredEffect, SubscriptionName,
    Uuid,
};
use sqlx::{PgConnection, Row, postgres::PgRow};

use crate::{
    PostgresEventStore,
    checkpoints::to_bigint,
    error::store_error,
    projection::ProjectionHandler,
    rows::{from_bigint, from_micros},
};

const RECORD: &str = include_str!("sql/record_effects.sql");
const CLAIM: &str = include_str!("sql/claim_effects.sql");
const DELIVERED: &str = include_str!("sql/effect_delivered.sql");
const FAILED: &str = include_str!("sql/effect_failed.sql");
const EFFECTS: &str = include_str!("sql/effects.sql");
const RESOLVE: &str = include_str!("sql/resolve_effect.sql");
const RELEASE: &str = include_str!("sql/release_effect.sql");

/// Milliseconds of `d`, as PostgreSQL's `make_interval` takes them.
fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn decode(row: &PgRow) -> Result<(i64, StoredEffect), sqlx::Error> {
    let id: i64 = row.try_get("id")?;
    let reactor: String = row.try_get("reactor")?;
    let reactor = SubscriptionName::try_new(reactor).map_err(|e| sqlx::Error::Decode(e.into()))?;
    let payload: String = row.try_get("payload")?;
    let payload: serde_json::Value =
        serde_json::from_str(&payload).map_err(|e| sqlx::Error::Decode(e.into()))?;
    let event_id: Uuid = row.try_get("event_id")?;
    let position = Position::new(
        from_bigint(row.try_get("commit_id")?),
        from_bigint(row.try_get("sequence")?),
    );
    let state: String = row.try_get("state")?;
    let state = EffectState::from_name(&state)
        .ok_or_else(|| sqlx::Error::Decode(format!("unknown effect state {state:?}").into()))?;
    let claims = from_bigint(row.try_get("claims")?);
    let retried_from = from_bigint(row.try_get("retried_from")?);
    let mut stored = StoredEffect::pending(Effect::recorded(
        EffectKey::from_stored(row.try_get::<String, _>("effect_key")?),
        reactor,
        row.try_get::<String, _>("destination")?,
        payload,
        event_id,
        position,
    ));
    stored.state = state;
    stored.claim = claims;
    stored.attempts = u32::try_from(claims.saturating_sub(retried_from)).unwrap_or(u32::MAX);
    stored.last_error = row.try_get("last_error")?;
    stored.recorded_at = from_micros(row.try_get("recorded_us")?);
    Ok((id, stored))
}

fn decode_all(operation: &'static str, rows: &[PgRow]) -> Result<Vec<StoredEffect>, StoreError> {
    let mut effects = rows
        .iter()
        .map(decode)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| store_error(operation, e))?;
    effects.sort_by_key(|(id, _)| *id);
    Ok(effects.into_iter().map(|(_, e)| e).collect())
}

/// Records `effects` in the outbox through `tx` (the transaction that moves
/// the reactor's checkpoint), keeping the first of a key recorded twice,
/// and wakes the dispatchers LISTENing on `channel` when it commits.
pub(crate) async fn record(
    tx: &mut PgConnection,
    reaction: &Reaction,
    channel: &str,
) -> Result<(), BoxError> {
    let effects = reaction.effects();
    if effects.is_empty() {
        return Ok(());
    }
    let position = reaction.context().position();
    let keys: Vec<&str> = effects.iter().map(|e| e.key.as_str()).collect();
    let destinations: Vec<&str> = effects.iter().map(|e| e.destination.as_str()).collect();
    let payloads: Vec<String> = effects.iter().map(|e| e.payload.to_string()).collect();
    sqlx::query(RECORD)
        .bind(keys)
        .bind(reaction.reactor().as_ref())
        .bind(destinations)
        .bind(payloads)
        .bind(reaction.context().recorded().event_id())
        .bind(to_bigint("record_effects", position.commit())?)
        .bind(to_bigint("record_effects", position.sequence())?)
        .execute(&mut *tx)
        .await?;
    // Sent at commit, so a dispatcher wakes only for effects it can see.
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(channel)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

impl Outbox for PostgresEventStore {
    async fn claim(&self, limit: usize, lease: Duration) -> Result<Vec<StoredEffect>, StoreError> {
        const OP: &str = "claim_effects";
        let query = sqlx::query(CLAIM)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .bind(millis(lease));
        let rows = self.conns().fetch_all(OP, query).await?;
        decode_all(OP, &rows)
    }

    async fn delivered(&self, key: &EffectKey, claim: u64) -> Result<bool, StoreError> {
        const OP: &str = "effect_delivered";
        let query = sqlx::query(DELIVERED)
            .bind(key.as_str())
            .bind(to_bigint(OP, claim)?);
        Ok(self.conns().execute(OP, query).await? == 1)
    }

    async fn failed(
        &self,
        key: &EffectKey,
        claim: u64,
        error: &str,
        then: AfterFailure,
    ) -> Result<bool, StoreError> {
        const OP: &str = "effect_failed";
        let error: String = error.chars().take(MAX_EFFECT_ERROR_CHARS).collect();
        let (park, wait) = match then {
            AfterFailure::Park => (true, Duration::ZERO),
            AfterFailure::RetryAfter(wait) => (false, wait),
        };
        let query = sqlx::query(FAILED)
            .bind(key.as_str())
            .bind(to_bigint(OP, claim)?)
            .bind(error)
            .bind(park)
            .bind(millis(wait));
        Ok(self.conns().execute(OP, query).await? == 1)
    }

    async fn release_effect(&self, key: &EffectKey, claim: u64) -> Result<bool, StoreError> {
        const OP: &str = "release_effect";
        let query = sqlx::query(RELEASE)
            .bind(key.as_str())
            .bind(to_bigint(OP, claim)?);
        Ok(self.conns().execute(OP, query).await? == 1)
    }

    async fn effect(&self, key: &EffectKey) -> Result<Option<StoredEffect>, StoreError> {
        const OP: &str = "effect";
        let query = sqlx::query(EFFECTS)
            .bind(Some(key.as_str()))
            .bind(None::<&str>);
        let rows = self.conns().fetch_all(OP, query).await?;
        Ok(decode_all(OP, &rows)?.pop())
    }

    async fn parked_effects(&self) -> Result<Vec<StoredEffect>, StoreError> {
        const OP: &str = "parked_effects";
        let query = sqlx::query(EFFECTS)
            .bind(None::<&str>)
            .bind(Some(EffectState::Parked.as_str()));
        let rows = self.conns().fetch_all(OP, query).await?;
        decode_all(OP, &rows)
    }

    async fn resolve_effect(
        &self,
        key: &EffectKey,
        action: EffectAction,
    ) -> Result<bool, StoreError> {
        const OP: &str = "resolve_effect";
        let action = match action {
            EffectAction::Retry => "retry",
            EffectAction::Skip => "skip",
        };
        let query = sqlx::query(RESOLVE).bind(key.as_str()).bind(action);
        let resolved = self.conns().execute(OP, query).await? == 1;
        if resolved && action == "retry" {
            let notify = sqlx::query("SELECT pg_notify($1, '')").bind(self.effects_channel());
            self.conns().execute(OP, notify).await?;
        }
        Ok(resolved)
    }

    async fn wait_for_effects(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.effects_woken()).await;
    }
}

/// Reacts to one event inside the transaction that will also record its
/// external effects and move the reactor's checkpoint: writes to the
/// database through `tx` (exactly once, with the checkpoint), records
/// effects and takes command ids through `reaction`.
pub trait PgReactor<E>: Send + 'static {
    /// Reacts to `event`. An error rolls back everything: the writes made
    /// through `tx` and the effects recorded in `reaction`; commands
    /// already issued with the reaction's ids write nothing when the event
    /// is reacted to again.
    fn react(
        &mut self,
        tx: &mut PgConnection,
        reaction: &mut Reaction,
        event: &E,
    ) -> impl std::future::Future<Output = Result<(), BoxError>> + Send;
}

/// A [`PgReactor`] as the [`ProjectionHandler`] of an
/// [`ExactlyOnce`](crate::ExactlyOnce): the reaction's effects are recorded
/// in the outbox in the projection's transaction, with the checkpoint,
/// under its fence. Made by [`ExactlyOnce::reactor`](crate::ExactlyOnce::reactor).
#[derive(Debug)]
pub struct Reacting<R> {
    name: SubscriptionName,
    channel: String,
    inner: R,
}

impl<R> Reacting<R> {
    pub(crate) fn new(store: &PostgresEventStore, name: SubscriptionName, inner: R) -> Self {
        Reacting {
            name,
            channel: store.effects_channel().to_owned(),
            inner,
        }
    }
}

impl<E, R> ProjectionHandler<E> for Reacting<R>
where
    E: Sync,
    R: PgReactor<E>,
{
    async fn handle(
        &mut self,
        tx: &mut PgConnection,
        context: &EventContext,
        event: &E,
    ) -> Result<(), BoxError> {
        let mut reaction = Reaction::new(&self.name, context);
        self.inner.react(tx, &mut reaction, event).await?;
        record(tx, &reaction, &self.channel).await
    }
}
