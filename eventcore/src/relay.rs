//! Relays: the global log sent to another system (a broker's stream), every
//! event once and in log order, resuming from what that system says it
//! holds.
//!
//! A relay keeps no checkpoint of its own. Its position is the last event
//! its [`RelaySink`] stores, read back from the sink whenever the relay
//! starts, takes its lease, or recovers from a failure: a publish whose
//! acknowledgement was lost, a relay killed mid-batch, a broker restarted
//! or down for longer than its de-duplication window all resume exactly
//! after the last event stored, never before it (no duplicate) and never
//! past it (no gap). One relay of a name runs at a time (a
//! [`SubscriptionLeases`] lease); a sink refuses a publish that does not
//! follow what it holds, so even two relays that both believe they hold
//! the lease cannot interleave or repeat events.

use std::{future::Future, time::Duration};

use tokio::sync::watch;

use crate::{
    BoxError, EventLog, LogQuery, Position, RecordedEvent, RetryPolicy, SubscriptionLeases,
    SubscriptionName,
};

/// Where a [`relay`] sends the log: a destination that stores events in
/// the order it is sent them and can say which one it stores last (a
/// JetStream stream, a Kafka topic partition).
///
/// The contract that makes a relay exact:
/// - [`last_relayed`](RelaySink::last_relayed) reads the position of the
///   last event stored from the destination itself;
/// - [`publish`](RelaySink::publish) stores the events it is given after
///   that one, in order, and fails (storing nothing more of the batch)
///   when the destination no longer ends where the sink last saw it:
///   another relay published, or an earlier message of the batch was
///   lost. After a failure, the relay asks `last_relayed` again.
pub trait RelaySink: Send + Sync + 'static {
    /// The log position of the last event the destination stores, `None`
    /// if it stores none.
    ///
    /// # Errors
    /// The destination cannot be reached or holds what is not a relayed
    /// event.
    fn last_relayed(&self) -> impl Future<Output = Result<Option<Position>, BoxError>> + Send;

    /// Stores `events` (in log order, each after the last one stored)
    /// in order; `Ok` once every one is stored.
    ///
    /// # Errors
    /// Any failure: some of the events may be stored, none out of order.
    fn publish(
        &self,
        events: &[(Position, RecordedEvent)],
    ) -> impl Future<Output = Result<(), BoxError>> + Send;
}

/// How a relay reads, waits and recovers. Start from
/// [`default`](RelayConfig::default) and change what you need.
///
/// ```
/// use std::time::Duration;
/// use eventcore::{LogQuery, RelayConfig};
/// let config = RelayConfig::default()
///     .with_batch(2_000)
///     .with_filter(LogQuery::from_start(0).with_stream_prefix("account-"));
/// assert_eq!(config.batch, 2_000);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RelayConfig {
    /// Events read and published at once.
    pub batch: usize,
    /// Which events: the query's filters are used, its start and limit
    /// are not.
    pub filter: LogQuery,
    /// How long the relay waits for new events (or for the lease) before
    /// it looks again, when the store cannot wake it.
    pub poll_interval: Duration,
    /// The capped, jittered backoff after a failure (the relay never gives
    /// up: `max_attempts` is not used).
    pub retry: RetryPolicy,
}

impl Default for RelayConfig {
    /// Batches of 1,000 events, every event, a look every 100 ms, waits
    /// from 50 ms doubling to 5 s after failures.
    fn default() -> Self {
        RelayConfig {
            batch: 1_000,
            filter: LogQuery::from_start(0),
            poll_interval: Duration::from_millis(100),
            retry: RetryPolicy::default()
                .with_base_delay(Duration::from_millis(50))
                .with_max_delay(Duration::from_secs(5)),
        }
    }
}

impl RelayConfig {
    /// Sets the events per batch (at least 1).
    pub fn with_batch(mut self, batch: usize) -> Self {
        self.batch = batch.max(1);
        self
    }

    /// Relays only the events `filter` lets through.
    pub fn with_filter(mut self, filter: LogQuery) -> Self {
        self.filter = filter;
        self
    }

    /// Sets the longest wait between looks.
    pub fn with_poll_interval(mut self, poll_interval: Duration) -> Self {
        self.poll_interval = poll_interval;
        self
    }

    /// Sets the backoff after failures.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }
}

/// What a relay did, when it stopped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RelayReport {
    /// Events published and acknowledged.
    pub published: u64,
    /// Publishes or reads that failed and were recovered from.
    pub failures: u64,
    /// Times the lease was found lost.
    pub leases_lost: u64,
}

/// A running relay.
#[derive(Debug)]
pub struct RelayHandle {
    stop: watch::Sender<bool>,
    position: watch::Receiver<Option<Position>>,
    task: tokio::task::JoinHandle<RelayReport>,
}

impl RelayHandle {
    /// The position of the last event this relay knows the sink stores
    /// (read back from it, or published by this relay since).
    pub fn position(&self) -> watch::Receiver<Option<Position>> {
        self.position.clone()
    }

    /// Whether the relay's task has ended.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops after the batch under way and reports.
    pub async fn stop(self) -> RelayReport {
        let _ = self.stop.send(true);
        self.task.await.unwrap_or_default()
    }

    /// Ends the relay at once, as a crash would: a batch under way is cut
    /// off wherever it is (sent or not, acknowledged or not).
    pub fn abort(self) {
        self.task.abort();
    }
}

