//! Subscriptions: read the global log from a checkpoint, then follow it.
//!
//! A subscription has a name; its checkpoint (the position of the last
//! event it handled) lives in a [`CheckpointStore`]. [`subscribe`] starts a
//! task that catches up in pages from the checkpoint, then follows new
//! events (woken by the store when it can, polling otherwise), hands each
//! to a [`Handler`], and saves the checkpoint after every page and on stop.
//!
//! One instance per name runs at a time: the checkpoint store also hands out
//! a lease per subscription name ([`SubscriptionLeases`]); a second
//! instance waits, polling, and takes over when the first stops or dies.
//! Every lease taken carries a [`LeaseToken`] larger than any taken before
//! it under that name (a fencing token). A checkpoint is saved only with
//! the newest token and only forward: a holder that lost its lease (its
//! database session died, say) cannot move the checkpoint, not even back
//! to where it was when it lost the lease; its save fails with
//! [`StoreError::LeaseLost`] and the instance goes back to waiting. The
//! token is in every [`EventContext`], so a handler can fence its own
//! effects with it: the exactly-once projections of the stores (for
//! example `eventcore_postgres::ExactlyOnce`) check it in the transaction
//! that holds the handler's effects and the checkpoint, so a stale holder
//! commits neither. A plain handler's effects elsewhere are at least once:
//! a holder that lost its lease in the middle of a page may still hand the
//! rest of that page to its handler before its next save fails.
//!
//! Transient store failures (a lost connection while reading, saving the
//! checkpoint or checking the lease) do not stop a subscription: it starts
//! a new session after a backoff capped by its retry policy's maximum
//! delay, takes its lease again and resumes from the saved checkpoint
//! (counted in [`SubscriptionReport::store_retries`]). It stops only on
//! what a retry cannot cure.
//!
//! Delivery is **at least once** for a plain handler: if the process dies
//! after handling an event and before saving the checkpoint, the event is
//! handled again on restart. Handler failures are retried with capped backoff, then either
//! stop the subscription or skip the event and record its position
//! ([`OnHandlerError`]). An event that no longer deserialises always stops
//! it: the checkpoint stays before it, and nothing is skipped silently.

use std::{collections::BTreeMap, future::Future, marker::PhantomData, sync::Arc, time::Duration};

use tokio::sync::watch;

use crate::{
    BoxError, DEAD_LETTER_POLL, DeadLetter, DeadLetterAction, DeadLetters, Decode, EventLog,
    LeaseToken, LogQuery, Position, RecordedEvent, RetryPolicy, StoreError, SubscriptionName,
    lanes::LaneFilter,
};

/// How soon to look again after a wake-up found nothing new, and for how
/// long after the wake-up to keep looking that often.
const EAGER_POLL: Duration = Duration::from_millis(10);
const EAGER_WINDOW: Duration = Duration::from_secs(2);
/// Backoff steps after which the wait between sessions stops growing (the
/// retry policy's maximum delay caps it before that).
const MAX_BACKOFF_STEPS: u32 = 16;
/// How many positions of skipped events a report keeps (the newest).
pub const SKIPPED_KEPT: usize = 64;

/// Why a session ended without being asked to.
enum Halt {
    /// A transient store error or a lost lease: start a new session.
    Retry,
    /// What a retry cannot cure.
    Fatal(SubscriptionError),
}

/// Where subscriptions keep their checkpoints.
///
/// # Contract
/// `load` returns the last position saved under the name (`None` if
/// none). `save` writes durably before returning, and only when both hold:
/// - `token` is the newest [`LeaseToken`] handed out for the name (by the
///   [`SubscriptionLeases`] of the same store); otherwise it fails with
///   [`StoreError::LeaseLost`] and writes nothing;
/// - `position` is past the saved checkpoint; a position at or before it
///   writes nothing and is not an error (a checkpoint never moves back).
pub trait CheckpointStore: Send + Sync {
    /// The saved checkpoint of `name`.
    ///
    /// # Errors
    /// The backend's failure.
    fn load(
        &self,
        name: &SubscriptionName,
    ) -> impl Future<Output = Result<Option<Position>, StoreError>> + Send;

