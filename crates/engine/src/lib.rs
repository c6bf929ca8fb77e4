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
