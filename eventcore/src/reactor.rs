//! Reactors: handlers run off the log whose side effects happen once.
//!
//! A reactor reacts to each event of a subscription with any of three
//! kinds of effect, each keyed by (reactor, event, index) so that a
//! reactor replayed after a crash or a lease handover produces the same
//! keys again:
//!
//! - **database writes** in the transaction that moves its checkpoint (the
//!   exactly-once projections of each store): exactly once;
//! - **external effects** (an HTTP call, a mail, a message) recorded in the
//!   store's [`Outbox`] in that same transaction, with a deterministic
//!   [`EffectKey`]; a [`dispatch`]er later delivers them without holding a
//!   transaction open across the call, retries with capped backoff, and
//!   parks an effect that keeps failing. Delivery is at least once; the
//!   receiver sees each effect once by its key (send it as an
//!   `Idempotency-Key`);
//! - **commands**, executed with [`Reaction::command_id`] (derived from the
//!   reactor, the event and the command's index): the store's command
//!   record makes a command issued again by a replay write nothing, so a
//!   process manager applies each command once.
//!
//! A [`Reaction`] hands out the keys and collects the external effects for
//! one event; the stores' reactor adapters write them to their outbox with
//! the checkpoint.

use std::{future::Future, time::Duration, time::SystemTime};

use crate::{
    BoxError, CommandId, EventContext, ExecuteOptions, Position, RetryPolicy, StoreError,
    SubscriptionName, Uuid,
};

/// The most characters of a delivery error an effect keeps.
pub const MAX_EFFECT_ERROR_CHARS: usize = 2_000;

/// The idempotency key of one external effect: the reactor's name, the id
/// of the event it reacted to, and the effect's index among that event's
/// effects, as `{reactor}/{event id}/e{index}`. The same reaction to the
/// same event always yields the same keys.
///
/// ```
/// use eventcore::{EffectKey, SubscriptionName, Uuid};
/// let reactor = SubscriptionName::try_new("statements").unwrap();
/// let event = Uuid::nil();
/// let key = EffectKey::new(&reactor, event, 0);
/// assert_eq!(key.as_str(), "statements/00000000-0000-0000-0000-000000000000/e0");
/// assert_eq!(key, EffectKey::new(&reactor, event, 0));
/// assert_ne!(key, EffectKey::new(&reactor, event, 1));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EffectKey(String);

impl EffectKey {
    /// The key of effect `index` of `reactor`'s reaction to event `event_id`.
    pub fn new(reactor: &SubscriptionName, event_id: Uuid, index: u32) -> Self {
        EffectKey(format!("{reactor}/{event_id}/e{index}"))
    }

