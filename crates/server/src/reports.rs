//! E-mailed reports after runs (`[reports]`): what a run propagated, settled, held for review
//! and left dead, as text and HTML, sent through SMTP (STARTTLS for `smtp://`, TLS from the
//! start for `smtps://`) by lettre. A mail server that is down never fails a run: the report
//! is tried three times in the background and the failure logged.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use fieldsync_app::Config;
use fieldsync_app::config::{ReportWhen, ReportsConfig};
use fieldsync_app::workspace::{Action, FailureOutcome, ReportLine, RunReport, RunStatus};
use lettre::message::{Mailbox, MultiPart};
use lettre::{AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor};
use maud::{DOCTYPE, html};

/// How many lines a section of a report lists before it says how many more there are.
const SECTION_LINES: usize = 200;

/// The pauses before the second and third try of a report.
const RETRIES: [Duration; 2] = [Duration::from_secs(5), Duration::from_secs(30)];

/// Sends the reports of `[reports]`.
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    when: ReportWhen,
    history: Option<String>,
}

impl Mailer {
    /// The mailer of `config`'s `[reports]`, if it has that table.
    ///
    /// # Errors
    ///
    /// As `Mailer::new`.
    pub fn of(config: &Config) -> Result<Option<Arc<Self>>, String> {
        config.reports.as_ref().map(|reports| Self::new(reports).map(Arc::new)).transpose()
    }

    /// The mailer of `[reports]`.
    ///
    /// # Errors
    ///
    /// Says what is wrong with the SMTP address or an e-mail address (never the password).
    pub fn new(config: &ReportsConfig) -> Result<Self, String> {
        let url = config.smtp.expose();
        let (plain, rest) = match url.split_once("://") {
            Some(("smtp", rest)) => (rest.contains("tls=none"), format!("smtp://{rest}")),
            Some(("smtps", rest)) => (false, format!("smtps://{rest}")),
            _ => return Err("the smtp address must start with smtp:// or smtps://".into()),
        };
        // `smtp://` means STARTTLS, required, unless the address says `?tls=none` (a relay on
        // this machine).
        let url = if plain {
            rest.replace("?tls=none", "").replace("&tls=none", "")
        } else if rest.starts_with("smtp://") && !rest.contains("tls=") {
            format!("{rest}{}tls=required", if rest.contains('?') { "&" } else { "?" })
        } else {
            rest
        };
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(&url)
            .map_err(|_| {
                "the smtp address cannot be read: smtp[s]://[user:password@]host[:port]".to_string()
            })?
            .timeout(Some(Duration::from_secs(30)))
            .build();
        let mailbox =
            |address: &str| address.parse::<Mailbox>().map_err(|error| format!("{address:?}: {error}"));
        // The addresses as written are checked now; an organisation's are read for its links.
        for address in config.to.iter().filter(|address| !address.contains("${org.")) {
            mailbox(address)?;
        }
        Ok(Self {
            transport,
            from: mailbox(&config.from)?,
            when: config.when,
            history: config.history_url.clone(),
        })
    }

    /// Whether `report` is one `when` asks to send.
    pub fn wants(&self, report: &RunReport) -> bool {
        let failed = matches!(report.status, RunStatus::Partial | RunStatus::Failed | RunStatus::Guarded)
            || !report.failures.is_empty();
        match self.when {
            ReportWhen::Always => true,
            ReportWhen::Failures => failed,
            ReportWhen::Changes => {
                failed
                    || report.stats.writes_done > 0
                    || report
                        .lines
                        .iter()
                        .any(|line| matches!(line.action, Action::Review | Action::Conflict))
            }
        }
    }

