//! The bank demo: a concurrent workload of transfers, deposits and
//! withdrawals on the in-memory store (default) or PostgreSQL, followed by
//! invariant checks. Exits non-zero if any check fails.

use std::{process::ExitCode, time::Duration};

use clap::Parser;
use eventcore_examples::bank::workload::{self, Summary, WorkloadConfig};
use eventcore_memory::InMemoryEventStore;
use eventcore_postgres::{PostgresConfig, PostgresEventStore};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

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
    /// Run on PostgreSQL at this URL (migrates first) instead of in memory.
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// Run on PostgreSQL at $DATABASE_URL.
    #[arg(long, conflicts_with = "database_url")]
    postgres: bool,
    /// Print the summary as one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            let mut source = std::error::Error::source(e.as_ref());
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            ExitCode::from(2)
        }
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
    let progress = if args.json {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} commands  {per_sec}  eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    };

    let url = match (args.database_url, args.postgres) {
        (Some(url), _) => Some(url),
        (None, true) => Some(
            std::env::var("DATABASE_URL").map_err(|_| "--postgres needs DATABASE_URL to be set")?,
        ),
        (None, false) => None,
    };
    let summary = match url {
        Some(url) => {
            let pool = u32::try_from(args.workers).unwrap_or(u32::MAX).clamp(1, 64);
            let store = PostgresEventStore::connect_with(
                &url,
                PostgresConfig::default().max_connections(pool),
            )
            .await?;
            store.migrate().await?;
            workload::run(store, "postgres", config, progress).await?
        }
        None => workload::run(InMemoryEventStore::new(), "memory", config, progress).await?,
    };

    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        print_summary(&summary);
    }
    Ok(
        if summary.checks.all_passed() && summary.store_errors == 0 {
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
}
