//! Lanes and dead letters: the scenarios every store runs.
//!
//! - [`lanes_share_the_work_across_kills`]: instances of one subscription
//!   split into lanes share them, are killed and started while events keep
//!   arriving, and every event is applied exactly once, by its key's lane,
//!   each key's events in order.
//! - [`a_poison_event_parks_only_its_key`]: an event its handler fails on
//!   parks its key in a dead letter while the other keys (those of its lane
//!   included) go on; a retry that fails again keeps it parked; a retry that
//!   succeeds hands the key's events over in order, exactly once, even with
//!   the instance killed in the middle of it, between a commit and its
//!   report; a skip drops only the parked event.
//! - [`dead_letters_are_fenced`]: the contract of [`DeadLetters`] itself.
//!
//! A backend provides a [`LanesFixture`]: its exactly-once projection,
//! recording every application it commits.

use std::{
    collections::{HashMap, HashSet},
    future::Future,
    num::NonZeroU16,
    sync::{Arc, Mutex},
    time::Duration,
};

use eventcore::{
    BoxError, CheckpointStore, DeadLetter, DeadLetterAction, DeadLetters, EventContext, EventLog,
    EventStore, Handler, Lane, Lanes, LanesHandle, LogQuery, OnHandlerError, Position,
    RecordedEvent, RetryPolicy, StoreError, SubscriptionConfig, SubscriptionLeases,
    SubscriptionName, Uuid, execute, lane_name, subscribe_lanes,
};

use crate::{
    fixtures::{Credit, LedgerEvent, stream},
    handover::{Pace, Paced},
};

/// One application of an event, as a projection committed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Application {
    /// The event.
    pub event_id: Uuid,
    /// The lane (its subscription name) that applied it.
    pub lane: String,
}

/// What a backend gives the scenarios.
pub trait LanesFixture: Send + Sync {
    /// The store: log, checkpoints, leases and dead letters.
    type Store: EventStore
        + EventLog
        + CheckpointStore
        + SubscriptionLeases
        + DeadLetters
        + Clone
        + Send
        + Sync
        + 'static;
    /// The exactly-once projection of one lane.
    type Projection: Handler<LedgerEvent>;

    /// The store to write through and to inspect.
    fn store(&self) -> &Self::Store;

    /// A store value of its own for instance `instance`, as another process
    /// would have (its own connections and sessions).
    fn process(&self, instance: usize) -> impl Future<Output = Self::Store> + Send;

    /// What makes the exactly-once projection of a lane on `store`: each
    /// event it applies adds an [`Application`] to a record committed with
    /// the lane's checkpoint (or, for a parked event handed over again, with
    /// its dead letter's replay mark).
    fn projector(
        &self,
        store: &Self::Store,
    ) -> impl FnMut(&Lane) -> Self::Projection + Send + 'static;

    /// Every application committed so far, in the order committed.
    fn applied(&self) -> impl Future<Output = Vec<Application>> + Send;
}

/// Events a [`Poisoned`] handler fails on, by stream and version (so that
/// an event can be poisoned before it is written), shared by every lane and
/// instance of a scenario.
///
/// It can also make a handler hang, once it has committed a given number
/// of events handed over from a dead letter, as a process that dies
/// before it reports back would: what it committed is the store's
/// exactly-once projection's alone to remember.
#[derive(Debug, Clone, Default)]
pub struct Poison {
    events: Arc<Mutex<HashSet<(String, u64)>>>,
    hang_after: Arc<Mutex<Option<usize>>>,
}

impl Poison {
    fn set(&self) -> std::sync::MutexGuard<'_, HashSet<(String, u64)>> {
        self.events.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes the handler hang after the `n`th event handed over from a
    /// dead letter that it committed from now on (`None`: never).
    pub fn hang_after_replayed(&self, n: Option<usize>) {
        *self.hang_after.lock().unwrap_or_else(|p| p.into_inner()) = n;
    }

