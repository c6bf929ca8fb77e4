//! The use cases: a `Workspace` over a loaded configuration runs and plans links, checks the
//! connectors, reports status, lists and acts on reviews, outbox entries and the history, and
//! purges the history and erases a record.
//! Every method returns typed data that derives `serde::Serialize` and prints nothing, so the
//! command line and a service render and serialise the same values.

mod check;
mod error;
mod history;
mod outbox;
mod purge;
mod reviews;
mod run;
mod status;
mod webhooks;

use std::path::Path;

use serde::Serialize;

use crate::Config;
use crate::registry::AnyStore;

pub use check::{CheckReport, ConnectorCheck};
pub use error::WorkspaceError;
pub use history::{DayActivity, RunHistory, audit_csv, history_csv};
pub use outbox::OutboxEntryView;
pub use purge::{Erasure, LinkPurge};
pub use reviews::{Resolution, Resolved, ReviewDetail};
pub use run::{Outcome, RunObserver, RunScope, RunsOutcome, Unobserved};
pub use status::{LinkStatus, OutboxCounts, ReviewCounts};

// The engine's and the store's types that the use cases return or take, named through this
// module so that their callers depend on the app alone.
pub use fieldsync_connector::{Capabilities, FeedOpener, Probe};
pub use fieldsync_engine::{
    Action, CancellationToken, FailureOutcome, GuardKind, GuardStop, NoProgress, Progress, ReportLine,
    RunReport, RunStats, SidePair, SideStats, WriteFailure, error_chain,
};
pub use fieldsync_model::{LinkName, RecordKey, RunId, Side, Value};
pub use fieldsync_store::{
    AuditEntry, AuditEvent, AuditValues, Decision, ErasedRecord, NewReview, OutboxStatus, PurgedHistory,
    Review, ReviewKind, ReviewStatus, RunRow, RunStatus,
};
pub use jiff::Timestamp;

/// One page of a list, newest first.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Page<T> {
    /// The items of this page.
    pub items: Vec<T>,
    /// How many more there are beyond this page.
    pub more: u64,
    /// The `before` that lists the next page, when there are more.
    pub next_before: Option<i64>,
}

impl<T> Page<T> {
    /// A page of `items` with `more` beyond it; `id` gives the number the next page starts
    /// before.
    fn new(items: Vec<T>, more: u64, id: impl Fn(&T) -> i64) -> Self {
        let next_before = items.last().map(id).filter(|_| more > 0);
        Self { items, more, next_before }
    }
}

/// The configuration with its state store: where every use case starts.
pub struct Workspace {
    /// The configuration, validated.
    config: Config,
    /// The state store, opened by the first use case that needs it (`check` does not).
    store: Option<AnyStore>,
    /// Cancels the runs of this workspace (see `Workspace::cancellation`).
    cancel: CancellationToken,
    /// At most this many runs at once across every process sharing the state store, for a
    /// service's runs (`Workspace::serving`); none for the command line's.
    max_running: Option<usize>,
    /// The organisation the use cases are limited to (`Workspace::within`), if one.
    organisation: Option<String>,
}

impl Workspace {
    /// A workspace over a configuration already loaded.
    pub fn new(config: Config) -> Self {
        Self { config, store: None, cancel: CancellationToken::new(), max_running: None, organisation: None }
    }

    /// A workspace for a service's runs: `cancel` cancels them (a service gives every
    /// workspace it makes the token it cancels on shutdown), and a run starts only while fewer
    /// than `[server] max_concurrent_runs` runs go on across every process sharing the state
    /// store (else it fails with `StoreError::AtCapacity`, before it reads anything).
    pub fn serving(config: Config, cancel: CancellationToken) -> Self {
        let max_running = Some(config.server.max_concurrent_runs);
        Self { config, store: None, cancel, max_running, organisation: None }
    }

    /// Loads and validates the configuration at `path` (`crate::load`), for every use case.
    ///
    /// # Errors
    ///
    /// `WorkspaceError::Config` when the file cannot be read or is not valid.
    pub fn open(path: &Path) -> Result<Self, WorkspaceError> {
        Ok(Self::new(crate::load(path)?))
    }

