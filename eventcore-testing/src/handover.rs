//! Exactly once across lease handovers: one scenario for every store.
//!
//! Several instances of one named subscription run an exactly-once
//! projection (each as another process would: its own store value) that
//! counts, as an effect committed with the checkpoint, how often each event
//! was applied. While they work through the log, the holder's lease is
//! ended as the death of its session would end it, again and again, so
//! that handovers land in the middle of pages. Afterwards every event must
//! have been applied exactly once, no write may have moved the checkpoint
//! back, the checkpoint must stand at the log's end, and a restart must
//! apply nothing again.
//!
//! A backend provides a [`Handover`] fixture; [`exactly_once_across_handovers`]
//! runs one [`HandoverPlan`] on it.

use std::{collections::HashMap, future::Future, time::Duration};

use eventcore::{
    EventLog, EventStore, LogQuery, Position, SubscriptionHandle, SubscriptionName, Uuid, execute,
};

use crate::fixtures::{Credit, stream};

/// How fast an instance's handler is.
#[derive(Debug, Clone, Copy, Default)]
pub struct Pace {
    /// Time spent on every event, inside the projection's transaction.
    pub per_event: Duration,
    /// Extra time on the first event the instance handles (a holder slow
    /// on its first page, so that it is still inside it when it loses the
    /// lease).
    pub first_event: Duration,
}

/// A handler that spends `pace`'s time on each event (its first event the
/// longer), then hands it on: what a fixture wraps its exactly-once
/// projection in when the projection itself cannot wait.
#[derive(Debug)]
pub struct Paced<H> {
    pace: Pace,
    first: bool,
    inner: H,
}

impl<H> Paced<H> {
    /// `inner`, at `pace`.
    pub fn new(pace: Pace, inner: H) -> Self {
        Paced {
            pace,
            first: true,
            inner,
        }
    }
}

impl<E: Sync, H: eventcore::Handler<E>> eventcore::Handler<E> for Paced<H> {
    async fn handle(
        &mut self,
        context: &eventcore::EventContext,
        event: &E,
    ) -> Result<(), eventcore::BoxError> {
        let mut wait = self.pace.per_event;
        if std::mem::take(&mut self.first) {
            wait += self.pace.first_event;
        }
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        self.inner.handle(context, event).await
    }
}

/// What a backend gives the scenario.
pub trait Handover: Send + Sync {
    /// The store the scenario writes events through.
    type Store: EventStore + EventLog + Clone + Send + Sync + 'static;

    /// The store to write through.
    fn store(&self) -> &Self::Store;

    /// Starts instance `instance` of subscription `name`: an exactly-once
    /// projection, on a store value of its own (as another process would
    /// have), that adds one to a committed count of the event's id each
    /// time it applies an event, at `pace`, reading pages of `page_size`.
    fn start(
        &self,
        instance: usize,
        name: &SubscriptionName,
        pace: Pace,
        page_size: usize,
    ) -> impl Future<Output = SubscriptionHandle> + Send;

    /// Ends the lease of `name` as the death of its holder's session
    /// would; whether a lease was held to end.
    fn lose_lease(&self, name: &SubscriptionName) -> impl Future<Output = bool> + Send;

    /// How many times each event was applied, as committed.
    fn applied(&self) -> impl Future<Output = HashMap<Uuid, u64>> + Send;

    /// Every write that changed the checkpoint of `name`, as (from, to), in
    /// the order they were made.
    fn checkpoint_writes(
        &self,
        name: &SubscriptionName,
    ) -> impl Future<Output = Vec<(Option<Position>, Position)>> + Send;

    /// The saved checkpoint of `name`.
    fn checkpoint(&self, name: &SubscriptionName) -> impl Future<Output = Option<Position>> + Send;
}

/// One run of the scenario.
#[derive(Debug, Clone)]
pub struct HandoverPlan {
    /// The subscription's name.
    pub name: &'static str,
    /// Events written before the instances start.
    pub events: usize,
    /// Streams they are spread over (one writer task each).
    pub streams: usize,
    /// Instances running at once.
    pub instances: usize,
    /// Events per page.
    pub page_size: usize,
    /// Pace of the first instance.
    pub first_pace: Pace,
    /// Pace of the others.
    pub pace: Pace,
    /// Leases to end, at most.
    pub losses: usize,
    /// Time before the first loss.
    pub first_loss_after: Duration,
    /// Time between losses.
    pub loss_every: Duration,
}

