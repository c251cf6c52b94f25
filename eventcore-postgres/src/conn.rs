//! The connections reads and appends run on.
//!
//! sqlx's pool tests every connection on its way back into the pool with a
//! `Sync` round trip, so every pooled query costs two round trips (and the
//! server a second wake-up). Reads and appends are single statements, so
//! this small pool lends out plain connections instead and takes them back
//! as they are: a connection is kept only if the statement on it ran to
//! completion (with a result or a database error that leaves the session
//! alive); one dropped mid-statement, failed by I/O, or told by the server
//! that its session ends (FATAL or PANIC severity, SQLSTATE class 08,
//! `57P01`–`57P03`: terminated, shut down) is closed. A connection idle for
//! longer than [`IdleLimits::check_after`] is pinged (one round trip) before
//! it is lent again, and one older than [`IdleLimits::max_lifetime`] is
//! closed when it comes back.
//!
//! The pool's size is the store's whole connection budget. Statements
//! borrow a connection for one call; sessions that must outlive single
//! statements (a subscription's lease, the LISTEN session) hold one of the
//! same slots for as long as they live, and may take at most `size - 1` of
//! them, so one slot is always left for statements.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use eventcore::StoreError;
use sqlx::{
    ConnectOptions, Connection, PgConnection, Postgres,
    error::DatabaseError,
    postgres::{PgArguments, PgConnectOptions, PgDatabaseError, PgRow, PgSeverity},
    query::Query,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::store_error;

/// When a pooled connection is checked or retired.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IdleLimits {
    /// Idle longer than this, a connection is pinged before it is lent.
    pub(crate) check_after: Duration,
    /// Older than this, a connection is closed when it comes back.
    pub(crate) max_lifetime: Duration,
}

/// A pooled connection with when it was opened and last returned.
#[derive(Debug)]
struct Pooled {
    conn: PgConnection,
    opened: Instant,
    returned: Instant,
}

#[derive(Debug)]
pub(crate) struct ConnPool {
    options: PgConnectOptions,
    idle: Mutex<Vec<Pooled>>,
    permits: Arc<Semaphore>,
    size: u32,
    /// Slots held by long-lived sessions (at most `size - 1`).
    sessions: Arc<AtomicU32>,
    acquire_timeout: Duration,
    limits: IdleLimits,
}

/// One of the pool's slots, held by a long-lived session; given back on
/// drop.
#[derive(Debug)]
pub(crate) struct SessionSlot {
    sessions: Arc<AtomicU32>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        self.sessions.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Sessions of instances waiting for a subscription's lease, by name.
pub(crate) type Standby = std::collections::HashMap<eventcore::SubscriptionName, Session>;

/// A connection of its own for a long-lived session, counted in the
/// pool's size; closing it (dropping it) gives the slot back.
#[derive(Debug)]
pub(crate) struct Session {
    conn: PgConnection,
    _slot: SessionSlot,
}

impl Session {
    /// The session's connection.
    pub(crate) fn conn(&mut self) -> &mut PgConnection {
        &mut self.conn
    }
}

/// A connection on loan; returned on drop if [`Lease::settle`] found it fit.
pub(crate) struct Lease<'a> {
    conn: Option<PgConnection>,
    opened: Instant,
    pool: &'a ConnPool,
    keep: bool,
    _permit: OwnedSemaphorePermit,
}

/// Gives a session reservation back unless forgotten.
struct Reservation<'a>(&'a AtomicU32);

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Whether a database error means the server ended the session.
pub(crate) fn ends_session(error: &dyn DatabaseError) -> bool {
    let fatal = error
        .try_downcast_ref::<PgDatabaseError>()
        .is_some_and(|pg| matches!(pg.severity(), PgSeverity::Fatal | PgSeverity::Panic));
    fatal
        || error.code().is_some_and(|code| {
            code.starts_with("08") || matches!(code.as_ref(), "57P01" | "57P02" | "57P03")
        })
}

