//! The bank as an HTTP service: `cargo run --release -p eventcore-examples
//! --bin bank-service`. Keeps its accounts in an SQLite file (`--data`,
//! `bank.sqlite` in the current folder by default, created at first start);
//! in memory with `--memory`; on PostgreSQL when `--database-url` or
//! `DATABASE_URL` names a database (migrated at start). Logs one line per
//! request; `RUST_LOG` changes what is logged (`RUST_LOG=info` adds
//! eventcore's spans). Stops on Ctrl-C or SIGTERM, finishing requests in
//! flight.

use std::{net::SocketAddr, process::ExitCode};

use clap::Parser;
use eventcore_examples::{
    cli,
    service::{self, Backend},
};
use eventcore_memory::{InMemoryCheckpointStore, InMemoryEventStore};
use eventcore_postgres::PostgresConfig;
use eventcore_sqlite::{SqliteConfig, SqliteEventStore};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(about = "The eventcore bank as an HTTP service")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// PostgreSQL URL (default: $DATABASE_URL; the SQLite file when
    /// neither is set).
    #[arg(long, value_name = "URL", conflicts_with = "memory")]
    database_url: Option<String>,
    /// The SQLite file to keep the bank in (created if missing).
    #[arg(long, value_name = "PATH", default_value = "bank.sqlite")]
    data: std::path::PathBuf,
    /// Keep everything in memory: gone when the service stops.
    #[arg(long)]
    memory: bool,
    /// POST a statement for every large withdrawal to this endpoint
    /// (`http://host:port/path`), once per withdrawal through its
    /// `Idempotency-Key`.
    #[arg(long, value_name = "URL")]
    statements_url: Option<service::Endpoint>,
    /// The smallest withdrawal, in cents, that gets a statement.
    #[arg(long, value_name = "CENTS", default_value_t = 100_000)]
    statement_threshold_cents: u64,
    /// Relay every event to NATS JetStream at this URL (stream BANK,
    /// subjects bank.{account}.{event type}).
    #[arg(long, value_name = "URL")]
    nats_url: Option<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("bank_service=info,eventcore=warn,warn"));
    tracing_subscriber::fmt().with_env_filter(filter).init();
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => cli::report(e.as_ref()),
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let url = args
        .database_url
        .or_else(|| std::env::var("DATABASE_URL").ok())
        .filter(|u| !u.trim().is_empty() && !args.memory);
    let (backend, store, data) = match &url {
        _ if args.memory => (
            Backend::Memory(InMemoryEventStore::new(), InMemoryCheckpointStore::new()),
            "memory",
            None,
        ),
        Some(url) => (
            Backend::Postgres(cli::connect(url, PostgresConfig::default()).await?),
            "postgres",
            None,
        ),
        None => {
            let store = SqliteEventStore::open(&args.data, SqliteConfig::default()).await?;
            let path = std::path::absolute(store.path()).unwrap_or_else(|_| args.data.clone());
            (Backend::Sqlite(store), "sqlite", Some(path))
        }
    };
    let mut outputs = service::Outputs::default();
    if let Some(endpoint) = args.statements_url {
        outputs.statements = Some(service::StatementsTo {
            endpoint,
            threshold_cents: args.statement_threshold_cents,
        });
    }
    if let Some(url) = &args.nats_url {
        let client = async_nats::connect(url).await?;
        let config = eventcore_nats::JetStreamConfig::new(
            service::JETSTREAM_STREAM,
            service::JETSTREAM_PREFIX,
        )?;
        outputs.jetstream = Some(eventcore_nats::JetStreamSink::new(client, config).await?);
    }
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let running = service::start_with_outputs(
        backend,
        listener,
        service::shutdown_signal(),
        service::Limits::default(),
        outputs,
    )
    .await?;
    match data {
        Some(path) => tracing::info!(
            target: "bank_service",
            addr = %running.addr,
            store,
            data = %path.display(),
            "listening"
        ),
        None => tracing::info!(target: "bank_service", addr = %running.addr, store, "listening"),
    }
    running.finished().await?;
    Ok(())
}
