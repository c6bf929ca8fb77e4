//! The review queue: each conflict or delete held for a person, with the baseline, both sides'
//! values with their change times (a delete's present side shows its record) and the rule that
//! held it; decided one at a time (keep left, keep right, or a typed
//! value) or many at once, the ones ticked or every open one a filter (link, field) selects.
//! A decision is audited with the token's name; the review's page shows the run that applied it.

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use fieldsync_app::workspace::{
    AuditEntry, AuditEvent, Resolution, Review, ReviewDetail, ReviewStatus, RunId, Value,
};
use jiff::Timestamp;
use maud::{Markup, html};
use serde::Deserialize;

use super::{
    DashboardError, FormPairs, Session, each, form_ids, form_value, label, page, see_other, tick, tick_all,
    time, value,
};
use crate::api::Api;

/// How many reviews the queue lists (and a filter decides) at most.
const LIMIT: usize = 500;

/// The queue's filter, from the query string.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Filter {
    /// One link's reviews.
    link: Option<String>,
    /// One field's reviews.
    field: Option<String>,
    /// `all` for every review, open or not; open ones otherwise.
    status: Option<String>,
}

impl Filter {
    fn link(&self) -> Option<&str> {
        self.link.as_deref().filter(|link| !link.is_empty())
    }

    fn field(&self) -> Option<&str> {
        self.field.as_deref().filter(|field| !field.is_empty())
    }
}

/// The reviews `filter` selects, newest first; open ones unless `every`. The store selects the
/// link's; the field is picked from those.
async fn matching(
    api: &Api,
    session: &Session,
    filter: &Filter,
    every: bool,
) -> Result<Vec<Review>, DashboardError> {
    let link = filter.link().map(str::to_string);
    let page =
        session.call(api, move |workspace| workspace.reviews(link.as_deref(), every, None, LIMIT)).await?;
    let field = filter.field();
    Ok(page
        .items
        .into_iter()
        .filter(|review| field.is_none_or(|field| review.review.field.as_deref() == Some(field)))
        .collect())
}

/// The connector names of a review's sides, `left` and `right` when its link is gone.
fn side_names(api: &Api, link: &str) -> (String, String) {
    api.config.links.get(link).map_or_else(
        || ("left".to_string(), "right".to_string()),
        |link| (link.connectors.left.clone(), link.connectors.right.clone()),
    )
}

