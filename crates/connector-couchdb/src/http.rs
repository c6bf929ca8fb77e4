//! Sending requests to the server: auth, timeouts, and retries of the failures that may pass
//! (a refused or dropped connection, a timeout, a 5xx, a 429), with `Retry-After` honoured —
//! for a write only when the server cannot have acted on it. Every other answer goes back to
//! the caller, who knows what a 404 or a 409 means for its request.

use std::time::Duration;

use fieldsync_connector::ConnectorError;
use fieldsync_connector_rest::{Auth, authorised, http_client, plain_error, retry_after};
use reqwest::{Method, StatusCode, Url};
use serde_json::Value as Json;

/// How often a failure that may pass is tried again before it is reported.
const RETRIES: u32 = 3;

/// The longest `Retry-After` obeyed inside one call; a longer one goes to the engine.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// An answer that is not a failure to retry.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) body: String,
    /// The URL answered, without query or user info.
    pub(crate) url: String,
}

impl Answer {
    /// The body as JSON.
    ///
    /// # Errors
    ///
    /// `Malformed`, saying where the body broke.
    pub(crate) fn json(&self) -> Result<Json, ConnectorError> {
        serde_json::from_str(&self.body).map_err(|error| ConnectorError::Malformed {
            what: self.url.clone(),
            message: format!("the answer is not JSON ({error}); it starts {:?}", excerpt(&self.body)),
        })
    }

    /// CouchDB's `error` and `reason`, as `error: reason`, or the start of the body.
    pub(crate) fn reason(&self) -> String {
        match serde_json::from_str::<Json>(&self.body) {
            Ok(body) => match (body["error"].as_str(), body["reason"].as_str()) {
                (Some(error), Some(reason)) if !reason.is_empty() => format!("{error}: {reason}"),
                (Some(error), _) => error.to_string(),
                _ => excerpt(&self.body),
            },
            Err(_) => excerpt(&self.body),
        }
    }

    /// The error an unexpected status stands for while `doing` something, with CouchDB's own
    /// reason.
    pub(crate) fn error(&self, doing: &str) -> ConnectorError {
        let message = format!("{doing}: HTTP {} from {}: {}", self.status.as_u16(), self.url, self.reason());
        match self.status {
            StatusCode::UNAUTHORIZED => ConnectorError::Misconfigured {
                message: format!("{message} (the server refused the login; check the connector's `auth`)"),
            },
            StatusCode::FORBIDDEN => ConnectorError::Misconfigured {
                message: format!("{message} (the user may not do this; check the connector's `auth`)"),
            },
            // A 5xx or 429 never gets here: `send` tries it again or fails as unavailable.
            _ => ConnectorError::Rejected { message },
        }
    }
}

pub(crate) use fieldsync_connector_rest::{excerpt, shown_url as shown};

/// Whether a request only reads, or writes (and must not be sent again once the server may
/// have acted on it: a `_bulk_docs` sent twice would meet its own first revisions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Read,
    Write,
}

/// The request sender of one connector.
#[derive(Debug)]
pub(crate) struct Http {
    client: reqwest::Client,
    auth: Option<Auth>,
}

impl Http {
    /// A sender with `auth` whose requests end after `timeout`.
    ///
    /// # Errors
    ///
    /// `Misconfigured` when the HTTP client cannot be built.
    pub(crate) fn new(auth: Option<Auth>, timeout: Duration) -> Result<Self, ConnectorError> {
        Ok(Self { client: http_client(timeout)?, auth })
    }

    /// Sends one request, retrying the failures that may pass; every other answer, whatever its
    /// status, is returned.
    ///
    /// # Errors
    ///
    /// `Unavailable` when the retries ran out, or at once for a write the server may have
    /// acted on.
    pub(crate) async fn send(
        &self,
        method: Method,
        mut url: Url,
        body: Option<&Json>,
        kind: Kind,
    ) -> Result<Answer, ConnectorError> {
        if let Some(Auth::Query { name, value }) = &self.auth {
            url.query_pairs_mut().append_pair(name, value.expose());
        }
        let what = shown(&url);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut request =
                authorised(self.client.request(method.clone(), url.clone()), self.auth.as_ref());
            request = request.header(reqwest::header::ACCEPT, "application/json");
            if let Some(body) = body {
                request = request.json(body);
            }
            let outcome = match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    let wait = retry_after(response.headers());
                    match response.text().await {
                        Ok(body) => Ok((Answer { status, body, url: what.clone() }, wait)),
                        Err(error) => {
                            Err((format!("the answer broke off: {}", plain_error(&error)), None, true))
                        }
                    }
                }
                Err(error) => Err((plain_error(&error), None, !error.is_connect())),
            };
            // Whether the server may have acted on the request.
            let (message, wait, acted) = match outcome {
                Ok((answer, wait))
                    if answer.status.is_server_error() || answer.status == StatusCode::TOO_MANY_REQUESTS =>
                {
                    let acted = answer.status != StatusCode::TOO_MANY_REQUESTS;
                    (format!("HTTP {}: {}", answer.status.as_u16(), answer.reason()), wait, acted)
                }
                Ok((answer, _)) => return Ok(answer),
                Err(failure) => failure,
            };
            let too_long = wait.is_some_and(|wait| wait > MAX_RETRY_AFTER);
            if attempt > RETRIES || too_long || (kind == Kind::Write && acted) {
                return Err(ConnectorError::Unavailable { what, message, retry_after: wait });
            }
            let backoff = Duration::from_millis(200 * (1 << attempt.min(5)) + fastrand::u64(0..200));
            let wait = wait.unwrap_or(backoff);
            tracing::warn!(url = %what, attempt, wait_ms = wait.as_millis() as u64, %message, "Retrying a request.");
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_user_or_query_and_reasons_are_couchdbs() {
        let url = Url::parse("https://sync:hunter2@couch.example:6984/club/_changes?since=4").unwrap();
        assert_eq!(shown(&url), "https://couch.example:6984/club/_changes");
        let answer = Answer {
            status: StatusCode::NOT_FOUND,
            body: r#"{"error":"not_found","reason":"Database does not exist."}"#.into(),
            url: "http://h/club".into(),
        };
        assert_eq!(answer.reason(), "not_found: Database does not exist.");
        assert!(matches!(answer.error("reading"), ConnectorError::Rejected { .. }));
    }
}
