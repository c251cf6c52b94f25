//! Property-tested concurrency for users' commands.
//!
//! [`run_concurrently`] runs a batch of commands on many tokio tasks released
//! together against a real store, with a seeded perturbation of the
//! interleaving (random yields before every read and append, injected
//! conflicts that force retries, replies lost after commit). It records
//! every store call of every command as a [`Step`]: each read (the declared
//! streams, every round of discovered ones, the tails after kept folds)
//! with the versions it saw, and each append with the versions it expected,
//! the ids of its events and how it ended. Then it checks that:
//!
//! - **(a)** the user's invariant holds over the final log;
//! - **(b)** every append registered each stream its attempt read, at the
//!   version read (a discovered stream included), and every refusal or
//!   empty decision rests on a read of its last attempt;
//! - **(c)** the run is serializable: each decision, made again through
//!   `execute` on exactly the events the command read, is the same (the
//!   same events appended, the same refusal, the same empty decision), is
//!   made the same way twice (a fold that is not deterministic shows
//!   here), and every applied command's streams stood, in commit order just
//!   before its events, at the versions it read;
//! - **(d)** nothing was lost or duplicated: every committed append's
//!   events are in the log exactly once (by their ids), no failed append
//!   left any, no command was applied twice, and every stream's versions
//!   run 1..=n.
//!
//! [`check_concurrency`] wraps it in proptest: it generates command batches
//! and seeds, and on failure shrinks the batch and prints the seed, the
//! history and a [`Replay`] line that runs exactly that case again. The
//! same case replays the same perturbations; the thread interleaving
//! itself is up to the scheduler, so a rare race may need a few runs to
//! show again.
//!
//! The store a run starts from must be empty: setup commands build the
//! state. A command type with several kinds of commands is usually an enum
//! that implements [`CommandLogic`] by delegating to each kind.

mod check;
mod recorder;
mod replay;

use std::{
    collections::{BTreeSet, HashSet},
    fmt::{self, Debug},
    future::Future,
    num::NonZeroU32,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use eventcore::{
    CommandLogic, EventStore, EventStoreExt, ExecuteError, RecordedEvent, RetryPolicy, StreamId,
    StreamVersion, Uuid, execute_with,
};
use proptest::strategy::Strategy;
use tokio::sync::Barrier;

pub use recorder::{AppendResult, Step};
pub use replay::{NotAReplay, REPLAY_VAR, Replay};

/// How hard [`run_concurrently`] shakes the interleaving. Start from
/// [`default`](ConcurrencyConfig::default) and change what you need with
/// the `with_` methods.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConcurrencyConfig {
    /// Tasks issuing commands at once.
    pub workers: usize,
    /// Up to this many `yield_now`s before every read and append.
    pub max_yields: u32,
    /// Probability of an injected conflict before an append.
    pub conflict_rate: f64,
    /// The retry policy of every command.
    pub retry: RetryPolicy,
    /// Probability that an append which committed is reported to the
    /// command as a lost connection ([`StoreError::Transient`](eventcore::StoreError::Transient)): the reply
    /// lost after commit, which `execute` retries.
    pub lost_reply_rate: f64,
    /// Whether every command of the batch runs with a command id of its
    /// own ([`ExecuteOptions::with_command_id`](eventcore::ExecuteOptions::with_command_id)),
    /// which makes a retry after a lost reply return the first outcome
    /// instead of applying the command again.
    pub command_ids: bool,
    /// The one case [`check_concurrency`] runs instead of generating
    /// batches, if set: a failure printed, pinned in a test. It runs up
    /// to 20 times, until it fails: the batch and its perturbations are
    /// the same every time, the threads' interleaving is not.
    pub replay: Option<Replay>,
}

impl Default for ConcurrencyConfig {
    /// 8 workers, up to 3 yields, 5% injected conflicts, no lost replies,
    /// no command ids, 1,000 attempts with waits capped at 2 ms, and no
    /// in-process queueing
    /// ([`RetryPolicy::with_queue_in_process`]), so that commands on the same
    /// streams really race against the store.
    fn default() -> Self {
        ConcurrencyConfig {
            workers: 8,
            max_yields: 3,
            conflict_rate: 0.05,
            retry: RetryPolicy::default()
                .with_queue_in_process(false)
                .with_max_attempts(NonZeroU32::new(1_000).unwrap_or(NonZeroU32::MIN))
                .with_base_delay(Duration::from_micros(50))
                .with_max_delay(Duration::from_millis(2)),
            lost_reply_rate: 0.0,
            command_ids: false,
            replay: None,
        }
    }
}