    /// Sends `report` to `to` (its link's `report_to`) if `when` asks for it, in the
    /// background: a failure is retried and logged, never returned.
    pub fn send_later(self: &Arc<Self>, report: RunReport, to: &[String]) {
        if !self.wants(&report) {
            return;
        }
        let to: Vec<Mailbox> = to.iter().filter_map(|address| address.parse().ok()).collect();
        if to.is_empty() {
            tracing::debug!(link = %report.link, "the report has no recipient");
            return;
        }
        let mailer = Arc::clone(self);
        tokio::spawn(async move {
            let Ok(message) = mailer.message(&report, &to) else {
                tracing::error!(link = %report.link, "the report could not be put into a message");
                return;
            };
            for pause in std::iter::once(None).chain(RETRIES.map(Some)) {
                if let Some(pause) = pause {
                    tokio::time::sleep(pause).await;
                }
                match mailer.transport.send(message.clone()).await {
                    Ok(_) => return,
                    Err(error) => tracing::warn!(link = %report.link, %error, "sending the report"),
                }
            }
            tracing::error!(link = %report.link, "the report was not sent after three tries");
        });
    }

    /// The message of `report`: a subject that says how the run went, text and HTML.
    fn message(&self, report: &RunReport, to: &[Mailbox]) -> Result<Message, lettre::error::Error> {
        let sections = Sections::of(report);
        let subject = format!(
            "fieldsync: {} {} - {} written, {} settled, {} held for review, {} dead",
            report.link,
            report.status.as_str(),
            report.stats.writes_done,
            sections.settled.len(),
            sections.review.len(),
            sections.dead.len()
        );
        let history = match (&self.history, report.run_id) {
            (Some(base), Some(run)) => format!("{}/api/runs/{}", base.trim_end_matches('/'), run.0),
            (None, Some(run)) => format!("fieldsync history show {}", run.0),
            (_, None) => String::new(),
        };
        let mut builder = Message::builder().from(self.from.clone()).subject(subject);
        for to in to {
            builder = builder.to(to.clone());
        }
        builder.multipart(MultiPart::alternative_plain_html(
            sections.text(report, &history),
            sections.html(report, &history),
        ))
    }
}

/// A report's lines by what happened to them.
struct Sections {
    propagated: Vec<String>,
    settled: Vec<String>,
    review: Vec<String>,
    dead: Vec<String>,
}

impl Sections {
    fn of(report: &RunReport) -> Self {
        let side =
            |line: &ReportLine| line.target.map(|side| report.sides.get(side).clone()).unwrap_or_default();
        let value = |value: &Option<fieldsync_app::workspace::Value>| {
            value
                .as_ref()
                .map_or_else(|| "null".to_string(), |value| serde_json::to_string(value).unwrap_or_default())
        };
        let what = |line: &ReportLine| match &line.field {
            Some(field) => format!("{} {field}", line.key),
            None => line.key.to_string(),
        };
        let mut sections =
            Sections { propagated: Vec::new(), settled: Vec::new(), review: Vec::new(), dead: Vec::new() };
        for line in &report.lines {
            match line.action {
                Action::Update => {
                    sections.propagated.push(format!(
                        "{}: {} written to {}",
                        what(line),
                        value(&line.value),
                        side(line)
                    ));
                }
                Action::Create => {
                    sections.propagated.push(format!("{}: created on {}", what(line), side(line)))
                }
                Action::Delete => {
                    sections.propagated.push(format!("{}: deleted on {}", what(line), side(line)))
                }
                Action::Conflict => sections.settled.push(format!(
                    "{}: left {}, right {} -> {} ({})",
                    what(line),
                    value(&line.left),
                    value(&line.right),
                    value(&line.value),
                    line.reason
                )),
                Action::Review => sections.review.push(format!(
                    "{}: left {}, right {} ({})",
                    what(line),
                    value(&line.left),
                    value(&line.right),
                    line.reason
                )),
                _ => {}
            }
        }
        for failure in &report.failures {
            if failure.outcome == FailureOutcome::Dead {
                let on = report.sides.get(failure.side);
                sections.dead.push(format!("{} on {on}: {}", failure.key, failure.message));
            }
        }
        sections
    }

