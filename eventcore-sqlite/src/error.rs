//! SQLite's errors as the store contract's.

use eventcore::StoreError;

/// Why the SQLite store failed, as the source of a [`StoreError`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SqliteError {
    /// The store's writer thread is gone (it panicked, or its connection
    /// could not be used any more).
    #[error("the store's writer thread has stopped")]
    WriterGone,
    /// The transaction of a group of appends failed: none of them is stored.
    #[error("the transaction of a group of appends failed: {message}")]
    CommitFailed {
        /// SQLite's message.
        message: String,
    },
    /// A row the store wrote could not be read back.
    #[error("column `{column}` holds a value the store did not write")]
    Corrupt {
        /// The column.
        column: &'static str,
        /// What was wrong.
        #[source]
        source: eventcore::BoxError,
    },
}

/// `error` from `operation`: transient if SQLite was busy or locked (a
/// retry may succeed), a backend failure otherwise.
pub(crate) fn sqlite(operation: &'static str, error: rusqlite::Error) -> StoreError {
    let busy = matches!(
        error.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    );
    if busy {
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

/// Any other failure of `operation`.
pub(crate) fn backend(
    operation: &'static str,
    error: impl std::error::Error + Send + Sync + 'static,
) -> StoreError {
    StoreError::Backend {
        operation,
        source: Box::new(error),
    }
}

/// The writer thread stopped before answering.
pub(crate) fn writer_gone(operation: &'static str) -> StoreError {
    backend(operation, SqliteError::WriterGone)
}

/// A stored value in column `index` that does not decode.
pub(crate) fn corrupt(
    index: usize,
    column: &'static str,
    source: impl Into<eventcore::BoxError>,
) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        index,
        rusqlite::types::Type::Text,
        Box::new(SqliteError::Corrupt {
            column,
            source: source.into(),
        }),
    )
}
