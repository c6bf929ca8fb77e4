//! The HTTP API: `/healthz` and `/readyz` for whoever watches the service, and the JSON API
//! under `/api/` over the app's use cases, behind bearer tokens (`[[server.tokens]]`): a
//! `read` token may read, an `operate` token may also act. Each answer is the use case's own
//! type serialised, as `--json` prints it; an error is `{"error": "…"}` with a status that
//! says whose fault it is.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use fieldsync_app::workspace::{
    LinkStatus, OutboxEntryView, OutboxStatus, Page, Resolution, Resolved, Review, ReviewDetail, RunHistory,
    RunRow, RunScope, RunsOutcome, Unobserved, error_chain, history_csv,
};
use fieldsync_app::{Config, Workspace, WorkspaceError};
use serde::{Deserialize, Serialize};

use crate::access::{self, Caller};
use crate::dashboard::{self, Sessions};
use crate::hooks::{self, Limits};
use crate::links::{LinkState, Links};
use crate::shared::SharedWorkspace;

/// How many rows a list answers when the request does not say.
const DEFAULT_LIMIT: usize = 50;

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct Api {
    pub config: Arc<Config>,
    pub links: Arc<Links>,
    /// The workspace of the requests that read and write the state store only.
    pub workspace: SharedWorkspace,
    /// Each system's limit of webhooks.
    pub limits: Arc<Limits>,
    /// The dashboard's sessions (kept across reloads of the configuration).
    pub sessions: Arc<Sessions>,
}

/// The service's routes.
pub fn router(
    config: Arc<Config>,
    links: Arc<Links>,
    workspace: SharedWorkspace,
    sessions: Arc<Sessions>,
) -> Router {
    let limits = Arc::new(Limits::new(&config));
    let api = Api { config, links, workspace, limits, sessions };
    let guarded = Router::new()
        .route("/api/links", get(list_links))
        .route("/api/links/{link}/runs", post(start_run))
        .route("/api/links/{link}/plan", post(plan))
        .route("/api/runs", get(list_runs))
        .route("/api/runs/{id}", get(show_run))
        .route("/api/reviews", get(list_reviews))
        .route("/api/reviews/{id}", get(show_review))
        .route("/api/reviews/{id}/resolve", post(resolve_review))
        .route("/api/outbox", get(list_outbox))
        .route("/api/outbox/{id}/retry", post(retry_entry))
        .route("/api/outbox/{id}/drop", post(drop_entry))
        .route("/api/history", get(export_history))
        .route_layer(middleware::from_fn_with_state(api.clone(), authorise));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .route("/hooks/{link}/{side}", post(hooks::receive))
        .route("/hooks/{link}/{org}/{side}", post(hooks::receive_for))
        .merge(guarded)
        .merge(dashboard::router(api.clone()))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint") })
        .with_state(api)
}

/// Lets a request through when it bears a token whose role allows it: any token may read
/// (`GET`), an `operate` token may act. Every request that acts is logged with the token's
/// name, never the token.
async fn authorise(State(api): State<Api>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or("");
    let Some(caller) = access::caller(&api.config, presented) else {
        let mut response =
            ApiError::new(StatusCode::UNAUTHORIZED, "a bearer token is needed").into_response();
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    };
    if access::acts(request.method()) && !caller.may_act() {
        return ApiError::new(StatusCode::FORBIDDEN, format!("the token {:?} may only read", caller.name))
            .into_response();
    }
    audited(caller, request, next).await
}

/// Runs the request of `caller`, who is known to the handlers (an `Extension<Caller>`), and
/// logs each request that acts with the token's name, never the token.
pub(crate) async fn audited(caller: Caller, mut request: Request, next: Next) -> Response {
    let acts = access::acts(request.method());
    let (method, path) = (request.method().clone(), request.uri().path().to_string());
    let name = caller.name.clone();
    request.extensions_mut().insert(caller);
    let response = next.run(request).await;
    if acts {
        tracing::info!(target: "fieldsync::audit", token = %name, %method, %path, status = response.status().as_u16(), "request");
    }
    response
}