impl ConnPool {
    pub(crate) fn new(
        options: PgConnectOptions,
        size: u32,
        acquire_timeout: Duration,
        limits: IdleLimits,
    ) -> Self {
        let size = size.max(1);
        ConnPool {
            options,
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(size as usize)),
            size,
            sessions: Arc::default(),
            acquire_timeout,
            limits,
        }
    }

    /// The options every connection is opened with.
    pub(crate) fn options(&self) -> &PgConnectOptions {
        &self.options
    }

    /// Takes a slot for a long-lived session: refused (not retryable) when
    /// sessions already hold all but one slot, which stays for statements;
    /// otherwise waits at most the acquire timeout for the slot to be free.
    pub(crate) async fn reserve_session(
        &self,
        operation: &'static str,
    ) -> Result<SessionSlot, StoreError> {
        let cap = self.size - 1;
        let taken = self
            .sessions
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                (held < cap).then_some(held + 1)
            });
        if let Err(held) = taken {
            return Err(StoreError::Backend {
                operation,
                source: format!(
                    "connection budget spent: max_connections is {}, and {held} long-lived \
                     sessions (subscription leases, the LISTEN session) hold all but the one \
                     kept for statements; raise max_connections",
                    self.size
                )
                .into(),
            });
        }
        // From here on, dropping the guard gives the reservation back.
        let reservation = Reservation(&self.sessions);
        let permit = self.permit().await.map_err(|e| store_error(operation, e))?;
        std::mem::forget(reservation);
        // The slot may have been an idle connection's: close idle ones
        // beyond what the free slots allow.
        self.trim_idle();
        Ok(SessionSlot {
            sessions: self.sessions.clone(),
            _permit: permit,
        })
    }

    /// Opens a connection for a long-lived session in one of the pool's
    /// slots, with extra session settings sent in the startup packet.
    pub(crate) async fn session(
        &self,
        operation: &'static str,
        settings: &[(&str, &str)],
    ) -> Result<Session, StoreError> {
        let slot = self.reserve_session(operation).await?;
        let conn = self
            .options
            .clone()
            .options(settings.iter().copied())
            .connect()
            .await
            .map_err(|e| store_error(operation, e))?;
        Ok(Session { conn, _slot: slot })
    }

    /// A slot, waiting at most the acquire timeout.
    async fn permit(&self) -> Result<OwnedSemaphorePermit, sqlx::Error> {
        match tokio::time::timeout(self.acquire_timeout, self.permits.clone().acquire_owned()).await
        {
            Ok(Ok(permit)) => Ok(permit),
            // Timed out, or the semaphore was closed (it never is).
            _ => Err(sqlx::Error::PoolTimedOut),
        }
    }

    /// Closes idle connections that no free slot accounts for, so that
    /// connections lent, idle and held by sessions never exceed the size.
    fn trim_idle(&self) {
        let free = self.permits.available_permits();
        let mut idle = self.idle();
        if idle.len() > free {
            let surplus = idle.len() - free;
            idle.drain(..surplus);
        }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Pooled>> {
        // The list holds no invariant a panic could break.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs one statement on a borrowed connection and returns its rows.
    pub(crate) async fn fetch_all<'q>(
        &self,
        operation: &'static str,
        query: Query<'q, Postgres, PgArguments>,
    ) -> Result<Vec<PgRow>, StoreError> {
        let (span, started) = statement_span(operation);
        let mut lease = self.get(operation).await?;
        let rows =
            tracing::Instrument::instrument(query.fetch_all(lease.conn()), span.clone()).await;
        lease.settle(&rows);
        drop(lease);
        finish_span(&span, started, rows.as_ref().ok().map(|r| r.len() as u64));
        rows.map_err(|e| store_error(operation, e))
    }

    /// Runs one statement on a borrowed connection and returns how many
    /// rows it affected.
    pub(crate) async fn execute<'q>(
        &self,
        operation: &'static str,
        query: Query<'q, Postgres, PgArguments>,
    ) -> Result<u64, StoreError> {
        let (span, started) = statement_span(operation);
        let mut lease = self.get(operation).await?;
        let done = tracing::Instrument::instrument(query.execute(lease.conn()), span.clone()).await;
        lease.settle(&done);
        drop(lease);
        let done = done.map(|d| d.rows_affected());
        finish_span(&span, started, done.as_ref().ok().copied());
        done.map_err(|e| store_error(operation, e))
    }

    /// Borrows an idle connection, or opens one, waiting at most the
    /// acquire timeout for a free slot.
    pub(crate) async fn get(&self, operation: &'static str) -> Result<Lease<'_>, StoreError> {
        self.lend().await.map_err(|e| store_error(operation, e))
    }

    /// [`get`](Self::get), with sqlx's error.
    pub(crate) async fn lend(&self) -> Result<Lease<'_>, sqlx::Error> {
        let permit = self.permit().await?;
        let mut conn = None;
        loop {
            // The guard is dropped before any await.
            let next = self.idle().pop();
            let Some(pooled) = next else { break };
            let mut candidate = pooled.conn;
            // Idle for long: the server or a proxy may have closed it.
            if pooled.returned.elapsed() >= self.limits.check_after
                && candidate.ping().await.is_err()
            {
                continue;
            }
            conn = Some((candidate, pooled.opened));
            break;
        }
        let (conn, opened) = match conn {
            Some(found) => found,
            None => (self.options.connect().await?, Instant::now()),
        };
        Ok(Lease {
            conn: Some(conn),
            opened,
            pool: self,
            keep: false,
            _permit: permit,
        })
    }
}

impl Lease<'_> {
    /// The connection.
    pub(crate) fn conn(&mut self) -> &mut PgConnection {
        // `conn` is Some from creation until drop.
        self.conn
            .as_mut()
            .unwrap_or_else(|| unreachable!("a lease holds its connection until dropped"))
    }

    /// Marks the connection fit for reuse after `result`: a result, or a
    /// database error that leaves the session alive. Errors below the SQL
    /// level (I/O, protocol, a decoding failure that left rows unread) and
    /// errors that end the session close it.
    pub(crate) fn settle<T>(&mut self, result: &Result<T, sqlx::Error>) {
        self.keep = match result {
            Ok(_) => true,
            Err(sqlx::Error::Database(db)) => !ends_session(db.as_ref()),
            Err(_) => false,
        };
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if self.keep
            && self.opened.elapsed() < self.pool.limits.max_lifetime
            && let Some(conn) = self.conn.take()
        {
            self.pool.idle().push(Pooled {
                conn,
                opened: self.opened,
                returned: Instant::now(),
            });
        }
    }
}

/// The `eventcore.postgres` span of one statement, and when it started (no
/// clock read when the span is not recorded).
fn statement_span(operation: &'static str) -> (tracing::Span, Option<Instant>) {
    let span = tracing::debug_span!(
        "eventcore.postgres",
        operation,
        rows = tracing::field::Empty,
        elapsed_us = tracing::field::Empty,
    );
    let started = (!span.is_disabled()).then(Instant::now);
    (span, started)
}

/// Records the time taken and, for a statement that succeeded, the rows
/// it returned or affected.
fn finish_span(span: &tracing::Span, started: Option<Instant>, rows: Option<u64>) {
    if let Some(started) = started {
        let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        span.record("elapsed_us", us);
    }
    if let Some(rows) = rows {
        span.record("rows", rows);
    }
}
