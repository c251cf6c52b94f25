//! The service's read model: every account with its owner, balance and
//! version, kept by a subscription to the bank's events. In memory for the
//! in-memory store; in a table (`bank_accounts`) for PostgreSQL and
//! SQLite, written in the same transaction as the subscription's
//! checkpoint ([`ExactlyOnce`]), so a restart resumes where the table is.

use std::{
    collections::BTreeMap,
    num::NonZeroU32,
    sync::{Arc, Mutex},
    time::Duration,
};

use eventcore::{
    BoxError, EventContext, LogQuery, Position, RetryPolicy, SubscriptionConfig,
    SubscriptionHandle, SubscriptionName, subscribe,
};
use eventcore_memory::{InMemoryCheckpointStore, InMemoryEventStore};
use eventcore_postgres::{ExactlyOnce, PostgresEventStore, ProjectionHandler};
use serde::Serialize;
use sqlx::{PgConnection, PgPool, Row, postgres::PgPoolOptions};

use crate::bank::domain::{Account, BankEvent};

/// The subscription that keeps the read model.
pub const SUBSCRIPTION: &str = "bank-service-accounts";

/// The bank's stored event types: the read model's filter.
pub const EVENT_TYPES: [&str; 5] = [
    "AccountOpened",
    "MoneyDeposited",
    "MoneyWithdrawn",
    "TransferSent",
    "TransferReceived",
];

/// One account as the read model has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccountRow {
    /// The account id.
    pub id: String,
    /// Who holds it.
    pub owner: String,
    /// Its balance, in cents.
    pub balance: i128,
    /// Its stream's version after the last event applied.
    pub version: u64,
}

/// What an event changes in its account's row: the owner an opening names,
/// and the change in balance in cents, by the bank's own fold
/// ([`Account::apply`]).
fn change(event: &BankEvent) -> (Option<&str>, i128) {
    let owner = match event {
        BankEvent::Opened { owner, .. } => Some(owner.as_str()),
        _ => None,
    };
    let from_zero = Account {
        open: true,
        balance: 0,
    };
    (owner, from_zero.after(event).balance)
}

/// One page of accounts, by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountsPage {
    /// The accounts, ordered by id.
    pub accounts: Vec<AccountRow>,
    /// Whether accounts follow the last one.
    pub more: bool,
}

/// Where the read model lives.
#[derive(Debug, Clone)]
pub enum Accounts {
    /// In this process.
    Memory(Arc<Mutex<BTreeMap<String, AccountRow>>>),
    /// In the `bank_accounts` table, read through the application's own
    /// small pool.
    Postgres(PgPool),
    /// In the `bank_accounts` table of the store's file, read through a
    /// connection of the application's own.
    Sqlite(Arc<Mutex<rusqlite::Connection>>),
}

impl Accounts {
    /// How far the read model is, from the checkpoint committed with its
    /// rows (whichever instance keeps it); `None` in memory, where only
    /// this process's subscription knows.
    ///
    /// # Errors
    /// The database's.
    pub async fn checkpoint(&self) -> Result<Option<Position>, BoxError> {
        match self {
            Accounts::Memory(_) => Ok(None),
            Accounts::Postgres(pool) => {
                let row: Option<(i64, i64)> = sqlx::query_as(
                    "SELECT commit_id, sequence FROM eventcore_checkpoints WHERE name = $1",
                )
                .bind(SUBSCRIPTION)
                .fetch_optional(pool)
                .await?;
                Ok(row.map(|(c, s)| {
                    Position::new(u64::try_from(c).unwrap_or(0), u64::try_from(s).unwrap_or(0))
                }))
            }
            Accounts::Sqlite(connection) => {
                let connection = connection.lock().unwrap_or_else(|p| p.into_inner());
                let found: Option<i64> = rusqlite::OptionalExtension::optional(
                    connection
                        .prepare_cached(
                            "SELECT sequence FROM eventcore_checkpoints WHERE name = ?1",
                        )?
                        .query_row([SUBSCRIPTION], |row| row.get(0)),
                )?;
                Ok(found.map(|s| Position::new(0, u64::try_from(s).unwrap_or(0))))
            }
        }
    }

