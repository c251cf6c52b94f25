//! Reactors and the outbox: the scenarios every store runs.
//!
//! - [`reactors_act_once_across_kills`]: instances of one reactor are
//!   killed while they hang between their effects and their checkpoint,
//!   lose their lease in the middle of pages, and a dispatcher is killed
//!   in the middle of a delivery, while events keep arriving. Afterwards
//!   every database write was committed once per event, every command the
//!   reactor issued was applied once, every external effect was recorded
//!   once and delivered, and the receiver saw each key (at least once
//!   through the wire, once by its key).
//! - [`a_poison_effect_parks_while_others_are_delivered`]: an effect whose
//!   delivery keeps failing parks after the attempts allowed, with its
//!   error, while the others are delivered; a retry delivers it once cured,
//!   a skip drops it for good.
//! - [`outbox_claims_are_fenced`]: the contract of [`Outbox`] itself:
//!   claims in recorded order, held effects not claimed again before their
//!   lease runs out, marks under an old claim refused, backoff, parking and
//!   its resolution.
//!
//! A backend provides a [`ReactorFixture`]: its reactor adapter, wrapping
//! the kit's [`Statements`] reactor with a database write per event
//! committed with the checkpoint.

use std::{
    collections::{HashMap, HashSet},
    future::Future,
    num::NonZeroU32,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use eventcore::{
    AfterFailure, BoxError, CheckpointStore, DeadLetters, DispatchConfig, DispatchHandle,
    EffectAction, EffectKey, EffectState, EventLog, EventStore, Handler, Lane, Lanes, LanesHandle,
    MAX_EFFECT_ERROR_CHARS, Outbox, Position, Reaction, Reactor, RecordedEvent, RetryPolicy,
    StoredEffect, SubscriptionConfig, SubscriptionHandle, SubscriptionLeases, SubscriptionName,
    Uuid, deliver_fn, dispatch, execute, execute_with, subscribe, subscribe_lanes,
};

use crate::{
    fixtures::{Credit, LedgerEvent, stream},
    lanes::full_log,
};

const DEADLINE: Duration = Duration::from_secs(60);

/// What a backend gives the scenarios.
pub trait ReactorFixture: Send + Sync {
    /// The store: log, checkpoints, leases and outbox.
    type Store: EventStore
        + EventLog
        + CheckpointStore
        + SubscriptionLeases
        + DeadLetters
        + Outbox
        + Clone
        + Send
        + Sync
        + 'static;
    /// The store's reactor adapter around [`Statements`].
    type Handler: Handler<LedgerEvent>;

    /// The store to write through and to inspect.
    fn store(&self) -> &Self::Store;

    /// A store value of its own for instance `instance`, as another process
    /// would have (its own connections and sessions).
    fn process(&self, instance: usize) -> impl Future<Output = Self::Store> + Send;

    /// The store's reactor adapter running `reactor` as subscription `name`
    /// on `store`: for every event it reacts to, it first writes the event's
    /// id to a record of database writes, in the step (transaction) that
    /// records the reaction's effects and moves the checkpoint.
    fn reacting(
        &self,
        store: &Self::Store,
        name: &SubscriptionName,
        reactor: Statements<Self::Store>,
    ) -> Self::Handler;

    /// A factory of the store's reactor adapter on `store` for the lanes
    /// of a subscription run in lanes: for a lane and a reactor, the
    /// adapter [`reacting`](Self::reacting) would make, the lane's
    /// checkpoint moving, the effects and commands named after
    /// [`Lane::base`].
    fn reacting_in_lanes(
        &self,
        store: &Self::Store,
    ) -> impl FnMut(&Lane, Statements<Self::Store>) -> Self::Handler + Send + 'static;

    /// Ends the lease of `name` as the death of its holder's session would;
    /// whether a lease was held to end.
    fn lose_lease(&self, name: &SubscriptionName) -> impl Future<Output = bool> + Send;

    /// The event ids of every database write committed, in order.
    fn written(&self) -> impl Future<Output = Vec<Uuid>> + Send;
}

/// What the scenarios steer and watch in their reactors, shared by every
/// instance.
#[derive(Debug, Clone, Default)]
pub struct Control {
    state: Arc<Mutex<ControlState>>,
}

#[derive(Debug, Default)]
struct ControlState {
    /// Events (stream, version) to hang on, once, after reacting.
    hang: HashSet<(String, u64)>,
    /// Instances that hung, in order, not yet dealt with.
    hung: Vec<usize>,
    /// Events (stream, version) whose first reaction is slow, and how slow.
    slow: HashMap<(String, u64), Duration>,
    /// Reactions that began a slow event, not yet dealt with.
    slowed: u32,
    /// Reactions begun, by event.
    reactions: HashMap<Uuid, u32>,
    /// Time spent on every event.
    pace: Duration,
}

impl Control {
    fn state(&self) -> MutexGuard<'_, ControlState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes the first reaction to version `version` of `stream` hang for
    /// good once it has issued its command and recorded its effects, before
    /// its checkpoint commits: the moment a kill hurts most.
    pub fn hang_on(&self, stream: &str, version: u64) {
        self.state().hang.insert((stream.to_owned(), version));
    }

    /// Makes the first reaction to version `version` of `stream` take
    /// `time` before it records anything: a holder inside a page, long
    /// enough for its lease to be taken over.
    pub fn slow_on(&self, stream: &str, version: u64, time: Duration) {
        self.state().slow.insert((stream.to_owned(), version), time);
    }

    /// How many reactions began a slow event since the last look.
    fn take_slowed(&self) -> u32 {
        let mut state = self.state();
        std::mem::take(&mut state.slowed)
    }

    /// Sets the time every reaction takes.
    pub fn pace(&self, per_event: Duration) {
        self.state().pace = per_event;
    }

    /// The next instance that hung, if one did.
    fn take_hung(&self) -> Option<usize> {
        let mut state = self.state();
        (!state.hung.is_empty()).then(|| state.hung.remove(0))
    }

    /// How many reactions to `event` began.
    fn reactions(&self, event: Uuid) -> u32 {
        self.state().reactions.get(&event).copied().unwrap_or(0)
    }
}

/// The kit's reactor. To every credit of an account (not of a mirror) it
/// reacts with two external effects, a statement and an audit record, and
/// one command: the same credit to the account's mirror (`mirror-{id}`),
/// issued with the reaction's command id.
#[derive(Debug)]
pub struct Statements<S> {
    store: S,
    instance: usize,
    control: Control,
}

impl<S> Statements<S> {
    /// The reactor of instance `instance`, issuing its commands to `store`.
    pub fn new(store: S, instance: usize, control: Control) -> Self {
        Statements {
            store,
            instance,
            control,
        }
    }
}

/// The mirror account of account `stream`.
fn mirror_of(stream: &str) -> String {
    format!("mirror-{stream}")
}

impl<S: EventStore + Send + Sync + 'static> Reactor<LedgerEvent> for Statements<S> {
    async fn react(
        &mut self,
        reaction: &mut Reaction,
        event: &LedgerEvent,
    ) -> Result<(), BoxError> {
        let recorded = reaction.context().recorded().clone();
        let LedgerEvent::Credited {
            account, amount, ..
        } = event
        else {
            return Ok(());
        };
        if account.as_ref().starts_with("mirror-") {
            return Ok(());
        }
        let (hang, pace) = {
            let mut state = self.control.state();
            *state.reactions.entry(recorded.event_id()).or_default() += 1;
            let at = (account.to_string(), recorded.version().get());
            let slow = state.slow.remove(&at).unwrap_or_default();
            if !slow.is_zero() {
                state.slowed += 1;
            }
            (state.hang.remove(&at), state.pace + slow)
        };
        if !pace.is_zero() {
            tokio::time::sleep(pace).await;
        }
        reaction.effect(
            "statements",
            serde_json::json!({
                "account": account.as_ref(),
                "version": recorded.version().get(),
                "amount": amount,
            }),
        );
        reaction.effect(
            "audit",
            serde_json::json!({ "event": recorded.event_id().to_string() }),
        );
        let options = reaction.command_options();
        execute_with(
            &self.store,
            Credit {
                account: stream(&mirror_of(account.as_ref())),
                amount: *amount,
            },
            options,
        )
        .await?;
        if hang {
            self.control.state().hung.push(self.instance);
            std::future::pending::<()>().await;
        }
        Ok(())
    }
}

