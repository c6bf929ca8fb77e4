//! Webhooks in: `POST /hooks/{link}/{side}` tells the service that a side of a link changed.
//! A webhook is taken only when its signature is the sender's (Standard Webhooks, or an
//! HMAC-SHA256 header), its signed time is within the tolerance and its id is new; it is kept
//! in the state store before the `202` answers, and the link runs. A bad or missing signature,
//! a stale time and a replay get `401` with nothing said of why (the log says), a body over
//! `max_body` `413`, and more than `rate` webhooks of one system `429` with `Retry-After`.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use fieldsync_app::Config;
use fieldsync_app::config::{Signature, SignatureEncoding, WebhookConfig};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use jiff::Timestamp;
use ring::hmac;

use crate::api::{Api, ApiError};

/// Each connector's limiter of webhooks, by connector name.
pub struct Limits(BTreeMap<String, DefaultDirectRateLimiter>);

impl Limits {
    /// A limiter for every connector that takes webhooks: its `rate`, all at once at most.
    pub fn new(config: &Config) -> Self {
        let limiters = config
            .connectors
            .values()
            .filter_map(|connector| {
                let rate = connector.webhook.as_ref()?.rate;
                let count = NonZeroU32::new(rate.count)?;
                let quota = Quota::with_period(rate.per / rate.count)?.allow_burst(count);
                Some((connector.name.clone(), RateLimiter::direct(quota)))
            })
            .collect();
        Self(limiters)
    }

    /// How long the connector's sender should wait, when it sent too many.
    fn wait(&self, connector: &str) -> Option<Duration> {
        let limiter = self.0.get(connector)?;
        limiter.check().err().map(|not_until| {
            not_until.wait_time_from(governor::clock::Clock::now(&governor::clock::DefaultClock::default()))
        })
    }
}

/// Why a webhook was refused with `401`: for the log only.
#[derive(Debug, PartialEq, Eq)]
enum Refused {
    /// A header the scheme needs is missing or unreadable.
    Missing(&'static str),
    /// No signature matches.
    BadSignature,
    /// The signed time is too far from now.
    Stale,
    /// The id came before, within the tolerance.
    Replayed,
}

/// A webhook whose signature holds: its id (the sender's, or the signature itself when the
/// scheme has none).
#[derive(Debug, PartialEq, Eq)]
struct Verified {
    id: String,
}

/// `POST /hooks/{link}/{side}`, counted by its answer.
pub async fn receive(
    State(api): State<Api>,
    Path((link, side)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let response = match take(&api, link.clone(), &side, &headers, body).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    };
    crate::metrics::webhook(&link, &side, response.status().as_u16());
    response
}

/// `POST /hooks/{link}/{org}/{side}`: a webhook for an organisation's instance of a link
/// (`LINK/ORG`), checked with that organisation's secret and limited by its own rate.
pub async fn receive_for(
    State(api): State<Api>,
    Path((link, org, side)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    receive(State(api), Path((format!("{link}/{org}"), side)), headers, body).await
}

/// Takes a webhook, or says why not.
async fn take(
    api: &Api,
    link: String,
    side: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let Some((side, connector, webhook)) = api.config.webhook_of(&link, side) else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "no such link, or its side takes no webhooks"));
    };
    if let Some(wait) = api.limits.wait(connector) {
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let mut response = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too many webhooks").into_response();
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        return Ok(response);
    }
    let Ok(body) = axum::body::to_bytes(body, webhook.max_body).await else {
        return Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "the body is too large"));
    };
    let refuse = |why: Refused| {
        tracing::warn!(%link, %connector, ?why, "a webhook was refused");
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorised")
    };
    let verified = verify(webhook, headers, &body, Timestamp::now()).map_err(refuse)?;
    let records = records(webhook, &body);
    let (hook_link, hook_id, tolerance) = (link.clone(), verified.id.clone(), webhook.tolerance);
    let accepted = api
        .workspace
        .call(move |workspace| workspace.accept_webhook(&hook_link, side, &hook_id, records, tolerance))
        .await?;
    if !accepted {
        return Err(refuse(Refused::Replayed));
    }
    api.links.poke(&link);
    let body = serde_json::json!({ "accepted": verified.id });
    Ok((StatusCode::ACCEPTED, axum::Json(body)).into_response())
}

