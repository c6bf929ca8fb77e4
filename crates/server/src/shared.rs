//! `SharedWorkspace`: the one workspace a running configuration keeps for the use cases that
//! touch only the state store (the API's lists and decisions, the workers' look at what is due),
//! opened once and called one at a time off the runtime's workers.

use std::sync::{Arc, Mutex, PoisonError};

use fieldsync_app::{Config, Workspace, WorkspaceError};

/// A workspace shared by the API and the links' workers.
#[derive(Clone)]
pub struct SharedWorkspace(Arc<Mutex<Workspace>>);

impl SharedWorkspace {
    /// The workspace of `config`; its state store is opened by the first call.
    pub fn new(config: &Config) -> Self {
        Self(Arc::new(Mutex::new(Workspace::new(config.clone()))))
    }

    /// Runs `use_case` on `tokio`'s blocking pool, since the store's calls wait on disk.
    ///
    /// # Errors
    ///
    /// Whatever the use case returns.
    ///
    /// # Panics
    ///
    /// Where the use case panicked, again here.
    pub async fn call<T: Send + 'static>(
        &self,
        use_case: impl FnOnce(&mut Workspace) -> Result<T, WorkspaceError> + Send + 'static,
    ) -> Result<T, WorkspaceError> {
        let workspace = Arc::clone(&self.0);
        let done = tokio::task::spawn_blocking(move || {
            use_case(&mut workspace.lock().unwrap_or_else(PoisonError::into_inner))
        })
        .await;
        done.unwrap_or_else(|error| std::panic::resume_unwind(error.into_panic()))
    }
}
