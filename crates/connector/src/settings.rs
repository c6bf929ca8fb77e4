//! What connectors' configurations share: secrets that never show, the one duration grammar
//! of the whole configuration, paces, and `SettingError`, a wrong setting with its key path.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

/// A value that must never be shown: a password, a token. Its `Debug` says only that it is
/// there, so a configuration printed for debugging shows none.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the request or the form that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("Secret(***)")
    }
}

/// Reads a non-negative duration, the one grammar of every duration in a configuration:
/// jiff's friendly format (`"500ms"`, `"1.5s"`, `"5s"`, `"1m"`, `"24h"`, `"1h30m"`,
/// `"1h 30m"`, `"2 days"`, `"1d"`; a day is always 24 hours) or ISO 8601 (`"PT30S"`).
///
/// # Errors
///
/// `NotADuration` with how to write one, or `Negative`.
pub fn duration(text: &str) -> Result<Duration, DurationError> {
    let trimmed = text.trim();
    let signed = match trimmed.parse::<jiff::SignedDuration>() {
        Ok(signed) => Some(signed),
        // Days and weeks are calendar units to jiff; here a day is always 24 hours.
        Err(_) => trimmed
            .parse::<jiff::Span>()
            .ok()
            .and_then(|span| span.to_duration(jiff::SpanRelativeTo::days_are_24_hours()).ok()),
    };
    let Some(signed) = signed else {
        return Err(DurationError::NotADuration(text.to_string()));
    };
    Duration::try_from(signed).map_err(|_| DurationError::Negative(text.to_string()))
}

/// A duration or a pace that cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DurationError {
    /// The text is not a duration at all.
    #[error("{0:?} is not a duration; write it like \"500ms\", \"5s\", \"1m\", \"24h\" or \"1h30m\"")]
    NotADuration(String),
    /// The duration is below zero.
    #[error("{0:?} is negative; a duration here must be zero or more")]
    Negative(String),
    /// A pace's range ends before it starts.
    #[error("{0:?} ends before it starts")]
    Reversed(String),
}

/// A connector setting that is not valid: the path of keys to it inside the connector's
/// table (`["paging", "style"]` for `paging.style`) and what is wrong with it. The key path
/// lets the configuration point at the setting's place in the file; the message never has
/// to be searched for it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{}`: {problem}", .key.join("."))]
pub struct SettingError {
    key: Vec<String>,
    problem: String,
}

impl SettingError {
    /// The setting at `key` (outermost key first) is wrong because of `problem`.
    pub fn new<K: Into<String>>(key: impl IntoIterator<Item = K>, problem: impl fmt::Display) -> Self {
        Self { key: key.into_iter().map(Into::into).collect(), problem: problem.to_string() }
    }

    /// The path of keys to the setting, outermost first; never empty for a setting.
    pub fn key(&self) -> &[String] {
        &self.key
    }

    /// What is wrong, without the setting's name.
    pub fn problem(&self) -> &str {
        &self.problem
    }
}

/// Checks the roles a table connector gives its columns and its page size: a soft-delete
/// column (`deleted`) can be neither the key nor the modified column (`same` says whether two
/// names are one column, as the database compares them), and a page holds at least one record.
///
/// # Errors
///
/// A `SettingError` at `deleted` or `batch_size`.
pub fn check_table_columns(
    key: &str,
    modified: Option<&str>,
    deleted: Option<&str>,
    batch_size: Option<usize>,
    same: impl Fn(&str, &str) -> bool,
) -> Result<(), SettingError> {
    if let Some(deleted) = deleted {
        if same(deleted, key) {
            return Err(SettingError::new(["deleted"], "cannot be the key column"));
        }
        if modified.is_some_and(|modified| same(deleted, modified)) {
            return Err(SettingError::new(["deleted"], "cannot be the modified column"));
        }
    }
    if batch_size == Some(0) {
        return Err(SettingError::new(["batch_size"], "must be at least 1"));
    }
    Ok(())
}

/// A pause drawn afresh each time from a range, as careful people and the seed systems pace
/// their writes (`"1s..2s"`; `"1s"` alone is always one second).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pace {
    low: Duration,
    high: Duration,
}

impl Pace {
    /// Reads a range such as `"1s..2s"`, each end a `duration`.
    ///
    /// # Errors
    ///
    /// When an end is not a duration, or `Reversed` when the range ends before it starts.
    pub fn parse(text: &str) -> Result<Pace, DurationError> {
        let (low, high) = text.split_once("..").unwrap_or((text, text));
        let (low, high) = (duration(low)?, duration(high)?);
        if high < low {
            return Err(DurationError::Reversed(text.to_string()));
        }
        Ok(Pace { low, high })
    }

    /// One pause, anywhere in the range.
    pub fn draw(&self) -> Duration {
        let spread = u64::try_from(self.high.saturating_sub(self.low).as_millis()).unwrap_or(u64::MAX);
        self.low + Duration::from_millis(if spread == 0 { 0 } else { fastrand::u64(0..=spread) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_write_them_and_secrets_hide() {
        let cases = [
            ("5s", 5_000),
            ("30s", 30_000),
            ("1.5s", 1_500),
            ("1m", 60_000),
            ("2m", 120_000),
            ("24h", 86_400_000),
            ("500ms", 500),
            ("1h30m", 5_400_000),
            ("1h 30m", 5_400_000),
            ("2 days", 172_800_000),
            ("1d", 86_400_000),
            ("1w", 604_800_000),
            ("2 hrs 5 secs", 7_205_000),
            ("PT30S", 30_000),
            ("0s", 0),
        ];
        for (text, millis) in cases {
            assert_eq!(duration(text), Ok(Duration::from_millis(millis)), "{text}");
        }
        for bad in ["", "5", "soon", "1 month", "1y"] {
            assert_eq!(duration(bad), Err(DurationError::NotADuration(bad.to_string())), "{bad}");
        }
        assert_eq!(duration("-5s"), Err(DurationError::Negative("-5s".to_string())));
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "Secret(***)");
    }

    #[test]
    fn setting_errors_name_their_key_path() {
        let error = SettingError::new(["paging", "style"], "unknown style");
        assert_eq!(error.key(), ["paging", "style"]);
        assert_eq!(error.problem(), "unknown style");
        assert_eq!(error.to_string(), "`paging.style`: unknown style");
    }

    #[test]
    fn paces_are_ranges_and_pauses_fall_inside_them() {
        let pace = Pace::parse("100ms..150ms").unwrap();
        for _ in 0..100 {
            let pause = pace.draw();
            assert!((Duration::from_millis(100)..=Duration::from_millis(150)).contains(&pause), "{pause:?}");
        }
        assert_eq!(Pace::parse("1s").unwrap().draw(), Duration::from_secs(1));
        assert_eq!(Pace::parse("2s..1s").unwrap_err().to_string(), "\"2s..1s\" ends before it starts");
        assert_eq!(Pace::parse("soon..later"), Err(DurationError::NotADuration("soon".to_string())));
    }
}