/// Checks a webhook's signature and signed time under `webhook`'s scheme.
fn verify(
    webhook: &WebhookConfig,
    headers: &HeaderMap,
    body: &[u8],
    now: Timestamp,
) -> Result<Verified, Refused> {
    let text = |name: &'static str| {
        headers.get(name).and_then(|value| value.to_str().ok()).map(str::trim).ok_or(Refused::Missing(name))
    };
    match &webhook.signature {
        Signature::Standard => {
            let (id, timestamp, signatures) =
                (text("webhook-id")?, text("webhook-timestamp")?, text("webhook-signature")?);
            within(timestamp, webhook.tolerance, now)?;
            let secret = webhook.secret.expose();
            let secret = secret.strip_prefix("whsec_").unwrap_or(secret);
            let key = base64::engine::general_purpose::STANDARD
                .decode(secret)
                .map_err(|_| Refused::BadSignature)?;
            let key = hmac::Key::new(hmac::HMAC_SHA256, &key);
            let signed = [id.as_bytes(), b".", timestamp.as_bytes(), b".", body].concat();
            // Several signatures may stand side by side (a secret being rotated): one is enough.
            let matches = signatures
                .split_whitespace()
                .filter_map(|signature| signature.strip_prefix("v1,"))
                .any(|signature| {
                    base64::engine::general_purpose::STANDARD
                        .decode(signature)
                        .is_ok_and(|tag| hmac::verify(&key, &signed, &tag).is_ok())
                });
            if matches { Ok(Verified { id: id.to_string() }) } else { Err(Refused::BadSignature) }
        }
        Signature::Header { header, prefix, encoding, timestamp } => {
            let value = headers
                .get(header.as_str())
                .and_then(|value| value.to_str().ok())
                .ok_or(Refused::Missing("the signature header"))?
                .trim();
            let signature = value.strip_prefix(prefix.as_str()).ok_or(Refused::BadSignature)?;
            let tag = match encoding {
                SignatureEncoding::Hex => from_hex(signature),
                SignatureEncoding::Base64 => base64::engine::general_purpose::STANDARD.decode(signature).ok(),
            }
            .ok_or(Refused::BadSignature)?;
            let signed = match timestamp {
                Some(name) => {
                    let time = headers
                        .get(name.as_str())
                        .and_then(|value| value.to_str().ok())
                        .ok_or(Refused::Missing("the timestamp header"))?
                        .trim();
                    within(time, webhook.tolerance, now)?;
                    [time.as_bytes(), b".", body].concat()
                }
                None => body.to_vec(),
            };
            let key = hmac::Key::new(hmac::HMAC_SHA256, webhook.secret.expose().as_bytes());
            hmac::verify(&key, &signed, &tag).map_err(|_| Refused::BadSignature)?;
            // Without an id of its own, the signature is the message's: the same body (at the
            // same time) again is a replay.
            Ok(Verified { id: signature.to_ascii_lowercase() })
        }
    }
}

/// Whether `timestamp` (Unix seconds) is within `tolerance` of `now`, either way.
fn within(timestamp: &str, tolerance: Duration, now: Timestamp) -> Result<(), Refused> {
    let seconds: i64 = timestamp.parse().map_err(|_| Refused::Missing("a readable timestamp"))?;
    let signed = Timestamp::from_second(seconds).map_err(|_| Refused::Stale)?;
    if now.duration_since(signed).unsigned_abs() <= tolerance { Ok(()) } else { Err(Refused::Stale) }
}

/// The bytes of a hexadecimal text, if it is one.
fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|at| u8::from_str_radix(text.get(at..at + 2)?, 16).ok()).collect()
}