/// Starts relaying the log of `log` to `sink` as relay `name`, holding
/// `name`'s lease in `leases` while it runs (instances of the same name in
/// other processes wait for it). Must be called within a Tokio runtime.
pub fn relay<L, K, S>(
    log: L,
    leases: K,
    name: SubscriptionName,
    sink: S,
    config: RelayConfig,
) -> RelayHandle
where
    L: EventLog + 'static,
    K: SubscriptionLeases + 'static,
    S: RelaySink,
{
    let (stop, stopped) = watch::channel(false);
    let (position, positions) = watch::channel(None);
    let relay = Relay {
        log,
        leases,
        name,
        sink,
        config,
        stopped,
        position,
        report: RelayReport::default(),
        failures: 0,
    };
    let task = tokio::spawn(relay.run());
    RelayHandle {
        stop,
        position: positions,
        task,
    }
}

struct Relay<L, K, S> {
    log: L,
    leases: K,
    name: SubscriptionName,
    sink: S,
    config: RelayConfig,
    stopped: watch::Receiver<bool>,
    position: watch::Sender<Option<Position>>,
    report: RelayReport,
    /// Failures in a row, for the backoff.
    failures: u32,
}

/// The most doublings of the backoff.
const MAX_BACKOFF_STEPS: u32 = 16;

impl<L, K, S> Relay<L, K, S>
where
    L: EventLog,
    K: SubscriptionLeases,
    S: RelaySink,
{
    fn stopping(&self) -> bool {
        *self.stopped.borrow()
    }

    /// Waits `wait`, or until asked to stop.
    async fn pause(&mut self, wait: Duration) {
        let mut stopped = self.stopped.clone();
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = stopped.wait_for(|asked| *asked) => {}
        }
    }

    /// Counts a failure and waits out its backoff.
    async fn failed(&mut self, what: &str, error: &BoxError) {
        self.report.failures += 1;
        self.failures = self.failures.saturating_add(1);
        tracing::warn!(relay = %self.name, %error, "{what} failed; the relay resumes from the sink's last event");
        let wait = self
            .config
            .retry
            .delay(self.failures.min(MAX_BACKOFF_STEPS), fastrand::u64(..));
        self.pause(wait).await;
    }

    async fn run(mut self) -> RelayReport {
        while !self.stopping() {
            let lease = match self.leases.try_acquire(&self.name).await {
                Ok(Some(lease)) => lease,
                Ok(None) => {
                    self.pause(self.config.poll_interval).await;
                    continue;
                }
                Err(e) => {
                    self.failed("taking the lease", &e.into()).await;
                    continue;
                }
            };
            tracing::info!(relay = %self.name, "lease taken");
            self.session(lease).await;
        }
        self.leases.stop_waiting(&self.name);
        self.report
    }

    /// Relays while the lease holds and no stop is asked for.
    async fn session(&mut self, mut lease: K::Lease) {
        // Unknown until read back from the sink.
        let mut at: Option<Option<Position>> = None;
        while !self.stopping() {
            let from = match at {
                Some(from) => from,
                None => match self.sink.last_relayed().await {
                    Ok(from) => {
                        if from > *self.position.borrow() {
                            self.position.send_replace(from);
                        }
                        at = Some(from);
                        from
                    }
                    Err(e) => {
                        self.failed("reading the sink's last event", &e).await;
                        continue;
                    }
                },
            };
            let woken = self.log.appended();
            let query = self.query(from);
            let page = match self.log.read_all(&query).await {
                Ok(page) => page,
                Err(e) => {
                    drop(woken);
                    self.failed("reading the log", &e.into()).await;
                    continue;
                }
            };
            if page.is_empty() {
                // Past events the filters leave out, if any: read on from
                // there, but resume from the sink's last event after a
                // restart (nothing is lost, some reading repeated).
                if page.next() > from {
                    at = Some(page.next());
                    continue;
                }
                let mut stopped = self.stopped.clone();
                tokio::select! {
                    () = woken => {}
                    () = tokio::time::sleep(self.config.poll_interval) => {}
                    _ = stopped.wait_for(|asked| *asked) => {}
                }
                continue;
            }
            drop(woken);
            match self.leases.still_held(&mut lease).await {
                Ok(true) => {}
                Ok(false) => {
                    self.report.leases_lost += 1;
                    tracing::warn!(relay = %self.name, "lease lost; waiting to take it again");
                    return;
                }
                Err(e) => {
                    self.failed("checking the lease", &e.into()).await;
                    return;
                }
            }
            match self.sink.publish(page.events()).await {
                Ok(()) => {
                    self.failures = 0;
                    let count = page.len();
                    self.report.published += u64::try_from(count).unwrap_or(u64::MAX);
                    let last = page.events().last().map(|(p, _)| *p);
                    at = Some(last.max(page.next()));
                    if last > *self.position.borrow() {
                        self.position.send_replace(last);
                    }
                }
                Err(e) => {
                    at = None;
                    self.failed("publishing", &e).await;
                }
            }
        }
    }

    fn query(&self, from: Option<Position>) -> LogQuery {
        let mut query = match from {
            Some(at) => LogQuery::after(at, self.config.batch),
            None => LogQuery::from_start(self.config.batch),
        };
        if let Some(prefix) = self.config.filter.stream_prefix() {
            query = query.with_stream_prefix(prefix);
        }
        if let Some(types) = self.config.filter.event_types() {
            query = query.with_event_types(types.iter().cloned());
        }
        query
    }
}
