//! The bank demo: a concurrent workload of transfers, deposits and
//! withdrawals on the in-memory store (default) or PostgreSQL, followed by
//! invariant checks. Exits non-zero if any check fails.

use std::{process::ExitCode, time::Duration};

use clap::Parser;
use eventcore_examples::{
    bank::workload::{self, Summary, WorkloadConfig},
    cli::{self, StoreArgs},
};
use eventcore_memory::{InMemoryCheckpointStore, InMemoryEventStore};
use eventcore_postgres::PostgresConfig;
use eventcore_sqlite::{SqliteConfig, SqliteEventStore};

#[derive(Debug, Parser)]
#[command(about = "Concurrent bank transfers on eventcore, with invariant checks")]
struct Args {
    /// Number of accounts.
    #[arg(long, default_value_t = 100)]
    accounts: usize,
    /// Number of transfers.
    #[arg(long, default_value_t = 10_000)]
    transfers: usize,
    /// Number of deposits and of withdrawals mixed in (default: transfers / 10 each).
    #[arg(long)]
    deposits: Option<usize>,
    /// Concurrent workers.
    #[arg(long, default_value_t = 8)]
    workers: usize,
    /// Seed for the choice of commands.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Starting balance of each account, in cents.
    #[arg(long, default_value_t = 10_000)]
    initial_balance: u64,
    #[command(flatten)]
    store: StoreArgs,
    /// Print the summary as one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(code) => code,
        Err(e) => cli::report(e.as_ref()),
    }
}

async fn run(args: Args) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let extra = args.deposits.unwrap_or(args.transfers / 10);
    let config = WorkloadConfig {
        accounts: args.accounts,
        transfers: args.transfers,
        deposits: extra,
        withdrawals: extra,
        workers: args.workers,
        seed: args.seed,
        initial_balance: args.initial_balance,
    };
    let progress = cli::progress_bar(
        args.json,
        "{bar:40} {pos}/{len} commands  {per_sec}  eta {eta}",
    );
    progress.enable_steady_tick(Duration::from_millis(200));
    let url = args.store.url()?;
    let summary = match (url, args.store.sqlite_path()) {
        (_, Some(path)) => {
            let store = SqliteEventStore::open(path, SqliteConfig::default()).await?;
            workload::run(store.clone(), store, "sqlite", config, progress).await?
        }
        (Some(url), None) => {
            // A connection per worker, one for the read model's lease and
            // one for the LISTEN session (see PostgresConfig::max_connections).
            let pool = u32::try_from(args.workers)
                .unwrap_or(u32::MAX)
                .saturating_add(2)
                .clamp(3, 66);
            let store = cli::connect(&url, PostgresConfig::default().max_connections(pool)).await?;
            workload::run(store.clone(), store, "postgres", config, progress).await?
        }
        (None, None) => {
            let checkpoints = InMemoryCheckpointStore::new();
            workload::run(
                InMemoryEventStore::new(),
                checkpoints,
                "memory",
                config,
                progress,
            )
            .await?
        }
    };

    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        print_summary(&summary);
    }
    Ok(
        if summary.checks.all_passed()
            && summary.store_errors == 0
            && summary.read_model_matches
            && summary.repeats_applied_once
        {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        },
    )
}

fn print_summary(s: &Summary) {
    let mark = |ok: bool| if ok { "ok  " } else { "FAIL" };
    println!(
        "eventcore bank demo on the {} store (run {})",
        s.store, s.run
    );
    println!(
        "  {} accounts, {} commands on {} workers, seed {}",
        s.config.accounts, s.commands, s.config.workers, s.config.seed
    );
    println!(
        "  {:.0} commands/s ({:.2} s)",
        s.commands_per_sec, s.elapsed_secs
    );
    println!(
        "  attempts {}, conflicts retried {}, gave up {}",
        s.attempts, s.retries, s.gave_up
    );
    println!(
        "  business rejections {}, store errors {}",
        s.rejections, s.store_errors
    );
    println!("checks:");
    println!(
        "  [{}] total money is conserved",
        mark(s.checks.money_conserved)
    );
    println!(
        "  [{}] each balance equals the fold of its own events",
        mark(s.checks.balances_match)
    );
    println!(
        "  [{}] no account is overdrawn",
        mark(s.checks.no_overdraft)
    );
    println!(
        "  [{}] stream versions are gap-free",
        mark(s.checks.versions_gap_free)
    );
    println!(
        "  [{}] the log holds exactly the successful commands' events",
        mark(s.checks.events_accounted)
    );
    println!("  [{}] no store errors", mark(s.store_errors == 0));
    println!(
        "  [{}] the read model ({} events, via a subscription) equals the write side",
        mark(s.read_model_matches),
        s.read_model_events
    );
    println!(
        "  [{}] {} requests sent again with their command ids were not applied again",
        mark(s.repeats_applied_once),
        s.repeated_requests
    );
    if !s.history.is_empty() {
        println!(
            "history of the first account (last {} events):",
            s.history.len()
        );
        for e in &s.history {
            println!(
                "  v{} at {}.{:06} {} {}\n      correlation {}, caused by {}, metadata {}",
                e.version,
                e.recorded_at_micros / 1_000_000,
                e.recorded_at_micros % 1_000_000,
                e.event_type,
                e.payload,
                e.correlation_id.as_deref().unwrap_or("-"),
                e.causation_id.as_deref().unwrap_or("-"),
                e.values,
            );
        }
    }
}
