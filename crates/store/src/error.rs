//! `StoreError`: failures of the state store, each naming what was being done.

/// A failure reading or writing the state store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// SQLite failed while doing `what`.
    #[error("state store: {what}")]
    Sqlite {
        /// What the store was doing.
        what: String,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// Another run of the link holds its lock.
    #[error("another run of link {link} is in progress (lock {path})")]
    Locked {
        /// The link.
        link: String,
        /// The lock file.
        path: String,
    },
    /// The lock file could not be opened.
    #[error("state store: cannot open lock file {path}")]
    LockFile {
        /// The lock file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A stored value could not be read back (a damaged row).
    #[error("state store: damaged {what}: {message}")]
    Damaged {
        /// What was damaged (a baseline of a record, an outbox entry).
        what: String,
        /// What was wrong.
        message: String,
    },
    /// The state store was written by a newer fieldsync.
    #[error("state store has schema version {found}, newer than this fieldsync knows ({known})")]
    TooNew {
        /// The version found.
        found: i64,
        /// The newest version this build knows.
        known: i64,
    },
    /// A crash injected by `StateStore::crash_at_commit`, for simulations.
    #[error("state store: injected crash ({})", if *.committed { "after the commit" } else { "before the commit" })]
    InjectedCrash {
        /// Whether the transaction was committed before the "crash".
        committed: bool,
    },
    /// No such entry (a review or outbox entry id given by a person).
    #[error("no {what} with id {id}")]
    NotFound {
        /// What was looked for.
        what: &'static str,
        /// The id given.
        id: i64,
    },
}

/// Attaches "what was being done" to rusqlite errors.
pub(crate) trait Context<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, StoreError>;
}

impl<T> Context<T> for Result<T, rusqlite::Error> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::Sqlite { what: what(), source })
    }
}
