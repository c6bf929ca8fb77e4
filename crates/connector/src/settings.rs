//! What connectors' configurations share: secrets that never show, durations as people write
//! them, and paces.

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

/// Reads a duration such as `"30s"`, `"1.5s"`, `"500ms"` or `"2m"`, for the setting named.
///
/// # Errors
///
/// Names the setting and shows how to write one.
pub fn duration(text: &str, setting: &str) -> Result<Duration, String> {
    let parsed: Result<jiff::SignedDuration, _> = text.trim().parse();
    parsed
        .ok()
        .and_then(|duration| Duration::try_from(duration).ok())
        .ok_or_else(|| format!("`{setting}`: {text:?} is not a duration such as \"30s\" or \"500ms\""))
}

/// A pause drawn afresh each time from a range, as careful people and the seed systems pace
/// their writes (`"1s..2s"`; `"1s"` alone is always one second).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pace {
    low: Duration,
    high: Duration,
}

impl Pace {
    /// Reads a range such as `"1s..2s"` for the setting named.
    ///
    /// # Errors
    ///
    /// Names the setting when an end is not a duration or the range ends before it starts.
    pub fn parse(text: &str, setting: &str) -> Result<Pace, String> {
        let (low, high) = text.split_once("..").unwrap_or((text, text));
        let (low, high) = (duration(low, setting)?, duration(high, setting)?);
        if high < low {
            return Err(format!("`{setting}`: {text:?} ends before it starts"));
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
        assert_eq!(duration("30s", "timeout"), Ok(Duration::from_secs(30)));
        assert_eq!(duration("500ms", "timeout"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("2m", "pace"), Ok(Duration::from_secs(120)));
        assert!(duration("soon", "timeout").unwrap_err().starts_with("`timeout`"));
        assert!(duration("-1s", "timeout").is_err());
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "Secret(***)");
    }

    #[test]
    fn paces_are_ranges_and_pauses_fall_inside_them() {
        let pace = Pace::parse("100ms..150ms", "pace").unwrap();
        for _ in 0..100 {
            let pause = pace.draw();
            assert!((Duration::from_millis(100)..=Duration::from_millis(150)).contains(&pause), "{pause:?}");
        }
        assert_eq!(Pace::parse("1s", "pace").unwrap().draw(), Duration::from_secs(1));
        assert_eq!(Pace::parse("2s..1s", "pace").unwrap_err(), "`pace`: \"2s..1s\" ends before it starts");
        assert!(Pace::parse("soon..later", "pace").unwrap_err().starts_with("`pace`:"));
    }
}