    /// A key as a store gives it back (not checked: for stores reading
    /// their rows).
    pub fn from_stored(key: impl Into<String>) -> Self {
        EffectKey(key.into())
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for EffectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The command id of command `index` of `reactor`'s reaction to event
/// `event_id`, as `{reactor}/{event id}/c{index}`: the same on every replay,
/// so a command issued again after a crash or a handover writes nothing.
///
/// ```
/// use eventcore::{SubscriptionName, Uuid, reaction_command_id};
/// let reactor = SubscriptionName::try_new("fulfilment").unwrap();
/// let id = reaction_command_id(&reactor, Uuid::nil(), 2);
/// assert_eq!(id.as_str(), "fulfilment/00000000-0000-0000-0000-000000000000/c2");
/// ```
pub fn reaction_command_id(reactor: &SubscriptionName, event_id: Uuid, index: u32) -> CommandId {
    // A name has at most 200 characters, so the id has at most
    // 200 + 1 + 36 + 2 + 10 = 249, within a command id's 255, and no
    // control characters (neither has a name).
    let id = format!("{reactor}/{event_id}/c{index}");
    CommandId::try_new(id).unwrap_or_else(|_| CommandId::from(event_id))
}

/// An external effect as a reactor records it: where it goes and what it
/// says.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Effect {
    /// Its idempotency key.
    pub key: EffectKey,
    /// The reactor that recorded it.
    pub reactor: SubscriptionName,
    /// Where it goes: a name the dispatcher's [`Deliver`] understands (a
    /// queue, an endpoint).
    pub destination: String,
    /// What it says.
    pub payload: serde_json::Value,
    /// The event it reacts to.
    pub event_id: Uuid,
    /// That event's place in the log.
    pub position: Position,
}

impl Effect {
    /// An effect as a store reads it back.
    pub fn recorded(
        key: EffectKey,
        reactor: SubscriptionName,
        destination: impl Into<String>,
        payload: serde_json::Value,
        event_id: Uuid,
        position: Position,
    ) -> Self {
        Effect {
            key,
            reactor,
            destination: destination.into(),
            payload,
            event_id,
            position,
        }
    }
}

/// One reactor's reaction to one event: hands out the keys of its effects
/// and the ids of its commands in order, and collects the external effects
/// for the store's adapter to record in the outbox with the checkpoint.
///
/// ```
/// use eventcore::{EventContext, Position, Reaction, RecordedEvent, StreamId, StreamVersion, SubscriptionName};
/// # let recorded = RecordedEvent::new(StreamId::try_new("a").unwrap(), StreamVersion::new(1), 1, "Opened", "{}");
/// let context = EventContext::new(Position::new(1, 0), recorded);
/// let reactor = SubscriptionName::try_new("mailer").unwrap();
/// let mut reaction = Reaction::new(&reactor, &context);
/// let key = reaction.effect("mail", serde_json::json!({"to": "alice"}));
/// let command = reaction.command_id();
/// assert!(key.as_str().ends_with("/e0"));
/// assert!(command.as_str().ends_with("/c0"));
/// assert_eq!(reaction.effects().len(), 1);
/// ```
#[derive(Debug, Clone)]
pub struct Reaction {
    reactor: SubscriptionName,
    context: EventContext,
    effects: Vec<Effect>,
    commands: u32,
}

impl Reaction {
    /// The reaction of `reactor` to the event of `context`, with no effect yet.
    pub fn new(reactor: &SubscriptionName, context: &EventContext) -> Self {
        Reaction {
            reactor: reactor.clone(),
            context: context.clone(),
            effects: Vec::new(),
            commands: 0,
        }
    }

    /// The event's delivery.
    pub fn context(&self) -> &EventContext {
        &self.context
    }

    /// The reactor's name.
    pub fn reactor(&self) -> &SubscriptionName {
        &self.reactor
    }

    /// Records an external effect to `destination`, delivered after the
    /// checkpoint commits; returns its key (the receiver's idempotency key).
    pub fn effect(
        &mut self,
        destination: impl Into<String>,
        payload: serde_json::Value,
    ) -> EffectKey {
        let index = u32::try_from(self.effects.len()).unwrap_or(u32::MAX);
        let recorded = self.context.recorded();
        let key = EffectKey::new(&self.reactor, recorded.event_id(), index);
        self.effects.push(Effect {
            key: key.clone(),
            reactor: self.reactor.clone(),
            destination: destination.into(),
            payload,
            event_id: recorded.event_id(),
            position: self.context.position(),
        });
        key
    }

    /// The id for the reaction's next command (see
    /// [`reaction_command_id`]): pass it to
    /// [`ExecuteOptions::with_command_id`], or take [`command_options`](Self::command_options).
    pub fn command_id(&mut self) -> CommandId {
        let id = reaction_command_id(
            &self.reactor,
            self.context.recorded().event_id(),
            self.commands,
        );
        self.commands = self.commands.saturating_add(1);
        id
    }

    /// Options for the reaction's next command: its derived
    /// [`command_id`](Self::command_id), and metadata naming the event as
    /// its cause ([`ExecuteOptions::caused_by`]).
    pub fn command_options(&mut self) -> ExecuteOptions {
        let id = self.command_id();
        ExecuteOptions::default()
            .caused_by(self.context.recorded())
            .with_command_id(id)
    }

    /// The external effects recorded so far, in order.
    pub fn effects(&self) -> &[Effect] {
        &self.effects
    }