impl ConcurrencyConfig {
    /// Sets how many tasks issue commands at once.
    pub fn with_workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    /// Sets the most `yield_now`s before every read and append.
    pub fn with_max_yields(mut self, max_yields: u32) -> Self {
        self.max_yields = max_yields;
        self
    }

    /// Sets the probability of an injected conflict before an append.
    pub fn with_conflict_rate(mut self, p: f64) -> Self {
        self.conflict_rate = p;
        self
    }

    /// Sets the retry policy of every command.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Sets the probability that a committed append's reply is lost.
    pub fn with_lost_reply_rate(mut self, p: f64) -> Self {
        self.lost_reply_rate = p;
        self
    }

    /// Gives every command of the batch a command id of its own, or not.
    pub fn with_command_ids(mut self, on: bool) -> Self {
        self.command_ids = on;
        self
    }

    /// Makes [`check_concurrency`] run only the case `replay` names (what a
    /// failure printed), up to 20 times until it fails: a test that pins a
    /// failure found before, and passes once it is fixed.
    pub fn with_replay(mut self, replay: Replay) -> Self {
        self.replay = Some(replay);
        self
    }
}

/// What happened to one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It appended events.
    Applied {
        /// Read-decide-append cycles.
        attempts: u32,
        /// Events appended.
        events_written: usize,
    },
    /// It decided to do nothing.
    NoOp,
    /// A business rule refused it; the message.
    Rejected(String),
    /// Every attempt met a conflict.
    GaveUp,
    /// The store failed; the error.
    Failed(String),
}

/// One command of a run.
#[derive(Debug, Clone)]
pub struct CommandRecord<C> {
    /// Its place in the batch.
    pub index: usize,
    /// The command.
    pub command: C,
    /// What happened.
    pub outcome: Outcome,
    /// The versions of the streams its final decision was made on: those
    /// its committed append expected, or those read in its last attempt.
    pub observed: Vec<(StreamId, StreamVersion)>,
    /// For an applied command, its streams' versions afterwards.
    pub written: Vec<(StreamId, StreamVersion)>,
    /// Every store call it made, in order.
    pub steps: Vec<Step>,
    /// The step of the append that committed its events.
    committed: Option<usize>,
}

impl<C> CommandRecord<C> {
    /// The ids of the events of the append that committed the command.
    fn committed_step(&self) -> Option<&[Uuid]> {
        match self.steps.get(self.committed?)? {
            Step::Append { event_ids, .. } => Some(event_ids),
            _ => None,
        }
    }
}

/// Everything a run did: the records, in commit order for applied commands
/// (then the others in batch order), and the final log of every stream the
/// commands read or wrote.
#[derive(Debug, Clone)]
pub struct History<C> {
    /// The seed of the perturbations.
    pub seed: u64,
    /// One record per command of the batch.
    pub records: Vec<CommandRecord<C>>,
    /// The events of every stream the run touched, in global order.
    pub log: Vec<RecordedEvent>,
}

impl<C: Debug> fmt::Display for History<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "history (seed {}):", self.seed)?;
        for r in &self.records {
            writeln!(f, "  #{} {:?} -> {:?}", r.index, r.command, r.outcome)?;
            let steps = recorder::show_steps(&r.steps);
            if !steps.is_empty() {
                writeln!(f, "{steps}")?;
            }
        }
        writeln!(f, "log:")?;
        for e in &self.log {
            writeln!(
                f,
                "  #{} {}@{} {} {}",
                e.global_sequence(),
                e.stream_id(),
                e.version(),
                e.event_type(),
                e.payload()
            )?;
        }
        Ok(())
    }
}

/// A run that broke a guarantee.
#[derive(Debug)]
pub struct ConcurrencyFailure<C> {
    /// Every broken guarantee, one line each.
    pub violations: Vec<String>,
    /// What the run did.
    pub history: History<C>,
}

impl<C: Debug> fmt::Display for ConcurrencyFailure<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "concurrency check failed (seed {}):", self.history.seed)?;
        for v in &self.violations {
            writeln!(f, "  - {v}")?;
        }
        write!(f, "{}", self.history)
    }
}

impl<C: Debug> std::error::Error for ConcurrencyFailure<C> {}

