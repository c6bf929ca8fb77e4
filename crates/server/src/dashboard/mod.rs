//! The dashboard at `/`: server-rendered HTML (maud) over the same use cases as the API, for a
//! person logged in with an API token (`session`). Pages: the links and a 30-day chart
//! (`overview`, `chart`), the review queue (`reviews`), the runs and their audit (`runs`), the
//! outbox (`outbox`). Every action is a plain form POST answered by a redirect; every POST
//! carries the session's CSRF token; a `read` token sees no buttons and no personal values.

mod chart;
mod outbox;
mod overview;
mod reviews;
mod runs;
mod session;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use fieldsync_app::WorkspaceError;
use fieldsync_app::workspace::{Value, error_chain};
use jiff::Timestamp;
use maud::{DOCTYPE, Markup, html};
use serde::Serialize;

use crate::api::Api;

pub(crate) use session::{Session, Sessions};

/// The stylesheet, compiled in: the page works offline and behind a strict CSP.
const STYLESHEET: &str = include_str!("dashboard.css");
/// The one script: "select all" checkboxes. Every page works without it.
const SCRIPT: &str = include_str!("dashboard.js");

/// What every dashboard answer says about where its resources may come from: only this
/// service, no frames, forms only to itself.
const SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The dashboard's routes on the API's state.
pub(crate) fn router(api: Api) -> Router<Api> {
    let guarded = Router::new()
        .route("/", get(overview::show))
        .route("/links/{link}/run", post(overview::run_now))
        .route("/links/{link}/plan", post(overview::plan_now))
        .route("/reviews", get(reviews::list))
        .route("/reviews/resolve", post(reviews::resolve_many))
        .route("/reviews/{id}", get(reviews::show))
        .route("/reviews/{id}/resolve", post(reviews::resolve_one))
        .route("/runs", get(runs::list))
        .route("/runs/export", get(runs::export_history))
        .route("/runs/{id}", get(runs::show))
        .route("/runs/{id}/export", get(runs::export_run))
        .route("/outbox", get(outbox::list))
        .route("/outbox/settle", post(outbox::settle))
        .route("/logout", post(session::logout))
        .route_layer(middleware::from_fn_with_state(api, session::guard));
    Router::new()
        .route("/login", get(session::login_form).post(session::login))
        .route("/dashboard.css", get(|| async { asset("text/css; charset=utf-8", STYLESHEET) }))
        .route("/dashboard.js", get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }))
        .merge(guarded)
        .layer(middleware::from_fn(secured))
}

/// A compiled-in file.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "max-age=3600")], body).into_response()
}

/// Adds the dashboard's security headers to every answer; pages are not cached.
async fn secured(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    headers.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    response
}

/// A page of the dashboard for `session`: the navigation, the message left by the last
/// action, and `body`.
pub(crate) fn page(session: &Session, title: &str, body: Markup) -> Html<String> {
    let notice = session.take_notice();
    layout(title, Some(session), notice.as_deref(), body)
}

/// The HTML around every page; the navigation and the logout button only for a session.
fn layout(title: &str, session: Option<&Session>, notice: Option<&str>, body: Markup) -> Html<String> {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · fieldsync" }
                link rel="stylesheet" href="/dashboard.css";
                script src="/dashboard.js" defer {}
            }
            body {
                header {
                    a.brand href="/" { "fieldsync" }
                    @if let Some(session) = session {
                        nav aria-label="Pages" {
                            a href="/" { "Links" }
                            a href="/reviews" { "Reviews" }
                            a href="/runs" { "Runs" }
                            a href="/outbox" { "Outbox" }
                        }
                        form.logout method="post" action="/logout" {
                            (session.csrf_field())
                            span.who { (session.caller.name) " (" (session.caller.role_name()) ")" }
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main {
                    h1 { (title) }
                    @if let Some(notice) = notice {
                        p.notice role="status" { (notice) }
                    }
                    (body)
                }
            }
        }
    };
    Html(markup.into_string())
}

/// A value the audit may not hold (nothing when it does not), as the session may see it.
pub(crate) fn noted(session: &Session, noted: Option<&Value>) -> Markup {
    match noted {
        None => html! {},
        Some(_) => value(session, noted),
    }
}

/// A value as the session may see it: personal data only for a token that may act; `None`
/// is a record absent on that side.
pub(crate) fn value(session: &Session, value: Option<&Value>) -> Markup {
    match value {
        None => html! { span.absent { "(absent)" } },
        Some(_) if !session.caller.may_act() => {
            html! { span.masked title="values are shown to operators only" { "•••" } }
        }
        Some(value) => html! { code { (value) } },
    }
}