/// The ids of the records the body names at `records`: one id or an array of them (strings or
/// numbers); none when the body does not say.
fn records(webhook: &WebhookConfig, body: &[u8]) -> Vec<String> {
    let Some(pointer) = &webhook.records else { return Vec::new() };
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(body) else { return Vec::new() };
    let id = |value: &serde_json::Value| match value {
        serde_json::Value::String(text) => Some(text.clone()),
        serde_json::Value::Number(number) => Some(number.to_string()),
        _ => None,
    };
    match body.pointer(pointer) {
        Some(serde_json::Value::Array(values)) => values.iter().filter_map(id).collect(),
        Some(value) => id(value).into_iter().collect(),
        None => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use fieldsync_app::config::{Rate, Secret};

    use super::*;

    /// The key of Standard Webhooks' own example, `whsec_` and the base64 of its bytes.
    const STANDARD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn webhook(signature: Signature, secret: &str) -> WebhookConfig {
        WebhookConfig {
            secret: Secret::new(secret),
            signature,
            tolerance: Duration::from_secs(300),
            rate: Rate { count: 100, per: Duration::from_secs(60) },
            records: Some("/data/id".into()),
            max_body: 1 << 20,
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| (header::HeaderName::from_static(name), value.parse().unwrap()))
            .collect()
    }

    #[test]
    fn standard_webhooks_example_verifies_and_a_changed_byte_does_not() {
        // The example of the Standard Webhooks specification: this id, time, body and secret
        // give this signature.
        let body = br#"{"test": 2432232314}"#;
        let config = webhook(Signature::Standard, STANDARD_SECRET);
        let at = Timestamp::from_second(1_614_265_330).unwrap();
        let signed = headers(&[
            ("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek"),
            ("webhook-timestamp", "1614265330"),
            ("webhook-signature", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="),
        ]);
        assert_eq!(
            verify(&config, &signed, body, at),
            Ok(Verified { id: "msg_p5jXN8AQM9LWM0D4loKWxJek".into() })
        );
        assert_eq!(verify(&config, &signed, br#"{"test": 2432232315}"#, at), Err(Refused::BadSignature));
        let later = Timestamp::from_second(1_614_265_330 + 301).unwrap();
        assert_eq!(verify(&config, &signed, body, later), Err(Refused::Stale));
        let other_key = webhook(Signature::Standard, "whsec_QUJDREVGR0hJSktMTU5PUFFSU1RVVldY");
        assert_eq!(verify(&other_key, &signed, body, at), Err(Refused::BadSignature));
        assert_eq!(verify(&config, &headers(&[]), body, at), Err(Refused::Missing("webhook-id")));
    }

    #[test]
    fn a_github_style_header_verifies_in_hex_and_base64() {
        // GitHub's documented example: secret "It's a Secret to Everybody", body "Hello, World!".
        let secret = "It's a Secret to Everybody";
        let body = b"Hello, World!";
        let hex_signature = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        let hex = Signature::Header {
            header: "x-hub-signature-256".into(),
            prefix: "sha256=".into(),
            encoding: SignatureEncoding::Hex,
            timestamp: None,
        };
        let now = Timestamp::now();
        let config = webhook(hex, secret);
        let signed = headers(&[("x-hub-signature-256", hex_signature)]);
        assert!(verify(&config, &signed, body, now).is_ok());
        assert_eq!(verify(&config, &signed, b"Hello, World?", now), Err(Refused::BadSignature));
        let unprefixed = headers(&[("x-hub-signature-256", &hex_signature["sha256=".len()..])]);
        assert_eq!(verify(&config, &unprefixed, body, now), Err(Refused::BadSignature));

        let base64 = Signature::Header {
            header: "x-signature".into(),
            prefix: String::new(),
            encoding: SignatureEncoding::Base64,
            timestamp: Some("x-timestamp".into()),
        };
        let config = webhook(base64, secret);
        let time = now.as_second().to_string();
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
        let tag = hmac::sign(&key, &[time.as_bytes(), b".", body].concat());
        let tag = base64::engine::general_purpose::STANDARD.encode(tag.as_ref());
        let signed = headers(&[("x-signature", &tag), ("x-timestamp", &time)]);
        assert!(verify(&config, &signed, body, now).is_ok());
        let stale = (now.as_second() - 301).to_string();
        let stale = headers(&[("x-signature", &tag), ("x-timestamp", &stale)]);
        assert!(verify(&config, &stale, body, now).is_err(), "the time is signed and checked");
    }

    #[test]
    fn the_records_a_body_names_are_read_at_the_pointer() {
        let config = webhook(Signature::Standard, STANDARD_SECRET);
        assert_eq!(records(&config, br#"{"data": {"id": "KNVB1234567"}}"#), vec!["KNVB1234567"]);
        assert_eq!(records(&config, br#"{"data": {"id": [12, "13"]}}"#), vec!["12", "13"]);
        assert!(records(&config, br#"{"data": {}}"#).is_empty());
        assert!(records(&config, b"not json").is_empty());
    }
}