fn outcome_of<E: std::error::Error + 'static>(
    result: &Result<eventcore::ExecutionResult, ExecuteError<E>>,
) -> Outcome {
    match result {
        Ok(r) if r.events_written == 0 => Outcome::NoOp,
        Ok(r) => Outcome::Applied {
            attempts: r.attempts,
            events_written: r.events_written,
        },
        Err(ExecuteError::Rejected(e)) => Outcome::Rejected(e.to_string()),
        Err(ExecuteError::RetriesExhausted { .. }) => Outcome::GaveUp,
        Err(e) => Outcome::Failed(format!("{e}: {:?}", std::error::Error::source(e))),
    }
}

/// A command's options: the configured policy, and a command id of its own
/// when the configuration asks for them.
fn options_for(config: &ConcurrencyConfig, seed: u64, name: &str) -> eventcore::ExecuteOptions {
    let options = eventcore::ExecuteOptions::from(&config.retry);
    if !config.command_ids {
        return options;
    }
    // A short ASCII id: always valid.
    match eventcore::CommandId::try_new(format!("concurrency-{seed}-{name}")) {
        Ok(id) => options.with_command_id(id),
        Err(_) => options,
    }
}

fn declared_streams<C: CommandLogic>(commands: &[C]) -> BTreeSet<StreamId> {
    commands.iter().flat_map(|c| c.streams()).collect()
}

/// Every stream a command's steps read or registered.
fn touched(steps: &[Step]) -> impl Iterator<Item = &StreamId> {
    steps.iter().flat_map(|step| match step {
        Step::Read(versions)
        | Step::Append {
            expected: versions, ..
        } => versions.iter().map(|(s, _)| s).collect::<Vec<_>>(),
        Step::FoundRecord => Vec::new(),
    })
}

