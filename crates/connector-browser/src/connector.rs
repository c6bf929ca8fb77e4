//! `BrowserConnector`: the `Connector` of a web admin without an API.
//!
//! Members are listed from the site's CSV export (fetched by the logged-in browser, so the
//! session's cookies go along) or from its paged HTML table; what the listing lacks is read
//! from each member's pages. A member is written the way a careful person works: open the page,
//! log in again if the session expired (recognised by landing on the login page), press Edit,
//! wait until the form can be saved (it may be built only then), read the fields from it, fill
//! only those that differ (a checkbox is clicked only when its state differs), save, wait for
//! the result, and read the stored values back (a field's view, or the form opened again). A
//! save that bounced to the login page is unknown: log in, look at the page, and redo it only
//! if the values are not there. A member's pages are looked at before the first save and written
//! in order; a value that moved since the engine read it, or a site's "changed by someone else",
//! is `TargetMoved`, and any failure stops the member: its outbox entry stays open, so none of
//! its fields is marked done. A refused write leaves a screenshot and names the page.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fantoccini::{Client, Locator};
use fieldsync_connector::{
    Capabilities, Connector, ConnectorError, ConnectorRecord, FieldWrite, Lookup, Page, PageToken, Probe,
    ReadRequest, Write, WriteOutcome, WriteResults,
};
use fieldsync_model::RecordId;
use serde_json::Value;

use crate::browser::{Browser, BrowserOptions};
use crate::config::{BrowserConfig, Field, FieldKind, Listing, MemberPage};

/// How often a wait looks again.
const POLL: Duration = Duration::from_millis(50);

/// The browser connector.
pub struct BrowserConnector {
    config: Arc<BrowserConfig>,
    base: String,
    screenshots: PathBuf,
    browser: Option<Browser>,
    /// When the last member's write ended, for the pause between members.
    last_member: Option<Instant>,
}

impl std::fmt::Debug for BrowserConnector {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("BrowserConnector").field("base", &self.base).finish_non_exhaustive()
    }
}

/// A WebDriver failure as a connector error: a site that cannot be reached may come back; a
/// browser that broke is started again by the next call.
fn driver_error(doing: &str, error: &fantoccini::error::CmdError) -> ConnectorError {
    let message = error.to_string();
    ConnectorError::Unavailable { what: format!("the browser ({doing})"), message, retry_after: None }
}

/// A text as the site holds it, with its line breaks as LF: browsers send a text area's
/// line breaks as CRLF (the HTML form rule), so a site stores what a person typed as LF with
/// CRs added, and would otherwise never read back what was written.
fn site_text(text: &str) -> Value {
    Value::String(text.replace("\r\n", "\n"))
}

