//! Running and planning links: each selected link's connectors are opened and the engine's
//! `run_link` runs it (until the workspace's runs are cancelled); a `RunObserver` shows
//! progress and each report as it comes.

use fieldsync_engine::{
    CancellationToken, LinkRun, NoProgress, Progress, RunOptions, RunReport, SidePair, SystemClock, run_link,
};
use fieldsync_model::RecordId;
use fieldsync_store::{ListQuery, RunStatus, StateStore as _};
use jiff::Timestamp;
use serde::Serialize;

use super::{Workspace, WorkspaceError, open_store};
use crate::{AnyConnector, Config, LinkConfig, open_connector};

/// How many waiting webhooks a targeted run takes at most: a burst of more is read by an
/// incremental run, which costs about the same as a few hundred look-ups by id.
const TARGETED_WEBHOOKS: usize = 200;

/// Which links a run or plan covers, and how they are read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunScope {
    /// The link; every link when `None`.
    pub link: Option<String>,
    /// Read both sides in full, finding hard deletes and anything a cursor missed.
    pub full: bool,
}

/// How runs ended, worst last: the command line's exit codes 0, 1 and 3.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Every planned write was made and verified (or there was nothing to write).
    Done,
    /// Some writes failed (they stay in the outbox), or a link could not run.
    WritesFailed,
    /// The guard stopped a run: nothing was written.
    Guarded,
    /// The runs were cancelled (`Workspace::cancellation`): the run going on stopped between two
    /// commits and recorded itself as cancelled; the links after it did not run.
    Cancelled,
}

impl Outcome {
    /// How one run ended.
    pub fn of(report: &RunReport) -> Self {
        match report.status {
            RunStatus::Guarded => Outcome::Guarded,
            RunStatus::Partial | RunStatus::Failed => Outcome::WritesFailed,
            RunStatus::Done | RunStatus::Running => Outcome::Done,
            RunStatus::Cancelled => Outcome::Cancelled,
        }
    }
}

/// What running (or planning) the selected links did.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunsOutcome {
    /// How they ended, the worst of them.
    pub outcome: Outcome,
    /// One report per link that ran, in the configuration's order.
    pub reports: Vec<RunReport>,
}

/// Watches runs as they go: a progress display per link, and each link's end.
pub trait RunObserver {
    /// The progress display of one link's run.
    type Progress: Progress;

    /// A link's run starts.
    fn link_starts(&mut self, link: &str) -> Self::Progress;

    /// A link's run ended: its report, or `None` when it could not run.
    fn link_ends(&mut self, progress: Self::Progress, report: Option<&RunReport>);

    /// A link could not run and the workspace goes on with the others (it runs every link
    /// of several); otherwise the error is what the run returns.
    fn link_failed(&mut self, link: &str, error: &WorkspaceError);
}

/// Watches nothing: runs whose progress nobody shows (a service's).
#[derive(Clone, Copy, Debug, Default)]
pub struct Unobserved;

impl RunObserver for Unobserved {
    type Progress = NoProgress;

    fn link_starts(&mut self, _link: &str) -> NoProgress {
        NoProgress
    }

    fn link_ends(&mut self, _progress: NoProgress, _report: Option<&RunReport>) {}

    fn link_failed(&mut self, _link: &str, _error: &WorkspaceError) {}
}