/// Ready when the state store answers.
async fn ready(State(api): State<Api>) -> Response {
    match api.workspace.call(|workspace| workspace.status()).await {
        Ok(_) => (StatusCode::OK, Json(serde_json::json!({ "ready": true }))).into_response(),
        Err(error) => {
            let body = serde_json::json!({ "ready": false, "error": error_chain(&error) });
            (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
        }
    }
}

/// `GET /metrics`: the counters and histograms as they stand, and each link's outbox and review
/// gauges read now.
async fn metrics(State(api): State<Api>) -> Response {
    let Some(handle) = crate::metrics::handle() else {
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no metrics in this process").into_response();
    };
    match api.workspace.call(|workspace| workspace.status()).await {
        Ok(statuses) => crate::metrics::link_gauges(&statuses),
        Err(error) => tracing::warn!(error = %error_chain(&error), "reading the links' gauges for /metrics"),
    }
    let content_type = HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8");
    ([(header::CONTENT_TYPE, content_type)], handle.render()).into_response()
}

/// A link as the API lists it: its state in the store and in the service.
#[derive(Serialize)]
struct LinkView {
    #[serde(flatten)]
    status: LinkStatus,
    /// When it runs by itself, if it does.
    schedule: Option<fieldsync_app::config::Schedule>,
    /// What the service knows of it now.
    service: LinkState,
}

async fn list_links(State(api): State<Api>, Scope(org): Scope) -> Result<Json<Vec<LinkView>>, ApiError> {
    let statuses = api.workspace.call_within(org, |workspace| workspace.status()).await?;
    let views = statuses
        .into_iter()
        .map(|status| LinkView {
            schedule: api.config.links.get(&status.link).and_then(|link| link.schedule.clone()),
            service: api.links.state(&status.link).unwrap_or_default(),
            status,
        })
        .collect();
    Ok(Json(views))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunRequest {
    #[serde(default)]
    full: bool,
    /// The organisation, read by `Scope`.
    #[serde(rename = "org")]
    _org: Option<String>,
}

/// Starts a run of the link (queued behind the one going on, if any): 202.
async fn start_run(
    State(api): State<Api>,
    Path(link): Path<String>,
    Scope(org): Scope,
    Query(request): Query<RunRequest>,
) -> Result<Response, ApiError> {
    queue_run(&api, &link, org.as_deref(), request.full)?;
    let body = serde_json::json!({ "queued": link, "full": request.full });
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// What a run of the link would do, writing nothing.
async fn plan(
    State(api): State<Api>,
    Path(link): Path<String>,
    Scope(org): Scope,
    Query(request): Query<RunRequest>,
) -> Result<Json<RunsOutcome>, ApiError> {
    Ok(Json(plan_link(&api, link, org.as_deref(), request.full).await?))
}

/// Queues a run of `link` (behind the one going on, if any) for a caller limited to `org`'s
/// links, if limited: the API's and the dashboard's "run now".
///
/// # Errors
///
/// 403 for another organisation's link, 404 when there is no such link.
pub(crate) fn queue_run(api: &Api, link: &str, org: Option<&str>, full: bool) -> Result<(), ApiError> {
    link_in_scope(api, link, org)?;
    if !api.links.ask(link, full) {
        return Err(unknown_link(api, link.to_owned()).into());
    }
    Ok(())
}

/// What a run of `link` would do now, writing nothing, for a caller limited to `org`'s links,
/// if limited: the API's and the dashboard's plan. A workspace of its own: a plan reads both
/// sides, and the shared one serves the rest.
///
/// # Errors
///
/// 403 for another organisation's link, 404 when there is no such link (the workspace says),
/// and what the plan's run fails with.
pub(crate) async fn plan_link(
    api: &Api,
    link: String,
    org: Option<&str>,
    full: bool,
) -> Result<RunsOutcome, ApiError> {
    link_in_scope(api, &link, org)?;
    let mut workspace = Workspace::new((*api.config).clone()).within(org)?;
    let scope = RunScope { link: Some(link), full };
    Ok(workspace.plan(&scope, &mut Unobserved).await?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListRequest {
    before: Option<i64>,
    limit: Option<usize>,
    /// Reviews: every review, not only open ones.
    #[serde(default)]
    all: bool,
    /// The outbox: one status, or `all` (the default).
    status: Option<String>,
    /// The organisation, read by `Scope`.
    #[serde(rename = "org")]
    _org: Option<String>,
}

impl ListRequest {
    fn limit(&self) -> usize {
        self.limit.unwrap_or(DEFAULT_LIMIT)
    }
}

async fn list_runs(
    State(api): State<Api>,
    Scope(org): Scope,
    Query(list): Query<ListRequest>,
) -> Result<Json<Page<RunRow>>, ApiError> {
    answer(&api, org, move |workspace| workspace.runs(list.before, list.limit())).await
}

async fn show_run(
    State(api): State<Api>,
    Scope(org): Scope,
    Path(id): Path<i64>,
) -> Result<Json<RunHistory>, ApiError> {
    answer(&api, org, move |workspace| workspace.run_history(id)).await
}

async fn list_reviews(
    State(api): State<Api>,
    Scope(org): Scope,
    Query(list): Query<ListRequest>,
) -> Result<Json<Page<Review>>, ApiError> {
    answer(&api, org, move |workspace| workspace.reviews(None, list.all, list.before, list.limit())).await
}

async fn show_review(
    State(api): State<Api>,
    Scope(org): Scope,
    Path(id): Path<i64>,
) -> Result<Json<ReviewDetail>, ApiError> {
    answer(&api, org, move |workspace| workspace.review(id)).await
}

/// `{"keep": "left"}` (or `right`, or a connector's name), or `{"value": "…"}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResolveRequest {
    keep: Option<String>,
    value: Option<String>,
}

async fn resolve_review(
    State(api): State<Api>,
    Path(id): Path<i64>,
    Scope(org): Scope,
    Extension(caller): Extension<Caller>,
    Json(request): Json<ResolveRequest>,
) -> Result<Json<Resolved>, ApiError> {
    let resolution = match (request.keep, request.value) {
        (Some(keep), None) => Resolution::Keep(keep),
        (None, Some(value)) => Resolution::Value(value),
        _ => {
            let message = "give either \"keep\" (left, right or a connector's name) or \"value\"";
            return Err(ApiError::new(StatusCode::BAD_REQUEST, message));
        }
    };
    answer(&api, org, move |workspace| workspace.resolve(id, resolution, Some(&caller.name))).await
}

async fn list_outbox(
    State(api): State<Api>,
    Scope(org): Scope,
    Query(list): Query<ListRequest>,
) -> Result<Json<Page<OutboxEntryView>>, ApiError> {
    let status = match list.status.as_deref() {
        None | Some("all") => None,
        Some(name) => Some(OutboxStatus::parse(name).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("no outbox status {name:?}: all, pending, sending, moved, done, dead, superseded or dropped"),
            )
        })?),
    };
    answer(&api, org, move |workspace| workspace.outbox(status, list.before, list.limit())).await
}

async fn retry_entry(
    State(api): State<Api>,
    Scope(org): Scope,
    Path(id): Path<i64>,
) -> Result<Json<Settled>, ApiError> {
    answer(&api, org, move |workspace| {
        workspace.retry_outbox_entry(id).map(|()| Settled { id, now: "pending" })
    })
    .await
}

async fn drop_entry(
    State(api): State<Api>,
    Scope(org): Scope,
    Path(id): Path<i64>,
) -> Result<Json<Settled>, ApiError> {
    answer(&api, org, move |workspace| {
        workspace.drop_outbox_entry(id).map(|()| Settled { id, now: "dropped" })
    })
    .await
}

/// A dead outbox entry settled: its id and its status now.
#[derive(Serialize)]
struct Settled {
    id: i64,
    now: &'static str,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportRequest {
    limit: Option<usize>,
    /// `json` (the default) or `csv`.
    format: Option<String>,
    /// The organisation, read by `Scope`.
    #[serde(rename = "org")]
    _org: Option<String>,
}

/// The latest runs, as `fieldsync history export` writes them: with every detail as JSON, or
/// their statistics as CSV (a download).
async fn export_history(
    State(api): State<Api>,
    Scope(org): Scope,
    Query(request): Query<ExportRequest>,
) -> Result<Response, ApiError> {
    let limit = request.limit.unwrap_or(1000);
    match request.format.as_deref() {
        None | Some("json") => {
            let history = api
                .workspace
                .call_within(org, move |workspace| workspace.export_history(limit, true))
                .await?;
            Ok(Json(history).into_response())
        }
        Some("csv") => {
            let history = api
                .workspace
                .call_within(org, move |workspace| workspace.export_history(limit, false))
                .await?;
            let csv = history_csv(&history).map_err(|error| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("writing CSV: {error}"))
            })?;
            let headers = [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                (header::CONTENT_DISPOSITION, "attachment; filename=\"fieldsync-history.csv\""),
            ];
            Ok((headers, csv).into_response())
        }
        Some(other) => {
            Err(ApiError::new(StatusCode::BAD_REQUEST, format!("no format {other:?}: json or csv")))
        }
    }
}

