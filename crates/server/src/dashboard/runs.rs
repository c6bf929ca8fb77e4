//! The runs: a page of them with their statistics, and one run's page listing every change it
//! detected, conflict it settled or held and write it made, with old and new values and the
//! reason, searchable by record key; both export as CSV or JSON. A `read` session's exports
//! leave the values out.

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use fieldsync_app::workspace::{AuditEntry, RunHistory, RunRow, audit_csv, history_csv};
use maud::{Markup, html};
use serde::Deserialize;

use super::{DashboardError, Session, noted, page, time};
use crate::api::Api;

/// How many runs a page lists.
const PAGE: usize = 50;
/// How many runs the history export holds at most.
const EXPORT_LIMIT: usize = 1000;

/// `?before=` of the list.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ListQuery {
    before: Option<i64>,
}

/// `GET /runs`.
pub(crate) async fn list(
    State(api): State<Api>,
    Extension(session): Extension<Session>,
    Query(query): Query<ListQuery>,
) -> Result<Response, DashboardError> {
    let runs = session.call(&api, move |workspace| workspace.runs(query.before, PAGE)).await?;
    let body = html! {
        p.exports {
            "Export the latest runs' statistics: "
            a href="/runs/export?format=csv" download { "CSV" } ", "
            a href="/runs/export?format=json" download { "JSON (with every change)" }
        }
        @if runs.items.is_empty() {
            p.empty { "No run yet." }
        } @else {
            div.scroll {
                table.runs {
                    thead {
                        tr {
                            th { "Run" } th { "Link" } th { "Mode" } th { "Status" } th { "Started" } th { "Took" }
                            th { "Read L/R" } th { "Changed L/R" } th { "Writes" } th { "Conflicts" }
                            th { "Reviews" } th { "Dead" }
                        }
                    }
                    tbody {
                        @for run in &runs.items {
                            tr data-run=(run.id) {
                                td { a href=(format!("/runs/{}", run.id)) { "#" (run.id) } }
                                td { (run.link) }
                                td { (run.mode) }
                                td { span class={ "status " (run.status) } { (run.status) } }
                                td { (time(run.started_at)) }
                                td { (took(run)) }
                                td { (run.stat("/left/read")) " / " (run.stat("/right/read")) }
                                td { (run.stat("/left/changed")) " / " (run.stat("/right/changed")) }
                                td { (run.stat("/writes_done")) }
                                td { (run.stat("/conflicts_resolved")) }
                                td { (run.stat("/reviews_open")) }
                                td { (run.stat("/writes_dead")) }
                            }
                        }
                    }
                }
            }
            @if let Some(before) = runs.next_before {
                p { a href=(format!("/runs?before={before}")) { "Older runs (" (runs.more) " more)" } }
            }
        }
    };
    Ok(page(&session, "Runs", body).into_response())
}

/// How long a run took, if it ended.
fn took(run: &RunRow) -> String {
    run.finished_at.map_or_else(
        || "—".to_string(),
        |finished| format!("{:.1} s", finished.duration_since(run.started_at).as_secs_f64()),
    )
}

/// `?key=` of a run's page.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct RunQuery {
    /// Only the records whose key holds this text.
    key: Option<String>,
}

