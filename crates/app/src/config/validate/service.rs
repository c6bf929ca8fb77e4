//! The settings of `fieldsync serve` checked: a link's `schedule`, `schedule_tz` and `every`,
//! and the `[server]` table.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use croner::parser::{CronParser, Seconds};
use fieldsync_connector::Secret;
use jiff::tz::TimeZone;
use toml::Spanned;

use base64::Engine as _;
use serde::Deserialize as _;
use toml::de::DeValue;

use super::Validator;
use crate::config::env::mentions_organisation;
use crate::config::organisations::{DEFAULT_REREAD, OrganisationSource, Organisations};
use crate::config::raw::{RawLink, RawOrganisations, RawReports, RawServer, RawSignature, RawWebhook};
use crate::config::service::{
    ApiToken, Rate, ReportWhen, ReportsConfig, Role, Schedule, ServerConfig, Signature, SignatureEncoding,
    WebhookConfig,
};

/// How far a webhook's signed time may be from now when `tolerance` does not say.
const DEFAULT_TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// The longest `tolerance`: ids are remembered this long against replays.
const MAX_TOLERANCE: Duration = Duration::from_secs(24 * 3600);

/// How many webhooks of one system are taken per minute when `rate` does not say.
const DEFAULT_RATE: Rate = Rate { count: 600, per: Duration::from_secs(60) };

/// The largest webhook body taken when `max_body` does not say.
const DEFAULT_MAX_BODY: usize = 1 << 20;