    /// Whether a handler that has just committed an event handed over
    /// from a dead letter hangs now.
    fn hangs_now(&self) -> bool {
        let mut left = self.hang_after.lock().unwrap_or_else(|p| p.into_inner());
        match left.as_mut() {
            Some(0) => true,
            Some(n) => {
                *n -= 1;
                *n == 0
            }
            None => false,
        }
    }

    /// Makes the handler fail on version `version` of `stream` from now on.
    pub fn add(&self, stream: &str, version: u64) {
        self.set().insert((stream.to_owned(), version));
    }

    /// Cures it.
    pub fn remove(&self, stream: &str, version: u64) {
        self.set().remove(&(stream.to_owned(), version));
    }

    fn has(&self, event: &RecordedEvent) -> bool {
        self.set()
            .contains(&(event.stream_id().to_string(), event.version().get()))
    }
}

/// A handler that fails on the poisoned events, and hands the others on.
#[derive(Debug)]
pub struct Poisoned<H> {
    poison: Poison,
    inner: H,
}

impl<H> Poisoned<H> {
    /// `inner`, failing on what `poison` holds.
    pub fn new(poison: Poison, inner: H) -> Self {
        Poisoned { poison, inner }
    }
}

impl<E: Sync, H: Handler<E>> Handler<E> for Poisoned<H> {
    async fn handle(&mut self, context: &EventContext, event: &E) -> Result<(), BoxError> {
        let recorded = context.recorded();
        if self.poison.has(recorded) {
            return Err(format!(
                "poisoned event {} of {}",
                recorded.version(),
                recorded.stream_id()
            )
            .into());
        }
        self.inner.handle(context, event).await?;
        if context.parked_key().is_some() && self.poison.hangs_now() {
            std::future::pending::<()>().await;
        }
        Ok(())
    }
}

/// How long a scenario waits for a state it expects.
const DEADLINE: Duration = Duration::from_secs(60);

fn name(text: &str) -> SubscriptionName {
    SubscriptionName::try_new(text).expect("a valid name")
}

fn nz(n: u16) -> NonZeroU16 {
    NonZeroU16::new(n).expect("not zero")
}

/// Every event the log shows now, in log order.
/// Every event of the log, in order.
pub(crate) async fn full_log<S: EventLog>(store: &S) -> Vec<(Position, RecordedEvent)> {
    let mut all = Vec::new();
    let mut query = LogQuery::from_start(1_000);
    loop {
        let page = store.read_all(&query).await.expect("read the log");
        let next = page.next();
        let done = page.is_empty();
        all.extend(page.into_events());
        if done {
            return all;
        }
        query = match next {
            Some(next) => LogQuery::after(next, 1_000),
            None => return all,
        };
    }
}

