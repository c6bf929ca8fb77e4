//! The browser connector's configuration: the site's login, where its members are listed,
//! and the pages, buttons and fields of a member.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use fieldsync_connector::Secret;
use fieldsync_connector::{ConnectorError, ConnectorSettings, Pace, PathError, SettingError, duration};
use serde::Deserialize;

use crate::BrowserConnector;

/// How to log in.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Login {
    /// The login page, relative to `base_url`.
    pub url: String,
    /// The user name field's CSS selector.
    pub username_field: String,
    /// The password field's CSS selector.
    pub password_field: String,
    /// The button that logs in.
    pub submit: String,
    /// The user name (`${NAME}` from the environment).
    pub username: String,
    /// The password (`${NAME}` from the environment).
    pub password: Secret,
    /// A selector found only on the login page: landing on a page that has it means the
    /// session expired.
    pub page: String,
    /// A selector of the login page's error message (wrong credentials).
    pub error: Option<String>,
}

/// How a field is entered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldKind {
    /// A text input or a text area.
    #[default]
    Text,
    /// A checkbox: `true` or `false`.
    Checkbox,
    /// A select: the option's value.
    Select,
    /// A date input: its value is `YYYY-MM-DD` whatever the browser's language shows.
    Date,
}

/// One field of a member's page.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Field {
    /// The CSS selector of its input.
    pub selector: String,
    /// How it is entered; `text`.
    #[serde(default)]
    pub kind: FieldKind,
    /// The CSS selector of the value as the page shows it without editing (the read-only
    /// view). Where given, the field is read there without pressing Edit, and a save is
    /// verified there; otherwise both open the form.
    pub view: Option<String>,
}

/// One page of a member.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberPage {
    /// The page, relative to `base_url`: `{id}` is the member's id (`/member/{id}/general`).
    pub url: String,
    /// The button that shows the form, if the page has one.
    pub edit: Option<String>,
    /// The button that saves.
    pub save: String,
    /// A selector that appears once the save finished.
    pub saved: String,
    /// A selector whose text is the site's message when it refuses the values.
    pub error: Option<String>,
    /// A selector that appears when the site refuses a save because someone else changed
    /// the member since the form was opened (a row version): the write is `TargetMoved`,
    /// read again and merged again, never forced.
    pub moved: Option<String>,
    /// A text in the `error` message that means the same as `moved` ("changed by someone
    /// else"), for sites that show that refusal like any other.
    pub moved_text: Option<String>,
    /// The fields, by path (the name a link's fields use).
    pub fields: BTreeMap<String, Field>,
}

/// Where the site lists its members.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Listing {
    /// A CSV export the site offers after login: its header names the columns, which are
    /// the paths.
    Csv {
        /// The export's URL, relative to `base_url`.
        url: String,
        /// The delimiter; `,`.
        delimiter: Option<char>,
    },
    /// A paged HTML table.
    Table {
        /// The first page, relative to `base_url`.
        url: String,
        /// A row's selector.
        rows: String,
        /// The attribute holding the member's id (`data-id`): of the row, or of the element
        /// `id_selector` finds in it.
        id_attribute: String,
        /// An element within a row that holds `id_attribute` (Django's admin keeps the id in
        /// the row's checkbox: `input.action-select` and `value`); the row itself when not
        /// given. A row without it is no member's and is passed over.
        #[serde(default)]
        id_selector: Option<String>,
        /// The cells, by path, as selectors within a row.
        cells: BTreeMap<String, String>,
        /// The link to the next page.
        next: Option<String>,
    },
}

/// The browser connector's configuration, as written in `[connectors.NAME]`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrowserConfig {
    /// The site's address (`https://admin.example`).
    pub base_url: String,
    /// How to log in.
    pub login: Login,
    /// Where the members are listed.
    pub list: Listing,
    /// The column (or cell) holding a member's id, the `{id}` of the pages' URLs.
    pub id: String,
    /// The column (or cell) holding a member's modification time, if any: RFC 3339 unless
    /// `modified_format` says otherwise.
    pub modified: Option<String>,
    /// The format of `modified` when it is not RFC 3339, in `strftime` notation
    /// (`"%d-%m-%Y %H:%M"` for `06-01-2026 14:03`).
    pub modified_format: Option<String>,
    /// The time zone of modification times written without an offset (`Europe/Amsterdam`);
    /// UTC.
    pub time_zone: Option<String>,
    /// A member's pages.
    pub pages: Vec<MemberPage>,
    /// A pause between members, drawn from a range (`"1s..2s"`).
    pub pace: Option<String>,
    /// How long a page, a form or a save may take; `30s`.
    pub timeout: Option<String>,
    /// How often a member's write is tried again within one call after a failure that may
    /// pass (the site refused the connection, the session expired during a save); 2.
    pub retries: Option<u32>,
    /// Where screenshots of failed writes go; `screenshots` beside the configuration.
    pub screenshots: Option<PathBuf>,
    /// The `chromedriver` program; found on the `PATH` when not given.
    pub chromedriver: Option<PathBuf>,
    /// The Chromium program; Debian's when not given.
    pub chromium: Option<PathBuf>,
    /// Date formats of the site's date fields, for the normalisers.
    pub date_formats: Option<Vec<String>>,
}