    fn named(&self) -> [(&'static str, &Vec<String>); 4] {
        [
            ("Propagated", &self.propagated),
            ("Settled", &self.settled),
            ("Held for review", &self.review),
            ("Dead (will not be retried)", &self.dead),
        ]
    }

    fn text(&self, report: &RunReport, history: &str) -> String {
        let mut text = format!(
            "fieldsync ran link {} ({} <-> {}): {}.\n",
            report.link,
            report.sides.left,
            report.sides.right,
            report.status.as_str()
        );
        for (title, lines) in self.named() {
            if lines.is_empty() {
                continue;
            }
            let _ = write!(text, "\n{title} ({}):\n", lines.len());
            for line in lines.iter().take(SECTION_LINES) {
                let _ = writeln!(text, "  {line}");
            }
            if lines.len() > SECTION_LINES {
                let _ = writeln!(text, "  ... and {} more", lines.len() - SECTION_LINES);
            }
        }
        if let Some(guard) = &report.guard {
            let _ = write!(text, "\nStopped by the guard: {guard:?}\n");
        }
        if !history.is_empty() {
            let _ = write!(text, "\nThe whole run: {history}\n");
        }
        text
    }

    fn html(&self, report: &RunReport, history: &str) -> String {
        let sides = &report.sides;
        html! {
            (DOCTYPE)
            html { body {
                p {
                    "fieldsync ran link " b { (report.link.as_str()) }
                    " (" (sides.left) " \u{2194} " (sides.right) "): " b { (report.status.as_str()) } "."
                }
                @for (title, lines) in self.named() {
                    @if !lines.is_empty() {
                        h3 { (title) " (" (lines.len()) ")" }
                        ul {
                            @for line in lines.iter().take(SECTION_LINES) { li { (line) } }
                            @if lines.len() > SECTION_LINES {
                                li { "\u{2026} and " (lines.len() - SECTION_LINES) " more" }
                            }
                        }
                    }
                }
                @if let Some(guard) = &report.guard {
                    p { "Stopped by the guard: " (format!("{guard:?}")) }
                }
                @if history.starts_with("http") {
                    p { "The whole run: " a href=(history) { (history) } }
                } @else if !history.is_empty() {
                    p { "The whole run: " code { (history) } }
                }
            } }
        }
        .into_string()
    }
}

#[cfg(test)]
mod tests {
    use fieldsync_app::workspace::{LinkName, RecordKey, Side, SidePair, Value};

    use super::*;

    /// A run that held one conflict for review, whose values carry what HTML gives a meaning.
    fn report() -> RunReport {
        let sides = SidePair::new("register".to_string(), "website <b>".to_string());
        let mut report = RunReport::new(LinkName::new("members"), sides, false);
        report.lines.push(ReportLine {
            key: RecordKey::new("M001"),
            field: Some("last_name".into()),
            action: Action::Review,
            target: Some(Side::Right),
            left: Some(Value::Text("O'Brien & <Co>".into())),
            right: Some(Value::Text("Obrien".into())),
            value: None,
            reason: "both sides changed".into(),
        });
        report
    }

    #[test]
    fn the_html_part_escapes_what_the_records_hold_and_links_the_run() {
        let report = report();
        let sections = Sections::of(&report);
        let html = sections.html(&report, "https://sync.club.nl/api/runs/7");
        assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
        assert!(
            html.contains("O'Brien &amp; &lt;Co&gt;") || html.contains("O&#39;Brien &amp; &lt;Co&gt;"),
            "{html}"
        );
        assert!(!html.contains("<Co>") && !html.contains("website <b>"), "{html}");
        assert!(html.contains("<h3>Held for review (1)</h3>"), "{html}");
        assert!(html.contains(r#"<a href="https://sync.club.nl/api/runs/7">"#), "{html}");
        let text = sections.text(&report, "fieldsync history show 7");
        assert!(text.contains("Held for review (1):\n  M001 last_name: left \"O'Brien & <Co>\""), "{text}");
        assert!(text.contains("The whole run: fieldsync history show 7"), "{text}");
    }

    #[test]
    fn a_history_that_is_a_command_is_shown_as_code_not_as_a_link() {
        let report = report();
        let html = Sections::of(&report).html(&report, "fieldsync history show 7");
        assert!(html.contains("<code>fieldsync history show 7</code>") && !html.contains("href"), "{html}");
    }
}
