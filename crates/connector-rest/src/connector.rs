//! `RestConnector`: the `Connector` of a JSON API.
//!
//! A listing is read a page at a time in the configured paging style; records are read at
//! field paths. An update sends only the fields that change, as the units the API replaces
//! (an array whole), and is not sent at all when it would change nothing: many APIs bump their
//! modified time on every write, which would come back as a change. Where the API offers
//! ETags, an update carries `If-Match`; elsewhere the engine reads the record again just
//! before writing. A write is verified by the record its response holds, or by reading it
//! again.
//!
//! With a `feed`, reads from a sequence follow the change feed (deleted rows are deleted
//! records naming only their id), and a full read reads the whole feed or the listing after the
//! feed's current sequence. With `whole_document`, an update sends the whole record read just
//! before, changed at its paths; with `revision`, updates and deletes name the revision read.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use fieldsync_connector::{
    Capabilities, Connector, ConnectorError, ConnectorRecord, FieldWrite, Lookup, Page, PageToken, Probe,
    ReadRequest, Sequence, Write, WriteOutcome, WriteResults,
};
use fieldsync_model::RecordId;
use jiff::Timestamp;
use reqwest::{Method, StatusCode, Url};
use serde_json::Value;

use crate::config::{
    Delete, Empty, FullRead, Join, KeyLookup, Order, Paging, RestConfig, RevisionIn, Settings, TimeFormat,
    Verify,
};
use crate::http::{Answer, Http, Kind, shown};
use crate::path::FieldPath;

mod feed;

use feed::Own;

/// A record as the API answered it, with the ETag of its answer when there was one.
#[derive(Clone, Debug)]
pub(crate) struct Fetched {
    pub(crate) record: Value,
    pub(crate) etag: Option<String>,
}

/// The rest connector.
#[derive(Debug)]
pub struct RestConnector {
    pub(crate) settings: Arc<Settings>,
    pub(crate) http: Arc<Http>,
    /// Records as the latest writes' responses held them, for their verification.
    written: HashMap<RecordId, Fetched>,
    /// For `create.unique` without `key_param`: the id of each record by its unique value, from
    /// one reading of the listing, kept until a new listing starts (the next run) and told of
    /// this connector's own creates and deletes.
    unique_holders: Arc<Mutex<Option<HashMap<String, RecordId>>>>,
    /// For `empty = "schema"`: each top-level field's type, from the API's `OPTIONS` answer.
    schema: Arc<tokio::sync::OnceCell<HashMap<String, String>>>,
    /// Each record this connector wrote since it was opened, as far as its read-back goes, for
    /// `feed_past_own_writes`.
    own: HashMap<RecordId, Own>,
}

impl RestConnector {
    /// A connector for `config`, checked here; nothing is sent until it is used.
    ///
    /// # Errors
    ///
    /// `Misconfigured`, naming the setting, when the configuration is wrong.
    pub fn open(config: &RestConfig) -> Result<Self, ConnectorError> {
        let settings = config.settings().map_err(|message| ConnectorError::Misconfigured {
            message: format!("rest connector for {}: {message}", config.base_url),
        })?;
        let settings = Arc::new(settings);
        let http = Arc::new(Http::new(Arc::clone(&settings))?);
        Ok(Self {
            settings,
            http,
            written: HashMap::new(),
            unique_holders: Arc::default(),
            schema: Arc::default(),
            own: HashMap::new(),
        })
    }

    fn what(&self) -> String {
        shown(&self.settings.base_url)
    }

    /// Keeps what the first read of a record after this connector wrote it held, for
    /// `feed_past_own_writes`.
    fn note_read_back(&mut self, id: &RecordId, document: &Value) {
        if self.own.get(id) == Some(&Own::Unread)
            && let Some(marker) = self.own_marker(document)
        {
            self.own.insert(id.clone(), Own::Read(marker));
        }
    }

    /// The URL of one record.
    fn item_url(&self, id: &RecordId) -> Result<Url, ConnectorError> {
        url_for(&self.settings.item_url, "item_url", id)
    }

    /// The first page's URL of a listing, with the configured query, the page size and, for
    /// an incremental read, the instant.
    fn list_url(&self, since: Option<Timestamp>, extra: &[(&str, String)]) -> Url {
        let settings = &self.settings;
        let mut url = settings.base_url.clone();
        {
            let mut query = url.query_pairs_mut();
            for (name, value) in &settings.query {
                query.append_pair(name, value);
            }
            if let Some(name) = &settings.page_size_param {
                query.append_pair(name, &settings.page_size.to_string());
            }
            if let (Some(since), Some((param, format, zone))) = (since, &settings.since) {
                query.append_pair(param, &format_instant(since, *format, zone.as_ref()));
            }
            for (name, value) in extra {
                query.append_pair(name, value);
            }
        }
        url
    }

    /// The records of a listing's answer (its `body` as JSON), read at `paths`.
    fn records_of(
        &self,
        answer: &Answer,
        body: &Value,
        paths: &[FieldPath],
    ) -> Result<Vec<ConnectorRecord>, ConnectorError> {
        let items =
            if self.settings.items.is_empty() { Some(body) } else { body.pointer(&self.settings.items) };
        let Some(Value::Array(items)) = items else {
            return Err(ConnectorError::Malformed {
                what: answer.url.clone(),
                message: format!(
                    "the answer has no array of records at {:?}; it starts {:?}",
                    if self.settings.items.is_empty() { "the top" } else { self.settings.items.as_str() },
                    crate::http::excerpt(&answer.body)
                ),
            });
        };
        items.iter().map(|item| self.record_of(item, paths, &answer.url)).collect()
    }

    /// One record read at `paths`.
    fn record_of(
        &self,
        item: &Value,
        paths: &[FieldPath],
        url: &str,
    ) -> Result<ConnectorRecord, ConnectorError> {
        self.record_with_id(item, paths, url, None)
    }

    /// One record read at `paths`, its id at the `id` path or, where the record holds none
    /// there, `fallback` (the id a change feed's row names).
    fn record_with_id(
        &self,
        item: &Value,
        paths: &[FieldPath],
        url: &str,
        fallback: Option<&str>,
    ) -> Result<ConnectorRecord, ConnectorError> {
        let malformed = |message: String| ConnectorError::Malformed { what: url.to_string(), message };
        let id = match self.settings.id.get(item) {
            Value::String(text) if !text.is_empty() => text,
            Value::Number(number) => number.to_string(),
            Value::Null if fallback.is_some() => fallback.unwrap_or_default().to_string(),
            other => {
                return Err(malformed(format!(
                    "a record has no id at {} (found {other}): {}",
                    self.settings.id,
                    crate::http::excerpt(&item.to_string())
                )));
            }
        };
        let modified = match &self.settings.modified {
            None => None,
            Some((path, format, zone)) => match path.get(item) {
                Value::Null => None,
                value => Some(parse_instant(&value, *format, zone).ok_or_else(|| {
                    malformed(format!("record {id}: {value} at {path} is not a {format:?} time"))
                })?),
            },
        };
        let deleted =
            self.settings.soft_delete.as_ref().is_some_and(|(path, value)| path.get(item) == *value);
        Ok(ConnectorRecord {
            id: RecordId::new(id),
            values: paths.iter().map(|path| path.get(item)).collect(),
            modified,
            deleted,
        })
    }

