//! The overview at `/`: every link with its state at a glance (last run and its outcome, next
//! run, whether its sides could be read, waiting writes, open reviews), the chart of the last
//! 30 days, and the buttons that run or plan a link now. A plan is shown before anything is
//! written, with a button that runs the link.

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use fieldsync_app::workspace::{DayActivity, LinkStatus, RunReport};
use jiff::Timestamp;
use maud::{Markup, html};

use super::{DashboardError, Session, chart, label, page, see_other, time, value};
use crate::api::Api;
use crate::links::LinkState;

/// How many days the chart shows.
const CHART_DAYS: u16 = 30;

/// `GET /`.
pub(crate) async fn show(
    State(api): State<Api>,
    Extension(session): Extension<Session>,
    Query(filter): Query<OrganisationFilter>,
) -> Result<Response, DashboardError> {
    let asked = filter.org.filter(|org| !org.is_empty());
    let org = session
        .caller
        .organisation(asked.as_deref())
        .map_err(|message| DashboardError::new(StatusCode::FORBIDDEN, message))?;
    let shown = org.clone();
    let (statuses, activity) = api
        .workspace
        .call_within(org, |workspace| {
            Ok((workspace.status()?, workspace.activity(CHART_DAYS, Timestamp::now())?))
        })
        .await?;
    let body = html! {
        @if let Some(organisations) = &api.config.organisations
            && session.caller.organisation.is_none()
        {
            form.filter method="get" action="/" {
                label { "Organisation "
                    select name="org" {
                        option value="" selected[shown.is_none()] { "every organisation" }
                        @for listed in &organisations.list {
                            option value=(listed.id) selected[shown.as_deref() == Some(listed.id.as_str())] {
                                (listed.name) " (" (listed.id) ")"
                            }
                        }
                    }
                }
                " " button type="submit" { "Show" }
            }
        }
        @if statuses.is_empty() {
            p { "No link is configured." }
        }
        div.links {
            @for status in &statuses {
                (link_card(&api, &session, status))
            }
        }
        h2 { "The last " (CHART_DAYS) " days" }
        (chart::activity(&activity))
        (activity_note(&activity))
    };
    Ok(page(&session, "Links", body).into_response())
}

/// `?org=`: the organisation whose links the overview shows.
#[derive(serde::Deserialize)]
pub(crate) struct OrganisationFilter {
    org: Option<String>,
}

/// One link's state and its buttons.
fn link_card(api: &Api, session: &Session, status: &LinkStatus) -> Markup {
    let service = api.links.state(&status.link).unwrap_or_default();
    let schedule = api.config.links.get(&status.link).and_then(|link| link.schedule.as_ref()).map(label);
    html! {
        section.link data-link=(status.link) aria-labelledby=(format!("link-{}", status.link)) {
            h2 id=(format!("link-{}", status.link)) {
                (status.link) " "
                span.sides { (status.connectors.left) " ⇄ " (status.connectors.right) }
                " "
                @if status.in_step { span.badge.ok { "in step" } } @else { span.badge.warn { "waiting" } }
            }
            dl {
                dt { "Last run" }
                dd {
                    @match &status.last_run {
                        Some(run) => {
                            a href=(format!("/runs/{}", run.id)) { "#" (run.id) } " "
                            span class={ "status " (run.status) } { (run.status) } " · " (time(run.started_at))
                        }
                        None => "never",
                    }
                }
                dt { "Next run" }
                dd {
                    @if service.running { "running now" @if service.queued { ", another queued" } }
                    @else if let Some(next) = service.next_run { (time(next)) }
                    @else { "when asked" }
                    @if let Some(schedule) = &schedule { " (" (schedule) ")" }
                }
                dt { "Sides" }
                dd { (sides(&service)) }
                dt { "Writes" }
                dd {
                    a href="/outbox" { (status.outbox.pending) " pending, " (status.outbox.dead) " dead" }
                }
                dt { "Reviews" }
                dd {
                    a.reviews href=(format!("/reviews?link={}", status.link)) { (status.reviews.open) " open" }
                    @if status.reviews.resolved > 0 { ", " (status.reviews.resolved) " decided, waiting for a run" }
                }
                dt { "Records" }
                dd { (status.records) }
            }
            @if session.caller.may_act() {
                div.actions {
                    form method="post" action=(format!("/links/{}/run", status.link)) {
                        (session.csrf_field())
                        button.run type="submit" { "Run now" }
                    }
                    form method="post" action=(format!("/links/{}/plan", status.link)) {
                        (session.csrf_field())
                        button.plan type="submit" { "Plan now" }
                    }
                }
            }
        }
    }
}

