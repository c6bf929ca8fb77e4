//! The outbox: the writes that wait (pending, being sent, moved) and the dead ones with the
//! target's message; a dead entry is put back in line or dropped, one or many at once.

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use fieldsync_app::workspace::{OutboxEntryView, OutboxStatus};
use maud::{Markup, html};

use super::{
    DashboardError, FormPairs, Session, each, form_ids, form_value, page, see_other, tick, tick_all, time,
};
use crate::api::Api;

/// How many entries of each status the page lists at most.
const LIMIT: usize = 200;

/// `GET /outbox`.
pub(crate) async fn list(
    State(api): State<Api>,
    Extension(session): Extension<Session>,
) -> Result<Response, DashboardError> {
    let (dead, waiting) = session
        .call(&api, |workspace| {
            let dead = workspace.outbox(Some(OutboxStatus::Dead), None, LIMIT)?;
            let mut waiting = Vec::new();
            for status in [OutboxStatus::Pending, OutboxStatus::Sending, OutboxStatus::Moved] {
                waiting.extend(workspace.outbox(Some(status), None, LIMIT)?.items);
            }
            waiting.sort_by_key(|entry| std::cmp::Reverse(entry.id));
            Ok((dead, waiting))
        })
        .await?;
    let operator = session.caller.may_act();
    let body = html! {
        h2 { "Dead" }
        @if dead.items.is_empty() {
            p.empty { "No dead write." }
        } @else {
            @if operator {
                form #settle.actions method="post" action="/outbox/settle" {
                    (session.csrf_field())
                    span { "Ticked entries: " }
                    button type="submit" name="action" value="retry" { "Retry" }
                    button type="submit" name="action" value="drop" { "Drop" }
                }
            }
            (entries(&session, &dead.items, operator))
            @if dead.more > 0 { p { "… and " (dead.more) " more." } }
        }
        h2 { "Waiting" }
        @if waiting.is_empty() {
            p.empty { "No write waits." }
        } @else {
            (entries(&session, &waiting, false))
        }
    };
    Ok(page(&session, "Outbox", body).into_response())
}

/// Entries as a table, with a box to tick each when `tickable`.
fn entries(session: &Session, entries: &[OutboxEntryView], tickable: bool) -> Markup {
    html! {
        div.scroll {
            table.outbox {
                thead {
                    tr {
                        @if tickable { (tick_all("entry")) }
                        th { "Entry" } th { "Link" } th { "Key" } th { "Side" } th { "Operation" } th { "Status" }
                        th { "Attempts" } th { "Next attempt" } th { "Message" } th { "Write" }
                    }
                }
                tbody {
                    @for entry in entries {
                        tr data-entry=(entry.id) {
                            @if tickable { td { (tick("settle", "entry", entry.id)) } }
                            td { (entry.id) }
                            td { (entry.link) }
                            td { (entry.key.as_str()) }
                            td { (entry.side) }
                            td { (entry.operation) }
                            td { span class={ "status " (entry.status) } { (entry.status) } }
                            td { (entry.attempts) }
                            td { (time(entry.next_attempt_at)) }
                            td.message { (entry.last_error.as_deref().unwrap_or("")) }
                            td {
                                @if !session.caller.may_act() {
                                    span.masked title="values are shown to operators only" { "•••" }
                                } @else if let Some(write) = &entry.write {
                                    code { (write) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `POST /outbox/settle`: the ticked dead entries (`id`) retried or dropped (`action`).
pub(crate) async fn settle(
    State(api): State<Api>,
    Extension(session): Extension<Session>,
    FormPairs(pairs): FormPairs,
) -> Result<Response, DashboardError> {
    let retry = match form_value(&pairs, "action") {
        Some("retry") => true,
        Some("drop") => false,
        other => {
            let message = format!("no action {other:?}: retry or drop");
            return Err(DashboardError::new(StatusCode::BAD_REQUEST, message));
        }
    };
    let ids = form_ids(&pairs, "id")?;
    let done = if retry { "entries put back in line." } else { "entries dropped." };
    let notice = session
        .call(&api, move |workspace| {
            Ok(each(ids, done, |id| {
                if retry { workspace.retry_outbox_entry(id) } else { workspace.drop_outbox_entry(id) }
            }))
        })
        .await?;
    session.notify(notice);
    Ok(see_other("/outbox"))
}