    /// Reads one record; `None` when the API says there is none.
    async fn fetch(&self, id: &RecordId) -> Result<Option<Fetched>, ConnectorError> {
        let answer = self.http.send(Method::GET, self.item_url(id)?, None, None, Kind::Read).await?;
        match answer.status {
            status if status.is_success() => {
                let etag = answer.header("etag").map(str::to_string);
                Ok(Some(Fetched { record: answer.json()?, etag }))
            }
            StatusCode::NOT_FOUND | StatusCode::GONE => Ok(None),
            _ => Err(answer.error(&format!("reading record {id}"))),
        }
    }

    /// Every page of a listing, narrowed by `filter`'s query parameters, for look-ups.
    async fn read_all(
        &mut self,
        request: &ReadRequest,
        filter: &[(String, String)],
    ) -> Result<Vec<ConnectorRecord>, ConnectorError> {
        // A look-up needs no sequence: where the feed has a listing of its own, the listing alone.
        let listing = self.settings.feed.as_ref().is_none_or(|feed| feed.full == FullRead::Listing);
        let mut records = Vec::new();
        let mut token = None;
        loop {
            let page = if listing {
                self.list_page(request, token.as_ref(), filter).await?
            } else {
                self.page(request, token.as_ref(), filter).await?
            };
            records.extend(page.records);
            match page.next {
                Some(next) => token = Some(next),
                None => return Ok(records),
            }
        }
    }

    /// Applies one write.
    async fn apply_one(&self, write: &Write) -> Result<(WriteOutcome, Option<Fetched>), ConnectorError> {
        match write {
            Write::Update { id, fields } => self.update(id, fields).await,
            Write::Create { fields } => self.create(fields).await,
            Write::Delete { id } => match &self.settings.delete {
                Delete::None => Err(ConnectorError::Unsupported { kind: "rest", operation: "delete" }),
                Delete::Soft { path, value } => {
                    let field = FieldWrite { path: path.clone(), value: value.clone(), expected: None };
                    self.update(id, std::slice::from_ref(&field)).await
                }
                Delete::Http { query } => {
                    let mut url = url_for(&self.settings.delete_url, "delete_url", id)?;
                    for (name, value) in query {
                        url.query_pairs_mut().append_pair(name, value);
                    }
                    // A delete names the revision it deletes, read just before.
                    let mut if_match = None;
                    if let Some(revision) = &self.settings.revision {
                        let Some(current) = self.fetch(id).await? else {
                            return Err(ConnectorError::NotFound { id: id.clone() });
                        };
                        let held = self.revision_of(id, &current.record)?;
                        match revision.delete {
                            RevisionIn::IfMatch => if_match = Some(held),
                            RevisionIn::Query | RevisionIn::Body => {
                                url.query_pairs_mut().append_pair(&revision.param, &held);
                            }
                        }
                    }
                    let answer =
                        self.http.send(Method::DELETE, url, None, if_match.as_deref(), Kind::Write).await?;
                    match answer.status {
                        status if status.is_success() => Ok((WriteOutcome { id: id.clone() }, None)),
                        status if self.settings.stale.contains(&status) => {
                            Err(ConnectorError::TargetMoved { id: id.clone() })
                        }
                        StatusCode::NOT_FOUND | StatusCode::GONE => {
                            Err(ConnectorError::NotFound { id: id.clone() })
                        }
                        _ => Err(answer.error(&format!("deleting record {id}"))),
                    }
                }
            },
        }
    }

    async fn update(
        &self,
        id: &RecordId,
        fields: &[FieldWrite],
    ) -> Result<(WriteOutcome, Option<Fetched>), ConnectorError> {
        let paths = parse_paths(fields)?;
        // A field that would be written with what it held when read changes nothing.
        let changing: Vec<(&FieldPath, &FieldWrite)> = paths
            .iter()
            .zip(fields)
            .filter(|(_, field)| {
                !field.expected.as_ref().is_some_and(|expected| same(expected, &field.value))
            })
            .collect();
        if changing.is_empty() {
            return Ok((WriteOutcome { id: id.clone() }, None));
        }
        // An array is sent whole, so its other elements come from the record as it is now;
        // an `If-Match` needs the record's current ETag, and a version check its version.
        let needs_current = self.settings.etag
            || self.settings.version.is_some()
            || self.settings.revision.is_some()
            || self.settings.whole_document
            || changing.iter().any(|(path, _)| path.has_filter());
        let current = if needs_current {
            match self.fetch(id).await? {
                Some(current) => Some(current),
                None => return Err(ConnectorError::NotFound { id: id.clone() }),
            }
        } else {
            None
        };
        if let Some(current) = &current {
            // The engine's guard holds here too: a value that moved is not overwritten.
            for (path, field) in &changing {
                if let Some(expected) = &field.expected
                    && !same(&path.get(&current.record), expected)
                {
                    return Err(ConnectorError::TargetMoved { id: id.clone() });
                }
            }
            if changing.iter().all(|(path, field)| same(&path.get(&current.record), &field.value)) {
                return Ok((WriteOutcome { id: id.clone() }, Some(current.clone())));
            }
            if self.settings.etag && current.etag.is_none() {
                return Err(ConnectorError::Misconfigured {
                    message: format!(
                        "rest connector for {}: `etag` = true, but reading record {id} gave no ETag, so an \
                         update cannot be made conditional; set `etag` = false (the engine then reads each \
                         record again just before writing) or `version`",
                        self.what()
                    ),
                });
            }
        }
        let mut document = current.as_ref().map_or(Value::Null, |current| current.record.clone());
        let mut body = Value::Object(serde_json::Map::new());
        for (path, field) in &changing {
            if is_empty(&field.value) && path.has_filter() {
                // Never a `null` inside an array: the element goes.
                path.remove_element(&mut document);
                continue;
            }
            let value = self.empty_value(path, &field.value, false).await?.unwrap_or(Value::Null);
            path.set(&mut document, value).map_err(|message| ConnectorError::Rejected { message })?;
        }
        if self.settings.whole_document {
            // The whole document goes back, its untracked fields as they were read.
            body = document;
        } else {
            for (path, _) in &changing {
                path.unit()
                    .copy(&document, &mut body)
                    .map_err(|message| ConnectorError::Rejected { message })?;
            }
        }
        if let (Some(version), Some(current)) = (&self.settings.version, &current) {
            version.set(&mut body, version.get(&current.record)).map_err(|message| {
                ConnectorError::Misconfigured { message: format!("`version`: {message}") }
            })?;
        }
        let mut url = self.item_url(id)?;
        let mut if_match =
            current.as_ref().and_then(|current| current.etag.clone()).filter(|_| self.settings.etag);
        if let (Some(revision), Some(current)) = (&self.settings.revision, &current) {
            let held = self.revision_of(id, &current.record)?;
            match revision.update {
                RevisionIn::Body => revision.path.set(&mut body, Value::String(held)).map_err(|message| {
                    ConnectorError::Misconfigured { message: format!("`revision.path`: {message}") }
                })?,
                RevisionIn::Query => {
                    url.query_pairs_mut().append_pair(&revision.param, &held);
                }
                RevisionIn::IfMatch => if_match = Some(held),
            }
        }
        let method = self.settings.update.to_http();
        let answer = self.http.send(method, url, Some(&body), if_match.as_deref(), Kind::Write).await?;
        match answer.status {
            status if status.is_success() => {
                let body = serde_json::from_str::<Value>(&answer.body).unwrap_or(Value::Null);
                Ok((WriteOutcome { id: id.clone() }, self.response_record(&answer, body)))
            }
            status if self.settings.stale.contains(&status) => {
                Err(ConnectorError::TargetMoved { id: id.clone() })
            }
            StatusCode::NOT_FOUND | StatusCode::GONE => Err(ConnectorError::NotFound { id: id.clone() }),
            _ => Err(answer.error(&format!("updating record {id}"))),
        }
    }

