//! `BrowserConnector`: the `Connector` of a web admin without an API.
//!
//! Members are listed from the site's CSV export (fetched by the logged-in browser, so the
//! session's cookies go along) or from its paged HTML table. A member is written the way a
//! careful person works: open the page, log in again if the session expired (recognised by
//! landing on the login page), enter edit mode, wait for the form, fill only the fields that
//! differ (a checkbox is clicked only when its state differs), save, wait for the result, and
//! read the saved values back from the page the save led to, which shows the member as stored. A save that bounced to the login page is unknown: log in, look
//! at the page, and redo it only if the values are not there. A member's pages are written in
//! order and the first failure stops the member: its outbox entry stays open, so none of its
//! fields is marked done. A refused write leaves a screenshot and names the page.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fantoccini::{Client, Locator};
use fieldsync_connector::{
    Capabilities, Connector, ConnectorError, ConnectorRecord, FieldWrite, Lookup, Page, PageToken, Probe,
    ReadRequest, Write, WriteOutcome,
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
                let modified_column = self.config.modified.as_deref().and_then(column);
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
                    let modified = modified_column
                        .and_then(|column| row.get(column))
                        .and_then(|text| text.trim().parse::<jiff::Timestamp>().ok());
                    let listed = columns.iter().map(Option::is_some).collect();
                    records.push((
                        ConnectorRecord { id: RecordId::new(id), values, modified, deleted: false },
                        listed,
                    ));
                }
                Ok(records)
            }
            Listing::Table { url, rows, id_attribute, cells, next } => {
                let mut records = Vec::new();
                let mut page = Some(url);
                while let Some(relative) = page.take() {
                    let client = self.open_page(&relative).await?;
                    for row in client
                        .find_all(Locator::Css(&rows))
                        .await
                        .map_err(|error| driver_error("the list", &error))?
                    {
                        let id = row
                            .attr(&id_attribute)
                            .await
                            .map_err(|error| driver_error("the list", &error))?
                            .unwrap_or_default();
                        let mut values = Vec::new();
                        let mut listed = Vec::new();
                        for path in paths {
                            match cells.get(path) {
                                Some(selector) => {
                                    let text = match row.find(Locator::Css(selector)).await {
                                        Ok(cell) => cell.text().await.unwrap_or_default(),
                                        Err(_) => String::new(),
                                    };
                                    values.push(Value::String(text));
                                    listed.push(true);
                                }
                                None => {
                                    values.push(Value::Null);
                                    listed.push(false);
                                }
                            }
                        }
                        let modified = match self.config.modified.as_deref().and_then(|path| cells.get(path))
                        {
                            Some(selector) => match row.find(Locator::Css(selector)).await {
                                Ok(cell) => cell.text().await.ok().and_then(|text| text.trim().parse().ok()),
                                Err(_) => None,
                            },
                            None => None,
                        };
                        records.push((
                            ConnectorRecord { id: RecordId::new(id), values, modified, deleted: false },
                            listed,
                        ));
                    }
                    if let Some(next) = &next
                        && let Ok(link) = client.find(Locator::Css(next)).await
                    {
                        page = link.attr("href").await.ok().flatten();
                    }
                }
                Ok(records)
            }
        }
    }

    /// Fills in, from the member's pages, the values the listing lacks.
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
            let client = self.open_page(&page.url.replace("{id}", record.id.as_str())).await?;
            member_exists(&client, page, &record.id).await?;
            for index in here {
                let field = &page.fields[&paths[index]];
                record.values[index] = read_input(&client, field).await?;
            }
        }
        Ok(())
    }

    /// Writes one member: its pages in order, each only when something on it changes.
    async fn write_member(&mut self, id: &RecordId, fields: &[FieldWrite]) -> Result<(), ConnectorError> {
        let pages = self.config.pages.clone();
        for field in fields {
            if !pages.iter().any(|page| page.fields.contains_key(&field.path)) {
                return Err(ConnectorError::Misconfigured {
                    message: format!("browser connector: `{}` is on none of a member's pages", field.path),
                });
            }
        }
        for page in &pages {
            let writes: Vec<&FieldWrite> =
                fields.iter().filter(|field| page.fields.contains_key(&field.path)).collect();
            if !writes.is_empty() {
                self.write_page(id, page, &writes).await?;
            }
        }
        Ok(())
    }

    async fn write_page(
        &mut self,
        id: &RecordId,
        page: &MemberPage,
        writes: &[&FieldWrite],
    ) -> Result<(), ConnectorError> {
        let relative = page.url.replace("{id}", id.as_str());
        let retries = self.config.retries.unwrap_or(2);
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.try_page(id, &relative, page, writes).await? {
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

    async fn try_page(
        &mut self,
        id: &RecordId,
        relative: &str,
        page: &MemberPage,
        writes: &[&FieldWrite],
    ) -> Result<Saved, ConnectorError> {
        let client = self.open_page(relative).await?;
        member_exists(&client, page, id).await?;
        let timeout = self.config.timeout();
        // What the page holds now: the guard against a member that changed since it was read.
        let mut changing = Vec::new();
        for write in writes {
            let field = &page.fields[&write.path];
            let held = read_input(&client, field).await?;
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
        if let Some(edit) = &page.edit {
            let button = client
                .wait()
                .at_most(timeout)
                .for_element(Locator::Css(edit))
                .await
                .map_err(|error| driver_error("the edit button", &error))?;
            button.click().await.map_err(|error| driver_error("the edit button", &error))?;
        }
        for (field, write) in &changing {
            let input = wait_displayed(&client, &field.selector, timeout).await?;
            set_input(&client, &input, field, &write.value).await?;
        }
        let save = wait_displayed(&client, &page.save, timeout).await?;
        save.click().await.map_err(|error| driver_error("the save button", &error))?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(error) = &page.error
                && let Ok(message) = client.find(Locator::Css(error)).await
                && message.is_displayed().await.unwrap_or(false)
            {
                let text = message.text().await.unwrap_or_default();
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
        // Read back what the site kept: the page the save led to shows the member as stored.
        for (field, write) in &changing {
            let kept = read_input(&client, field).await?;
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

/// Fails with `NotFound` when the page shows none of its fields (the site's "no such
/// member" page), so that a missing member is not taken for a misconfigured page.
async fn member_exists(client: &Client, page: &MemberPage, id: &RecordId) -> Result<(), ConnectorError> {
    for field in page.fields.values() {
        if client.find(Locator::Css(&field.selector)).await.is_ok() {
            return Ok(());
        }
    }
    Err(ConnectorError::NotFound { id: id.clone() })
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

/// What an input holds: its value, or a checkbox's state.
async fn read_input(client: &Client, field: &Field) -> Result<Value, ConnectorError> {
    let input =
        client.find(Locator::Css(&field.selector)).await.map_err(|error| ConnectorError::Misconfigured {
            message: format!("browser connector: no `{}` on the page: {error}", field.selector),
        })?;
    let read =
        |error: fantoccini::error::CmdError| driver_error(&format!("reading `{}`", field.selector), &error);
    Ok(match field.kind {
        FieldKind::Checkbox => {
            Value::Bool(input.prop("checked").await.map_err(read)?.is_some_and(|checked| checked == "true"))
        }
        FieldKind::Text | FieldKind::Select | FieldKind::Date => {
            site_text(&input.prop("value").await.map_err(read)?.unwrap_or_default())
        }
    })
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
        Ok(Probe {
            kind: "browser",
            target: self.what(),
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
        Ok(Page { records, next: None })
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
            self.complete(&mut record, &all_paths, &present).await?;
            if matches!(lookup, Lookup::Key { .. }) {
                record.values.pop();
            }
            found.push(record);
        }
        Ok(found)
    }

    async fn apply(
        &mut self,
        writes: &[Write],
    ) -> Result<Vec<Result<WriteOutcome, ConnectorError>>, ConnectorError> {
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