impl BrowserConfig {
    /// Checks every setting without starting a browser.
    ///
    /// # Errors
    ///
    /// The first setting that is wrong, with its key path.
    pub fn validate(&self) -> Result<(), SettingError> {
        let base = self.base_url.trim();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(SettingError::new(
                ["base_url"],
                format!("{base:?} must be an http:// or https:// URL"),
            ));
        }
        if self.pages.is_empty() {
            return Err(SettingError::new(["pages"], "a member needs at least one page"));
        }
        let mut seen = BTreeMap::new();
        for (index, page) in self.pages.iter().enumerate() {
            if !page.url.contains("{id}") {
                return Err(SettingError::new(
                    ["pages"],
                    format!("page {} ({:?}) has no {{id}} in its url", index + 1, page.url),
                ));
            }
            for path in page.fields.keys() {
                if let Some(other) = seen.insert(path.clone(), index) {
                    return Err(SettingError::new(
                        ["pages"],
                        format!("field {path} is on pages {} and {}", other + 1, index + 1),
                    ));
                }
            }
        }
        self.pace()?;
        self.zone().map_err(|problem| SettingError::new(["time_zone"], problem))?;
        if self.modified_format.is_some() && self.modified.is_none() {
            return Err(SettingError::new(
                ["modified_format"],
                "there is no `modified` column to read with it",
            ));
        }
        if let Some(timeout) = &self.timeout {
            duration(timeout).map_err(|error| SettingError::new(["timeout"], error))?;
        }
        Ok(())
    }

    /// The time zone of modification times without an offset.
    pub(crate) fn zone(&self) -> Result<jiff::tz::TimeZone, String> {
        match self.time_zone.as_deref() {
            None => Ok(jiff::tz::TimeZone::UTC),
            Some(name) => {
                jiff::tz::TimeZone::get(name).map_err(|error| format!("{name:?} is not a time zone: {error}"))
            }
        }
    }

    /// Reads a modification time as the site writes it; `None` for an empty one. The error
    /// names the value and the format, for the caller to say where it was.
    pub(crate) fn parse_modified(&self, text: &str) -> Result<Option<jiff::Timestamp>, String> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(None);
        }
        let Some(format) = self.modified_format.as_deref() else {
            if let Ok(time) = text.parse::<jiff::Timestamp>() {
                return Ok(Some(time));
            }
            return Err(format!(
                "{text:?} is not an RFC 3339 time (set `modified_format` for the site's own format)"
            ));
        };
        let parsed = jiff::fmt::strtime::parse(format, text)
            .map_err(|error| format!("{text:?} is not a time in the format {format:?}: {error}"))?;
        if parsed.offset().is_some() {
            return parsed
                .to_timestamp()
                .map(Some)
                .map_err(|error| format!("{text:?} (format {format:?}): {error}"));
        }
        let civil = parsed
            .to_datetime()
            .map_err(|error| format!("{text:?} is not a whole time in the format {format:?}: {error}"))?;
        let zone = self.zone()?;
        zone.to_ambiguous_zoned(civil)
            .compatible()
            .map(|zoned| Some(zoned.timestamp()))
            .map_err(|error| format!("{text:?} in {}: {error}", zone.iana_name().unwrap_or("UTC")))
    }

    /// The pause between members.
    pub(crate) fn pace(&self) -> Result<Option<Pace>, SettingError> {
        self.pace
            .as_deref()
            .map(|text| Pace::parse(text).map_err(|error| SettingError::new(["pace"], error)))
            .transpose()
    }

    /// How long a page, a form or a save may take.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout.as_deref().and_then(|text| duration(text).ok()).unwrap_or(Duration::from_secs(30))
    }

    /// Checks a field path: a field of a page or a column of the listing.
    ///
    /// # Errors
    ///
    /// Says why `path` names nothing this site holds.
    pub fn validate_path(&self, path: &str) -> Result<(), PathError> {
        let listed = match &self.list {
            Listing::Csv { .. } => true,
            Listing::Table { cells, .. } => cells.contains_key(path),
        };
        let on_page = self.pages.iter().any(|page| page.fields.contains_key(path));
        if listed || on_page || path == self.id {
            Ok(())
        } else {
            Err(PathError(format!("`{path}` is neither a field of a member's page nor listed")))
        }
    }

    /// The configured date formats, none unless configured.
    pub fn date_formats(&self) -> &[String] {
        self.date_formats.as_deref().unwrap_or_default()
    }
}

