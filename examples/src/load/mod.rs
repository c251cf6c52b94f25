//! The load tool's engine: workloads on the bank, run for a fixed time at
//! given concurrency levels, with latency percentiles and the bank's
//! invariant checks at the end.

pub mod log;
mod workloads;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use eventcore::{EventStore, RetryPolicy, StoreError, StreamId};
use indicatif::ProgressBar;
use serde::Serialize;

pub use workloads::{FanoutTransfer, Workload};

use crate::bank::ledger::{Checks, Tally, verify};

/// What to run.
#[derive(Debug, Clone, Serialize)]
pub struct LoadConfig {
    /// The workload.
    pub workload: Workload,
    /// Concurrency levels, run one after the other on the same data.
    pub concurrency: Vec<usize>,
    /// How long each level runs.
    pub duration: Duration,
    /// Seeds the choice of accounts and amounts.
    pub seed: u64,
    /// Whether every command runs with a command id of its own (recorded
    /// with its events, looked up on every read).
    pub command_ids: bool,
}

/// The measurements of one concurrency level.
#[derive(Debug, Clone, Serialize)]
pub struct LevelReport {
    /// Tasks issuing commands.
    pub concurrency: usize,
    /// Commands finished (any outcome).
    pub commands: usize,
    /// Commands finished per second.
    pub commands_per_sec: f64,
    /// Latency percentiles of a whole `execute`, retries included, in ms.
    pub p50_ms: f64,
    /// 95th percentile, ms.
    pub p95_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Slowest command, ms.
    pub max_ms: f64,
    /// Read-decide-append cycles per successful command.
    pub attempts_per_command: f64,
    /// Conflicts (and transient failures) retried.
    pub conflicts: u64,
    /// Commands refused by a business rule.
    pub rejections: usize,
    /// Commands that exhausted their retries.
    pub gave_up: usize,
    /// Commands that failed with a store error.
    pub store_errors: usize,
    /// Share of commands that started from a kept state.
    pub cache_hit_rate: f64,
    /// Store calls (reads, snapshot look-ups, appends) per command: round
    /// trips on PostgreSQL.
    pub store_calls_per_command: f64,
}

/// A whole run.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    /// Which store.
    pub store: String,
    /// The settings.
    pub config: LoadConfig,
    /// Accounts in the workload.
    pub accounts: usize,
    /// Events written by setup.
    pub setup_events: usize,
    /// Setup time, in seconds.
    pub setup_secs: f64,
    /// One report per concurrency level.
    pub levels: Vec<LevelReport>,
    /// The bank's invariants after all levels.
    pub checks: Checks,
}

fn policy() -> RetryPolicy {
    RetryPolicy::default()
        .with_max_attempts(std::num::NonZeroU32::new(64).unwrap_or(std::num::NonZeroU32::MIN))
        .with_base_delay(Duration::from_micros(500))
        .with_max_delay(Duration::from_millis(10))
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)] as f64 / 1000.0
}

/// Sets up the workload's accounts, runs every concurrency level for the
/// configured time, then checks the bank's invariants.
///
/// # Errors
/// The store's error if setup or the final read fails.
pub async fn run<S>(
    store: S,
    store_name: &str,
    config: LoadConfig,
    progress: ProgressBar,
) -> Result<LoadReport, StoreError>
where
    S: EventStore + Clone + 'static,
{
    let started = Instant::now();
    let run_tag = format!(
        "{:08x}",
        fastrand::Rng::with_seed(config.seed ^ u64::from(std::process::id())).u32(..)
    );
    let setup = workloads::setup(&store, config.workload, &run_tag).await?;
    let setup_secs = started.elapsed().as_secs_f64();
    let accounts = Arc::new(setup.accounts);

    progress.set_length(config.duration.as_secs().max(1) * config.concurrency.len() as u64);
    let mut total = Tally::new(accounts.len());
    let mut levels = Vec::new();
    for (l, &concurrency) in config.concurrency.iter().enumerate() {
        let deadline = Instant::now() + config.duration;
        // The cache of the store's default executor, which `execute` uses.
        let cache_before = eventcore::Executor::new(&store).cache().stats();
        let mut tasks = Vec::new();
        for w in 0..concurrency.max(1) {
            let (store, accounts) = (store.clone(), accounts.clone());
            let workload = config.workload;
            let command_ids = config.command_ids;
            let mut rng = fastrand::Rng::with_seed(config.seed.wrapping_add((l * 1000 + w) as u64));
            tasks.push(tokio::spawn(async move {
                let policy = policy();
                let mut tally = Tally::new(accounts.len());
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let t = Instant::now();
                    let mut options = eventcore::ExecuteOptions::from(&policy);
                    if command_ids {
                        options = options.with_command_id(eventcore::CommandId::generate());
                    }
                    let (result, effect) = workload
                        .one_command(&store, &accounts, &mut rng, options)
                        .await;
                    latencies.push(u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX));
                    tally.record(&result, &effect);
                }
                (tally, latencies)
            }));
        }
        let ticker = {
            let progress = progress.clone();
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    progress.inc(1);
                }
            })
        };
        let level_start = Instant::now();
        let mut level = Tally::new(accounts.len());
        let mut latencies = Vec::new();
        for task in tasks {
            match task.await {
                Ok((t, l)) => {
                    level.merge(&t);
                    latencies.extend(l);
                }
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            }
        }
        let elapsed = level_start.elapsed().as_secs_f64().max(1e-9);
        ticker.abort();
        let cache = eventcore::Executor::new(&store)
            .cache()
            .stats()
            .since(&cache_before);
        latencies.sort_unstable();
        levels.push(LevelReport {
            concurrency,
            commands: latencies.len(),
            commands_per_sec: latencies.len() as f64 / elapsed,
            p50_ms: percentile(&latencies, 50.0),
            p95_ms: percentile(&latencies, 95.0),
            p99_ms: percentile(&latencies, 99.0),
            max_ms: latencies.last().copied().unwrap_or(0) as f64 / 1000.0,
            attempts_per_command: level.attempts as f64 / (level.successes.max(1)) as f64,
            conflicts: level.retries(),
            rejections: level.rejections,
            gave_up: level.gave_up,
            store_errors: level.store_errors,
            cache_hit_rate: cache.hit_rate(),
            store_calls_per_command: cache.store_calls() as f64 / latencies.len().max(1) as f64,
        });
        total.merge(&level);
    }
    progress.finish_and_clear();

    let (checks, _) = verify(&store, &accounts, &setup.initial, setup.events, &total).await?;
    Ok(LoadReport {
        store: store_name.to_owned(),
        accounts: accounts.len(),
        setup_events: setup.events,
        setup_secs,
        levels,
        checks,
        config,
    })
}

/// Accounts a workload uses, as set up.
#[derive(Debug)]
struct Setup {
    accounts: Vec<StreamId>,
    initial: Vec<i128>,
    events: usize,
}
