//! Turns rusqlite's errors into classified `StoreError`s naming what was being done.

use fieldsync_store::{ErrorClass, StoreError};
use rusqlite::ErrorCode;

/// Attaches "what was being done" to rusqlite errors, and classifies them.
pub(crate) trait Context<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, StoreError>;
}

impl<T> Context<T> for Result<T, rusqlite::Error> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::backend(what(), classify(&source), source))
    }
}

/// How a SQLite failure is classified: busy and locked databases are worth another try, a
/// corrupt or foreign file is damage, everything else is fatal.
fn classify(error: &rusqlite::Error) -> ErrorClass {
    match error.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => ErrorClass::Retryable,
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => ErrorClass::Corrupt,
        _ => ErrorClass::Fatal,
    }
}