/// The receiving end of the effects: every delivery attempt by key, and
/// the deliveries it fails or hangs on.
#[derive(Debug, Clone, Default)]
pub struct Receiver {
    state: Arc<Mutex<ReceiverState>>,
}

#[derive(Debug, Default)]
struct ReceiverState {
    calls: HashMap<EffectKey, u32>,
    /// Statements (account, version) that fail.
    failing: HashSet<(String, u64)>,
    /// A statement (account, version) whose first delivery hangs.
    hang: Option<(String, u64)>,
    hung: bool,
}

impl Receiver {
    fn state(&self) -> MutexGuard<'_, ReceiverState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Calls received with `key`.
    pub fn calls(&self, key: &EffectKey) -> u32 {
        self.state().calls.get(key).copied().unwrap_or(0)
    }

    /// Every key received, with its calls.
    pub fn keys(&self) -> HashMap<EffectKey, u32> {
        self.state().calls.clone()
    }

    /// Makes deliveries of the statement of version `version` of `account`
    /// fail (`true`) or succeed.
    pub fn fail(&self, account: &str, version: u64, failing: bool) {
        let at = (account.to_owned(), version);
        let mut state = self.state();
        if failing {
            state.failing.insert(at);
        } else {
            state.failing.remove(&at);
        }
    }

