//! `CouchConnector`: the documents of one kind in a CouchDB database, read by `_all_docs` (a
//! full read) or `_changes` (from a sequence), looked up by `_bulk_get` (or `_all_docs` keys) or
//! `_find`, and written whole through `_bulk_docs` with their `_rev`.

use std::collections::{BTreeMap, HashMap, HashSet};

use fieldsync_connector::{
    Capabilities, Connector, ConnectorError, ConnectorRecord, FieldWrite, Lookup, Page, PageToken, Probe,
    ReadRequest, Sequence, Write, WriteOutcome, WriteResults,
};
use fieldsync_connector_rest::Auth;
use fieldsync_model::RecordId;
use reqwest::{Method, StatusCode, Url};
use serde_json::{Map, Value as Json, json};

use crate::config::{CouchConfig, Piece, Settings};
use crate::http::{Answer, Http, Kind, shown};
use crate::pointer::Pointer;

/// The most values one `_find` look-up carries.
const FIND_VALUES: usize = 200;

/// The connector; see the module's documentation.
#[derive(Debug)]
pub struct CouchConnector {
    settings: Settings,
    http: Http,
    /// The database's URL for messages: no user info.
    shown: String,
    /// The documents the last `apply` wrote, with the revisions the server gave them: the
    /// engine's read-back of those writes, answered without asking the server again (it keeps
    /// a document as sent). The next call of any other kind empties it.
    written: HashMap<String, Json>,
    /// The revision of each document's latest write through this connector (a delete's
    /// tombstone too), for `feed_past_own_writes`.
    own: HashMap<String, String>,
    /// How many revisions this connector's writes saved since it was opened (a document
    /// written twice counts twice).
    saved: u64,
    /// The documents the engine's look-ups read, with their `_rev`, until a write starts from
    /// one (at most `KEPT_READS`): an update is made into the document as the run read it, and
    /// CouchDB refuses it (target moved) if anyone saved a newer revision since, so the server
    /// need not be asked for it again right before the write.
    read: HashMap<String, Json>,
    /// Whether the server answers `_bulk_get`; until it refuses one, it is taken to.
    bulk_get: bool,
}

/// How many documents read by look-ups a connector keeps for the writes that follow.
const KEPT_READS: usize = 10_000;

/// Where a listing goes on, as its page token holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    /// A full read: the update sequence taken before it began, and the id its next page starts
    /// at.
    All { sequence: String, start: String },
    /// A read of the changes feed after this sequence.
    Changes { since: String },
}

impl Token {
    fn encode(&self) -> PageToken {
        let json = match self {
            Token::All { sequence, start } => json!({ "all": sequence, "start": start }),
            Token::Changes { since } => json!({ "changes": since }),
        };
        PageToken(json.to_string())
    }

    fn decode(token: &PageToken) -> Result<Token, ConnectorError> {
        let json: Json = serde_json::from_str(&token.0).unwrap_or(Json::Null);
        let text = |key: &str| json[key].as_str().map(str::to_string);
        match (text("all"), text("start"), text("changes")) {
            (Some(sequence), Some(start), None) => Ok(Token::All { sequence, start }),
            (None, None, Some(since)) => Ok(Token::Changes { since }),
            _ => Err(ConnectorError::Malformed {
                what: "a page token".into(),
                message: format!("{:?} is not a token of the couchdb connector", token.0),
            }),
        }
    }
}

/// What a write becomes before it is sent.
enum Prepared {
    /// Answered without sending anything.
    Done(Result<WriteOutcome, ConnectorError>),
    /// A document to send through `_bulk_docs`.
    Send { id: String, create: bool, document: Json },
}

impl CouchConnector {
    /// Opens the connector on `config`; nothing is sent until its first call.
    ///
    /// # Errors
    ///
    /// `Misconfigured` when a setting is wrong or the HTTP client cannot be built.
    pub fn open(config: &CouchConfig) -> Result<Self, ConnectorError> {
        let settings = config.settings().map_err(|error| ConnectorError::Misconfigured {
            message: format!("couchdb connector: {error}"),
        })?;
        let http = Http::new(settings.auth.clone(), settings.timeout)?;
        let shown = format!("{}{}", shown(&settings.server), settings.database);
        Ok(Self {
            settings,
            http,
            shown,
            written: HashMap::new(),
            own: HashMap::new(),
            saved: 0,
            read: HashMap::new(),
            bulk_get: true,
        })
    }