impl Validator<'_> {
    /// When a link runs under `fieldsync serve`: `Some(None)` when it has no schedule (it
    /// runs only when asked), `None` when a setting is wrong (the problem is kept).
    pub(super) fn schedule(&mut self, link: &RawLink) -> Option<Option<Schedule>> {
        match (&link.schedule, &link.every) {
            (Some(schedule), Some(every)) => {
                let message = "a link runs on a `schedule` or `every` interval, not both";
                self.problem(every.span().start.max(schedule.span().start)..every.span().end, message);
                None
            }
            (Some(schedule), None) => self.cron(schedule, link.schedule_tz.as_ref()).map(Some),
            (None, every) => {
                if let Some(zone) = &link.schedule_tz {
                    self.problem(
                        zone.span(),
                        "schedule_tz is the time zone of a `schedule`, and this link has none",
                    );
                    return None;
                }
                let Some(every) = every else { return Some(None) };
                let interval = self.duration(every, "every")?;
                if interval.is_zero() {
                    self.problem(every.span(), "every must be longer than zero");
                    return None;
                }
                Some(Some(Schedule::Every(interval)))
            }
        }
    }

    /// A link's `spread`: a window shorter than its schedule's period.
    pub(super) fn spread(
        &mut self,
        value: &Spanned<String>,
        schedule: Option<&Schedule>,
    ) -> Option<Duration> {
        let spread = self.duration(value, "spread")?;
        let Some(schedule @ Schedule::Cron { .. }) = schedule else {
            return self.refused(
                value.span(),
                "spread spreads the slots of a `schedule` (runs on `every` are spaced by their own starts), and this link has none",
            );
        };
        let period = schedule.period(jiff::Timestamp::now());
        if spread >= period && !period.is_zero() {
            let period = jiff::SignedDuration::try_from(period).unwrap_or(jiff::SignedDuration::MAX);
            return self.refused(
                value.span(),
                format!(
                    "spread must be shorter than the time between two slots of the schedule ({period:#})"
                ),
            );
        }
        Some(spread)
    }

    /// `[organisations]`, with the list read from where `from` says.
    pub(super) fn organisations(&mut self, raw: &Spanned<RawOrganisations>) -> Option<Organisations> {
        let span = raw.span();
        let raw = raw.get_ref();
        let problems_before = self.problems.len();
        let from = self.expand(raw.from.get_ref(), raw.from.span(), "organisations.from")?;
        let scheme = from.split_once("://").map(|(scheme, _)| scheme);
        let only = |validator: &mut Self, setting: &Option<Spanned<String>>, name: &str, kind: &str| {
            if let Some(setting) = setting {
                validator
                    .problem(setting.span(), format!("organisations.{name} belongs to a list from {kind}"));
            }
        };
        let source = match scheme {
            Some("postgres" | "postgresql") => {
                only(self, &raw.token, "token", "https://…");
                only(self, &raw.records, "records", "https://…");
                let Some(query) = &raw.query else {
                    return self.refused(
                        raw.from.span(),
                        "a list from PostgreSQL needs `query`, the SELECT that gives its rows",
                    );
                };
                OrganisationSource::Postgres { url: Secret::new(from), query: query.get_ref().clone() }
            }
            Some("http" | "https") => {
                only(self, &raw.query, "query", "postgres://…");
                let token = match &raw.token {
                    Some(token) => Some(Secret::new(self.expand(
                        token.get_ref(),
                        token.span(),
                        "organisations.token",
                    )?)),
                    None => None,
                };
                let records = raw.records.as_ref().map(|records| records.get_ref().clone());
                OrganisationSource::Rest { url: from, token, records }
            }
            Some(other) => {
                return self.refused(
                    raw.from.span(),
                    format!(
                        "organisations.from: no list from {other}://; a CSV file, postgres://… or https://…"
                    ),
                );
            }
            None => {
                only(self, &raw.query, "query", "postgres://…");
                only(self, &raw.token, "token", "https://…");
                only(self, &raw.records, "records", "https://…");
                OrganisationSource::Csv(from.into())
            }
        };
        let every = match &raw.every {
            None => Some(DEFAULT_REREAD),
            Some(every) => self.duration(every, "organisations.every").filter(|every| !every.is_zero()),
        };
        if self.problems.len() != problems_before {
            return None;
        }
        match super::super::organisations::read(&source, self.base_dir()) {
            Ok(list) => Some(Organisations { source, every: every?, list, for_each: BTreeSet::new() }),
            Err(message) => self.refused(span.start..span.start, format!("organisations: {message}")),
        }
    }

    fn cron(&mut self, schedule: &Spanned<String>, zone: Option<&Spanned<String>>) -> Option<Schedule> {
        let text = schedule.get_ref().trim();
        let parsed = if text.split_whitespace().count() == 5 {
            CronParser::builder()
                .seconds(Seconds::Disallowed)
                .build()
                .parse(text)
                .map_err(|error| error.to_string())
        } else {
            Err(format!("it has {} fields", text.split_whitespace().count()))
        };
        let zone = match zone {
            None => Some(TimeZone::UTC),
            Some(name) => match TimeZone::get(name.get_ref()) {
                Ok(zone) => Some(zone),
                Err(_) => self.refused(
                    name.span(),
                    format!(
                        "schedule_tz {:?} is not a time zone this machine knows (an IANA name, such as \"Europe/Amsterdam\")",
                        name.get_ref()
                    ),
                ),
            },
        };
        match parsed {
            Ok(cron) => Some(Schedule::Cron { text: text.to_string(), cron: Box::new(cron), zone: zone? }),
            Err(why) => self.refused(
                schedule.span(),
                format!(
                    "schedule {:?} is not a cron expression of five fields (minute hour day-of-month month day-of-week): {why}",
                    schedule.get_ref()
                ),
            ),
        }
    }

    /// `value` with `${NAME}` expanded, for a setting only `fieldsync serve` uses: offline, a
    /// variable the environment lacks is no problem (`None`, nothing reported), since the
    /// offline commands serve nothing.
    fn expand_for_service(&mut self, value: &Spanned<String>, used_in: &str) -> Option<String> {
        if self.offline {
            super::expand(value.get_ref(), self.env, self.org.as_ref()).ok()
        } else {
            self.expand(value.get_ref(), value.span(), used_in)
        }
    }

    /// The `[server]` table, with its defaults when there is none. Offline, a token whose
    /// variable is unset is left out: only `fieldsync serve` needs the tokens.
    pub(super) fn server(&mut self, raw: Option<&RawServer>) -> Option<ServerConfig> {
        let mut server = ServerConfig::default();
        let Some(raw) = raw else { return Some(server) };
        let problems_before = self.problems.len();
        if let Some(listen) = &raw.listen {
            match listen.get_ref().parse::<SocketAddr>() {
                Ok(address) => server.listen = address,
                Err(_) => self.problem(
                    listen.span(),
                    format!(
                        "listen {:?} is not an address and port, such as \"127.0.0.1:8470\"",
                        listen.get_ref()
                    ),
                ),
            }
        }
        if let Some(limit) = &raw.max_concurrent_runs {
            match usize::try_from(*limit.get_ref()) {
                Ok(limit) if limit > 0 => server.max_concurrent_runs = limit,
                _ => self.problem(limit.span(), "max_concurrent_runs must be a whole number of at least 1"),
            }
        }
        if let Some(timeout) = &raw.lease_timeout {
            match self.duration(timeout, "lease_timeout") {
                Some(timeout) if timeout >= Duration::from_secs(1) => server.lease_timeout = timeout,
                Some(_) => self.problem(timeout.span(), "lease_timeout must be at least a second"),
                None => {}
            }
        }
        let mut names = BTreeSet::new();
        for token in &raw.tokens {
            let token = token.get_ref();
            if !names.insert(token.name.get_ref().as_str()) {
                self.problem(token.name.span(), format!("a second token named {:?}", token.name.get_ref()));
            }
            let role = self.choose(&token.role, "role", &[("read", Role::Read), ("operate", Role::Operate)]);
            let used_in = format!("the token {:?}", token.name.get_ref());
            let secret = self.expand_for_service(&token.token, &used_in);
            match secret {
                Some(secret) if secret.chars().count() < 16 => self.problem(
                    token.token.span(),
                    format!("{used_in} is shorter than 16 characters: use a long random value"),
                ),
                Some(secret) => {
                    if let Some(role) = role {
                        let name = token.name.get_ref().clone();
                        let organisation = token.org.as_ref().map(|org| org.get_ref().clone());
                        server.tokens.push(ApiToken { name, token: Secret::new(secret), role, organisation });
                    }
                }
                None => {}
            }
        }
        (self.problems.len() == problems_before).then_some(server)
    }

    /// A connector's `webhook = { … }`.
    pub(super) fn webhook(&mut self, connector: &str, value: Spanned<DeValue<'_>>) -> Option<WebhookConfig> {
        let span = value.span();
        let raw = match RawWebhook::deserialize(toml::de::ValueDeserializer::from(value)) {
            Ok(raw) => raw,
            Err(error) => {
                let message = format!("connector {connector}: webhook: {}", error.message().trim_end());
                self.problem(error.span().unwrap_or(span), message);
                return None;
            }
        };
        let problems_before = self.problems.len();
        let signature = match raw.signature.get_ref() {
            RawSignature::Scheme(scheme) if scheme == "standard" => Some(Signature::Standard),
            RawSignature::Scheme(other) => {
                let message = format!(
                    "unknown signature {other:?}; expected \"standard\" (Standard Webhooks) or a table such as \
                     {{ header = \"X-Hub-Signature-256\", prefix = \"sha256=\", encoding = \"hex\" }}"
                );
                self.problem(raw.signature.span(), message);
                None
            }
            RawSignature::Header(header) => {
                let encoding = match header.encoding.as_deref() {
                    None | Some("hex") => Some(SignatureEncoding::Hex),
                    Some("base64") => Some(SignatureEncoding::Base64),
                    Some(other) => {
                        let message = format!("unknown signature encoding {other:?}; expected hex or base64");
                        self.problem(raw.signature.span(), message);
                        None
                    }
                };
                encoding.map(|encoding| Signature::Header {
                    header: header.header.clone(),
                    prefix: header.prefix.clone(),
                    encoding,
                    timestamp: header.timestamp.clone(),
                })
            }
        };
        let secret = raw.secret.get_ref();
        if signature == Some(Signature::Standard) {
            let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
            if base64::engine::general_purpose::STANDARD.decode(encoded).map_or(true, |key| key.len() < 16) {
                let message = "a Standard Webhooks secret is `whsec_` and the base64 of at least 16 bytes";
                self.problem(raw.secret.span(), message);
            }
        } else if secret.chars().count() < 16 {
            self.problem(raw.secret.span(), "a webhook secret must be at least 16 characters");
        }
        let tolerance = match &raw.tolerance {
            None => Some(DEFAULT_TOLERANCE),
            Some(tolerance) => self.duration(tolerance, "tolerance").and_then(|duration| {
                if duration.is_zero() || duration > MAX_TOLERANCE {
                    self.problem(tolerance.span(), "tolerance must be longer than zero and at most a day");
                    return None;
                }
                Some(duration)
            }),
        };
        let rate = match &raw.rate {
            None => Some(DEFAULT_RATE),
            Some(rate) => self.rate(rate),
        };
        if let Some(pointer) = &raw.records
            && !pointer.get_ref().starts_with('/')
        {
            let message =
                format!("records {:?} is not a JSON pointer such as \"/data/id\"", pointer.get_ref());
            self.problem(pointer.span(), message);
        }
        let max_body = match &raw.max_body {
            None => Some(DEFAULT_MAX_BODY),
            Some(limit) => match usize::try_from(*limit.get_ref()) {
                Ok(limit) if limit > 0 => Some(limit),
                _ => self.refused(limit.span(), "max_body must be a number of bytes of at least 1"),
            },
        };
        if self.problems.len() != problems_before {
            return None;
        }
        Some(WebhookConfig {
            secret: Secret::new(secret.clone()),
            signature: signature?,
            tolerance: tolerance?,
            rate: rate?,
            records: raw.records.map(Spanned::into_inner),
            max_body: max_body?,
        })
    }

    /// `"100/1m"`: a count per duration.
    fn rate(&mut self, rate: &Spanned<String>) -> Option<Rate> {
        let parsed = rate.get_ref().split_once('/').and_then(|(count, per)| {
            let count = count.trim().parse::<u32>().ok().filter(|count| *count > 0)?;
            let per = fieldsync_connector::duration(per.trim()).ok().filter(|per| !per.is_zero())?;
            Some(Rate { count, per })
        });
        if parsed.is_none() {
            let message =
                format!("rate {:?} is not a count per duration, such as \"100/1m\"", rate.get_ref());
            self.problem(rate.span(), message);
        }
        parsed
    }

    /// The `[reports]` table, if there is one: `Some(None)` without it, `None` when a setting is
    /// wrong. Offline, an SMTP address whose variable is unset leaves reports out.
    pub(super) fn reports(&mut self, raw: Option<&Spanned<RawReports>>) -> Option<Option<ReportsConfig>> {
        let Some(raw) = raw else { return Some(None) };
        let raw = raw.get_ref();
        let problems_before = self.problems.len();
        let smtp = self.expand_for_service(&raw.smtp, "reports.smtp");
        if let Some(smtp) = &smtp
            && !(smtp.starts_with("smtp://") || smtp.starts_with("smtps://"))
        {
            let message = "smtp must be smtp://[user:password@]host[:port] (STARTTLS) or smtps://… (TLS)";
            self.problem(raw.smtp.span(), message);
        }
        let plausible = plausible_address;
        if !plausible(raw.from.get_ref()) {
            self.problem(raw.from.span(), format!("from {:?} is not an e-mail address", raw.from.get_ref()));
        }
        if raw.to.get_ref().is_empty() {
            self.problem(raw.to.span(), "to names no recipient");
        }
        // An organisation's address (`${org.contact}`) is read for each of its links.
        for address in raw.to.get_ref().iter().filter(|address| !mentions_organisation(address)) {
            if !plausible(address) {
                self.problem(raw.to.span(), format!("to: {address:?} is not an e-mail address"));
            }
        }
        let moments = [
            ("always", ReportWhen::Always),
            ("changes", ReportWhen::Changes),
            ("failures", ReportWhen::Failures),
        ];
        let when = self.choose_or(raw.when.as_ref(), ReportWhen::Changes, "report moment", &moments);
        if self.problems.len() != problems_before {
            return None;
        }
        let Some(smtp) = smtp else { return Some(None) };
        Some(Some(ReportsConfig {
            smtp: Secret::new(smtp),
            from: raw.from.get_ref().clone(),
            to: raw.to.get_ref().clone(),
            when: when?,
            history_url: raw.history_url.as_ref().map(|url| url.get_ref().clone()),
        }))
    }

    /// The addresses the reports of the link of `self.org` (or of a link of no organisation)
    /// go to: each of `to` as written, an organisation's (`${org.contact}`) read for it, and
    /// left out when the organisation has none or when the link has no organisation.
    pub(super) fn recipients(&mut self, to: &[String], span: std::ops::Range<usize>) -> Vec<String> {
        let mut recipients = Vec::new();
        for address in to {
            if !mentions_organisation(address) {
                recipients.push(address.clone());
                continue;
            }
            if self.org.is_none() {
                continue;
            }
            let Some(expanded) = self.expand(address, span.clone(), "reports.to") else { continue };
            let expanded = expanded.trim();
            if expanded.is_empty() {
                continue;
            }
            if plausible_address(expanded) {
                recipients.push(expanded.to_string());
            } else {
                self.problem(span.clone(), format!("reports.to: {expanded:?} is not an e-mail address"));
            }
        }
        recipients
    }
}

/// Whether `address` looks like an e-mail address (a local part, `@`, a domain with a dot).
fn plausible_address(address: &str) -> bool {
    address.split_once('@').is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'))
        && !address.contains(char::is_whitespace)
}
