//! The settings of `fieldsync serve`: when each link runs (`schedule` or `every`), and the
//! `[server]` table (where it listens, how many runs at once, the API's bearer tokens).

use std::net::SocketAddr;
use std::time::Duration;

use croner::Cron;
use fieldsync_connector::Secret;
use fieldsync_engine::DEFAULT_LEASE_TIMEOUT;
use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::Serialize;

/// Where `fieldsync serve` listens when `[server]` does not say: loopback only, so that
/// nothing is reachable from elsewhere until someone chooses to put a proxy in front.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8470";

/// How many runs go on at once across every link when `[server]` does not say.
pub const DEFAULT_MAX_CONCURRENT_RUNS: usize = 5;

/// When a link runs under `fieldsync serve`.
#[derive(Clone, Debug)]
pub enum Schedule {
    /// `schedule = "*/15 * * * *"`: a cron expression of five fields, read in a time zone.
    Cron {
        /// The expression as written.
        text: String,
        /// The expression, parsed.
        cron: Box<Cron>,
        /// The zone it is read in (`schedule_tz`, UTC unless set).
        zone: TimeZone,
    },
    /// `every = "15m"`: a fixed interval from the start of one run to the start of the next.
    Every(Duration),
}

impl Schedule {
    /// The first time the link is due after `at`: the next slot of the cron expression, or
    /// `at` plus the interval. `None` for an expression that never fires again.
    pub fn next_after(&self, at: Timestamp) -> Option<Timestamp> {
        match self {
            Schedule::Cron { cron, zone, .. } => {
                cron.find_next_occurrence(&at.to_zoned(zone.clone()), false).ok().map(|next| next.timestamp())
            }
            Schedule::Every(interval) => at.checked_add(*interval).ok(),
        }
    }

    /// About how long lies between two runs: the interval, or the gap between the cron
    /// expression's next two slots after `at`.
    pub fn period(&self, at: Timestamp) -> Duration {
        match self {
            Schedule::Every(interval) => *interval,
            Schedule::Cron { .. } => self
                .next_after(at)
                .and_then(|first| Some((first, self.next_after(first)?)))
                .map_or(Duration::ZERO, |(first, second)| second.duration_since(first).unsigned_abs()),
        }
    }
}

impl Serialize for Schedule {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Schedule::Cron { text, zone, .. } => {
                let zone = zone.iana_name().unwrap_or("UTC");
                serializer.serialize_str(&format!("{text} ({zone})"))
            }
            Schedule::Every(interval) => serializer.serialize_str(&format!(
                "every {:#}",
                jiff::SignedDuration::try_from(*interval).unwrap_or(jiff::SignedDuration::MAX)
            )),
        }
    }
}

/// The `[server]` table of `fieldsync serve`.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Where the HTTP API listens (`listen`, `127.0.0.1:8470` unless set).
    pub listen: SocketAddr,
    /// How many runs go on at once across every link (`max_concurrent_runs`, 5 unless set).
    pub max_concurrent_runs: usize,
    /// How long a run's lease lasts without a commit (`lease_timeout`, 30 minutes unless set):
    /// past it, another run may take the link over, and the stalled run can commit nothing.
    pub lease_timeout: Duration,
    /// The bearer tokens the API accepts (`[[server.tokens]]`); none means no API request
    /// is accepted, only `/healthz` and `/readyz`.
    pub tokens: Vec<ApiToken>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.parse().unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 8470))),
            max_concurrent_runs: DEFAULT_MAX_CONCURRENT_RUNS,
            lease_timeout: DEFAULT_LEASE_TIMEOUT,
            tokens: Vec::new(),
        }
    }
}

/// One `[[server.tokens]]`: a bearer token of the API, its name and what it may do.
#[derive(Clone, Debug)]
pub struct ApiToken {
    /// Its name, for the log of what it did (never the token itself).
    pub name: String,
    /// The token, from the environment.
    pub token: Secret,
    /// What it may do.
    pub role: Role,
    /// The one organisation whose links, reviews, outbox entries and runs it sees and acts
    /// on (`org`), if it is limited to one.
    pub organisation: Option<String>,
}

/// A connector's `webhook`: how `fieldsync serve` knows its system's webhooks
/// (`POST /hooks/{link}/{side}`) for its own.
#[derive(Clone, Debug, PartialEq)]
pub struct WebhookConfig {
    /// The shared secret the sender signs with (for `standard`, the `whsec_…` text as given).
    pub secret: Secret,
    /// How the sender signs.
    pub signature: Signature,
    /// How far a signed time may be from now, and how long an id is remembered against replays
    /// (`tolerance`, five minutes unless set; at most a day).
    pub tolerance: Duration,
    /// How many webhooks of this system are taken per period; more answer 429 (`rate`, such as
    /// `"100/1m"`; 600 a minute unless set).
    pub rate: Rate,
    /// A JSON pointer to the id (or an array of ids) of the records the body names (`records`).
    pub records: Option<String>,
    /// The largest body taken, in bytes; larger answer 413 (`max_body`, 1 MiB unless set).
    pub max_body: usize,
}