    /// The URL of `segments` below the database.
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.settings.server.clone();
        {
            let mut path = url.path_segments_mut().expect("an http URL has a path");
            path.pop_if_empty().push(&self.settings.database);
            path.extend(segments);
        }
        url
    }

    /// Whether a document is one of this connector's: not a design or local document, and
    /// matching the selector and type.
    fn keeps(&self, document: &Json) -> bool {
        let id = document["_id"].as_str().unwrap_or_default();
        !id.starts_with("_design/")
            && !id.starts_with("_local/")
            && self.settings.filter.as_ref().is_none_or(|filter| filter.matches(document))
    }

    /// Whether a document is soft-deleted.
    fn soft_deleted(&self, document: &Json) -> bool {
        self.settings.deleted.as_ref().is_some_and(|deleted| truthy_scalar(&deleted.get(document)))
    }

    fn record(&self, document: &Json, paths: &[Pointer]) -> ConnectorRecord {
        ConnectorRecord {
            id: RecordId::new(document["_id"].as_str().unwrap_or_default()),
            values: paths.iter().map(|path| path.get(document)).collect(),
            modified: None,
            deleted: self.soft_deleted(document),
        }
    }

    /// Sends a read and returns its JSON when the status is 200.
    async fn read_json(
        &self,
        method: Method,
        url: Url,
        body: Option<&Json>,
        doing: &str,
    ) -> Result<Json, ConnectorError> {
        let answer = self.http.send(method, url, body, Kind::Read).await?;
        if answer.status != StatusCode::OK {
            return Err(self.answer_error(&answer, doing));
        }
        answer.json()
    }

    /// The error of an unexpected answer; a missing database is named as such.
    fn answer_error(&self, answer: &Answer, doing: &str) -> ConnectorError {
        self.missing_database(answer).unwrap_or_else(|| answer.error(doing))
    }

    /// The error to give when `answer` says the database does not exist.
    fn missing_database(&self, answer: &Answer) -> Option<ConnectorError> {
        if answer.status != StatusCode::NOT_FOUND || !answer.body.contains("not_found") {
            return None;
        }
        let body: Json = serde_json::from_str(&answer.body).unwrap_or(Json::Null);
        let reason = body["reason"].as_str().unwrap_or_default();
        matches!(reason, "no_db_file" | "Database does not exist.").then(|| ConnectorError::Misconfigured {
            message: format!(
                "database {:?} does not exist on {} (check `database`)",
                self.settings.database,
                shown(&self.settings.server)
            ),
        })
    }

    /// The database's update sequence now.
    async fn update_seq(&self) -> Result<String, ConnectorError> {
        let info = self.read_json(Method::GET, self.url(&[]), None, "reading the database").await?;
        sequence_text(&info["update_seq"]).ok_or_else(|| ConnectorError::Malformed {
            what: self.shown.clone(),
            message: format!("the database's information has no update_seq: {info}"),
        })
    }

    /// One page of `_all_docs` from `start`.
    async fn all_docs_page(
        &self,
        paths: &[Pointer],
        sequence: String,
        start: Option<&str>,
    ) -> Result<Page, ConnectorError> {
        let size = self.settings.batch_size;
        let mut url = self.url(&["_all_docs"]);
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("include_docs", "true").append_pair("limit", &(size + 1).to_string());
            if let Some(start) = start {
                query.append_pair("startkey", &Json::from(start).to_string());
            }
        }
        let body = self.read_json(Method::GET, url, None, "listing the documents").await?;
        let rows = rows(&body, &self.shown)?;
        let next = rows
            .get(size)
            .and_then(|row| row["id"].as_str())
            .map(|start| Token::All { sequence: sequence.clone(), start: start.to_string() }.encode());
        let records = rows
            .iter()
            .take(size)
            .filter_map(|row| row.get("doc").filter(|doc| doc.is_object()))
            .filter(|doc| self.keeps(doc))
            .map(|doc| self.record(doc, paths))
            .collect();
        Ok(Page { records, next, sequence: Some(Sequence(sequence)) })
    }

    /// One page of `_changes` after `since`.
    async fn changes_page(&self, paths: &[Pointer], since: &str) -> Result<Page, ConnectorError> {
        let size = self.settings.batch_size;
        let mut url = self.url(&["_changes"]);
        url.query_pairs_mut()
            .append_pair("since", since)
            .append_pair("include_docs", "true")
            .append_pair("style", "main_only")
            .append_pair("limit", &size.to_string());
        let body = self.read_json(Method::GET, url, None, "reading the changes feed").await?;
        let results = changes(&body, &self.shown)?;
        let last = sequence_text(&body["last_seq"]).ok_or_else(|| ConnectorError::Malformed {
            what: self.shown.clone(),
            message: "the changes feed's answer has no last_seq".into(),
        })?;
        let mut records = Vec::new();
        for row in results {
            let Some(id) = row["id"].as_str() else { continue };
            if id.starts_with("_design/") || id.starts_with("_local/") {
                continue;
            }
            if row["deleted"] == Json::Bool(true) {
                // A tombstone matches no selector: passed on as deleted, by id.
                records.push(ConnectorRecord {
                    id: RecordId::new(id),
                    values: vec![Json::Null; paths.len()],
                    modified: None,
                    deleted: true,
                });
            } else if let Some(document) = row.get("doc").filter(|doc| doc.is_object())
                && self.keeps(document)
            {
                records.push(self.record(document, paths));
            }
        }
        let next = (results.len() >= size).then(|| Token::Changes { since: last.clone() }.encode());
        Ok(Page { records, next, sequence: Some(Sequence(last)) })
    }

    /// The live documents of `ids` (design documents too), by id: by `_bulk_get` where the
    /// server has it (CouchDB 2 and later, pouchdb-server, Sync Gateway; on pouchdb-server it
    /// costs the server about a third of what `_all_docs` with keys does), else by `_all_docs`.
    async fn documents(&mut self, ids: &[&str]) -> Result<HashMap<String, Json>, ConnectorError> {
        let mut found = HashMap::new();
        for chunk in ids.chunks(self.settings.batch_size) {
            if self.bulk_get {
                if let Some(documents) = self.bulk_get(chunk).await? {
                    found.extend(documents);
                    continue;
                }
                self.bulk_get = false;
            }
            let mut url = self.url(&["_all_docs"]);
            url.query_pairs_mut().append_pair("include_docs", "true");
            let body = self
                .read_json(Method::POST, url, Some(&json!({ "keys": chunk })), "reading documents")
                .await?;
            for row in rows(&body, &self.shown)? {
                if let (Some(id), Some(document)) =
                    (row["id"].as_str(), row.get("doc").filter(|doc| doc.is_object()))
                {
                    found.insert(id.to_string(), document.clone());
                }
            }
        }
        Ok(found)
    }

    /// The live documents of `ids` by `_bulk_get`; `None` when the server has no `_bulk_get`
    /// (CouchDB 1.x refuses the request). A document that does not exist or is deleted is
    /// absent; any other error of one document fails the whole read.
    async fn bulk_get(&self, ids: &[&str]) -> Result<Option<HashMap<String, Json>>, ConnectorError> {
        let body = json!({ "docs": ids.iter().map(|id| json!({ "id": id })).collect::<Vec<Json>>() });
        let answer = self.http.send(Method::POST, self.url(&["_bulk_get"]), Some(&body), Kind::Read).await?;
        match answer.status {
            StatusCode::OK => {}
            StatusCode::BAD_REQUEST
            | StatusCode::NOT_FOUND
            | StatusCode::METHOD_NOT_ALLOWED
            | StatusCode::NOT_IMPLEMENTED
                if self.missing_database(&answer).is_none() =>
            {
                return Ok(None);
            }
            _ => return Err(self.answer_error(&answer, "reading documents")),
        }
        let body = answer.json()?;
        let results = body["results"].as_array().ok_or_else(|| ConnectorError::Malformed {
            what: self.shown.clone(),
            message: "the answer to `_bulk_get` has no results".into(),
        })?;
        let mut found = HashMap::new();
        for result in results {
            for answered in result["docs"].as_array().into_iter().flatten() {
                if let Some(document) =
                    answered.get("ok").filter(|document| document["_deleted"] != json!(true))
                    && let Some(id) = document["_id"].as_str()
                {
                    found.insert(id.to_string(), document.clone());
                } else if let Some(error) = answered.get("error")
                    && error["error"] != json!("not_found")
                {
                    return Err(ConnectorError::Malformed {
                        what: self.shown.clone(),
                        message: format!(
                            "reading document {}: {} ({})",
                            error["id"],
                            error["error"].as_str().unwrap_or_default(),
                            error["reason"].as_str().unwrap_or_default()
                        ),
                    });
                }
            }
        }
        Ok(Some(found))
    }

    /// The documents whose value at `path`, as text, is one of `values`, through `_find`.
    async fn find(&self, path: &Pointer, values: &[String]) -> Result<Vec<Json>, ConnectorError> {
        let mut found = Vec::new();
        let limit = 1_000;
        for chunk in values.chunks(FIND_VALUES) {
            let mut wanted: Vec<Json> = chunk.iter().map(|value| Json::from(value.as_str())).collect();
            // A key may be stored as a number; "as text" finds it too.
            wanted.extend(chunk.iter().filter_map(|value| value.parse::<i64>().ok()).map(Json::from));
            let mut condition = Map::new();
            condition.insert(path.field(), json!({ "$in": wanted }));
            let selector = match &self.settings.filter_json {
                Some(filter) => json!({ "$and": [filter, Json::Object(condition)] }),
                None => Json::Object(condition),
            };
            let mut bookmark: Option<String> = None;
            let mut skip = 0;
            loop {
                let mut query = json!({ "selector": selector, "limit": limit });
                match &bookmark {
                    Some(bookmark) => query["bookmark"] = Json::from(bookmark.as_str()),
                    None if skip > 0 => query["skip"] = Json::from(skip),
                    None => {}
                }
                let body = self
                    .read_json(Method::POST, self.url(&["_find"]), Some(&query), "finding documents")
                    .await?;
                let docs = body["docs"].as_array().ok_or_else(|| ConnectorError::Malformed {
                    what: self.shown.clone(),
                    message: "the answer of _find has no docs".into(),
                })?;
                found.extend(docs.iter().cloned());
                if docs.len() < limit {
                    break;
                }
                match body["bookmark"].as_str() {
                    Some(next) if bookmark.as_deref() != Some(next) => bookmark = Some(next.to_string()),
                    _ => {
                        bookmark = None;
                        skip += limit;
                    }
                }
            }
        }
        let wanted: HashSet<&str> = values.iter().map(String::as_str).collect();
        Ok(found
            .into_iter()
            .filter(|document| self.keeps(document))
            .filter(|document| text(&path.get(document)).is_some_and(|text| wanted.contains(text.as_str())))
            .collect())
    }

    /// The id of a new document: from the `id` template, or a random UUID.
    fn new_id(&self, fields: &[FieldWrite]) -> Result<String, ConnectorError> {
        let Some(template) = &self.settings.id else {
            return Ok(format!("{:032x}", fastrand::u128(..)));
        };
        let mut id = String::new();
        for piece in template {
            match piece {
                Piece::Text(text) => id.push_str(text),
                Piece::Value(pointer) => {
                    let value = fields
                        .iter()
                        .find(|field| field.path == pointer.as_str())
                        .and_then(|field| text(&field.value))
                        .filter(|text| !text.is_empty())
                        .ok_or_else(|| ConnectorError::Rejected {
                            message: format!(
                                "the new document's id needs a value at {}, which the create does not write",
                                pointer.as_str()
                            ),
                        })?;
                    id.push_str(&value);
                }
            }
        }
        Ok(id)
    }

    /// A write made into the document to send, or its answer when nothing is to be sent.
    fn prepare(&self, write: &Write, id: &str, current: &HashMap<String, Json>) -> Prepared {
        let not_found = || Prepared::Done(Err(ConnectorError::NotFound { id: RecordId::new(id) }));
        match write {
            Write::Create { fields } => {
                let mut document = json!({ "_id": id });
                if let Some(filter) = &self.settings.filter {
                    for (names, value) in filter.required_values() {
                        let _ = set_names(&mut document, &names, value);
                    }
                }
                if let Err(error) = set_fields(&mut document, fields) {
                    return Prepared::Done(Err(error));
                }
                if !self.keeps(&document) {
                    return Prepared::Done(Err(ConnectorError::Rejected {
                        message: format!(
                            "the new document {id} would not match the connector's selector or type"
                        ),
                    }));
                }
                Prepared::Send { id: id.to_string(), create: true, document }
            }
            Write::Update { fields, .. } => {
                let Some(document) = current.get(id).filter(|document| self.keeps(document)) else {
                    return not_found();
                };
                for field in fields {
                    let Some(expected) = &field.expected else { continue };
                    let pointer = match Pointer::parse(&field.path) {
                        Ok(pointer) => pointer,
                        Err(problem) => {
                            return Prepared::Done(Err(ConnectorError::Misconfigured { message: problem }));
                        }
                    };
                    if pointer.get(document) != *expected {
                        return Prepared::Done(Err(ConnectorError::TargetMoved { id: RecordId::new(id) }));
                    }
                }
                let mut changed = document.clone();
                if let Err(error) = set_fields(&mut changed, fields) {
                    return Prepared::Done(Err(error));
                }
                if changed == *document {
                    return Prepared::Done(Ok(WriteOutcome { id: RecordId::new(id) }));
                }
                if !self.keeps(&changed) {
                    return Prepared::Done(Err(ConnectorError::Rejected {
                        message: format!(
                            "the update would take document {id} out of the connector's selector or type"
                        ),
                    }));
                }
                Prepared::Send { id: id.to_string(), create: false, document: changed }
            }
            Write::Delete { .. } => {
                let Some(document) = current.get(id).filter(|document| self.keeps(document)) else {
                    return not_found();
                };
                match &self.settings.deleted {
                    Some(_) if self.soft_deleted(document) => {
                        Prepared::Done(Ok(WriteOutcome { id: RecordId::new(id) }))
                    }
                    Some(deleted) => {
                        let mut changed = document.clone();
                        match deleted.set(&mut changed, Json::Bool(true)) {
                            Ok(()) => Prepared::Send { id: id.to_string(), create: false, document: changed },
                            Err(message) => Prepared::Done(Err(ConnectorError::Rejected { message })),
                        }
                    }
                    None => Prepared::Send {
                        id: id.to_string(),
                        create: false,
                        document: json!({ "_id": id, "_rev": document["_rev"], "_deleted": true }),
                    },
                }
            }
        }
    }

    /// Writes one batch of writes to distinct documents: reads the current documents, prepares
    /// each write, and sends what is to be sent in one `_bulk_docs`.
    /// Writes one batch through `_bulk_docs`, each write's result into `results`, and the
    /// documents written (not deleted) with their new revisions into `written`.
    async fn write_batch(
        &mut self,
        batch: &[(usize, &Write, String)],
        results: &mut [Option<Result<WriteOutcome, ConnectorError>>],
        written: &mut HashMap<String, Json>,
    ) -> Result<(), ConnectorError> {
        let mut current = HashMap::new();
        let mut unread = Vec::new();
        for (_, write, id) in batch {
            if matches!(write, Write::Create { .. }) {
                continue;
            }
            match self.read.remove(id) {
                Some(document) => {
                    current.insert(id.clone(), document);
                }
                None => unread.push(id.as_str()),
            }
        }
        if !unread.is_empty() {
            current.extend(self.documents(&unread).await?);
        }
        let mut sending: Vec<(usize, String, bool)> = Vec::new();
        let mut docs: Vec<Json> = Vec::new();
        for (index, write, id) in batch {
            match self.prepare(write, id, &current) {
                Prepared::Done(result) => results[*index] = Some(result),
                Prepared::Send { id, create, document } => {
                    sending.push((*index, id, create));
                    docs.push(document);
                }
            }
        }
        if docs.is_empty() {
            return Ok(());
        }
        let answer = self
            .http
            .send(Method::POST, self.url(&["_bulk_docs"]), Some(&json!({ "docs": docs })), Kind::Write)
            .await;
        let answer = match answer {
            Ok(answer) => answer,
            Err(error) => {
                for (index, _, _) in &sending {
                    results[*index] = Some(Err(error.for_each_write()));
                }
                return Ok(());
            }
        };
        if !matches!(answer.status, StatusCode::CREATED | StatusCode::ACCEPTED | StatusCode::OK) {
            let error = self.answer_error(&answer, "writing documents");
            for (index, _, _) in &sending {
                results[*index] = Some(Err(error.for_each_write()));
            }
            return Ok(());
        }
        let body = match answer.json() {
            Ok(body) => body,
            Err(error) => {
                for (index, _, _) in &sending {
                    results[*index] = Some(Err(error.for_each_write()));
                }
                return Ok(());
            }
        };
        // CouchDB answers in the order of the documents, pouchdb-server not always: by id.
        let by_id: HashMap<&str, &Json> = body
            .as_array()
            .map(|items| items.iter().filter_map(|item| Some((item["id"].as_str()?, item))).collect())
            .unwrap_or_default();
        for ((index, id, create), mut document) in sending.into_iter().zip(docs) {
            let result = match by_id.get(id.as_str()) {
                None => Err(ConnectorError::Malformed {
                    what: self.shown.clone(),
                    message: format!("_bulk_docs gave no result for document {id}"),
                }),
                Some(item) if item.get("error").is_none() => {
                    self.saved += 1;
                    if let Some(rev) = item["rev"].as_str() {
                        self.own.insert(id.clone(), rev.to_string());
                    }
                    if document.get("_deleted") != Some(&Json::Bool(true)) {
                        document["_rev"] = item["rev"].clone();
                        written.insert(id.clone(), document);
                    }
                    Ok(WriteOutcome { id: RecordId::new(id.as_str()) })
                }
                Some(item) => {
                    let error = item["error"].as_str().unwrap_or_default();
                    let reason = item["reason"].as_str().unwrap_or_default();
                    match error {
                        "conflict" if create => {
                            Err(ConnectorError::AlreadyExists { id: RecordId::new(id.as_str()) })
                        }
                        "conflict" => Err(ConnectorError::TargetMoved { id: RecordId::new(id.as_str()) }),
                        _ => Err(ConnectorError::Rejected {
                            message: if reason.is_empty() {
                                error.to_string()
                            } else {
                                format!("{error}: {reason}")
                            },
                        }),
                    }
                }
            };
            results[index] = Some(result);
        }
        Ok(())
    }
}