/// Runs `setup` one by one, then `commands` concurrently, and checks the
/// guarantees listed in the [module docs](self).
///
/// # Errors
/// A [`ConcurrencyFailure`] naming every broken guarantee, with the history.
pub async fn run_concurrently<S, C, I>(
    store: S,
    setup: &[C],
    commands: &[C],
    seed: u64,
    config: &ConcurrencyConfig,
    invariant: I,
) -> Result<History<C>, ConcurrencyFailure<C>>
where
    S: EventStore + Clone + 'static,
    C: CommandLogic + Clone + Debug + 'static,
    I: Fn(&[RecordedEvent]) -> Result<(), String>,
{
    let mut violations = Vec::new();
    let mut universe = declared_streams(setup);
    universe.extend(declared_streams(commands));
    for (i, cmd) in setup.iter().enumerate() {
        match execute_with(
            &store,
            cmd.clone(),
            options_for(config, seed, &format!("setup-{i}")),
        )
        .await
        {
            Ok(done) => universe.extend(done.stream_versions.into_iter().map(|(s, _)| s)),
            Err(
                e @ (ExecuteError::Store(_)
                | ExecuteError::RetriesExhausted { .. }
                | ExecuteError::NoStreams),
            ) => violations.push(format!("setup command {i} ({cmd:?}) failed: {e}")),
            Err(_) => {}
        }
    }
    let listed: Vec<StreamId> = universe.iter().cloned().collect();
    let setup_ids: HashSet<Uuid> = match store.read_streams(&listed).await {
        Ok(read) => read.events().iter().map(RecordedEvent::event_id).collect(),
        Err(e) => {
            violations.push(format!("reading after setup failed: {e}"));
            HashSet::new()
        }
    };

    // The concurrent run.
    let batch: Arc<Vec<C>> = Arc::new(commands.to_vec());
    let next = Arc::new(AtomicUsize::new(0));
    let workers = config.workers.max(1);
    let barrier = Arc::new(Barrier::new(workers));
    let mut handles = Vec::with_capacity(workers);
    for w in 0..workers {
        let (store, batch, next, barrier, config) = (
            store.clone(),
            batch.clone(),
            next.clone(),
            barrier.clone(),
            config.clone(),
        );
        let worker_seed = seed ^ (w as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        handles.push(tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(worker_seed);
            let mut runs = Vec::new();
            barrier.wait().await;
            loop {
                let index = next.fetch_add(1, Ordering::SeqCst);
                let Some(command) = batch.get(index).cloned() else {
                    break;
                };
                let recorder = recorder::Recorder {
                    inner: &store,
                    rng: Mutex::new(rng.fork()),
                    max_yields: config.max_yields,
                    conflict_rate: config.conflict_rate,
                    lost_reply_rate: config.lost_reply_rate,
                    steps: Mutex::new(Vec::new()),
                };
                let options = options_for(&config, seed, &index.to_string());
                let result = execute_with(&recorder, command.clone(), options).await;
                let final_versions = result
                    .as_ref()
                    .ok()
                    .map(|r| (r.stream_versions.clone(), r.already_applied));
                runs.push((
                    index,
                    command,
                    outcome_of(&result),
                    final_versions,
                    recorder.into_steps(),
                ));
            }
            runs
        }));
    }
    let mut runs = Vec::with_capacity(commands.len());
    for handle in handles {
        match handle.await {
            Ok(r) => runs.extend(r),
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    runs.sort_by_key(|r| r.0);
    let mut records = Vec::with_capacity(runs.len());
    for (index, command, outcome, final_versions, steps) in runs {
        let found = check::basis(
            index,
            &steps,
            &outcome,
            final_versions.as_ref().map(|(v, repeat)| (v, *repeat)),
            &mut violations,
        );
        let written = match (&outcome, final_versions) {
            (Outcome::Applied { .. }, Some((versions, _))) => versions,
            _ => Vec::new(),
        };
        records.push(CommandRecord {
            index,
            command,
            outcome,
            observed: found.observed,
            written,
            steps,
            committed: found.committed,
        });
    }

    for r in &records {
        universe.extend(touched(&r.steps).cloned());
    }
    let listed: Vec<StreamId> = universe.iter().cloned().collect();
    let log = match store.read_streams(&listed).await {
        Ok(read) => read.into_parts().1,
        Err(e) => {
            violations.push(format!("reading the final log failed: {e}"));
            Vec::new()
        }
    };

    for r in &records {
        if let Outcome::Failed(e) = &r.outcome {
            violations.push(format!(
                "command #{} failed with a store error: {e}",
                r.index
            ));
        }
    }
    let first_seq = check::check_log(&log, &setup_ids, &records, &mut violations);
    // Commit order: applied commands by their first event's global sequence.
    records.sort_by_key(|r| {
        (
            first_seq.get(&r.index).copied().unwrap_or(u64::MAX),
            r.index,
        )
    });
    check::check_decisions(&records, &log, &first_seq, &mut violations);
    if let Err(message) = invariant(&log) {
        violations.push(format!("invariant violated: {message}"));
    }

    let history = History { seed, records, log };
    if violations.is_empty() {
        Ok(history)
    } else {
        Err(ConcurrencyFailure {
            violations,
            history,
        })
    }
}

/// Generates command batches with `commands` and checks each with
/// [`run_concurrently`] on a fresh store from `factory`, on a
/// multi-threaded runtime; `cases` batches in all. With a replay (from
/// [`ConcurrencyConfig::with_replay`], or else the [`REPLAY_VAR`]
/// environment variable) it runs only the case the replay names, up to 20
/// times until it fails.
///
/// # Panics
/// On the first failing batch, after shrinking it: the message holds the
/// violations, the history of the smallest failing batch, the batch, and
/// the one line that runs exactly that case again.
pub fn check_concurrency<S, C, F, Fut, St, I>(
    cases: u32,
    factory: F,
    setup: Vec<C>,
    commands: St,
    config: ConcurrencyConfig,
    invariant: I,
) where
    S: EventStore + Clone + 'static,
    C: CommandLogic + Clone + Debug + 'static,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
    St: Strategy<Value = Vec<C>>,
    I: Fn(&[RecordedEvent]) -> Result<(), String>,
{
    let replay = match (&config.replay, std::env::var(REPLAY_VAR)) {
        (Some(pinned), _) => Some(pinned.clone()),
        (None, Ok(text)) => match text.parse::<Replay>() {
            Ok(replay) => Some(replay),
            Err(e) => panic!("{REPLAY_VAR}: {e}"),
        },
        (None, Err(_)) => None,
    };
    let strategy = (proptest::num::u64::ANY, commands);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => panic!("cannot build a runtime for the concurrency check: {e}"),
    };
    let test = |(seed, batch): &(u64, Vec<C>)| {
        runtime.block_on(async {
            let store = factory().await;
            run_concurrently(store, &setup, batch, *seed, &config, &invariant)
                .await
                .err()
                .map(|failure| failure.to_string())
        })
    };
    match replay::search(&strategy, cases, fastrand::u64(..), replay.as_ref(), test) {
        replay::Found::Passed => {}
        replay::Found::Failed {
            value: (seed, batch),
            failure,
            replay,
        } => panic!(
            "{failure}\nsmallest failing batch (perturbation seed {seed}): {batch:#?}\n\
             replay exactly this case: {REPLAY_VAR}={replay} cargo test ..., or pin it in the test \
             with ConcurrencyConfig::with_replay(\"{replay}\".parse().unwrap())"
        ),
        replay::Found::Aborted(reason) => panic!("concurrency check aborted: {reason}"),
    }
}