    /// Loads the configuration at `path` for the use cases that open no connector (status,
    /// history, reviews, the outbox): connectors whose `${NAME}` is unset are left out
    /// (`crate::load_offline`), so these need no secrets.
    ///
    /// # Errors
    ///
    /// `WorkspaceError::Config` when the file cannot be read or is not valid.
    pub fn open_offline(path: &Path) -> Result<Self, WorkspaceError> {
        Ok(Self::new(crate::load_offline(path)?))
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// This workspace limited to one organisation's links (`--org`, `?org=`, a token limited
    /// to one): it runs, lists and acts on those only, also for an organisation no longer in
    /// the list whose history the state store keeps; a row of another's is refused
    /// (`OtherOrganisation`). `None` leaves it as it is.
    ///
    /// # Errors
    ///
    /// `NoOrganisations` when the configuration has no `[organisations]`.
    pub fn within(mut self, organisation: Option<&str>) -> Result<Self, WorkspaceError> {
        self.limit_to(organisation)?;
        Ok(self)
    }

    /// Limits the use cases to `organisation`'s links from now on, or lifts the limit with
    /// `None` (for a workspace that serves requests of several callers, each its own).
    ///
    /// # Errors
    ///
    /// `NoOrganisations` when the configuration has no `[organisations]`.
    pub fn limit_to(&mut self, organisation: Option<&str>) -> Result<(), WorkspaceError> {
        if organisation.is_some() && self.config.organisations.is_none() {
            return Err(WorkspaceError::NoOrganisations);
        }
        self.organisation = organisation.map(str::to_string);
        Ok(())
    }

    /// Whether the link `link` is one the use cases may show and act on.
    fn shows(&self, link: &crate::LinkConfig) -> bool {
        self.organisation.as_ref().is_none_or(|organisation| link.is_of(organisation))
    }

    /// The links whose rows the use cases may show, when limited to an organisation: its
    /// instance of every `for_each` link.
    fn scope(&self) -> Option<Vec<String>> {
        let organisation = self.organisation.as_ref()?;
        let for_each = self.config.organisations.as_ref().map(|organisations| organisations.for_each.iter());
        Some(
            for_each
                .into_iter()
                .flatten()
                .map(|link| crate::config::instance_name(link, organisation))
                .collect(),
        )
    }

    /// Refuses row `id` (`what`) of `link` when this workspace is limited to another
    /// organisation.
    fn in_scope(&self, link: &str, what: &'static str, id: i64) -> Result<(), WorkspaceError> {
        match (self.scope(), &self.organisation) {
            (Some(links), Some(organisation)) if !links.iter().any(|own| own == link) => {
                Err(WorkspaceError::OtherOrganisation { what, id, organisation: organisation.clone() })
            }
            _ => Ok(()),
        }
    }

    /// The state store, opened on first use.
    fn store(&mut self) -> Result<&mut AnyStore, WorkspaceError> {
        open_store(&self.config, &mut self.store)
    }
}

/// `audit`, entries of the history of `link`, as that history keeps values now (`audit.values`):
/// an entry written while the link kept more is shown as it would be written today, its values
/// hashed with the same digest or left out; a link no longer configured shows its entries as
/// they were written.
fn as_kept(config: &Config, link: &str, mut audit: Vec<AuditEntry>) -> Vec<AuditEntry> {
    if let Some(link_config) = config.links.get(link) {
        link_config.spec.audit.keep_all(link, &mut audit);
    }
    audit
}

/// The state store of `config`, kept in `slot`: opened the first time, the same one after.
/// A free function, so that a use case may hold the configuration and the store at once.
fn open_store<'store>(
    config: &Config,
    slot: &'store mut Option<AnyStore>,
) -> Result<&'store mut AnyStore, WorkspaceError> {
    let store = match slot.take() {
        Some(store) => store,
        None => crate::registry::open_store(&config.state)
            .map_err(|source| WorkspaceError::OpenStore { location: config.state.to_string(), source })?,
    };
    Ok(slot.insert(store))
}