/// How many rows of `_changes` one request of `feed_past_own_writes` reads.
const OWN_WRITES_PAGE: usize = 10_000;

/// Sets each field's value at its pointer.
fn set_fields(document: &mut Json, fields: &[FieldWrite]) -> Result<(), ConnectorError> {
    for field in fields {
        let pointer = Pointer::parse(&field.path)
            .map_err(|problem| ConnectorError::Misconfigured { message: problem })?;
        pointer.set(document, field.value.clone()).map_err(|message| ConnectorError::Rejected { message })?;
    }
    Ok(())
}

/// Sets a value at the field of Mango `names`.
fn set_names(document: &mut Json, names: &[String], value: Json) -> Result<(), String> {
    let text: String =
        names.iter().map(|name| format!("/{}", name.replace('~', "~0").replace('/', "~1"))).collect();
    let pointer = Pointer::parse(&text)?;
    if document.pointer(pointer.as_str()).is_some() {
        return Ok(());
    }
    pointer.set(document, value)
}

/// A value as text, as keys compare: text as it is, numbers and booleans as written.
fn text(value: &Json) -> Option<String> {
    match value {
        Json::String(text) => Some(text.clone()),
        Json::Number(number) => Some(number.to_string()),
        Json::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}

/// Whether a soft-delete value means deleted: anything but null, false, 0 and "".
fn truthy_scalar(value: &Json) -> bool {
    match value {
        Json::Null | Json::Bool(false) => false,
        Json::Number(number) => number.as_f64() != Some(0.0),
        Json::String(text) => !text.is_empty() && text != "0",
        _ => true,
    }
}

/// A sequence as text: CouchDB's are text, pouchdb-server's numbers.
fn sequence_text(value: &Json) -> Option<String> {
    match value {
        Json::String(text) => Some(text.clone()),
        Json::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

/// The rows of an `_all_docs` answer.
fn rows<'a>(body: &'a Json, what: &str) -> Result<&'a Vec<Json>, ConnectorError> {
    body["rows"].as_array().ok_or_else(|| ConnectorError::Malformed {
        what: what.to_string(),
        message: "the answer has no rows".into(),
    })
}

/// The rows of a `_changes` answer.
fn changes<'a>(body: &'a Json, what: &str) -> Result<&'a Vec<Json>, ConnectorError> {
    body["results"].as_array().ok_or_else(|| ConnectorError::Malformed {
        what: what.to_string(),
        message: "the changes feed's answer has no results".into(),
    })
}

