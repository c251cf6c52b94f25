//! Checkpoints and leases, across processes.
//!
//! A lease is an exclusive lock (`flock`) on a file of its own beside the
//! database (`<file>.leases/<name>.lock`): the operating system releases it
//! when its holder closes it or dies, at once, whatever killed the
//! process. Taking it raises the name's token in `eventcore_leases`, and a
//! checkpoint is saved only under the newest token, in the writer's
//! transaction.

use std::{fs::File, path::PathBuf};

use eventcore::{
    CheckpointStore, LeaseToken, Position, StoreError, SubscriptionLeases, SubscriptionName,
};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::{SqliteEventStore, error::sqlite, writer::Job};

/// The lease of one subscription name: an exclusive lock on its lock file,
/// released when this value is dropped or its process dies.
#[derive(Debug)]
pub struct SqliteLease {
    /// Holds the lock while open.
    file: File,
    path: PathBuf,
    token: LeaseToken,
}

/// FNV-1a, 64 bits: a name's lock file must be the same in every build of
/// every process (the standard library's hasher may change between Rust
/// versions). Two names with one hash share a lock: still at most one
/// holder each, only more waiting.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl SqliteEventStore {
    /// The file whose lock is the lease of subscription `name`, beside the
    /// database. Deleting it ends the lease as its holder's death would:
    /// the holder's `still_held` turns false, the next instance locks a new
    /// file under a newer token, and the former holder's writes are
    /// refused (for tests, and for an operator freeing a lease by hand).
    pub fn lease_file(&self, name: &SubscriptionName) -> PathBuf {
        self.lock_path(name)
    }

    /// The lock file of subscription `name`.
    fn lock_path(&self, name: &SubscriptionName) -> PathBuf {
        let mut folder = self.inner.path.clone().into_os_string();
        folder.push(".leases");
        let readable: String = name
            .as_ref()
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(40)
            .collect();
        PathBuf::from(folder).join(format!("{readable}-{:016x}.lock", fnv1a(name.as_ref())))
    }
}

/// Raises and returns the newest token of `name`.
pub(crate) fn raise_token(c: &mut Connection, name: &str) -> Result<LeaseToken, StoreError> {
    let failed = |e| sqlite("lease", e);
    let tx = c
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(failed)?;
    let token: i64 = tx
        .query_row(
            "INSERT INTO eventcore_leases (name, token) VALUES (?1, 1) \
             ON CONFLICT (name) DO UPDATE SET token = token + 1 RETURNING token",
            [name],
            |row| row.get(0),
        )
        .map_err(failed)?;
    tx.commit().map_err(failed)?;
    Ok(LeaseToken::new(u64::try_from(token).unwrap_or_default()))
}

/// The newest token of `name` (0 if no lease was ever taken).
pub(crate) fn newest_token(c: &Connection, name: &str) -> rusqlite::Result<LeaseToken> {
    let token: Option<i64> = c
        .query_row(
            "SELECT token FROM eventcore_leases WHERE name = ?1",
            [name],
            |row| row.get(0),
        )
        .optional()?;
    Ok(LeaseToken::new(
        token
            .and_then(|t| u64::try_from(t).ok())
            .unwrap_or_default(),
    ))
}

/// A position's two parts as SQLite keeps them.
pub(crate) fn sql_position(position: Position) -> (i64, i64) {
    let fit = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    (fit(position.commit()), fit(position.sequence()))
}

/// The saved checkpoint of `name`.
pub(crate) fn saved(c: &Connection, name: &str) -> rusqlite::Result<Option<Position>> {
    let found: Option<(i64, i64)> = c
        .query_row(
            "SELECT commit_id, sequence FROM eventcore_checkpoints WHERE name = ?1",
            [name],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?;
    let part = |v: i64| u64::try_from(v).unwrap_or_default();
    Ok(found.map(|(commit, sequence)| Position::new(part(commit), part(sequence))))
}

/// Moves the checkpoint of `name` to `position` under `token`, in one
/// write transaction: refused unless `token` is the newest, and never
/// moved back.
pub(crate) fn save(
    c: &mut Connection,
    name: &SubscriptionName,
    position: Position,
    token: LeaseToken,
) -> Result<(), StoreError> {
    let failed = |e| sqlite("save_checkpoint", e);
    let tx = c
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(failed)?;
    let current = newest_token(&tx, name.as_ref()).map_err(failed)?;
    if current != token {
        return Err(StoreError::LeaseLost {
            name: name.clone(),
            token,
            current,
        });
    }
    let (commit, sequence) = sql_position(position);
    tx.execute(
        "INSERT INTO eventcore_checkpoints (name, commit_id, sequence) VALUES (?1, ?2, ?3) \
         ON CONFLICT (name) DO UPDATE SET \
         commit_id = excluded.commit_id, sequence = excluded.sequence \
         WHERE (excluded.commit_id, excluded.sequence) \
             > (eventcore_checkpoints.commit_id, eventcore_checkpoints.sequence)",
        params![name.as_ref(), commit, sequence],
    )
    .map_err(failed)?;
    tx.commit().map_err(failed)
}

impl SubscriptionLeases for SqliteEventStore {
    type Lease = SqliteLease;

    /// Takes the name's lock file without waiting; on success raises the
    /// name's token.
    async fn try_acquire(
        &self,
        name: &SubscriptionName,
    ) -> Result<Option<SqliteLease>, StoreError> {
        let path = self.lock_path(name);
        let opened = tokio::task::spawn_blocking({
            let path = path.clone();
            move || -> std::io::Result<Option<File>> {
                if let Some(folder) = path.parent() {
                    std::fs::create_dir_all(folder)?;
                }
                let file = File::options()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&path)?;
                match file.try_lock() {
                    Ok(()) => Ok(Some(file)),
                    Err(std::fs::TryLockError::WouldBlock) => Ok(None),
                    Err(std::fs::TryLockError::Error(e)) => Err(e),
                }
            }
        })
        .await
        .map_err(|e| crate::error::backend("lease", e))?
        .map_err(|e| crate::error::backend("lease", e))?;
        let Some(file) = opened else {
            return Ok(None);
        };
        let name = name.as_ref().to_owned();
        let token = self
            .write("lease", |reply| Job::Lease { name, reply })
            .await?;
        Ok(Some(SqliteLease { file, path, token }))
    }

    fn token(&self, lease: &SqliteLease) -> LeaseToken {
        lease.token
    }

    /// Held while its lock file is the one at its path (a file deleted by
    /// hand would let another instance lock a new one).
    async fn still_held(&self, lease: &mut SqliteLease) -> Result<bool, StoreError> {
        use std::os::unix::fs::MetadataExt;
        let (Ok(held), Ok(there)) = (lease.file.metadata(), std::fs::metadata(&lease.path)) else {
            return Ok(false);
        };
        Ok(held.ino() == there.ino() && held.dev() == there.dev())
    }
}

impl CheckpointStore for SqliteEventStore {
    async fn load(&self, name: &SubscriptionName) -> Result<Option<Position>, StoreError> {
        let name = name.as_ref().to_owned();
        self.with_reader("load_checkpoint", move |c| {
            saved(c, &name).map_err(|e| sqlite("load_checkpoint", e))
        })
        .await
    }

    async fn save(
        &self,
        name: &SubscriptionName,
        position: Position,
        token: LeaseToken,
    ) -> Result<(), StoreError> {
        let name = name.clone();
        self.write("save_checkpoint", |reply| Job::Checkpoint {
            name,
            position,
            token,
            reply,
        })
        .await
    }
}
