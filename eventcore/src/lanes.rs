//! Lanes: one subscription split by key, so that several instances share its
//! work while each key's events stay in order.
//!
//! [`subscribe_lanes`] splits subscription `name` into [`Lanes::count`]
//! lanes. Every event belongs to one lane, chosen from its key (the stream id
//! by default, or a routing key from the event's metadata: see [`LaneKey`])
//! by [`lane_of`]. Each lane is a subscription of its own, named
//! `{name}/lane-{i}-of-{n}`: its own checkpoint, its own lease (with its
//! fencing token), its own handler, made for it by the caller's factory. A
//! lane hands its handler the events of its keys in log order, so one key's
//! events are always handled in order, by one holder at a time; different
//! lanes go on independently (a slow or stopped lane holds back only its
//! keys).
//!
//! # Sharing the lanes between instances
//! Every instance running `subscribe_lanes` under the same name joins a
//! membership kept in the same checkpoint store: it takes one of `count`
//! member slots (a lease named `{name}/member-{k}`) and beats on it every
//! [`Lanes::heartbeat`] by saving a counter there. Every instance reads the
//! others' slots; a slot whose counter moved within
//! [`Lanes::member_timeout`] (as timed by the reader's own clock, so clocks
//! need not agree) is a live member. The live members, sorted by slot, share
//! the lanes round robin: the member of rank `r` among `m` runs the lanes
//! `i` with `i % m == r`. An instance starts the lanes that fall to it and
//! stops (saving their checkpoints) the ones that no longer do; the lane's
//! lease makes a lane that two instances briefly both want run on one of
//! them only. A member that stops cleanly says so in its slot, so its lanes
//! move at once; one that dies is dropped after `member_timeout`, and its
//! lanes' leases are free as soon as its store sessions end. Instances past
//! `count` wait as standbys for a slot.
//!
//! The lane count is part of the lane names: running the same name with
//! another count starts new lanes from the start of the log. An instance
//! whose count differs from a live member's stops with
//! [`SubscriptionError::LaneLayout`] rather than split the keys two ways.
//!
//! Each lane reads the log itself and skips the events of other lanes, so a
//! lane reads the whole log (filtered by the subscription's stream prefix
//! and event types): reads grow with the lane count.

use std::{
    borrow::Cow,
    collections::{BTreeMap, BTreeSet},
    num::NonZeroU16,
    time::Duration,
};

use tokio::{sync::watch, task::JoinHandle, time::Instant};

use crate::{
    CheckpointStore, DeadLetters, Decode, EventLog, Handler, Position, RecordedEvent, StoreError,
    SubscriptionConfig, SubscriptionError, SubscriptionHandle, SubscriptionLeases,
    SubscriptionName, SubscriptionNameError, SubscriptionReport, subscription,
};

/// What an event's lane is chosen by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LaneKey {
    /// The event's stream id: each stream's events in order.
    Stream,
    /// The value of this metadata field (a routing key): all events with
    /// the same value in order, whatever their streams. An event without the
    /// field goes by its stream id; a value that is not a string goes by its
    /// JSON text.
    Metadata(String),
}

impl LaneKey {
    /// The key of `event`.
    ///
    /// ```
    /// use eventcore::{LaneKey, Metadata, RecordedEvent, StreamId, StreamVersion};
    /// let event = RecordedEvent::new(
    ///     StreamId::try_new("order-7").unwrap(),
    ///     StreamVersion::new(1),
    ///     1,
    ///     "Placed",
    ///     "{}",
    /// )
    /// .with_metadata(Metadata::new().with_value("tenant", "acme"));
    /// assert_eq!(LaneKey::Stream.key_of(&event), "order-7");
    /// assert_eq!(LaneKey::Metadata("tenant".into()).key_of(&event), "acme");
    /// assert_eq!(LaneKey::Metadata("region".into()).key_of(&event), "order-7");
    /// ```
    pub fn key_of<'a>(&self, event: &'a RecordedEvent) -> Cow<'a, str> {
        match self {
            LaneKey::Stream => Cow::Borrowed(event.stream_id().as_ref()),
            LaneKey::Metadata(field) => match event.metadata().value(field) {
                Some(serde_json::Value::String(value)) => Cow::Borrowed(value),
                Some(value) => Cow::Owned(value.to_string()),
                None => Cow::Borrowed(event.stream_id().as_ref()),
            },
        }
    }
}