    /// The revision `record` holds, as text.
    fn revision_of(&self, id: &RecordId, record: &Value) -> Result<String, ConnectorError> {
        let Some(revision) = &self.settings.revision else {
            return Err(ConnectorError::Misconfigured { message: "rest connector: no `revision`".into() });
        };
        let found = revision.path.get(record);
        text_of(&found).ok_or_else(|| ConnectorError::Malformed {
            what: self.what(),
            message: format!(
                "record {id} holds no revision at {} (found {found}), which a write must name",
                revision.path
            ),
        })
    }

    /// How `value` is written at `path`: itself when it is not empty, otherwise as `empty` or
    /// `empty_paths` say; `None` when it is left out (`omit`, on a create).
    async fn empty_value(
        &self,
        path: &FieldPath,
        value: &Value,
        creating: bool,
    ) -> Result<Option<Value>, ConnectorError> {
        if !is_empty(value) {
            return Ok(Some(value.clone()));
        }
        let empty = self.settings.empty_paths.get(path.as_str()).copied().unwrap_or(self.settings.empty);
        Ok(match empty {
            Empty::Null => Some(Value::Null),
            Empty::EmptyString => Some(Value::String(String::new())),
            Empty::Omit if creating => None,
            Empty::Omit => Some(Value::Null),
            Empty::Schema => {
                let schema = self.schema.get_or_try_init(|| self.read_schema()).await?;
                let name = path.first_member().unwrap_or_default();
                let text = schema.get(name).is_some_and(|kind| {
                    matches!(kind.as_str(), "string" | "email" | "url" | "slug" | "choice" | "regex")
                });
                Some(if text { Value::String(String::new()) } else { Value::Null })
            }
        })
    }

    /// Each writable field's type by name, from the collection's `OPTIONS` answer
    /// (`/actions/POST`, as Django REST Framework describes its serializers).
    async fn read_schema(&self) -> Result<HashMap<String, String>, ConnectorError> {
        let answer =
            self.http.send(Method::OPTIONS, self.settings.create_url.clone(), None, None, Kind::Read).await?;
        if !answer.status.is_success() {
            return Err(answer.error("reading the API's schema (`empty` = \"schema\")"));
        }
        let body = answer.json()?;
        let Some(Value::Object(fields)) =
            body.pointer("/actions/POST").or_else(|| body.pointer("/actions/PUT"))
        else {
            return Err(ConnectorError::Misconfigured {
                message: format!(
                    "rest connector for {}: `empty` = \"schema\", but the OPTIONS answer describes no fields at \
                     /actions/POST; set `empty` to \"null\", \"empty_string\" or \"omit\"",
                    self.what()
                ),
            });
        };
        Ok(fields
            .iter()
            .map(|(name, field)| {
                (name.clone(), field.get("type").and_then(Value::as_str).unwrap_or_default().to_string())
            })
            .collect())
    }

    async fn create(&self, fields: &[FieldWrite]) -> Result<(WriteOutcome, Option<Fetched>), ConnectorError> {
        let body = self.create_body(fields).await?;
        let answer = match self
            .http
            .send(Method::POST, self.settings.create_url.clone(), Some(&body), None, Kind::Create)
            .await
        {
            Ok(answer) if answer.status.is_success() => answer,
            Ok(answer) => return Err(self.made_anyway(fields, answer.error("creating a record")).await),
            Err(error) => return Err(self.made_anyway(fields, error).await),
        };
        let answered = serde_json::from_str::<Value>(&answer.body).unwrap_or(Value::Null);
        let id_in_answer = text_of(&self.settings.create_id.get(&answered));
        let fetched = self.response_record(&answer, answered);
        let id = id_in_answer
            .or_else(|| fetched.as_ref().and_then(|fetched| self.id_of(&fetched.record)))
            .or_else(|| {
                // Some APIs answer a create with only a `Location` header.
                answer.header("location").and_then(|location| {
                    location.trim_end_matches('/').rsplit('/').next().map(str::to_string)
                })
            })
            .ok_or_else(|| ConnectorError::Malformed {
                what: answer.url.clone(),
                message: format!(
                    "a create was answered without the new record's id at {}: {}",
                    self.settings.create_id,
                    crate::http::excerpt(&answer.body)
                ),
            })?;
        Ok((WriteOutcome { id: RecordId::new(id) }, fetched))
    }

