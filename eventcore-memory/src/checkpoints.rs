//! Subscription checkpoints and leases in memory, with fencing tokens, and
//! the projections that commit with them.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, MutexGuard},
};

use eventcore::{
    BoxError, CheckpointStore, DeadLetter, DeadLetterAction, DeadLetters, EventContext, Handler,
    LeaseToken, Position, StoreError, SubscriptionLeases, SubscriptionName,
};

/// Checkpoints and leases of subscriptions, in memory. Cheap to clone:
/// clones share them.
///
/// Leases carry fencing tokens as on every store: each lease taken under a
/// name has a larger token than the one before, and a checkpoint is saved
/// only under the newest token, only forward.
#[derive(Debug, Clone, Default)]
pub struct InMemoryCheckpointStore {
    pub(crate) inner: Arc<Mutex<Names>>,
    /// Woken by a reactor's commit that recorded effects.
    pub(crate) effects: Arc<tokio::sync::Notify>,
}

#[derive(Debug, Default)]
pub(crate) struct Names {
    saved: HashMap<SubscriptionName, Position>,
    leases: HashMap<SubscriptionName, LeaseState>,
    /// Every move of each checkpoint, (from, to), oldest first.
    writes: HashMap<SubscriptionName, Vec<(Option<Position>, Position)>>,
    /// The dead letters of each lane, by key.
    letters: HashMap<SubscriptionName, BTreeMap<String, DeadLetter>>,
    /// The reactors' external effects.
    pub(crate) outbox: crate::outbox::Effects,
}

#[derive(Debug, Default)]
struct LeaseState {
    /// The newest token handed out (0: none yet).
    newest: u64,
    /// Whether the lease of `newest` is held.
    held: bool,
}

impl Names {
    /// Refuses `token` unless it is the newest of `name`.
    fn fence(&self, name: &SubscriptionName, token: LeaseToken) -> Result<(), StoreError> {
        let newest = self.leases.get(name).map_or(0, |l| l.newest);
        if newest == token.get() {
            Ok(())
        } else {
            Err(StoreError::LeaseLost {
                name: name.clone(),
                token,
                current: LeaseToken::new(newest),
            })
        }
    }

    /// Whether the checkpoint of `name` is already at or past `position`.
    fn passed(&self, name: &SubscriptionName, position: Position) -> bool {
        self.saved.get(name).is_some_and(|saved| *saved >= position)
    }

    /// Whether the replay of the parked `key` of `name` has passed
    /// `position` (or there is no letter to replay).
    fn replay_passed(&self, name: &SubscriptionName, key: &str, position: Position) -> bool {
        self.letters
            .get(name)
            .and_then(|letters| letters.get(key))
            .is_none_or(|letter| letter.after >= Some(position))
    }

    /// Moves the replay of the parked `key` of `name` forward to `position`.
    fn replay_to(&mut self, name: &SubscriptionName, key: &str, position: Position) {
        if let Some(letter) = self.letters.get_mut(name).and_then(|l| l.get_mut(key))
            && letter.after < Some(position)
        {
            letter.after = Some(position);
        }
    }

    /// Moves the checkpoint of `name` to `position` (checked by the caller
    /// to be ahead), recording the move.
    fn move_to(&mut self, name: &SubscriptionName, position: Position) {
        let from = self.saved.insert(name.clone(), position);
        self.writes
            .entry(name.clone())
            .or_default()
            .push((from, position));
    }
}

/// The lease of one subscription name in an [`InMemoryCheckpointStore`];
/// released on drop.
#[derive(Debug)]
pub struct InMemoryLease {
    name: SubscriptionName,
    token: LeaseToken,
    names: Arc<Mutex<Names>>,
}

impl Drop for InMemoryLease {
    fn drop(&mut self) {
        let mut names = lock(&self.names);
        if let Some(lease) = names.leases.get_mut(&self.name)
            && lease.newest == self.token.get()
        {
            lease.held = false;
        }
    }
}

/// Every method leaves the maps consistent before it can panic (none
/// calls user code but [`ExactlyOnce`], which checks before it applies), so
/// a poisoned lock still guards consistent maps.
pub(crate) fn lock(names: &Mutex<Names>) -> MutexGuard<'_, Names> {
    names.lock().unwrap_or_else(|p| p.into_inner())
}

impl InMemoryCheckpointStore {
    /// No checkpoints.
    pub fn new() -> Self {
        Self::default()
    }

    /// Ends the lease of `name` as the death of its holder's database
    /// session would on a server: the holder's `still_held` answers
    /// `false` and another instance can take the lease (with a newer token,
    /// which fences the old holder's saves). For tests of handovers.
    /// Whether a lease was held.
    pub fn expire_lease(&self, name: &SubscriptionName) -> bool {
        lock(&self.inner)
            .leases
            .get_mut(name)
            .is_some_and(|lease| std::mem::replace(&mut lease.held, false))
    }
}

