//! `blocking`: how the run does synchronous work from async code — its state store's calls and
//! normalising a page of records — without stalling the runtime's other tasks (other runs, a
//! service's HTTP handlers).

use tokio::runtime::{Handle, RuntimeFlavor};

/// Runs `work`, a synchronous call that may wait on a disk or a database or take a while to
/// compute, from async code.
///
/// On a multi-threaded runtime it runs through `block_in_place`: the runtime hands this
/// worker's other tasks to another thread first, so they go on while `work` waits. On a
/// current-thread runtime (the command line, one run at a time) nothing else could run there
/// anyway, and `work` runs in place. What `work` borrows (the store, the link's spec) stays
/// borrowed: nothing needs to be `'static`, shared or copied.
pub(crate) fn blocking<T>(work: impl FnOnce() -> T) -> T {
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}