/// The lane of `key` among `count`: the 64-bit FNV-1a hash of its UTF-8
/// bytes, modulo `count`. Fixed across versions and platforms, so that
/// instances of different builds agree.
///
/// ```
/// use std::num::NonZeroU16;
/// use eventcore::lane_of;
/// let eight = NonZeroU16::new(8).unwrap();
/// assert!(lane_of("account-1", eight) < 8);
/// assert_eq!(lane_of("account-1", eight), lane_of("account-1", eight));
/// assert_eq!(lane_of("anything", NonZeroU16::MIN), 0);
/// ```
pub fn lane_of(key: &str, count: NonZeroU16) -> u16 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    u16::try_from(hash % u64::from(count.get())).unwrap_or(0)
}

/// Which events one lane handles.
#[derive(Debug, Clone)]
pub(crate) struct LaneFilter {
    key: LaneKey,
    index: u16,
    count: NonZeroU16,
}

impl LaneFilter {
    /// Whether `event` is this lane's.
    pub(crate) fn contains(&self, event: &RecordedEvent) -> bool {
        lane_of(&self.key.key_of(event), self.count) == self.index
    }

    /// The key of `event`, as a dead letter names it.
    pub(crate) fn key_of(&self, event: &RecordedEvent) -> String {
        self.key.key_of(event).into_owned()
    }
}

/// How a subscription is split into lanes and how its instances find each
/// other. Start from [`new`](Lanes::new) and change what you need:
///
/// ```
/// use std::{num::NonZeroU16, time::Duration};
/// use eventcore::Lanes;
/// let lanes = Lanes::new(NonZeroU16::new(8).unwrap())
///     .by_metadata("tenant")
///     .with_heartbeat(Duration::from_millis(200))
///     .with_member_timeout(Duration::from_secs(1));
/// assert_eq!(lanes.count(), 8);
/// ```
#[derive(Debug, Clone)]
pub struct Lanes {
    count: NonZeroU16,
    key: LaneKey,
    heartbeat: Duration,
    member_timeout: Duration,
}

impl Lanes {
    /// `count` lanes by stream id; a heartbeat every 500 ms, members
    /// dropped after 3 s without one.
    pub fn new(count: NonZeroU16) -> Self {
        Lanes {
            count,
            key: LaneKey::Stream,
            heartbeat: Duration::from_millis(500),
            member_timeout: Duration::from_secs(3),
        }
    }

    /// Chooses lanes by the metadata field `field` (a routing key).
    #[must_use]
    pub fn by_metadata(mut self, field: impl Into<String>) -> Self {
        self.key = LaneKey::Metadata(field.into());
        self
    }

    /// Sets how often an instance beats on its member slot and looks at the
    /// others' (also how often it starts and stops lanes).
    #[must_use]
    pub fn with_heartbeat(mut self, heartbeat: Duration) -> Self {
        self.heartbeat = heartbeat;
        self
    }

    /// Sets how long a member may go without a beat before the others take
    /// over its lanes. Keep it several heartbeats long.
    #[must_use]
    pub fn with_member_timeout(mut self, timeout: Duration) -> Self {
        self.member_timeout = timeout;
        self
    }

    /// How many lanes.
    pub fn count(&self) -> u16 {
        self.count.get()
    }

    /// What lanes are chosen by.
    pub fn key(&self) -> &LaneKey {
        &self.key
    }

    /// The heartbeat.
    pub fn heartbeat(&self) -> Duration {
        self.heartbeat
    }