impl InMemoryCheckpointStore {
    /// Every move of the checkpoint of `name` so far, as (from, to), oldest
    /// first: one entry per save that moved it (an in-memory store keeps
    /// everything, this too). For tests that a checkpoint only moves
    /// forward.
    pub fn writes(&self, name: &SubscriptionName) -> Vec<(Option<Position>, Position)> {
        lock(&self.inner)
            .writes
            .get(name)
            .cloned()
            .unwrap_or_default()
    }
}

impl SubscriptionLeases for InMemoryCheckpointStore {
    type Lease = InMemoryLease;

    async fn try_acquire(
        &self,
        name: &SubscriptionName,
    ) -> Result<Option<InMemoryLease>, StoreError> {
        let mut names = lock(&self.inner);
        let lease = names.leases.entry(name.clone()).or_default();
        if lease.held {
            return Ok(None);
        }
        lease.newest += 1;
        lease.held = true;
        Ok(Some(InMemoryLease {
            name: name.clone(),
            token: LeaseToken::new(lease.newest),
            names: self.inner.clone(),
        }))
    }

    fn token(&self, lease: &InMemoryLease) -> LeaseToken {
        lease.token
    }

    /// Held until dropped or [expired](InMemoryCheckpointStore::expire_lease).
    async fn still_held(&self, lease: &mut InMemoryLease) -> Result<bool, StoreError> {
        let names = lock(&self.inner);
        Ok(names
            .leases
            .get(&lease.name)
            .is_some_and(|l| l.held && l.newest == lease.token.get()))
    }
}

impl CheckpointStore for InMemoryCheckpointStore {
    async fn load(&self, name: &SubscriptionName) -> Result<Option<Position>, StoreError> {
        Ok(lock(&self.inner).saved.get(name).copied())
    }

    async fn save(
        &self,
        name: &SubscriptionName,
        position: Position,
        token: LeaseToken,
    ) -> Result<(), StoreError> {
        let mut names = lock(&self.inner);
        names.fence(name, token)?;
        if !names.passed(name, position) {
            names.move_to(name, position);
        }
        Ok(())
    }
}

impl DeadLetters for InMemoryCheckpointStore {
    async fn park(&self, letter: &DeadLetter, token: LeaseToken) -> Result<(), StoreError> {
        let mut names = lock(&self.inner);
        names.fence(&letter.name, token)?;
        let letters = names.letters.entry(letter.name.clone()).or_default();
        let mut parked = letter.clone();
        parked.action = None;
        if let Some(old) = letters.get(&letter.key) {
            parked.after = parked.after.max(old.after);
        }
        letters.insert(letter.key.clone(), parked);
        Ok(())
    }

    async fn replayed(
        &self,
        name: &SubscriptionName,
        key: &str,
        through: Position,
        token: LeaseToken,
    ) -> Result<(), StoreError> {
        let mut names = lock(&self.inner);
        names.fence(name, token)?;
        names.replay_to(name, key, through);
        Ok(())
    }

    async fn release(
        &self,
        name: &SubscriptionName,
        key: &str,
        token: LeaseToken,
    ) -> Result<(), StoreError> {
        let mut names = lock(&self.inner);
        names.fence(name, token)?;
        if let Some(letters) = names.letters.get_mut(name) {
            letters.remove(key);
        }
        Ok(())
    }

    async fn dead_letters(&self, name: &SubscriptionName) -> Result<Vec<DeadLetter>, StoreError> {
        let names = lock(&self.inner);
        let mut letters: Vec<DeadLetter> = names
            .letters
            .get(name)
            .map(|l| l.values().cloned().collect())
            .unwrap_or_default();
        letters.sort_by_key(|l| l.position);
        Ok(letters)
    }

    async fn resolve(
        &self,
        name: &SubscriptionName,
        key: &str,
        action: DeadLetterAction,
    ) -> Result<bool, StoreError> {
        let mut names = lock(&self.inner);
        Ok(names
            .letters
            .get_mut(name)
            .and_then(|l| l.get_mut(key))
            .map(|letter| letter.action = Some(action))
            .is_some())
    }
}

/// Applies one event to a read model held in memory, as part of the step
/// that moves the subscription's checkpoint: see [`ExactlyOnce`].
pub trait MemoryProjection<E>: Send + 'static {
    /// Applies `event`. An error leaves the checkpoint where it was; the
    /// projection must then leave its read model as it was too (apply
    /// nothing before it can fail).
    ///
    /// # Errors
    /// Whatever stops the event from being applied; the subscription
    /// retries it.
    fn apply(&mut self, context: &EventContext, event: &E) -> Result<(), BoxError>;
}

