//! Logging in to the dashboard: a token of `[[server.tokens]]` typed once, exchanged for a
//! session (a random id in the cookie `fieldsync_session`, HttpOnly, SameSite=Strict, Secure
//! behind TLS) kept in this process's memory with the token's name, never the token. Every
//! POST carries the session's CSRF token in a hidden field; the login form its own, from a
//! cookie (double submit). A session ends on logout, after `IDLE` unused, or when its token
//! is no longer in the configuration; its role is the token's role now.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use cookie::{Cookie, SameSite};
use fieldsync_app::{Workspace, WorkspaceError};
use maud::{Markup, html};
use ring::rand::SecureRandom as _;

use super::{DashboardError, FormPairs, form_pairs, form_value, layout, read_form, see_other};
use crate::access::{self, Caller, same_secret};
use crate::api::Api;

/// The cookie that holds the session's id.
const SESSION_COOKIE: &str = "fieldsync_session";
/// The cookie that holds the login form's CSRF token until the login.
const LOGIN_COOKIE: &str = "fieldsync_login";
/// How long a session lasts unused.
const IDLE: Duration = Duration::from_secs(12 * 60 * 60);
/// The hidden field of every form that holds the CSRF token.
const CSRF_FIELD: &str = "csrf";

/// The sessions of this process, by id.
#[derive(Default)]
pub(crate) struct Sessions {
    by_id: Mutex<HashMap<String, Stored>>,
}

/// A session as kept.
struct Stored {
    /// The name of the token it logged in with.
    token: String,
    /// The CSRF token of its forms.
    csrf: String,
    /// When it was last used.
    used: Instant,
    /// What the last action said, shown once by the next page.
    notice: Option<String>,
}

/// A logged-in person, for a request: who, and the CSRF token of their forms.
#[derive(Clone)]
pub(crate) struct Session {
    /// The token they logged in with, as it stands in the configuration now.
    pub caller: Caller,
    id: String,
    csrf: String,
    sessions: Arc<Sessions>,
}

impl Session {
    /// The hidden field every form of this session carries.
    pub fn csrf_field(&self) -> Markup {
        html! { input type="hidden" name=(CSRF_FIELD) value=(self.csrf); }
    }

    /// Leaves a message for the next page this session sees.
    pub fn notify(&self, notice: impl Into<String>) {
        if let Some(stored) = self.sessions.lock().get_mut(&self.id) {
            stored.notice = Some(notice.into());
        }
    }

    /// The message left by the last action, once.
    pub fn take_notice(&self) -> Option<String> {
        self.sessions.lock().get_mut(&self.id).and_then(|stored| stored.notice.take())
    }

    /// Runs `use_case` on the service's shared workspace, limited to what this session's
    /// caller may see (their organisation's links and rows, when they are limited to one).
    ///
    /// # Errors
    ///
    /// As `SharedWorkspace::call_within`.
    pub async fn call<T: Send + 'static>(
        &self,
        api: &Api,
        use_case: impl FnOnce(&mut Workspace) -> Result<T, WorkspaceError> + Send + 'static,
    ) -> Result<T, WorkspaceError> {
        api.workspace.call_within(self.caller.organisation.clone(), use_case).await
    }
}

impl Caller {
    /// The role's name as `[[server.tokens]]` spells it.
    pub fn role_name(&self) -> &'static str {
        if self.may_act() { "operate" } else { "read" }
    }
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Stored>> {
        self.by_id.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new session for `caller`; sessions unused for `IDLE` are forgotten meanwhile.
    fn create(&self, caller: &Caller) -> Result<String, DashboardError> {
        let (id, csrf) = (random_token()?, random_token()?);
        let mut sessions = self.lock();
        sessions.retain(|_, stored| stored.used.elapsed() < IDLE);
        let stored = Stored { token: caller.name.clone(), csrf, used: Instant::now(), notice: None };
        sessions.insert(id.clone(), stored);
        Ok(id)
    }

    /// The session with `id`, if it is live and its token is still in `config`.
    fn find(self: &Arc<Self>, id: &str, config: &fieldsync_app::Config) -> Option<Session> {
        let mut sessions = self.lock();
        let stored = sessions.get_mut(id).filter(|stored| stored.used.elapsed() < IDLE)?;
        let caller = access::caller_named(config, &stored.token)?;
        stored.used = Instant::now();
        let csrf = stored.csrf.clone();
        Some(Session { caller, id: id.to_string(), csrf, sessions: Arc::clone(self) })
    }

    fn end(&self, id: &str) {
        self.lock().remove(id);
    }
}