    /// The accounts after `after` (by id), `limit` at most.
    ///
    /// # Errors
    /// The database's, on PostgreSQL.
    pub async fn page(&self, after: Option<&str>, limit: usize) -> Result<AccountsPage, BoxError> {
        let mut accounts: Vec<AccountRow> = match self {
            Accounts::Memory(rows) => {
                let rows = rows.lock().unwrap_or_else(|p| p.into_inner());
                let range = match after {
                    Some(after) => rows.range::<str, _>((
                        std::ops::Bound::Excluded(after),
                        std::ops::Bound::Unbounded,
                    )),
                    None => rows.range::<str, _>(..),
                };
                range.take(limit + 1).map(|(_, row)| row.clone()).collect()
            }
            Accounts::Postgres(pool) => {
                let rows = sqlx::query(
                    "SELECT id, owner, balance, version FROM bank_accounts
                     WHERE $1::text IS NULL OR id > $1 ORDER BY id LIMIT $2",
                )
                .bind(after)
                .bind(i64::try_from(limit + 1)?)
                .fetch_all(pool)
                .await?;
                rows.iter().map(row_from_pg).collect::<Result<_, _>>()?
            }
            Accounts::Sqlite(connection) => {
                let connection = connection.lock().unwrap_or_else(|p| p.into_inner());
                let mut query = connection.prepare_cached(
                    "SELECT id, owner, balance, version FROM bank_accounts
                     WHERE ?1 IS NULL OR id > ?1 ORDER BY id LIMIT ?2",
                )?;
                let rows = query.query_map(
                    rusqlite::params![after, i64::try_from(limit + 1)?],
                    |row| {
                        Ok((
                            row.get::<_, String>(0)?,
                            row.get::<_, String>(1)?,
                            row.get::<_, i64>(2)?,
                            row.get::<_, i64>(3)?,
                        ))
                    },
                )?;
                let mut accounts = Vec::new();
                for row in rows {
                    let (id, owner, balance, version) = row?;
                    accounts.push(AccountRow {
                        id,
                        owner,
                        balance: i128::from(balance),
                        version: u64::try_from(version)?,
                    });
                }
                accounts
            }
        };
        let more = accounts.len() > limit;
        accounts.truncate(limit);
        Ok(AccountsPage { accounts, more })
    }
}

fn row_from_pg(row: &sqlx::postgres::PgRow) -> Result<AccountRow, BoxError> {
    Ok(AccountRow {
        id: row.try_get("id")?,
        owner: row.try_get("owner")?,
        balance: i128::from(row.try_get::<i64, _>("balance")?),
        version: u64::try_from(row.try_get::<i64, _>("version")?)?,
    })
}

/// How the read model's subscription reads and retries. A handler that
/// fails is retried for about five minutes (waits capped at 1 s), long
/// enough to ride out the database being unreachable (the PostgreSQL
/// handler writes there); then the subscription stops, and `/health` says
/// so.
fn config() -> SubscriptionConfig {
    let patient = RetryPolicy::default()
        .with_max_attempts(NonZeroU32::new(300).unwrap_or(NonZeroU32::MIN))
        .with_max_delay(Duration::from_secs(1));
    SubscriptionConfig::default()
        .with_filter(LogQuery::from_start(0).with_event_types(EVENT_TYPES))
        .with_poll_interval(Duration::from_millis(50))
        .with_retry(patient)
}

fn name() -> SubscriptionName {
    SubscriptionName::try_new(SUBSCRIPTION).unwrap_or_else(|_| unreachable!("a valid name"))
}

/// Applies events to the in-memory read model, with the move of the
/// checkpoint ([`eventcore_memory::ExactlyOnce`]).
#[derive(Debug, Clone)]
struct MemoryRows(Arc<Mutex<BTreeMap<String, AccountRow>>>);

impl eventcore_memory::MemoryProjection<BankEvent> for MemoryRows {
    fn apply(&mut self, context: &EventContext, event: &BankEvent) -> Result<(), BoxError> {
        let id = eventcore::Event::stream_id(event).as_str();
        let (owner, delta) = change(event);
        let mut rows = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let row = rows.entry(id.to_owned()).or_insert_with(|| AccountRow {
            id: id.to_owned(),
            owner: String::new(),
            balance: 0,
            version: 0,
        });
        if let Some(owner) = owner {
            owner.clone_into(&mut row.owner);
        }
        row.balance += delta;
        row.version = context.recorded().version().get();
        Ok(())
    }
}

