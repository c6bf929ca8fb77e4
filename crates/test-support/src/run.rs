//! The one place a test runs the engine: every test calls [`run_link`] here, so that a change
//! of the engine's own `run_link` signature changes this file and no test. The few tests that
//! watch or cancel a run, and `World::run_targeted`, call the engine's own, as
//! `run_link_watched`.

use fieldsync_connector::Connector;
use fieldsync_engine::{
    CancellationToken, Clock, EngineError, LinkRun, LinkSpec, NoProgress, RunOptions, RunReport, SidePair,
};
use fieldsync_store::StateStore;

/// One run of the link `spec` over `connectors` (named `names` in the report), with `store` and
/// `clock`, showing no progress, never cancelled.
///
/// # Errors
///
/// Whatever the engine's run returns: a side that cannot be read, a state-store failure (an
/// injected crash among them), a lease another run holds.
pub async fn run_link<C: Connector, K: Clock, S: StateStore>(
    spec: &LinkSpec,
    names: &SidePair<String>,
    connectors: &mut SidePair<C>,
    store: &mut S,
    options: RunOptions,
    clock: &K,
) -> Result<RunReport, EngineError> {
    let never = CancellationToken::new();
    let run = LinkRun { spec, names, options, clock, progress: &NoProgress, cancel: &never, targets: None };
    fieldsync_engine::run_link(run, connectors, store).await
}

/// The engine's own run, with a progress display and a cancellation token the test holds (to
/// cancel the run at a chosen phase, say), for the tests that watch or cancel a run.
pub use fieldsync_engine::run_link as run_link_watched;