impl HandoverPlan {
    /// 2,000 events over 20 streams, two instances, pages of 50, 1 ms per
    /// event (so that an in-memory run lasts long enough to be
    /// interrupted), a lease ended every 40 ms, up to 10 times.
    pub fn many_fast_handovers() -> Self {
        HandoverPlan {
            name: "handover-fast",
            events: 2_000,
            streams: 20,
            instances: 2,
            page_size: 50,
            first_pace: Pace {
                per_event: Duration::from_millis(1),
                first_event: Duration::ZERO,
            },
            pace: Pace {
                per_event: Duration::from_millis(1),
                first_event: Duration::ZERO,
            },
            losses: 10,
            first_loss_after: Duration::from_millis(20),
            loss_every: Duration::from_millis(40),
        }
    }

    /// 300 events, 10 ms per event, one handover a second in.
    pub fn one_slow_handover() -> Self {
        HandoverPlan {
            name: "handover-slow",
            events: 300,
            streams: 10,
            instances: 2,
            page_size: 50,
            first_pace: Pace {
                per_event: Duration::from_millis(10),
                first_event: Duration::ZERO,
            },
            pace: Pace {
                per_event: Duration::from_millis(10),
                first_event: Duration::ZERO,
            },
            losses: 1,
            first_loss_after: Duration::from_secs(1),
            loss_every: Duration::from_secs(3600),
        }
    }

    /// The first holder spends 1.5 s on its first event and loses its lease
    /// 300 ms into it: the next holder works through the log meanwhile, and
    /// the old one, waking up, must commit nothing.
    pub fn stale_holder() -> Self {
        HandoverPlan {
            name: "handover-stale",
            events: 500,
            streams: 10,
            instances: 2,
            page_size: 100,
            first_pace: Pace {
                per_event: Duration::ZERO,
                first_event: Duration::from_millis(1_500),
            },
            pace: Pace::default(),
            losses: 1,
            first_loss_after: Duration::from_millis(300),
            loss_every: Duration::from_secs(3600),
        }
    }
}

/// How long the scenario waits for the instances to reach the log's end.
const DEADLINE: Duration = Duration::from_secs(90);