    /// The body of a create: the defaults, each field's value (an empty one as the API expects
    /// it), and the templates filled in.
    pub(crate) async fn create_body(&self, fields: &[FieldWrite]) -> Result<Value, ConnectorError> {
        let paths = parse_paths(fields)?;
        let mut body = Value::Object(serde_json::Map::new());
        for (path, value) in &self.settings.create_defaults {
            path.set(&mut body, value.clone())
                .map_err(|message| ConnectorError::Misconfigured { message })?;
        }
        for (path, field) in paths.iter().zip(fields) {
            // An empty value in an array is no element at all.
            if is_empty(&field.value) && path.has_filter() {
                continue;
            }
            if let Some(value) = self.empty_value(path, &field.value, true).await? {
                path.set(&mut body, value).map_err(|message| ConnectorError::Rejected { message })?;
            }
        }
        for (target, template) in &self.settings.create_templates {
            let text = fill_template(template, &body);
            target
                .set(&mut body, Value::String(text))
                .map_err(|message| ConnectorError::Misconfigured { message })?;
        }
        Ok(body)
    }

    /// A record's id, as text.
    pub(crate) fn id_of(&self, record: &Value) -> Option<String> {
        text_of(&self.settings.id.get(record))
    }

    /// The error of a create that failed, unless the API made the record all the same (WordPress
    /// answers 400 or 500 for a post whose meta it could not store, after inserting the post;
    /// a timeout leaves a create unknown): looked up by its `create.unique` value, such a record
    /// is `AlreadyExists`, so that the engine plans it again from a fresh read — completing the
    /// record found by its key instead of making a duplicate, or leaving an orphan behind.
    pub(crate) async fn made_anyway(&self, fields: &[FieldWrite], error: ConnectorError) -> ConnectorError {
        let Some(unique) = &self.settings.create.unique else { return error };
        let value = match fields.iter().find(|field| &field.path == unique).map(|field| &field.value) {
            Some(Value::String(text)) => text.trim().to_string(),
            Some(Value::Number(number)) => number.to_string(),
            _ => return error,
        };
        let lookup = Lookup::Key { path: unique.clone(), values: vec![value] };
        let mut connector = self.shallow();
        match connector.lookup(std::slice::from_ref(unique), &lookup).await {
            Ok(found) => match found.into_iter().find(|record| !record.deleted) {
                Some(record) => {
                    tracing::warn!(id = %record.id, %error, "A failed create made its record; it will be completed.");
                    ConnectorError::AlreadyExists { id: record.id }
                }
                None => error,
            },
            Err(_) => error,
        }
    }

    /// The record a write's response holds, when it holds one.
    /// The record a write's `answer` holds, its parsed `body`, when the answer is the record.
    fn response_record(&self, answer: &Answer, body: Value) -> Option<Fetched> {
        // An answer that is not the record (CouchDB's `{"ok":true,"id":…,"rev":…}`, which holds
        // no id at the record's id path) verifies nothing: the record is read again.
        let record = Some(body).filter(|record| record.is_object() && self.id_of(record).is_some())?;
        Some(Fetched { record, etag: answer.header("etag").map(str::to_string) })
    }
}

/// Whether an answer refuses a page number as past the last page: WordPress's 400
/// `rest_post_invalid_page_number`, Django REST Framework's 404 "Invalid page.".
/// A listing's query parameters: `filter`'s, then the page's `position`.
fn with_filter<'a>(
    filter: &'a [(String, String)],
    position: Option<(&'a str, String)>,
) -> Vec<(&'a str, String)> {
    filter.iter().map(|(name, value)| (name.as_str(), value.clone())).chain(position).collect()
}

fn past_the_last_page(answer: &Answer) -> bool {
    matches!(answer.status, StatusCode::BAD_REQUEST | StatusCode::NOT_FOUND)
        && answer.body.to_ascii_lowercase().contains("page")
}

/// Parses field paths the engine hands over.
fn field_paths<'a>(texts: impl IntoIterator<Item = &'a str>) -> Result<Vec<FieldPath>, ConnectorError> {
    texts
        .into_iter()
        .map(|text| {
            FieldPath::parse(text).map_err(|problem| ConnectorError::Misconfigured {
                message: format!("rest connector: {problem}"),
            })
        })
        .collect()
}

/// A record's URL from a template of the setting named, `{id}` replaced by the escaped id.
fn url_for(template: &str, setting: &str, id: &RecordId) -> Result<Url, ConnectorError> {
    let text = template.replace("{id}", &url_escape(id.as_str()));
    Url::parse(&text).map_err(|error| ConnectorError::Misconfigured {
        message: format!("rest connector: `{setting}` gives {text:?} for record {id}, not a URL: {error}"),
    })
}

/// An id or a sequence as text: a string that is not empty, or a number.
fn text_of(value: &Value) -> Option<String> {
    match value {
        Value::String(text) if !text.is_empty() => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

/// The value at a JSON pointer of a setting, `""` being the whole value.
fn at<'v>(value: &'v Value, pointer: &str) -> Option<&'v Value> {
    if pointer.is_empty() { Some(value) } else { value.pointer(pointer) }
}

/// Whether a value is empty: `null` or `""`, which fieldsync holds for the same.
fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(text) => text.is_empty(),
        _ => false,
    }
}

/// Parses the paths of some writes.
fn parse_paths(fields: &[FieldWrite]) -> Result<Vec<FieldPath>, ConnectorError> {
    field_paths(fields.iter().map(|field| field.path.as_str()))
}

/// Whether two raw values are the same, a number and its text alike.
fn same(held: &Value, wanted: &Value) -> bool {
    let text = |value: &Value| match value {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    held == wanted || (!held.is_object() && !held.is_array() && text(held) == text(wanted))
}

/// Replaces each `{PATH}` of a template by the text at that path of `record`.
fn fill_template(template: &str, record: &Value) -> String {
    let mut filled = String::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        filled.push_str(&rest[..start]);
        let Some(end) = rest[start..].find('}') else {
            filled.push_str(&rest[start..]);
            return filled;
        };
        let path = &rest[start + 1..start + end];
        match FieldPath::parse(path).map(|path| path.get(record)) {
            Ok(Value::String(text)) => filled.push_str(&text),
            Ok(Value::Null) | Err(_) => {}
            Ok(other) => filled.push_str(&other.to_string()),
        }
        rest = &rest[start + end + 1..];
    }
    filled.push_str(rest);
    filled.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Percent-encodes an id for a URL path.
fn url_escape(id: &str) -> String {
    let mut escaped = String::with_capacity(id.len());
    for byte in id.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            escaped.push(char::from(byte));
        } else {
            escaped.push_str(&format!("%{byte:02X}"));
        }
    }
    escaped
}