    /// The member timeout.
    pub fn member_timeout(&self) -> Duration {
        self.member_timeout
    }

    /// The lane of `event`.
    pub fn lane_of(&self, event: &RecordedEvent) -> u16 {
        lane_of(&self.key.key_of(event), self.count)
    }

    /// The names of the lanes of subscription `base`, in lane order: where
    /// an operator looks for their checkpoints and
    /// [`DeadLetters`](crate::DeadLetters).
    ///
    /// # Errors
    /// [`LaneNameError`] when a lane's name is too long.
    pub fn lane_names(
        &self,
        base: &SubscriptionName,
    ) -> Result<Vec<SubscriptionName>, LaneNameError> {
        let count = self.count.get();
        (0..count).map(|i| lane_name(base, i, count)).collect()
    }

    /// The name of the lane of subscription `base` that handles `key`'s
    /// events (a stream id, or a routing key): the name its dead letter is
    /// filed under.
    ///
    /// ```
    /// use std::num::NonZeroU16;
    /// use eventcore::{Lanes, SubscriptionName};
    /// let lanes = Lanes::new(NonZeroU16::new(4).unwrap());
    /// let base = SubscriptionName::try_new("statements").unwrap();
    /// let lane = lanes.lane_name_of(&base, "account-7").unwrap();
    /// assert!(lanes.lane_names(&base).unwrap().contains(&lane));
    /// assert!(lane.as_ref().starts_with("statements/lane-"));
    /// ```
    ///
    /// # Errors
    /// [`LaneNameError`] when the lane's name is too long.
    pub fn lane_name_of(
        &self,
        base: &SubscriptionName,
        key: &str,
    ) -> Result<SubscriptionName, LaneNameError> {
        lane_name(base, lane_of(key, self.count), self.count.get())
    }
}

/// One lane, as its handler's factory sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lane {
    index: u16,
    count: u16,
    name: SubscriptionName,
    base: SubscriptionName,
}

impl Lane {
    /// Its number, from 0.
    pub fn index(&self) -> u16 {
        self.index
    }

    /// How many lanes there are.
    pub fn count(&self) -> u16 {
        self.count
    }

    /// Its subscription name (its checkpoint's and lease's):
    /// `{name}/lane-{index}-of-{count}`. An exactly-once projection of the
    /// lane saves its checkpoint under this name.
    pub fn name(&self) -> &SubscriptionName {
        &self.name
    }

    /// The name of the subscription the lanes belong to, the same for
    /// every lane and every count of lanes: what a reactor in a lane names
    /// its effects and commands after, so that their keys and ids do not
    /// depend on how the log is split.
    pub fn base(&self) -> &SubscriptionName {
        &self.base
    }
}

/// A name the lanes cannot be given.
#[derive(Debug, thiserror::Error)]
#[error("the lanes of {base} cannot be named {name:?}")]
pub struct LaneNameError {
    base: SubscriptionName,
    name: String,
    #[source]
    source: SubscriptionNameError,
}

/// The names of lane `index` of `count` under `base`.
///
/// # Errors
/// When the name is too long for a [`SubscriptionName`].
pub fn lane_name(
    base: &SubscriptionName,
    index: u16,
    count: u16,
) -> Result<SubscriptionName, LaneNameError> {
    derived(base, format!("{base}/lane-{index}-of-{count}"))
}

fn member_name(base: &SubscriptionName, slot: u16) -> Result<SubscriptionName, LaneNameError> {
    derived(base, format!("{base}/member-{slot}"))
}

fn derived(base: &SubscriptionName, name: String) -> Result<SubscriptionName, LaneNameError> {
    SubscriptionName::try_new(name.clone()).map_err(|source| LaneNameError {
        base: base.clone(),
        name,
        source,
    })
}

