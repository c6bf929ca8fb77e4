//! The settings of `fieldsync serve` checked: a link's `schedule`, `schedule_tz` and `every`,
//! and the `[server]` table.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use croner::parser::{CronParser, Seconds};
use fieldsync_connector::Secret;
use jiff::tz::TimeZone;
use toml::Spanned;

use super::Validator;
use crate::config::raw::{RawLink, RawServer};
use crate::config::service::{ApiToken, Role, Schedule, ServerConfig};

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
                Err(_) => {
                    let message = format!(
                        "schedule_tz {:?} is not a time zone this machine knows (an IANA name, such as \"Europe/Amsterdam\")",
                        name.get_ref()
                    );
                    self.problem(name.span(), message);
                    None
                }
            },
        };
        match parsed {
            Ok(cron) => Some(Schedule::Cron { text: text.to_string(), cron: Box::new(cron), zone: zone? }),
            Err(why) => {
                let message = format!(
                    "schedule {:?} is not a cron expression of five fields (minute hour day-of-month month day-of-week): {why}",
                    schedule.get_ref()
                );
                self.problem(schedule.span(), message);
                None
            }
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
        let mut names = BTreeSet::new();
        for token in &raw.tokens {
            let token = token.get_ref();
            if !names.insert(token.name.get_ref().as_str()) {
                self.problem(token.name.span(), format!("a second token named {:?}", token.name.get_ref()));
            }
            let role = self.choose(&token.role, "role", &[("read", Role::Read), ("operate", Role::Operate)]);
            let used_in = format!("the token {:?}", token.name.get_ref());
            let secret = if self.offline && token.token.get_ref().contains("${") {
                // Offline commands serve no API: an unset variable is no problem for them.
                super::expand(token.token.get_ref(), self.env).ok()
            } else {
                self.expand(token.token.get_ref(), token.token.span(), &used_in)
            };
            match secret {
                Some(secret) if secret.chars().count() < 16 => self.problem(
                    token.token.span(),
                    format!("{used_in} is shorter than 16 characters: use a long random value"),
                ),
                Some(secret) => {
                    if let Some(role) = role {
                        let name = token.name.get_ref().clone();
                        server.tokens.push(ApiToken { name, token: Secret::new(secret), role });
                    }
                }
                None => {}
            }
        }
        (self.problems.len() == problems_before).then_some(server)
    }
}
