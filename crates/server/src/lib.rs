//! `fieldsync serve`: every link on its schedule (`schedule` or `every`), outbox retries on a
//! timer between runs, at most `max_concurrent_runs` runs at once, each link's history past its
//! `audit.keep` purged daily, and an HTTP API and a dashboard over the app's use cases. It stops taking work when told to, lets the runs going
//! on stop at their next point between two commits, and returns.
//!
//! Architecture Invariant: the service calls the app's `Workspace` and nothing below it; the
//! API serialises the same types the command line prints with `--json`, and the dashboard
//! renders them.

mod access;
mod api;
mod dashboard;
mod feeds;
mod hooks;
mod links;
mod metrics;
mod reports;
mod retention;
mod shared;

use std::net::SocketAddr;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::routing::any;
use fieldsync_app::Config;
use fieldsync_app::workspace::CancellationToken;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tower::ServiceExt as _;

use crate::links::Links;
use crate::shared::SharedWorkspace;

/// How long the runs going on get to stop once the service is told to stop; past it, the
/// service returns anyway (what a run committed stays committed, and the next start resumes).
const STOP_GRACE: Duration = Duration::from_secs(30);

/// Why the service could not start or went down.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The address of `[server] listen` could not be bound.
    #[error("listening on {address}")]
    Listen {
        /// The address.
        address: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Serving HTTP failed.
    #[error("serving HTTP")]
    Http(#[source] std::io::Error),
    /// `[reports]` cannot be used.
    #[error("reports: {0}")]
    Reports(String),
}

/// The service, bound to its address and not yet started.
pub struct Server {
    config: Arc<Config>,
    listener: TcpListener,
    mailer: Option<Arc<reports::Mailer>>,
}

impl Server {
    /// Binds `[server] listen` of `config`.
    ///
    /// # Errors
    ///
    /// `Listen` when the address is taken or not this machine's; `Reports` when an address
    /// of `[reports]` cannot be read.
    pub async fn bind(config: Config) -> Result<Self, ServeError> {
        let mailer = reports::Mailer::of(&config).map_err(ServeError::Reports)?;
        let address = config.server.listen;
        let listener =
            TcpListener::bind(address).await.map_err(|source| ServeError::Listen { address, source })?;
        Ok(Self { config: Arc::new(config), listener, mailer })
    }

    /// Where it listens (with the port the system chose, for `listen = "127.0.0.1:0"`).
    ///
    /// # Errors
    ///
    /// When the system cannot say.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `stop` is cancelled: then it takes no more work, cancels the runs going
    /// on (each stops at its next point between two commits and records itself as
    /// cancelled), waits for them up to a grace period, and returns. Each `reload` notice reads
    /// the configuration file again (so does every `[organisations] every`, which reloads only
    /// when the list of organisations changed): a valid one replaces the running one the same way (the
    /// runs going on stop at their next commit, the links start again on the new one, the
    /// address stays bound throughout); an invalid one is logged and the running one kept.
    ///
    /// # Errors
    ///
    /// `Http` when the listener fails.
    pub async fn serve(self, stop: CancellationToken, reload: Arc<Notify>) -> Result<(), ServeError> {
        // The recorder first, so that the first run is counted.
        if metrics::handle().is_none() {
            tracing::warn!("another metrics recorder is installed in this process: /metrics answers 503");
        }
        let Server { mut config, listener, mut mailer } = self;
        let address = listener.local_addr().map_err(ServeError::Http)?;
        // One HTTP server for the life of the service, in front of the router of the running
        // configuration: a reload swaps the router, and no connection is dropped.
        let current = Arc::new(RwLock::new(Router::new()));
        let routes = Arc::clone(&current);
        let front = Router::new().fallback(any(move |request: Request| {
            let router = routes.read().unwrap_or_else(PoisonError::into_inner).clone();
            router.oneshot(request)
        }));
        let (mut listener, mut front, mut served) = (Some(listener), Some(front), None);
        // The dashboard's sessions outlive a reload; each request checks its token again.
        let sessions = Arc::new(dashboard::Sessions::default());
        loop {
            // One token a configuration: its workers take no more work, and its runs stop at
            // their next point between two commits.
            let running = stop.child_token();
            let workspace = SharedWorkspace::new(&config);
            let links = Links::start(Arc::clone(&config), workspace.clone(), running.clone(), mailer.clone());
            let feeds = feeds::start(&config, workspace.clone(), Arc::clone(&links), running.clone());
            let retention = retention::start(&config, workspace.clone(), running.clone());
            *current.write().unwrap_or_else(PoisonError::into_inner) =
                api::router(Arc::clone(&config), Arc::clone(&links), workspace, Arc::clone(&sessions));
            // Connections are taken only once the first configuration's router is in place
            // (until then they wait in the listener's backlog): a request right after the
            // start meets the links, never an empty router's 404.
            if let (Some(listener), Some(front)) = (listener.take(), front.take()) {
                let shutdown = stop.clone().cancelled_owned();
                served = Some(tokio::spawn(
                    axum::serve(listener, front).with_graceful_shutdown(shutdown).into_future(),
                ));
                tracing::info!(%address, "serving");
            }
            let reread = config.organisations.as_ref().map(|organisations| organisations.every);
            let next = loop {
                tokio::select! {
                    () = stop.cancelled() => break None,
                    () = reload.notified() => match reloaded(&config).await {
                        Ok(next) => break Some(next),
                        Err(error) => tracing::error!(%error, "the configuration was not reloaded; the running one is kept"),
                    },
                    () = sleep_or_never(reread) => match reloaded(&config).await {
                        // The list is read again with the file: a new organisation starts, a
                        // removed one stops; the same list changes nothing.
                        Ok(next) if listed(&next.0) != listed(&config) => {
                            tracing::info!("the list of organisations changed");
                            break Some(next);
                        }
                        Ok(_) => {}
                        Err(error) => tracing::error!(%error, "the organisations were not read again; the running list is kept"),
                    },
                }
            };
            tracing::info!("stopping the links: no new runs; the runs going on stop at their next commit");
            running.cancel();
            drop(feeds);
            drop(retention);
            if tokio::time::timeout(STOP_GRACE, links.stopped()).await.is_err() {
                tracing::warn!("runs still going on after {STOP_GRACE:?}; going on without them");
            }
            let Some((next_config, next_mailer)) = next else { break };
            if next_config.server.listen != config.server.listen {
                tracing::warn!(listen = %next_config.server.listen, %address, "a new listen address takes a restart");
            }
            (config, mailer) = (Arc::new(next_config), next_mailer);
            tracing::info!("the configuration was reloaded");
        }
        match served {
            Some(served) => match served.await {
                Ok(result) => result.map_err(ServeError::Http),
                Err(error) => Err(ServeError::Http(std::io::Error::other(error))),
            },
            None => Ok(()),
        }
    }
}

/// The configuration file of `running` read and checked again (with its list of
/// organisations, off the runtime's threads: it may come from a database or an API), with
/// its mailer.
async fn reloaded(running: &Config) -> Result<(Config, Option<Arc<reports::Mailer>>), String> {
    let path = running.path.clone();
    let loaded = tokio::task::spawn_blocking(move || fieldsync_app::load(&path)).await;
    let config = loaded.map_err(|error| error.to_string())?.map_err(|error| error.to_string())?;
    let mailer = reports::Mailer::of(&config).map_err(|error| format!("reports: {error}"))?;
    Ok((config, mailer))
}

/// The organisations `config` lists, if it has a list.
fn listed(config: &Config) -> Option<&[fieldsync_app::config::Organisation]> {
    config.organisations.as_ref().map(|organisations| organisations.list.as_slice())
}

/// Sleeps for `period`, or forever without one.
async fn sleep_or_never(period: Option<Duration>) {
    match period {
        Some(period) => tokio::time::sleep(period).await,
        None => std::future::pending().await,
    }
}