    fn statement_of(effect: &StoredEffect) -> Option<(String, u64)> {
        let payload = &effect.effect.payload;
        Some((
            payload.get("account")?.as_str()?.to_owned(),
            payload.get("version")?.as_u64()?,
        ))
    }

    /// Receives one delivery.
    async fn receive(&self, effect: StoredEffect) -> Result<(), BoxError> {
        let statement = Self::statement_of(&effect);
        let (fails, hangs) = {
            let mut state = self.state();
            *state.calls.entry(effect.effect.key.clone()).or_default() += 1;
            let fails = statement
                .as_ref()
                .is_some_and(|s| state.failing.contains(s));
            let hangs = !state.hung && statement.is_some() && state.hang == statement;
            if hangs {
                state.hung = true;
            }
            (fails, hangs)
        };
        if hangs {
            // The call got through; the dispatcher dies before it hears back.
            std::future::pending::<()>().await;
        }
        if fails {
            return Err(format!("receiver down for {}", effect.effect.key).into());
        }
        Ok(())
    }
}

fn name(text: &str) -> SubscriptionName {
    SubscriptionName::try_new(text).expect("a valid name")
}

fn config() -> SubscriptionConfig {
    SubscriptionConfig::default()
        .with_page_size(10)
        .with_poll_interval(Duration::from_millis(10))
        .with_retry(
            RetryPolicy::default()
                .with_base_delay(Duration::from_millis(5))
                .with_max_delay(Duration::from_millis(50)),
        )
}

fn dispatch_config(lease: Duration, attempts: u32) -> DispatchConfig {
    DispatchConfig::default()
        .with_batch(8)
        .with_lease(lease)
        .with_poll_interval(Duration::from_millis(20))
        .with_retry(
            RetryPolicy::default()
                .with_max_attempts(NonZeroU32::new(attempts).expect("at least one attempt"))
                .with_base_delay(Duration::from_millis(10))
                .with_max_delay(Duration::from_millis(40)),
        )
}

async fn start<F: ReactorFixture>(
    fixture: &F,
    instance: usize,
    name: &SubscriptionName,
    control: &Control,
) -> SubscriptionHandle {
    let store = fixture.process(instance).await;
    let reactor = Statements::new(store.clone(), instance, control.clone());
    let handler = fixture.reacting(&store, name, reactor);
    subscribe(store.clone(), store, name.clone(), handler, config())
}

fn start_dispatcher<F: ReactorFixture>(
    fixture: &F,
    receiver: &Receiver,
    config: DispatchConfig,
) -> DispatchHandle {
    let receiver = receiver.clone();
    dispatch(
        fixture.store().clone(),
        deliver_fn(move |effect| {
            let receiver = receiver.clone();
            async move { receiver.receive(effect).await }
        }),
        config,
    )
}

async fn credit<S: EventStore>(store: &S, account: &str, amount: u64) {
    execute(
        store,
        Credit {
            account: stream(account),
            amount,
        },
    )
    .await
    .expect("write a credit");
}

/// The events of the accounts (not of their mirrors) in `log`.
fn sources(log: &[(Position, RecordedEvent)]) -> Vec<&RecordedEvent> {
    log.iter()
        .map(|(_, e)| e)
        .filter(|e| !e.stream_id().as_ref().starts_with("mirror-"))
        .collect()
}

/// The keys the reactor `name` gives the effects of `event`.
fn keys_of(name: &SubscriptionName, event: &RecordedEvent) -> [EffectKey; 2] {
    [
        EffectKey::new(name, event.event_id(), 0),
        EffectKey::new(name, event.event_id(), 1),
    ]
}

