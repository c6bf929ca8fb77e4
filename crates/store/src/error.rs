//! `StoreError`: failures of the state store, each naming what was being done and classified
//! (`ErrorClass`: retryable, conflict, corrupt, or fatal) so that callers never read messages.

/// What a caller may do about a `StoreError`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// Transient: the same work may succeed when tried again (a busy database, a lost
    /// connection).
    Retryable,
    /// Someone else holds or took what the work needed (a link's lease, a row changed
    /// under it): retrying the same work is wrong; the caller must start over or stop.
    Conflict,
    /// Stored data cannot be read back as written (a damaged row, a newer schema).
    Corrupt,
    /// Anything else: a misconfigured or unreachable store, an unknown id, an injected crash.
    Fatal,
}

/// A failure reading or writing the state store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database failed while doing `what`; its implementation classified the failure.
    #[error("state store: {what}")]
    Backend {
        /// What the store was doing.
        what: String,
        /// How the store's implementation classified the database's error.
        class: ErrorClass,
        /// The database's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Another run of the link holds its lock or lease.
    #[error("another run of link {link} is in progress ({holder})")]
    Locked {
        /// The link.
        link: String,
        /// What holds it, as messages name it: a lock file, a lease in a database.
        holder: String,
    },
    /// As many runs as allowed at once hold leases of other links.
    #[error("{running} runs are going on, as many as allowed at once; link {link} waits")]
    AtCapacity {
        /// The link that waits.
        link: String,
        /// How many leases of other links are live.
        running: usize,
    },
    /// A commit under a lease another holder took over; nothing of it was kept.
    #[error("state store: the lease of link {link} held by {owner} was taken over by another holder")]
    LeaseLost {
        /// The link.
        link: String,
        /// The lease's owner.
        owner: String,
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

impl StoreError {
    /// The failure of the database library's `source` while the store was doing `what`, as
    /// the store's implementation classified it.
    pub fn backend(
        what: String,
        class: ErrorClass,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        StoreError::Backend { what, class, source: source.into() }
    }

    /// How this failure is classified.
    pub fn class(&self) -> ErrorClass {
        match self {
            StoreError::Backend { class, .. } => *class,
            StoreError::Locked { .. } | StoreError::AtCapacity { .. } | StoreError::LeaseLost { .. } => {
                ErrorClass::Conflict
            }
            StoreError::Damaged { .. } | StoreError::TooNew { .. } => ErrorClass::Corrupt,
            StoreError::LockFile { .. } | StoreError::InjectedCrash { .. } | StoreError::NotFound { .. } => {
                ErrorClass::Fatal
            }
        }
    }

    /// Whether the same work may succeed when tried again.
    pub fn is_retryable(&self) -> bool {
        self.class() == ErrorClass::Retryable
    }

    /// Whether someone else holds or took what the work needed.
    pub fn is_conflict(&self) -> bool {
        self.class() == ErrorClass::Conflict
    }

    /// Whether stored data is damaged.
    pub fn is_corrupt(&self) -> bool {
        self.class() == ErrorClass::Corrupt
    }
}
