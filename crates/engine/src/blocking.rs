//! `blocking`: how the run calls its synchronous state store from async code without
//! stalling the runtime's other tasks (other runs, a service's HTTP handlers).

use tokio::runtime::{Handle, RuntimeFlavor};

/// Runs `work`, a synchronous call that may wait on a disk or a database, from async code.
///
/// On a multi-threaded runtime it runs through `block_in_place`: the runtime hands this
/// worker's other tasks to another thread first, so they go on while `work` waits. On a
/// current-thread runtime (the command line, one run at a time) nothing else could run there
/// anyway, and `work` runs in place. The borrow of the store across the run's awaits stays as
/// it is: no store needs to be `'static` or shared.
pub(crate) fn blocking<T>(work: impl FnOnce() -> T) -> T {
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}