/// Starts the read model of an in-memory store.
pub fn start_memory(
    store: &InMemoryEventStore,
    checkpoints: &InMemoryCheckpointStore,
) -> (Accounts, SubscriptionHandle) {
    let rows = Arc::new(Mutex::new(BTreeMap::new()));
    let handle = subscribe(
        store.clone(),
        checkpoints.clone(),
        name(),
        eventcore_memory::ExactlyOnce::with_checkpoints(
            checkpoints.clone(),
            name(),
            MemoryRows(rows.clone()),
        ),
        config(),
    );
    (Accounts::Memory(rows), handle)
}

/// Applies events to the `bank_accounts` table, in the checkpoint's
/// transaction.
#[derive(Debug, Clone, Copy)]
struct TableProjection;

impl ProjectionHandler<BankEvent> for TableProjection {
    /// One statement per event: the row's change is applied in place.
    async fn handle(
        &mut self,
        tx: &mut PgConnection,
        context: &EventContext,
        event: &BankEvent,
    ) -> Result<(), BoxError> {
        let id = eventcore::Event::stream_id(event).as_str();
        let (owner, delta) = change(event);
        sqlx::query(
            "INSERT INTO bank_accounts (id, owner, balance, version)
             VALUES ($1, coalesce($2, ''), $3, $4)
             ON CONFLICT (id) DO UPDATE
             SET owner = coalesce($2, bank_accounts.owner),
                 balance = bank_accounts.balance + EXCLUDED.balance,
                 version = EXCLUDED.version",
        )
        .bind(id)
        .bind(owner)
        .bind(i64::try_from(delta)?)
        .bind(i64::try_from(context.recorded().version().get())?)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }
}

/// Creates the read model's table if needed and starts its subscription on
/// a PostgreSQL store (checkpoints and leases in the store's tables).
///
/// # Errors
/// The database's, when the table cannot be made.
pub async fn start_postgres(
    store: &PostgresEventStore,
) -> Result<(Accounts, SubscriptionHandle), BoxError> {
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(store.connect_options().clone())
        .await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS bank_accounts (
             id      text   PRIMARY KEY,
             owner   text   NOT NULL,
             balance bigint NOT NULL,
             version bigint NOT NULL
         )",
    )
    .execute(&pool)
    .await?;
    let handler = ExactlyOnce::new(store.clone(), name(), TableProjection);
    let handle = subscribe(store.clone(), store.clone(), name(), handler, config());
    Ok((Accounts::Postgres(pool), handle))
}

/// Applies events to the `bank_accounts` table of an SQLite store's file,
/// in the checkpoint's transaction.
#[derive(Debug, Clone, Copy)]
struct SqliteTable;

impl eventcore_sqlite::SqliteProjection<BankEvent> for SqliteTable {
    fn apply(
        &mut self,
        tx: &rusqlite::Transaction<'_>,
        context: &EventContext,
        event: &BankEvent,
    ) -> Result<(), BoxError> {
        let id = eventcore::Event::stream_id(event).as_str();
        let (owner, delta) = change(event);
        tx.prepare_cached(
            "INSERT INTO bank_accounts (id, owner, balance, version)
             VALUES (?1, coalesce(?2, ''), ?3, ?4)
             ON CONFLICT (id) DO UPDATE
             SET owner = coalesce(?2, bank_accounts.owner),
                 balance = bank_accounts.balance + excluded.balance,
                 version = excluded.version",
        )?
        .execute(rusqlite::params![
            id,
            owner,
            i64::try_from(delta)?,
            i64::try_from(context.recorded().version().get())?
        ])?;
        Ok(())
    }
}

/// Creates the read model's table in the store's file if needed and
/// starts its subscription (checkpoints and leases in the store).
///
/// # Errors
/// SQLite's, when the table cannot be made.
pub fn start_sqlite(
    store: &eventcore_sqlite::SqliteEventStore,
) -> Result<(Accounts, SubscriptionHandle), BoxError> {
    let connection = rusqlite::Connection::open(store.path())?;
    connection.busy_timeout(Duration::from_secs(10))?;
    connection.execute(
        "CREATE TABLE IF NOT EXISTS bank_accounts (
             id      TEXT    PRIMARY KEY,
             owner   TEXT    NOT NULL,
             balance INTEGER NOT NULL,
             version INTEGER NOT NULL
         ) STRICT",
        [],
    )?;
    let handler = eventcore_sqlite::ExactlyOnce::new(store, name(), SqliteTable)?;
    let handle = subscribe(store.clone(), store.clone(), name(), handler, config());
    Ok((Accounts::Sqlite(Arc::new(Mutex::new(connection))), handle))
}
