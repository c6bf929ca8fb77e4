//! Sending requests: auth and headers, the rate limit, pacing, timeouts, and retries of the
//! failures that may pass (a refused or dropped connection, a timeout, a 5xx, a 429), with
//! `Retry-After` honoured. Every other answer goes back to the caller, who knows what a 404
//! or a 412 means for its request.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use fieldsync_connector::ConnectorError;
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use serde_json::Value;
use tokio::sync::{Mutex, Semaphore};

use crate::config::{Auth, Settings};

/// The longest wait a `Retry-After` is obeyed for inside one request; a longer one is handed
/// to the engine, which retries the whole write later.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// An answer that is not a failure to retry: any status, its headers and its body.
#[derive(Debug)]
pub struct Answer {
    /// The HTTP status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body as text.
    pub body: String,
    /// The URL answered, without its query (which may hold a token).
    pub url: String,
}

impl Answer {
    /// The body as JSON.
    ///
    /// # Errors
    ///
    /// `Malformed`, saying where the body broke.
    pub fn json(&self) -> Result<Value, ConnectorError> {
        serde_json::from_str(&self.body).map_err(|error| ConnectorError::Malformed {
            what: self.url.clone(),
            message: format!(
                "the answer is not JSON (line {}, column {}: {error}); it starts {:?}",
                error.line(),
                error.column(),
                excerpt(&self.body)
            ),
        })
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// The error an unexpected status stands for, with an excerpt of the body: the API's own
    /// message goes into the dead letter.
    pub fn error(&self, doing: &str) -> ConnectorError {
        let message =
            format!("{doing}: HTTP {} from {}: {}", self.status.as_u16(), self.url, excerpt(&self.body));
        match self.status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                ConnectorError::Misconfigured { message: format!("{message} (check the connector's `auth`)") }
            }
            status if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS => {
                ConnectorError::Unavailable {
                    what: self.url.clone(),
                    message,
                    retry_after: retry_after(&self.headers),
                }
            }
            _ => ConnectorError::Rejected { message },
        }
    }
}

/// The start of a body, on one line, for messages.
pub fn excerpt(body: &str) -> String {
    const LONGEST: usize = 300;
    let flat: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(LONGEST) {
        Some((cut, _)) => format!("{}…", &flat[..cut]),
        None => flat,
    }
}

/// A URL for messages and logs: no query, which may hold a token, and no user info.
pub fn shown(url: &Url) -> String {
    let mut shown = url.clone();
    shown.set_query(None);
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.to_string()
}

/// The wait a 429 or 503 asks for: `Retry-After` in seconds or as an HTTP date.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = jiff::fmt::rfc2822::parse(text).ok()?.timestamp();
    let wait = when.duration_since(jiff::Timestamp::now());
    Some(Duration::try_from(wait).unwrap_or(Duration::ZERO))
}

