//! `fieldsync serve`: every link on its schedule (`schedule` or `every`), outbox retries on a
//! timer between runs, at most `max_concurrent_runs` runs at once, and an HTTP API over the
//! app's use cases. It stops taking work when told to, lets the runs going on stop at their
//! next point between two commits, and returns.
//!
//! Architecture Invariant: the service calls the app's `Workspace` and nothing below it; the
//! API serialises the same types the command line prints with `--json`.

mod api;
mod hooks;
mod links;
mod metrics;
mod reports;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fieldsync_app::Config;
use fieldsync_app::workspace::CancellationToken;
use tokio::net::TcpListener;

use crate::links::Links;

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
        let mailer = match &config.reports {
            Some(reports) => Some(Arc::new(reports::Mailer::new(reports).map_err(ServeError::Reports)?)),
            None => None,
        };
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
    /// cancelled), waits for them up to a grace period, and returns.
    ///
    /// # Errors
    ///
    /// `Http` when the listener fails.
    pub async fn serve(self, stop: CancellationToken) -> Result<(), ServeError> {
        // One token: the workers take no more work, and the runs going on stop at their next
        // point between two commits.
        // The recorder first, so that the first run is counted.
        if metrics::handle().is_none() {
            tracing::warn!("another metrics recorder is installed in this process: /metrics answers 503");
        }
        let links = Links::start(Arc::clone(&self.config), stop.clone(), self.mailer.clone());
        let router = api::router(Arc::clone(&self.config), Arc::clone(&links));
        tracing::info!(address = %self.local_addr().map_or_else(|_| "?".into(), |a| a.to_string()), "serving");
        let served =
            axum::serve(self.listener, router).with_graceful_shutdown(stop.clone().cancelled_owned()).await;
        tracing::info!("stopping: no new runs; the runs going on stop at their next commit");
        if tokio::time::timeout(STOP_GRACE, links.stopped()).await.is_err() {
            tracing::warn!("runs still going on after {STOP_GRACE:?}; stopping without them");
        }
        served.map_err(ServeError::Http)
    }
}