    /// Moves the checkpoint of `name` forward to `position`, if `token` is
    /// still the name's newest lease token.
    ///
    /// # Errors
    /// [`StoreError::LeaseLost`] when a newer lease was taken (nothing is
    /// written); the backend's failure.
    fn save(
        &self,
        name: &SubscriptionName,
        position: Position,
        token: LeaseToken,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Makes sure at most one instance of a subscription runs at a time, across
/// processes sharing the store.
///
/// # Contract
/// While a value returned by `try_acquire` lives and `still_held` says
/// `true`, no other `try_acquire` for the same name succeeds. If the holder
/// dies, the lease is released (a database session ends, for example).
/// Each lease taken has a [`token`](SubscriptionLeases::token) larger than
/// that of every lease taken before it under the same name, even across
/// processes and restarts, and the store's [`CheckpointStore::save`]
/// refuses every token but the newest.
pub trait SubscriptionLeases: Send + Sync {
    /// Proof of holding a lease; dropping it releases the lease.
    type Lease: Send + 'static;

    /// Takes the lease of `name`, or `None` if another instance holds it.
    ///
    /// # Errors
    /// The backend's failure.
    fn try_acquire(
        &self,
        name: &SubscriptionName,
    ) -> impl Future<Output = Result<Option<Self::Lease>, StoreError>> + Send;

    /// The fencing token of `lease`.
    fn token(&self, lease: &Self::Lease) -> LeaseToken;

    /// Whether `lease` is still held (its session may have been lost).
    ///
    /// # Errors
    /// The backend's failure.
    fn still_held(
        &self,
        lease: &mut Self::Lease,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Called when an instance that was waiting for the lease of `name`
    /// stops waiting without it (it was asked to stop): a store that keeps
    /// resources for waiting instances (a database session) frees them.
    /// Does nothing by default.
    fn stop_waiting(&self, name: &SubscriptionName) {
        let _ = name;
    }
}

/// Where a delivered event sits in the log, and the event as stored: its
/// stream, version, id, time and [`Metadata`](crate::Metadata).
///
/// A handler that issues a command because of the event passes it on with
/// [`ExecuteOptions::caused_by`](crate::ExecuteOptions::caused_by), so the
/// command's events carry this event's correlation id and its id as
/// causation id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventContext {
    position: Position,
    recorded: RecordedEvent,
    lease: LeaseToken,
    parked_key: Option<Arc<str>>,
}

impl EventContext {
    /// Assembles a context (for handler tests), under lease token 0.
    pub fn new(position: Position, recorded: RecordedEvent) -> Self {
        EventContext {
            position,
            recorded,
            lease: LeaseToken::default(),
            parked_key: None,
        }
    }

    /// The same context, delivered again from the dead letter of `key`.
    #[must_use]
    pub fn with_parked_key(mut self, key: impl Into<Arc<str>>) -> Self {
        self.parked_key = Some(key.into());
        self
    }

    /// The key whose parked events are being handed over again (see
    /// [`DeadLetterAction`](crate::DeadLetterAction)), when this delivery is
    /// one of them; `None` for a delivery in log order. The lane's
    /// checkpoint has passed such an event: an exactly-once projection
    /// records it as replayed on the key's dead letter
    /// ([`DeadLetters::replayed`](crate::DeadLetters::replayed)) in the
    /// transaction of its effects, rather than move the checkpoint.
    pub fn parked_key(&self) -> Option<&str> {
        self.parked_key.as_deref()
    }

    /// The same context under lease token `lease`.
    #[must_use]
    pub fn with_lease_token(mut self, lease: LeaseToken) -> Self {
        self.lease = lease;
        self
    }

    /// The fencing token of the lease under which the event is delivered: a
    /// handler whose effects go where the token can be checked (in the
    /// transaction that saves the checkpoint, or a service that takes
    /// fencing tokens) refuses them once a newer holder exists.
    pub fn lease_token(&self) -> LeaseToken {
        self.lease
    }

    /// The event's place in the log (what a checkpoint holds).
    pub fn position(&self) -> Position {
        self.position
    }

    /// The event as stored.
    pub fn recorded(&self) -> &RecordedEvent {
        &self.recorded
    }
}

/// Handles the events of a subscription, one at a time, in log order.
pub trait Handler<E>: Send + 'static {
    /// Handles one event. An error is retried (see
    /// [`SubscriptionConfig::retry`]), then dealt with as
    /// [`SubscriptionConfig::on_error`] says.
    fn handle(
        &mut self,
        context: &EventContext,
        event: &E,
    ) -> impl Future<Output = Result<(), BoxError>> + Send;
}

/// What to do with an event whose handler still fails after its retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnHandlerError {
    /// Stop the subscription with the error; the checkpoint stays before the event.
    Stop,
    /// Record the event's position in the report's `skipped` list and go on.
    Skip,
    /// Park the event's key in a dead letter and go on with the other keys
    /// (see [`DeadLetters`](crate::DeadLetters)). Only lanes
    /// ([`subscribe_lanes`](crate::subscribe_lanes)) have keys and a
    /// dead-letter store: a plain subscription under this policy stops at
    /// once with [`SubscriptionError::ParkWithoutLanes`]. An event that no
    /// longer decodes parks its key too.
    Park,
}

/// How a subscription reads and retries. Start from
/// [`default`](SubscriptionConfig::default) and change what you need with
/// the `with_` methods (new settings arrive as new methods):
///
/// ```
/// use std::time::Duration;
/// use eventcore::{LogQuery, OnHandlerError, SubscriptionConfig};
/// let config = SubscriptionConfig::default()
///     .with_filter(LogQuery::from_start(0).with_stream_prefix("account-"))
///     .with_page_size(100)
///     .with_poll_interval(Duration::from_millis(20))
///     .with_on_error(OnHandlerError::Skip);
/// assert_eq!(config.page_size, 100);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SubscriptionConfig {
    /// Which events: the query's filters are used, its start and limit are not.
    pub filter: LogQuery,
    /// Events per read.
    pub page_size: usize,
    /// How long to wait for new events before reading again, when the store
    /// cannot wake the subscription (or as a fallback when it can).
    pub poll_interval: Duration,
    /// Retries of a failing handler (attempts and capped backoff).
    pub retry: RetryPolicy,
    /// What to do when the retries are spent.
    pub on_error: OnHandlerError,
    /// How long [`SubscriptionHandle::stop`] lets the event being handled
    /// finish (and the checkpoint be saved) before it abandons them. Waits
    /// (polls, retry backoffs) end at once at stop; only work under way
    /// gets this grace.
    pub stop_grace: Duration,
}

impl Default for SubscriptionConfig {
    /// Every event, pages of 500, polling every 50 ms, 5 attempts per event
    /// with waits capped at 1 s, then stop; 5 s of grace at stop.
    fn default() -> Self {
        SubscriptionConfig {
            filter: LogQuery::from_start(0),
            page_size: 500,
            poll_interval: Duration::from_millis(50),
            retry: RetryPolicy::default()
                .with_max_attempts(
                    std::num::NonZeroU32::new(5).unwrap_or(std::num::NonZeroU32::MIN),
                )
                .with_base_delay(Duration::from_millis(10))
                .with_max_delay(Duration::from_secs(1)),
            on_error: OnHandlerError::Stop,
            stop_grace: Duration::from_secs(5),
        }
    }
}

