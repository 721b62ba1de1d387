//! The one error type of the storage layer.
use diesel::result::{DatabaseErrorKind, Error as DieselError};

/// Why a storage call failed.
///
/// Unique-key violations become [`StorageError::Conflict`] and a missing row
/// becomes [`StorageError::NotFound`], so callers can map them to 409 and 404
/// without looking at SQL errors.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The row asked for does not exist.
    #[error("not found")]
    NotFound,
    /// A unique key would be violated (the message says which).
    #[error("{0}")]
    Conflict(String),
    /// The database could not be reached or opened (the real driver error).
    #[error("cannot connect to the database: {0}")]
    Connection(String),
    /// A migration could not be applied or listed.
    #[error("database migration failed: {0}")]
    Migration(String),
    /// A query failed.
    #[error("database query failed: {0}")]
    Query(#[source] DieselError),
    /// No pooled connection became available.
    #[error("database pool: {0}")]
    Pool(#[from] diesel::r2d2::PoolError),
}

impl From<DieselError> for StorageError {
    fn from(error: DieselError) -> Self {
        match error {
            DieselError::NotFound => StorageError::NotFound,
            DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info) => {
                StorageError::Conflict(info.message().to_string())
            }
            other => StorageError::Query(other),
        }
    }
}

impl StorageError {
    /// Replaces the driver's message of a [`StorageError::Conflict`] with one
    /// a person understands; other errors pass through.
    pub fn conflict_as(self, message: impl FnOnce() -> String) -> Self {
        match self {
            StorageError::Conflict(_) => StorageError::Conflict(message()),
            other => other,
        }
    }
}
