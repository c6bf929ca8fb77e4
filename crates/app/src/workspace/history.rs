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