impl Workspace {
    /// A token that cancels this workspace's runs: the run going on stops at its next point
    /// between two commits, leaving what a kill there would but recorded as cancelled and its
    /// lease released, and no further link runs. The command line cancels it on Ctrl-C.
    pub fn cancellation(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Runs the links of `scope` once; with `force`, past the guard.
    ///
    /// # Errors
    ///
    /// `UnknownLink` for a link the configuration lacks; `OpenStore`; `OpenConnector` when a
    /// connector cannot be opened; and, when one link was asked for (or only one is
    /// configured), `Run` when it could not run. With several links, a link whose run fails
    /// is left out of the reports, told to the observer, and the outcome is at least
    /// `WritesFailed`. Failed writes are not errors: they are in the reports.
    pub async fn run(
        &mut self,
        scope: &RunScope,
        force: bool,
        observer: &mut impl RunObserver,
    ) -> Result<RunsOutcome, WorkspaceError> {
        self.run_links(scope, RunOptions { full: scope.full, force, ..RunOptions::default() }, None, observer)
            .await
    }

    /// Runs `link` for the webhooks that wait for it: a targeted run that reads only the
    /// records they name, by id on the side each came from, when every one names records and
    /// at most `TARGETED_WEBHOOKS` wait; an incremental run otherwise. Then marks the webhooks
    /// it read as read: for a targeted run, the very webhooks whose records it read (one kept
    /// while it ran waits for the next); for an incremental run, every one that came before it
    /// started.
    ///
    /// # Errors
    ///
    /// As `run`.
    pub async fn run_hooked(
        &mut self,
        link: &str,
        observer: &mut impl RunObserver,
    ) -> Result<RunsOutcome, WorkspaceError> {
        let scope = RunScope { link: Some(link.to_string()), full: false };
        let started = Timestamp::now();
        let named = self
            .store()?
            .webhook_records(link, TARGETED_WEBHOOKS)?
            .filter(|named| !named.webhooks.is_empty());
        let targets = named.as_ref().map(|named| {
            let mut targets = SidePair::new(Vec::new(), Vec::new());
            for (side, id) in &named.records {
                targets.get_mut(*side).push(RecordId::new(id.as_str()));
            }
            targets
        });
        let outcome = self.run_links(&scope, RunOptions::default(), targets.as_ref(), observer).await?;
        match &named {
            Some(named) => self.store()?.settle_named_webhooks(&named.webhooks)?,
            None => self.settle_webhooks(link, started)?,
        }
        Ok(outcome)
    }

    /// What a run of the links of `scope` would do, writing nothing anywhere.
    ///
    /// # Errors
    ///
    /// As `run`.
    pub async fn plan(
        &mut self,
        scope: &RunScope,
        observer: &mut impl RunObserver,
    ) -> Result<RunsOutcome, WorkspaceError> {
        let options = RunOptions { full: scope.full, dry_run: true, ..RunOptions::default() };
        self.run_links(scope, options, None, observer).await
    }

    /// Runs `link` for the slot of its schedule due at `due`, unless a run of it that read both
    /// sides started since (`RunRow::read_both_sides`), checked under the link's lease: of
    /// several processes sharing the state store that have the slot due, exactly one runs it,
    /// and the others get `WorkspaceError::ran_already`. A slot whose run was cancelled or
    /// failed is run again.
    ///
    /// # Errors
    ///
    /// As `run`; `WorkspaceError::ran_already` when the slot was run.
    pub async fn run_scheduled(
        &mut self,
        link: &str,
        due: Timestamp,
        observer: &mut impl RunObserver,
    ) -> Result<RunsOutcome, WorkspaceError> {
        let scope = RunScope { link: Some(link.to_string()), full: false };
        let options = RunOptions { unless_ran_since: Some(due), ..RunOptions::default() };
        self.run_links(&scope, options, None, observer).await
    }

    /// Delivers the due outbox entries of the links of `scope`, reading and planning nothing:
    /// a service's retry timer, between scheduled runs. A link with nothing due once its run
    /// holds it (another process delivered it meanwhile) records no run.
    ///
    /// # Errors
    ///
    /// As `run`; for a link with nothing due, `EngineError::NothingDue`
    /// (`WorkspaceError::ran_already`).
    pub async fn deliver(
        &mut self,
        scope: &RunScope,
        observer: &mut impl RunObserver,
    ) -> Result<RunsOutcome, WorkspaceError> {
        let options = RunOptions { deliver_only: true, only_if_due: true, ..RunOptions::default() };
        self.run_links(scope, options, None, observer).await
    }

    /// When `link` next has an outbox entry due for a retry, if it has one waiting.
    ///
    /// # Errors
    ///
    /// When the state store cannot be opened or read.
    pub fn next_retry(&mut self, link: &str) -> Result<Option<Timestamp>, WorkspaceError> {
        Ok(self.store()?.next_due(link)?)
    }

    /// When the latest run of `link` that read both sides and came to its end started (done,
    /// partial or stopped by the guard; not cancelled, failed, only delivering or targeted at
    /// the records webhooks named), if one did:
    /// what a schedule counts from.
    ///
    /// # Errors
    ///
    /// When the state store cannot be opened or read.
    pub fn last_run_started(&mut self, link: &str) -> Result<Option<Timestamp>, WorkspaceError> {
        let store = self.store()?;
        let mut before = None;
        loop {
            let page = store.runs_page(ListQuery {
                link: Some(link),
                links: None,
                status: None,
                before,
                limit: 100,
            })?;
            if let Some(run) = page.rows.iter().find(|run| run.read_both_sides()) {
                return Ok(Some(run.started_at));
            }
            match page.rows.last() {
                Some(last) if page.more > 0 => before = Some(last.id),
                _ => return Ok(None),
            }
        }
    }

    async fn run_links(
        &mut self,
        scope: &RunScope,
        options: RunOptions,
        targets: Option<&SidePair<Vec<RecordId>>>,
        observer: &mut impl RunObserver,
    ) -> Result<RunsOutcome, WorkspaceError> {
        let shown: Vec<String> = self
            .config
            .links
            .iter()
            .filter(|(_, link)| self.shows(link))
            .map(|(name, _)| name.clone())
            .collect();
        let Workspace { config, store, cancel, max_running, .. } = self;
        let options = RunOptions {
            lease_timeout: Some(config.server.lease_timeout),
            max_running: *max_running,
            ..options
        };
        if let Some(only) = &scope.link
            && !shown.contains(only)
        {
            return Err(WorkspaceError::UnknownLink { name: only.clone(), known: shown });
        }
        let store = open_store(config, store)?;
        let mut outcome = Outcome::Done;
        let mut reports = Vec::new();
        for (name, link) in &config.links {
            if scope.link.as_ref().is_some_and(|only| only != name) || !shown.contains(name) {
                continue;
            }
            if cancel.is_cancelled() {
                outcome = outcome.max(Outcome::Cancelled);
                break;
            }
            let mut connectors = open_connectors(config, link)?;
            let progress = observer.link_starts(name);
            let run = LinkRun {
                spec: &link.spec,
                names: &link.connectors,
                options,
                clock: &SystemClock,
                progress: &progress,
                cancel,
                targets,
            };
            let report = run_link(run, &mut connectors, store)
                .await
                .map_err(|source| WorkspaceError::Run { link: name.clone(), source });
            observer.link_ends(progress, report.as_ref().ok());
            // A link that cannot run (a side unreachable, its lock held) does not stop the others.
            let report = match report {
                Ok(report) => report,
                Err(error) if scope.link.is_none() && config.links.len() > 1 => {
                    observer.link_failed(name, &error);
                    outcome = outcome.max(Outcome::WritesFailed);
                    continue;
                }
                Err(error) => return Err(error),
            };
            outcome = outcome.max(Outcome::of(&report));
            reports.push(report);
        }
        Ok(RunsOutcome { outcome, reports })
    }
}

/// Opens both connectors of a link.
fn open_connectors(config: &Config, link: &LinkConfig) -> Result<SidePair<AnyConnector>, WorkspaceError> {
    let open = |name: &String| {
        open_connector(&config.connectors[name], config.base_dir())
            .map_err(|source| WorkspaceError::OpenConnector { name: name.clone(), source })
    };
    Ok(SidePair::new(open(&link.connectors.left)?, open(&link.connectors.right)?))
}