/// What the lanes of one instance did until it stopped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LanesReport {
    /// Every lane run this instance ended, in the order they ended: the
    /// lane and its report.
    pub runs: Vec<(u16, SubscriptionReport)>,
    /// Lanes started here (each start of a lane counts).
    pub lanes_started: u64,
    /// Lanes stopped here because they fell to another member.
    pub lanes_given_up: u64,
    /// Times this instance lost its member slot (and took one again).
    pub slots_lost: u64,
    /// Transient store failures of the membership, retried at the next beat.
    pub store_retries: u64,
}

impl LanesReport {
    /// Events handled over all lane runs.
    pub fn handled(&self) -> u64 {
        self.runs.iter().map(|(_, r)| r.handled).sum()
    }
}

/// The lanes of one instance. Dropping it leaves them running; call
/// [`stop`](LanesHandle::stop).
#[derive(Debug)]
pub struct LanesHandle {
    stop: watch::Sender<bool>,
    running: watch::Receiver<BTreeSet<u16>>,
    task: JoinHandle<Result<LanesReport, SubscriptionError>>,
}

impl LanesHandle {
    /// The lanes this instance runs now, as that changes (a lane is counted
    /// from its start, while it may still wait for its lease).
    pub fn running(&self) -> watch::Receiver<BTreeSet<u16>> {
        self.running.clone()
    }

    /// Whether it has stopped by itself (on an error).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops every lane (each after the event it is handling, saving its
    /// checkpoint), leaves the membership so the others take the lanes at
    /// once, and returns the report, or the error that had stopped it.
    ///
    /// # Errors
    /// The [`SubscriptionError`] that ended it, if one did.
    pub async fn stop(self) -> Result<LanesReport, SubscriptionError> {
        let _ignored_if_already_stopped = self.stop.send(true);
        match self.task.await {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Ok(LanesReport::default()),
        }
    }

    /// Ends everything at once, saving nothing, as the death of the process
    /// would: the leases go with the store sessions that held them, and the
    /// other members take the lanes over once this one's beats stop for
    /// their member timeout. For failover tests and drills.
    pub fn abort(self) {
        self.task.abort();
    }
}

/// Starts this instance of subscription `name`, split as `lanes` says, on
/// `log` and `checkpoints`. `make_handler` makes the handler of each lane
/// run this instance starts (again after the lane moved away and back).
/// The subscription's `config` applies to every lane.
///
/// # Errors
/// [`LaneNameError`] when the lane or member names derived from `name`
/// are too long; nothing is started.
pub fn subscribe_lanes<L, C, E, H, F>(
    log: L,
    checkpoints: C,
    name: SubscriptionName,
    lanes: Lanes,
    make_handler: F,
    config: SubscriptionConfig,
) -> Result<LanesHandle, LaneNameError>
where
    L: EventLog + Clone + 'static,
    C: CheckpointStore + SubscriptionLeases + DeadLetters + Clone + 'static,
    E: Decode,
    H: Handler<E>,
    F: FnMut(&Lane) -> H + Send + 'static,
{
    let count = lanes.count.get();
    let lane_names = (0..count)
        .map(|i| lane_name(&name, i, count))
        .collect::<Result<Vec<_>, _>>()?;
    let member_names = (0..count)
        .map(|k| member_name(&name, k))
        .collect::<Result<Vec<_>, _>>()?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let (running_tx, running_rx) = watch::channel(BTreeSet::new());
    let supervisor = Supervisor {
        log,
        checkpoints,
        name,
        seen: vec![Seen::default(); member_names.len()],
        lane_names,
        member_names,
        lanes,
        make_handler,
        config,
        stop: stop_rx,
        running_tx,
        slot: None,
        running: BTreeMap::new(),
        stopping: Vec::new(),
        report: LanesReport::default(),
        _event: std::marker::PhantomData,
    };
    let span = tracing::info_span!("eventcore.lanes", name = %supervisor.name);
    Ok(LanesHandle {
        stop: stop_tx,
        running: running_rx,
        task: tokio::spawn(tracing::Instrument::instrument(supervisor.run(), span)),
    })
}

