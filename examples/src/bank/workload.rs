//! A concurrent workload on the bank, and the invariants checked after it.

use std::{
    num::NonZeroU32,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use eventcore::{
    CheckpointStore, CommandId, EventLog, EventStore, EventStoreExt, ExecuteError, ExecuteOptions,
    ExecutionResult, Metadata, RetryPolicy, StreamId, SubscriptionLeases, SubscriptionName,
    execute_with,
};
use indicatif::ProgressBar;
use serde::Serialize;

use super::{
    domain::{Amount, BankCommand, BankError, Deposit, OpenAccount, Transfer, Withdraw},
    ledger::{Checks, Tally, verify},
    read_model::{ReadModelError, catch_up},
};

/// What to run.
#[derive(Debug, Clone, Serialize)]
pub struct WorkloadConfig {
    /// How many accounts.
    pub accounts: usize,
    /// How many transfers.
    pub transfers: usize,
    /// How many deposits, mixed in with the transfers.
    pub deposits: usize,
    /// How many withdrawals, mixed in with the transfers.
    pub withdrawals: usize,
    /// How many tasks issue commands concurrently.
    pub workers: usize,
    /// Seeds each worker's choice of commands.
    pub seed: u64,
    /// What every account starts with, in cents.
    pub initial_balance: u64,
}

/// The outcome of a run: throughput, retries and the invariant checks.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Which store ran it.
    pub store: String,
    /// Names the run's accounts (`acct-<run>-<n>`), so runs on one database do not mix.
    pub run: String,
    /// The settings.
    pub config: WorkloadConfig,
    /// Commands issued in the measured phase.
    pub commands: usize,
    /// Wall time of the measured phase, in seconds.
    pub elapsed_secs: f64,
    /// Commands per second in the measured phase.
    pub commands_per_sec: f64,
    /// Read-decide-append cycles of the successful commands.
    pub attempts: u64,
    /// Conflicts (and transient failures) retried: attempts beyond the first.
    pub retries: u64,
    /// Commands refused by a business rule (insufficient funds).
    pub rejections: usize,
    /// Commands that met conflicts on every allowed attempt (nothing written).
    pub gave_up: usize,
    /// Commands that failed with a store error.
    pub store_errors: usize,
    /// Each invariant check and whether it held.
    pub checks: Checks,
    /// Whether the read model (balances kept by a subscription to the
    /// global log) equals the write side, account by account and in total.
    pub read_model_matches: bool,
    /// Events the read model applied.
    pub read_model_events: u64,
    /// Successful commands sent a second time with their command ids, as a
    /// client would after a timeout.
    pub repeated_requests: usize,
    /// Whether every one of them was found already applied (nothing
    /// written; the log check above runs after them).
    pub repeats_applied_once: bool,
    /// The last events of the first account, with their metadata.
    pub history: Vec<HistoryItem>,
}

/// One event of an account's history, as the demo prints it.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryItem {
    /// Its version in the account's stream.
    pub version: u64,
    /// When the store recorded it, in microseconds since the Unix epoch.
    pub recorded_at_micros: u128,
    /// Its type name.
    pub event_type: String,
    /// Its payload.
    pub payload: String,
    /// The id shared by every event of its request.
    pub correlation_id: Option<String>,
    /// What caused it: the command id of the request that wrote it.
    pub causation_id: Option<String>,
    /// The request's own key/values (here: which worker sent it), as JSON.
    pub values: String,
}

/// Every this many successful commands, one is sent again with its id.
const REPEAT_EVERY: usize = 20;

/// Runs a bank command with `options`, by its own type (the type is part
/// of what a command id is recorded for).
async fn execute_bank<S: EventStore>(
    store: &S,
    command: BankCommand,
    options: ExecuteOptions,
) -> Result<ExecutionResult, ExecuteError<BankError>> {
    match command {
        BankCommand::Open(c) => execute_with(store, c, options).await,
        BankCommand::Deposit(c) => execute_with(store, c, options).await,
        BankCommand::Withdraw(c) => execute_with(store, c, options).await,
        BankCommand::Transfer(c) => execute_with(store, c, options).await,
    }
}

/// A request's options: its command id, and metadata saying who sent it.
fn request(
    policy: &RetryPolicy,
    run: &str,
    name: &str,
    worker: usize,
) -> (CommandId, ExecuteOptions) {
    let id = CommandId::try_new(format!("{run}-{name}"))
        .unwrap_or_else(|_| unreachable!("a short printable id"));
    let options = ExecuteOptions::from(policy)
        .with_command_id(id.clone())
        .with_metadata(Metadata::new().with_value("worker", worker));
    (id, options)
}