impl SubscriptionConfig {
    /// Sets which events are handled (the query's filters; its start and
    /// limit are not used).
    pub fn with_filter(mut self, filter: LogQuery) -> Self {
        self.filter = filter;
        self
    }

    /// Sets how many events are read per page.
    pub fn with_page_size(mut self, page_size: usize) -> Self {
        self.page_size = page_size;
        self
    }

    /// Sets how long to wait for new events before reading again.
    pub fn with_poll_interval(mut self, poll_interval: Duration) -> Self {
        self.poll_interval = poll_interval;
        self
    }

    /// Sets the retries of a failing handler.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Sets what to do when a handler's retries are spent.
    pub fn with_on_error(mut self, on_error: OnHandlerError) -> Self {
        self.on_error = on_error;
        self
    }

    /// Sets how long a stop waits for the work under way.
    pub fn with_stop_grace(mut self, stop_grace: Duration) -> Self {
        self.stop_grace = stop_grace;
        self
    }
}

/// Why a subscription stopped on its own.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubscriptionError {
    /// Reading the log or the checkpoints failed.
    #[error("subscription {name} could not read or save")]
    Store {
        /// The subscription.
        name: SubscriptionName,
        /// The store's error.
        #[source]
        source: StoreError,
    },
    /// An event could not be deserialised; the checkpoint stays before it.
    #[error("subscription {name} stopped at an event it cannot decode, at {position}")]
    Undecodable {
        /// The subscription.
        name: SubscriptionName,
        /// The event's position.
        position: Position,
        /// The decoding error.
        #[source]
        source: StoreError,
    },
    /// This instance splits the subscription into a number of lanes other
    /// than a live member's (see [`subscribe_lanes`](crate::subscribe_lanes)).
    #[error(
        "subscription {name} is split into {configured} lanes here but into {found} by a live member"
    )]
    LaneLayout {
        /// The subscription.
        name: SubscriptionName,
        /// The lane count of this instance.
        configured: u16,
        /// The lane count of the other member.
        found: u16,
    },
    /// [`OnHandlerError::Park`] asked of a subscription without lanes.
    #[error("subscription {name} cannot park events: only lanes have keys and dead letters")]
    ParkWithoutLanes {
        /// The subscription.
        name: SubscriptionName,
    },
    /// The handler kept failing on an event and the policy is to stop.
    #[error("subscription {name} stopped: its handler failed on the event at {position}")]
    HandlerFailed {
        /// The subscription.
        name: SubscriptionName,
        /// The event's position.
        position: Position,
        /// The handler's last error.
        #[source]
        source: BoxError,
    },
}

/// What a subscription did until it stopped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscriptionReport {
    /// Events handled (skipped ones excluded).
    pub handled: u64,
    /// Events skipped after their handler kept failing.
    pub skipped: u64,
    /// Positions of the last skipped events, oldest first: at most
    /// [`SKIPPED_KEPT`].
    pub last_skipped: std::collections::VecDeque<Position>,
    /// The last checkpoint saved.
    pub checkpoint: Option<Position>,
    /// Transient store failures (reads, checkpoint loads and saves, lease
    /// calls) retried by starting a new session.
    pub store_retries: u64,
    /// Times this instance found its lease lost (its session died, or a
    /// save was refused for a newer holder) and went back to waiting for it.
    pub leases_lost: u64,
    /// Keys parked in dead letters (each parking counts, again after a
    /// failed retry).
    pub parked: u64,
    /// Parked keys whose events were all handed over again, so they flow again.
    pub unparked: u64,
    /// Whether the last stop abandoned work still under way when its
    /// [`stop_grace`](SubscriptionConfig::stop_grace) ran out (the
    /// checkpoint is then the last one committed).
    pub abandoned_at_stop: bool,
}

/// A running subscription. Dropping it leaves the task running; call
/// [`stop`](SubscriptionHandle::stop) for a clean shutdown.
#[derive(Debug)]
pub struct SubscriptionHandle {
    stop: watch::Sender<bool>,
    position: watch::Receiver<Option<Position>>,
    task: tokio::task::JoinHandle<Result<SubscriptionReport, SubscriptionError>>,
}

impl SubscriptionHandle {
    /// How far the subscription has got, as it moves: every event at or
    /// before this position that its filter lets through has been handled
    /// (the checkpoint it resumed from, then each event handled, then the
    /// end of each page, which may lie past events the filter leaves out).
    pub fn position(&self) -> watch::Receiver<Option<Position>> {
        self.position.clone()
    }

    /// Waits until the subscription has got to `position` (see
    /// [`position`](SubscriptionHandle::position)), for at most `timeout`:
    /// read-your-writes, with the position an append or `execute` returned
    /// ([`ExecutionResult::position`](crate::ExecutionResult::position)).
    /// Returns at once if it is there already.
    ///
    /// # Errors
    /// [`WaitError::TimedOut`] with how far it got, or
    /// [`WaitError::Stopped`] if the subscription ends first.
    pub async fn wait_for(&self, position: Position, timeout: Duration) -> Result<(), WaitError> {
        wait_for_position(self.position.clone(), position, timeout).await
    }