/// Installs the process's TLS provider once (`ring`: it builds in a fraction of the time of
/// the alternative).
fn install_tls_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Another part of the program may have installed one already; either serves.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// An HTTP client as fieldsync's connectors of web APIs use one: TLS by rustls, `timeout` for a
/// whole request (at most 10 s of it to connect), and fieldsync's user agent.
///
/// # Errors
///
/// `Misconfigured` when the client cannot be built (no TLS roots).
pub fn http_client(timeout: Duration) -> Result<reqwest::Client, ConnectorError> {
    install_tls_provider();
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .user_agent(concat!("fieldsync/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|error| ConnectorError::Misconfigured { message: format!("the HTTP client: {error}") })
}

/// `request` with `auth`'s credentials in its headers (an `Auth::Query` goes into the URL
/// before the request is built).
pub fn authorised(request: reqwest::RequestBuilder, auth: Option<&Auth>) -> reqwest::RequestBuilder {
    match auth {
        Some(Auth::Bearer(token)) => request.bearer_auth(token.expose()),
        Some(Auth::Basic { user, password }) => request.basic_auth(user, Some(password.expose())),
        Some(Auth::Header { name, value }) => request.header(name.as_str(), value.expose()),
        Some(Auth::Query { .. }) | None => request,
    }
}

/// The request sender of one connector.
#[derive(Debug)]
pub(crate) struct Http {
    client: reqwest::Client,
    settings: Arc<Settings>,
    /// The latest requests, at most `rate.count` of them, and when each was answered: a new
    /// one waits until the oldest was answered a whole period ago. The server counts
    /// arrivals, and an answer comes after its request arrived, so no window of that length
    /// ever holds more arrivals than the rate allows (timing the starts would not do: a
    /// request whose connection took a while arrives later than it started).
    sent: Mutex<VecDeque<Sent>>,
    /// The next request's number, for `sent`.
    next: AtomicU64,
    /// Requests under way, at most `concurrency`.
    slots: Semaphore,
}

/// A request the rate limit counts.
#[derive(Debug)]
struct Sent {
    number: u64,
    /// When its answer (or its failure) came; `None` while it is under way.
    answered: Option<Instant>,
}

/// Whether a request writes: writes are paced, and a create is not sent again once it may
/// have been made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Read,
    Write,
    /// A `POST` that makes a record: after a 5xx, a timeout or a broken answer the record may
    /// exist, and sending it again would make a duplicate; only a refused connection or a 429
    /// (nothing was done) is sent again.
    Create,
}

impl Http {
    /// A sender for `settings`.
    ///
    /// # Errors
    ///
    /// `Misconfigured` when the HTTP client cannot be built (no TLS roots).
    pub fn new(settings: Arc<Settings>) -> Result<Self, ConnectorError> {
        let client = http_client(settings.timeout)?;
        let slots = Semaphore::new(settings.concurrency);
        Ok(Self { client, settings, sent: Mutex::new(VecDeque::new()), next: AtomicU64::new(0), slots })
    }

    /// Waits for the rate limit to allow one more request, and counts it; `answered` must be
    /// told when it was answered.
    async fn wait_for_rate(&self) -> Option<u64> {
        let rate = self.settings.rate?;
        let count = rate.count as usize;
        loop {
            let mut sent = self.sent.lock().await;
            let wait = match sent.front() {
                Some(oldest) if sent.len() >= count => match oldest.answered {
                    // Under way: when it arrived is not known yet.
                    None => Duration::from_millis(5),
                    Some(answered) => (answered + rate.per).saturating_duration_since(Instant::now()),
                },
                _ => Duration::ZERO,
            };
            if wait.is_zero() {
                while sent.len() >= count {
                    sent.pop_front();
                }
                let number = self.next.fetch_add(1, Ordering::Relaxed);
                sent.push_back(Sent { number, answered: None });
                return Some(number);
            }
            drop(sent);
            tokio::time::sleep(wait).await;
        }
    }

    /// Notes when a counted request was answered (or failed).
    async fn answered(&self, number: Option<u64>) {
        let Some(number) = number else { return };
        let mut sent = self.sent.lock().await;
        if let Some(entry) = sent.iter_mut().find(|entry| entry.number == number) {
            entry.answered = Some(Instant::now());
        }
    }

    /// Sends one request, retrying the failures that may pass; every other answer, whatever
    /// its status, is returned.
    ///
    /// # Errors
    ///
    /// `Unavailable` when the retries ran out (with the wait the server asked for, if it did).
    pub async fn send(
        &self,
        method: Method,
        mut url: Url,
        body: Option<&Value>,
        if_match: Option<&str>,
        kind: Kind,
    ) -> Result<Answer, ConnectorError> {
        if let Some(Auth::Query { name, value }) = &self.settings.auth {
            url.query_pairs_mut().append_pair(name, value.expose());
        }
        let what = shown(&url);
        let _slot = self.slots.acquire().await.map_err(|_| ConnectorError::Unavailable {
            what: what.clone(),
            message: "the connector is closing".into(),
            retry_after: None,
        })?;
        if kind != Kind::Read
            && let Some(pace) = self.settings.pace
        {
            tokio::time::sleep(pace.draw()).await;
        }
        let (method, url, what) = (&method, &url, &what);
        let try_once = || async move {
            let counted = self.wait_for_rate().await;
            let mut request =
                authorised(self.client.request(method.clone(), url.clone()), self.settings.auth.as_ref());
            for (name, value) in &self.settings.headers {
                if let Ok(value) = HeaderValue::from_str(value.expose()) {
                    request = request.header(name.clone(), value);
                }
            }
            request = request.header(reqwest::header::ACCEPT, "application/json");
            if let Some(tag) = if_match {
                request = request.header(reqwest::header::IF_MATCH, tag);
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            let answer = answer_of(request.send().await, what).await;
            self.answered(counted).await;
            answer
        };
        let policy = RetryPolicy {
            retries: self.settings.retries,
            step_ms: 250,
            max_doublings: 6,
            repeat_acted: kind != Kind::Create,
        };
        send_with_retries(what, policy, try_once, |answer| excerpt(&answer.body)).await
    }
}

/// How a sender tries again the failures that may pass: at most `retries` times, each after
/// the wait the server asked for (`Retry-After`, up to a minute) or else `step_ms`
/// milliseconds doubled with each attempt (at most `max_doublings` times) plus a random part
/// of up to `step_ms`.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// The tries after the first.
    pub retries: u32,
    /// The unit of the wait between tries, in milliseconds.
    pub step_ms: u64,
    /// How often the wait doubles at most.
    pub max_doublings: u32,
    /// Whether a request the server may have acted on (it answered 5xx, timed out or broke
    /// off its answer) is sent again: not one that must not be carried out twice.
    pub repeat_acted: bool,
}

/// A try of a request that came to no answer to return.
#[derive(Debug)]
pub struct Failure {
    /// What went wrong, for the error and the log.
    pub message: String,
    /// The wait the server asked for, if it did.
    pub wait: Option<Duration>,
    /// Whether the server may have acted on the request.
    pub acted: bool,
}

/// One try's response read whole, from the URL shown as `url`, or the failure it was.
///
/// # Errors
///
/// A `Failure` when the request or its answer broke off.
pub async fn answer_of(
    sent: Result<reqwest::Response, reqwest::Error>,
    url: &str,
) -> Result<Answer, Failure> {
    match sent {
        Ok(response) => {
            let status = response.status();
            let headers = response.headers().clone();
            match response.text().await {
                Ok(body) => Ok(Answer { status, headers, body, url: url.to_string() }),
                Err(error) => Err(Failure {
                    message: format!("the answer broke off: {}", plain(&error)),
                    wait: None,
                    acted: true,
                }),
            }
        }
        Err(error) => Err(Failure { message: plain(&error), wait: None, acted: !error.is_connect() }),
    }
}

/// Tries a request to `what` (`try_once` sends it afresh each time) until it is answered with
/// a status other than a 5xx or a 429, trying the failures that may pass again as `policy`
/// says; `describe` says what such an answer's body tells, for the message.
///
/// # Errors
///
/// `Unavailable` when the retries ran out, the server asked for too long a wait, or the
/// server may have acted on a request `policy` does not send again.
pub async fn send_with_retries<Try, Tried>(
    what: &str,
    policy: RetryPolicy,
    mut try_once: Try,
    describe: impl Fn(&Answer) -> String,
) -> Result<Answer, ConnectorError>
where
    Try: FnMut() -> Tried,
    Tried: Future<Output = Result<Answer, Failure>>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        let failure = match try_once().await {
            Ok(answer)
                if answer.status.is_server_error() || answer.status == StatusCode::TOO_MANY_REQUESTS =>
            {
                Failure {
                    message: format!("HTTP {}: {}", answer.status.as_u16(), describe(&answer)),
                    wait: retry_after(&answer.headers),
                    acted: answer.status != StatusCode::TOO_MANY_REQUESTS,
                }
            }
            Ok(answer) => return Ok(answer),
            Err(failure) => failure,
        };
        let Failure { message, wait, acted } = failure;
        let too_long = wait.is_some_and(|wait| wait > MAX_RETRY_AFTER);
        if attempt > policy.retries || too_long || (acted && !policy.repeat_acted) {
            return Err(ConnectorError::Unavailable { what: what.to_string(), message, retry_after: wait });
        }
        let backoff = Duration::from_millis(
            policy.step_ms * (1 << attempt.min(policy.max_doublings)) + fastrand::u64(0..policy.step_ms),
        );
        let wait = wait.unwrap_or(backoff);
        tracing::warn!(url = %what, attempt, wait_ms = wait.as_millis() as u64, %message, "Retrying a request.");
        tokio::time::sleep(wait).await;
    }
}

/// An HTTP client error as one line, with its causes but never the URL's query.
pub fn plain(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else {
        "failed"
    };
    let mut causes = Vec::new();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        causes.push(cause.to_string());
        source = cause.source();
    }
    if causes.is_empty() { kind.to_string() } else { format!("{kind}: {}", causes.join(": ")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_query_or_user() {
        let url = Url::parse("https://admin:pw@club.example/api/members?api_key=secret&page=2").unwrap();
        assert_eq!(shown(&url), "https://club.example/api/members");
    }

    #[test]
    fn excerpts_are_short_and_on_one_line() {
        assert_eq!(
            excerpt("{\n  \"code\": \"rest_invalid_param\"\n}"),
            "{ \"code\": \"rest_invalid_param\" }"
        );
        assert_eq!(excerpt(&"x".repeat(400)).chars().count(), 301);
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut headers = HeaderMap::new();
        headers.insert(reqwest::header::RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        headers
            .insert(reqwest::header::RETRY_AFTER, HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"));
        assert_eq!(retry_after(&headers), Some(Duration::ZERO));
    }
}
