//! The outbox in memory, and the reactors that record into it with their
//! checkpoints.

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use eventcore::{
    AfterFailure, BoxError, EffectAction, EffectKey, EffectState, EventContext, Handler,
    MAX_EFFECT_ERROR_CHARS, Outbox, Reaction, Reactor, StoreError, StoredEffect, SubscriptionName,
};

use crate::{
    MemoryProjection,
    checkpoints::{InMemoryCheckpointStore, applied, commit, lock},
};

/// The effects of every reactor, in the order they were recorded.
#[derive(Debug, Default)]
pub(crate) struct Effects {
    by_order: BTreeMap<u64, Entry>,
    by_key: HashMap<EffectKey, u64>,
    recorded: u64,
}

#[derive(Debug)]
struct Entry {
    stored: StoredEffect,
    /// When it is next due (after a backoff, or when its claim runs out).
    due: Instant,
    /// Claims that are not attempts: made before the last retry by an
    /// operator, or released unattempted.
    retried_from: u32,
    /// Whether its current claim may still mark it (no mark made yet).
    held: bool,
}

impl Effects {
    /// Records `effect` unless its key is recorded already.
    fn record(&mut self, effect: eventcore::Effect) {
        if self.by_key.contains_key(&effect.key) {
            return;
        }
        self.recorded += 1;
        self.by_key.insert(effect.key.clone(), self.recorded);
        self.by_order.insert(
            self.recorded,
            Entry {
                stored: StoredEffect::pending(effect),
                due: Instant::now(),
                retried_from: 0,
                held: false,
            },
        );
    }

    fn entry(&mut self, key: &EffectKey) -> Option<&mut Entry> {
        let order = self.by_key.get(key)?;
        self.by_order.get_mut(order)
    }

    /// The pending entry of `key` under claim `claim`, not marked yet.
    fn claimed(&mut self, key: &EffectKey, claim: u64) -> Option<&mut Entry> {
        self.entry(key)
            .filter(|e| e.held && e.stored.state == EffectState::Pending && e.stored.claim == claim)
    }
}

impl Outbox for InMemoryCheckpointStore {
    async fn claim(&self, limit: usize, lease: Duration) -> Result<Vec<StoredEffect>, StoreError> {
        let now = Instant::now();
        let mut names = lock(&self.inner);
        let mut claimed = Vec::new();
        for entry in names.outbox.by_order.values_mut() {
            if claimed.len() >= limit {
                break;
            }
            if entry.stored.state != EffectState::Pending || entry.due > now {
                continue;
            }
            entry.stored.claim += 1;
            entry.stored.attempts = u32::try_from(entry.stored.claim)
                .unwrap_or(u32::MAX)
                .saturating_sub(entry.retried_from);
            entry.due = now + lease;
            entry.held = true;
            claimed.push(entry.stored.clone());
        }
        Ok(claimed)
    }

    async fn delivered(&self, key: &EffectKey, claim: u64) -> Result<bool, StoreError> {
        let mut names = lock(&self.inner);
        Ok(names.outbox.claimed(key, claim).is_some_and(|entry| {
            entry.held = false;
            entry.stored.state = EffectState::Delivered;
            true
        }))
    }

    async fn failed(
        &self,
        key: &EffectKey,
        claim: u64,
        error: &str,
        then: AfterFailure,
    ) -> Result<bool, StoreError> {
        let mut names = lock(&self.inner);
        Ok(names.outbox.claimed(key, claim).is_some_and(|entry| {
            entry.held = false;
            entry.stored.last_error = Some(error.chars().take(MAX_EFFECT_ERROR_CHARS).collect());
            match then {
                AfterFailure::RetryAfter(wait) => entry.due = Instant::now() + wait,
                AfterFailure::Park => entry.stored.state = EffectState::Parked,
            }
            true
        }))
    }

    async fn release_effect(&self, key: &EffectKey, claim: u64) -> Result<bool, StoreError> {
        let mut names = lock(&self.inner);
        Ok(names.outbox.claimed(key, claim).is_some_and(|entry| {
            entry.held = false;
            entry.due = Instant::now();
            // The claim is not an attempt.
            entry.retried_from = entry.retried_from.saturating_add(1);
            true
        }))
    }

    async fn effect(&self, key: &EffectKey) -> Result<Option<StoredEffect>, StoreError> {
        let mut names = lock(&self.inner);
        Ok(names.outbox.entry(key).map(|e| e.stored.clone()))
    }

    async fn parked_effects(&self) -> Result<Vec<StoredEffect>, StoreError> {
        let names = lock(&self.inner);
        Ok(names
            .outbox
            .by_order
            .values()
            .filter(|e| e.stored.state == EffectState::Parked)
            .map(|e| e.stored.clone())
            .collect())
    }