    /// The external effects, for the store's adapter to record.
    pub fn into_effects(self) -> Vec<Effect> {
        self.effects
    }
}

/// Reacts to the events of a subscription with effects that happen once:
/// database writes committed with the checkpoint (through a store's adapter,
/// exactly once), external effects recorded in the store's [`Outbox`] with
/// the checkpoint and delivered at least once by a [`dispatch`]er, each
/// under a deterministic [`EffectKey`] the receiver drops repeats by, and
/// commands with [`Reaction::command_id`], applied once however often a
/// replay issues them. The reactor
/// issues commands with the reaction's ids and records external effects in
/// it. A store's reactor adapter runs it and records the effects with the
/// checkpoint, in one transaction.
pub trait Reactor<E>: Send + 'static {
    /// Reacts to one event. An error records nothing (no effect, no
    /// checkpoint move); the subscription retries the event, and the
    /// commands already issued write nothing the second time.
    fn react(
        &mut self,
        reaction: &mut Reaction,
        event: &E,
    ) -> impl Future<Output = Result<(), BoxError>> + Send;
}

/// Where an effect stands in the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EffectState {
    /// Waiting for delivery (or being delivered under a claim).
    Pending,
    /// Delivered.
    Delivered,
    /// Failed on every attempt allowed: waits for an operator.
    Parked,
    /// Dropped by an operator.
    Skipped,
}

impl EffectState {
    /// Its name as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            EffectState::Pending => "pending",
            EffectState::Delivered => "delivered",
            EffectState::Parked => "parked",
            EffectState::Skipped => "skipped",
        }
    }

    /// The state named `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "pending" => Some(EffectState::Pending),
            "delivered" => Some(EffectState::Delivered),
            "parked" => Some(EffectState::Parked),
            "skipped" => Some(EffectState::Skipped),
            _ => None,
        }
    }
}

/// What an operator asks for a parked effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EffectAction {
    /// Deliver it again, with a fresh count of attempts.
    Retry,
    /// Drop it.
    Skip,
}

/// An effect as the outbox holds it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct StoredEffect {
    /// The effect as recorded.
    pub effect: Effect,
    /// Where it stands.
    pub state: EffectState,
    /// Attempts made since it was recorded or last retried by an operator
    /// (a claim counts as one).
    pub attempts: u32,
    /// The claim under which it is being delivered: the number of claims
    /// made on it so far (every claim makes a new one). Marks made under an
    /// older claim are refused.
    pub claim: u64,
    /// The last delivery error (at most [`MAX_EFFECT_ERROR_CHARS`]).
    pub last_error: Option<String>,
    /// When it was recorded.
    pub recorded_at: SystemTime,
}

impl StoredEffect {
    /// A pending effect, never attempted: for stores reading their rows
    /// back and setting the other fields.
    pub fn pending(effect: Effect) -> Self {
        StoredEffect {
            effect,
            state: EffectState::Pending,
            attempts: 0,
            claim: 0,
            last_error: None,
            recorded_at: SystemTime::now(),
        }
    }
}

/// What a failed delivery leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Try again once `after` has passed.
    RetryAfter(Duration),
    /// Park the effect for an operator.
    Park,
}

/// A store's outbox: the external effects reactors recorded with their
/// checkpoints, and their delivery.
///
/// # Contract
/// - Effects are recorded by the store's reactor adapter, in the
///   transaction that moves the reactor's checkpoint; a key recorded twice
///   keeps the first.
/// - `claim` takes up to `limit` pending effects that are due (recorded,
///   retried after their backoff, or claimed by a dispatcher whose claim
///   ran out) in the order they were recorded, skipping those other
///   dispatchers hold; each claimed effect's attempts and claim number go up
///   by one, and it is not due again before `lease` has passed.
/// - `delivered` and `failed` succeed only under the effect's current
///   claim, on a pending effect, once per claim (else `Ok(false)`, nothing
///   written): a dispatcher whose claim ran out and was taken over marks
///   nothing.
/// - `parked_effects` lists parked effects, oldest first; `resolve_effect`
///   makes a parked effect pending again (attempts counted afresh) or skips
///   it, and says whether it was parked. Neither is fenced.
pub trait Outbox: Send + Sync {
    /// Claims due effects for delivery.
    ///
    /// # Errors
    /// The backend's failure.
    fn claim(
        &self,
        limit: usize,
        lease: Duration,
    ) -> impl Future<Output = Result<Vec<StoredEffect>, StoreError>> + Send;