/// 32 random bytes from the system, URL-safe base64.
fn random_token() -> Result<String, DashboardError> {
    let mut bytes = [0_u8; 32];
    ring::rand::SystemRandom::new().fill(&mut bytes).map_err(|_| {
        DashboardError::new(StatusCode::INTERNAL_SERVER_ERROR, "the system gave no random bytes")
    })?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// The value of the cookie `name` the request sent, if any.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|cookie| cookie.name() == name)
        .map(|cookie| cookie.value().to_string())
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Strict, and Secure when the request came over
/// TLS (a proxy in front says so with `X-Forwarded-Proto: https`); `max_age` 0 removes it.
fn set_cookie(request: &HeaderMap, name: &str, value: &str, path: &str, max_age: Option<u64>) -> HeaderValue {
    let secure = request
        .get("x-forwarded-proto")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|proto| proto.eq_ignore_ascii_case("https"));
    let mut cookie = Cookie::build((name.to_string(), value.to_string()))
        .path(path.to_string())
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure);
    if let Some(max_age) = max_age {
        cookie = cookie.max_age(cookie::time::Duration::seconds(i64::try_from(max_age).unwrap_or(i64::MAX)));
    }
    // The value is base64 and the rest fixed text: always a valid header.
    HeaderValue::from_str(&cookie.build().to_string()).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Lets a request through to the dashboard's pages when it carries a live session: a page
/// without one goes to the login. A POST must come from a token that may act (but for
/// logging out) and carry the session's CSRF token; its form reaches the handler as
/// `FormPairs`. Acts are logged with the token's name.
pub(crate) async fn guard(State(api): State<Api>, request: Request, next: Next) -> Response {
    let session =
        cookie(request.headers(), SESSION_COOKIE).and_then(|id| api.sessions.find(&id, &api.config));
    let Some(session) = session else {
        if !access::acts(request.method()) {
            return see_other("/login");
        }
        return DashboardError::new(StatusCode::UNAUTHORIZED, "log in first").into_response();
    };
    let mut request = request;
    if access::acts(request.method()) {
        let logging_out = request.uri().path() == "/logout";
        if !logging_out && !session.caller.may_act() {
            let message = format!("the token {:?} may only read", session.caller.name);
            return DashboardError::new(StatusCode::FORBIDDEN, message).into_response();
        }
        let (parts, body) = request.into_parts();
        let bytes = match read_form(body).await {
            Ok(bytes) => bytes,
            Err(error) => return error.into_response(),
        };
        let pairs = form_pairs(&bytes);
        if !same_secret(form_value(&pairs, CSRF_FIELD).unwrap_or(""), &session.csrf) {
            let message = "the form's CSRF token is missing or wrong: load the page again and retry";
            return DashboardError::new(StatusCode::FORBIDDEN, message).into_response();
        }
        request = Request::from_parts(parts, Body::from(bytes));
        request.extensions_mut().insert(FormPairs(pairs));
    }
    request.extensions_mut().insert(session.clone());
    crate::api::audited(session.caller, request, next).await
}

/// `GET /login`: the form, with a fresh CSRF token in it and in a cookie; a live session goes
/// straight to the links.
pub(crate) async fn login_form(State(api): State<Api>, request: Request) -> Response {
    let headers = request.headers();
    if cookie(headers, SESSION_COOKIE).and_then(|id| api.sessions.find(&id, &api.config)).is_some() {
        return see_other("/");
    }
    login_page(headers, StatusCode::OK, None)
}

/// The login page with a new form token, and an error when the last try failed.
fn login_page(headers: &HeaderMap, status: StatusCode, error: Option<&str>) -> Response {
    let token = match random_token() {
        Ok(token) => token,
        Err(error) => return error.into_response(),
    };
    let body = html! {
        form.login method="post" action="/login" {
            @if let Some(error) = error {
                p.error role="alert" { (error) }
            }
            input type="hidden" name=(CSRF_FIELD) value=(token);
            label for="token" { "API token" }
            input #token type="password" name="token" autocomplete="current-password" required autofocus;
            button #login type="submit" { "Log in" }
        }
        p.hint { "A token of " code { "[[server.tokens]]" } ": " code { "read" } " to look, " code { "operate" } " to act." }
    };
    let cookie = set_cookie(headers, LOGIN_COOKIE, &token, "/login", Some(3600));
    (status, [(header::SET_COOKIE, cookie)], layout("Log in", None, None, body)).into_response()
}

