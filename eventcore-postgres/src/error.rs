//! Errors of connecting and migrating, and the mapping of database errors
//! onto [`StoreError`].

use eventcore::StoreError;

/// What can go wrong when connecting to PostgreSQL or migrating its schema.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PostgresError {
    /// The connection URL could not be parsed.
    #[error("invalid PostgreSQL connection URL")]
    InvalidUrl(#[source] sqlx::Error),
    /// No connection could be opened.
    #[error("could not connect to PostgreSQL")]
    Connect(#[source] sqlx::Error),
    /// A migration failed; its transaction was rolled back, so the schema
    /// holds the migrations before it (each commits on its own) and none of
    /// this one. A step that runs outside a transaction is written so that
    /// running it again is safe.
    #[error("migration {version} ({description}) failed")]
    Migrate {
        /// The migration's number.
        version: i64,
        /// What the migration does.
        description: &'static str,
        /// The database's error.
        #[source]
        source: sqlx::Error,
    },
    /// The database holds migrations newer than this version of the crate knows.
    #[error(
        "the database is at schema version {found}, newer than the {known} this eventcore-postgres knows"
    )]
    SchemaTooNew {
        /// Highest version applied in the database.
        found: i64,
        /// Highest version this crate ships.
        known: i64,
    },
    /// A migration applied to the database is not the one this crate ships
    /// under its number (its text was changed after it was released, or
    /// the database was migrated by a fork): nothing was migrated.
    #[error(
        "migration {version} ({description}) applied to this database differs from the one this eventcore-postgres ships (checksum {found}, expected {expected}); refusing to migrate"
    )]
    MigrationChanged {
        /// The migration's number.
        version: i64,
        /// What the migration does.
        description: &'static str,
        /// The checksum recorded when it was applied.
        found: String,
        /// The checksum of the text this crate ships.
        expected: String,
    },
}

/// SQLSTATEs after which the same statement may succeed: serialization
/// failure, deadlock, and the server or connection going away.
fn is_transient_code(code: &str) -> bool {
    matches!(
        code,
        "40001" | "40P01" | "57P01" | "57P02" | "57P03" | "53300"
    ) || code.starts_with("08")
}

/// The name of the unique key on (stream_id, stream_version).
pub(crate) const STREAM_VERSION_KEY: &str = "eventcore_events_stream_version_key";

/// Whether the error is a unique violation of (stream_id, stream_version):
/// only a writer that bypasses `eventcore_append`'s locks can cause one.
pub(crate) fn is_duplicate_version(error: &sqlx::Error) -> bool {
    error.as_database_error().is_some_and(|db| {
        db.code().as_deref() == Some("23505") && db.constraint() == Some(STREAM_VERSION_KEY)
    })
}

/// Maps an sqlx error onto the store's vocabulary, by structure only.
pub(crate) fn store_error(operation: &'static str, error: sqlx::Error) -> StoreError {
    let transient = match &error {
        sqlx::Error::Database(db) => {
            db.code().is_some_and(|code| is_transient_code(&code))
                // Reaching here, a duplicate version could not be matched to
                // a stale stream (see `is_duplicate_version`): retrying
                // re-reads and decides again.
                || is_duplicate_version(&error)
        }
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::WorkerCrashed => true,
        _ => false,
    };
    if transient {
        StoreError::Transient {
            operation,
            source: Box::new(error),
        }
    } else {
        StoreError::Backend {
            operation,
            source: Box::new(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_and_pool_failures_are_transient() {
        let io = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(matches!(
            store_error("read", io),
            StoreError::Transient {
                operation: "read",
                ..
            }
        ));
        assert!(matches!(
            store_error("read", sqlx::Error::PoolTimedOut),
            StoreError::Transient { .. }
        ));
    }

    #[test]
    fn other_failures_are_not_transient_and_keep_their_source() {
        let err = store_error("append", sqlx::Error::RowNotFound);
        assert!(matches!(
            err,
            StoreError::Backend {
                operation: "append",
                ..
            }
        ));
        let source = std::error::Error::source(&err).and_then(|s| s.downcast_ref::<sqlx::Error>());
        assert!(matches!(source, Some(sqlx::Error::RowNotFound)));
    }

    #[test]
    fn transient_sqlstates() {
        for code in ["40001", "40P01", "08006", "08003", "57P01"] {
            assert!(is_transient_code(code), "{code}");
        }
        for code in ["23505", "22P05", "42P01", "EC001", "57014"] {
            assert!(!is_transient_code(code), "{code}");
        }
    }
}