/// Why a run could not complete.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    /// The configuration cannot run.
    #[error("invalid workload: {0}")]
    Invalid(&'static str),
    /// Opening the accounts failed.
    #[error("setting up account {account} failed")]
    Setup {
        /// The account.
        account: StreamId,
        /// Why.
        #[source]
        source: ExecuteError<BankError>,
    },
    /// Reading the accounts back failed.
    #[error("reading the accounts back failed")]
    Verify(#[source] eventcore::StoreError),
    /// The read model could not be built.
    #[error("building the read model failed")]
    ReadModel(#[from] ReadModelError),
}

impl From<eventcore::StoreError> for WorkloadError {
    fn from(e: eventcore::StoreError) -> Self {
        WorkloadError::Verify(e)
    }
}

#[derive(Clone, Copy)]
enum Op {
    Transfer,
    Deposit,
    Withdraw,
}

fn policy() -> RetryPolicy {
    RetryPolicy::default()
        .with_max_attempts(NonZeroU32::new(200).unwrap_or(NonZeroU32::MIN))
        .with_base_delay(Duration::from_micros(200))
        .with_max_delay(Duration::from_millis(20))
}

fn amount(cents: u64) -> Amount {
    // cents.max(1) is positive, which is all Amount requires.
    Amount::try_new(cents.max(1)).unwrap_or_else(|_| unreachable!())
}

/// Opens the accounts, runs the commands on `config.workers` tasks, then
/// reads every account back and checks the invariants.
///
/// # Errors
/// A [`WorkloadError`] if the configuration is unusable, the setup fails or
/// the accounts cannot be read back. Failures of the measured commands are
/// counted in the [`Summary`], not returned.
pub async fn run<S, C>(
    store: S,
    checkpoints: C,
    store_name: &str,
    config: WorkloadConfig,
    progress: ProgressBar,
) -> Result<Summary, WorkloadError>
where
    S: EventStore + EventLog + Clone + 'static,
    C: CheckpointStore + SubscriptionLeases + 'static,
{
    if config.accounts < 2 {
        return Err(WorkloadError::Invalid("transfers need at least 2 accounts"));
    }
    if config.workers == 0 {
        return Err(WorkloadError::Invalid("at least 1 worker is needed"));
    }
    let run = format!("{:08x}", fastrand::u32(..));
    let accounts: Arc<Vec<StreamId>> = Arc::new(
        (0..config.accounts)
            .map(|i| {
                StreamId::try_new(format!("acct-{run}-{i}"))
                    .unwrap_or_else(|_| unreachable!("ids are short and printable"))
            })
            .collect(),
    );
    let policy = policy();
    for account in accounts.iter() {
        let setup = |source| WorkloadError::Setup {
            account: account.clone(),
            source,
        };
        // Setup requests carry ids too: `{run}-open-{account}`, `{run}-fund-{account}`.
        let (_, open) = request(&policy, &run, &format!("open-{account}"), 0);
        execute_with(&store, OpenAccount::new(account.clone()), open)
            .await
            .map_err(setup)?;
        let initial = Deposit {
            account: account.clone(),
            amount: amount(config.initial_balance),
        };
        let (_, fund) = request(&policy, &run, &format!("fund-{account}"), 0);
        execute_with(&store, initial, fund).await.map_err(setup)?;
    }

    let mut ops: Vec<Op> = std::iter::repeat_n(Op::Transfer, config.transfers)
        .chain(std::iter::repeat_n(Op::Deposit, config.deposits))
        .chain(std::iter::repeat_n(Op::Withdraw, config.withdrawals))
        .collect();
    fastrand::Rng::with_seed(config.seed).shuffle(&mut ops);
    let ops = Arc::new(ops);
    let next = Arc::new(AtomicUsize::new(0));
    progress.set_length(ops.len() as u64);

    let started = Instant::now();
    let mut workers = Vec::with_capacity(config.workers);
    for w in 0..config.workers {
        let (store, accounts, ops, next, progress, policy) = (
            store.clone(),
            accounts.clone(),
            ops.clone(),
            next.clone(),
            progress.clone(),
            policy.clone(),
        );
        let mut rng = fastrand::Rng::with_seed(config.seed.wrapping_mul(31).wrapping_add(w as u64));
        let ceiling = config.initial_balance.max(2);
        let run = run.clone();
        workers.push(tokio::spawn(async move {
            let mut tally = Tally::new(accounts.len());
            let mut to_repeat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(op) = ops.get(i).copied() else { break };
                let a = rng.usize(..accounts.len());
                let cents = rng.u64(1..ceiling);
                let (cmd, effect): (_, Vec<(usize, i128)>) = match op {
                    Op::Transfer => {
                        let b = (a + 1 + rng.usize(..accounts.len() - 1)) % accounts.len();
                        let c = i128::from(cents);
                        (
                            BankCommand::Transfer(Transfer {
                                from: accounts[a].clone(),
                                to: accounts[b].clone(),
                                amount: amount(cents),
                            }),
                            vec![(a, -c), (b, c)],
                        )
                    }
                    Op::Deposit => (
                        BankCommand::Deposit(Deposit {
                            account: accounts[a].clone(),
                            amount: amount(cents),
                        }),
                        vec![(a, i128::from(cents))],
                    ),
                    Op::Withdraw => (
                        BankCommand::Withdraw(Withdraw {
                            account: accounts[a].clone(),
                            amount: amount(cents),
                        }),
                        vec![(a, -i128::from(cents))],
                    ),
                };
                let (id, options) = request(&policy, &run, &format!("request-{i}"), w);
                let result = execute_bank(&store, cmd.clone(), options).await;
                if result.is_ok() && i % REPEAT_EVERY == 0 {
                    to_repeat.push((id, cmd));
                }
                tally.record(&result, &effect);
                progress.inc(1);
            }
            (tally, to_repeat)
        }));
    }
    let mut total = Tally::new(accounts.len());
    let mut to_repeat = Vec::new();
    for worker in workers {
        match worker.await {
            Ok((t, repeats)) => {
                total.merge(&t);
                to_repeat.extend(repeats);
            }
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    let elapsed = started.elapsed();
    progress.finish_and_clear();

    // Clients that timed out send some requests again, with the same ids.
    let repeated_requests = to_repeat.len();
    let mut repeats_applied_once = true;
    for (id, cmd) in to_repeat {
        let options = ExecuteOptions::from(&policy).with_command_id(id);
        let again = execute_bank(&store, cmd, options).await;
        repeats_applied_once &= matches!(again, Ok(r) if r.already_applied);
    }

    let initial = vec![i128::from(config.initial_balance); accounts.len()];
    let setup_events = 2 * accounts.len();
    let (checks, balances) = verify(&store, &accounts, &initial, setup_events, &total).await?;
    let history = history_of(&store, &accounts[0], 5).await?;

    // The read side: a subscription builds the balances from the global log.
    let name = SubscriptionName::try_new(format!("bank-balances-{run}"))
        .unwrap_or_else(|_| unreachable!("a short printable name"));
    let expected = (setup_events + total.events) as u64;
    let read_model = catch_up(
        store.clone(),
        checkpoints,
        name,
        &format!("acct-{run}-"),
        expected,
    )
    .await?;
    let read_model_matches = read_model.events == expected
        && read_model.total == balances.iter().sum::<i128>()
        && accounts
            .iter()
            .zip(&balances)
            .all(|(a, b)| read_model.accounts.get(a).copied().unwrap_or(0) == *b);
    Ok(Summary {
        store: store_name.to_owned(),
        run,
        commands: ops.len(),
        elapsed_secs: elapsed.as_secs_f64(),
        commands_per_sec: ops.len() as f64 / elapsed.as_secs_f64().max(1e-9),
        attempts: total.attempts,
        retries: total.retries(),
        rejections: total.rejections,
        gave_up: total.gave_up,
        store_errors: total.store_errors,
        checks,
        read_model_matches,
        read_model_events: read_model.events,
        repeated_requests,
        repeats_applied_once,
        history,
        config,
    })
}

/// The last `n` events of `account`, with their metadata.
async fn history_of<S: EventStore>(
    store: &S,
    account: &StreamId,
    n: usize,
) -> Result<Vec<HistoryItem>, WorkloadError> {
    let read = store.read_streams(std::slice::from_ref(account)).await?;
    let events = read.events();
    Ok(events[events.len().saturating_sub(n)..]
        .iter()
        .map(|e| HistoryItem {
            version: e.version().get(),
            recorded_at_micros: e
                .recorded_at()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros()),
            event_type: e.event_type().to_owned(),
            payload: e.payload().to_owned(),
            correlation_id: e.metadata().correlation_id().map(|c| c.as_str().to_owned()),
            causation_id: e.metadata().causation_id().map(|c| c.as_str().to_owned()),
            values: e.metadata().values_json(),
        })
        .collect())
}
