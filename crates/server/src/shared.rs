//! `SharedWorkspace`: the one workspace a running configuration keeps for the use cases that
//! touch only the state store (the API's lists and decisions, the workers' look at what is due),
//! opened once and called one at a time off the runtime's workers.

use std::sync::Arc;

use fieldsync_app::{Config, Workspace, WorkspaceError};
use tokio::sync::Mutex;

/// A workspace shared by the API and the links' workers.
#[derive(Clone)]
pub struct SharedWorkspace(Arc<Mutex<Workspace>>);

impl SharedWorkspace {
    /// The workspace of `config`; its state store is opened by the first call.
    pub fn new(config: &Config) -> Self {
        Self(Arc::new(Mutex::new(Workspace::new(config.clone()))))
    }

    /// Runs `use_case` on `tokio`'s blocking pool, since the store's calls wait on disk or on
    /// the database, once the calls before it are done. Callers wait for their turn on the
    /// runtime, not each on a blocking thread of its own: a service's workers all look at the
    /// store when it starts, and a blocking thread per link (kept alive ten seconds, each with
    /// the allocator's memory it touched) made a service's memory grow with its links.
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
        self.call_within(None, use_case).await
    }

    /// `call`, with the use case limited to `organisation`'s links and rows (each call says
    /// its own: the workspace is shared by requests of callers limited to different ones).
    ///
    /// # Errors
    ///
    /// `NoOrganisations` when an organisation is given and the configuration has none;
    /// whatever the use case returns.
    ///
    /// # Panics
    ///
    /// Where the use case panicked, again here.
    pub async fn call_within<T: Send + 'static>(
        &self,
        organisation: Option<String>,
        use_case: impl FnOnce(&mut Workspace) -> Result<T, WorkspaceError> + Send + 'static,
    ) -> Result<T, WorkspaceError> {
        let mut workspace = Arc::clone(&self.0).lock_owned().await;
        let done = tokio::task::spawn_blocking(move || {
            workspace.limit_to(organisation.as_deref())?;
            use_case(&mut workspace)
        })
        .await;
        done.unwrap_or_else(|error| std::panic::resume_unwind(error.into_panic()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The name of the test runtime's threads (at most 15 bytes: what Linux keeps of it).
    const THREADS: &str = "fs-shared-test";

    /// How many threads of this process are named `THREADS`.
    fn runtime_threads() -> usize {
        std::fs::read_dir("/proc/self/task")
            .expect("/proc/self/task")
            .filter_map(Result::ok)
            .filter(|task| {
                std::fs::read_to_string(task.path().join("comm")).is_ok_and(|comm| comm.trim_end() == THREADS)
            })
            .count()
    }

    #[test]
    fn calls_waiting_for_the_workspace_hold_no_thread_of_their_own() {
        let config = fieldsync_app::config::parse("", std::path::Path::new("fieldsync.toml")).unwrap();
        let shared = SharedWorkspace::new(&config);
        let runtime = tokio::runtime::Builder::new_current_thread().thread_name(THREADS).build().unwrap();
        runtime.block_on(async {
            // The first call holds the workspace until it is released.
            let (release, held) = std::sync::mpsc::channel::<()>();
            let (entered, holding) = tokio::sync::oneshot::channel();
            let first = tokio::spawn({
                let shared = shared.clone();
                async move {
                    shared
                        .call(move |_| {
                            let _ = entered.send(());
                            let _ = held.recv();
                            Ok(())
                        })
                        .await
                }
            });
            holding.await.unwrap();
            // Fifty more, as a service's workers look at the store at once. Each says so and
            // goes straight on into `call`, up to where it waits: the receiver below runs only
            // once they have all got there.
            let (asking, mut asked) = tokio::sync::mpsc::unbounded_channel();
            let waiting: Vec<_> = (0..50)
                .map(|_| {
                    let (shared, asking) = (shared.clone(), asking.clone());
                    tokio::spawn(async move {
                        asking.send(()).unwrap();
                        shared.call(|_| Ok(())).await
                    })
                })
                .collect();
            for _ in 0..50 {
                asked.recv().await.unwrap();
            }
            assert_eq!(runtime_threads(), 1, "only the call that holds the workspace has a thread");
            release.send(()).unwrap();
            first.await.unwrap().unwrap();
            for call in waiting {
                call.await.unwrap().unwrap();
            }
        });
    }
}