/// Runs a use case of the shared workspace limited to `org`, as JSON.
async fn answer<T: Serialize + Send + 'static>(
    api: &Api,
    org: Option<String>,
    use_case: impl FnOnce(&mut Workspace) -> Result<T, WorkspaceError> + Send + 'static,
) -> Result<Json<T>, ApiError> {
    Ok(Json(api.workspace.call_within(org, use_case).await?))
}

/// The organisation a request is limited to: its token's, when the token is limited to one
/// (asking for another is 403), else the one `?org=` names, if any.
pub(crate) struct Scope(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for Scope {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let asked = parts
            .uri
            .query()
            .and_then(|query| serde_urlencoded::from_str::<Vec<(String, String)>>(query).ok())
            .and_then(|pairs| pairs.into_iter().find(|(name, _)| name == "org").map(|(_, org)| org));
        match parts.extensions.get::<Caller>() {
            Some(caller) => caller
                .organisation(asked.as_deref())
                .map(Scope)
                .map_err(|message| ApiError::new(StatusCode::FORBIDDEN, message)),
            None => Ok(Scope(asked)),
        }
    }
}

/// Refuses a request about `link` limited to another organisation than the link's (403).
pub(crate) fn link_in_scope(api: &Api, link: &str, org: Option<&str>) -> Result<(), ApiError> {
    match (org, api.config.links.get(link)) {
        (Some(org), Some(config)) if !config.is_of(org) => {
            Err(ApiError::new(StatusCode::FORBIDDEN, format!("link {link} is not organisation {org}'s")))
        }
        _ => Ok(()),
    }
}