/// Reads an instant as `format` writes it; a text time without an offset is in `zone`.
fn parse_instant(value: &Value, format: TimeFormat, zone: &jiff::tz::TimeZone) -> Option<Timestamp> {
    let number = || match value {
        Value::Number(number) => number.as_i64(),
        Value::String(text) => text.trim().parse().ok(),
        _ => None,
    };
    match format {
        TimeFormat::Unix => Timestamp::from_second(number()?).ok(),
        TimeFormat::UnixMs => Timestamp::from_millisecond(number()?).ok(),
        TimeFormat::Text => {
            let text = value.as_str()?.trim();
            if let Ok(instant) = text.parse::<Timestamp>() {
                return Some(instant);
            }
            let civil: jiff::civil::DateTime = text.replacen(' ', "T", 1).parse().ok()?;
            civil.to_zoned(zone.clone()).ok().map(|zoned| zoned.timestamp())
        }
    }
}

/// Writes an instant for a query parameter: RFC 3339 in UTC, or a local time in `zone`.
fn format_instant(instant: Timestamp, format: TimeFormat, zone: Option<&jiff::tz::TimeZone>) -> String {
    match format {
        TimeFormat::Unix => instant.as_second().to_string(),
        TimeFormat::UnixMs => instant.as_millisecond().to_string(),
        TimeFormat::Text => match zone {
            Some(zone) => instant.to_zoned(zone.clone()).strftime("%Y-%m-%dT%H:%M:%S").to_string(),
            None => instant.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        },
    }
}

/// The URL of the `rel="next"` link of an RFC 8288 `Link` header.
fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|link| {
        let (target, params) = link.split_once(';')?;
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        let next = params.split(';').any(|param| {
            let Some((name, value)) = param.split_once('=') else { return false };
            name.trim().eq_ignore_ascii_case("rel")
                && value
                    .trim()
                    .trim_matches('"')
                    .split_whitespace()
                    .any(|rel| rel.eq_ignore_ascii_case("next"))
        });
        next.then(|| target.to_string())
    })
}

impl Connector for RestConnector {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            incremental: self.settings.since.is_some(),
            lookup_by_key: true,
            // An ETag (checked to be sent), a version or a revision the API checks: the API
            // refuses a stale update atomically.
            conditional_writes: self.settings.etag
                || self.settings.version.is_some()
                || self.settings.revision.is_some(),
            create: true,
            delete: !matches!(self.settings.delete, Delete::None),
            sequences: self.settings.feed.is_some(),
        }
    }

    async fn check(&mut self, paths: &[String]) -> Result<Probe, ConnectorError> {
        let paths = field_paths(paths.iter().map(String::as_str))?;
        if let Some(feed) = self.settings.feed.clone() {
            // The feed answers as configured: rows, their documents and ids, a sequence.
            let start = match feed.full {
                FullRead::Feed => feed.start.clone(),
                FullRead::Listing => Some(self.current_sequence(&feed).await?),
            };
            self.feed_page(&feed, &paths, start, &[]).await?;
            if feed.full == FullRead::Feed {
                return Ok(Probe {
                    kind: "rest",
                    target: self.what(),
                    records: None,
                    capabilities: self.capabilities(),
                });
            }
        }
        let answer = self.http.send(Method::GET, self.list_url(None, &[]), None, None, Kind::Read).await?;
        if !answer.status.is_success() {
            return Err(answer.error("listing records"));
        }
        let body = answer.json()?;
        let listed = self.records_of(&answer, &body, &paths)?;
        // A conditional write claimed through ETags must be one: the API must send them.
        if self.settings.etag
            && let Some(record) = listed.first()
        {
            let fetched = self.fetch(&record.id).await?;
            if fetched.is_some_and(|fetched| fetched.etag.is_none()) {
                return Err(ConnectorError::Misconfigured {
                    message: format!(
                        "rest connector for {}: `etag` = true, but reading record {} gave no ETag header; set \
                         `etag` = false (the engine then reads each record again just before writing) or \
                         `version`",
                        self.what(),
                        record.id
                    ),
                });
            }
        }
        let records = ["X-WP-Total", "X-Total-Count"]
            .iter()
            .find_map(|name| answer.header(name).and_then(|total| total.trim().parse().ok()))
            .or_else(|| body.get("count").and_then(Value::as_u64));
        Ok(Probe { kind: "rest", target: self.what(), records, capabilities: self.capabilities() })
    }

    async fn read_page(
        &mut self,
        request: &ReadRequest,
        token: Option<&PageToken>,
    ) -> Result<Page, ConnectorError> {
        if token.is_none() {
            // A new listing: a new run, whose creates read the unique values afresh.
            *self.unique_holders.lock().unwrap_or_else(PoisonError::into_inner) = None;
        }
        self.page(request, token, &[]).await
    }

    async fn lookup(
        &mut self,
        paths: &[String],
        lookup: &Lookup,
    ) -> Result<Vec<ConnectorRecord>, ConnectorError> {
        let parsed = field_paths(paths.iter().map(String::as_str))?;
        match lookup {
            Lookup::Ids(ids) => {
                let mut found = Vec::new();
                let mut wanted = Vec::new();
                for id in ids {
                    // A write's response answers its verification, when so configured.
                    match self.written.remove(id) {
                        Some(fetched) if self.settings.verify == Verify::Response => {
                            self.note_read_back(id, &fetched.record);
                            found.push(self.record_of(&fetched.record, &parsed, &self.what())?);
                        }
                        _ => wanted.push(id.clone()),
                    }
                }
                let mut tasks = tokio::task::JoinSet::new();
                for id in wanted {
                    let connector = self.shallow();
                    tasks.spawn(async move { connector.fetch(&id).await });
                }
                while let Some(result) = tasks.join_next().await {
                    let fetched = result.map_err(|error| ConnectorError::Unavailable {
                        what: self.what(),
                        message: format!("a read stopped: {error}"),
                        retry_after: None,
                    })??;
                    if let Some(fetched) = fetched {
                        let record = self.record_of(&fetched.record, &parsed, &self.what())?;
                        self.note_read_back(&record.id, &fetched.record);
                        found.push(record);
                    }
                }
                Ok(found)
            }
            Lookup::Key { path, values } => {
                let mut all_paths = paths.to_vec();
                all_paths.push(path.clone());
                // The parameter finds records by its own field; a look-up at another path reads
                // the listing.
                let asked = FieldPath::parse(path).ok();
                let key = self
                    .settings
                    .key_param
                    .clone()
                    .filter(|key| asked.as_ref().is_some_and(|asked| key.finds(asked)));
                let request = ReadRequest { paths: all_paths, since: None };
                let candidates = match key {
                    Some(key) => self.find_by_key(&key, &request, values).await?,
                    None => self.read_all(&request, &[]).await?,
                };
                // A record answered twice (by two requests, or on two pages of a listing that
                // moved) is one record.
                let wanted: HashSet<&str> = values.iter().map(String::as_str).collect();
                let mut seen = HashSet::new();
                Ok(candidates
                    .into_iter()
                    .filter_map(|mut record| {
                        let held = record.values.pop()?;
                        let text = match &held {
                            Value::String(text) => text.trim().to_string(),
                            Value::Number(number) => number.to_string(),
                            _ => return None,
                        };
                        (wanted.contains(text.as_str()) && seen.insert(record.id.clone())).then_some(record)
                    })
                    .collect())
            }
        }
    }

    async fn apply(&mut self, writes: &[Write]) -> Result<WriteResults, ConnectorError> {
        self.written.clear();
        let taken = self.taken_by_creates(writes).await?;
        let mut results: Vec<Option<Result<WriteOutcome, ConnectorError>>> =
            (0..writes.len()).map(|_| None).collect();
        let mut tasks = tokio::task::JoinSet::new();
        let mut batched = Vec::new();
        for (index, write) in writes.iter().enumerate() {
            if let Some(id) = taken.get(&index) {
                results[index] = Some(Err(ConnectorError::AlreadyExists { id: id.clone() }));
                continue;
            }
            if self.settings.batch.is_some() && matches!(write, Write::Create { .. }) {
                batched.push((index, write.clone()));
                continue;
            }
            let connector = self.shallow();
            let write = write.clone();
            tasks.spawn(async move { vec![(index, connector.apply_one(&write).await)] });
        }
        self.spawn_batches(&mut tasks, batched);
        let mut answered = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            answered.extend(joined.map_err(|error| ConnectorError::Unavailable {
                what: self.what(),
                message: format!("a write stopped: {error}"),
                retry_after: None,
            })?);
        }
        for (index, result) in answered {
            if let Ok((outcome, _)) = &result {
                self.note_unique_holder(&writes[index], &outcome.id);
                // Only a feed lists writes back; without one, nothing is kept of them.
                if self.settings.feed.is_some() {
                    let own = if matches!(writes[index], Write::Delete { .. }) {
                        Own::Deleted
                    } else {
                        Own::Unread
                    };
                    self.own.insert(outcome.id.clone(), own);
                }
            }
            results[index] = Some(result.map(|(outcome, fetched)| {
                if let Some(fetched) = fetched {
                    self.written.insert(outcome.id.clone(), fetched);
                }
                outcome
            }));
        }
        Ok(results
            .into_iter()
            .map(|result| {
                result.unwrap_or_else(|| {
                    Err(ConnectorError::Unavailable {
                        what: "a write".into(),
                        message: "no answer".into(),
                        retry_after: None,
                    })
                })
            })
            .collect())
    }

    async fn feed_past_own_writes(
        &mut self,
        since: &Sequence,
        mine: &HashSet<RecordId>,
    ) -> Result<Option<Sequence>, ConnectorError> {
        self.past_own_writes(since, mine).await
    }
}