/// Whether the link's sides could be read the last time it tried.
fn sides(service: &LinkState) -> Markup {
    match (&service.waiting_since, &service.waiting_for) {
        (Some(since), side) => html! {
            span.badge.bad { "unreachable" }
            " " @if let Some(side) = side { (side) " " } "since " (time(*since))
            @if let Some(error) = &service.last_error { br; small.error { (error) } }
        },
        (None, _) => html! { span.badge.ok { "reachable" } },
    }
}

/// The chart's figures in words, for a screen reader and for whoever cannot see it.
fn activity_note(activity: &[DayActivity]) -> Markup {
    let sum = |count: fn(&DayActivity) -> u64| activity.iter().map(count).sum::<u64>();
    html! {
        p.note {
            (sum(|day| day.runs)) " runs: "
            (sum(|day| day.writes)) " writes, "
            (sum(|day| day.conflicts)) " conflicts settled, "
            (sum(|day| day.reviews)) " reviews held, "
            (sum(|day| day.failures)) " failures (days in UTC)."
        }
    }
}

/// `POST /links/{link}/run`: a run is queued (behind the one going on, if any).
pub(crate) async fn run_now(
    State(api): State<Api>,
    Extension(session): Extension<Session>,
    Path(link): Path<String>,
) -> Result<Response, DashboardError> {
    crate::api::queue_run(&api, &link, session.caller.organisation.as_deref(), false)?;
    session.notify(format!("A run of {link} is queued; its page shows under Runs once it starts."));
    Ok(see_other("/"))
}

/// `POST /links/{link}/plan`: what a run would do now, writing nothing, with a button that
/// runs it.
pub(crate) async fn plan_now(
    State(api): State<Api>,
    Extension(session): Extension<Session>,
    Path(link): Path<String>,
) -> Result<Response, DashboardError> {
    let organisation = session.caller.organisation.as_deref();
    let outcome = crate::api::plan_link(&api, link.clone(), organisation, false).await?;
    let body = html! {
        p { "What a run of " strong { (link) } " would do now. Nothing was written." }
        @for report in &outcome.reports { (plan_report(&session, report)) }
        form.actions method="post" action=(format!("/links/{link}/run")) {
            (session.csrf_field())
            button.run type="submit" { "Run now" }
            " " a href="/" { "Back to the links" }
        }
    };
    Ok(page(&session, &format!("Plan of {link}"), body).into_response())
}

/// A plan's counts and lines.
fn plan_report(session: &Session, report: &RunReport) -> Markup {
    let stats = &report.stats;
    html! {
        ul.counts {
            li { "Read: " (stats.left.read) " on " (report.sides.left) ", " (stats.right.read) " on " (report.sides.right) }
            li { "Changed: " (stats.left.changed) " on " (report.sides.left) ", " (stats.right.changed) " on " (report.sides.right) }
            li { "Conflicts settled: " (stats.conflicts_resolved) ", reviews: " (stats.reviews_open) }
            @if let Some(guard) = &report.guard {
                li.error {
                    "The guard would stop the run: " (guard.count) " of " (guard.total) " records on "
                    (report.sides.get(guard.side)) " (" (label(&guard.kind)) ", limit " (guard.limit) ")"
                }
            }
        }
        @if report.lines.is_empty() {
            p { "Nothing to write." }
        } @else {
            div.scroll {
                table {
                    thead { tr { th { "Key" } th { "Field" } th { "Action" } th { "To" } th { "Value" } th { "Why" } } }
                    tbody {
                        @for line in &report.lines {
                            tr {
                                td { (line.key.as_str()) }
                                td { (line.field.as_deref().unwrap_or("(record)")) }
                                td { (label(&line.action)) }
                                td { @if let Some(side) = line.target { (report.sides.get(side)) } }
                                td { (value(session, line.value.as_ref())) }
                                td { (line.reason) }
                            }
                        }
                    }
                }
            }
            @if report.lines_omitted > 0 { p { "… and " (report.lines_omitted) " more." } }
        }
    }
}