/// What this instance last saw of a member slot.
#[derive(Debug, Clone, Copy, Default)]
struct Seen {
    beat: Option<Position>,
    since: Option<Instant>,
}

/// The member slot this instance holds.
struct Slot<Lease> {
    index: u16,
    lease: Lease,
    token: crate::LeaseToken,
    beat: u64,
}

/// A lane running here; aborted if dropped (the supervisor itself was
/// aborted) rather than left running without it.
struct LaneRun(Option<SubscriptionHandle>);

impl LaneRun {
    fn take(mut self) -> SubscriptionHandle {
        self.0.take().unwrap_or_else(|| unreachable!("taken once"))
    }

    fn is_finished(&self) -> bool {
        self.0.as_ref().is_none_or(SubscriptionHandle::is_finished)
    }
}

impl Drop for LaneRun {
    fn drop(&mut self) {
        if let Some(handle) = self.0.take() {
            handle.abort();
        }
    }
}

/// A lane being stopped in the background; aborted if dropped.
struct Stopping {
    lane: u16,
    task: JoinHandle<(u16, Result<SubscriptionReport, SubscriptionError>)>,
}

impl Drop for Stopping {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The sequence a member writes into its slot when it leaves cleanly (a
/// live member writes its lane count there, never 0).
const LEFT: u64 = 0;

struct Supervisor<L, C: SubscriptionLeases, E, F> {
    log: L,
    checkpoints: C,
    name: SubscriptionName,
    lane_names: Vec<SubscriptionName>,
    member_names: Vec<SubscriptionName>,
    lanes: Lanes,
    make_handler: F,
    config: SubscriptionConfig,
    stop: watch::Receiver<bool>,
    running_tx: watch::Sender<BTreeSet<u16>>,
    slot: Option<Slot<C::Lease>>,
    seen: Vec<Seen>,
    running: BTreeMap<u16, LaneRun>,
    stopping: Vec<Stopping>,
    report: LanesReport,
    _event: std::marker::PhantomData<fn() -> E>,
}

impl<L, C, E, H, F> Supervisor<L, C, E, F>
where
    L: EventLog + Clone + 'static,
    C: CheckpointStore + SubscriptionLeases + DeadLetters + Clone + 'static,
    E: Decode,
    H: Handler<E>,
    F: FnMut(&Lane) -> H + Send + 'static,
{
    async fn run(mut self) -> Result<LanesReport, SubscriptionError> {
        let outcome = self.beats().await;
        // Stopped (or stopping on an error): the slot says this member
        // left, so the others start its lanes (taking each lease once it is
        // let go), and every lane here stops and is waited for.
        self.leave().await;
        let running = std::mem::take(&mut self.running);
        for (lane, run) in running {
            self.stop_lane(lane, run);
        }
        let mut failure = outcome.err();
        for stopping in std::mem::take(&mut self.stopping) {
            if let Some(e) = self.reap(stopping).await {
                failure.get_or_insert(e);
            }
        }
        for name in &self.member_names {
            self.checkpoints.stop_waiting(name);
        }
        self.running_tx.send_replace(BTreeSet::new());
        match failure {
            Some(e) => Err(e),
            None => Ok(self.report),
        }
    }

    /// A beat at a time until asked to stop or a lane stops on an error.
    async fn beats(&mut self) -> Result<(), SubscriptionError> {
        loop {
            if *self.stop.borrow() {
                return Ok(());
            }
            match self.beat().await {
                Ok(()) => {}
                Err(e) if e.is_retryable() => {
                    self.report.store_retries += 1;
                    tracing::warn!(error = %e, "membership store error; retried at the next beat");
                }
                Err(source) => {
                    return Err(SubscriptionError::Store {
                        name: self.name.clone(),
                        source,
                    });
                }
            }
            if let Some(found) = self.other_layout() {
                return Err(SubscriptionError::LaneLayout {
                    name: self.name.clone(),
                    configured: self.lanes.count.get(),
                    found,
                });
            }
            self.rebalance();
            self.reap_finished().await?;
            let mut stop = self.stop.clone();
            tokio::select! {
                () = tokio::time::sleep(self.lanes.heartbeat) => {}
                _ = stop.wait_for(|asked| *asked) => {}
            }
        }
    }

    /// Takes a slot if this instance has none, beats on it, and reads the
    /// others'.
    async fn beat(&mut self) -> Result<(), StoreError> {
        if self.slot.is_none() {
            self.take_slot().await?;
        }
        if let Some(slot) = &mut self.slot
            && !self.checkpoints.still_held(&mut slot.lease).await?
        {
            self.slot = None;
            self.report.slots_lost += 1;
            tracing::warn!("member slot lost");
        }
        if let Some(slot) = &mut self.slot {
            slot.beat += 1;
            let at = Position::new(slot.beat, u64::from(self.lanes.count.get()));
            let name = &self.member_names[usize::from(slot.index)];
            match self.checkpoints.save(name, at, slot.token).await {
                Ok(()) => {}
                Err(StoreError::LeaseLost { .. }) => {
                    self.slot = None;
                    self.report.slots_lost += 1;
                    tracing::warn!("member slot taken by another instance");
                }
                Err(e) => return Err(e),
            }
        }
        let now = Instant::now();
        for (k, name) in self.member_names.iter().enumerate() {
            if self
                .slot
                .as_ref()
                .is_some_and(|s| usize::from(s.index) == k)
            {
                continue;
            }
            let beat = self.checkpoints.load(name).await?;
            let seen = &mut self.seen[k];
            // A beat seen for the first time presumes its member live for
            // one timeout, as a beat that moved does.
            if seen.beat != beat || seen.since.is_none() {
                *seen = Seen {
                    beat,
                    since: Some(now),
                };
            }
        }
        Ok(())
    }

    /// Takes the first free member slot, if any.
    async fn take_slot(&mut self) -> Result<(), StoreError> {
        for (k, name) in self.member_names.iter().enumerate() {
            let Some(lease) = self.checkpoints.try_acquire(name).await? else {
                continue;
            };
            let token = self.checkpoints.token(&lease);
            let beat = self
                .checkpoints
                .load(name)
                .await?
                .map_or(0, Position::commit);
            let index = u16::try_from(k).unwrap_or(u16::MAX);
            tracing::info!(slot = index, "member slot taken");
            // The slots tried before are held by others: stop waiting on them.
            for tried in &self.member_names[..k] {
                self.checkpoints.stop_waiting(tried);
            }
            self.slot = Some(Slot {
                index,
                lease,
                token,
                beat,
            });
            return Ok(());
        }
        Ok(())
    }

    /// The live members' slots, sorted (this instance's included).
    fn live(&self) -> Vec<u16> {
        let now = Instant::now();
        let mine = self.slot.as_ref().map(|s| s.index);
        (0..self.lanes.count.get())
            .filter(|&k| {
                if Some(k) == mine {
                    return true;
                }
                let seen = self.seen[usize::from(k)];
                seen.beat.is_some_and(|b| b.sequence() != LEFT)
                    && seen
                        .since
                        .is_some_and(|since| now.duration_since(since) < self.lanes.member_timeout)
            })
            .collect()
    }

    /// The lane count of a live member that splits the keys another way
    /// than this instance, if one does.
    fn other_layout(&self) -> Option<u16> {
        let count = u64::from(self.lanes.count.get());
        self.live().into_iter().find_map(|k| {
            let beat = self.seen[usize::from(k)].beat?;
            let other = self.slot.as_ref().is_none_or(|s| s.index != k);
            (other && beat.sequence() != count)
                .then(|| u16::try_from(beat.sequence()).unwrap_or(u16::MAX))
        })
    }

    /// Starts the lanes that fall to this instance and stops the others.
    fn rebalance(&mut self) {
        let Some(slot) = &self.slot else {
            // Without a slot (a standby, or between losing one and taking
            // one again) nothing new starts and nothing is given up.
            return;
        };
        let live = self.live();
        let members = u16::try_from(live.len()).unwrap_or(u16::MAX).max(1);
        let rank = live.iter().position(|&k| k == slot.index).unwrap_or(0);
        let rank = u16::try_from(rank).unwrap_or(0);
        let wanted: BTreeSet<u16> = (0..self.lanes.count.get())
            .filter(|i| i % members == rank)
            .collect();
        let leaving: Vec<u16> = self
            .running
            .keys()
            .filter(|lane| !wanted.contains(lane))
            .copied()
            .collect();
        for lane in leaving {
            if let Some(run) = self.running.remove(&lane) {
                tracing::info!(lane, "lane given up to another member");
                self.report.lanes_given_up += 1;
                self.stop_lane(lane, run);
            }
        }
        for lane in wanted {
            // A lane still stopping here starts again after it has stopped.
            let still_stopping = self
                .stopping
                .iter()
                .any(|s| s.lane == lane && !s.task.is_finished());
            if !self.running.contains_key(&lane) && !still_stopping {
                self.start_lane(lane);
            }
        }
        self.running_tx
            .send_replace(self.running.keys().copied().collect());
    }

    fn start_lane(&mut self, index: u16) {
        let lane = Lane {
            index,
            count: self.lanes.count.get(),
            name: self.lane_names[usize::from(index)].clone(),
            base: self.name.clone(),
        };
        let handler = (self.make_handler)(&lane);
        let filter = LaneFilter {
            key: self.lanes.key.clone(),
            index,
            count: self.lanes.count,
        };
        tracing::info!(lane = index, "lane started");
        self.report.lanes_started += 1;
        let handle = subscription::start(
            self.log.clone(),
            self.checkpoints.clone(),
            lane.name,
            handler,
            self.config.clone(),
            Some(filter),
            Some(self.checkpoints.clone()),
        );
        self.running.insert(index, LaneRun(Some(handle)));
    }

    /// Stops `run` in the background (after its event under way, saving its
    /// checkpoint).
    fn stop_lane(&mut self, lane: u16, run: LaneRun) {
        let handle = run.take();
        self.stopping.push(Stopping {
            lane,
            task: tokio::spawn(async move { (lane, handle.stop().await) }),
        });
    }

    /// Waits for a lane being stopped and keeps its report; its error, if
    /// it had stopped on one.
    async fn reap(&mut self, mut stopping: Stopping) -> Option<SubscriptionError> {
        match (&mut stopping.task).await {
            Ok((lane, Ok(report))) => {
                self.report.runs.push((lane, report));
                None
            }
            Ok((_, Err(e))) => Some(e),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => None,
        }
    }

    /// Collects lanes that ended: stopped ones' reports, and the error of
    /// one that stopped by itself (which stops the subscription).
    async fn reap_finished(&mut self) -> Result<(), SubscriptionError> {
        let (done, pending): (Vec<_>, Vec<_>) = std::mem::take(&mut self.stopping)
            .into_iter()
            .partition(|s| s.task.is_finished());
        self.stopping = pending;
        for stopping in done {
            if let Some(e) = self.reap(stopping).await {
                return Err(e);
            }
        }
        let ended: Vec<u16> = self
            .running
            .iter()
            .filter(|(_, run)| run.is_finished())
            .map(|(lane, _)| *lane)
            .collect();
        for lane in ended {
            if let Some(run) = self.running.remove(&lane) {
                match run.take().stop().await {
                    Ok(report) => self.report.runs.push((lane, report)),
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// Marks this member's slot as left, so the others take its lanes now.
    async fn leave(&mut self) {
        if let Some(slot) = self.slot.take() {
            let name = &self.member_names[usize::from(slot.index)];
            let at = Position::new(slot.beat + 1, LEFT);
            if let Err(e) = self.checkpoints.save(name, at, slot.token).await {
                tracing::warn!(error = %e, "could not mark the member slot as left");
            }
        }
    }
}