    /// Marks a claimed effect delivered; whether the claim still held.
    ///
    /// # Errors
    /// The backend's failure.
    fn delivered(
        &self,
        key: &EffectKey,
        claim: u64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Records a failed delivery of a claimed effect (`error`, kept to
    /// [`MAX_EFFECT_ERROR_CHARS`]), and what follows; whether the claim
    /// still held.
    ///
    /// # Errors
    /// The backend's failure.
    fn failed(
        &self,
        key: &EffectKey,
        claim: u64,
        error: &str,
        then: AfterFailure,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Hands back a claimed effect that was not attempted (a dispatcher
    /// stopping with claims left): due at once for the next claim, and
    /// that claim not counted as an attempt; whether the claim still held.
    ///
    /// # Errors
    /// The backend's failure.
    fn release_effect(
        &self,
        key: &EffectKey,
        claim: u64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// The effect of `key`, in whatever state.
    ///
    /// # Errors
    /// The backend's failure.
    fn effect(
        &self,
        key: &EffectKey,
    ) -> impl Future<Output = Result<Option<StoredEffect>, StoreError>> + Send;

    /// The parked effects, oldest first.
    ///
    /// # Errors
    /// The backend's failure.
    fn parked_effects(&self) -> impl Future<Output = Result<Vec<StoredEffect>, StoreError>> + Send;

    /// Retries or skips a parked effect; whether it was parked.
    ///
    /// # Errors
    /// The backend's failure.
    fn resolve_effect(
        &self,
        key: &EffectKey,
        action: EffectAction,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Waits until effects may have been recorded (a wake-up from a
    /// reactor's commit, in process or from another one) or `timeout`
    /// passes, whichever is first. May return early.
    fn wait_for_effects(&self, timeout: Duration) -> impl Future<Output = ()> + Send;
}

/// Forwarding impls for `&S`, `Arc<S>` and `Box<S>`; every method is
/// forwarded (the lint catches one forgotten).
macro_rules! forward_outbox {
    ($($wrapper:ty),+) => {$(
        #[warn(clippy::missing_trait_methods)]
        impl<S: Outbox + ?Sized> Outbox for $wrapper {
            fn claim(
                &self,
                limit: usize,
                lease: Duration,
            ) -> impl Future<Output = Result<Vec<StoredEffect>, StoreError>> + Send {
                (**self).claim(limit, lease)
            }

            fn delivered(
                &self,
                key: &EffectKey,
                claim: u64,
            ) -> impl Future<Output = Result<bool, StoreError>> + Send {
                (**self).delivered(key, claim)
            }

            fn failed(
                &self,
                key: &EffectKey,
                claim: u64,
                error: &str,
                then: AfterFailure,
            ) -> impl Future<Output = Result<bool, StoreError>> + Send {
                (**self).failed(key, claim, error, then)
            }

            fn release_effect(
                &self,
                key: &EffectKey,
                claim: u64,
            ) -> impl Future<Output = Result<bool, StoreError>> + Send {
                (**self).release_effect(key, claim)
            }

            fn effect(
                &self,
                key: &EffectKey,
            ) -> impl Future<Output = Result<Option<StoredEffect>, StoreError>> + Send {
                (**self).effect(key)
            }

            fn parked_effects(
                &self,
            ) -> impl Future<Output = Result<Vec<StoredEffect>, StoreError>> + Send {
                (**self).parked_effects()
            }

            fn resolve_effect(
                &self,
                key: &EffectKey,
                action: EffectAction,
            ) -> impl Future<Output = Result<bool, StoreError>> + Send {
                (**self).resolve_effect(key, action)
            }

            fn wait_for_effects(&self, timeout: Duration) -> impl Future<Output = ()> + Send {
                (**self).wait_for_effects(timeout)
            }
        }
    )+};
}

forward_outbox!(&S, std::sync::Arc<S>, Box<S>);

/// Delivers effects for a [`dispatch`]er: one call per attempt. Send the
/// effect's key along (an `Idempotency-Key` header, a message id) so the
/// receiver can tell a repeat: delivery is at least once.
pub trait Deliver: Send + Sync + 'static {
    /// Delivers `effect`. An error counts as a failed attempt.
    fn deliver(&self, effect: &StoredEffect) -> impl Future<Output = Result<(), BoxError>> + Send;
}

/// How a dispatcher claims, retries and parks. Start from
/// [`default`](DispatchConfig::default) and change what you need.
///
/// ```
/// use std::{num::NonZeroU32, time::Duration};
/// use eventcore::{DispatchConfig, RetryPolicy};
/// let config = DispatchConfig::default()
///     .with_retry(RetryPolicy::default().with_max_attempts(NonZeroU32::new(3).unwrap()))
///     .with_lease(Duration::from_secs(10));
/// assert_eq!(config.retry.max_attempts(), 3);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DispatchConfig {
    /// The most effects claimed at once.
    pub batch: usize,
    /// How long a claim keeps other dispatchers off an effect: longer than
    /// a delivery takes.
    pub lease: Duration,
    /// Attempts before an effect parks (`max_attempts`) and the capped,
    /// jittered backoff between them (`base_delay` doubling up to
    /// `max_delay`).
    pub retry: RetryPolicy,
    /// How long the dispatcher waits for a wake-up before it looks again.
    pub poll_interval: Duration,
}

impl Default for DispatchConfig {
    /// 32 effects a claim, a 30 s lease, 8 attempts with waits from 100 ms
    /// capped at 30 s, a look at least every 500 ms.
    fn default() -> Self {
        DispatchConfig {
            batch: 32,
            lease: Duration::from_secs(30),
            retry: RetryPolicy::default()
                .with_max_attempts(
                    std::num::NonZeroU32::new(8).unwrap_or(std::num::NonZeroU32::MIN),
                )
                .with_base_delay(Duration::from_millis(100))
                .with_max_delay(Duration::from_secs(30)),
            poll_interval: Duration::from_millis(500),
        }
    }
}

impl DispatchConfig {
    /// Sets how many effects are claimed at once (at least 1).
    pub fn with_batch(mut self, batch: usize) -> Self {
        self.batch = batch.max(1);
        self
    }

    /// Sets the claim's lease.
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Sets the attempts and backoff.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Sets the longest wait between looks.
    pub fn with_poll_interval(mut self, poll_interval: Duration) -> Self {
        self.poll_interval = poll_interval;
        self
    }
}

/// What a dispatcher did, when it stopped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DispatchReport {
    /// Effects delivered and marked so.
    pub delivered: u64,
    /// Failed attempts (retried later or parked).
    pub failed: u64,
    /// Effects parked.
    pub parked: u64,
    /// Marks refused because the claim had been taken over.
    pub claims_lost: u64,
    /// Store errors the dispatcher waited out.
    pub store_errors: u64,
}

/// A running dispatcher.
#[derive(Debug)]
pub struct DispatchHandle {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<DispatchReport>,
}

impl DispatchHandle {
    /// Whether the dispatcher's task has ended.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops after the delivery in progress (if any) and reports.
    pub async fn stop(self) -> DispatchReport {
        let _ = self.stop.send(true);
        self.task.await.unwrap_or_default()
    }

    /// Ends the dispatcher at once, as a crash would: a delivery in
    /// progress is cut off before it is marked; its claim runs out and
    /// another dispatcher delivers it again.
    pub fn abort(self) {
        self.task.abort();
    }
}

/// Starts a dispatcher: claims due effects from `outbox`, delivers each
/// through `deliver` with no transaction open, marks it delivered, and on
/// an error retries it after the policy's backoff or, after the last
/// attempt allowed, parks it. Several dispatchers may run on one outbox
/// (in this process or others): claims keep them off each other's effects.
/// Must be called within a Tokio runtime.
pub fn dispatch<O, D>(outbox: O, deliver: D, config: DispatchConfig) -> DispatchHandle
where
    O: Outbox + 'static,
    D: Deliver,
{
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move {
        let mut report = DispatchReport::default();
        let mut store_retries = 0u32;
        while !*stopped.borrow() {
            let claimed = match outbox.claim(config.batch, config.lease).await {
                Ok(claimed) => {
                    store_retries = 0;
                    claimed
                }
                Err(error) => {
                    report.store_errors += 1;
                    store_retries = store_retries.saturating_add(1);
                    tracing::warn!(%error, "outbox claim failed; waiting");
                    let wait = config
                        .retry
                        .ceiling(store_retries)
                        .max(Duration::from_millis(10));
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = stopped.changed() => {}
                    }
                    continue;
                }
            };
            let full = claimed.len() >= config.batch;
            let mut claimed = claimed.into_iter();
            for effect in claimed.by_ref() {
                deliver_one(&outbox, &deliver, &config, &effect, &mut report).await;
                if *stopped.borrow() {
                    break;
                }
            }
            // Asked to stop with claims left: handed back, due at once for
            // the next dispatcher (one that cannot be, a store error, runs
            // out with its lease).
            for effect in claimed {
                if let Err(error) = outbox
                    .release_effect(&effect.effect.key, effect.claim)
                    .await
                {
                    report.store_errors += 1;
                    tracing::warn!(effect = %effect.effect.key, %error, "releasing a claim failed");
                }
            }
            if !full {
                tokio::select! {
                    () = outbox.wait_for_effects(config.poll_interval) => {}
                    _ = stopped.changed() => {}
                }
            }
        }
        report
    });
    DispatchHandle { stop, task }
}

async fn deliver_one<O: Outbox, D: Deliver>(
    outbox: &O,
    deliver: &D,
    config: &DispatchConfig,
    effect: &StoredEffect,
    report: &mut DispatchReport,
) {
    let key = &effect.effect.key;
    let outcome = deliver.deliver(effect).await;
    let marked = match &outcome {
        Ok(()) => outbox.delivered(key, effect.claim).await,
        Err(error) => {
            report.failed += 1;
            let text = error.to_string();
            let then = if effect.attempts >= config.retry.max_attempts() {
                AfterFailure::Park
            } else {
                AfterFailure::RetryAfter(config.retry.delay(effect.attempts, fastrand::u64(..)))
            };
            tracing::warn!(effect = %key, attempts = effect.attempts, error = %text, parked = then == AfterFailure::Park, "effect delivery failed");
            let marked = outbox.failed(key, effect.claim, &text, then).await;
            if then == AfterFailure::Park && matches!(marked, Ok(true)) {
                report.parked += 1;
            }
            marked
        }
    };
    match marked {
        Ok(true) => {
            if outcome.is_ok() {
                report.delivered += 1;
            }
        }
        Ok(false) => report.claims_lost += 1,
        Err(error) => {
            // The claim runs out and the effect is delivered again.
            report.store_errors += 1;
            tracing::warn!(effect = %key, %error, "marking an effect failed");
        }
    }
}

/// A [`Deliver`] from an async closure.
pub fn deliver_fn<F, Fut>(f: F) -> impl Deliver
where
    F: Fn(StoredEffect) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), BoxError>> + Send,
{
    struct DeliverFn<F>(F);
    impl<F, Fut> Deliver for DeliverFn<F>
    where
        F: Fn(StoredEffect) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), BoxError>> + Send,
    {
        fn deliver(
            &self,
            effect: &StoredEffect,
        ) -> impl Future<Output = Result<(), BoxError>> + Send {
            (self.0)(effect.clone())
        }
    }
    DeliverFn(f)
}
