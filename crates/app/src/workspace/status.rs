//! `status`: per link, whether it is in step, with the last run and what waits in the outbox
//! and in reviews. Reads the state store only.

use fieldsync_engine::SidePair;
use fieldsync_store::StateStore as _;
use fieldsync_store::{OutboxStatus, ReviewStatus, RunRow};
use serde::Serialize;

use super::{Workspace, WorkspaceError};

/// How many reviews a status counts at most, per state.
const REVIEW_COUNT_LIMIT: usize = 10_000;

/// One link's state.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LinkStatus {
    /// The link.
    pub link: String,
    /// Its connectors' names, left and right.
    #[serde(skip)]
    pub connectors: SidePair<String>,
    /// How many records it keeps in step (live baselines).
    pub records: u64,
    /// True only when nothing waits: no write pending, moved or dead, no review open and no
    /// decision waiting for a run.
    pub in_step: bool,
    /// Its last run, if any.
    pub last_run: Option<RunRow>,
    /// Its outbox.
    pub outbox: OutboxCounts,
    /// Its reviews.
    pub reviews: ReviewCounts,
}

/// A link's outbox entries that wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct OutboxCounts {
    /// Pending, being sent, or moved (planned again by the next run).
    pub pending: u64,
    /// Dead: waiting for a person to retry or drop them.
    pub dead: u64,
}

/// A link's reviews that wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ReviewCounts {
    /// Open: waiting for a person.
    pub open: u64,
    /// Decided, waiting for the next run to apply the decision.
    pub resolved: u64,
}

impl Workspace {
    /// Every link's state, in the configuration's order.
    ///
    /// # Errors
    ///
    /// When the state store cannot be opened or read.
    pub fn status(&mut self) -> Result<Vec<LinkStatus>, WorkspaceError> {
        let names: Vec<(String, SidePair<String>)> = self
            .config
            .links
            .iter()
            .filter(|(_, link)| self.shows(link))
            .map(|(name, link)| (name.clone(), link.connectors.clone()))
            .collect();
        let store = self.store()?;
        let mut links = Vec::with_capacity(names.len());
        for (name, connectors) in names {
            let last_run = store.list_runs(Some(&name), 1)?.pop();
            let counts = store.outbox_counts(&name)?;
            let count = |status| counts.get(&status).copied().unwrap_or(0);
            let reviews = |status| -> Result<u64, WorkspaceError> {
                Ok(store.list_reviews(Some(&name), Some(status), REVIEW_COUNT_LIMIT)?.len() as u64)
            };
            let reviews = ReviewCounts {
                open: reviews(ReviewStatus::Open)?,
                resolved: reviews(ReviewStatus::Resolved)?,
            };
            let outbox = OutboxCounts {
                pending: count(OutboxStatus::Pending)
                    + count(OutboxStatus::Sending)
                    + count(OutboxStatus::Moved),
                dead: count(OutboxStatus::Dead),
            };
            let records = store.baseline_count(&name)?;
            let in_step =
                outbox.pending == 0 && outbox.dead == 0 && reviews.open == 0 && reviews.resolved == 0;
            links.push(LinkStatus { link: name, connectors, records, in_step, last_run, outbox, reviews });
        }
        Ok(links)
    }
}