    async fn resolve_effect(
        &self,
        key: &EffectKey,
        action: EffectAction,
    ) -> Result<bool, StoreError> {
        let resolved = {
            let mut names = lock(&self.inner);
            match names.outbox.entry(key) {
                Some(entry) if entry.stored.state == EffectState::Parked => {
                    match action {
                        EffectAction::Retry => {
                            entry.stored.state = EffectState::Pending;
                            entry.retried_from =
                                u32::try_from(entry.stored.claim).unwrap_or(u32::MAX);
                            entry.stored.attempts = 0;
                            entry.due = Instant::now();
                        }
                        EffectAction::Skip => entry.stored.state = EffectState::Skipped,
                    }
                    true
                }
                _ => false,
            }
        };
        if resolved && action == EffectAction::Retry {
            self.effects.notify_one();
        }
        Ok(resolved)
    }

    async fn wait_for_effects(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.effects.notified()).await;
    }
}

/// Turns a [`Reactor`] into a subscription [`Handler`] whose external
/// effects are recorded in the outbox of an [`InMemoryCheckpointStore`]
/// in the step that moves the reactor's checkpoint, fenced by the lease
/// token like [`ExactlyOnce`](crate::ExactlyOnce): a reaction that fails,
/// or whose lease was taken over, records nothing; an event the checkpoint
/// has passed is not reacted to again. Commands the reactor issues with its
/// reaction's ids apply once however often it is replayed.
///
/// ```
/// use eventcore::{BoxError, Outbox, Reaction, Reactor, SubscriptionConfig, SubscriptionName, execute, subscribe};
/// use eventcore_memory::{InMemoryEventStore, Reacting};
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
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let store = InMemoryEventStore::new();
/// execute(&store, Credit { account: stream("a"), amount: 5 }).await.unwrap();
/// let name = SubscriptionName::try_new("receipts").unwrap();
/// let handle = subscribe(store.clone(), store.clone(), name.clone(), Reacting::new(&store, name, Receipts), SubscriptionConfig::default());
/// handle.position().wait_for(Option::is_some).await.unwrap();
/// handle.stop().await.unwrap();
/// let claimed = store.claim(10, std::time::Duration::from_secs(5)).await.unwrap();
/// assert_eq!(claimed[0].effect.payload, serde_json::json!({ "amount": 5 }));
/// # });
/// ```
#[derive(Debug)]
pub struct Reacting<R, P = NoWrites> {
    checkpoints: InMemoryCheckpointStore,
    /// The subscription whose checkpoint moves (a lane's, in lanes).
    name: SubscriptionName,
    /// What the effects and commands are named after.
    reactor: SubscriptionName,
    inner: R,
    writes: P,
}

/// The in-memory writes of a [`Reacting`] that has none.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoWrites;

impl<E> MemoryProjection<E> for NoWrites {
    fn apply(&mut self, _: &EventContext, _: &E) -> Result<(), BoxError> {
        Ok(())
    }
}

impl<R> Reacting<R> {
    /// Wraps `reactor` for subscription `name` of `store` (pass the same
    /// name and store to [`subscribe`](eventcore::subscribe)); its effects
    /// go to the store's outbox.
    pub fn new(store: &crate::InMemoryEventStore, name: SubscriptionName, reactor: R) -> Self {
        Reacting::with_checkpoints(store.checkpoints().clone(), name, reactor)
    }

    /// Wraps `reactor` for subscription `name` whose checkpoints and
    /// outbox live in `checkpoints`.
    pub fn with_checkpoints(
        checkpoints: InMemoryCheckpointStore,
        name: SubscriptionName,
        reactor: R,
    ) -> Self {
        Reacting {
            checkpoints,
            reactor: name.clone(),
            name,
            inner: reactor,
            writes: NoWrites,
        }
    }

    /// Wraps `reactor` for `lane` of a subscription run in lanes (see
    /// [`subscribe_lanes`](eventcore::subscribe_lanes)): the lane's
    /// checkpoint moves, the effects and commands are named after the
    /// lanes' subscription ([`Lane::base`](eventcore::Lane::base)), so
    /// their keys and ids do not depend on the lanes.
    pub fn in_lane(store: &crate::InMemoryEventStore, lane: &eventcore::Lane, reactor: R) -> Self {
        let mut reacting = Reacting::new(store, lane.name().clone(), reactor);
        reacting.reactor = lane.base().clone();
        reacting
    }
}

impl<R, P> Reacting<R, P> {
    /// Also applies `writes` to an in-memory read model for every event the
    /// reactor reacts to, in the step that records its effects and moves
    /// the checkpoint: a reactor's database writes, exactly once.
    pub fn with_writes<Q>(self, writes: Q) -> Reacting<R, Q> {
        Reacting {
            checkpoints: self.checkpoints,
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
    P: MemoryProjection<E>,
{
    async fn handle(&mut self, context: &EventContext, event: &E) -> Result<(), BoxError> {
        if applied(&self.checkpoints, &self.name, context) {
            return Ok(());
        }
        let mut reaction = Reaction::new(&self.reactor, context);
        self.inner.react(&mut reaction, event).await?;
        let effects = reaction.into_effects();
        let any = !effects.is_empty();
        let writes = &mut self.writes;
        commit(&self.checkpoints, &self.name, context, |names| {
            writes.apply(context, event)?;
            for effect in effects {
                names.outbox.record(effect);
            }
            Ok(())
        })?;
        if any {
            self.checkpoints.effects.notify_one();
        }
        Ok(())
    }
}
