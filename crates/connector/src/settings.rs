//! What connectors' configurations share: secrets that never show, and durations as people
//! write them.

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
}
