//! A store wrapper that injects faults, deterministically from a seed.
//!
//! [`FaultyStore`] sits in front of any [`EventStore`] and, by a seeded
//! random draw on every call, injects:
//!
//! | fault | what the caller sees | what `execute` guarantees |
//! |---|---|---|
//! | [`Fault::Conflict`] before an append | [`StoreError::VersionConflict`] | retries: reads again, decides again; the command is applied at most once |
//! | [`Fault::TransientBeforeRead`] | [`StoreError::Transient`] from the read | retries; nothing was written |
//! | [`Fault::TransientBeforeAppend`] | [`StoreError::Transient`] from the append, which never reached the store | retries; the command is applied at most once |
//! | [`Fault::TransientAfterAppend`] | [`StoreError::Transient`], although the append **committed** | retries: without a command id the command **may be applied twice** (or refused on retry although its first attempt committed); with one ([`ExecuteOptions::with_command_id`](eventcore::ExecuteOptions::with_command_id)) the retry finds it recorded and returns the first outcome, applied once. |
//! | [`Fault::Delay`] | the call takes longer | no change; widens race windows |
//!
//! Draws come from one generator seeded once, so a sequential run is
//! replayed exactly by its seed; a concurrent run draws in the order the
//! tasks reach the store, which the scheduler decides.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use eventcore::{
    AppendOutcome, EventStore, ReadAnswer, ReadRequest, StoreError, StoreIdentity, StreamVersion,
    StreamWrites,
};

/// One kind of injected fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Fault {
    /// An append rejected with a version conflict without reaching the store.
    Conflict,
    /// A read failed transiently without reaching the store.
    TransientBeforeRead,
    /// An append failed transiently without reaching the store.
    TransientBeforeAppend,
    /// An append committed, then was reported as a transient failure.
    TransientAfterAppend,
    /// A call was delayed.
    Delay,
}

/// How often each fault is injected: probabilities per call, 0.0 to 1.0.
/// Start from [`none`](FaultPlan::none) and set what you need with the
/// `with_` methods.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct FaultPlan {
    /// Per append: reject with an injected conflict.
    pub conflict: f64,
    /// Per read: fail transiently.
    pub transient_before_read: f64,
    /// Per append: fail transiently before the store sees it.
    pub transient_before_append: f64,
    /// Per append: let it commit, then report a transient failure.
    pub transient_after_append: f64,
    /// Per call: wait up to `max_delay` first.
    pub delay: f64,
    /// The longest injected delay.
    pub max_delay: Duration,
}

impl FaultPlan {
    /// No faults at all.
    pub fn none() -> Self {
        FaultPlan {
            conflict: 0.0,
            transient_before_read: 0.0,
            transient_before_append: 0.0,
            transient_after_append: 0.0,
            delay: 0.0,
            max_delay: Duration::ZERO,
        }
    }

    /// Sets the probability of an injected conflict per append.
    pub fn with_conflict(mut self, p: f64) -> Self {
        self.conflict = p;
        self
    }

    /// Sets the probability of a transient failure per read.
    pub fn with_transient_before_read(mut self, p: f64) -> Self {
        self.transient_before_read = p;
        self
    }

    /// Sets the probability of a transient failure before an append.
    pub fn with_transient_before_append(mut self, p: f64) -> Self {
        self.transient_before_append = p;
        self
    }

    /// Sets the probability of a transient failure reported after an
    /// append committed.
    pub fn with_transient_after_append(mut self, p: f64) -> Self {
        self.transient_after_append = p;
        self
    }

    /// Sets the probability of a delay per call.
    pub fn with_delay(mut self, p: f64) -> Self {
        self.delay = p;
        self
    }

    /// Sets the longest injected delay.
    pub fn with_max_delay(mut self, max_delay: Duration) -> Self {
        self.max_delay = max_delay;
        self
    }
}

/// The error inside an injected [`StoreError::Transient`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("fault injected by eventcore-testing: {0:?}")]
pub struct InjectedFault(pub Fault);

