//! Change feeds in: for each connector whose settings ask for one (a postgres connector's
//! `notify`), a task that listens to it and keeps each notice in the state store as a webhook
//! of every link that has the connector as a side, naming the records it names, then wakes the
//! link; a run follows as for a webhook (targeted at the records when every waiting notice
//! names some). A feed that ends is opened again after a growing pause, and each link of the
//! connector then runs once, for what was missed meanwhile.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fieldsync_app::workspace::{CancellationToken, FeedOpener, Side, error_chain};
use fieldsync_app::{Config, Workspace};
use tokio::task::JoinSet;

use crate::links::Links;
use crate::shared::SharedWorkspace;

/// The first pause before opening a feed again; it doubles up to `REOPEN_CAP`.
const REOPEN_FIRST: Duration = Duration::from_secs(1);

/// The longest pause before opening a feed again.
const REOPEN_CAP: Duration = Duration::from_secs(60);

/// Numbers the notices this process keeps, so that each is a webhook of its own.
static NOTICES: AtomicU64 = AtomicU64::new(0);

/// Starts a listener for every connector of `config` with a change feed; they end with `stop`.
pub(crate) fn start(
    config: &Config,
    workspace: SharedWorkspace,
    links: Arc<Links>,
    stop: CancellationToken,
) -> JoinSet<()> {
    let mut tasks = JoinSet::new();
    for (name, connector) in &config.connectors {
        let Some(open) = connector.kind.change_feed() else { continue };
        // Every side this connector is, of every link.
        let sides: Vec<(String, Side)> = config
            .links
            .iter()
            .flat_map(|(link, link_config)| {
                Side::BOTH
                    .into_iter()
                    .filter(|side| link_config.connectors.get(*side) == name)
                    .map(|side| (link.clone(), side))
            })
            .collect();
        if sides.is_empty() {
            continue;
        }
        let listener = Listener {
            connector: name.clone(),
            sides,
            workspace: workspace.clone(),
            links: Arc::clone(&links),
        };
        let stop = stop.clone();
        tasks.spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                () = listener.listen(open) => {}
            }
        });
    }
    tasks
}

/// One connector's feed and the link sides it tells of.
struct Listener {
    connector: String,
    sides: Vec<(String, Side)>,
    workspace: SharedWorkspace,
    links: Arc<Links>,
}

impl Listener {
    /// Opens the feed and keeps its notices, for ever (until the task is dropped).
    async fn listen(self, open: FeedOpener) {
        let mut failures = 0_u32;
        let mut opened_before = false;
        loop {
            match open().await {
                Ok(mut feed) => {
                    tracing::info!(connector = %self.connector, "listening to its change notices");
                    failures = 0;
                    if opened_before {
                        // Notices may have been missed while the feed was closed.
                        for (link, _) in &self.sides {
                            self.links.ask(link, false);
                        }
                    }
                    opened_before = true;
                    while let Some(records) = feed.next().await {
                        self.keep(records).await;
                    }
                    tracing::warn!(connector = %self.connector, "its change notices stopped; listening again");
                }
                Err(error) => {
                    failures += 1;
                    tracing::warn!(connector = %self.connector, error = %error_chain(&error), "cannot listen to its change notices");
                }
            }
            let pause = REOPEN_FIRST.saturating_mul(1 << failures.min(8)).min(REOPEN_CAP);
            tokio::time::sleep(pause).await;
        }
    }

    /// Keeps a notice naming `records` as a webhook of each link side, and wakes the links.
    async fn keep(&self, records: Vec<String>) {
        let number = NOTICES.fetch_add(1, Ordering::Relaxed);
        let id = format!("notice {number} of {} pid {}", self.connector, std::process::id());
        for (link, side) in &self.sides {
            let (link_name, side, id, records) = (link.clone(), *side, id.clone(), records.clone());
            let kept = self
                .workspace
                .call(move |workspace: &mut Workspace| {
                    workspace.accept_webhook(&link_name, side, &id, records, Duration::ZERO)
                })
                .await;
            match kept {
                Ok(_) => self.links.poke(link),
                Err(error) => {
                    tracing::warn!(%link, connector = %self.connector, error = %error_chain(&error), "a change notice was not kept; asking a run");
                    self.links.ask(link, false);
                }
            }
        }
    }
}
