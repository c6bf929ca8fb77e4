//! `WorkspaceError`: why a use case could not be carried out, classified so that a caller
//! chooses its answer (an exit code, an HTTP status) by kind, never by message.

use fieldsync_connector::ConnectorError;
use fieldsync_engine::EngineError;
use fieldsync_store::StoreError;

use crate::ConfigError;

/// A use case that could not be carried out.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkspaceError {
    /// The configuration could not be read or is not valid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// No link of that name is configured.
    #[error("no link named {name:?}; the configuration has {}", known.join(", "))]
    UnknownLink {
        /// The name asked for.
        name: String,
        /// The links the configuration has.
        known: Vec<String>,
    },
    /// An organisation was asked for, and the configuration has no `[organisations]`.
    #[error("the configuration has no [organisations]: there is no organisation to limit to")]
    NoOrganisations,
    /// A review, outbox entry or run was asked for that belongs to another organisation than
    /// the one the request is limited to.
    #[error("{what} {id} is not organisation {organisation}'s")]
    OtherOrganisation {
        /// What was asked for.
        what: &'static str,
        /// Its number.
        id: i64,
        /// The organisation the request is limited to.
        organisation: String,
    },
    /// The state store could not be opened.
    #[error("opening the state store {location}")]
    OpenStore {
        /// Where it lives, as messages name it (a file's path; never a password).
        location: String,
        /// Why.
        #[source]
        source: StoreError,
    },
    /// No review, outbox entry or run has the number given (or none in the state the use
    /// case needs: a dead entry to retry, an open review).
    #[error("no {what} with id {id}")]
    NotFound {
        /// What was looked for.
        what: &'static str,
        /// The number given.
        id: i64,
    },
    /// Reading or writing the state store failed.
    #[error(transparent)]
    Store(StoreError),
    /// A connector of the link could not be opened.
    #[error("opening connector {name}")]
    OpenConnector {
        /// The connector's name.
        name: String,
        /// Why.
        #[source]
        source: ConnectorError,
    },
    /// A link's run failed as a whole (a side unreadable, its lock held).
    #[error("running link {link}")]
    Run {
        /// The link.
        link: String,
        /// Why.
        #[source]
        source: EngineError,
    },
    /// A review belongs to a link the configuration no longer has.
    #[error("review {id} belongs to link {link}, which is not configured")]
    ReviewLinkGone {
        /// The review's number.
        id: i64,
        /// Its link.
        link: String,
    },
    /// A side to keep that is neither `left`, `right` nor one of the link's connectors.
    #[error("keep {given:?}: expected left, right, {left} or {right}")]
    UnknownSide {
        /// What was given.
        given: String,
        /// The link's left connector.
        left: String,
        /// The link's right connector.
        right: String,
    },
    /// A value was given for a review of a whole record, which only a side can settle.
    #[error("review {id} is about a whole record: keep a side")]
    WholeRecord {
        /// The review's number.
        id: i64,
    },
    /// The review's field is no longer configured.
    #[error("field {field} is no longer configured")]
    FieldGone {
        /// The field.
        field: String,
    },
    /// A value a person gave that the field's rules do not read.
    #[error("value: {message}")]
    UnreadableValue {
        /// What the field's rules said.
        message: String,
    },
    /// The review was closed already.
    #[error("review {id} is closed already")]
    ReviewClosed {
        /// The review's number.
        id: i64,
    },
}

impl WorkspaceError {
    /// Whether the request itself was wrong (the configuration, a name, a decision), as
    /// opposed to a system or the state store failing: a command line's usage error, an HTTP
    /// API's 4xx.
    pub fn is_usage(&self) -> bool {
        match self {
            WorkspaceError::Config(_)
            | WorkspaceError::UnknownLink { .. }
            | WorkspaceError::NoOrganisations
            | WorkspaceError::OtherOrganisation { .. }
            | WorkspaceError::NotFound { .. }
            | WorkspaceError::ReviewLinkGone { .. }
            | WorkspaceError::UnknownSide { .. }
            | WorkspaceError::WholeRecord { .. }
            | WorkspaceError::FieldGone { .. }
            | WorkspaceError::UnreadableValue { .. }
            | WorkspaceError::ReviewClosed { .. } => true,
            WorkspaceError::OpenStore { .. }
            | WorkspaceError::Store(_)
            | WorkspaceError::OpenConnector { .. }
            | WorkspaceError::Run { .. } => false,
        }
    }

    /// Whether a link's run could not start, or stopped, because another run holds the link
    /// (in this process or another sharing the state store), took it over, or every place of
    /// `max_concurrent_runs` is taken: nothing is wrong with the link, and it runs later.
    pub fn is_busy(&self) -> bool {
        matches!(self, WorkspaceError::Run { source: EngineError::Store(error), .. } if error.is_conflict())
    }

    /// Whether a run did not run because another process sharing the state store did its work
    /// already: ran a scheduled slot (`Workspace::run_scheduled`), or delivered what a
    /// delivery-only run was for (`Workspace::deliver`).
    pub fn ran_already(&self) -> bool {
        matches!(
            self,
            WorkspaceError::Run {
                source: EngineError::AlreadyRan { .. } | EngineError::NothingDue { .. },
                ..
            }
        )
    }

    /// The connector a link's run could not open or read, when that is why it failed: what a
    /// service waits for before the link can run again.
    pub fn unreachable_connector(&self) -> Option<&str> {
        match self {
            WorkspaceError::OpenConnector { name, .. } => Some(name),
            WorkspaceError::Run { source: EngineError::Read { connector, .. }, .. } => Some(connector),
            _ => None,
        }
    }
}

impl From<StoreError> for WorkspaceError {
    /// A number the store has no entry for is the request's fault; anything else is the store's.
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound { what, id } => WorkspaceError::NotFound { what, id },
            other => WorkspaceError::Store(other),
        }
    }
}
