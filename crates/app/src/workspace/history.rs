//! The run history: runs listed a page at a time, one run with every decision and write it
//! audited, and an export of the latest runs. Reads the state store only.

use fieldsync_model::RunId;
use fieldsync_store::StateStore as _;
use fieldsync_store::{AuditEntry, ListQuery, RunRow};
use serde::Serialize;

use super::{Page, Workspace, WorkspaceError};

/// A run with its audit trail.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunHistory {
    /// The run.
    pub run: RunRow,
    /// Every detection, decision and write it audited, in order.
    pub audit: Vec<AuditEntry>,
}

impl Workspace {
    /// A page of runs, newest first; `limit` 0 for all.
    ///
    /// # Errors
    ///
    /// When the state store cannot be opened or read.
    pub fn runs(&mut self, before: Option<i64>, limit: usize) -> Result<Page<RunRow>, WorkspaceError> {
        let page = self.store()?.runs_page(ListQuery {
            link: None,
            status: None,
            before: before.map(RunId),
            limit,
        })?;
        Ok(Page::new(page.rows, page.more, |run| run.id.0))
    }

    /// One run with its audit trail.
    ///
    /// # Errors
    ///
    /// `NotFound` when there is no such run; `Store` when the state store fails.
    pub fn run_history(&mut self, id: i64) -> Result<RunHistory, WorkspaceError> {
        let store = self.store()?;
        let run = store.run(RunId(id))?;
        let audit = store.audit_for_run(RunId(id))?;
        Ok(RunHistory { run, audit })
    }

    /// The latest `limit` runs, newest first, each with its audit trail when `with_audit`
    /// (an export of the statistics alone does not read it).
    ///
    /// # Errors
    ///
    /// When the state store cannot be opened or read.
    pub fn export_history(
        &mut self,
        limit: usize,
        with_audit: bool,
    ) -> Result<Vec<RunHistory>, WorkspaceError> {
        let store = self.store()?;
        let runs = store.list_runs(None, limit)?;
        let mut history = Vec::with_capacity(runs.len());
        for run in runs {
            let audit = if with_audit { store.audit_for_run(run.id)? } else { Vec::new() };
            history.push(RunHistory { run, audit });
        }
        Ok(history)
    }
}

/// Runs with their statistics as CSV, one row a run.
///
/// # Errors
///
/// When the CSV writer fails.
pub fn history_csv(history: &[RunHistory]) -> Result<Vec<u8>, csv::Error> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record([
        "run",
        "link",
        "mode",
        "status",
        "started_at",
        "finished_at",
        "left_read",
        "right_read",
        "left_changed",
        "right_changed",
        "writes_done",
        "writes_retrying",
        "writes_dead",
        "conflicts_resolved",
        "false_conflicts",
        "reviews_open",
        "invalid_values",
        "error",
    ])?;
    for RunHistory { run, .. } in history {
        let stat = |path: &str| run.stat(path).to_string();
        writer.write_record([
            run.id.to_string(),
            run.link.clone(),
            run.mode.clone(),
            run.status.to_string(),
            run.started_at.to_string(),
            run.finished_at.map(|at| at.to_string()).unwrap_or_default(),
            stat("/left/read"),
            stat("/right/read"),
            stat("/left/changed"),
            stat("/right/changed"),
            stat("/writes_done"),
            stat("/writes_retrying"),
            stat("/writes_dead"),
            stat("/conflicts_resolved"),
            stat("/false_conflicts"),
            stat("/reviews_open"),
            stat("/invalid_values"),
            run.error.clone().unwrap_or_default(),
        ])?;
    }
    writer.into_inner().map_err(|error| error.into_error().into())
}