    /// Whether the subscription has stopped (by itself, on an error).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Ends the task at once, saving nothing, as the death of its process
    /// would (its lease goes with it): a handler cut off inside an event
    /// commits nothing, and the next holder handles that event again. For
    /// tests of crashes, and for a process that must stop now.
    pub fn abort(&self) {
        self.task.abort();
    }

    /// Stops after the event being handled, saves the checkpoint, and
    /// returns the report, or the error that had stopped it already. Waits
    /// end at once; work under way (a handler, a save) is abandoned when
    /// the [`stop_grace`](SubscriptionConfig::stop_grace) runs out, so a
    /// stop returns within about that grace even with the store down.
    ///
    /// # Errors
    /// The [`SubscriptionError`] that ended it, if one did.
    pub async fn stop(self) -> Result<SubscriptionReport, SubscriptionError> {
        let _ignored_if_already_stopped = self.stop.send(true);
        match self.task.await {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Cancelled: its runtime is shutting down; nothing ran past it.
            Err(_) => Ok(SubscriptionReport::default()),
        }
    }
}

/// Why a wait for a position ended without reaching it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WaitError {
    /// The time ran out first.
    #[error("not at {position} after {waited:?} (got to {reached})", reached = DisplayReached(*.reached))]
    TimedOut {
        /// The position waited for.
        position: Position,
        /// How long it waited.
        waited: Duration,
        /// How far it had got (`None`: nothing handled yet).
        reached: Option<Position>,
    },
    /// What was waited on stopped before it got there.
    #[error("stopped before it got to {position}")]
    Stopped {
        /// The position waited for.
        position: Position,
    },
}

struct DisplayReached(Option<Position>);

impl std::fmt::Display for DisplayReached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(p) => write!(f, "{p}"),
            None => f.write_str("the start"),
        }
    }
}

/// Waits until `progress` shows `position` or later, for at most `timeout`.
///
/// # Errors
/// See [`SubscriptionHandle::wait_for`].
pub async fn wait_for_position(
    mut progress: watch::Receiver<Option<Position>>,
    position: Position,
    timeout: Duration,
) -> Result<(), WaitError> {
    let reached = |p: &Option<Position>| p.is_some_and(|p| p >= position);
    let waited = tokio::time::timeout(timeout, progress.wait_for(reached))
        .await
        .map(|found| found.is_ok());
    match waited {
        Ok(true) => Ok(()),
        Ok(false) if reached(&progress.borrow()) => Ok(()),
        Ok(false) => Err(WaitError::Stopped { position }),
        Err(_elapsed) => Err(WaitError::TimedOut {
            position,
            waited: timeout,
            reached: *progress.borrow(),
        }),
    }
}

/// Starts subscription `name` on `log`: events of type `E` (decoded from
/// each event's payload) go to `handler`, checkpoints to `checkpoints`.
pub fn subscribe<L, C, E, H>(
    log: L,
    checkpoints: C,
    name: SubscriptionName,
    handler: H,
    config: SubscriptionConfig,
) -> SubscriptionHandle
where
    L: EventLog + 'static,
    C: CheckpointStore + SubscriptionLeases + 'static,
    E: Decode,
    H: Handler<E>,
{
    start(
        log,
        checkpoints,
        name,
        handler,
        config,
        None,
        None::<NoDeadLetters>,
    )
}

/// Starts a subscription, or one lane of a split one (`lane`: only the
/// events of its keys are handed to `handler`; `dead`: where it parks keys
/// under [`OnHandlerError::Park`]).
pub(crate) fn start<L, C, E, H, D>(
    log: L,
    checkpoints: C,
    name: SubscriptionName,
    handler: H,
    config: SubscriptionConfig,
    lane: Option<LaneFilter>,
    dead: Option<D>,
) -> SubscriptionHandle
where
    L: EventLog + 'static,
    C: CheckpointStore + SubscriptionLeases + 'static,
    E: Decode,
    H: Handler<E>,
    D: DeadLetters + 'static,
{
    let (stop_tx, stop_rx) = watch::channel(false);
    let (pos_tx, pos_rx) = watch::channel(None);
    let runner = Runner {
        log,
        checkpoints,
        name,
        handler,
        config,
        lane,
        dead,
        parked: BTreeMap::new(),
        letters_read: None,
        stop: stop_rx,
        position: pos_tx,
        _event: PhantomData,
    };
    SubscriptionHandle {
        stop: stop_tx,
        position: pos_rx,
        task: tokio::spawn({
            let span = tracing::info_span!("eventcore.subscription", name = %runner.name);
            tracing::Instrument::instrument(runner.run(), span)
        }),
    }
}

/// The dead-letter store of a subscription without lanes: it never parks.
pub(crate) struct NoDeadLetters;

impl DeadLetters for NoDeadLetters {
    async fn park(&self, _: &DeadLetter, _: LeaseToken) -> Result<(), StoreError> {
        Ok(())
    }

