//! Subscription checkpoints in the `eventcore_checkpoints` table.

use eventcore::{
    CheckpointStore, LeaseToken, Position, StoreError, SubscriptionLeases, SubscriptionName,
};
use sqlx::{Connection, Row};

use crate::{PostgresEventStore, conn::Session, error::store_error, rows::from_bigint};

const LOAD: &str = include_str!("sql/load_checkpoint.sql");
const SAVE: &str = include_str!("sql/save_checkpoint.sql");
const TRY_LEASE: &str = include_str!("sql/try_lease.sql");

/// The lease of one subscription name: a session-level advisory lock held
/// by a database session of its own (one of the store's
/// [`max_connections`](crate::PostgresConfig::max_connections)). Dropping
/// it closes the session, which releases the lock; so does the death of the
/// process holding it. Taking the lock raises the name's fencing token in
/// `eventcore_leases` in the same statement.
#[derive(Debug)]
pub struct PostgresLease {
    session: Session,
    token: LeaseToken,
}

impl SubscriptionLeases for PostgresEventStore {
    type Lease = PostgresLease;

    /// Tries on a session of its own, one of the store's connections. A
    /// waiting instance keeps that session between tries (one per
    /// subscription name and store value), rather than opening one per
    /// try; a session that fails is dropped. Refused with
    /// [`StoreError::Backend`] (not retried) when sessions already hold all
    /// of `max_connections` but the one kept for statements.
    async fn try_acquire(
        &self,
        name: &SubscriptionName,
    ) -> Result<Option<PostgresLease>, StoreError> {
        let parked = self.standby_sessions().remove(name);
        let mut session = match parked {
            Some(session) => session,
            None => self.conns().session("lease", &[]).await?,
        };
        let token: Option<i64> = sqlx::query_scalar(TRY_LEASE)
            .bind(name.as_ref())
            .fetch_optional(session.conn())
            .await
            .map_err(|e| store_error("lease", e))?;
        if let Some(token) = token {
            let token = LeaseToken::new(from_bigint(token));
            Ok(Some(PostgresLease { session, token }))
        } else {
            self.standby_sessions().insert(name.clone(), session);
            Ok(None)
        }
    }

    fn token(&self, lease: &PostgresLease) -> LeaseToken {
        lease.token
    }

    /// Pings the lease's session: if it was lost, so was the lock.
    async fn still_held(&self, lease: &mut PostgresLease) -> Result<bool, StoreError> {
        Ok(lease.session.conn().ping().await.is_ok())
    }

    /// Closes the session kept for the waiting instance, giving its
    /// connection back to the store's budget.
    fn stop_waiting(&self, name: &SubscriptionName) {
        drop(self.standby_sessions().remove(name));
    }
}

impl CheckpointStore for PostgresEventStore {
    async fn load(&self, name: &SubscriptionName) -> Result<Option<Position>, StoreError> {
        let rows = self
            .conns()
            .fetch_all("load_checkpoint", sqlx::query(LOAD).bind(name.as_ref()))
            .await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let part = |name: &str| -> Result<u64, StoreError> {
            let v: i64 = row
                .try_get(name)
                .map_err(|e| store_error("load_checkpoint", e))?;
            // Both parts were saved from u64s that fit in i64 (see `save`).
            Ok(from_bigint(v))
        };
        Ok(Some(Position::new(part("commit_id")?, part("sequence")?)))
    }

    async fn save(
        &self,
        name: &SubscriptionName,
        position: Position,
        token: LeaseToken,
    ) -> Result<(), StoreError> {
        let rows = self
            .conns()
            .fetch_all("save_checkpoint", save_query(name, position, token)?)
            .await?;
        saved(name, token, rows.first()).map(drop)
    }
}

/// The fenced, forward-only save of `position` as the checkpoint of `name`
/// under `token`; its row is read by [`saved`].
pub(crate) fn save_query(
    name: &SubscriptionName,
    position: Position,
    token: LeaseToken,
) -> Result<sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>, StoreError> {
    let fit = |v| to_bigint("save_checkpoint", v);
    Ok(sqlx::query(SAVE)
        .bind(name.as_ref())
        .bind(fit(position.commit())?)
        .bind(fit(position.sequence())?)
        .bind(fit(token.get())?))
}

/// `v` as a bigint, or a typed error naming `operation` if it does not fit.
pub(crate) fn to_bigint(operation: &'static str, v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Backend {
        operation,
        source: format!("{v} does not fit in a bigint").into(),
    })
}

/// Whether the save moved the checkpoint (`false`: it was at or past the
/// position already), or [`StoreError::LeaseLost`] if `token` was not the
/// newest.
pub(crate) fn saved(
    name: &SubscriptionName,
    token: LeaseToken,
    row: Option<&sqlx::postgres::PgRow>,
) -> Result<bool, StoreError> {
    fenced("save_checkpoint", name, token, row)
}

/// What a fenced write of a lane returned (its row's `newest` token and
/// whether it `moved` anything): whether it did, or
/// [`StoreError::LeaseLost`] if `token` was not the newest.
pub(crate) fn fenced(
    operation: &'static str,
    name: &SubscriptionName,
    token: LeaseToken,
    row: Option<&sqlx::postgres::PgRow>,
) -> Result<bool, StoreError> {
    let row = row.ok_or_else(|| StoreError::Backend {
        operation,
        source: "the write returned no row".into(),
    })?;
    let decode = |e| store_error(operation, e);
    let newest: i64 = row.try_get("newest").map_err(decode)?;
    let moved: bool = row.try_get("moved").map_err(decode)?;
    let newest = LeaseToken::new(from_bigint(newest));
    if newest == token {
        Ok(moved)
    } else {
        Err(StoreError::LeaseLost {
            name: name.clone(),
            token,
            current: newest,
        })
    }
}
