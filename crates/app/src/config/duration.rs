//! Durations as the configuration writes them: `"5s"`, `"1m"`, `"24h"`, `"500ms"`, `"1h30m"`,
//! `"2 days"` (a day is 24 hours here), read by jiff's friendly format.

use std::time::Duration;

/// Reads a non-negative duration.
///
/// # Errors
///
/// Says what a valid duration looks like when `text` is not one, or that it is negative.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let signed = match text.trim().parse::<jiff::SignedDuration>() {
        Ok(signed) => Some(signed),
        // Days and weeks are calendar units to jiff; here a day is always 24 hours.
        Err(_) => text
            .trim()
            .parse::<jiff::Span>()
            .ok()
            .and_then(|span| span.to_duration(jiff::SpanRelativeTo::days_are_24_hours()).ok()),
    };
    let Some(signed) = signed else {
        return Err(format!(
            "{text:?} is not a duration; write it like \"500ms\", \"5s\", \"1m\", \"24h\" or \"1h30m\""
        ));
    };
    Duration::try_from(signed)
        .map_err(|_| format!("{text:?} is negative; a duration here must be zero or more"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_friendly_durations() {
        let cases = [
            ("5s", 5_000),
            ("1m", 60_000),
            ("24h", 86_400_000),
            ("500ms", 500),
            ("1h30m", 5_400_000),
            ("1h 30m", 5_400_000),
            ("2 days", 172_800_000),
            ("1d", 86_400_000),
            ("0s", 0),
        ];
        for (text, millis) in cases {
            assert_eq!(parse_duration(text), Ok(Duration::from_millis(millis)), "{text}");
        }
        for bad in ["", "5", "soon", "-5s", "1 month"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