/// Waits until `check` holds of the applications, or fails with `what`.
async fn until_applied<F: LanesFixture>(
    fixture: &F,
    what: &str,
    check: impl Fn(&[Application]) -> bool,
) -> Vec<Application> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let applied = fixture.applied().await;
        if check(&applied) {
            return applied;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not reached in {DEADLINE:?} ({} applications)",
            applied.len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Starts instance `instance` of `name` on its own store value.
async fn start_instance<F: LanesFixture>(
    fixture: &F,
    instance: usize,
    name: &SubscriptionName,
    lanes: &Lanes,
    config: &SubscriptionConfig,
    pace: Pace,
    poison: &Poison,
) -> LanesHandle {
    let store = fixture.process(instance).await;
    let mut projector = fixture.projector(&store);
    let poison = poison.clone();
    subscribe_lanes(
        store.clone(),
        store,
        name.clone(),
        lanes.clone(),
        move |lane: &Lane| Poisoned::new(poison.clone(), Paced::new(pace, projector(lane))),
        config.clone(),
    )
    .expect("lanes start")
}

/// Writes `per_stream` credits to each of `streams`, one task per stream,
/// released together.
async fn write<S: EventStore + Clone + Send + Sync + 'static>(
    store: &S,
    streams: &[String],
    per_stream: usize,
) {
    let tasks: Vec<_> = streams
        .iter()
        .map(|s| {
            let store = store.clone();
            let account = stream(s);
            tokio::spawn(async move {
                for i in 0..per_stream {
                    execute(
                        &store,
                        Credit {
                            account: account.clone(),
                            amount: i as u64 + 1,
                        },
                    )
                    .await
                    .expect("write a credit");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("a writer panicked");
    }
}

/// The log once it shows at least `expected` events.
async fn log_with<S: EventLog>(store: &S, expected: usize) -> Vec<(Position, RecordedEvent)> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let log = full_log(store).await;
        if log.len() >= expected {
            return log;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the log shows {} of the {expected} events written",
            log.len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// How many times each event id was applied.
fn counts(applied: &[Application]) -> HashMap<Uuid, usize> {
    let mut counts = HashMap::new();
    for a in applied {
        *counts.entry(a.event_id).or_default() += 1;
    }
    counts
}

/// Asserts that the events of `log` that `expected` lets through were each
/// applied exactly once, by their key's lane of `name`, each stream's in
/// order; and that the others were never applied.
fn assert_applied(
    applied: &[Application],
    log: &[(Position, RecordedEvent)],
    name: &SubscriptionName,
    lanes: &Lanes,
    expected: impl Fn(&RecordedEvent) -> bool,
) {
    let counts = counts(applied);
    let known: HashSet<Uuid> = log.iter().map(|(_, e)| e.event_id()).collect();
    let strangers = applied
        .iter()
        .filter(|a| !known.contains(&a.event_id))
        .count();
    assert_eq!(strangers, 0, "applications of events the log does not hold");
    let mut wrong = Vec::new();
    for (position, event) in log {
        let n = counts.get(&event.event_id()).copied().unwrap_or(0);
        let want = usize::from(expected(event));
        if n != want {
            wrong.push(format!(
                "{} v{} at {position}: applied {n} times, expected {want}",
                event.stream_id(),
                event.version()
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} events applied the wrong number of times, first: {:?}",
        wrong.len(),
        wrong.iter().take(5).collect::<Vec<_>>()
    );
    // The lane of each application, and each stream's order.
    let by_id: HashMap<Uuid, &RecordedEvent> = log.iter().map(|(_, e)| (e.event_id(), e)).collect();
    let mut last: HashMap<String, u64> = HashMap::new();
    for a in applied {
        let event = by_id[&a.event_id];
        let lane = lane_name(name, lanes.lane_of(event), lanes.count()).expect("a lane name");
        assert_eq!(
            a.lane,
            lane.to_string(),
            "{} v{} applied by another lane than its key's",
            event.stream_id(),
            event.version()
        );
        let version = event.version().get();
        let before = last.insert(event.stream_id().to_string(), version);
        assert!(
            before.is_none_or(|b| b < version),
            "{} applied v{version} after v{}: out of order",
            event.stream_id(),
            before.unwrap_or_default()
        );
    }
}

/// The lanes each handle runs now.
fn running(handles: &[(usize, LanesHandle)]) -> Vec<(usize, Vec<u16>)> {
    handles
        .iter()
        .map(|(i, h)| (*i, h.running().borrow().iter().copied().collect()))
        .collect()
}

/// Waits until the running instances share the lanes evenly: every lane
/// on exactly one, their counts within one of each other.
async fn until_balanced(handles: &[(usize, LanesHandle)], count: u16) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let now = running(handles);
        let mut seen: Vec<u16> = now.iter().flat_map(|(_, l)| l.iter().copied()).collect();
        seen.sort_unstable();
        let sizes: Vec<usize> = now.iter().map(|(_, l)| l.len()).collect();
        let even = sizes.iter().max().copied().unwrap_or(0)
            - sizes.iter().min().copied().unwrap_or(0)
            <= 1;
        if seen == (0..count).collect::<Vec<_>>() && even {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the instances never shared the {count} lanes evenly: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Four instances over eight lanes, with a kill, a start, another kill and
/// a clean restart while events keep arriving: every event applied exactly
/// once, by its key's lane, each key in order; the lanes shared evenly
/// before and after.
///
/// # Panics
/// When any of that does not hold.
pub async fn lanes_share_the_work_across_kills<F: LanesFixture>(fixture: &F) {
    let name = name("lanes-kills");
    let lanes = Lanes::new(nz(8))
        .with_heartbeat(Duration::from_millis(40))
        .with_member_timeout(Duration::from_millis(400));
    let config = SubscriptionConfig::default()
        .with_page_size(20)
        .with_poll_interval(Duration::from_millis(10));
    let pace = Pace {
        per_event: Duration::from_millis(1),
        first_event: Duration::ZERO,
    };
    let poison = Poison::default();
    let streams: Vec<String> = (0..24).map(|i| format!("lanes-{i}")).collect();
    write(fixture.store(), &streams, 20).await;

    let mut handles = Vec::new();
    for i in 0..4 {
        handles.push((
            i,
            start_instance(fixture, i, &name, &lanes, &config, pace, &poison).await,
        ));
    }
    until_balanced(&handles, lanes.count()).await;
    assert!(
        running(&handles).iter().all(|(_, l)| l.len() == 2),
        "four instances over eight lanes run two each: {:?}",
        running(&handles)
    );

    let writer = {
        let store = fixture.store().clone();
        let streams = streams.clone();
        tokio::spawn(async move { write(&store, &streams, 15).await })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    let (_, killed) = handles.remove(1);
    killed.abort();
    tokio::time::sleep(Duration::from_millis(250)).await;
    handles.push((
        4,
        start_instance(fixture, 4, &name, &lanes, &config, pace, &poison).await,
    ));
    tokio::time::sleep(Duration::from_millis(150)).await;
    let (_, killed) = handles.remove(1);
    killed.abort();
    let (_, stopped) = handles.remove(0);
    let report = tokio::time::timeout(Duration::from_secs(15), stopped.stop())
        .await
        .expect("a clean stop in time")
        .expect("the stopped instance had not failed");
    handles.push((
        5,
        start_instance(fixture, 5, &name, &lanes, &config, pace, &poison).await,
    ));
    writer.await.expect("the writer panicked");

    let log = log_with(fixture.store(), streams.len() * 35).await;
    let ids: HashSet<Uuid> = log.iter().map(|(_, e)| e.event_id()).collect();
    until_applied(fixture, "every event applied after the kills", |applied| {
        ids.iter()
            .all(|id| applied.iter().any(|a| a.event_id == *id))
    })
    .await;
    until_balanced(&handles, lanes.count()).await;
    // A killed holder's lanes may still be inside a page: give a stale
    // holder time to try to commit before counting.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let applied = fixture.applied().await;
    assert_applied(&applied, &log, &name, &lanes, |_| true);
    assert!(
        report.lanes_started >= 2,
        "the instance stopped cleanly had run lanes: {report:?}"
    );
    for (i, handle) in handles {
        match tokio::time::timeout(Duration::from_secs(15), handle.stop()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("instance {i} had failed: {e}"),
            Err(_) => panic!("instance {i} did not stop in time"),
        }
    }
}

/// The letters of the lane of `key`.
async fn letters_of<S: DeadLetters>(
    store: &S,
    name: &SubscriptionName,
    lanes: &Lanes,
    key: &str,
) -> (SubscriptionName, Vec<DeadLetter>) {
    let lane = eventcore::lane_of(key, nz(lanes.count()));
    let lane = lane_name(name, lane, lanes.count()).expect("a lane name");
    let letters = store.dead_letters(&lane).await.expect("list dead letters");
    (lane, letters)
}

/// Waits until the lane of `key` holds a letter `check` accepts.
async fn until_letter<S: DeadLetters>(
    store: &S,
    name: &SubscriptionName,
    lanes: &Lanes,
    key: &str,
    what: &str,
    check: impl Fn(&DeadLetter) -> bool,
) -> DeadLetter {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let (_, letters) = letters_of(store, name, lanes, key).await;
        if let Some(letter) = letters.iter().find(|l| l.key == key && check(l)) {
            return letter.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: no such letter for {key} in {DEADLINE:?}: {letters:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether the application list holds every event of `log` that `want`
/// lets through.
fn holds_all(
    applied: &[Application],
    log: &[(Position, RecordedEvent)],
    want: impl Fn(&RecordedEvent) -> bool,
) -> bool {
    let ids: HashSet<Uuid> = applied.iter().map(|a| a.event_id).collect();
    log.iter()
        .filter(|(_, e)| want(e))
        .all(|(_, e)| ids.contains(&e.event_id()))
}

/// A poison event parks only its key: the other keys of its lane go on; a
/// retry that fails again keeps it parked, with the new attempts; a retry
/// that succeeds hands the key's events over exactly once, in order, with
/// the instance killed in the middle of the hand-over (hung right after
/// committing an event it never reported back) and another taking it up;
/// a skip drops only the parked event.
///
/// # Panics
/// When any of that does not hold.
pub async fn a_poison_event_parks_only_its_key<F: LanesFixture>(fixture: &F) {
    let name = name("lanes-poison");
    let lanes = Lanes::new(nz(2)).with_heartbeat(Duration::from_millis(40));
    let config = SubscriptionConfig::default()
        .with_page_size(10)
        .with_poll_interval(Duration::from_millis(10))
        .with_on_error(OnHandlerError::Park)
        .with_retry(
            RetryPolicy::default()
                .with_max_attempts(std::num::NonZeroU32::new(2).expect("not zero"))
                .with_base_delay(Duration::from_millis(1))
                .with_max_delay(Duration::from_millis(5)),
        );
    let streams: Vec<String> = (0..8).map(|i| format!("poison-{i}")).collect();
    let bad = streams[0].clone();
    let lane_of = |key: &str| eventcore::lane_of(key, nz(lanes.count()));
    let sibling = streams[1..]
        .iter()
        .find(|s| lane_of(s) == lane_of(&bad))
        .expect("another stream in the poisoned one's lane")
        .clone();
    let poison = Poison::default();
    poison.add(&bad, 3);
    write(fixture.store(), &streams, 5).await;
    let pace = Pace::default();
    let mut instance = start_instance(fixture, 0, &name, &lanes, &config, pace, &poison).await;

    // Parked at its third event; every other key, its lane's included, goes on.
    let held = |e: &RecordedEvent| e.stream_id().as_ref() == bad && e.version().get() >= 3;
    let log = log_with(fixture.store(), 40).await;
    until_applied(fixture, "all but the parked key's events", |a| {
        holds_all(a, &log, |e| !held(e))
    })
    .await;
    let letter = until_letter(fixture.store(), &name, &lanes, &bad, "parked", |_| true).await;
    let poisoned = log
        .iter()
        .find(|(_, e)| e.stream_id().as_ref() == bad && e.version().get() == 3)
        .expect("the poisoned event");
    assert_eq!(
        letter.position, poisoned.0,
        "the letter names the poisoned event"
    );
    assert_eq!(letter.event_id, poisoned.1.event_id());
    assert!(
        letter.error.contains("poisoned"),
        "the letter keeps the handler's error: {:?}",
        letter.error
    );
    assert!(
        letter.attempts >= 2,
        "the retries were made first: {letter:?}"
    );
    let (_, others) = letters_of(fixture.store(), &name, &lanes, &sibling).await;
    assert_eq!(
        others.len(),
        1,
        "one letter in the lane: only the bad key's"
    );

    // Later events: the others' flow, the parked key's wait.
    write(fixture.store(), &streams, 3).await;
    let log = log_with(fixture.store(), 64).await;
    until_applied(fixture, "the other keys' later events", |a| {
        holds_all(a, &log, |e| !held(e))
    })
    .await;
    assert_applied(&fixture.applied().await, &log, &name, &lanes, |e| !held(e));

    // A retry that fails again keeps the key parked, attempts counted.
    let store = fixture.store();
    let (lane, _) = letters_of(store, &name, &lanes, &bad).await;
    assert!(
        store
            .resolve(&lane, &bad, DeadLetterAction::Retry)
            .await
            .expect("resolve")
    );
    assert!(
        !store
            .resolve(&lane, "no-such-key", DeadLetterAction::Retry)
            .await
            .expect("resolve"),
        "no letter to resolve"
    );
    let again = until_letter(store, &name, &lanes, &bad, "parked again", |l| {
        l.attempts > letter.attempts && l.action.is_none()
    })
    .await;
    assert_eq!(
        again.position, letter.position,
        "still parked at the same event"
    );
    assert_applied(&fixture.applied().await, &log, &name, &lanes, |e| !held(e));

    // Many more events wait behind it; then a cure, a retry, and a kill in
    // the middle of the hand-over.
    write(fixture.store(), std::slice::from_ref(&bad), 40).await;
    let log = log_with(fixture.store(), 104).await;
    instance.stop().await.expect("stop");
    let slow = Pace {
        per_event: Duration::from_millis(4),
        first_event: Duration::ZERO,
    };
    // The fifth event handed over is committed, and its instance hangs
    // before it reports back: only the projection knows it is applied.
    poison.hang_after_replayed(Some(5));
    instance = start_instance(fixture, 1, &name, &lanes, &config, slow, &poison).await;
    poison.remove(&bad, 3);
    assert!(
        store
            .resolve(&lane, &bad, DeadLetterAction::Retry)
            .await
            .expect("resolve")
    );
    until_applied(fixture, "part of the hand-over", |a| {
        log.iter()
            .filter(|(_, e)| held(e))
            .filter(|(_, e)| a.iter().any(|x| x.event_id == e.event_id()))
            .count()
            >= 5
    })
    .await;
    instance.abort();
    poison.hang_after_replayed(None);
    let mid = fixture.applied().await;
    let handed: usize = log
        .iter()
        .filter(|(_, e)| held(e) && mid.iter().any(|a| a.event_id == e.event_id()))
        .count();
    assert!(
        handed < 43,
        "the kill landed after the hand-over had ended ({handed} of 43): it tested nothing"
    );
    instance = start_instance(fixture, 2, &name, &lanes, &config, pace, &poison).await;
    until_applied(fixture, "the rest of the hand-over", |a| {
        holds_all(a, &log, |_| true)
    })
    .await;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !letters_of(store, &name, &lanes, &bad).await.1.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the letter stays after its retry"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    write(fixture.store(), std::slice::from_ref(&bad), 2).await;
    let log = log_with(fixture.store(), 106).await;
    until_applied(fixture, "the key flows again", |a| {
        holds_all(a, &log, |_| true)
    })
    .await;
    assert_applied(&fixture.applied().await, &log, &name, &lanes, |_| true);

    // A skip drops the parked event only.
    let next = log
        .iter()
        .filter(|(_, e)| e.stream_id().as_ref() == sibling)
        .count() as u64
        + 1;
    poison.add(&sibling, next);
    write(fixture.store(), std::slice::from_ref(&sibling), 3).await;
    let skipped_letter = until_letter(store, &name, &lanes, &sibling, "the sibling parked", |_| {
        true
    })
    .await;
    assert!(
        store
            .resolve(&lane, &sibling, DeadLetterAction::Skip)
            .await
            .expect("resolve")
    );
    let dropped =
        |e: &RecordedEvent| e.stream_id().as_ref() == sibling && e.version().get() == next;
    let log = log_with(fixture.store(), 109).await;
    until_applied(fixture, "the events after the skipped one", |a| {
        holds_all(a, &log, |e| !dropped(e))
    })
    .await;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !letters_of(store, &name, &lanes, &sibling)
        .await
        .1
        .is_empty()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the letter stays after its skip"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let report = instance.stop().await.expect("stop");
    assert_applied(&fixture.applied().await, &log, &name, &lanes, |e| {
        !dropped(e)
    });
    let skipped: Vec<Position> = report
        .runs
        .iter()
        .flat_map(|(_, r)| r.last_skipped.iter().copied())
        .collect();
    assert_eq!(
        skipped,
        vec![skipped_letter.position],
        "the skip is reported"
    );
}

/// The contract of [`DeadLetters`] on `store`: one letter per key, writes
/// fenced by the lane's newest lease token, the replay mark only forward,
/// a re-park keeps it and clears the action, release removes the letter.
///
/// # Panics
/// When any of that does not hold.
pub async fn dead_letters_are_fenced<S>(store: &S)
where
    S: DeadLetters + SubscriptionLeases,
{
    let lane = name("fenced-lane");
    let event = RecordedEvent::new(stream("fenced"), 1.into(), 1, "Credited", "{}");
    let first = store
        .try_acquire(&lane)
        .await
        .expect("acquire")
        .expect("a free lease");
    let old = store.token(&first);
    let at = |n| Position::new(n, 0);
    let letter = DeadLetter::new(lane.clone(), "k", at(10), &event, "boom", 3, Some(at(5)));
    store.park(&letter, old).await.expect("park");
    let listed = store.dead_letters(&lane).await.expect("list");
    assert_eq!(listed.len(), 1, "one letter");
    assert_eq!(
        (listed[0].key.as_str(), listed[0].position, listed[0].after),
        ("k", at(10), Some(at(5)))
    );
    assert_eq!(listed[0].error, "boom");
    assert_eq!(listed[0].attempts, 3);
    assert_eq!(listed[0].event_id, event.event_id());
    assert!(
        store
            .resolve(&lane, "k", DeadLetterAction::Skip)
            .await
            .expect("resolve")
    );
    assert!(
        !store
            .resolve(&lane, "x", DeadLetterAction::Skip)
            .await
            .expect("resolve")
    );
    assert_eq!(
        store.dead_letters(&lane).await.expect("list")[0].action,
        Some(DeadLetterAction::Skip)
    );
    store
        .replayed(&lane, "k", at(12), old)
        .await
        .expect("replayed");
    store
        .replayed(&lane, "k", at(7), old)
        .await
        .expect("replayed back");
    assert_eq!(
        store.dead_letters(&lane).await.expect("list")[0].after,
        Some(at(12)),
        "the replay mark never moves back"
    );
    let again = DeadLetter::new(lane.clone(), "k", at(14), &event, "again", 5, Some(at(5)));
    store.park(&again, old).await.expect("park again");
    let listed = store.dead_letters(&lane).await.expect("list");
    assert_eq!(listed.len(), 1, "still one letter per key");
    assert_eq!(
        (listed[0].position, listed[0].after, listed[0].action),
        (at(14), Some(at(12)), None),
        "a re-park keeps the replay mark and clears the action"
    );
    assert_eq!(listed[0].error, "again");

    drop(first);
    let second = store
        .try_acquire(&lane)
        .await
        .expect("acquire")
        .expect("the lease is free again");
    let new = store.token(&second);
    assert!(new > old, "a newer token");
    let stale = DeadLetter::new(lane.clone(), "k2", at(20), &event, "stale", 1, None);
    let refused = [
        store.park(&stale, old).await,
        store.replayed(&lane, "k", at(30), old).await,
        store.release(&lane, "k", old).await,
    ];
    for result in refused {
        assert!(
            matches!(result, Err(StoreError::LeaseLost { .. })),
            "a stale holder's write is refused: {result:?}"
        );
    }
    let listed = store.dead_letters(&lane).await.expect("list");
    assert_eq!(listed.len(), 1, "nothing written by the stale holder");
    assert_eq!(listed[0].after, Some(at(12)));
    store.release(&lane, "k", new).await.expect("release");
    assert!(store.dead_letters(&lane).await.expect("list").is_empty());
    drop(second);
}
