//! What the example binaries share: choosing the store, the progress bar,
//! and reporting an error with its causes.

use std::{error::Error, process::ExitCode};

use eventcore_postgres::{PostgresConfig, PostgresError, PostgresEventStore};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Command-line flags that pick SQLite or PostgreSQL instead of the
/// in-memory store.
#[derive(Debug, Clone, clap::Args)]
pub struct StoreArgs {
    /// Run on PostgreSQL at this URL (migrates first) instead of in memory.
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// Run on PostgreSQL at $DATABASE_URL.
    #[arg(long, conflicts_with = "database_url")]
    pub postgres: bool,
    /// Run on the SQLite file at this path (created if missing).
    #[arg(long, value_name = "PATH", conflicts_with_all = ["database_url", "postgres"])]
    pub sqlite: Option<std::path::PathBuf>,
}

impl StoreArgs {
    /// The SQLite file to run on, if one was named.
    pub fn sqlite_path(&self) -> Option<&std::path::Path> {
        self.sqlite.as_deref()
    }

    /// The PostgreSQL URL to use, or `None` for the in-memory store.
    ///
    /// # Errors
    /// When `--postgres` is given and `DATABASE_URL` is not set.
    pub fn url(&self) -> Result<Option<String>, &'static str> {
        match (&self.database_url, self.postgres) {
            (Some(url), _) => Ok(Some(url.clone())),
            (None, true) => match std::env::var("DATABASE_URL") {
                Ok(url) if !url.trim().is_empty() => Ok(Some(url)),
                _ => Err("--postgres needs DATABASE_URL to be set"),
            },
            (None, false) => Ok(None),
        }
    }
}

/// Connects with `config` and migrates.
///
/// # Errors
/// The store's connection or migration error.
pub async fn connect(
    url: &str,
    config: PostgresConfig,
) -> Result<PostgresEventStore, PostgresError> {
    let store = PostgresEventStore::connect_with(url, config).await?;
    store.migrate().await?;
    Ok(store)
}

/// A progress bar on stderr with `template`, or a hidden one.
pub fn progress_bar(hidden: bool, template: &str) -> ProgressBar {
    if hidden {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// Prints `error` and its chain of causes to stderr; exit code 2.
pub fn report(error: &dyn Error) -> ExitCode {
    eprintln!("error: {error}");
    let mut source = error.source();
    while let Some(cause) = source {
        eprintln!("  caused by: {cause}");
        source = cause.source();
    }
    ExitCode::from(2)
}
