//! Sending requests to the server: auth, timeouts, and retries of the failures that may pass
//! (a refused or dropped connection, a timeout, a 5xx, a 429), with `Retry-After` honoured —
//! for a write only when the server cannot have acted on it. Every other answer goes back to
//! the caller, who knows what a 404 or a 409 means for its request.

use std::time::Duration;

use fieldsync_connector::ConnectorError;
use fieldsync_connector_rest::{Auth, RetryPolicy, answer_of, authorised, http_client, send_with_retries};
use reqwest::{Method, StatusCode, Url};
use serde_json::Value as Json;

/// How often a failure that may pass is tried again before it is reported.
const RETRIES: u32 = 3;

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
        reason(&self.body)
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

/// CouchDB's `error` and `reason` in an answer's `body`, as `error: reason`, or the start of
/// the body.
fn reason(body: &str) -> String {
    match serde_json::from_str::<Json>(body) {
        Ok(json) => match (json["error"].as_str(), json["reason"].as_str()) {
            (Some(error), Some(reason)) if !reason.is_empty() => format!("{error}: {reason}"),
            (Some(error), _) => error.to_string(),
            _ => excerpt(body),
        },
        Err(_) => excerpt(body),
    }
}

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
        let (method, url, what) = (&method, &url, &what);
        let try_once = || async move {
            let mut request =
                authorised(self.client.request(method.clone(), url.clone()), self.auth.as_ref());
            request = request.header(reqwest::header::ACCEPT, "application/json");
            if let Some(body) = body {
                request = request.json(body);
            }
            answer_of(request.send().await, what).await
        };
        let policy = RetryPolicy {
            retries: RETRIES,
            step_ms: 200,
            max_doublings: 5,
            repeat_acted: kind != Kind::Write,
        };
        let answer = send_with_retries(what, policy, try_once, |answer| reason(&answer.body)).await?;
        Ok(Answer { status: answer.status, body: answer.body, url: answer.url })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_couchdbs() {
        let answer = Answer {
            status: StatusCode::NOT_FOUND,
            body: r#"{"error":"not_found","reason":"Database does not exist."}"#.into(),
            url: "http://h/club".into(),
        };
        assert_eq!(answer.reason(), "not_found: Database does not exist.");
        assert!(matches!(answer.error("reading"), ConnectorError::Rejected { .. }));
    }
}