/// `GET /runs/{id}`.
pub(crate) async fn show(
    State(api): State<Api>,
    Extension(session): Extension<Session>,
    Path(id): Path<i64>,
    Query(query): Query<RunQuery>,
) -> Result<Response, DashboardError> {
    let RunHistory { run, audit } = session.call(&api, move |workspace| workspace.run_history(id)).await?;
    let key = query.key.as_deref().map(str::trim).filter(|key| !key.is_empty());
    let shown: Vec<AuditEntry> = audit
        .iter()
        .filter(|entry| key.is_none_or(|key| entry.key.as_str().contains(key)))
        .cloned()
        .collect();
    let body = html! {
        dl.run {
            dt { "Link" } dd { (run.link) }
            dt { "Mode" } dd { (run.mode) }
            dt { "Status" } dd { span #status class={ "status " (run.status) } { (run.status) } }
            dt { "Started" } dd { (time(run.started_at)) }
            dt { "Took" } dd { (took(&run)) }
            dt { "Read" } dd { (run.stat("/left/read")) " left, " (run.stat("/right/read")) " right" }
            dt { "Writes" } dd {
                (run.stat("/writes_done")) " done, " (run.stat("/writes_retrying")) " retrying, "
                (run.stat("/writes_dead")) " dead"
            }
            dt { "Conflicts" } dd {
                (run.stat("/conflicts_resolved")) " settled, " (run.stat("/reviews_open")) " held for review, "
                (run.stat("/reviews_closed")) " reviews closed"
            }
            @if let Some(error) = &run.error { dt { "Error" } dd.error { (error) } }
        }
        form.filter method="get" action=(format!("/runs/{id}")) {
            label for="key" { "Record key" }
            input #key type="search" name="key" value=(key.unwrap_or(""));
            button type="submit" { "Search" }
            " "
            a href=(format!("/runs/{id}/export?format=csv")) download { "CSV" } " "
            a href=(format!("/runs/{id}/export?format=json")) download { "JSON" }
        }
        p { (shown.len()) " of " (audit.len()) " entries" @if let Some(key) = key { " for keys holding “" (key) "”" } "." }
        (audit_table(&session, &shown, false))
    };
    Ok(page(&session, &format!("Run #{id}"), body).into_response())
}

/// Audit entries as a table: what happened to which record's field, with the baseline, both
/// sides' values, the value written or decided, and why; with each entry's run when `runs`.
pub(crate) fn audit_table(session: &Session, audit: &[AuditEntry], runs: bool) -> Markup {
    if audit.is_empty() {
        return html! { p.empty { "Nothing audited." } };
    }
    html! {
        div.scroll {
            table.audit {
                thead {
                    tr {
                        th { "At" } @if runs { th { "Run" } } th { "Key" } th { "Field" } th { "What" } th { "Side" }
                        th { "Baseline" } th { "Left" } th { "Right" } th { "Value" } th { "Why" }
                    }
                }
                tbody {
                    @for entry in audit {
                        tr data-key=(entry.key.as_str()) data-event=(entry.event) {
                            td { (time(entry.at)) }
                            @if runs {
                                td { @if let Some(run) = entry.run_id { a href=(format!("/runs/{run}")) { "#" (run) } } }
                            }
                            td { (entry.key.as_str()) }
                            td { (entry.field.as_deref().unwrap_or("")) }
                            td { (entry.event) }
                            td { @if let Some(side) = entry.side { (side) } }
                            td { (noted(session, entry.base.as_ref())) }
                            td { (noted(session, entry.left.as_ref())) }
                            td { (noted(session, entry.right.as_ref())) }
                            td.value { (noted(session, entry.value.as_ref())) }
                            td { (entry.reason) }
                        }
                    }
                }
            }
        }
    }
}

/// `?format=` of an export.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ExportQuery {
    format: Option<String>,
}

/// An audit trail as a `read` session may take it away: the values left out.
fn for_session(session: &Session, mut audit: Vec<AuditEntry>) -> Vec<AuditEntry> {
    if !session.caller.may_act() {
        for entry in &mut audit {
            (entry.base, entry.left, entry.right, entry.value) = (None, None, None, None);
        }
    }
    audit
}

/// A CSV download named `name`.
fn csv_download(
    name: &str,
    csv: Result<Vec<u8>, impl std::fmt::Display>,
) -> Result<Response, DashboardError> {
    let csv = csv.map_err(|error| {
        DashboardError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("writing CSV: {error}"))
    })?;
    let disposition = format!("attachment; filename=\"{name}\"");
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        csv,
    )
        .into_response())
}

/// The format an export asks for, `csv` or `json`.
fn is_csv(query: &ExportQuery) -> Result<bool, DashboardError> {
    match query.format.as_deref() {
        Some("csv") => Ok(true),
        None | Some("json") => Ok(false),
        Some(other) => {
            Err(DashboardError::new(StatusCode::BAD_REQUEST, format!("no format {other:?}: csv or json")))
        }
    }
}

/// `GET /runs/{id}/export?format=csv|json`: one run's audit trail (CSV) or the run with it (JSON).
pub(crate) async fn export_run(
    State(api): State<Api>,
    Extension(session): Extension<Session>,
    Path(id): Path<i64>,
    Query(query): Query<ExportQuery>,
) -> Result<Response, DashboardError> {
    let csv = is_csv(&query)?;
    let RunHistory { run, audit } = session.call(&api, move |workspace| workspace.run_history(id)).await?;
    let audit = for_session(&session, audit);
    if csv {
        return csv_download(&format!("fieldsync-run-{id}.csv"), audit_csv(&audit));
    }
    Ok(Json(RunHistory { run, audit }).into_response())
}

/// `GET /runs/export?format=csv|json`: the latest runs as `fieldsync history export` writes
/// them, their statistics (CSV) or with every change (JSON).
pub(crate) async fn export_history(
    State(api): State<Api>,
    Extension(session): Extension<Session>,
    Query(query): Query<ExportQuery>,
) -> Result<Response, DashboardError> {
    let csv = is_csv(&query)?;
    let history = session.call(&api, move |workspace| workspace.export_history(EXPORT_LIMIT, !csv)).await?;
    if csv {
        return csv_download("fieldsync-history.csv", history_csv(&history));
    }
    let history: Vec<RunHistory> = history
        .into_iter()
        .map(|RunHistory { run, audit }| RunHistory { run, audit: for_session(&session, audit) })
        .collect();
    Ok(Json(history).into_response())
}