impl RestConnector {
    /// One page of a listing (`Connector::read_page` without its side effects on the caches),
    /// narrowed by `filter`'s query parameters.
    async fn list_page(
        &mut self,
        request: &ReadRequest,
        token: Option<&PageToken>,
        filter: &[(String, String)],
    ) -> Result<Page, ConnectorError> {
        self.written.clear();
        let settings = Arc::clone(&self.settings);
        let since = request.since_time().filter(|_| settings.since.is_some());
        let paths = field_paths(request.paths.iter().map(String::as_str))?;
        if settings.order == Order::Modified {
            return self.read_changes(request, token, &paths, filter).await;
        }
        let token = token.map(|token| token.0.as_str());
        let with_filter = |position| with_filter(filter, position);
        let url = match (&settings.paging, token) {
            (Paging::Page { param, .. }, page) => {
                self.list_url(since, &with_filter(Some((param, page.unwrap_or("1").to_string()))))
            }
            (Paging::Offset { param }, offset) => {
                self.list_url(since, &with_filter(Some((param, offset.unwrap_or("0").to_string()))))
            }
            (Paging::Cursor { param, .. }, Some(cursor)) => {
                self.list_url(since, &with_filter(Some((param, cursor.to_string()))))
            }
            (Paging::Link | Paging::NextUrl { .. }, Some(next)) => {
                Url::parse(next).map_err(|error| ConnectorError::Malformed {
                    what: self.what(),
                    message: format!("the next page's URL {next:?} is not a URL: {error}"),
                })?
            }
            (Paging::Cursor { .. } | Paging::Link | Paging::NextUrl { .. }, None) => {
                self.list_url(since, &with_filter(None))
            }
        };
        let answer = self.http.send(Method::GET, url, None, None, Kind::Read).await?;
        if !answer.status.is_success() {
            // A page past the last is refused by some APIs when the last one was full.
            if let (Paging::Page { .. }, Some(page)) = (&settings.paging, token)
                && page != "1"
                && past_the_last_page(&answer)
            {
                return Ok(Page::default());
            }
            return Err(answer.error("listing records"));
        }
        let body = answer.json()?;
        let records = self.records_of(&answer, &body, &paths)?;
        let full = records.len() >= settings.page_size;
        let next = match &settings.paging {
            Paging::Page { total_pages_header, .. } => {
                let page: u64 = token.and_then(|page| page.parse().ok()).unwrap_or(1);
                let total = total_pages_header
                    .as_deref()
                    .and_then(|name| answer.header(name))
                    .and_then(|total| total.trim().parse::<u64>().ok());
                let more = match total {
                    Some(total) => page < total && !records.is_empty(),
                    None => full,
                };
                more.then(|| (page + 1).to_string())
            }
            Paging::Offset { .. } => {
                let offset: usize = token.and_then(|offset| offset.parse().ok()).unwrap_or(0);
                full.then(|| (offset + records.len()).to_string())
            }
            Paging::Link => answer.header("link").and_then(next_link),
            Paging::NextUrl { pointer } => match body.pointer(pointer) {
                Some(Value::String(next)) if !next.is_empty() => Some(next.clone()),
                _ => None,
            },
            Paging::Cursor { pointer, .. } => match body.pointer(pointer) {
                Some(Value::String(cursor)) if !cursor.is_empty() && !records.is_empty() => {
                    Some(cursor.clone())
                }
                Some(Value::Number(cursor)) if !records.is_empty() => Some(cursor.to_string()),
                _ => None,
            },
        };
        Ok(Page::new(records, next.map(PageToken)))
    }
}