/// Wraps a store and injects the faults of a [`FaultPlan`].
#[derive(Debug, Clone)]
pub struct FaultyStore<S> {
    inner: S,
    plan: FaultPlan,
    state: Arc<Mutex<FaultState>>,
}

#[derive(Debug)]
struct FaultState {
    rng: fastrand::Rng,
    injected: Vec<Fault>,
}

impl<S: EventStore> FaultyStore<S> {
    /// Wraps `inner`; `seed` fixes every draw.
    pub fn new(inner: S, plan: FaultPlan, seed: u64) -> Self {
        FaultyStore {
            inner,
            plan,
            state: Arc::new(Mutex::new(FaultState {
                rng: fastrand::Rng::with_seed(seed),
                injected: Vec::new(),
            })),
        }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Every fault injected so far, in order.
    pub fn injected(&self) -> Vec<Fault> {
        self.lock().injected.clone()
    }

    /// How many faults of one kind were injected.
    pub fn count(&self, fault: Fault) -> usize {
        self.lock().injected.iter().filter(|f| **f == fault).count()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FaultState> {
        // The state is a generator and a list; a panic elsewhere cannot leave it inconsistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Draws whether to inject `fault` with probability `p`, recording it.
    fn draw(&self, fault: Fault, p: f64) -> bool {
        let mut state = self.lock();
        let hit = p > 0.0 && state.rng.f64() < p;
        if hit {
            state.injected.push(fault);
        }
        hit
    }

    async fn maybe_delay(&self) {
        let wait = {
            let mut state = self.lock();
            if self.plan.delay > 0.0 && state.rng.f64() < self.plan.delay {
                state.injected.push(Fault::Delay);
                let nanos = u64::try_from(self.plan.max_delay.as_nanos()).unwrap_or(u64::MAX);
                Some(Duration::from_nanos(state.rng.u64(0..=nanos)))
            } else {
                None
            }
        };
        if let Some(wait) = wait {
            tokio::time::sleep(wait).await;
        }
    }
}

fn transient(operation: &'static str, fault: Fault) -> StoreError {
    StoreError::Transient {
        operation,
        source: Box::new(InjectedFault(fault)),
    }
}

/// Every method forwarded, so that a store under faults takes the paths it
/// takes without them (its command-id and snapshot reads; the executor's
/// cache and queue, through the wrapped store's identity); the lint catches
/// one forgotten.
#[deny(clippy::missing_trait_methods)]
impl<S: EventStore> EventStore for FaultyStore<S> {
    async fn read(&self, request: ReadRequest) -> Result<ReadAnswer, StoreError> {
        self.maybe_delay().await;
        if self.draw(Fault::TransientBeforeRead, self.plan.transient_before_read) {
            return Err(transient("read", Fault::TransientBeforeRead));
        }
        self.inner.read(request).await
    }

    fn identity(&self) -> &StoreIdentity {
        self.inner.identity()
    }

    async fn append(&self, writes: StreamWrites) -> Result<AppendOutcome, StoreError> {
        self.maybe_delay().await;
        if let Some((stream_id, expected)) = writes.expected_versions().first().cloned()
            && self.draw(Fault::Conflict, self.plan.conflict)
        {
            return Err(StoreError::VersionConflict {
                stream_id,
                expected,
                actual: StreamVersion::new(expected.get().saturating_add(1)),
            });
        }
        if self.draw(
            Fault::TransientBeforeAppend,
            self.plan.transient_before_append,
        ) {
            return Err(transient("append", Fault::TransientBeforeAppend));
        }
        let outcome = self.inner.append(writes).await?;
        if self.draw(
            Fault::TransientAfterAppend,
            self.plan.transient_after_append,
        ) {
            return Err(transient("append", Fault::TransientAfterAppend));
        }
        Ok(outcome)
    }
}

/// Pruning goes straight to the wrapped store: no fault is injected.
impl<S: eventcore::CommandRecords> eventcore::CommandRecords for FaultyStore<S> {
    async fn prune_commands(&self, older_than: Duration) -> Result<u64, StoreError> {
        self.inner.prune_commands(older_than).await
    }
}