/// `POST /login`: a known token and the form's own CSRF token start a session.
pub(crate) async fn login(State(api): State<Api>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = match read_form(body).await {
        Ok(bytes) => bytes,
        Err(error) => return error.into_response(),
    };
    let pairs = form_pairs(&bytes);
    let expected = cookie(&parts.headers, LOGIN_COOKIE).unwrap_or_default();
    if !same_secret(form_value(&pairs, CSRF_FIELD).unwrap_or(""), &expected) {
        let message = "the login form expired: load it again and retry";
        return login_page(&parts.headers, StatusCode::FORBIDDEN, Some(message));
    }
    let Some(caller) = access::caller(&api.config, form_value(&pairs, "token").unwrap_or("")) else {
        tracing::warn!("a dashboard login with a token that is not one of [[server.tokens]]");
        return login_page(&parts.headers, StatusCode::UNAUTHORIZED, Some("that token is not one we know"));
    };
    let id = match api.sessions.create(&caller) {
        Ok(id) => id,
        Err(error) => return error.into_response(),
    };
    tracing::info!(target: "fieldsync::audit", token = %caller.name, "logged in to the dashboard");
    let mut response = see_other("/");
    let headers = response.headers_mut();
    headers.append(header::SET_COOKIE, set_cookie(&parts.headers, SESSION_COOKIE, &id, "/", None));
    headers.append(header::SET_COOKIE, set_cookie(&parts.headers, LOGIN_COOKIE, "", "/login", Some(0)));
    response
}

/// `POST /logout`: the session ends and its cookie goes.
pub(crate) async fn logout(
    State(api): State<Api>,
    axum::Extension(session): axum::Extension<Session>,
    headers: HeaderMap,
) -> Response {
    api.sessions.end(&session.id);
    let mut response = see_other("/login");
    response.headers_mut().append(header::SET_COOKIE, set_cookie(&headers, SESSION_COOKIE, "", "/", Some(0)));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    fn attributes(value: &HeaderValue) -> Vec<String> {
        value.to_str().unwrap().split(';').map(|part| part.trim().to_ascii_lowercase()).collect()
    }

    #[test]
    fn session_cookies_are_http_only_strict_and_secure_behind_tls() {
        let plain = attributes(&set_cookie(&HeaderMap::new(), SESSION_COOKIE, "abc", "/", None));
        assert_eq!(plain[0], "fieldsync_session=abc");
        for wanted in ["httponly", "samesite=strict", "path=/"] {
            assert!(plain.iter().any(|part| part == wanted), "{wanted} in {plain:?}");
        }
        assert!(!plain.iter().any(|part| part == "secure"), "no Secure over plain HTTP: {plain:?}");
        assert!(!plain.iter().any(|part| part.starts_with("max-age")), "a session cookie: {plain:?}");

        let behind_tls = headers(&[("x-forwarded-proto", "HTTPS")]);
        let secure = attributes(&set_cookie(&behind_tls, SESSION_COOKIE, "abc", "/", None));
        assert!(secure.iter().any(|part| part == "secure"), "{secure:?}");

        let removed = attributes(&set_cookie(&HeaderMap::new(), LOGIN_COOKIE, "", "/login", Some(0)));
        assert!(removed.iter().any(|part| part == "max-age=0"), "{removed:?}");
        assert!(removed.iter().any(|part| part == "path=/login"), "{removed:?}");
    }

    #[test]
    fn a_cookie_is_found_by_name_among_others_and_across_headers() {
        let sent =
            headers(&[("cookie", "theme=dark; fieldsync_login=xyz"), ("cookie", "fieldsync_session=abc")]);
        assert_eq!(cookie(&sent, SESSION_COOKIE).as_deref(), Some("abc"));
        assert_eq!(cookie(&sent, LOGIN_COOKIE).as_deref(), Some("xyz"));
        assert_eq!(cookie(&sent, "fieldsync"), None, "a name is matched whole");
    }
}