/// Writes `count` events over `streams` streams, one task per stream
/// released together.
pub(crate) async fn seed<S: EventStore + Clone + Send + Sync + 'static>(
    store: &S,
    count: usize,
    streams: usize,
    tag: &str,
) {
    let streams = streams.max(1);
    let tasks: Vec<_> = (0..streams)
        .map(|s| {
            let store = store.clone();
            let n = count / streams + usize::from(s < count % streams);
            let account = stream(&format!("{tag}-{s}"));
            tokio::spawn(async move {
                for i in 0..n {
                    execute(
                        &store,
                        Credit {
                            account: account.clone(),
                            amount: i as u64 + 1,
                        },
                    )
                    .await
                    .expect("seed the log");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("a seeding task panicked");
    }
}

/// Every event of the log, its id and position in log order, once the log
/// shows at least `expected` (a store may hold back just-committed events
/// while older transactions are open).
pub(crate) async fn log_of<S: EventLog>(store: &S, expected: usize) -> Vec<(Position, Uuid)> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let all = whole_log(store).await;
        if all.len() >= expected {
            return all;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the log shows {} of the {expected} events written",
            all.len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Every event the log shows now.
pub(crate) async fn whole_log<S: EventLog>(store: &S) -> Vec<(Position, Uuid)> {
    let mut all = Vec::new();
    let mut query = LogQuery::from_start(1_000);
    loop {
        let page = store.read_all(&query).await.expect("read the log");
        let next = page.next();
        let done = page.is_empty();
        all.extend(page.events().iter().map(|(p, e)| (*p, e.event_id())));
        if done {
            return all;
        }
        query = match next {
            Some(next) => LogQuery::after(next, 1_000),
            None => return all,
        };
    }
}

/// Waits until the checkpoint of `name` reaches `end`.
async fn until_checkpoint<F: Handover>(fixture: &F, name: &SubscriptionName, end: Position) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if fixture.checkpoint(name).await >= Some(end) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the checkpoint of {name} never reached the log's end {end:?}: at {:?}",
            fixture.checkpoint(name).await
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Stops `handle` and asserts it returned within its grace (5 s) and a
/// margin.
async fn stop_in_time(handle: SubscriptionHandle, who: &str) -> eventcore::SubscriptionReport {
    match tokio::time::timeout(Duration::from_secs(10), handle.stop()).await {
        Ok(Ok(report)) => report,
        Ok(Err(e)) => panic!("{who} had stopped on an error: {e}"),
        Err(_) => panic!("{who} did not stop within its grace"),
    }
}

/// Runs `plan` on `fixture` and asserts what exactly once promises: every
/// event applied once, the checkpoint never moved back and at the log's
/// end, at least one handover taken, and nothing applied again by a
/// restarted instance.
///
/// # Panics
/// When any of that does not hold.
pub async fn exactly_once_across_handovers<F: Handover>(fixture: &F, plan: HandoverPlan) {
    let name = SubscriptionName::try_new(plan.name).expect("valid name");
    seed(fixture.store(), plan.events, plan.streams, plan.name).await;
    let log = log_of(fixture.store(), plan.events).await;
    assert_eq!(log.len(), plan.events, "the seeded log");
    let end = log.last().map(|(p, _)| *p).expect("events were written");

    let mut handles = Vec::new();
    for i in 0..plan.instances {
        let pace = if i == 0 { plan.first_pace } else { plan.pace };
        handles.push(fixture.start(i, &name, pace, plan.page_size).await);
        if i == 0 {
            // The first instance takes the lease before the others start.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let mut losses = 0;
    let mut next_loss = tokio::time::Instant::now() + plan.first_loss_after;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while fixture.checkpoint(&name).await < Some(end) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the instances never reached the log's end {end:?}: at {:?} after {losses} handovers",
            fixture.checkpoint(&name).await
        );
        if losses < plan.losses && tokio::time::Instant::now() >= next_loss {
            if fixture.lose_lease(&name).await {
                losses += 1;
            }
            next_loss = tokio::time::Instant::now() + plan.loss_every;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // A stale holder may still be inside its slow first event: give it the
    // time to wake up and try to commit before counting.
    tokio::time::sleep(plan.first_pace.first_event).await;
    let mut leases_lost = 0;
    for (i, handle) in handles.into_iter().enumerate() {
        let report = stop_in_time(handle, &format!("instance {i}")).await;
        leases_lost += report.leases_lost;
    }
    assert!(
        losses >= 1,
        "no lease was ended: the scenario tested nothing"
    );
    assert!(
        leases_lost >= 1,
        "no instance noticed it had lost its lease ({losses} ended)"
    );

    let applied = fixture.applied().await;
    let twice: Vec<_> = log
        .iter()
        .filter(|(_, id)| applied.get(id).copied().unwrap_or(0) > 1)
        .collect();
    let never: Vec<_> = log
        .iter()
        .filter(|(_, id)| !applied.contains_key(id))
        .collect();
    assert!(
        twice.is_empty() && never.is_empty(),
        "after {losses} handovers, {} of {} events applied more than once (first {:?}) and {} never (first {:?})",
        twice.len(),
        log.len(),
        twice.first(),
        never.len(),
        never.first()
    );
    assert_eq!(
        applied.len(),
        log.len(),
        "only the log's events were applied"
    );

    let writes = fixture.checkpoint_writes(&name).await;
    assert!(!writes.is_empty(), "no checkpoint write was recorded");
    let back: Vec<_> = writes
        .iter()
        .filter(|(from, to)| from.is_some_and(|from| from >= *to))
        .collect();
    assert!(
        back.is_empty(),
        "{} of {} checkpoint writes did not move it forward (first {:?})",
        back.len(),
        writes.len(),
        back.first()
    );
    for pair in writes.windows(2) {
        assert_eq!(
            Some(pair[0].1),
            pair[1].0,
            "a checkpoint write started from somewhere else than the last one ended"
        );
    }
    assert_eq!(
        fixture.checkpoint(&name).await,
        Some(end),
        "the final checkpoint"
    );

    // A clean restart: one more event, applied once; nothing before it again.
    let restarted = fixture
        .start(plan.instances, &name, Pace::default(), plan.page_size)
        .await;
    seed(fixture.store(), 1, 1, &format!("{}-after", plan.name)).await;
    let log = log_of(fixture.store(), plan.events + 1).await;
    let (last, last_id) = *log.last().expect("the new event");
    until_checkpoint(fixture, &name, last).await;
    stop_in_time(restarted, "the restarted instance").await;
    let applied = fixture.applied().await;
    assert_eq!(applied.get(&last_id), Some(&1), "the new event, once");
    let again = log
        .iter()
        .filter(|(_, id)| applied.get(id).copied().unwrap_or(0) != 1)
        .count();
    assert_eq!(again, 0, "the restart applied {again} events again");
}