async fn until<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Three instances of a reactor over eight accounts, and a dispatcher,
/// while events keep arriving: two instances killed while they hang
/// between their effects and their checkpoint (their command issued),
/// leases ended in the middle of pages, the dispatcher killed in the middle
/// of a delivery the receiver got. Asserts: each event's database write
/// committed once; each command applied once (every mirror holds its
/// account's credits, once each, in order); each effect recorded once,
/// delivered, and received; the kills happened (the hung events were
/// reacted to again, the hung delivery was received again).
///
/// # Panics
/// When any of that does not hold.
pub async fn reactors_act_once_across_kills<F: ReactorFixture>(fixture: &F) {
    let name = name("statements-kills");
    let accounts: Vec<String> = (0..8).map(|i| format!("kills-{i}")).collect();
    for round in 0..6u64 {
        for account in &accounts {
            credit(fixture.store(), account, round + 1).await;
        }
    }
    let control = Control::default();
    control.pace(Duration::from_millis(1));
    control.hang_on("kills-1", 3);
    control.hang_on("kills-5", 8);
    control.slow_on("kills-3", 5, Duration::from_millis(500));
    control.slow_on("kills-6", 10, Duration::from_millis(500));
    let receiver = Receiver::default();
    receiver.state().hang = Some(("kills-2".to_owned(), 4));

    let mut instances: Vec<(usize, SubscriptionHandle)> = Vec::new();
    for i in 0..3 {
        instances.push((i, start(fixture, i, &name, &control).await));
    }
    let mut next_instance = 3;
    let mut dispatcher = Some(start_dispatcher(
        fixture,
        &receiver,
        dispatch_config(Duration::from_millis(300), 8),
    ));

    let writer = {
        let store = fixture.store().clone();
        let accounts = accounts.clone();
        tokio::spawn(async move {
            for round in 6..12u64 {
                for account in &accounts {
                    credit(&store, account, round + 1).await;
                }
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
        })
    };

    let (mut kills, mut losses, mut dispatcher_killed) = (0, 0, false);
    let (mut slowed, mut takeovers) = (0, 0);
    let mut next_loss = tokio::time::Instant::now() + Duration::from_millis(30);
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(hung) = control.take_hung() {
            let at = instances.iter().position(|(i, _)| *i == hung);
            let (_, handle) = instances.remove(at.expect("a running instance hung"));
            handle.abort();
            kills += 1;
            instances.push((
                next_instance,
                start(fixture, next_instance, &name, &control).await,
            ));
            next_instance += 1;
        }
        if !dispatcher_killed && receiver.state().hung {
            dispatcher.take().expect("the first dispatcher").abort();
            dispatcher_killed = true;
            dispatcher = Some(start_dispatcher(
                fixture,
                &receiver,
                dispatch_config(Duration::from_millis(300), 8),
            ));
        }
        let began = control.take_slowed();
        if began > 0 {
            // The holder is inside a slow reaction: its lease is ended so
            // that another instance takes over while it still works on its
            // page. No lease to end means the holder had lost it already
            // (a periodic loss just before): the same situation. Either
            // way the reaction must begin again (asserted at the end).
            slowed += began;
            if fixture.lose_lease(&name).await {
                takeovers += 1;
            }
        }
        if losses < 6 && tokio::time::Instant::now() >= next_loss {
            if fixture.lose_lease(&name).await {
                losses += 1;
            }
            next_loss = tokio::time::Instant::now() + Duration::from_millis(60);
        }
        if writer.is_finished() && kills == 2 && slowed == 2 && dispatcher_killed {
            let log = full_log(fixture.store()).await;
            let sources = sources(&log);
            let written = fixture.written().await.len();
            let received = receiver.keys();
            if sources.len() == accounts.len() * 12
                && log.len() == 2 * sources.len()
                && written >= log.len()
                && sources
                    .iter()
                    .all(|e| keys_of(&name, e).iter().all(|k| received.contains_key(k)))
            {
                break;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the reactor never caught up: {kills} kills, {slowed} slow reactions ({takeovers} taken over), {losses} losses, dispatcher killed: {dispatcher_killed}, {} database writes",
            fixture.written().await.len()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    writer.await.expect("the writer panicked");
    // A stale holder may still be inside a page: give it time to try to
    // commit before counting.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for (i, handle) in instances {
        match tokio::time::timeout(Duration::from_secs(15), handle.stop()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("instance {i} had stopped on an error: {e}"),
            Err(_) => panic!("instance {i} did not stop in time"),
        }
    }
    let report = dispatcher.expect("a dispatcher runs").stop().await;
    assert!(
        report.delivered > 0,
        "the dispatcher that took over delivered: {report:?}"
    );

    let sources = assert_acted_once(fixture, &name, &accounts, 12, &receiver).await;
    let sources: Vec<&RecordedEvent> = sources.iter().collect();

    // The kills happened where they were meant to.
    for (account, version) in [
        ("kills-1", 3),
        ("kills-5", 8),
        ("kills-3", 5),
        ("kills-6", 10),
    ] {
        let event = sources
            .iter()
            .find(|e| e.stream_id().as_ref() == account && e.version().get() == version)
            .expect("the hung event");
        assert!(
            control.reactions(event.event_id()) >= 2,
            "the reaction to {account} {version} hung or lost its lease, so it must have begun again"
        );
    }
    let hung = sources
        .iter()
        .find(|e| e.stream_id().as_ref() == "kills-2" && e.version().get() == 4)
        .expect("the event of the hung delivery");
    let key = &keys_of(&name, hung)[0];
    assert!(
        receiver.calls(key) >= 2,
        "the delivery of {key} was cut off, so it must have been made again"
    );
    assert!(
        losses >= 1,
        "no lease was ended: the scenario missed a part"
    );
}

async fn start_lanes<F: ReactorFixture>(
    fixture: &F,
    instance: usize,
    name: &SubscriptionName,
    lanes: &Lanes,
    control: &Control,
) -> LanesHandle {
    let store = fixture.process(instance).await;
    let mut adapter = fixture.reacting_in_lanes(&store);
    let (issuer, control) = (store.clone(), control.clone());
    subscribe_lanes(
        store.clone(),
        store,
        name.clone(),
        lanes.clone(),
        move |lane: &Lane| {
            adapter(
                lane,
                Statements::new(issuer.clone(), instance, control.clone()),
            )
        },
        config(),
    )
    .expect("lanes start")
}

/// The kit's reactor run in three lanes by two instances, and a
/// dispatcher, while events keep arriving: one instance killed while it
/// hangs between its effects and its checkpoint, a new one started.
/// Asserts what [`reactors_act_once_across_kills`] does, with every effect
/// keyed by the lanes' subscription, not by a lane.
///
/// # Panics
/// When any of that does not hold.
pub async fn reactors_in_lanes_act_once_across_kills<F: ReactorFixture>(fixture: &F) {
    let name = name("statements-lanes");
    let lanes = Lanes::new(std::num::NonZeroU16::new(3).expect("not zero"))
        .with_heartbeat(Duration::from_millis(40))
        .with_member_timeout(Duration::from_millis(400));
    let accounts: Vec<String> = (0..6).map(|i| format!("lanes-{i}")).collect();
    for round in 0..5u64 {
        for account in &accounts {
            credit(fixture.store(), account, round + 1).await;
        }
    }
    let control = Control::default();
    control.pace(Duration::from_millis(1));
    control.hang_on("lanes-2", 4);
    let receiver = Receiver::default();
    let mut instances: Vec<(usize, LanesHandle)> = Vec::new();
    for i in 0..2 {
        instances.push((i, start_lanes(fixture, i, &name, &lanes, &control).await));
    }
    let dispatcher = start_dispatcher(
        fixture,
        &receiver,
        dispatch_config(Duration::from_millis(300), 8),
    );
    let writer = {
        let store = fixture.store().clone();
        let accounts = accounts.clone();
        tokio::spawn(async move {
            for round in 5..10u64 {
                for account in &accounts {
                    credit(&store, account, round + 1).await;
                }
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
        })
    };
    let mut killed = false;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(hung) = control.take_hung() {
            let at = instances.iter().position(|(i, _)| *i == hung);
            let (_, handle) = instances.remove(at.expect("a running instance hung"));
            handle.abort();
            killed = true;
            instances.push((2, start_lanes(fixture, 2, &name, &lanes, &control).await));
        }
        if writer.is_finished() && killed {
            let log = full_log(fixture.store()).await;
            let sources = sources(&log);
            let received = receiver.keys();
            if sources.len() == accounts.len() * 10
                && log.len() == 2 * sources.len()
                && fixture.written().await.len() >= log.len()
                && sources
                    .iter()
                    .all(|e| keys_of(&name, e).iter().all(|k| received.contains_key(k)))
            {
                break;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the lanes never caught up (killed: {killed}, {} database writes)",
            fixture.written().await.len()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    writer.await.expect("the writer panicked");
    tokio::time::sleep(Duration::from_millis(200)).await;
    for (i, handle) in instances {
        match tokio::time::timeout(Duration::from_secs(15), handle.stop()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("instance {i} had stopped on an error: {e}"),
            Err(_) => panic!("instance {i} did not stop in time"),
        }
    }
    dispatcher.stop().await;
    let sources = assert_acted_once(fixture, &name, &accounts, 10, &receiver).await;
    let hung = sources
        .iter()
        .find(|e| e.stream_id().as_ref() == "lanes-2" && e.version().get() == 4)
        .expect("the hung event");
    assert!(
        control.reactions(hung.event_id()) >= 2,
        "the reaction that hung was begun again by the lane's next holder"
    );
}

/// Asserts what a reactor run on the kit's reactor owes, once every
/// instance stopped: each event's database write committed once; each
/// command applied once (every mirror holds its account's credits, once
/// each, in order); each effect recorded once under `name`, delivered and
/// received, and no other received. The accounts' events, returned.
async fn assert_acted_once<F: ReactorFixture>(
    fixture: &F,
    name: &SubscriptionName,
    accounts: &[String],
    per_account: usize,
    receiver: &Receiver,
) -> Vec<RecordedEvent> {
    let log = full_log(fixture.store()).await;
    let sources = sources(&log);
    assert_eq!(
        sources.len(),
        accounts.len() * per_account,
        "the accounts' credits"
    );

    // Database writes: once per event of the log, no other.
    let written = fixture.written().await;
    let mut counts: HashMap<Uuid, usize> = HashMap::new();
    for id in &written {
        *counts.entry(*id).or_default() += 1;
    }
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "{} events' database writes committed more than once (first {:?})",
        twice.len(),
        twice.first()
    );
    let ids: HashSet<Uuid> = log.iter().map(|(_, e)| e.event_id()).collect();
    assert_eq!(
        counts.keys().copied().collect::<HashSet<_>>(),
        ids,
        "a database write for every event of the log, and for no other"
    );

    // Commands: every mirror holds its account's credits, once each, in order.
    for account in accounts {
        let amounts = |of: &str| -> Vec<u64> {
            log.iter()
                .filter(|(_, e)| e.stream_id().as_ref() == of)
                .map(|(_, e)| {
                    let event: LedgerEvent =
                        serde_json::from_str(e.payload()).expect("a ledger event");
                    match event {
                        LedgerEvent::Credited { amount, .. } => amount,
                        LedgerEvent::Debited { amount, .. } => amount,
                    }
                })
                .collect()
        };
        assert_eq!(
            amounts(&mirror_of(account)),
            amounts(account),
            "the mirror of {account} holds each of its credits once, in order"
        );
    }

    // Effects: each recorded once, delivered, and received.
    let received = receiver.keys();
    let mut expected = HashSet::new();
    for event in &sources {
        for key in keys_of(name, event) {
            let stored = fixture
                .store()
                .effect(&key)
                .await
                .expect("read an effect")
                .unwrap_or_else(|| panic!("no effect recorded under {key}"));
            assert_eq!(stored.state, EffectState::Delivered, "effect {key}");
            assert_eq!(stored.effect.event_id, event.event_id(), "effect {key}");
            assert!(received.contains_key(&key), "effect {key} never received");
            expected.insert(key);
        }
    }
    let extra: Vec<_> = received.keys().filter(|k| !expected.contains(*k)).collect();
    assert!(
        extra.is_empty(),
        "effects received that no event made: {extra:?}"
    );

    sources.into_iter().cloned().collect()
}

/// Records the kit reactor's effects for `accounts`' credits (one each)
/// and waits until the reactor has committed them.
async fn recorded<F: ReactorFixture>(
    fixture: &F,
    name: &SubscriptionName,
    accounts: &[&str],
) -> Vec<RecordedEvent> {
    for account in accounts {
        credit(fixture.store(), account, 1).await;
    }
    let control = Control::default();
    let handle = start(fixture, 0, name, &control).await;
    let log = full_log(fixture.store()).await;
    let events: Vec<RecordedEvent> = sources(&log)
        .into_iter()
        .filter(|e| accounts.contains(&e.stream_id().as_ref()))
        .cloned()
        .collect();
    let keys: Vec<EffectKey> = events.iter().flat_map(|e| keys_of(name, e)).collect();
    until("the reactor recorded its effects", async || {
        for key in &keys {
            fixture.store().effect(key).await.ok()??;
        }
        Some(())
    })
    .await;
    handle.stop().await.expect("the reactor had not failed");
    events
}

/// Two statements fail on every delivery: each parks after the three
/// attempts allowed, with its error, while every other effect is delivered
/// once. Cured and retried, the first is delivered; the second, skipped,
/// is never delivered again; neither can be resolved twice.
///
/// # Panics
/// When any of that does not hold.
pub async fn a_poison_effect_parks_while_others_are_delivered<F: ReactorFixture>(fixture: &F) {
    let name = name("statements-poison");
    let accounts = ["poison-0", "poison-1", "poison-2", "poison-3"];
    let events = recorded(fixture, &name, &accounts).await;
    let receiver = Receiver::default();
    receiver.fail("poison-1", 1, true);
    receiver.fail("poison-3", 1, true);
    let key_of = |account: &str| {
        let event = events
            .iter()
            .find(|e| e.stream_id().as_ref() == account)
            .expect("the account's credit");
        keys_of(&name, event)[0].clone()
    };
    let (retried, skipped) = (key_of("poison-1"), key_of("poison-3"));
    let others: Vec<EffectKey> = events
        .iter()
        .flat_map(|e| keys_of(&name, e))
        .filter(|k| *k != retried && *k != skipped)
        .collect();

    let dispatcher = start_dispatcher(
        fixture,
        &receiver,
        dispatch_config(Duration::from_secs(5), 3),
    );
    let parked = until("both poison effects parked", async || {
        let parked = fixture.store().parked_effects().await.ok()?;
        (parked.len() == 2).then_some(parked)
    })
    .await;
    let parked_keys: Vec<&EffectKey> = parked.iter().map(|p| &p.effect.key).collect();
    assert!(
        parked_keys.contains(&&retried) && parked_keys.contains(&&skipped),
        "the parked effects are the failing ones: {parked_keys:?}"
    );
    for effect in &parked {
        assert_eq!(effect.state, EffectState::Parked);
        assert_eq!(effect.attempts, 3, "parked after the attempts allowed");
        let error = effect.last_error.as_deref().unwrap_or_default();
        assert!(
            error.contains("receiver down"),
            "a parked effect keeps its error: {error:?}"
        );
        assert_eq!(
            receiver.calls(&effect.effect.key),
            3,
            "one call per attempt"
        );
    }
    until("every other effect delivered", async || {
        for key in &others {
            let stored = fixture.store().effect(key).await.ok()??;
            (stored.state == EffectState::Delivered).then_some(())?;
        }
        Some(())
    })
    .await;
    for key in &others {
        assert_eq!(receiver.calls(key), 1, "{key} delivered once, at once");
    }

    receiver.fail("poison-1", 1, false);
    let store = fixture.store();
    assert!(
        store
            .resolve_effect(&retried, EffectAction::Retry)
            .await
            .expect("retry"),
        "a parked effect can be retried"
    );
    assert!(
        store
            .resolve_effect(&skipped, EffectAction::Skip)
            .await
            .expect("skip"),
        "a parked effect can be skipped"
    );
    until("the retried effect delivered", async || {
        let stored = store.effect(&retried).await.ok()??;
        (stored.state == EffectState::Delivered).then_some(())
    })
    .await;
    assert_eq!(
        receiver.calls(&retried),
        4,
        "three failures, then one delivery"
    );
    for key in [&retried, &skipped] {
        for action in [EffectAction::Retry, EffectAction::Skip] {
            assert!(
                !store.resolve_effect(key, action).await.expect("resolve"),
                "{key} is no longer parked"
            );
        }
    }
    // Give the dispatcher time to deliver the skipped effect if it would.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let report = dispatcher.stop().await;
    assert_eq!(
        receiver.calls(&skipped),
        3,
        "a skipped effect is not delivered"
    );
    assert_eq!(
        store.effect(&skipped).await.expect("read").map(|e| e.state),
        Some(EffectState::Skipped)
    );
    assert!(
        store.parked_effects().await.expect("parked").is_empty(),
        "nothing parked after the operator's actions"
    );
    assert_eq!(report.parked, 2, "two effects parked: {report:?}");
    assert_eq!(
        report.delivered,
        others.len() as u64 + 1,
        "the others and the retried one delivered: {report:?}"
    );
}

/// The outbox's contract, on effects the kit's reactor recorded: claims in
/// recorded order, an effect held by a claim not claimed again until the
/// lease runs out, a mark under an old claim refused, a failed delivery
/// due again after its backoff with its error kept (cut to
/// [`MAX_EFFECT_ERROR_CHARS`]), a parked effect never claimed, a resolved
/// one not resolved again.
///
/// # Panics
/// When any of that does not hold.
pub async fn outbox_claims_are_fenced<F: ReactorFixture>(fixture: &F) {
    let name = name("statements-claims");
    let events = recorded(fixture, &name, &["claims-0", "claims-1"]).await;
    let keys: Vec<EffectKey> = events.iter().flat_map(|e| keys_of(&name, e)).collect();
    let store = fixture.store();
    let lease = Duration::from_millis(300);

    let first = store.claim(10, lease).await.expect("claim");
    let claimed: Vec<&EffectKey> = first.iter().map(|e| &e.effect.key).collect();
    assert_eq!(
        claimed,
        keys.iter().collect::<Vec<_>>(),
        "claimed in recorded order"
    );
    assert!(first.iter().all(|e| e.attempts == 1 && e.claim >= 1));
    assert!(
        store.claim(10, lease).await.expect("claim").is_empty(),
        "effects under a claim are not claimed again"
    );
    let limited = {
        tokio::time::sleep(lease + Duration::from_millis(100)).await;
        store.claim(1, lease).await.expect("claim")
    };
    assert_eq!(limited.len(), 1, "a claim takes at most its limit");
    assert_eq!(limited[0].effect.key, keys[0], "the oldest first");
    assert_eq!(
        limited[0].attempts, 2,
        "its claim ran out: a second attempt"
    );
    assert!(limited[0].claim > first[0].claim, "a new claim");
    assert!(
        !store
            .delivered(&keys[0], first[0].claim)
            .await
            .expect("mark"),
        "a dispatcher whose claim was taken over marks nothing"
    );
    assert_eq!(
        store.effect(&keys[0]).await.expect("read").map(|e| e.state),
        Some(EffectState::Pending)
    );
    assert!(
        store
            .delivered(&keys[0], limited[0].claim)
            .await
            .expect("mark"),
        "the current claim marks"
    );
    assert!(
        !store
            .delivered(&keys[0], limited[0].claim)
            .await
            .expect("mark"),
        "a delivered effect is not marked again"
    );
    assert_eq!(
        store.effect(&keys[0]).await.expect("read").map(|e| e.state),
        Some(EffectState::Delivered)
    );

    // Handed back unattempted (a dispatcher stopping): claimable at once,
    // the claim not counted as an attempt, and only under its own claim.
    let handed = store.claim(10, lease).await.expect("claim");
    assert_eq!(handed.len(), keys.len() - 1, "the others");
    for effect in &handed {
        assert!(
            store
                .release_effect(&effect.effect.key, effect.claim)
                .await
                .expect("release"),
            "released under its claim"
        );
        assert!(
            !store
                .release_effect(&effect.effect.key, effect.claim)
                .await
                .expect("release"),
            "released once per claim"
        );
    }
    let rest = store.claim(10, lease).await.expect("claim");
    assert!(
        rest.iter()
            .zip(&handed)
            .all(|(now, before)| now.attempts == before.attempts && now.claim > before.claim),
        "claimed again at once, with the same count of attempts"
    );
    let rest_keys: Vec<&EffectKey> = rest.iter().map(|e| &e.effect.key).collect();
    assert_eq!(
        rest_keys,
        keys[1..].iter().collect::<Vec<_>>(),
        "the others, in order"
    );
    let long_error = "x".repeat(MAX_EFFECT_ERROR_CHARS + 50);
    let backoff = Duration::from_millis(400);
    assert!(
        store
            .failed(
                &keys[1],
                rest[0].claim,
                &long_error,
                AfterFailure::RetryAfter(backoff)
            )
            .await
            .expect("mark")
    );
    let failed = store.effect(&keys[1]).await.expect("read").expect("kept");
    assert_eq!(failed.state, EffectState::Pending);
    assert_eq!(
        failed.last_error.as_deref().map(str::len),
        Some(MAX_EFFECT_ERROR_CHARS),
        "the error is kept, cut to its limit"
    );
    assert!(
        !store
            .failed(&keys[1], rest[0].claim, "again", AfterFailure::Park)
            .await
            .expect("mark"),
        "a failure is marked once per claim"
    );
    for effect in &rest[1..] {
        assert!(
            store
                .delivered(&effect.effect.key, effect.claim)
                .await
                .expect("mark")
        );
    }
    assert!(
        store.claim(10, lease).await.expect("claim").is_empty(),
        "a failed effect waits out its backoff"
    );
    let again = until("the failed effect due again", async || {
        let claimed = store.claim(10, lease).await.ok()?;
        (!claimed.is_empty()).then_some(claimed)
    })
    .await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].effect.key, keys[1]);
    assert_eq!(
        again[0].attempts, 3,
        "a claim run out, a failure, then this attempt"
    );
    assert!(
        store
            .failed(&keys[1], again[0].claim, "gave up", AfterFailure::Park)
            .await
            .expect("mark")
    );
    tokio::time::sleep(lease + Duration::from_millis(100)).await;
    assert!(
        store.claim(10, lease).await.expect("claim").is_empty(),
        "a parked effect is not claimed"
    );
    let parked = store.parked_effects().await.expect("parked");
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].effect.key, keys[1]);
    assert_eq!(parked[0].last_error.as_deref(), Some("gave up"));
    assert!(
        !store
            .resolve_effect(&keys[0], EffectAction::Retry)
            .await
            .expect("resolve"),
        "a delivered effect cannot be retried"
    );
    assert!(
        store
            .resolve_effect(&keys[1], EffectAction::Retry)
            .await
            .expect("resolve")
    );
    let retried = store.claim(10, lease).await.expect("claim");
    assert_eq!(retried.len(), 1, "a retried effect is due at once");
    assert_eq!(retried[0].attempts, 1, "attempts counted afresh");
    assert!(
        store
            .delivered(&keys[1], retried[0].claim)
            .await
            .expect("mark")
    );
    let unknown = EffectKey::from_stored("nobody/none/e0");
    assert_eq!(store.effect(&unknown).await.expect("read"), None);
    assert!(
        !store
            .resolve_effect(&unknown, EffectAction::Skip)
            .await
            .expect("resolve"),
        "an unknown effect cannot be resolved"
    );
}
