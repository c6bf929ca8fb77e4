//! The run history: runs listed a page at a time, one run with every decision and write it
//! audited, and an export of the latest runs. Reads the state store only.

use fieldsync_model::RunId;
use fieldsync_store::StateStore as _;
use fieldsync_store::{AuditEntry, ListQuery, RunRow, RunStatus};
use jiff::civil::Date;
use jiff::{Timestamp, tz::TimeZone};
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

/// What the runs of every link did on one day (UTC).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DayActivity {
    /// The day.
    pub day: Date,
    /// Runs started that day.
    pub runs: u64,
    /// Writes made and verified.
    pub writes: u64,
    /// Conflicts settled by a strategy.
    pub conflicts: u64,
    /// Reviews opened or refreshed (conflicts and deletes held for a person).
    pub reviews: u64,
    /// Writes that failed for good, and runs that failed.
    pub failures: u64,
}

impl Workspace {
    /// The last `days` days up to `now`'s (UTC), oldest first, each with what the runs
    /// started that day did; a day without runs counts zeros.
    ///
    /// # Errors
    ///
    /// When the state store cannot be opened or read.
    pub fn activity(&mut self, days: u16, now: Timestamp) -> Result<Vec<DayActivity>, WorkspaceError> {
        let today = now.to_zoned(TimeZone::UTC).date();
        let mut activity: Vec<DayActivity> = (0..i32::from(days))
            .rev()
            .filter_map(|back| today.checked_sub(jiff::Span::new().days(back)).ok())
            .map(|day| DayActivity { day, runs: 0, writes: 0, conflicts: 0, reviews: 0, failures: 0 })
            .collect();
        let Some(first) = activity.first().map(|first| first.day) else { return Ok(activity) };
        let since = first.to_zoned(TimeZone::UTC).map_or(now, |start| start.timestamp());
        let scope = self.scope();
        let runs = self.store()?.runs_since(since)?.into_iter();
        for run in runs.filter(|run| scope.as_ref().is_none_or(|links| links.contains(&run.link))) {
            let day = run.started_at.to_zoned(TimeZone::UTC).date();
            let Some(counts) = activity.iter_mut().find(|counts| counts.day == day) else { continue };
            counts.runs += 1;
            counts.writes += run.stat("/writes_done");
            counts.conflicts += run.stat("/conflicts_resolved");
            counts.reviews += run.stat("/reviews_open");
            counts.failures += run.stat("/writes_dead") + u64::from(run.status == RunStatus::Failed);
        }
        Ok(activity)
    }

    /// A page of runs, newest first; `limit` 0 for all.
    ///
    /// # Errors
    ///
    /// When the state store cannot be opened or read.
    pub fn runs(&mut self, before: Option<i64>, limit: usize) -> Result<Page<RunRow>, WorkspaceError> {
        let scope = self.scope();
        let page = self.store()?.runs_page(ListQuery {
            link: None,
            links: scope.as_deref(),
            status: None,
            before: before.map(RunId),
            limit,
        })?;
        Ok(Page::new(page.rows, page.more, |run| run.id.0))
    }

    /// One run with its audit trail, its values as the link's history keeps them now
    /// (`audit.values`).
    ///
    /// # Errors
    ///
    /// `NotFound` when there is no such run; `Store` when the state store fails.
    pub fn run_history(&mut self, id: i64) -> Result<RunHistory, WorkspaceError> {
        let run = self.store()?.run(RunId(id))?;
        self.in_scope(&run.link, "run", id)?;
        let audit = self.store()?.audit_for_run(RunId(id))?;
        let audit = super::as_kept(&self.config, &run.link, audit);
        Ok(RunHistory { run, audit })
    }

    /// The latest `limit` runs, newest first, each with its audit trail when `with_audit`
    /// (an export of the statistics alone does not read it), its values as each link's history
    /// keeps them now.
    ///
    /// # Errors
    ///
    /// When the state store cannot be opened or read.
    pub fn export_history(
        &mut self,
        limit: usize,
        with_audit: bool,
    ) -> Result<Vec<RunHistory>, WorkspaceError> {
        let scope = self.scope();
        let query = ListQuery { link: None, links: scope.as_deref(), status: None, before: None, limit };
        let Workspace { config, store, .. } = self;
        let store = super::open_store(config, store)?;
        let runs = store.runs_page(query)?.rows;
        let mut history = Vec::with_capacity(runs.len());
        for run in runs {
            let audit = if with_audit { store.audit_for_run(run.id)? } else { Vec::new() };
            let audit = super::as_kept(config, &run.link, audit);
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

/// Audit entries as CSV, one row an entry: what happened to which record's field, the
/// baseline, both sides' values and the value written or decided (as JSON), and why.
///
/// # Errors
///
/// When the CSV writer fails.
pub fn audit_csv(audit: &[AuditEntry]) -> Result<Vec<u8>, csv::Error> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record([
        "at", "run", "key", "field", "event", "side", "base", "left", "right", "value", "reason",
    ])?;
    let value = |value: &Option<fieldsync_model::Value>| {
        value.as_ref().map(|value| serde_json::to_string(value).unwrap_or_default()).unwrap_or_default()
    };
    for entry in audit {
        writer.write_record([
            entry.at.to_string(),
            entry.run_id.map(|run| run.to_string()).unwrap_or_default(),
            entry.key.as_str().to_string(),
            entry.field.clone().unwrap_or_default(),
            entry.event.to_string(),
            entry.side.map(|side| side.to_string()).unwrap_or_default(),
            value(&entry.base),
            value(&entry.left),
            value(&entry.right),
            value(&entry.value),
            entry.reason.clone(),
        ])?;
    }
    writer.into_inner().map_err(|error| error.into_error().into())
}