/// The box in a list's header that ticks every box of `group` (with the script; without it,
/// each box is ticked by hand).
pub(crate) fn tick_all(group: &str) -> Markup {
    html! { th { input type="checkbox" data-select-all=(group) aria-label=(format!("Tick every {group}")); } }
}

/// The box of item `id` of `group`, in the list's form `form` (which stands outside the table).
pub(crate) fn tick(form: &str, group: &str, id: i64) -> Markup {
    html! {
        input type="checkbox" form=(form) name="id" value=(id) data-select=(group)
            aria-label=(format!("Tick {group} {id}"));
    }
}

/// A time in UTC to the second.
pub(crate) fn time(at: Timestamp) -> Markup {
    let text = at.strftime("%Y-%m-%d %H:%M:%S UTC").to_string();
    html! { time datetime=(at.to_string()) { (text) } }
}

/// The name an enum serialises to (`update`, `keep`): how the API spells it.
pub(crate) fn label(value: &impl Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(text)) => text,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

/// A redirect after a POST: the browser gets the page again with GET.
pub(crate) fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}

/// A failed page or action, rendered as a page with the status that says whose fault it is.
pub(crate) struct DashboardError {
    status: StatusCode,
    message: String,
}

impl DashboardError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }
}

impl From<WorkspaceError> for DashboardError {
    fn from(error: WorkspaceError) -> Self {
        let (status, message) = crate::api::status_of(&error);
        Self { status, message }
    }
}

impl From<crate::api::ApiError> for DashboardError {
    fn from(error: crate::api::ApiError) -> Self {
        let (status, message) = error.parts();
        Self { status, message }
    }
}

impl IntoResponse for DashboardError {
    fn into_response(self) -> Response {
        let title = self.status.canonical_reason().unwrap_or("Error");
        let body = html! {
            p.error role="alert" { (self.message) }
            p { a href="/" { "Back to the links" } }
        };
        (self.status, layout(title, None, None, body)).into_response()
    }
}

/// Does `act` to each of `ids` and says how it went: `done` for how many it did, and why each
/// other one failed.
pub(crate) fn each<T>(
    ids: Vec<i64>,
    done: &str,
    mut act: impl FnMut(i64) -> Result<T, WorkspaceError>,
) -> String {
    let count = ids.len();
    let failures: Vec<String> = ids
        .into_iter()
        .filter_map(|id| act(id).err().map(|error| format!("#{id}: {}", error_chain(&error))))
        .collect();
    let mut notice = format!("{} of {count} {done}", count - failures.len());
    if !failures.is_empty() {
        notice.push_str(&format!(" Not done: {}.", failures.join("; ")));
    }
    notice
}

/// The pairs of a form body (`application/x-www-form-urlencoded`), in order, repeated names
/// kept (several `id`s).
pub(crate) fn form_pairs(body: &[u8]) -> Vec<(String, String)> {
    serde_urlencoded::from_bytes(body).unwrap_or_default()
}

/// Every number the form gives as `name` (the checked boxes of a list), or why one is not
/// a number.
pub(crate) fn form_ids(pairs: &[(String, String)], name: &str) -> Result<Vec<i64>, DashboardError> {
    pairs
        .iter()
        .filter(|(key, _)| key == name)
        .map(|(_, text)| {
            text.parse().map_err(|_| {
                DashboardError::new(StatusCode::BAD_REQUEST, format!("{name} {text:?} is not a number"))
            })
        })
        .collect()
}

/// The first value of `name` in the form, if any and not empty.
pub(crate) fn form_value<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs.iter().find(|(key, _)| key == name).map(|(_, text)| text.as_str()).filter(|text| !text.is_empty())
}

/// A form body read whole (at most `FORM_LIMIT` bytes), for the CSRF check and its handler.
pub(crate) async fn read_form(body: Body) -> Result<axum::body::Bytes, DashboardError> {
    axum::body::to_bytes(body, FORM_LIMIT)
        .await
        .map_err(|_| DashboardError::new(StatusCode::PAYLOAD_TOO_LARGE, "the form is too large"))
}

/// The largest form body the dashboard reads.
const FORM_LIMIT: usize = 256 * 1024;

/// The form of a POST, as `session::guard` read it (the CSRF token checked).
#[derive(Clone)]
pub(crate) struct FormPairs(pub Vec<(String, String)>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for FormPairs {
    type Rejection = DashboardError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<FormPairs>()
            .cloned()
            .ok_or_else(|| DashboardError::new(StatusCode::BAD_REQUEST, "a form is needed"))
    }
}
