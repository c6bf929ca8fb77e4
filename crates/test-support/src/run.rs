//! The one place a test runs the engine: every test calls [`run_link`] (or, to watch or cancel
//! the run, [`run_link_watched`]) here, so that a change of the engine's own `run_link`
//! signature changes this file and no test.

use fieldsync_connector::Connector;
use fieldsync_engine::{
    CancellationToken, Clock, EngineError, LinkSpec, NoProgress, Progress, RunOptions, RunReport, SidePair,
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
    run_link_watched(spec, names, connectors, store, options, clock, &NoProgress, &never).await
}

/// As [`run_link`], with a progress display and a cancellation token the test holds (to cancel
/// the run at a chosen phase, say).
///
/// # Errors
///
/// As [`run_link`].
#[allow(clippy::too_many_arguments)]
pub async fn run_link_watched<C: Connector, K: Clock, P: Progress, S: StateStore>(
    spec: &LinkSpec,
    names: &SidePair<String>,
    connectors: &mut SidePair<C>,
    store: &mut S,
    options: RunOptions,
    clock: &K,
    progress: &P,
    cancel: &CancellationToken,
) -> Result<RunReport, EngineError> {
    fieldsync_engine::run_link(spec, names, connectors, store, options, clock, progress, cancel).await
}