impl RestConnector {
    /// The records holding any of `values` at the key parameter's field (and perhaps others:
    /// the caller compares), `max` values a request, as many requests at once as the
    /// connector's concurrency allows (its semaphore): one value after another, a thousand
    /// new members would cost a thousand round trips in a row. A value holding the join's
    /// separator cannot share a parameter, nor be asked alone (the API would split it): those
    /// are found by reading the listing.
    async fn find_by_key(
        &mut self,
        key: &KeyLookup,
        request: &ReadRequest,
        values: &[String],
    ) -> Result<Vec<ConnectorRecord>, ConnectorError> {
        let (split, joinable): (Vec<&String>, Vec<&String>) = values.iter().partition(
            |value| matches!(&key.join, Some(Join::Text(separator)) if value.contains(separator.as_str())),
        );
        let mut tasks = tokio::task::JoinSet::new();
        for chunk in joinable.chunks(key.max) {
            let filter: Vec<(String, String)> = match &key.join {
                Some(Join::Text(separator)) => vec![(
                    key.name.clone(),
                    chunk.iter().map(|value| value.as_str()).collect::<Vec<_>>().join(separator),
                )],
                Some(Join::Repeat) | None => {
                    chunk.iter().map(|value| (key.name.clone(), (*value).clone())).collect()
                }
            };
            let mut connector = self.shallow();
            let request = request.clone();
            tasks.spawn(async move { connector.read_all(&request, &filter).await });
        }
        let mut records = if split.is_empty() { Vec::new() } else { self.read_all(request, &[]).await? };
        while let Some(result) = tasks.join_next().await {
            records.extend(result.map_err(|error| ConnectorError::Unavailable {
                what: self.what(),
                message: format!("a look-up stopped: {error}"),
                retry_after: None,
            })??);
        }
        Ok(records)
    }

    /// Tells the unique values read this run of a write that landed: a create holds its
    /// value now, a deleted record none.
    fn note_unique_holder(&self, write: &Write, id: &RecordId) {
        let Some(unique) = &self.settings.create.unique else { return };
        let mut holders = self.unique_holders.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(holders) = holders.as_mut() else { return };
        match write {
            Write::Create { fields } => {
                let value = fields.iter().find(|field| &field.path == unique).map(|field| &field.value);
                if let Some(Value::String(text)) = value {
                    holders.insert(text.trim().to_string(), id.clone());
                } else if let Some(Value::Number(number)) = value {
                    holders.insert(number.to_string(), id.clone());
                }
            }
            Write::Delete { .. } => holders.retain(|_, holder| holder != id),
            Write::Update { .. } => {}
        }
    }

    /// The creates among `writes` whose `create.unique` value a record holds already, with
    /// that record's id: one look-up for the whole batch.
    async fn taken_by_creates(
        &mut self,
        writes: &[Write],
    ) -> Result<HashMap<usize, RecordId>, ConnectorError> {
        let Some(unique) = self.settings.create.unique.clone() else { return Ok(HashMap::new()) };
        let text = |value: &Value| match value {
            Value::String(text) => Some(text.trim().to_string()),
            Value::Number(number) => Some(number.to_string()),
            _ => None,
        };
        let wanted: Vec<(usize, String)> = writes
            .iter()
            .enumerate()
            .filter_map(|(index, write)| match write {
                Write::Create { fields } => fields
                    .iter()
                    .find(|field| field.path == unique)
                    .and_then(|field| text(&field.value))
                    .map(|value| (index, value)),
                _ => None,
            })
            .collect();
        if wanted.is_empty() {
            return Ok(HashMap::new());
        }
        let by_key_param = FieldPath::parse(&unique)
            .is_ok_and(|path| self.settings.key_param.as_ref().is_some_and(|key| key.finds(&path)));
        let holders: HashMap<String, RecordId> = if by_key_param {
            let values = wanted.iter().map(|(_, value)| value.clone()).collect();
            let found = self
                .lookup(std::slice::from_ref(&unique), &Lookup::Key { path: unique.clone(), values })
                .await?;
            found
                .into_iter()
                .filter(|record| !record.deleted)
                .filter_map(|record| Some((text(record.values.first()?)?, record.id)))
                .collect()
        } else {
            // Without a key parameter only the whole listing tells: read it once per run.
            let known = self.unique_holders.lock().unwrap_or_else(PoisonError::into_inner).clone();
            match known {
                Some(known) => known,
                None => {
                    let request = ReadRequest { paths: vec![unique.clone()], since: None };
                    let known: HashMap<String, RecordId> = self
                        .read_all(&request, &[])
                        .await?
                        .into_iter()
                        .filter(|record| !record.deleted)
                        .filter_map(|record| Some((text(record.values.first()?)?, record.id)))
                        .collect();
                    *self.unique_holders.lock().unwrap_or_else(PoisonError::into_inner) = Some(known.clone());
                    known
                }
            }
        };
        Ok(wanted
            .into_iter()
            .filter_map(|(index, value)| Some((index, holders.get(&value)?.clone())))
            .collect())
    }
}

/// The most ids a listing in modification order asks the API to leave out (`exclude_param`);
/// past it, pages within one time go by number.
const MAX_EXCLUDED: usize = 500;

/// Where a listing in modification order goes on: the records changed since `since`
/// (milliseconds), page `page` of them, leaving out the ones `seen` at exactly that time.
#[derive(Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Resume {
    since: Option<i64>,
    page: u64,
    seen: Vec<String>,
}