    async fn replayed(
        &self,
        _: &SubscriptionName,
        _: &str,
        _: Position,
        _: LeaseToken,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    async fn release(
        &self,
        _: &SubscriptionName,
        _: &str,
        _: LeaseToken,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    async fn dead_letters(&self, _: &SubscriptionName) -> Result<Vec<DeadLetter>, StoreError> {
        Ok(Vec::new())
    }

    async fn resolve(
        &self,
        _: &SubscriptionName,
        _: &str,
        _: DeadLetterAction,
    ) -> Result<bool, StoreError> {
        Ok(false)
    }
}

struct Runner<L, C, E, H, D> {
    log: L,
    checkpoints: C,
    name: SubscriptionName,
    handler: H,
    config: SubscriptionConfig,
    lane: Option<LaneFilter>,
    dead: Option<D>,
    /// The parked keys of this lane, as last read.
    parked: BTreeMap<String, DeadLetter>,
    /// When the letters were last read.
    letters_read: Option<tokio::time::Instant>,
    stop: watch::Receiver<bool>,
    position: watch::Sender<Option<Position>>,
    _event: PhantomData<fn() -> E>,
}

/// How one event's attempts ended.
enum Attempts {
    Handled,
    /// The handler found the lease's token superseded.
    LeaseLost,
    /// Asked to stop while waiting to retry: the event stays unhandled.
    Stopped,
    /// Every attempt failed; the last error and how many were made.
    Failed(BoxError, u32),
}

/// The text of `error` and its causes, for a dead letter.
fn error_text(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cause = e.source();
    }
    text
}

impl<L, C, E, H, D> Runner<L, C, E, H, D>
where
    L: EventLog,
    C: CheckpointStore + SubscriptionLeases,
    E: Decode,
    H: Handler<E>,
    D: DeadLetters,
{
    fn store_error(&self, source: StoreError) -> SubscriptionError {
        SubscriptionError::Store {
            name: self.name.clone(),
            source,
        }
    }

    fn query(&self, after: Option<Position>) -> LogQuery {
        let mut q = match after {
            Some(p) => LogQuery::after(p, self.config.page_size.max(1)),
            None => LogQuery::from_start(self.config.page_size.max(1)),
        };
        if let Some(prefix) = self.config.filter.stream_prefix() {
            q = q.with_stream_prefix(prefix);
        }
        if let Some(types) = self.config.filter.event_types() {
            q = q.with_event_types(types.iter().cloned());
        }
        q
    }

    /// Sorts a store error: one a retry may cure restarts the session
    /// after a wait; any other stops the subscription.
    fn halt(&self, error: StoreError, report: &mut SubscriptionReport) -> Halt {
        if error.is_retryable() {
            report.store_retries += 1;
            tracing::warn!(error = %error, "store error; the subscription starts a new session");
            Halt::Retry
        } else {
            tracing::error!(error = %error, "store error; the subscription stops");
            Halt::Fatal(self.store_error(error))
        }
    }

    /// Waits until this instance holds the lease, or is asked to stop.
    async fn acquire(&mut self, report: &mut SubscriptionReport) -> Result<Option<C::Lease>, Halt> {
        loop {
            if *self.stop.borrow() {
                self.checkpoints.stop_waiting(&self.name);
                return Ok(None);
            }
            match self.checkpoints.try_acquire(&self.name).await {
                Ok(Some(lease)) => {
                    tracing::info!("lease taken");
                    return Ok(Some(lease));
                }
                Ok(None) => {}
                Err(e) => return Err(self.halt(e, report)),
            }
            sleep_unless_stopped(&self.stop, self.config.poll_interval).await;
        }
    }

    /// Runs sessions until asked to stop or stopped by what a retry cannot
    /// cure; at stop, the work under way gets the configured grace, then
    /// is abandoned (dropped: a transaction under way rolls back).
    async fn run(mut self) -> Result<SubscriptionReport, SubscriptionError> {
        if self.config.on_error == OnHandlerError::Park && self.dead.is_none() {
            return Err(SubscriptionError::ParkWithoutLanes { name: self.name });
        }
        let mut report = SubscriptionReport::default();
        let grace = self.config.stop_grace;
        let mut stop = self.stop.clone();
        let outcome = {
            let work = self.sessions(&mut report);
            let deadline = async move {
                stopped(&mut stop).await;
                tokio::time::sleep(grace).await;
            };
            tokio::select! {
                outcome = work => Some(outcome),
                () = deadline => None,
            }
        };
        match outcome {
            Some(outcome) => outcome.map(|()| report),
            None => {
                tracing::warn!(
                    grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
                    "stop grace ran out; work under way abandoned"
                );
                report.abandoned_at_stop = true;
                Ok(report)
            }
        }
    }

    /// Sessions one after another. A session ends on a transient store
    /// error or a lost lease; the next one, after a capped backoff, takes
    /// the lease again and resumes from the saved checkpoint.
    async fn sessions(&mut self, report: &mut SubscriptionReport) -> Result<(), SubscriptionError> {
        let mut failures: u32 = 0;
        loop {
            match self.session(report, &mut failures).await {
                Ok(()) => return Ok(()),
                Err(Halt::Fatal(e)) => return Err(e),
                Err(Halt::Retry) => {
                    failures = failures.saturating_add(1);
                    let wait = self
                        .config
                        .retry
                        .delay(failures.min(MAX_BACKOFF_STEPS), fastrand::u64(..));
                    if sleep_unless_stopped(&self.stop, wait).await {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// A lease found lost: counted, and the session ends.
    fn lease_lost(report: &mut SubscriptionReport) -> Halt {
        report.leases_lost += 1;
        tracing::warn!("lease lost; waiting to take it again");
        Halt::Retry
    }

    /// Reads the lane's dead letters again.
    async fn read_letters(&mut self) -> Result<(), StoreError> {
        let Some(dead) = &self.dead else {
            return Ok(());
        };
        let letters = dead.dead_letters(&self.name).await?;
        self.parked = letters
            .into_iter()
            .map(|letter| (letter.key.clone(), letter))
            .collect();
        self.letters_read = Some(tokio::time::Instant::now());
        Ok(())
    }

    /// Whether the letters are due to be read again for an operator's action.
    fn letters_due(&self) -> bool {
        !self.parked.is_empty()
            && self
                .letters_read
                .is_none_or(|read| read.elapsed() >= DEAD_LETTER_POLL)
    }

    /// Ends a page or a replay on a store error: a lost lease ends the
    /// session at once, any other error as the halt it is.
    fn page_store_error(error: StoreError) -> PageEnd {
        match error {
            StoreError::LeaseLost { .. } => PageEnd::LeaseLost,
            e => PageEnd::Store(e),
        }
    }

    /// One session: the lease, the checkpoint, then pages until stopped.
    async fn session(
        &mut self,
        report: &mut SubscriptionReport,
        failures: &mut u32,
    ) -> Result<(), Halt> {
        let Some(mut lease) = self.acquire(report).await? else {
            return Ok(());
        };
        let token = self.checkpoints.token(&lease);
        let mut eager_until: Option<tokio::time::Instant> = None;
        // Loaded after the lease was taken: every save of an older holder
        // either committed before it (and is seen here) or is refused.
        let mut at = match self.checkpoints.load(&self.name).await {
            Ok(at) => at,
            Err(e) => return Err(self.halt(e, report)),
        };
        if let Err(e) = self.read_letters().await {
            return Err(self.halt(e, report));
        }
        report.checkpoint = at;
        if at > *self.position.borrow() {
            self.position.send_replace(at);
        }
        loop {
            if *self.stop.borrow() {
                return Ok(());
            }
            if self.letters_due() {
                match self.resolve_letters(token, at, report).await {
                    Ok(()) => {}
                    Err(PageEnd::LeaseLost) => return Err(Self::lease_lost(report)),
                    Err(PageEnd::Store(e)) => return Err(self.halt(e, report)),
                    Err(PageEnd::Fatal(e)) => return Err(Halt::Fatal(e)),
                }
            }
            // Asked for before the read, so that an append committed
            // between the read and the wait still wakes this one.
            let woken = self.log.appended();
            let page = match self.log.read_all(&self.query(at)).await {
                Ok(page) => page,
                Err(e) => return Err(self.halt(e, report)),
            };
            *failures = 0;
            // A page without events may still have moved past events the
            // filters leave out: then there is more to read at once.
            if page.is_empty() && page.next() <= at {
                // Right after a wake-up an empty read usually means the new
                // events are held back for a moment (a store that never lets
                // readers skip waits for older transactions); look again
                // soon rather than wait for the next poll.
                let mut wait = match eager_until {
                    Some(until) if tokio::time::Instant::now() < until => {
                        self.config.poll_interval.min(EAGER_POLL)
                    }
                    _ => self.config.poll_interval,
                };
                if !self.parked.is_empty() {
                    wait = wait.min(DEAD_LETTER_POLL);
                }
                let mut stop = self.stop.clone();
                tokio::select! {
                    () = woken => eager_until = Some(tokio::time::Instant::now() + EAGER_WINDOW),
                    () = tokio::time::sleep(wait) => {}
                    () = stopped(&mut stop) => {}
                }
                continue;
            }
            drop(woken);
            // Checked only when there is work: an idle subscription polls
            // without a round trip to its lease.
            match self.checkpoints.still_held(&mut lease).await {
                Ok(true) => {}
                Ok(false) => return Err(Self::lease_lost(report)),
                Err(e) => return Err(self.halt(e, report)),
            }
            let next = page.next();
            let last = page.events().last().map(|(p, _)| *p);
            if let Some((position, last)) = page.events().last() {
                let lag_ms = std::time::SystemTime::now()
                    .duration_since(last.recorded_at())
                    .map_or(0, |lag| u64::try_from(lag.as_millis()).unwrap_or(u64::MAX));
                tracing::debug!(events = page.len(), %position, lag_ms, "page read");
            }
            let outcome = self
                .handle_page(page.into_events(), token, &mut at, report)
                .await;
            if matches!(outcome, Err(PageEnd::LeaseLost)) {
                return Err(Self::lease_lost(report));
            }
            // Every event of the page dealt with: nothing the filters let
            // through lies between it and `next`.
            if outcome.is_ok() && at >= last {
                at = at.max(next);
                if at > *self.position.borrow() {
                    self.position.send_replace(at);
                }
            }
            if at != report.checkpoint
                && let Some(position) = at
            {
                match self.checkpoints.save(&self.name, position, token).await {
                    Ok(()) => report.checkpoint = Some(position),
                    Err(StoreError::LeaseLost { .. }) => return Err(Self::lease_lost(report)),
                    // The page is handled again from the saved checkpoint
                    // (at least once), unless the handler has stopped it.
                    Err(e) if outcome.is_ok() => return Err(self.halt(e, report)),
                    Err(_) => {}
                }
            }
            match outcome {
                Err(PageEnd::Fatal(e)) => return Err(Halt::Fatal(e)),
                Err(PageEnd::Store(e)) => return Err(self.halt(e, report)),
                _ => {}
            }
        }
    }

    /// Hands `event` to the handler, retrying as the policy says.
    async fn attempts(&mut self, context: &EventContext, event: &E) -> Attempts {
        let mut attempt = 1;
        loop {
            match self.handler.handle(context, event).await {
                Ok(()) => return Attempts::Handled,
                // A handler that checked the lease's token and found a
                // newer holder: no retry can cure it.
                Err(e) if is_lease_lost(&*e) => return Attempts::LeaseLost,
                Err(e) if attempt >= self.config.retry.max_attempts() => {
                    return Attempts::Failed(e, attempt);
                }
                Err(_) => {
                    let wait = self.config.retry.delay(attempt, fastrand::u64(..));
                    if sleep_unless_stopped(&self.stop, wait).await {
                        return Attempts::Stopped;
                    }
                    attempt += 1;
                }
            }
        }
    }

    /// The key `recorded` parks under (its lane's key).
    fn key_of(&self, recorded: &RecordedEvent) -> String {
        self.lane.as_ref().map_or_else(
            || recorded.stream_id().to_string(),
            |lane| lane.key_of(recorded),
        )
    }

    /// Parks the key of the event at `position` after its handler failed
    /// (`error`, after `attempts`); the key's events up to `after` are
    /// dealt with.
    #[allow(clippy::too_many_arguments)]
    async fn park(
        &mut self,
        position: Position,
        recorded: &RecordedEvent,
        error: &str,
        attempts: u32,
        after: Option<Position>,
        token: LeaseToken,
        report: &mut SubscriptionReport,
    ) -> Result<(), PageEnd> {
        let Some(dead) = &self.dead else {
            return Ok(());
        };
        let key = self.key_of(recorded);
        let before = self.parked.get(&key).map_or(0, |l| l.attempts);
        let letter = DeadLetter::new(
            self.name.clone(),
            key.clone(),
            position,
            recorded,
            error,
            before.saturating_add(attempts),
            after,
        );
        dead.park(&letter, token)
            .await
            .map_err(Self::page_store_error)?;
        tracing::warn!(%position, key = %key, error, "key parked in a dead letter");
        report.parked += 1;
        self.parked.insert(key, letter);
        Ok(())
    }

    /// Handles a page until it ends, the subscription is asked to stop, or
    /// an event stops it; `at` follows the last event dealt with.
    async fn handle_page(
        &mut self,
        page: Vec<(Position, RecordedEvent)>,
        token: LeaseToken,
        at: &mut Option<Position>,
        report: &mut SubscriptionReport,
    ) -> Result<(), PageEnd> {
        let parking = self.config.on_error == OnHandlerError::Park;
        for (position, recorded) in page {
            if *self.stop.borrow() {
                return Ok(());
            }
            // Another lane's event: dealt with by not handling it here (nor
            // decoding it: what another lane cannot read stops only that one).
            if self
                .lane
                .as_ref()
                .is_some_and(|lane| !lane.contains(&recorded))
            {
                *at = Some(position);
                continue;
            }
            // A parked key's event waits with its dead letter.
            if !self.parked.is_empty() && self.parked.contains_key(&self.key_of(&recorded)) {
                *at = Some(position);
                continue;
            }
            let event: E = match recorded.decode() {
                Ok(event) => event,
                Err(source) if parking => {
                    let error = error_text(&source);
                    self.park(position, &recorded, &error, 1, *at, token, report)
                        .await?;
                    *at = Some(position);
                    continue;
                }
                Err(source) => {
                    return Err(PageEnd::Fatal(SubscriptionError::Undecodable {
                        name: self.name.clone(),
                        position,
                        source,
                    }));
                }
            };
            let context = EventContext::new(position, recorded).with_lease_token(token);
            match self.attempts(&context, &event).await {
                Attempts::Handled => report.handled += 1,
                Attempts::LeaseLost => return Err(PageEnd::LeaseLost),
                // The event stays unhandled and the checkpoint before it.
                Attempts::Stopped => return Ok(()),
                Attempts::Failed(e, attempts) => match self.config.on_error {
                    OnHandlerError::Stop => {
                        return Err(PageEnd::Fatal(SubscriptionError::HandlerFailed {
                            name: self.name.clone(),
                            position,
                            source: e,
                        }));
                    }
                    OnHandlerError::Skip => record_skip(report, position),
                    OnHandlerError::Park => {
                        let error = error_text(&*e);
                        self.park(
                            position,
                            context.recorded(),
                            &error,
                            attempts,
                            *at,
                            token,
                            report,
                        )
                        .await?;
                    }
                },
            }
            *at = Some(position);
            self.position.send_replace(Some(position));
        }
        Ok(())
    }

    /// Reads the letters again and carries out the actions asked for, each
    /// up to `bound` (where the lane has got).
    async fn resolve_letters(
        &mut self,
        token: LeaseToken,
        bound: Option<Position>,
        report: &mut SubscriptionReport,
    ) -> Result<(), PageEnd> {
        self.read_letters().await.map_err(Self::page_store_error)?;
        let asked: Vec<(DeadLetter, DeadLetterAction)> = self
            .parked
            .values()
            .filter_map(|l| l.action.map(|a| (l.clone(), a)))
            .collect();
        for (letter, action) in asked {
            if *self.stop.borrow() {
                return Ok(());
            }
            self.replay(letter, action, token, bound, report).await?;
        }
        Ok(())
    }

    /// Hands the parked key's events again to the handler, in log order, up
    /// to `bound`, then lets the key flow again; a failure parks it again.
    async fn replay(
        &mut self,
        letter: DeadLetter,
        action: DeadLetterAction,
        token: LeaseToken,
        bound: Option<Position>,
        report: &mut SubscriptionReport,
    ) -> Result<(), PageEnd> {
        let Some(dead) = &self.dead else {
            return Ok(());
        };
        let key = letter.key.clone();
        tracing::info!(key = %key, action = action.as_str(), "parked key handed over again");
        let mut after = letter.after;
        if action == DeadLetterAction::Skip && after < Some(letter.position) {
            dead.replayed(&self.name, &key, letter.position, token)
                .await
                .map_err(Self::page_store_error)?;
            record_skip(report, letter.position);
            after = Some(letter.position);
        }
        let shared: Arc<str> = Arc::from(key.as_str());
        'pages: while after < bound {
            let page = self
                .log
                .read_all(&self.query(after))
                .await
                .map_err(Self::page_store_error)?;
            let next = page.next();
            if page.is_empty() && next <= after {
                break;
            }
            for (position, recorded) in page.into_events() {
                if Some(position) > bound {
                    break 'pages;
                }
                if *self.stop.borrow() {
                    return Ok(());
                }
                let theirs = self.lane.as_ref().is_none_or(|l| l.contains(&recorded))
                    && self.key_of(&recorded) == key;
                if !theirs {
                    after = Some(position);
                    continue;
                }
                let event: E = match recorded.decode() {
                    Ok(event) => event,
                    Err(source) => {
                        let error = error_text(&source);
                        return self
                            .park(position, &recorded, &error, 1, after, token, report)
                            .await;
                    }
                };
                let context = EventContext::new(position, recorded)
                    .with_lease_token(token)
                    .with_parked_key(shared.clone());
                match self.attempts(&context, &event).await {
                    Attempts::Handled => report.handled += 1,
                    Attempts::LeaseLost => return Err(PageEnd::LeaseLost),
                    Attempts::Stopped => return Ok(()),
                    Attempts::Failed(e, attempts) => {
                        let error = error_text(&*e);
                        return self
                            .park(
                                position,
                                context.recorded(),
                                &error,
                                attempts,
                                after,
                                token,
                                report,
                            )
                            .await;
                    }
                }
                if let Some(dead) = &self.dead {
                    dead.replayed(&self.name, &key, position, token)
                        .await
                        .map_err(Self::page_store_error)?;
                }
                after = Some(position);
            }
            after = after.max(next.min(bound));
        }
        if let Some(dead) = &self.dead {
            dead.release(&self.name, &key, token)
                .await
                .map_err(Self::page_store_error)?;
        }
        tracing::info!(key = %key, "parked key flows again");
        self.parked.remove(&key);
        report.unparked += 1;
        Ok(())
    }
}

/// Counts a skipped event in `report`.
fn record_skip(report: &mut SubscriptionReport, position: Position) {
    report.skipped += 1;
    if report.last_skipped.len() == SKIPPED_KEPT {
        report.last_skipped.pop_front();
    }
    report.last_skipped.push_back(position);
}

/// Why a page was not handled to its end.
enum PageEnd {
    /// A handler found the lease's token superseded.
    LeaseLost,
    /// A store error while parking or replaying.
    Store(StoreError),
    /// What stops the subscription.
    Fatal(SubscriptionError),
}

/// Whether a handler's error is (or wraps) [`StoreError::LeaseLost`].
fn is_lease_lost(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = cause {
        if matches!(
            e.downcast_ref::<StoreError>(),
            Some(StoreError::LeaseLost { .. })
        ) {
            return true;
        }
        cause = e.source();
    }
    false
}

/// Sleeps for `wait`, or until asked to stop; whether asked to stop.
async fn sleep_unless_stopped(stop: &watch::Receiver<bool>, wait: Duration) -> bool {
    let mut watching = stop.clone();
    tokio::select! {
        () = tokio::time::sleep(wait) => {}
        () = stopped(&mut watching) => {}
    }
    *stop.borrow()
}

/// Resolves once a stop was asked for (at once if it already was); never
/// if the handle is gone without asking.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|asked| *asked).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Forwarding impls for `&S`, `Arc<S>` and `Box<S>`; every method is
/// forwarded, default ones included (the lint catches one forgotten).
macro_rules! forward_subscription_stores {
    ($($wrapper:ty),+) => {$(
        #[warn(clippy::missing_trait_methods)]
        impl<S: CheckpointStore + ?Sized> CheckpointStore for $wrapper {
            fn load(
                &self,
                name: &SubscriptionName,
            ) -> impl Future<Output = Result<Option<Position>, StoreError>> + Send {
                (**self).load(name)
            }

            fn save(
                &self,
                name: &SubscriptionName,
                position: Position,
                token: LeaseToken,
            ) -> impl Future<Output = Result<(), StoreError>> + Send {
                (**self).save(name, position, token)
            }
        }

        #[warn(clippy::missing_trait_methods)]
        impl<S: SubscriptionLeases + ?Sized> SubscriptionLeases for $wrapper {
            type Lease = S::Lease;

            fn try_acquire(
                &self,
                name: &SubscriptionName,
            ) -> impl Future<Output = Result<Option<Self::Lease>, StoreError>> + Send {
                (**self).try_acquire(name)
            }

            fn token(&self, lease: &Self::Lease) -> LeaseToken {
                (**self).token(lease)
            }

            fn still_held(
                &self,
                lease: &mut Self::Lease,
            ) -> impl Future<Output = Result<bool, StoreError>> + Send {
                (**self).still_held(lease)
            }

            fn stop_waiting(&self, name: &SubscriptionName) {
                (**self).stop_waiting(name);
            }
        }
    )+};
}

forward_subscription_stores!(&S, Arc<S>, Box<S>);

/// Lets a closure returning a future be a [`Handler`].
pub fn handler_fn<E, F, Fut>(f: F) -> impl Handler<E>
where
    E: Send + Sync + 'static,
    F: FnMut(&EventContext, &E) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), BoxError>> + Send,
{
    FnHandler(f, PhantomData)
}

struct FnHandler<F, E>(F, PhantomData<fn(&E)>);

impl<E, F, Fut> Handler<E> for FnHandler<F, E>
where
    E: Send + Sync + 'static,
    F: FnMut(&EventContext, &E) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), BoxError>> + Send,
{
    fn handle(
        &mut self,
        context: &EventContext,
        event: &E,
    ) -> impl Future<Output = Result<(), BoxError>> + Send {
        (self.0)(context, event)
    }
}
