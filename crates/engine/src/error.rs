//! `EngineError`: what stops a run as a whole. A failed record or write is not an error:
//! it is data in the run's report.

use fieldsync_connector::ConnectorError;
use fieldsync_model::Side;
use fieldsync_store::StoreError;

/// A failure that stops a run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The state store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A side could not be read, even after retries.
    #[error("reading the {side} side ({connector}) failed")]
    Read {
        /// The side.
        side: Side,
        /// The connector's name.
        connector: String,
        /// Why.
        #[source]
        source: ConnectorError,
    },
    /// A run of the link that read both sides started at or after the time the run was told to
    /// run unless (`RunOptions::unless_ran_since`): another process ran the slot already.
    /// Nothing was read or written.
    #[error("link {link} ran at {started} already")]
    AlreadyRan {
        /// The link.
        link: String,
        /// When that run started.
        started: jiff::Timestamp,
    },
    /// A run only to deliver (`RunOptions::deliver_only`) found nothing due once it held the
    /// link: another run delivered it meanwhile. Nothing was recorded.
    #[error("link {link} has nothing due to deliver")]
    NothingDue {
        /// The link.
        link: String,
    },
    /// The run was cancelled; `run_link` reports it as a run with the status `cancelled`.
    #[error("the run was cancelled")]
    Cancelled,
}

/// An error with its causes on one line, `outer: cause: cause`: how a run's history, the
/// command line and the service word a failure.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
