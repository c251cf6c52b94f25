//! The connections reads and appends run on.
//!
//! sqlx's pool tests every connection on its way back into the pool with a
//! `Sync` round trip, so every pooled query costs two round trips (and the
//! server a second wake-up). Reads and appends are single statements, so
//! this small pool lends out plain connections instead and takes them back
//! as they are: a connection is kept only if the statement on it ran to
//! completion (with a result or a database error); one dropped mid-statement
//! or failed by I/O is closed.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use eventcore::StoreError;
use sqlx::{ConnectOptions, PgConnection, postgres::PgConnectOptions};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::store_error;

#[derive(Debug)]
pub(crate) struct ConnPool {
    options: PgConnectOptions,
    idle: Mutex<Vec<PgConnection>>,
    permits: Arc<Semaphore>,
    acquire_timeout: Duration,
}

/// A connection on loan; returned on drop if [`Lease::keep`] was called.
pub(crate) struct Lease<'a> {
    conn: Option<PgConnection>,
    pool: &'a ConnPool,
    keep: bool,
    _permit: OwnedSemaphorePermit,
}

impl ConnPool {
    pub(crate) fn new(options: PgConnectOptions, size: u32, acquire_timeout: Duration) -> Self {
        ConnPool {
            options,
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(size.max(1) as usize)),
            acquire_timeout,
        }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<PgConnection>> {
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
        let idle = self.idle().pop();
        let conn = match idle {
            Some(conn) => conn,
            None => self
                .options
                .connect()
                .await
                .map_err(|e| store_error(operation, e))?,
        };
        Ok(Lease {
            conn: Some(conn),
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

    /// Marks the connection fit for reuse after `result`: anything but an
    /// error below the SQL level (I/O, protocol, a decoding failure that
    /// left rows unread) leaves it in sync.
    pub(crate) fn settle<T>(&mut self, result: &Result<T, sqlx::Error>) {
        self.keep = match result {
            Ok(_) => true,
            Err(sqlx::Error::Database(_)) => true,
            Err(_) => false,
        };
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if self.keep
            && let Some(conn) = self.conn.take()
        {
            self.pool.idle().push(conn);
        }
    }
}