/// `GET /reviews`.
pub(crate) async fn list(
    State(api): State<Api>,
    Extension(session): Extension<Session>,
    Query(filter): Query<Filter>,
) -> Result<Response, DashboardError> {
    let every = filter.status.as_deref() == Some("all");
    let reviews = matching(&api, &session, &filter, every).await?;
    let operator = session.caller.may_act();
    let open = reviews.iter().filter(|review| review.status == ReviewStatus::Open).count();
    let body = html! {
        form.filter method="get" action="/reviews" {
            label for="filter-link" { "Link" }
            select #filter-link name="link" {
                option value="" { "every link" }
                @for name in api.config.links.keys() {
                    option value=(name) selected[filter.link() == Some(name.as_str())] { (name) }
                }
            }
            label for="filter-field" { "Field" }
            input #filter-field type="text" name="field" value=(filter.field().unwrap_or("")) placeholder="every field";
            label for="filter-status" { "Show" }
            select #filter-status name="status" {
                option value="open" { "open" }
                option value="all" selected[every] { "all" }
            }
            button type="submit" { "Filter" }
        }
        @if reviews.is_empty() {
            p.empty { "No review matches." }
        } @else {
            @if operator && open > 0 {
                form #bulk.actions method="post" action="/reviews/resolve" {
                    (session.csrf_field())
                    span { "Ticked reviews: " }
                    button type="submit" name="keep" value="left" { "Keep left" }
                    button type="submit" name="keep" value="right" { "Keep right" }
                }
                @if filter.link().is_some() || filter.field().is_some() {
                    form.actions method="post" action="/reviews/resolve" {
                        (session.csrf_field())
                        input type="hidden" name="matching" value="1";
                        @if let Some(link) = filter.link() { input type="hidden" name="link" value=(link); }
                        @if let Some(field) = filter.field() { input type="hidden" name="field" value=(field); }
                        span { "Every open review this filter shows (" (open) "): " }
                        button type="submit" name="keep" value="left" { "Keep left" }
                        button type="submit" name="keep" value="right" { "Keep right" }
                    }
                }
            }
            div.scroll {
                table.reviews {
                    thead {
                        tr {
                            @if operator { (tick_all("review")) }
                            th { "Review" } th { "Link" } th { "Key" } th { "Field" } th { "Baseline" }
                            th { "Left" } th { "Right" } th { "Rule" } th { "Status" }
                        }
                    }
                    tbody {
                        @for review in &reviews {
                            @let (left, right) = side_names(&api, &review.link);
                            @let about = &review.review;
                            tr data-review=(review.id) data-key=(about.key.as_str()) {
                                @if operator {
                                    td {
                                        @if review.status == ReviewStatus::Open { (tick("bulk", "review", review.id)) }
                                    }
                                }
                                td { a href=(format!("/reviews/{}", review.id)) { "#" (review.id) } }
                                td { (review.link) }
                                td { (about.key.as_str()) }
                                td { (about.field.as_deref().unwrap_or("(whole record)")) }
                                td { (value(&session, about.base.as_ref())) }
                                td.left {
                                    small.side { (left) } " " (value(&session, about.left.as_ref()))
                                    (changed(about.left.as_ref(), about.left_changed))
                                }
                                td.right {
                                    small.side { (right) } " " (value(&session, about.right.as_ref()))
                                    (changed(about.right.as_ref(), about.right_changed))
                                }
                                td { (about.reason) }
                                td { span class={ "status " (review.status) } { (review.status) } }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(page(&session, "Reviews", body).into_response())
}

/// `GET /reviews/{id}`: the review, its decision and the run that applied it, and its record's
/// audit trail.
pub(crate) async fn show(
    State(api): State<Api>,
    Extension(session): Extension<Session>,
    Path(id): Path<i64>,
) -> Result<Response, DashboardError> {
    let ReviewDetail { review, audit } = session.call(&api, move |workspace| workspace.review(id)).await?;
    let (left, right) = side_names(&api, &review.link);
    let applied = applied_by(&review, &audit);
    let about = &review.review;
    let body = html! {
        dl.review {
            dt { "Link" } dd { (review.link) }
            dt { "Key" } dd { (about.key.as_str()) }
            dt { "Field" } dd { (about.field.as_deref().unwrap_or("(whole record: a delete against an edit)")) }
            dt { "Kind" } dd { (label(&about.kind)) }
            dt { "Held by" } dd { (about.reason) }
            dt { "Opened" } dd {
                (time(review.created_at))
                @if let Some(run) = review.run_id { " by run " a href=(format!("/runs/{run}")) { "#" (run) } }
            }
            dt { "Baseline" } dd.base { (value(&session, about.base.as_ref())) }
            dt { "Left: " (left) } dd.left {
                (value(&session, about.left.as_ref())) (changed(about.left.as_ref(), about.left_changed))
            }
            dt { "Right: " (right) } dd.right {
                (value(&session, about.right.as_ref())) (changed(about.right.as_ref(), about.right_changed))
            }
            dt { "Status" } dd { span #status class={ "status " (review.status) } { (review.status) } }
            @if let Some(decision) = &review.decision {
                dt { "Decision" } dd.decision { (decision_text(&session, decision, &left, &right)) }
            }
            @if let Some(entry) = audit.iter().rev().find(|entry| entry.event == AuditEvent::Decided) {
                dt { "Decided" } dd { (time(entry.at)) ", " (entry.reason) }
            }
            @if let Some((run, entry)) = applied {
                dt { "Applied" } dd #applied {
                    "by run " a href=(format!("/runs/{run}")) { "#" (run) } " at " (time(entry.at)) ": " (entry.reason)
                }
            }
        }
        @if session.caller.may_act() && review.status != ReviewStatus::Closed {
            h2 { "Decide" }
            form.decide method="post" action=(format!("/reviews/{id}/resolve")) {
                (session.csrf_field())
                button #keep-left type="submit" name="keep" value="left" { "Keep left (" (left) ")" }
                button #keep-right type="submit" name="keep" value="right" { "Keep right (" (right) ")" }
            }
            @if about.field.is_some() {
                form.decide method="post" action=(format!("/reviews/{id}/resolve")) {
                    (session.csrf_field())
                    label for="decided-value" { "Or this value on both sides" }
                    input #decided-value type="text" name="value" required;
                    button #keep-value type="submit" { "Use this value" }
                }
            }
            p.hint { "The next run of " (review.link) " applies the decision." }
        }
        h2 { "The record's audit trail" }
        (super::runs::audit_table(&session, &audit, true))
    };
    Ok(page(&session, &format!("Review #{id}"), body).into_response())
}

/// When a side's value changed, as its connector reported it; nothing for an absent side.
fn changed(value: Option<&Value>, at: Option<Timestamp>) -> Markup {
    match (value, at) {
        (None, _) => html! {},
        (Some(_), Some(at)) => html! { " " small.changed { "changed " (time(at)) } },
        (Some(_), None) => html! { " " small.changed { "(no change time reported)" } },
    }
}

/// The first run after the review's last decision that audited its field: the run that
/// applied it. (A typed value is neither side's: the review closes once a later run reads it
/// on both sides.)
fn applied_by<'a>(review: &Review, audit: &'a [AuditEntry]) -> Option<(RunId, &'a AuditEntry)> {
    let decided = audit.iter().rposition(|entry| entry.event == AuditEvent::Decided)?;
    audit[decided + 1..]
        .iter()
        .filter(|entry| entry.field == review.review.field)
        .find_map(|entry| entry.run_id.map(|run| (run, entry)))
}

/// A decision in words, its value masked for a `read` session.
fn decision_text(
    session: &Session,
    decision: &fieldsync_app::workspace::Decision,
    left: &str,
    right: &str,
) -> Markup {
    use fieldsync_app::workspace::{Decision, Side};
    match decision {
        Decision::Keep(Side::Left) => html! { "keep left (" (left) ")" },
        Decision::Keep(Side::Right) => html! { "keep right (" (right) ")" },
        Decision::Value(decided) => html! { "this value: " (value(session, Some(decided))) },
    }
}

/// The decision a form gives: `keep` (left or right) or a typed `value`.
fn resolution(pairs: &[(String, String)]) -> Result<Resolution, DashboardError> {
    match (form_value(pairs, "keep"), pairs.iter().find(|(key, _)| key == "value")) {
        (Some(keep), None) => Ok(Resolution::Keep(keep.to_string())),
        (None, Some((_, typed))) => Ok(Resolution::Value(typed.clone())),
        _ => {
            Err(DashboardError::new(StatusCode::BAD_REQUEST, "choose keep left, keep right, or type a value"))
        }
    }
}

/// `POST /reviews/{id}/resolve`.
pub(crate) async fn resolve_one(
    State(api): State<Api>,
    Extension(session): Extension<Session>,
    Path(id): Path<i64>,
    FormPairs(pairs): FormPairs,
) -> Result<Response, DashboardError> {
    let resolution = resolution(&pairs)?;
    let token = session.caller.name.clone();
    session.call(&api, move |workspace| workspace.resolve(id, resolution, Some(&token))).await?;
    session.notify(format!("Review #{id} is decided; the next run applies it."));
    Ok(see_other(&format!("/reviews/{id}")))
}

/// `POST /reviews/resolve`: the ticked reviews (`id`), or with `matching` every open review the
/// filter (`link`, `field`) selects, decided alike.
pub(crate) async fn resolve_many(
    State(api): State<Api>,
    Extension(session): Extension<Session>,
    FormPairs(pairs): FormPairs,
) -> Result<Response, DashboardError> {
    let resolution = resolution(&pairs)?;
    let filter = Filter {
        link: form_value(&pairs, "link").map(str::to_string),
        field: form_value(&pairs, "field").map(str::to_string),
        status: None,
    };
    let ids = if form_value(&pairs, "matching").is_some() {
        matching(&api, &session, &filter, false).await?.into_iter().map(|review| review.id).collect()
    } else {
        form_ids(&pairs, "id")?
    };
    if ids.is_empty() {
        session.notify("No review was ticked: nothing was decided.");
        return Ok(see_other("/reviews"));
    }
    let token = session.caller.name.clone();
    let notice = session
        .call(&api, move |workspace| {
            let done = "reviews decided; the next run applies them.";
            Ok(each(ids, done, |id| workspace.resolve(id, resolution.clone(), Some(&token))))
        })
        .await?;
    session.notify(notice);
    // Back to the link's queue when the form named one of the configuration's links, whose
    // names hold only letters, digits, `_` and `-` (safe in a URL).
    let back = filter
        .link()
        .filter(|link| api.config.links.contains_key(*link))
        .map_or_else(|| "/reviews".to_string(), |link| format!("/reviews?link={link}"));
    Ok(see_other(&back))
}