impl ConnectorSettings for BrowserConfig {
    const KIND: &'static str = "browser";
    type Connector = BrowserConnector;

    fn check(&self) -> Result<(), SettingError> {
        self.validate()
    }

    fn check_path(&self, path: &str) -> Result<(), PathError> {
        self.validate_path(path)
    }

    fn date_formats(&self) -> &[String] {
        BrowserConfig::date_formats(self)
    }

    /// Screenshots of failed saves go to `screenshots` (`screenshots` unless configured),
    /// resolved against `base_dir`.
    fn open(&self, base_dir: &Path) -> Result<BrowserConnector, ConnectorError> {
        let screenshots = base_dir.join(self.screenshots.clone().unwrap_or_else(|| "screenshots".into()));
        // Absolute, so that the path in a dead entry's message leads there from anywhere.
        let screenshots = std::path::absolute(&screenshots).unwrap_or(screenshots);
        BrowserConnector::open(self.clone(), screenshots)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(format: Option<&str>, zone: Option<&str>) -> BrowserConfig {
        let mut config: BrowserConfig = serde_json::from_value(serde_json::json!({
            "base_url": "http://127.0.0.1:1",
            "id": "id",
            "modified": "modified",
            "list": { "csv": { "url": "/export.csv" } },
            "login": { "url": "/login", "username_field": "#u", "password_field": "#p", "submit": "#s",
                       "username": "u", "password": "p", "page": "#login" },
            "pages": [{ "url": "/member/{id}", "save": "#save", "saved": "#saved",
                        "fields": { "email": { "selector": "#email" } } }],
        }))
        .unwrap();
        config.modified_format = format.map(str::to_string);
        config.time_zone = zone.map(str::to_string);
        config.validate().unwrap();
        config
    }

    fn at(text: &str) -> Option<jiff::Timestamp> {
        Some(text.parse().unwrap())
    }

    #[test]
    fn modification_times_are_read_in_the_sites_format_and_zone() {
        let rfc = config(None, None);
        assert_eq!(rfc.parse_modified("2026-01-06T14:03:00.123Z"), Ok(at("2026-01-06T14:03:00.123Z")));
        assert_eq!(rfc.parse_modified("2026-01-06T15:03:00+01:00"), Ok(at("2026-01-06T14:03:00Z")));
        assert_eq!(rfc.parse_modified("  "), Ok(None));
        let local = config(Some("%d-%m-%Y %H:%M"), Some("Europe/Amsterdam"));
        // Winter time is an hour ahead of UTC, summer time two.
        assert_eq!(local.parse_modified("06-01-2026 14:03"), Ok(at("2026-01-06T13:03:00Z")));
        assert_eq!(local.parse_modified("06-07-2026 14:03"), Ok(at("2026-07-06T12:03:00Z")));
        assert_eq!(local.parse_modified(""), Ok(None));
        let utc = config(Some("%d-%m-%Y %H:%M"), None);
        assert_eq!(utc.parse_modified("06-01-2026 14:03"), Ok(at("2026-01-06T14:03:00Z")));
        let offset = config(Some("%Y-%m-%d %H:%M %z"), Some("Europe/Amsterdam"));
        assert_eq!(offset.parse_modified("2026-01-06 14:03 -0500"), Ok(at("2026-01-06T19:03:00Z")));
    }

    #[test]
    fn a_time_that_cannot_be_read_is_an_error_naming_it() {
        let rfc = config(None, None);
        let error = rfc.parse_modified("06-01-2026 14:03").unwrap_err();
        assert!(error.contains("\"06-01-2026 14:03\"") && error.contains("modified_format"), "{error}");
        let local = config(Some("%d-%m-%Y %H:%M"), Some("Europe/Amsterdam"));
        for text in ["31-02-2026 14:03", "06-01-2026", "gisteren"] {
            let error = local.parse_modified(text).unwrap_err();
            assert!(error.contains(&format!("{text:?}")), "{error}");
        }
        let mut wrong = config(Some("%d-%m-%Y %H:%M"), None);
        wrong.time_zone = Some("Europe/Amsterdamm".into());
        assert_eq!(wrong.validate().unwrap_err().key(), ["time_zone"]);
        wrong.time_zone = None;
        wrong.modified = None;
        assert_eq!(wrong.validate().unwrap_err().key(), ["modified_format"]);
    }
}