/// Turns a [`MemoryProjection`] into a subscription [`Handler`] that
/// applies each event exactly once per checkpoint store, across lease
/// handovers: under the checkpoint store's lock it checks that the
/// delivery's lease token is the newest (else [`StoreError::LeaseLost`],
/// and nothing is applied), skips an event the checkpoint has passed
/// (applied already, by this holder or a former one), applies the event
/// and moves the checkpoint to it, all in one step.
///
/// `apply` runs under that lock: keep it short, and do not call the
/// checkpoint store from it.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use eventcore::{BoxError, EventContext, SubscriptionConfig, SubscriptionName, execute, subscribe};
/// use eventcore_memory::{ExactlyOnce, InMemoryEventStore, MemoryProjection};
/// use eventcore_testing::fixtures::{Credit, LedgerEvent, stream};
///
/// #[derive(Clone, Default)]
/// struct Total(Arc<Mutex<u64>>);
///
/// impl MemoryProjection<LedgerEvent> for Total {
///     fn apply(&mut self, _: &EventContext, event: &LedgerEvent) -> Result<(), BoxError> {
///         if let LedgerEvent::Credited { amount, .. } = event {
///             *self.0.lock().unwrap() += amount;
///         }
///         Ok(())
///     }
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let store = InMemoryEventStore::new();
/// execute(&store, Credit { account: stream("a"), amount: 5 }).await.unwrap();
/// let name = SubscriptionName::try_new("total").unwrap();
/// let total = Total::default();
/// let handler = ExactlyOnce::new(&store, name.clone(), total.clone());
/// let handle = subscribe(store.clone(), store, name, handler, SubscriptionConfig::default());
/// let mut at = handle.position();
/// at.wait_for(Option::is_some).await.unwrap();
/// handle.stop().await.unwrap();
/// assert_eq!(*total.0.lock().unwrap(), 5);
/// # });
/// ```
#[derive(Debug)]
pub struct ExactlyOnce<P> {
    checkpoints: InMemoryCheckpointStore,
    name: SubscriptionName,
    inner: P,
}

impl<P> ExactlyOnce<P> {
    /// Wraps `inner` for subscription `name` of `store` (pass the same
    /// name and store to [`subscribe`](eventcore::subscribe)).
    pub fn new(store: &crate::InMemoryEventStore, name: SubscriptionName, inner: P) -> Self {
        Self::with_checkpoints(store.checkpoints().clone(), name, inner)
    }

    /// Wraps `inner` for subscription `name` whose checkpoints live in
    /// `checkpoints`.
    pub fn with_checkpoints(
        checkpoints: InMemoryCheckpointStore,
        name: SubscriptionName,
        inner: P,
    ) -> Self {
        ExactlyOnce {
            checkpoints,
            name,
            inner,
        }
    }
}

impl<E, P> Handler<E> for ExactlyOnce<P>
where
    E: Sync,
    P: MemoryProjection<E>,
{
    async fn handle(&mut self, context: &EventContext, event: &E) -> Result<(), BoxError> {
        let inner = &mut self.inner;
        commit(&self.checkpoints, &self.name, context, |_| {
            inner.apply(context, event)
        })
    }
}

/// Runs `apply` and moves the checkpoint of `name` to the event of
/// `context` (or, for a parked event handed over again, its letter's replay
/// mark), in one step under the checkpoint store's lock, fenced by the
/// delivery's lease token; nothing when the event was applied already.
pub(crate) fn commit(
    checkpoints: &InMemoryCheckpointStore,
    name: &SubscriptionName,
    context: &EventContext,
    apply: impl FnOnce(&mut Names) -> Result<(), BoxError>,
) -> Result<(), BoxError> {
    let position = context.position();
    let mut names = lock(&checkpoints.inner);
    names.fence(name, context.lease_token())?;
    // A parked event handed over again: the checkpoint has passed it;
    // its letter's replay mark says whether it was applied.
    if let Some(key) = context.parked_key() {
        if names.replay_passed(name, key, position) {
            return Ok(());
        }
        apply(&mut names)?;
        names.replay_to(name, key, position);
        return Ok(());
    }
    if names.passed(name, position) {
        return Ok(());
    }
    apply(&mut names)?;
    names.move_to(name, position);
    Ok(())
}

/// Whether the event of `context` was applied already under `name` (the
/// checkpoint, or the replay mark of its parked key, has passed it).
pub(crate) fn applied(
    checkpoints: &InMemoryCheckpointStore,
    name: &SubscriptionName,
    context: &EventContext,
) -> bool {
    let names = lock(&checkpoints.inner);
    match context.parked_key() {
        Some(key) => names.replay_passed(name, key, context.position()),
        None => names.passed(name, context.position()),
    }
}