/// The error of a link `api`'s configuration does not have.
pub(crate) fn unknown_link(api: &Api, name: String) -> WorkspaceError {
    WorkspaceError::UnknownLink { name, known: api.config.links.keys().cloned().collect() }
}

/// An answer that is not the use case's: `{"error": "…"}` with its status.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }

    /// Its status and message.
    pub(crate) fn parts(self) -> (StatusCode, String) {
        (self.status, self.message)
    }
}

impl From<WorkspaceError> for ApiError {
    /// As `status_of` says.
    fn from(error: WorkspaceError) -> Self {
        let (status, message) = status_of(&error);
        Self { status, message }
    }
}

/// The status an answer gives `error`, and its message: not found is 404, a closed review
/// 409, any other wrong request 400, and anything else the service's fault (500, and logged).
pub(crate) fn status_of(error: &WorkspaceError) -> (StatusCode, String) {
    let status = match error {
        WorkspaceError::NotFound { .. } | WorkspaceError::UnknownLink { .. } => StatusCode::NOT_FOUND,
        WorkspaceError::ReviewClosed { .. } => StatusCode::CONFLICT,
        WorkspaceError::OtherOrganisation { .. } => StatusCode::FORBIDDEN,
        error if error.is_usage() => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let message = error_chain(error);
    if status == StatusCode::INTERNAL_SERVER_ERROR {
        tracing::error!(error = %message, "a request failed");
    }
    (status, message)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(serde_json::json!({ "error": self.message }))).into_response()
    }
}