/// The paths of a request as pointers.
fn pointers(paths: &[String]) -> Result<Vec<Pointer>, ConnectorError> {
    paths
        .iter()
        .map(|path| {
            Pointer::parse(path).map_err(|problem| ConnectorError::Misconfigured { message: problem })
        })
        .collect()
}

impl Connector for CouchConnector {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            incremental: false,
            lookup_by_key: true,
            conditional_writes: true,
            create: true,
            delete: true,
            sequences: true,
        }
    }

    async fn check(&mut self, paths: &[String]) -> Result<Probe, ConnectorError> {
        self.written.clear();
        pointers(paths)?;
        let server = shown(&self.settings.server);
        let refused = |answer: &Answer| {
            let user = match &self.settings.auth {
                Some(Auth::Basic { user, .. }) => format!("the login of user {user:?}"),
                Some(_) => "the connector's credentials".to_string(),
                None => "a request without credentials".to_string(),
            };
            ConnectorError::Misconfigured {
                message: format!("{server} refused {user}: {} (check `auth`)", answer.reason()),
            }
        };
        let welcome = self.http.send(Method::GET, self.settings.server.clone(), None, Kind::Read).await?;
        if welcome.status == StatusCode::UNAUTHORIZED {
            return Err(refused(&welcome));
        }
        if welcome.status != StatusCode::OK || !welcome.json().is_ok_and(|body| body.is_object()) {
            return Err(ConnectorError::Misconfigured {
                message: format!(
                    "{server} does not answer as a CouchDB server (HTTP {}: {})",
                    welcome.status.as_u16(),
                    crate::http::excerpt(&welcome.body)
                ),
            });
        }
        let answer = self.http.send(Method::GET, self.url(&[]), None, Kind::Read).await?;
        let info = match answer.status {
            StatusCode::OK => answer.json()?,
            StatusCode::UNAUTHORIZED => return Err(refused(&answer)),
            StatusCode::FORBIDDEN => {
                return Err(ConnectorError::Misconfigured {
                    message: format!(
                        "{server} does not let the connector's user read database {:?}: {} (check `auth` and the database's members)",
                        self.settings.database,
                        answer.reason()
                    ),
                });
            }
            _ => return Err(self.answer_error(&answer, "reading the database")),
        };
        let records = match (&self.settings.filter, info["doc_count"].as_u64()) {
            (None, Some(count)) => {
                let mut url = self.url(&["_all_docs"]);
                url.query_pairs_mut()
                    .append_pair("startkey", "\"_design/\"")
                    .append_pair("endkey", "\"_design0\"");
                let design = self.read_json(Method::GET, url, None, "counting design documents").await?;
                let design = rows(&design, &self.shown)?.len() as u64;
                Some(count.saturating_sub(design))
            }
            _ => None,
        };
        Ok(Probe { kind: "couchdb", target: self.shown.clone(), records, capabilities: self.capabilities() })
    }

    async fn read_page(
        &mut self,
        request: &ReadRequest,
        token: Option<&PageToken>,
    ) -> Result<Page, ConnectorError> {
        self.written.clear();
        let paths = pointers(&request.paths)?;
        match token.map(Token::decode).transpose()? {
            Some(Token::All { sequence, start }) => self.all_docs_page(&paths, sequence, Some(&start)).await,
            Some(Token::Changes { since }) => self.changes_page(&paths, &since).await,
            None => match request.since_sequence() {
                Some(since) => self.changes_page(&paths, &since.0).await,
                None => {
                    // Taken before the listing: whatever changes during it is read next time.
                    let sequence = self.update_seq().await?;
                    self.all_docs_page(&paths, sequence, None).await
                }
            },
        }
    }

    async fn lookup(
        &mut self,
        paths: &[String],
        lookup: &Lookup,
    ) -> Result<Vec<ConnectorRecord>, ConnectorError> {
        let pointers = pointers(paths)?;
        let mut written = std::mem::take(&mut self.written);
        let documents = match lookup {
            Lookup::Ids(ids) => {
                // What the last apply wrote is answered from its documents; the rest is asked.
                let ids: Vec<&str> = ids.iter().map(RecordId::as_str).collect();
                let asked: Vec<&str> = ids.iter().copied().filter(|id| !written.contains_key(*id)).collect();
                let mut found =
                    if asked.is_empty() { HashMap::new() } else { self.documents(&asked).await? };
                found.extend(written.drain());
                ids.iter()
                    .filter_map(|id| found.remove(*id))
                    .filter(|document| self.keeps(document))
                    .collect()
            }
            Lookup::Key { path, values } => {
                if values.is_empty() {
                    return Ok(Vec::new());
                }
                let path = Pointer::parse(path)
                    .map_err(|problem| ConnectorError::Misconfigured { message: problem })?;
                self.find(&path, values).await?
            }
        };
        let records = documents.iter().map(|document| self.record(document, &pointers)).collect();
        for document in documents {
            if let Some(id) = document["_id"].as_str()
                && (self.read.len() < KEPT_READS || self.read.contains_key(id))
            {
                self.read.insert(id.to_string(), document);
            }
        }
        Ok(records)
    }

    async fn apply(&mut self, writes: &[Write]) -> Result<WriteResults, ConnectorError> {
        self.written.clear();
        let mut results: Vec<Option<Result<WriteOutcome, ConnectorError>>> =
            (0..writes.len()).map(|_| None).collect();
        // Each write's document id, and its round: writes to one document go in rounds, in
        // order, so that each reads the revision the one before it made.
        let mut rounds: BTreeMap<usize, Vec<(usize, &Write, String)>> = BTreeMap::new();
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (index, write) in writes.iter().enumerate() {
            let id = match write {
                Write::Update { id, .. } | Write::Delete { id } => id.as_str().to_string(),
                Write::Create { fields } => match self.new_id(fields) {
                    Ok(id) => id,
                    Err(error) => {
                        results[index] = Some(Err(error));
                        continue;
                    }
                },
            };
            let round = seen.entry(id.clone()).or_insert(0);
            rounds.entry(*round).or_default().push((index, write, id));
            *round += 1;
        }
        let mut sent_any = false;
        let mut written = HashMap::new();
        let size = self.settings.batch_size;
        for batch in rounds.values().flat_map(|round| round.chunks(size)) {
            if let Err(error) = self.write_batch(batch, &mut results, &mut written).await {
                if !sent_any {
                    return Err(error);
                }
                for (index, _, _) in batch {
                    results[*index] = Some(Err(error.for_each_write()));
                }
            }
            sent_any = true;
        }
        self.written = written;
        Ok(results
            .into_iter()
            .map(|result| {
                result.unwrap_or_else(|| {
                    Err(ConnectorError::Malformed {
                        what: "couchdb connector".into(),
                        message: "a write was left unanswered".into(),
                    })
                })
            })
            .collect())
    }

    /// The point of `_changes` past `since` up to which every row is a document of `mine` at
    /// the revision this connector gave it; see `Connector::feed_past_own_writes`. Rows are
    /// read without their documents, a page at a time, until the first that is not.
    ///
    /// Where sequences are plain numbers (pouchdb-server, a single CouchDB 1.x node) every
    /// saved revision takes the next one: when the database's update sequence stands exactly
    /// as many past `since` as this connector saved revisions, all of them to documents of
    /// `mine`, nothing else was saved meanwhile and the feed need not be read. (The engine
    /// opens a connector for each run and asks after the run's writes, so every revision it
    /// counts came after `since`; one it did not count, or anyone else's, makes the numbers
    /// differ, and the feed is read.)
    async fn feed_past_own_writes(
        &mut self,
        since: &Sequence,
        mine: &HashSet<RecordId>,
    ) -> Result<Option<Sequence>, ConnectorError> {
        if let Ok(from) = since.0.parse::<u64>()
            && self.saved > 0
            && self.own.keys().all(|id| mine.contains(&RecordId::new(id.as_str())))
        {
            let now = self.update_seq().await?;
            if now.parse::<u64>().ok() == from.checked_add(self.saved) {
                return Ok(Some(Sequence(now)));
            }
        }
        let mut past: Option<String> = None;
        loop {
            let mut url = self.url(&["_changes"]);
            url.query_pairs_mut()
                .append_pair("since", past.as_deref().unwrap_or(&since.0))
                .append_pair("style", "main_only")
                .append_pair("limit", &OWN_WRITES_PAGE.to_string());
            let body = self.read_json(Method::GET, url, None, "reading the changes feed").await?;
            let results = changes(&body, &self.shown)?;
            for row in results {
                let (Some(id), Some(rev), Some(seq)) =
                    (row["id"].as_str(), row["changes"][0]["rev"].as_str(), sequence_text(&row["seq"]))
                else {
                    return Ok(past.map(Sequence));
                };
                let own = self.own.get(id).is_some_and(|own| own == rev) && mine.contains(&RecordId::new(id));
                if !own {
                    return Ok(past.map(Sequence));
                }
                past = Some(seq);
            }
            if results.len() < OWN_WRITES_PAGE {
                return Ok(past.map(Sequence));
            }
        }
    }
}
