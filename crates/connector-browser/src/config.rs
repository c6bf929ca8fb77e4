//! The browser connector's configuration: the site's login, where its members are listed,
//! and the pages, buttons and fields of a member.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

pub use fieldsync_connector::Secret;
use fieldsync_connector::{Pace, duration};
use serde::Deserialize;

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
    /// A date input (`YYYY-MM-DD`).
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
        /// The row attribute holding the member's id (`data-id`).
        id_attribute: String,
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
    /// The column (or cell) holding a member's modification time (RFC 3339), if any.
    pub modified: Option<String>,
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
    /// Names the first setting that is wrong, starting with it in backquotes.
    pub fn validate(&self) -> Result<(), String> {
        let base = self.base_url.trim();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(format!("`base_url`: {base:?} must be an http:// or https:// URL"));
        }
        if self.pages.is_empty() {
            return Err("`pages`: a member needs at least one page".into());
        }
        let mut seen = BTreeMap::new();
        for (index, page) in self.pages.iter().enumerate() {
            if !page.url.contains("{id}") {
                return Err(format!("`pages`: page {} ({:?}) has no {{id}} in its url", index + 1, page.url));
            }
            for path in page.fields.keys() {
                if let Some(other) = seen.insert(path.clone(), index) {
                    return Err(format!("`pages`: field {path} is on pages {} and {}", other + 1, index + 1));
                }
            }
        }
        self.pace()?;
        if let Some(timeout) = &self.timeout {
            duration(timeout, "timeout")?;
        }
        Ok(())
    }

    /// The pause between members.
    pub(crate) fn pace(&self) -> Result<Option<Pace>, String> {
        self.pace.as_deref().map(|text| Pace::parse(text, "pace")).transpose()
    }

    /// How long a page, a form or a save may take.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
            .as_deref()
            .and_then(|text| duration(text, "timeout").ok())
            .unwrap_or(Duration::from_secs(30))
    }

    /// Checks a field path: a field of a page or a column of the listing.
    ///
    /// # Errors
    ///
    /// Says why `path` names nothing this site holds.
    pub fn validate_path(&self, path: &str) -> Result<(), String> {
        let listed = match &self.list {
            Listing::Csv { .. } => true,
            Listing::Table { cells, .. } => cells.contains_key(path),
        };
        let on_page = self.pages.iter().any(|page| page.fields.contains_key(path));
        if listed || on_page || path == self.id {
            Ok(())
        } else {
            Err(format!("`{path}` is neither a field of a member's page nor listed"))
        }
    }

    /// The configured date formats, none unless configured.
    pub fn date_formats(&self) -> &[String] {
        self.date_formats.as_deref().unwrap_or_default()
    }
}
