//! The sync engine: detect → merge → guard → plan → deliver → record, for any pair of
//! connectors. The merge is a pure function of baselines, values, timestamps and the link's
//! policies; everything with effects goes through a `Connector` or the `StateStore`.
//!
//! Architecture Invariant: the engine knows no connector by name and nothing of terminals or
//! HTTP; it reports through `RunReport` and the `Progress` trait.

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
pub use error::EngineError;
pub use progress::{NoProgress, Progress};
pub use report::{
    Action, FailureOutcome, GuardKind, GuardStop, ReadMode, ReportLine, RunReport, RunStats, SideStats,
    WriteFailure,
};
pub use run::{RunOptions, run_link, run_link_until};
pub use spec::{
    ConflictStrategy, Creates, DeletePolicy, Direction, FieldSpec, FirstSyncStrategy, Guard, Limit, LinkSpec,
    RetryPolicy, SidePair, Tie,
};
pub use tokio_util::sync::CancellationToken;

/// Compile-time checks of the run's future.
#[cfg(test)]
mod send {
    use fieldsync_connector::Connector;
    use fieldsync_store::StateStore;

    use crate::{CancellationToken, LinkSpec, Progress, RunOptions, SidePair, SystemClock, run_link_until};

    fn assert_send<T: Send>(_: &T) {}

    /// A run's future is `Send` when its parts are, so that a service can spawn it on a
    /// multi-threaded runtime: any `Send` connector (whose calls return `Send` futures), the
    /// system clock, a `Sync` progress display, and a store that is `Send` and `Sync` (detection
    /// reads the store through a shared borrow while it awaits the connectors). Building the
    /// future is the check: the function is never called.
    #[allow(dead_code)]
    fn run_link_future_is_send_for_send_parts<C, P, S>(
        spec: &LinkSpec,
        names: &SidePair<String>,
        connectors: &mut SidePair<C>,
        store: &mut S,
        progress: &P,
    ) where
        C: Connector + Send,
        P: Progress + Sync,
        S: StateStore + Send + Sync,
    {
        let cancel = CancellationToken::new();
        let options = RunOptions::default();
        let future = run_link_until(spec, names, connectors, store, options, &SystemClock, progress, &cancel);
        assert_send(&future);
    }
}
