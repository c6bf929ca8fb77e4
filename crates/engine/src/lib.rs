//! The sync engine: detect → merge → guard → plan → deliver → record, for any pair of
//! connectors. The merge is a pure function of baselines, values, timestamps and the link's
//! policies; everything with effects goes through a `Connector` or the `StateStore`.
//!
//! Architecture Invariant: the engine knows no connector by name and nothing of terminals or
//! HTTP; it reports through `RunReport` and the `Progress` trait.

mod blocking;
mod clock;
mod deliver;
mod detect;
mod error;
mod guard;
pub mod merge;
mod plan;
mod progress;
pub mod report;
mod run;
pub mod spec;

pub use clock::{Clock, SystemClock};
pub use error::{EngineError, error_chain};
pub use progress::{NoProgress, Progress};
pub use report::{
    Action, FailureOutcome, GuardKind, GuardStop, ReadMode, ReportLine, RunReport, RunStats, SideStats,
    WriteFailure,
};
pub use run::{DEFAULT_LEASE_TIMEOUT, LinkRun, RunOptions, run_link};
pub use spec::{
    ConflictStrategy, Creates, DeletePolicy, Direction, FieldSpec, FirstSyncStrategy, Guard, Limit, LinkSpec,
    RetryPolicy, SidePair, Tie,
};
pub use tokio_util::sync::CancellationToken;

/// Compile-time checks of the run's future.
#[cfg(test)]
mod send {
    use fieldsync_connector::MemoryConnector;
    use fieldsync_store_sqlite::SqliteStore;

    use crate::{
        CancellationToken, LinkRun, LinkSpec, NoProgress, RunOptions, SidePair, SystemClock, run_link,
    };

    fn assert_send<T: Send>(_: &T) {}

    /// A run's future is `Send`, so that a service can spawn it on a multi-threaded runtime:
    /// with the SQLite store and a connector, the system clock and no progress display.
    /// Building the future is the check: the function is never called.
    #[allow(dead_code)]
    fn run_link_future_is_send(
        spec: &LinkSpec,
        names: &SidePair<String>,
        connectors: &mut SidePair<MemoryConnector>,
        store: &mut SqliteStore,
    ) {
        let cancel = CancellationToken::new();
        let options = RunOptions::default();
        let run = LinkRun {
            spec,
            names,
            options,
            clock: &SystemClock,
            progress: &NoProgress,
            cancel: &cancel,
            targets: None,
        };
        let future = run_link(run, connectors, store);
        assert_send(&future);
    }
}
