//! `ConnectorError`: every way a connector can fail, classified once into retryable
//! (try again later) and permanent (a person must look), never by matching message text.

use fieldsync_model::RecordId;

/// A failure reading or writing a system.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectorError {
    /// The system could not be reached or was busy (a locked database, a refused
    /// connection, a timeout, an HTTP 5xx or 429). Retryable.
    #[error("{what} is unavailable: {message}")]
    Unavailable {
        /// What was being reached (a file, a URL).
        what: String,
        /// The system's own message.
        message: String,
        /// How long the system asked us to wait, if it said.
        retry_after: Option<std::time::Duration>,
    },
    /// The system refused the write for good (a CHECK constraint, an HTTP 422). Permanent;
    /// the message is the system's own.
    #[error("rejected: {message}")]
    Rejected {
        /// The system's own message.
        message: String,
    },
    /// The target changed since the engine read it, so the write was not made. The engine
    /// plans it again from a fresh read.
    #[error("record {id} changed since it was read")]
    TargetMoved {
        /// The record.
        id: RecordId,
    },
    /// The record to update or delete does not exist.
    #[error("record {id} does not exist")]
    NotFound {
        /// The record.
        id: RecordId,
    },
    /// A create found a record with the same id already there.
    #[error("record {id} already exists")]
    AlreadyExists {
        /// The existing record.
        id: RecordId,
    },
    /// The system answered with something this connector cannot read. Retryable, since
    /// half-written files and truncated answers usually mend themselves.
    #[error("malformed data from {what}: {message}")]
    Malformed {
        /// Where (a file and line, a URL).
        what: String,
        /// What was wrong.
        message: String,
    },
    /// The system does not look as configured (a missing table or column). Permanent.
    #[error("{message}")]
    Misconfigured {
        /// What is wrong, naming the configured item.
        message: String,
    },
    /// The connector cannot do this at all (a delete on a connector without deletes).
    #[error("the {kind} connector cannot {operation}")]
    Unsupported {
        /// The connector's kind.
        kind: &'static str,
        /// The operation.
        operation: &'static str,
    },
}

impl ConnectorError {
    /// The error of a whole batch, as the answer to each of its writes: the same error where it
    /// is about the batch (unavailable, malformed, misconfigured, rejected), else a refusal
    /// with its text, since an error about one record (its id moved, missing or taken) is no
    /// answer for another.
    pub fn for_each_write(&self) -> ConnectorError {
        match self {
            ConnectorError::Unavailable { .. }
            | ConnectorError::Malformed { .. }
            | ConnectorError::Misconfigured { .. }
            | ConnectorError::Rejected { .. } => self.clone(),
            other => ConnectorError::Rejected { message: other.to_string() },
        }
    }

    /// Whether trying the same operation again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            ConnectorError::Unavailable { .. } | ConnectorError::Malformed { .. } => true,
            ConnectorError::Rejected { .. }
            | ConnectorError::TargetMoved { .. }
            | ConnectorError::NotFound { .. }
            | ConnectorError::AlreadyExists { .. }
            | ConnectorError::Misconfigured { .. }
            | ConnectorError::Unsupported { .. } => false,
        }
    }

    /// The wait the system asked for, if any.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            ConnectorError::Unavailable { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        let unavailable = ConnectorError::Unavailable {
            what: "members.db".into(),
            message: "database is locked".into(),
            retry_after: None,
        };
        assert!(unavailable.is_retryable());
        assert!(!ConnectorError::Rejected { message: "CHECK constraint failed".into() }.is_retryable());
        assert!(!ConnectorError::TargetMoved { id: RecordId::new("1") }.is_retryable());
    }
}
