//! The load tool: runs a bank workload for a fixed time at one or more
//! concurrency levels on the in-memory store or PostgreSQL, and reports
//! commands/s, latency percentiles, attempts and conflicts, then checks the
//! bank's invariants. Exits non-zero if a check fails.

use std::{process::ExitCode, time::Duration};

use clap::Parser;
use eventcore_examples::{
    cli::{self, StoreArgs},
    load::{self, LoadConfig, LoadReport, Workload, log},
};
use eventcore_memory::{InMemoryCheckpointStore, InMemoryEventStore};
use eventcore_postgres::{PostgresConfig, SchemaName};
use eventcore_sqlite::{SqliteConfig, SqliteEventStore};

#[derive(Debug, Parser)]
#[command(about = "Load generator for eventcore: bank workloads at fixed concurrency")]
struct Args {
    /// The workload to run.
    #[arg(long, value_enum, default_value_t = Workload::Transfer)]
    workload: Workload,
    /// Concurrency levels, comma-separated, run in turn on the same data.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
    concurrency: Vec<usize>,
    /// Seconds per level.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Seed for accounts and amounts.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[command(flatten)]
    store: StoreArgs,
    /// Measure the read side instead of commands: `catch-up` (a subscription
    /// handling a log of --events events) or `live` (commit-to-handler
    /// latency at --rate writes/s for --duration seconds).
    #[arg(long, value_enum)]
    read_side: Option<ReadSide>,
    /// Events written before a catch-up measurement.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Writes per second during a live measurement.
    #[arg(long, default_value_t = 1_000)]
    rate: u64,
    /// PostgreSQL schema for the events (created if missing).
    #[arg(long, default_value = "eventcore_load")]
    schema: String,
    /// Print the report as one JSON object on stdout.
    #[arg(long)]
    json: bool,
    /// Give every command a command id of its own (idempotent commands).
    #[arg(long)]
    command_ids: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ReadSide {
    CatchUp,
    Live,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(code) => code,
        Err(e) => cli::report(e.as_ref()),
    }
}

async fn run(args: Args) -> Result<ExitCode, Box<dyn std::error::Error>> {
    if args.concurrency.is_empty() || args.concurrency.contains(&0) {
        return Err("--concurrency needs levels of at least 1".into());
    }
    let config = LoadConfig {
        workload: args.workload,
        concurrency: args.concurrency.clone(),
        duration: Duration::from_secs(args.duration.max(1)),
        seed: args.seed,
        command_ids: args.command_ids,
    };
    let progress = cli::progress_bar(args.json, "{msg} {bar:40} {pos}/{len} s");
    progress.set_message(format!("{:?}", args.workload));
    let url = args.store.url()?;
    if let Some(read_side) = args.read_side {
        return read_side_run(&args, read_side, url).await;
    }
    let report = match (url, args.store.sqlite_path()) {
        (_, Some(path)) => {
            let store = SqliteEventStore::open(path, SqliteConfig::default()).await?;
            load::run(store, "sqlite", config, progress).await?
        }
        (Some(url), None) => {
            let max = args.concurrency.iter().copied().max().unwrap_or(1);
            // One connection per task, and room for the NOTIFY sender and
            // the snapshot writer, which borrow from the same budget.
            let pool = u32::try_from(max)
                .unwrap_or(u32::MAX)
                .saturating_add(2)
                .clamp(1, 130);
            let schema = SchemaName::try_new(args.schema.clone())
                .map_err(|e| format!("--schema {:?}: {e}", args.schema))?;
            let pg = PostgresConfig::default()
                .max_connections(pool)
                .schema(schema);
            let store = cli::connect(&url, pg).await?;
            load::run(store, "postgres", config, progress).await?
        }
        (None, None) => load::run(InMemoryEventStore::new(), "memory", config, progress).await?,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_report(&report);
    }
    Ok(
        if report.checks.all_passed() && report.levels.iter().all(|l| l.store_errors == 0) {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        },
    )
}

fn print_report(r: &LoadReport) {
    println!(
        "{:?} on {}: {} accounts, {} setup events in {:.1} s",
        r.config.workload, r.store, r.accounts, r.setup_events, r.setup_secs
    );
    println!(
        "conc   cmd/s   p50 ms  p95 ms  p99 ms  max ms  attempts  conflicts  rejected  gave up  errors  hits  calls/cmd"
    );
    for l in &r.levels {
        println!(
            "{:>4} {:>7.0} {:>8.2} {:>7.2} {:>7.2} {:>7.1} {:>9.2} {:>10} {:>9} {:>8} {:>7} {:>4.0}% {:>10.2}",
            l.concurrency,
            l.commands_per_sec,
            l.p50_ms,
            l.p95_ms,
            l.p99_ms,
            l.max_ms,
            l.attempts_per_command,
            l.conflicts,
            l.rejections,
            l.gave_up,
            l.store_errors,
            l.cache_hit_rate * 100.0,
            l.store_calls_per_command
        );
    }
    let c = &r.checks;
    println!(
        "checks: money conserved {}, balances match {}, no overdraft {}, versions gap-free {}, events accounted {}",
        c.money_conserved,
        c.balances_match,
        c.no_overdraft,
        c.versions_gap_free,
        c.events_accounted
    );
}

async fn read_side_run(
    args: &Args,
    read_side: ReadSide,
    url: Option<String>,
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let duration = Duration::from_secs(args.duration.max(1));
    let report = match (url, args.store.sqlite_path()) {
        (_, Some(path)) => {
            let store = SqliteEventStore::open(path, SqliteConfig::default()).await?;
            match read_side {
                ReadSide::CatchUp => {
                    log::catch_up(store.clone(), store, "sqlite", args.events).await?
                }
                ReadSide::Live => {
                    log::live(store.clone(), store, "sqlite", args.rate, duration).await?
                }
            }
        }
        (Some(url), None) => {
            let schema = SchemaName::try_new(args.schema.clone())
                .map_err(|e| format!("--schema {:?}: {e}", args.schema))?;
            let store = cli::connect(
                &url,
                PostgresConfig::default().max_connections(8).schema(schema),
            )
            .await?;
            match read_side {
                ReadSide::CatchUp => {
                    log::catch_up(store.clone(), store, "postgres", args.events).await?
                }
                ReadSide::Live => {
                    log::live(store.clone(), store, "postgres", args.rate, duration).await?
                }
            }
        }
        (None, None) => {
            let (store, checkpoints) = (InMemoryEventStore::new(), InMemoryCheckpointStore::new());
            match read_side {
                ReadSide::CatchUp => {
                    log::catch_up(store, checkpoints, "memory", args.events).await?
                }
                ReadSide::Live => {
                    log::live(store, checkpoints, "memory", args.rate, duration).await?
                }
            }
        }
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else if report.workload == "catch-up" {
        println!(
            "catch-up on {}: {} events written in {:.1} s; subscription handled {} at {:.0} events/s",
            report.store, report.events, report.write_secs, report.handled, report.events_per_sec
        );
    } else {
        println!(
            "live on {}: {} writes in {:.1} s, {} handled; commit to handler p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, max {:.1} ms",
            report.store,
            report.events,
            report.write_secs,
            report.handled,
            report.p50_ms,
            report.p95_ms,
            report.p99_ms,
            report.max_ms
        );
    }
    Ok(if report.handled == report.events {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
