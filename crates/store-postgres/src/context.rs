//! Turns PostgreSQL's errors into classified `StoreError`s naming what was being done.

use fieldsync_postgres::tokio_postgres;
use fieldsync_store::{ErrorClass, StoreError};

/// Attaches "what was being done" to PostgreSQL errors, and classifies them.
pub(crate) trait Context<T> {
    /// The error as a `StoreError::Backend` saying `what` failed.
    fn context(self, what: impl FnOnce() -> String) -> Result<T, StoreError>;
}

impl<T> Context<T> for Result<T, tokio_postgres::Error> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::backend(what(), classify(&source), source))
    }
}

/// How a PostgreSQL failure is classified: a lost connection, a server shutting down or out of
/// connections, a serialization failure, a deadlock or a lock wait are worth another try (as
/// `fieldsync_postgres::is_retryable` says); data the server reports as corrupted is damage;
/// everything else (a refused login, a missing privilege, a constraint) is fatal.
pub(crate) fn classify(error: &tokio_postgres::Error) -> ErrorClass {
    if fieldsync_postgres::is_retryable(error) {
        return ErrorClass::Retryable;
    }
    let corrupted =
        [fieldsync_postgres::SqlState::DATA_CORRUPTED, fieldsync_postgres::SqlState::INDEX_CORRUPTED];
    match error.code() {
        Some(code) if corrupted.contains(code) => ErrorClass::Corrupt,
        _ => ErrorClass::Fatal,
    }
}
