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

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use eventcore::StoreError;
use sqlx::{
    ConnectOptions, Connection, PgConnection,
    error::DatabaseError,
    postgres::{PgConnectOptions, PgDatabaseError, PgSeverity},
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
    acquire_timeout: Duration,
    limits: IdleLimits,
}

/// A connection on loan; returned on drop if [`Lease::settle`] found it fit.
pub(crate) struct Lease<'a> {
    conn: Option<PgConnection>,
    opened: Instant,
    pool: &'a ConnPool,
    keep: bool,
    _permit: OwnedSemaphorePermit,
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
        ConnPool {
            options,
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(size.max(1) as usize)),
            acquire_timeout,
            limits,
        }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Pooled>> {
        // The list holds no invariant a panic could break.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens a connection of its own, outside the pool's count (for a
    /// session that must outlive single statements, such as a lease).
    pub(crate) async fn connect_dedicated(
        &self,
        operation: &'static str,
    ) -> Result<PgConnection, StoreError> {
        self.options
            .connect()
            .await
            .map_err(|e| store_error(operation, e))
    }

    /// Opens a connection of its own, outside the pool's count, with extra
    /// session settings sent in the startup packet.
    pub(crate) async fn connect_dedicated_with(
        &self,
        operation: &'static str,
        settings: &[(&str, &str)],
    ) -> Result<PgConnection, StoreError> {
        self.options
            .clone()
            .options(settings.iter().copied())
            .connect()
            .await
            .map_err(|e| store_error(operation, e))
    }

    /// Borrows an idle connection, or opens one, waiting at most the
    /// acquire timeout for a free slot.
    pub(crate) async fn get(&self, operation: &'static str) -> Result<Lease<'_>, StoreError> {
        let permit =
            match tokio::time::timeout(self.acquire_timeout, self.permits.clone().acquire_owned())
                .await
            {
                Ok(Ok(permit)) => permit,
                // Timed out, or the semaphore was closed (it never is).
                _ => return Err(store_error(operation, sqlx::Error::PoolTimedOut)),
            };
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
            None => (
                self.options
                    .connect()
                    .await
                    .map_err(|e| store_error(operation, e))?,
                Instant::now(),
            ),
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