/// How a webhook is signed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Signature {
    /// Standard Webhooks: `webhook-id`, `webhook-timestamp` and `webhook-signature: v1,<base64>`,
    /// HMAC-SHA256 over `id.timestamp.body` with the secret's bytes (base64 after `whsec_`).
    Standard,
    /// HMAC-SHA256 of the body (or of `timestamp.body` when a timestamp header is named) with the
    /// secret's bytes, in a header of its own (GitHub's `X-Hub-Signature-256: sha256=<hex>`).
    Header {
        /// The header holding the signature.
        header: String,
        /// What stands before the signature in it (`sha256=`), if anything.
        prefix: String,
        /// How the signature is written.
        encoding: SignatureEncoding,
        /// The header holding the time of signing in Unix seconds, if the sender sends one.
        timestamp: Option<String>,
    },
}

/// How a signature is written in its header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignatureEncoding {
    /// Lower- or upper-case hexadecimal.
    Hex,
    /// Standard base64.
    Base64,
}

/// A rate: `count` per `per`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// How many.
    pub count: u32,
    /// In how long.
    pub per: Duration,
}

/// The `[reports]` table: an e-mail after runs.
#[derive(Clone, Debug, PartialEq)]
pub struct ReportsConfig {
    /// The SMTP server: `smtp://[user:password@]host[:port]` (STARTTLS, required; `?tls=none` for a
    /// relay on this machine) or `smtps://…` (TLS from the start). It may hold a password.
    pub smtp: Secret,
    /// The sender's address.
    pub from: String,
    /// The recipients' addresses as written; one with `${org.NAME}` is an organisation's own,
    /// read for each of its links (`LinkConfig::report_to`).
    pub to: Vec<String>,
    /// After which runs (`when`, `changes` unless set).
    pub when: ReportWhen,
    /// Where the API is reached from a mail reader (`history_url`), for a link to the run; the
    /// report names the command that shows it when not set.
    pub history_url: Option<String>,
}

/// After which runs a report is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportWhen {
    /// Every run.
    Always,
    /// Runs that wrote, settled a conflict, held something for review, or failed.
    Changes,
    /// Runs that failed, were stopped by the guard, or left writes failing.
    Failures,
}

/// What an API token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Read links, runs, reviews, the outbox and the history.
    Read,
    /// Read, and act: start runs and plans, resolve reviews, retry and drop outbox entries.
    Operate,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cron(text: &str, zone: &str) -> Schedule {
        let cron = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Disallowed)
            .build()
            .parse(text)
            .unwrap();
        Schedule::Cron { text: text.into(), cron: Box::new(cron), zone: TimeZone::get(zone).unwrap() }
    }

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn a_cron_schedule_fires_at_its_next_slot_in_its_zone() {
        let quarter = cron("*/15 * * * *", "UTC");
        assert_eq!(quarter.next_after(at("2026-03-01T10:07:12Z")), Some(at("2026-03-01T10:15:00Z")));
        // Exactly on a slot, the next one: a run that started on the slot is not due again.
        assert_eq!(quarter.next_after(at("2026-03-01T10:15:00Z")), Some(at("2026-03-01T10:30:00Z")));
        assert_eq!(quarter.period(at("2026-03-01T10:07:12Z")), Duration::from_secs(15 * 60));

        // Two in the night in Amsterdam is one in UTC in winter and midnight in summer.
        let nightly = cron("0 2 * * *", "Europe/Amsterdam");
        assert_eq!(nightly.next_after(at("2026-01-10T12:00:00Z")), Some(at("2026-01-11T01:00:00Z")));
        assert_eq!(nightly.next_after(at("2026-07-10T12:00:00Z")), Some(at("2026-07-11T00:00:00Z")));
    }

    #[test]
    fn an_interval_counts_from_the_start_of_the_last_run() {
        let every = Schedule::Every(Duration::from_secs(90));
        assert_eq!(every.next_after(at("2026-03-01T10:00:00Z")), Some(at("2026-03-01T10:01:30Z")));
        assert_eq!(every.period(at("2026-03-01T10:00:00Z")), Duration::from_secs(90));
    }

    #[test]
    fn a_schedule_shows_as_written() {
        let shown = serde_json::to_value(cron("0 2 * * *", "Europe/Amsterdam")).unwrap();
        assert_eq!(shown, "0 2 * * * (Europe/Amsterdam)");
        let shown = serde_json::to_value(Schedule::Every(Duration::from_secs(900))).unwrap();
        assert_eq!(shown, "every 15m");
    }
}
