//! What holds the global log back, for operators and for readers that
//! find a page [held back](eventcore::LogPage::held_back).

use std::time::{Duration, SystemTime};

use sqlx::Row;

use eventcore::StoreError;

use crate::{PostgresEventStore, error::store_error, rows::from_micros};

const LOG_HOLDERS: &str = "SELECT * FROM eventcore_log_holders()";

/// The global log's state as readers see it now
/// ([`PostgresEventStore::log_status`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LogStatus {
    /// The appends still running that began before events already
    /// committed: readers see none of those events until these end. Oldest
    /// first. Empty when nothing holds the log back.
    pub holders: Vec<LogHolder>,
    /// How long the first event held back has waited since it was written
    /// (`None` when none is held back): the log's lag behind its writers.
    pub lag: Option<Duration>,
}

/// One append that holds the global log back.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LogHolder {
    /// The server process of its session (`pg_stat_activity.pid`, what
    /// `pg_terminate_backend` takes).
    pub pid: i32,
    /// Its commit key: its events will show at positions with this commit
    /// part, before every event it holds back.
    pub commit: u64,
    /// When its transaction began, if the server shows it.
    pub transaction_started: Option<SystemTime>,
    /// Its session's state (`active`, `idle in transaction`, ...).
    pub state: Option<String>,
    /// Its session's application name.
    pub application_name: Option<String>,
}

impl PostgresEventStore {
    /// What holds the global log back now, and its lag: one query of the
    /// server's lock table and sessions. An append holds back events that
    /// committed after it began until it ends (so that no reader skips its
    /// events); nothing else does: a transaction that appends no events,
    /// in this database or another, never delays readers.
    ///
    /// # Errors
    /// A [`StoreError`] if the query fails.
    pub async fn log_status(&self) -> Result<LogStatus, StoreError> {
        let rows = self
            .conns()
            .fetch_all("log_status", sqlx::query(LOG_HOLDERS))
            .await?;
        decode(&rows).map_err(|e| store_error("log_status", e))
    }
}

fn decode(rows: &[sqlx::postgres::PgRow]) -> Result<LogStatus, sqlx::Error> {
    {
        let mut status = LogStatus {
            holders: Vec::with_capacity(rows.len()),
            lag: None,
        };
        for row in rows {
            let commit: &str = row.try_get("out_commit")?;
            status.holders.push(LogHolder {
                pid: row.try_get("out_pid")?,
                commit: commit.parse().unwrap_or(0),
                transaction_started: row
                    .try_get::<Option<i64>, _>("out_transaction_started")?
                    .map(from_micros),
                state: row.try_get("out_state")?,
                application_name: row.try_get("out_application")?,
            });
            if status.lag.is_none()
                && let Some(since) = row.try_get::<Option<i64>, _>("out_waiting_since")?
            {
                status.lag = Some(
                    SystemTime::now()
                        .duration_since(from_micros(since))
                        .unwrap_or_default(),
                );
            }
        }
        Ok(status)
    }
}