/// Whether a raw value, as a listing or a form holds it, is the one wanted: text compared
/// trimmed, and the many spellings of a checkbox's state alike.
fn same(held: &Value, wanted: &Value) -> bool {
    // Browsers send a text area's line breaks as CRLF and show them as LF.
    let text = |value: &Value| match value {
        Value::String(text) => text.replace("\r\n", "\n").trim().to_string(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let flag = |value: &Value| match value {
        Value::Bool(flag) => Some(*flag),
        Value::Number(number) => number.as_i64().map(|number| number != 0),
        Value::String(text) => match text.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" | "checked" => Some(true),
            "0" | "false" | "no" | "off" | "" => Some(false),
            _ => None,
        },
        _ => None,
    };
    text(held) == text(wanted)
        || (matches!(held, Value::Bool(_)) || matches!(wanted, Value::Bool(_)))
            && flag(held).is_some()
            && flag(held) == flag(wanted)
}

impl BrowserConnector {
    /// A connector for `config`, checked here; the browser starts at first use. Screenshots of
    /// failed writes go to `screenshots`.
    ///
    /// # Errors
    ///
    /// `Misconfigured`, naming the setting, when the configuration is wrong.
    pub fn open(config: BrowserConfig, screenshots: PathBuf) -> Result<Self, ConnectorError> {
        config.validate().map_err(|message| ConnectorError::Misconfigured {
            message: format!("browser connector for {}: {message}", config.base_url),
        })?;
        let base = config.base_url.trim().trim_end_matches('/').to_string();
        Ok(Self { config: Arc::new(config), base, screenshots, browser: None, last_member: None })
    }

    fn what(&self) -> String {
        self.base.clone()
    }

    fn url(&self, relative: &str) -> String {
        if relative.starts_with("http://") || relative.starts_with("https://") {
            relative.to_string()
        } else {
            format!("{}/{}", self.base, relative.trim_start_matches('/'))
        }
    }

    /// The browser, started when there is none (or the last one broke).
    async fn client(&mut self) -> Result<Client, ConnectorError> {
        if self.browser.is_none() {
            let options = BrowserOptions {
                chromedriver: self.config.chromedriver.clone(),
                chromium: self.config.chromium.clone(),
                ..BrowserOptions::default()
            };
            self.browser = Some(Browser::start(&options).await?);
        }
        Ok(self.browser.as_ref().map(|browser| browser.client().clone()).expect("started above"))
    }

    /// Ends the browser, for a fresh one at the next call.
    async fn reset(&mut self) {
        if let Some(browser) = self.browser.take() {
            browser.close().await;
        }
    }

    /// Whether the current page is the login page.
    async fn on_login_page(&self, client: &Client) -> bool {
        client.find(Locator::Css(&self.config.login.page)).await.is_ok()
    }

    /// Goes to `url`, which a refused connection or a browser that broke fails retryably.
    async fn goto(&mut self, url: &str) -> Result<Client, ConnectorError> {
        let client = self.client().await?;
        if let Err(error) = client.goto(url).await {
            let failure = driver_error(&format!("opening {url}"), &error);
            if !error.to_string().contains("net::ERR_") {
                // Not the site: the browser itself; the next call starts a new one.
                self.reset().await;
            }
            return Err(failure);
        }
        Ok(client)
    }

    /// Logs in.
    async fn login(&mut self) -> Result<Client, ConnectorError> {
        let login = self.config.login.clone();
        let client = self.goto(&self.url(&login.url)).await?;
        let field = |selector: String| {
            let client = client.clone();
            async move {
                client.wait().at_most(Duration::from_secs(10)).for_element(Locator::Css(&selector)).await
            }
        };
        let user = field(login.username_field.clone())
            .await
            .map_err(|error| driver_error("the login form", &error))?;
        user.clear().await.map_err(|error| driver_error("the login form", &error))?;
        user.send_keys(&login.username).await.map_err(|error| driver_error("the login form", &error))?;
        let password = field(login.password_field.clone())
            .await
            .map_err(|error| driver_error("the login form", &error))?;
        password.clear().await.map_err(|error| driver_error("the login form", &error))?;
        password
            .send_keys(login.password.expose())
            .await
            .map_err(|error| driver_error("the login form", &error))?;
        let submit =
            field(login.submit.clone()).await.map_err(|error| driver_error("the login form", &error))?;
        submit.click().await.map_err(|error| driver_error("logging in", &error))?;
        let deadline = Instant::now() + self.config.timeout();
        loop {
            if !self.on_login_page(&client).await {
                return Ok(client);
            }
            if let Some(error) = &login.error
                && let Ok(message) = client.find(Locator::Css(error)).await
            {
                let text = message.text().await.unwrap_or_default();
                return Err(ConnectorError::Misconfigured {
                    message: format!("browser connector: logging in to {} failed: {text}", self.base),
                });
            }
            if Instant::now() > deadline {
                return Err(ConnectorError::Unavailable {
                    what: self.what(),
                    message: "the login page did not go away after logging in".into(),
                    retry_after: None,
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Opens a page of the site, logging in first when the session expired.
    async fn open_page(&mut self, relative: &str) -> Result<Client, ConnectorError> {
        let url = self.url(relative);
        let client = self.goto(&url).await?;
        if !self.on_login_page(&client).await {
            return Ok(client);
        }
        self.login().await?;
        let client = self.goto(&url).await?;
        if self.on_login_page(&client).await {
            return Err(ConnectorError::Unavailable {
                what: url,
                message: "the site sent the browser back to its login page right after logging in".into(),
                retry_after: None,
            });
        }
        Ok(client)
    }

    /// Fetches a page of the site as text from within the logged-in browser.
    async fn fetch_text(&mut self, relative: &str) -> Result<String, ConnectorError> {
        let url = self.url(relative);
        let login = self.url(&self.config.login.url);
        for attempt in 0..2 {
            // `fetch` runs on a page of the site, so that the session's cookies go along.
            let client = self.client().await?;
            let here = client.current_url().await.map(|url| url.to_string()).unwrap_or_default();
            let client = if here.starts_with(&self.base) { client } else { self.login().await? };
            let script = "const [url, done] = arguments; \
                fetch(url, { credentials: 'same-origin' }) \
                  .then(answer => answer.text().then(text => done({ status: answer.status, url: answer.url, text }))) \
                  .catch(error => done({ error: String(error) }));";
            let answer = client
                .execute_async(script, vec![Value::String(url.clone())])
                .await
                .map_err(|error| driver_error(&format!("fetching {url}"), &error))?;
            if let Some(error) = answer.get("error").and_then(Value::as_str) {
                return Err(ConnectorError::Unavailable {
                    what: url,
                    message: error.to_string(),
                    retry_after: None,
                });
            }
            let landed = answer.get("url").and_then(Value::as_str).unwrap_or_default();
            if landed.starts_with(&login) && attempt == 0 {
                self.login().await?;
                continue;
            }
            let status = answer.get("status").and_then(Value::as_u64).unwrap_or(0);
            let text = answer.get("text").and_then(Value::as_str).unwrap_or_default().to_string();
            if !(200..300).contains(&status) {
                return Err(ConnectorError::Unavailable {
                    what: url,
                    message: format!("HTTP {status}"),
                    retry_after: None,
                });
            }
            return Ok(text);
        }
        Err(ConnectorError::Unavailable {
            what: url,
            message: "the site keeps asking to log in".into(),
            retry_after: None,
        })
    }

    /// Every member as the listing shows them: id, the values at `paths` where the listing has
    /// them (`None` where it has not), and the modification time.
    async fn list(&mut self, paths: &[String]) -> Result<Vec<(ConnectorRecord, Vec<bool>)>, ConnectorError> {
        match self.config.list.clone() {
            Listing::Csv { url, delimiter } => {
                let text = self.fetch_text(&url).await?;
                let mut reader = csv::ReaderBuilder::new()
                    .delimiter(delimiter.map_or(b',', |delimiter| delimiter as u8))
                    .from_reader(text.as_bytes());
                let malformed = |message: String| ConnectorError::Malformed { what: self.url(&url), message };
                let header: Vec<String> = reader
                    .headers()
                    .map_err(|error| malformed(format!("the export's header: {error}")))?
                    .iter()
                    .map(str::to_string)
                    .collect();
                let column = |name: &str| header.iter().position(|column| column == name);
                let id_column = column(&self.config.id).ok_or_else(|| {
                    malformed(format!("the export has no column `{}` (the `id`)", self.config.id))
                })?;
                let modified_column = match self.config.modified.as_deref() {
                    Some(name) => Some(column(name).ok_or_else(|| ConnectorError::Misconfigured {
                        message: format!(
                            "browser connector: the export {} has no column `{name}` (the `modified`): it has {}",
                            self.url(&url),
                            header.join(", ")
                        ),
                    })?),
                    None => None,
                };
                let columns: Vec<Option<usize>> = paths.iter().map(|path| column(path)).collect();
                let on_a_page =
                    |path: &String| self.config.pages.iter().any(|page| page.fields.contains_key(path));
                if let Some(missing) =
                    paths.iter().zip(&columns).find(|(path, column)| column.is_none() && !on_a_page(path))
                {
                    return Err(ConnectorError::Misconfigured {
                        message: format!(
                            "browser connector: `{}` is neither a column of {} ({}) nor a field of a member's page",
                            missing.0,
                            self.url(&url),
                            header.join(", ")
                        ),
                    });
                }
                let mut records = Vec::new();
                for (line, row) in reader.records().enumerate() {
                    let row = row.map_err(|error| malformed(format!("line {}: {error}", line + 2)))?;
                    let id = row.get(id_column).unwrap_or_default().trim().to_string();
                    if id.is_empty() {
                        continue;
                    }
                    let values = columns
                        .iter()
                        .map(|column| {
                            column.and_then(|column| row.get(column)).map_or(Value::Null, site_text)
                        })
                        .collect();
                    let modified = match modified_column.and_then(|column| row.get(column)) {
                        Some(text) => self.config.parse_modified(text).map_err(|message| {
                            malformed(format!(
                                "line {}, column `{}` (member {id}): {message}",
                                line + 2,
                                self.config.modified.as_deref().unwrap_or_default()
                            ))
                        })?,
                        None => None,
                    };
                    let listed = columns.iter().map(Option::is_some).collect();
                    records.push((
                        ConnectorRecord { id: RecordId::new(id), values, modified, deleted: false },
                        listed,
                    ));
                }
                Ok(records)
            }
            Listing::Table { url, rows, id_attribute, id_selector, cells, next } => {
                let mut records = Vec::new();
                let mut page = Some(url);
                let mut visited = std::collections::HashSet::new();
                while let Some(relative) = page.take() {
                    if !visited.insert(self.url(&relative)) {
                        break;
                    }
                    let client = self.open_page(&relative).await?;
                    for row in client
                        .find_all(Locator::Css(&rows))
                        .await
                        .map_err(|error| driver_error("the list", &error))?
                    {
                        let holder = match &id_selector {
                            Some(selector) => match row.find(Locator::Css(selector)).await {
                                Ok(holder) => holder,
                                // A row without a member (a heading or a summary).
                                Err(_) => continue,
                            },
                            None => row.clone(),
                        };
                        let id = holder
                            .attr(&id_attribute)
                            .await
                            .map_err(|error| driver_error("the list", &error))?
                            .unwrap_or_default()
                            .trim()
                            .to_string();
                        if id.is_empty() {
                            continue;
                        }
                        let mut values = Vec::new();
                        let mut listed = Vec::new();
                        for path in paths {
                            match cells.get(path) {
                                Some(selector) => {
                                    let text = match row.find(Locator::Css(selector)).await {
                                        Ok(cell) => cell.text().await.unwrap_or_default(),
                                        Err(_) => String::new(),
                                    };
                                    values.push(site_text(text.trim()));
                                    listed.push(true);
                                }
                                None => {
                                    values.push(Value::Null);
                                    listed.push(false);
                                }
                            }
                        }
                        let modified = match self.config.modified.as_deref() {
                            Some(path) => {
                                let selector = cells.get(path).ok_or_else(|| ConnectorError::Misconfigured {
                                    message: format!(
                                        "browser connector: `modified` names `{path}`, which is not one of the list's `cells`"
                                    ),
                                })?;
                                let text = match row.find(Locator::Css(selector)).await {
                                    Ok(cell) => cell.text().await.unwrap_or_default(),
                                    Err(_) => String::new(),
                                };
                                self.config.parse_modified(&text).map_err(|message| {
                                    ConnectorError::Malformed {
                                        what: self.url(&relative),
                                        message: format!("member {id}, cell `{selector}`: {message}"),
                                    }
                                })?
                            }
                            None => None,
                        };
                        records.push((
                            ConnectorRecord { id: RecordId::new(id), values, modified, deleted: false },
                            listed,
                        ));
                    }
                    // The link's `href` property is the address the browser resolved (a
                    // page's own links are often relative: `?p=2`).
                    if let Some(next) = &next
                        && let Ok(link) = client.find(Locator::Css(next)).await
                    {
                        page = link.prop("href").await.ok().flatten().filter(|href| !href.is_empty());
                    }
                }
                Ok(records)
            }
        }
    }

    /// Fills in, from the member's pages, the values the listing lacks: one page load per
    /// page that holds some of them. A field the page does not show for this member fails the
    /// read, naming the member, the page and the selector: read as empty, it would be taken
    /// for a value a person cleared and cleared on the other side too.
    async fn complete(
        &mut self,
        record: &mut ConnectorRecord,
        paths: &[String],
        listed: &[bool],
    ) -> Result<(), ConnectorError> {
        let wanted: Vec<usize> = (0..paths.len()).filter(|&index| !listed[index]).collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let pages = self.config.pages.clone();
        for page in &pages {
            let here: Vec<usize> =
                wanted.iter().copied().filter(|&index| page.fields.contains_key(&paths[index])).collect();
            if here.is_empty() {
                continue;
            }
            let relative = page.url.replace("{id}", record.id.as_str());
            let client = self.open_page(&relative).await?;
            member_exists(&client, page, &record.id).await?;
            let fields: Vec<&Field> = here.iter().map(|&index| &page.fields[&paths[index]]).collect();
            let values = self.read_fields(&client, page, &fields, &relative).await?;
            for ((index, field), value) in here.into_iter().zip(&fields).zip(values) {
                record.values[index] = value.ok_or_else(|| ConnectorError::Misconfigured {
                    message: format!(
                        "field {} of member {}: `{}` is not on {}; nothing is read for it rather than \
                         taking it for empty",
                        paths[index],
                        record.id,
                        field.view.as_deref().unwrap_or(&field.selector),
                        self.url(&relative)
                    ),
                })?;
            }
        }
        Ok(())
    }

    /// Reads `fields` as the page shows them: a field with a `view` from its view, the others
    /// from the form, opened as a person opens it (Edit, then wait for it). `None` for a
    /// field the page does not have.
    async fn read_fields(
        &self,
        client: &Client,
        page: &MemberPage,
        fields: &[&Field],
        relative: &str,
    ) -> Result<Vec<Option<Value>>, ConnectorError> {
        let mut values = Vec::with_capacity(fields.len());
        let mut form_open = false;
        for field in fields {
            let value = match &field.view {
                Some(view) => read_view(client, view).await?,
                None => {
                    if !form_open {
                        self.open_form(client, page, relative).await?;
                        form_open = true;
                    }
                    read_input(client, field).await?
                }
            };
            values.push(value);
        }
        Ok(values)
    }

    /// Opens the page's form as a person does: press Edit (unless the form is open already)
    /// and wait until its save button can be pressed, which is when the form is there,
    /// whether it was in the page, built from a template or fetched.
    async fn open_form(
        &self,
        client: &Client,
        page: &MemberPage,
        relative: &str,
    ) -> Result<(), ConnectorError> {
        let timeout = self.config.timeout();
        if form_ready(client, page).await {
            return Ok(());
        }
        if let Some(edit) = &page.edit {
            let button = wait_displayed(client, edit, timeout)
                .await
                .map_err(|error| self.on_page(error, relative, "the edit button"))?;
            button.click().await.map_err(|error| driver_error("the edit button", &error))?;
        }
        let deadline = Instant::now() + timeout;
        loop {
            if form_ready(client, page).await {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(ConnectorError::Unavailable {
                    what: self.url(relative),
                    message: format!(
                        "the form (its save button `{}`) did not appear within {timeout:?}{}",
                        page.save,
                        page.edit.as_ref().map_or(String::new(), |edit| format!(" of pressing `{edit}`"))
                    ),
                    retry_after: None,
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Names the page in a wait's error.
    fn on_page(&self, error: ConnectorError, relative: &str, what: &str) -> ConnectorError {
        match error {
            ConnectorError::Unavailable { message, retry_after, .. } => ConnectorError::Unavailable {
                what: self.url(relative),
                message: format!("{what}: {message}"),
                retry_after,
            },
            other => other,
        }
    }

    /// Writes one member: its pages in order, each only when something on it changes.
    ///
    /// When more than one page changes, every page is looked at first (the last one first,
    /// so that the first is open when the saves begin), and a value that moved since the
    /// engine read it refuses the whole member before anything is saved.
    async fn write_member(&mut self, id: &RecordId, fields: &[FieldWrite]) -> Result<(), ConnectorError> {
        let pages = self.config.pages.clone();
        for field in fields {
            if !pages.iter().any(|page| page.fields.contains_key(&field.path)) {
                return Err(ConnectorError::Misconfigured {
                    message: format!("browser connector: `{}` is on none of a member's pages", field.path),
                });
            }
        }
        let plan: Vec<(&MemberPage, Vec<&FieldWrite>)> = pages
            .iter()
            .map(|page| (page, fields.iter().filter(|field| page.fields.contains_key(&field.path)).collect()))
            .filter(|(_, writes): &(&MemberPage, Vec<&FieldWrite>)| !writes.is_empty())
            .collect();
        let mut open: Option<String> = None;
        if plan.len() > 1 && fields.iter().any(|field| field.expected.is_some()) {
            for (page, writes) in plan.iter().rev() {
                let relative = page.url.replace("{id}", id.as_str());
                let client = self.open_page(&relative).await?;
                member_exists(&client, page, id).await?;
                let selected: Vec<&Field> = writes.iter().map(|write| &page.fields[&write.path]).collect();
                let held = self.read_fields(&client, page, &selected, &relative).await?;
                for ((write, field), held) in writes.iter().zip(&selected).zip(held) {
                    let held = held.ok_or_else(|| self.missing(field, &relative, id))?;
                    if let Some(expected) = &write.expected
                        && !same(&held, expected)
                        && !same(&held, &write.value)
                    {
                        tracing::info!(member = %id, page = %relative, path = %write.path, "A value moved since it was read; nothing of the member is saved.");
                        return Err(ConnectorError::TargetMoved { id: id.clone() });
                    }
                }
                open = Some(relative);
            }
        }
        for (page, writes) in &plan {
            let relative = page.url.replace("{id}", id.as_str());
            let already_open = open.take().is_some_and(|open| open == relative);
            self.write_page(id, page, writes, already_open).await?;
        }
        Ok(())
    }

    /// The error of a field its page does not have.
    fn missing(&self, field: &Field, relative: &str, id: &RecordId) -> ConnectorError {
        ConnectorError::Misconfigured {
            message: format!(
                "browser connector: `{}` is not on {} (member {id})",
                field.view.as_deref().unwrap_or(&field.selector),
                self.url(relative)
            ),
        }
    }

    async fn write_page(
        &mut self,
        id: &RecordId,
        page: &MemberPage,
        writes: &[&FieldWrite],
        already_open: bool,
    ) -> Result<(), ConnectorError> {
        let relative = page.url.replace("{id}", id.as_str());
        let retries = self.config.retries.unwrap_or(2);
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.try_page(id, &relative, page, writes, already_open && attempt == 1).await? {
                Saved::Done => return Ok(()),
                Saved::Bounced if attempt <= retries => {
                    // The session expired with the save: it may or may not have happened.
                    // The next attempt logs in, reads the page, and saves only what is not there.
                    tracing::info!(page = %relative, "A save landed on the login page; looking again.");
                }
                Saved::Bounced => {
                    return Err(ConnectorError::Unavailable {
                        what: self.url(&relative),
                        message: format!("every save went to the login page ({attempt} tries)"),
                        retry_after: None,
                    });
                }
            }
        }
    }

    /// One page of a member, as a person does it: open the page, press Edit, wait for the
    /// form, read each field from it, type what differs, save, wait for the result, and read
    /// the stored values back.
    async fn try_page(
        &mut self,
        id: &RecordId,
        relative: &str,
        page: &MemberPage,
        writes: &[&FieldWrite],
        already_open: bool,
    ) -> Result<Saved, ConnectorError> {
        let client = if already_open { self.client().await? } else { self.open_page(relative).await? };
        member_exists(&client, page, id).await?;
        let timeout = self.config.timeout();
        self.open_form(&client, page, relative).await?;
        // What the form holds now: the guard against a member that changed since it was read.
        let mut changing = Vec::new();
        for write in writes {
            let field = &page.fields[&write.path];
            let held = read_input(&client, field).await?.ok_or_else(|| self.missing(field, relative, id))?;
            if same(&held, &write.value) {
                continue;
            }
            if let Some(expected) = &write.expected
                && !same(&held, expected)
            {
                return Err(ConnectorError::TargetMoved { id: id.clone() });
            }
            changing.push((field, *write));
        }
        if changing.is_empty() {
            return Ok(Saved::Done);
        }
        for (field, write) in &changing {
            let input = wait_displayed(&client, &field.selector, timeout)
                .await
                .map_err(|error| self.on_page(error, relative, "a field"))?;
            set_input(&client, &input, field, &write.value).await?;
        }
        let save = wait_displayed(&client, &page.save, timeout)
            .await
            .map_err(|error| self.on_page(error, relative, "the save button"))?;
        save.click().await.map_err(|error| driver_error("the save button", &error))?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(moved) = &page.moved
                && displayed(&client, moved).await
            {
                tracing::info!(member = %id, page = %relative, "The site says the member changed since the form was opened.");
                return Err(ConnectorError::TargetMoved { id: id.clone() });
            }
            if let Some(error) = &page.error
                && let Ok(message) = client.find(Locator::Css(error)).await
                && message.is_displayed().await.unwrap_or(false)
            {
                let text = message.text().await.unwrap_or_default();
                // The page may have changed since `moved` was looked for above.
                let moved_shown = match &page.moved {
                    Some(moved) => displayed(&client, moved).await,
                    None => false,
                };
                if moved_shown || page.moved_text.as_ref().is_some_and(|moved| text.contains(moved.as_str()))
                {
                    tracing::info!(member = %id, page = %relative, "The site says the member changed since the form was opened.");
                    return Err(ConnectorError::TargetMoved { id: id.clone() });
                }
                let shot = self.screenshot(&client, relative).await;
                return Err(ConnectorError::Rejected {
                    message: format!("{} ({}{shot})", text.trim(), self.url(relative)),
                });
            }
            if client.find(Locator::Css(&page.saved)).await.is_ok() {
                break;
            }
            if self.on_login_page(&client).await {
                return Ok(Saved::Bounced);
            }
            if Instant::now() > deadline {
                let shot = self.screenshot(&client, relative).await;
                return Err(ConnectorError::Unavailable {
                    what: self.url(relative),
                    message: format!("the save did not finish within {timeout:?}{shot}"),
                    retry_after: None,
                });
            }
            tokio::time::sleep(POLL).await;
        }
        // Read back what the site stored: from the page the save led to when it shows the
        // member's page (its views, or its form opened again), else from the page loaded anew.
        let client = if shows_page(&client, page).await {
            client
        } else {
            let client = self.open_page(relative).await?;
            member_exists(&client, page, id).await?;
            client
        };
        let fields: Vec<&Field> = changing.iter().map(|(field, _)| *field).collect();
        let kept = self.read_fields(&client, page, &fields, relative).await?;
        for ((field, write), kept) in changing.iter().zip(kept) {
            let kept = kept.ok_or_else(|| self.missing(field, relative, id))?;
            if !same(&kept, &write.value) {
                let shot = self.screenshot(&client, relative).await;
                return Err(ConnectorError::Rejected {
                    message: format!(
                        "the site kept {kept} for {}, not {} ({}{shot})",
                        write.path,
                        write.value,
                        self.url(relative)
                    ),
                });
            }
        }
        Ok(Saved::Done)
    }

    /// Saves a screenshot of the page for the operator; returns where, for the message.
    async fn screenshot(&self, client: &Client, relative: &str) -> String {
        let Ok(png) = client.screenshot().await else { return String::new() };
        let name: String = relative
            .chars()
            .map(|char| if char.is_ascii_alphanumeric() { char } else { '-' })
            .collect::<String>()
            .trim_matches('-')
            .to_string();
        let stamp = jiff::Timestamp::now().strftime("%Y%m%dT%H%M%S%.3fZ");
        let path = self.screenshots.join(format!("{stamp}-{name}.png"));
        let written = std::fs::create_dir_all(&self.screenshots).and_then(|()| std::fs::write(&path, png));
        match written {
            Ok(()) => format!("; screenshot {}", path.display()),
            Err(error) => {
                tracing::warn!(%error, path = %path.display(), "Could not save a screenshot.");
                String::new()
            }
        }
    }
}

/// Fails with `NotFound` when the page shows nothing of a member's page (no Edit button,
/// save button, field or view: the site's "no such member" page), so that a missing member
/// is not taken for a misconfigured page.
async fn member_exists(client: &Client, page: &MemberPage, id: &RecordId) -> Result<(), ConnectorError> {
    if shows_page(client, page).await { Ok(()) } else { Err(ConnectorError::NotFound { id: id.clone() }) }
}

/// Whether the current page is a member's page as `page` describes it.
async fn shows_page(client: &Client, page: &MemberPage) -> bool {
    // Collected first: a lazy iterator of closures held across the awaits would keep the
    // future from being `Send`.
    let selectors: Vec<&str> = page
        .edit
        .iter()
        .chain([&page.save])
        .chain(
            page.fields
                .values()
                .flat_map(|field| std::iter::once(&field.selector).chain(field.view.as_ref())),
        )
        .map(String::as_str)
        .collect();
    for selector in selectors {
        if client.find(Locator::Css(selector)).await.is_ok() {
            return true;
        }
    }
    false
}

/// Whether the page's form is there to fill in: its save button shown and enabled.
async fn form_ready(client: &Client, page: &MemberPage) -> bool {
    match client.find(Locator::Css(&page.save)).await {
        Ok(save) => save.is_displayed().await.unwrap_or(false) && save.is_enabled().await.unwrap_or(false),
        Err(_) => false,
    }
}

/// Whether an element is on the page and shown.
async fn displayed(client: &Client, selector: &str) -> bool {
    match client.find(Locator::Css(selector)).await {
        Ok(element) => element.is_displayed().await.unwrap_or(false),
        Err(_) => false,
    }
}

/// How a page's save ended, when it did not fail.
enum Saved {
    Done,
    /// The save landed on the login page: the session had expired.
    Bounced,
}

async fn wait_displayed(
    client: &Client,
    selector: &str,
    timeout: Duration,
) -> Result<fantoccini::elements::Element, ConnectorError> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(element) = client.find(Locator::Css(selector)).await
            && element.is_displayed().await.unwrap_or(false)
            && element.is_enabled().await.unwrap_or(false)
        {
            return Ok(element);
        }
        if Instant::now() > deadline {
            return Err(ConnectorError::Unavailable {
                what: "the browser".into(),
                message: format!("`{selector}` did not appear within {timeout:?}"),
                retry_after: None,
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// What an input holds: its value, or a checkbox's state; `None` when the page has no such
/// input.
async fn read_input(client: &Client, field: &Field) -> Result<Option<Value>, ConnectorError> {
    let Ok(input) = client.find(Locator::Css(&field.selector)).await else { return Ok(None) };
    let read =
        |error: fantoccini::error::CmdError| driver_error(&format!("reading `{}`", field.selector), &error);
    Ok(Some(match field.kind {
        FieldKind::Checkbox => {
            Value::Bool(input.prop("checked").await.map_err(read)?.is_some_and(|checked| checked == "true"))
        }
        FieldKind::Text | FieldKind::Select | FieldKind::Date => {
            site_text(&input.prop("value").await.map_err(read)?.unwrap_or_default())
        }
    }))
}

/// What a read-only view shows: a checkbox's state, a control's value, or an element's text
/// as the page holds it (its `textContent`); `None` when the page has no such view.
async fn read_view(client: &Client, selector: &str) -> Result<Option<Value>, ConnectorError> {
    let Ok(view) = client.find(Locator::Css(selector)).await else { return Ok(None) };
    let read = |error: fantoccini::error::CmdError| driver_error(&format!("reading `{selector}`"), &error);
    let tag = view.tag_name().await.map_err(read)?.to_ascii_lowercase();
    let kind = view.attr("type").await.map_err(read)?.unwrap_or_default().to_ascii_lowercase();
    Ok(Some(match tag.as_str() {
        "input" if kind == "checkbox" || kind == "radio" => {
            Value::Bool(view.prop("checked").await.map_err(read)?.is_some_and(|checked| checked == "true"))
        }
        "input" | "textarea" | "select" => {
            site_text(&view.prop("value").await.map_err(read)?.unwrap_or_default())
        }
        _ => site_text(&view.prop("textContent").await.map_err(read)?.unwrap_or_default()),
    }))
}

/// Enters a value as a person would.
async fn set_input(
    client: &Client,
    input: &fantoccini::elements::Element,
    field: &Field,
    value: &Value,
) -> Result<(), ConnectorError> {
    let fail =
        |error: fantoccini::error::CmdError| driver_error(&format!("entering `{}`", field.selector), &error);
    let text = match value {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    match field.kind {
        FieldKind::Checkbox => {
            let checked = input.prop("checked").await.map_err(fail)?.is_some_and(|checked| checked == "true");
            if !same(&Value::Bool(checked), value) {
                input.click().await.map_err(fail)?;
            }
        }
        FieldKind::Select => input.select_by_value(&text).await.map_err(fail)?,
        // Typed, as a person would, unless it holds a tab, which typing would take for a
        // move to the next field.
        FieldKind::Text if !text.contains('\t') => {
            input.clear().await.map_err(fail)?;
            if !text.is_empty() {
                input.send_keys(&text).await.map_err(fail)?;
            }
        }
        FieldKind::Text | FieldKind::Date => {
            // A date input's typing depends on the browser's locale; its value does not.
            let script = "arguments[0].value = arguments[1]; \
                arguments[0].dispatchEvent(new Event('input', { bubbles: true })); \
                arguments[0].dispatchEvent(new Event('change', { bubbles: true }));";
            let element = serde_json::to_value(input).map_err(|error| ConnectorError::Unavailable {
                what: "the browser".into(),
                message: error.to_string(),
                retry_after: None,
            })?;
            client.execute(script, vec![element, Value::String(text)]).await.map_err(fail)?;
        }
    }
    Ok(())
}

impl Connector for BrowserConnector {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            incremental: false,
            lookup_by_key: true,
            conditional_writes: false,
            create: false,
            delete: false,
            sequences: false,
        }
    }

    async fn check(&mut self, paths: &[String]) -> Result<Probe, ConnectorError> {
        for path in paths {
            self.config.validate_path(path).map_err(|message| ConnectorError::Misconfigured {
                message: format!("browser connector: {message}"),
            })?;
        }
        self.login().await?;
        let records = self.list(paths).await?;
        // Fields the listing lacks are read from each member's pages: say which, and what
        // that costs, and look for them on the first member's pages (a selector with a typo
        // would otherwise read as empty for every member).
        let mut target = self.what();
        let pages = self.config.pages.clone();
        if let Some((first, listed)) = records.first() {
            let mut loads = Vec::new();
            for page in &pages {
                let fields: Vec<(&String, &Field)> = paths
                    .iter()
                    .zip(listed)
                    .filter(|(_, listed)| !**listed)
                    .filter_map(|(path, _)| page.fields.get(path).map(|field| (path, field)))
                    .collect();
                if fields.is_empty() {
                    continue;
                }
                let relative = page.url.replace("{id}", first.id.as_str());
                let client = self.open_page(&relative).await?;
                member_exists(&client, page, &first.id).await?;
                let selected: Vec<&Field> = fields.iter().map(|(_, field)| *field).collect();
                let values = self.read_fields(&client, page, &selected, &relative).await?;
                if let Some(((_, field), _)) = fields.iter().zip(&values).find(|(_, value)| value.is_none()) {
                    return Err(ConnectorError::Misconfigured {
                        message: format!(
                            "browser connector: `{}` is not on {} (the first member's page)",
                            field.view.as_deref().unwrap_or(&field.selector),
                            self.url(&relative)
                        ),
                    });
                }
                let names: Vec<&str> = fields.iter().map(|(path, _)| path.as_str()).collect();
                loads.push(format!("{} from {}", names.join(", "), page.url));
            }
            if !loads.is_empty() {
                target = format!(
                    "{target} (not in the listing, read from each member's pages, one page load per member and page: {})",
                    loads.join("; ")
                );
            }
        }
        Ok(Probe {
            kind: "browser",
            target,
            records: Some(records.len() as u64),
            capabilities: self.capabilities(),
        })
    }

    async fn read_page(
        &mut self,
        request: &ReadRequest,
        _token: Option<&PageToken>,
    ) -> Result<Page, ConnectorError> {
        let listed = self.list(&request.paths).await?;
        let mut records = Vec::with_capacity(listed.len());
        for (mut record, present) in listed {
            self.complete(&mut record, &request.paths, &present).await?;
            records.push(record);
        }
        Ok(Page::new(records, None))
    }

    async fn lookup(
        &mut self,
        paths: &[String],
        lookup: &Lookup,
    ) -> Result<Vec<ConnectorRecord>, ConnectorError> {
        let mut all_paths = paths.to_vec();
        if let Lookup::Key { path, .. } = lookup {
            all_paths.push(path.clone());
        }
        let listed = self.list(&all_paths).await?;
        let mut found = Vec::new();
        for (mut record, present) in listed {
            // A key the listing lacks is read from every member's page before it can be
            // compared: slow, but a member is never taken for missing because of where its key is.
            let mut completed = false;
            if matches!(lookup, Lookup::Key { .. }) && !present.last().copied().unwrap_or(true) {
                self.complete(&mut record, &all_paths, &present).await?;
                completed = true;
            }
            let wanted = match lookup {
                Lookup::Ids(ids) => ids.contains(&record.id),
                Lookup::Key { values, .. } => match record.values.last() {
                    Some(Value::String(key)) => values.iter().any(|value| value == key.trim()),
                    _ => false,
                },
            };
            if !wanted {
                continue;
            }
            if !completed {
                self.complete(&mut record, &all_paths, &present).await?;
            }
            if matches!(lookup, Lookup::Key { .. }) {
                record.values.pop();
            }
            found.push(record);
        }
        Ok(found)
    }

    async fn apply(&mut self, writes: &[Write]) -> Result<WriteResults, ConnectorError> {
        let pace = self.config.pace().ok().flatten();
        let mut results = Vec::with_capacity(writes.len());
        let mut unreachable: Option<String> = None;
        for write in writes {
            // The site stopped answering: the other members wait for the next run.
            if let Some(message) = &unreachable {
                results.push(Err(ConnectorError::Unavailable {
                    what: self.what(),
                    message: message.clone(),
                    retry_after: None,
                }));
                continue;
            }
            if let (Some(pace), Some(last)) = (pace, self.last_member) {
                let pause = pace.draw();
                let since = last.elapsed();
                if pause > since {
                    tokio::time::sleep(pause - since).await;
                }
            }
            let result = match write {
                Write::Update { id, fields } => {
                    self.write_member(id, fields).await.map(|()| WriteOutcome { id: id.clone() })
                }
                Write::Create { .. } => {
                    Err(ConnectorError::Unsupported { kind: "browser", operation: "create" })
                }
                Write::Delete { .. } => {
                    Err(ConnectorError::Unsupported { kind: "browser", operation: "delete" })
                }
            };
            self.last_member = Some(Instant::now());
            if let Err(ConnectorError::Unavailable { message, .. }) = &result
                && message.contains("net::ERR_")
            {
                unreachable = Some(message.clone());
            }
            results.push(result);
        }
        Ok(results)
    }
}

impl BrowserConnector {
    /// Ends the browser and removes its profile.
    pub async fn close(mut self) {
        self.reset().await;
    }
}
