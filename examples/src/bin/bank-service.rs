//! The bank as an HTTP service: `cargo run --release -p eventcore-examples
//! --bin bank-service`. In memory unless `--database-url` or `DATABASE_URL`
//! names a PostgreSQL database (migrated at start). Logs one line per
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
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(about = "The eventcore bank as an HTTP service")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// PostgreSQL URL (default: $DATABASE_URL; in memory when neither is set).
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
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
        .filter(|u| !u.trim().is_empty());
    let backend = match &url {
        Some(url) => Backend::Postgres(cli::connect(url, PostgresConfig::default()).await?),
        None => Backend::Memory(InMemoryEventStore::new(), InMemoryCheckpointStore::new()),
    };
    let store = if url.is_some() { "postgres" } else { "memory" };
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let running = service::start(backend, listener, service::shutdown_signal()).await?;
    tracing::info!(target: "bank_service", addr = %running.addr, store, "listening");
    running.finished().await?;
    Ok(())
}
