//! The load tool: runs a bank workload for a fixed time at one or more
//! concurrency levels on the in-memory store or PostgreSQL, and reports
//! commands/s, latency percentiles, attempts and conflicts, then checks the
//! bank's invariants. Exits non-zero if a check fails.

use std::{process::ExitCode, time::Duration};

use clap::Parser;
use eventcore_examples::{
    cli::{self, StoreArgs},
    load::{self, LoadConfig, LoadReport, Workload},
};
use eventcore_memory::InMemoryEventStore;
use eventcore_postgres::{PostgresConfig, SchemaName};

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
    /// PostgreSQL schema for the events (created if missing).
    #[arg(long, default_value = "eventcore_load")]
    schema: String,
    /// Print the report as one JSON object on stdout.
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
    if args.concurrency.is_empty() || args.concurrency.contains(&0) {
        return Err("--concurrency needs levels of at least 1".into());
    }
    let config = LoadConfig {
        workload: args.workload,
        concurrency: args.concurrency.clone(),
        duration: Duration::from_secs(args.duration.max(1)),
        seed: args.seed,
    };
    let progress = cli::progress_bar(args.json, "{msg} {bar:40} {pos}/{len} s");
    progress.set_message(format!("{:?}", args.workload));
    let url = args.store.url()?;
    let report = match url {
        Some(url) => {
            let max = args.concurrency.iter().copied().max().unwrap_or(1);
            let pool = u32::try_from(max).unwrap_or(u32::MAX).clamp(1, 128);
            let schema = SchemaName::try_new(args.schema.clone())
                .map_err(|e| format!("--schema {:?}: {e}", args.schema))?;
            let pg = PostgresConfig::default()
                .max_connections(pool)
                .schema(schema);
            let store = cli::connect(&url, pg).await?;
            load::run(store, "postgres", config, progress).await?
        }
        None => load::run(InMemoryEventStore::new(), "memory", config, progress).await?,
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
        "conc   cmd/s   p50 ms  p95 ms  p99 ms  max ms  attempts  conflicts  rejected  gave up  errors"
    );
    for l in &r.levels {
        println!(
            "{:>4} {:>7.0} {:>8.2} {:>7.2} {:>7.2} {:>7.1} {:>9.2} {:>10} {:>9} {:>8} {:>7}",
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
            l.store_errors
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