impl RestConnector {
    /// One page of a listing in modification order, oldest first. Each page after the first
    /// asks for the records changed since the newest one seen (one second earlier, for APIs
    /// that keep whole seconds or list only what changed strictly after), and leaves out what
    /// it listed already. A record changed meanwhile moves to the end of the listing, where
    /// it is still found, and no other record moves past the point reached; paging by number
    /// would skip the record that moved up into a page already read. Only when a whole page
    /// shares one time does the listing page by number within that time.
    async fn read_changes(
        &mut self,
        request: &ReadRequest,
        token: Option<&PageToken>,
        paths: &[FieldPath],
        filter: &[(String, String)],
    ) -> Result<Page, ConnectorError> {
        let settings = Arc::clone(&self.settings);
        let resume = match token {
            None => Resume {
                since: request.since_time().map(Timestamp::as_millisecond),
                page: 1,
                seen: Vec::new(),
            },
            Some(token) => serde_json::from_str(&token.0).map_err(|error| ConnectorError::Malformed {
                what: self.what(),
                message: format!("a page token of this connector cannot be read: {error}"),
            })?,
        };
        let since = resume.since.and_then(|millis| Timestamp::from_millisecond(millis).ok());
        let asked = since.map(|since| since - jiff::SignedDuration::from_secs(1));
        let page = resume.page.max(1);
        let position = match &settings.paging {
            Paging::Offset { param } => {
                (param.as_str(), ((page - 1) * settings.page_size as u64).to_string())
            }
            Paging::Page { param, .. } => (param.as_str(), page.to_string()),
            Paging::Link | Paging::NextUrl { .. } | Paging::Cursor { .. } => {
                unreachable!(
                    "checked with the settings: a listing in modification order pages by number or offset"
                )
            }
        };
        let mut extra = with_filter(filter, Some(position));
        // Records already listed at `since` are left out by the API itself where it can: its
        // order among records of one time may change from page to page (WordPress orders by
        // the modified time alone), so page numbers within one time can skip some.
        if let Some(param) = &settings.exclude_param
            && !resume.seen.is_empty()
        {
            let excluded = &resume.seen[..resume.seen.len().min(MAX_EXCLUDED)];
            extra.push((param.as_str(), excluded.join(",")));
        }
        let answer =
            self.http.send(Method::GET, self.list_url(asked, &extra), None, None, Kind::Read).await?;
        if !answer.status.is_success() {
            if page > 1 && past_the_last_page(&answer) {
                return Ok(Page::default());
            }
            return Err(answer.error("listing records"));
        }
        let records = self.records_of(&answer, &answer.json()?, paths)?;
        if let Some(pair) = records.windows(2).find(|pair| match (pair[0].modified, pair[1].modified) {
            (Some(earlier), Some(later)) => later < earlier,
            _ => false,
        }) {
            return Err(ConnectorError::Misconfigured {
                message: format!(
                    "rest connector for {}: `order` = \"modified\", but record {} comes after record {}, which \
                     changed later; make the configured `query` list the oldest change first",
                    self.what(),
                    pair[1].id,
                    pair[0].id
                ),
            });
        }
        let full = records.len() >= settings.page_size;
        let newest = records.iter().filter_map(|record| record.modified).max();
        let at = |time: Timestamp| -> Vec<String> {
            records
                .iter()
                .filter(|record| record.modified == Some(time))
                .map(|record| record.id.to_string())
                .collect()
        };
        let next = full.then(|| match (newest, since) {
            (Some(newest), Some(since)) if newest <= since => {
                let mut seen = resume.seen.clone();
                let before = seen.len();
                for id in at(since) {
                    if !seen.contains(&id) {
                        seen.push(id);
                    }
                }
                // While the API leaves out every record seen, the next page is its first.
                let excluding =
                    settings.exclude_param.is_some() && seen.len() > before && seen.len() <= MAX_EXCLUDED;
                Resume {
                    since: Some(since.as_millisecond()),
                    page: if excluding { 1 } else { page + 1 },
                    seen,
                }
            }
            (Some(newest), _) => Resume { since: Some(newest.as_millisecond()), page: 1, seen: at(newest) },
            (None, _) => Resume { since: resume.since, page: page + 1, seen: resume.seen.clone() },
        });
        let records = records
            .into_iter()
            // Asked a second early: what changed before `since` was not asked for, or was
            // listed by an earlier page.
            .filter(|record| match (record.modified, since) {
                (Some(modified), Some(since)) => {
                    modified > since
                        || (modified == since && !resume.seen.iter().any(|seen| seen == record.id.as_str()))
                }
                _ => true,
            })
            .collect();
        let next = next.map(|next| PageToken(serde_json::to_string(&next).unwrap_or_default()));
        Ok(Page::new(records, next))
    }

    /// A copy sharing the settings and the sender, for a task of its own; it keeps no
    /// written records.
    pub(crate) fn shallow(&self) -> RestConnector {
        RestConnector {
            settings: Arc::clone(&self.settings),
            http: Arc::clone(&self.http),
            written: HashMap::new(),
            unique_holders: Arc::clone(&self.unique_holders),
            schema: Arc::clone(&self.schema),
            own: HashMap::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn next_links_are_found_among_others() {
        let header = r#"<https://api.example/v1/contacts?page=3>; rel="last", <https://api.example/v1/contacts?page=2>; rel="next""#;
        assert_eq!(next_link(header).as_deref(), Some("https://api.example/v1/contacts?page=2"));
        assert_eq!(next_link(r#"<https://api.example/x?page=1>; rel="prev""#), None);
    }

    #[test]
    fn instants_are_read_with_or_without_an_offset() {
        let utc = jiff::tz::TimeZone::UTC;
        let amsterdam = jiff::tz::TimeZone::get("Europe/Amsterdam").unwrap();
        let expected: Timestamp = "2026-01-01T10:00:00Z".parse().unwrap();
        assert_eq!(
            parse_instant(&json!("2026-01-01T10:00:00Z"), TimeFormat::Text, &amsterdam),
            Some(expected)
        );
        assert_eq!(parse_instant(&json!("2026-01-01T10:00:00"), TimeFormat::Text, &utc), Some(expected));
        assert_eq!(
            parse_instant(&json!("2026-01-01 11:00:00"), TimeFormat::Text, &amsterdam),
            Some(expected)
        );
        assert_eq!(parse_instant(&json!(1_767_261_600), TimeFormat::Unix, &utc), Some(expected));
        assert_eq!(parse_instant(&json!("1767261600000"), TimeFormat::UnixMs, &utc), Some(expected));
        assert_eq!(parse_instant(&json!("yesterday"), TimeFormat::Text, &utc), None);
        assert_eq!(format_instant(expected, TimeFormat::Text, None), "2026-01-01T10:00:00Z");
        assert_eq!(format_instant(expected, TimeFormat::Text, Some(&amsterdam)), "2026-01-01T11:00:00");
        assert_eq!(format_instant(expected, TimeFormat::Unix, None), "1767261600");
    }

    #[test]
    fn templates_fill_in_values_and_skip_missing_ones() {
        let record = json!({"meta": {"first_name": "Ann", "last_name": "Smith", "number": 7}});
        assert_eq!(fill_template("{/meta/first_name} {/meta/last_name}", &record), "Ann Smith");
        assert_eq!(
            fill_template("{/meta/first_name} {/meta/middle} {/meta/last_name} #{/meta/number}", &record),
            "Ann Smith #7"
        );
    }

    #[test]
    fn ids_are_escaped_in_urls_and_values_compare_as_text() {
        assert_eq!(url_escape("a b/c"), "a%20b%2Fc");
        assert!(same(&json!(7), &json!("7")));
        assert!(same(&Value::Null, &json!("")));
        assert!(!same(&json!([1]), &json!("[1]")));
    }
}
