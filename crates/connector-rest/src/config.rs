//! The rest connector's configuration as written (`RestConfig`), the presets that fill it in,
//! and the settings the connector runs on (`Settings`), checked once.

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use fieldsync_connector::{
    ConnectorError, ConnectorSettings, Pace, PathError, Secret, SettingError, duration,
};
use serde::Deserialize;

use crate::RestConnector;
use crate::path::FieldPath;

/// A preset: the conventions of a family of APIs, filled in where the configuration is
/// silent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    /// WordPress's REST API (`/wp-json/wp/v2/…`): page numbers with `X-WP-TotalPages`,
    /// `modified_after`, `modified_gmt`, updates by POST, deletes with `force=true`, a new
    /// post published; application passwords over basic auth.
    Wordpress,
    /// Django REST Framework: `results` and an absolute `next` URL, `updated_after`,
    /// `updated_at`, PATCH, items at `{base_url}{id}/`, `Authorization: Token …`.
    Drf,
}

/// How requests are authenticated.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Auth {
    /// `Authorization: Bearer TOKEN`.
    Bearer(Secret),
    /// HTTP basic auth (WordPress application passwords).
    Basic {
        /// The user name.
        user: String,
        /// The password.
        password: Secret,
    },
    /// A header of its own, such as `Authorization: Token …` for Django REST Framework.
    Header {
        /// The header's name.
        name: String,
        /// Its value.
        value: Secret,
    },
    /// A query parameter, such as `api_key=…`.
    Query {
        /// The parameter's name.
        name: String,
        /// Its value.
        value: Secret,
    },
}

/// How a listing is paged.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(tag = "style", rename_all = "snake_case", deny_unknown_fields)]
pub enum Paging {
    /// Page numbers from 1: the last page is the one `total_pages_header` names, a short or
    /// empty one, or one the API refuses with a 400 ("no such page").
    Page {
        /// The page number's parameter; `page`.
        #[serde(default = "page_param")]
        param: String,
        /// The header holding the number of pages, if the API sends one (`X-WP-TotalPages`).
        total_pages_header: Option<String>,
    },
    /// An RFC 8288 `Link` header with `rel="next"`.
    Link,
    /// A URL of the next page in the body (`/next` in Django REST Framework).
    NextUrl {
        /// Where it is: a JSON pointer.
        pointer: String,
    },
    /// An opaque cursor in the body, sent back in a parameter.
    Cursor {
        /// Where the body holds the next cursor: a JSON pointer (absent or null at the end).
        pointer: String,
        /// The parameter that takes it.
        param: String,
    },
    /// An offset in records.
    Offset {
        /// The offset's parameter; `offset`.
        #[serde(default = "offset_param")]
        param: String,
    },
}

fn page_param() -> String {
    "page".into()
}

fn offset_param() -> String {
    "offset".into()
}

/// The order of a listing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    /// Whatever order the API lists in: pages follow the paging style.
    #[default]
    Any,
    /// Oldest change first (the configured query makes it so, e.g. `orderby=modified`,
    /// `order=asc`): pages after the first ask for the records changed since the last one
    /// seen instead of for the next page, so that records changing while the listing is
    /// paged, which move to its end, cannot make it skip others.
    Modified,
}

/// How a record's modification time is written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeFormat {
    /// Text: RFC 3339 with an offset, or a date and time without one (`2026-01-01T10:00:00`,
    /// `2026-01-01 10:00:00`) in the configured zone.
    #[default]
    Text,
    /// Seconds since the Unix epoch.
    Unix,
    /// Milliseconds since the Unix epoch.
    UnixMs,
}

/// Where a record keeps its modification time.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Modified {
    /// A field path into the record.
    pub path: String,
    /// How it is written; `text`.
    #[serde(default)]
    pub format: TimeFormat,
    /// The time zone of a time written without an offset; `UTC`.
    pub zone: Option<String>,
}

/// How an incremental read asks for recent records.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Since {
    /// The query parameter (`modified_after`, `updated_after`, `since`).
    pub param: String,
    /// How the instant is written: `text` is RFC 3339 in UTC (or, with `zone`, a local date and
    /// time without offset), `unix` seconds, `unix_ms` milliseconds.
    #[serde(default)]
    pub format: TimeFormat,
    /// Write the instant as a local date and time in this zone, without offset.
    pub zone: Option<String>,
}

/// An HTTP method a write may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    /// `PATCH`.
    Patch,
    /// `PUT`.
    Put,
    /// `POST`.
    Post,
    /// `DELETE`.
    Delete,
}

impl Method {
    /// The method for the HTTP client.
    pub fn to_http(self) -> reqwest::Method {
        match self {
            Method::Patch => reqwest::Method::PATCH,
            Method::Put => reqwest::Method::PUT,
            Method::Post => reqwest::Method::POST,
            Method::Delete => reqwest::Method::DELETE,
        }
    }
}

/// How records are created.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Create {
    /// Values every new record gets, by field path (`"/status" = "publish"`).
    #[serde(default)]
    pub defaults: BTreeMap<String, serde_json::Value>,
    /// A field path whose value no two records share (the link key's, `/meta/knvb_id`): a
    /// create first looks for a record holding the same value there, and is refused with
    /// `AlreadyExists` when there is one, so that an API that keeps no such rule itself never
    /// gets a duplicate.
    pub unique: Option<String>,
    /// Values built from the record's own, by field path: `"/title" = "{/meta/first_name}
    /// {/meta/last_name}"` — each `{PATH}` is replaced by the text of the value written there.
    #[serde(default)]
    pub templates: BTreeMap<String, String>,
    /// Where a create's answer holds the new record's id, when the answer is not the record
    /// (CouchDB's `{"ok":true,"id":…,"rev":…}`: `/id`); `id`'s path, then the `Location` header.
    pub id: Option<String>,
}

/// How records are deleted.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Delete {
    /// An HTTP `DELETE` of the record, with these query parameters (`force = "true"`).
    Http {
        /// Extra query parameters.
        #[serde(default)]
        query: BTreeMap<String, String>,
    },
    /// A soft delete: an update setting `path` to `value`. Records holding it are listed as
    /// deleted.
    Soft {
        /// The field path.
        path: String,
        /// The value that marks a record deleted.
        value: serde_json::Value,
    },
    /// No deletes.
    None,
}

/// How a write is verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verify {
    /// By the record the write's response holds (no request of its own).
    Response,
    /// By reading the record again.
    Reread,
}

/// How an empty value (JSON `null` or `""`, which fieldsync holds for the same) is written at a
/// path. An empty value at a path with an array filter (`/meta/contact_info[type=email]/value`)
/// is never written inside the array: a create leaves the element out and an update removes it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Empty {
    /// JSON `null`.
    #[default]
    Null,
    /// The empty text `""`.
    EmptyString,
    /// Left out of a create (the API's default applies); an update that clears it sends `null`.
    Omit,
    /// As the API's own schema says: Django REST Framework's `OPTIONS` metadata, read once,
    /// `""` for text fields (string, email, url, slug, choice) and `null` for the others
    /// (dates, numbers), so that a serializer is never sent a `null` it refuses.
    Schema,
}

/// Batch writes (WordPress's `/batch/v1`): creates sent `size` at a time in one request, each
/// answered on its own, so that one refused record is refused alone.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    /// The batch endpoint, absolute or from the site's root (`/wp-json/batch/v1`).
    pub url: String,
    /// How many writes one request carries; 25, WordPress's most.
    pub size: Option<usize>,
}

/// A listing parameter that finds records by a field's value: `"federation_id"` (one value a
/// request, the member of the same name), or a table, for an API that takes several values at
/// once (`{ name = "federation_id__in", path = "/federation_id", join = ",", max = 50 }`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyParam {
    /// The parameter's name.
    pub name: String,
    /// The field it finds records by; the member of the parameter's own name.
    pub path: Option<String>,
    /// How several values go in one request: joined by this text (`","`), or `"repeat"` for
    /// the parameter once per value (`?id=a&id=b`). Without it, one value a request.
    pub join: Option<String>,
    /// The most values in one request, with `join`; 50.
    pub max: Option<usize>,
}

impl From<&str> for KeyParam {
    /// One value a request, by the member of the parameter's name.
    fn from(name: &str) -> Self {
        KeyParam { name: name.to_string(), path: None, join: None, max: None }
    }
}

/// `key_param`'s table form.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyParamTable {
    name: String,
    path: Option<String>,
    join: Option<String>,
    max: Option<usize>,
}

impl<'de> Deserialize<'de> for KeyParam {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyParamVisitor;

        impl<'de> serde::de::Visitor<'de> for KeyParamVisitor {
            type Value = KeyParam;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str(
                    "a parameter's name, or { name = \"…\", path = \"/…\", join = \",\", max = 50 }",
                )
            }

            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<KeyParam, E> {
                Ok(KeyParam::from(name))
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<KeyParam, A::Error> {
                let KeyParamTable { name, path, join, max } =
                    KeyParamTable::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(KeyParam { name, path, join, max })
            }
        }

        deserializer.deserialize_any(KeyParamVisitor)
    }
}

/// How a look-up by key asks the API, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KeyLookup {
    pub(crate) name: String,
    /// The field it finds records by; `None`: the member named `name`, at any depth.
    pub(crate) path: Option<FieldPath>,
    pub(crate) join: Option<Join>,
    /// The most values in one request (1 without `join`).
    pub(crate) max: usize,
}

/// How several values go in one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Join {
    /// Joined by this text into one parameter.
    Text(String),
    /// The parameter once per value.
    Repeat,
}

impl KeyLookup {
    /// Whether it finds records by the value at `path`.
    pub(crate) fn finds(&self, path: &FieldPath) -> bool {
        match &self.path {
            Some(own) => own == path,
            None => path.last_member() == Some(self.name.as_str()),
        }
    }
}

/// The most values one look-up request carries when `key_param` joins them and says no `max`.
const KEY_VALUES: usize = 50;

fn key_lookup(key_param: &KeyParam) -> Result<KeyLookup, SettingError> {
    if key_param.name.trim().is_empty() {
        return Err(SettingError::new(["key_param"], "the parameter's name is empty"));
    }
    let path = key_param
        .path
        .as_deref()
        .map(|text| {
            FieldPath::parse(text).map_err(|problem| SettingError::new(["key_param", "path"], problem))
        })
        .transpose()?;
    let join = match key_param.join.as_deref() {
        None => None,
        Some("") => {
            return Err(SettingError::new(
                ["key_param", "join"],
                "empty; a separator such as \",\", or \"repeat\"",
            ));
        }
        Some("repeat") => Some(Join::Repeat),
        Some(separator) => Some(Join::Text(separator.to_string())),
    };
    let max = match (key_param.max, &join) {
        (Some(0), _) => return Err(SettingError::new(["key_param", "max"], "must be at least 1")),
        (Some(_), None) => {
            return Err(SettingError::new(
                ["key_param", "max"],
                "needs `join`: how several values go in one request",
            ));
        }
        (Some(max), Some(_)) => max,
        (None, Some(_)) => KEY_VALUES,
        (None, None) => 1,
    };
    Ok(KeyLookup { name: key_param.name.clone(), path, join, max })
}

/// Records holding `value` at `path` are deleted (WordPress's trash, a `deleted` flag), however
/// records are deleted when fieldsync deletes one.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deleted {
    /// The field path.
    pub path: String,
    /// The value that marks a record deleted.
    pub value: serde_json::Value,
}

/// A change feed (`GET /changes?since=SEQUENCE`, CouchDB's `_changes`, Couchbase Sync
/// Gateway's): what an incremental read follows from the sequence the last run reached, deletes
/// included.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Feed {
    /// The feed's URL; `base_url`. With `full = "listing"`, `base_url` is the listing and this
    /// the feed.
    pub url: Option<String>,
    /// The parameter taking the sequence to read after; `since`.
    pub since_param: Option<String>,
    /// The parameter taking the most rows an answer holds (`page_size` of them); `limit`.
    pub limit_param: Option<String>,
    /// Where an answer holds the sequence it reached: a JSON pointer; `/last_seq`.
    pub sequence: Option<String>,
    /// Where an answer holds its rows: a JSON pointer, `""` for the body itself; `/results`.
    pub rows: Option<String>,
    /// Where a row says it is a delete (`true`, `"true"`, `1`): a JSON pointer; `/deleted`.
    pub deleted: Option<String>,
    /// Where a row holds its document: a JSON pointer, `""` for the row itself; `/doc`.
    pub document: Option<String>,
    /// Where a row holds its record's id, the id item URLs take: a JSON pointer; `/id`.
    pub id: Option<String>,
    /// Ids with one of these beginnings are no records (`["_design/"]` for CouchDB); none.
    #[serde(default)]
    pub skip_ids: Vec<String>,
    /// The sequence a read of the whole feed starts after; none (the parameter is left out).
    pub start: Option<String>,
    /// How a full read goes: `feed` (the default) reads the whole feed from `start`, deletes
    /// included; `listing` pages `base_url` as without a feed, after taking the feed's sequence
    /// from `current`.
    pub full: Option<FullRead>,
    /// For `full = "listing"`: where the feed's sequence is read before the listing.
    pub current: Option<Current>,
}

/// How a connector with a feed reads in full.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FullRead {
    /// The whole feed from its start (`feed.start`), deletes as deleted records.
    #[default]
    Feed,
    /// The listing at `base_url`, paged as `paging` says, with the feed's sequence taken from
    /// `feed.current` before its first page.
    Listing,
}

/// Where the feed's sequence is now: a URL answering JSON, and the pointer to it there
/// (`{ url = "https://couch.example/club", pointer = "/update_seq" }`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Current {
    /// The URL, absolute or from `base_url`.
    pub url: String,
    /// Where its answer holds the sequence: a JSON pointer; the feed's `sequence`.
    pub pointer: Option<String>,
}

/// How a record's revision travels back with a write that must name it (CouchDB's `_rev`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevisionIn {
    /// In the body, at the revision's path.
    Body,
    /// In the query parameter `revision.param`.
    Query,
    /// As `If-Match`.
    IfMatch,
}

/// A revision the API checks on updates and deletes: read just before the write and sent with
/// it, so that the API refuses a record changed meanwhile (with a `stale` status).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revision {
    /// Where a record holds it: a field path (`/_rev`).
    pub path: String,
    /// How an update sends it; `body`.
    pub update: Option<RevisionIn>,
    /// How a delete sends it; `query`.
    pub delete: Option<RevisionIn>,
    /// The query parameter taking it; `rev`.
    pub param: Option<String>,
}

/// The rest connector's configuration, as written in `[connectors.NAME]`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestConfig {
    /// Conventions to fill in what is not configured.
    pub preset: Option<Preset>,
    /// The collection's URL (`https://club.example/wp-json/wp/v2/people`).
    pub base_url: String,
    /// How requests are authenticated; none when absent.
    pub auth: Option<Auth>,
    /// Extra headers on every request.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// Extra query parameters of a listing (`context = "edit"`, `orderby = "modified"`).
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// How long one request may take; `30s`.
    pub timeout: Option<String>,
    /// How a listing is paged.
    pub paging: Option<Paging>,
    /// A change feed incremental reads follow by sequence; none (reads by time, with `since`).
    pub feed: Option<Feed>,
    /// The page size's parameter (`per_page`, `page_size`, `limit`), if the API takes one.
    pub page_size_param: Option<String>,
    /// How many records a page asks for; 100.
    pub page_size: Option<usize>,
    /// Where a listing's body holds its records: a JSON pointer, or `""` for the body itself.
    pub items: Option<String>,
    /// Where a record holds its id: a field path; `/id`.
    pub id: Option<String>,
    /// The URL of one record, read and updated there: `{id}` is replaced by its id;
    /// `{base_url}/{id}`.
    pub item_url: Option<String>,
    /// The URL a create is sent to (`POST`); `base_url`. For a listing that is not the
    /// collection (a changes feed, a search endpoint).
    pub create_url: Option<String>,
    /// The URL of a delete: `{id}` is replaced by the record's id; `item_url`.
    pub delete_url: Option<String>,
    /// Where a record keeps its modification time; without it there are no incremental reads.
    pub modified: Option<Modified>,
    /// How an incremental read asks for recent records; without it every read is full.
    pub since: Option<Since>,
    /// The order the configured query lists records in; `any`. With `modified` (and `since`),
    /// a listing resumes after the last change seen rather than by page number.
    pub order: Option<Order>,
    /// A listing parameter that leaves out records by id (`exclude`, comma-separated): with
    /// `order = "modified"`, records already listed at one time are left out by the API rather
    /// than paged past by number, for APIs whose order among records of one time is not stable.
    pub exclude_param: Option<String>,
    /// A listing parameter that finds records by their link key (`federation_id`, or a table
    /// for several keys per request); without it a look-up by key reads the listing.
    pub key_param: Option<KeyParam>,
    /// The method of an update; `PATCH`, or `PUT` with `whole_document`.
    pub update: Option<Method>,
    /// An update sends the whole record, read just before, with the changed values set in it
    /// (the fields fieldsync does not track as they were), for APIs that replace a document
    /// whole; false: only the changed fields.
    pub whole_document: Option<bool>,
    /// A revision the API checks on updates and deletes (`{ path = "/_rev" }`).
    pub revision: Option<Revision>,
    /// How records are created; with the collection's `POST`.
    pub create: Option<Create>,
    /// How records are deleted; an HTTP `DELETE`.
    pub delete: Option<Delete>,
    /// Send `If-Match` with the ETag read, so that an update refuses a record that changed.
    /// The API must send ETags: `check` fails, and so does an update, when it does not.
    pub etag: Option<bool>,
    /// A field path holding a version number the API checks on updates (optimistic
    /// concurrency, as `version` or `row_version`): the value read just before an update is
    /// sent back with it, and the API refuses the update when the record changed meanwhile.
    pub version: Option<String>,
    /// HTTP statuses with which the API says a record changed since it was read (a stale
    /// `If-Match`, version or revision): the write is `TargetMoved`, read again and planned
    /// anew; `[412]`, with `revision` `[409, 412]`.
    pub stale: Option<Vec<u16>>,
    /// How an empty value is written; `null`.
    pub empty: Option<Empty>,
    /// How an empty value is written at particular paths, overriding `empty`
    /// (`{ "/birth_date" = "null", "/email" = "empty_string" }`).
    #[serde(default)]
    pub empty_paths: BTreeMap<String, Empty>,
    /// Records holding a value at a path are deleted on reading (the `wordpress` preset:
    /// `/status` = `"trash"`).
    pub deleted: Option<Deleted>,
    /// How writes are verified; by their response.
    pub verify: Option<Verify>,
    /// Creates sent in batches (WordPress's `/batch/v1`); one request per create when absent.
    pub batch: Option<Batch>,
    /// How many requests may be under way at once; 4.
    pub concurrency: Option<usize>,
    /// The most requests per second or minute (`"10/s"`, `"300/m"`); no limit when absent.
    pub rate: Option<String>,
    /// A pause before each write, drawn from a range (`"1s..2s"`), as a careful person would.
    pub pace: Option<String>,
    /// How often a request that failed for a reason that may pass (a refused connection, a
    /// timeout, a 5xx, a 429) is sent again before the error is reported; 3.
    pub retries: Option<u32>,
    /// Date formats of the API's date fields, for the normalisers.
    pub date_formats: Option<Vec<String>>,
}

/// A rate limit: `count` requests per `per`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// How many requests.
    pub count: u32,
    /// Per how long.
    pub per: Duration,
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad =
            || format!("rate {text:?} must be a count per second or minute, such as \"10/s\" or \"300/m\"");
        let (count, unit) = text.trim().split_once('/').ok_or_else(bad)?;
        let count: u32 = count.trim().parse().map_err(|_| bad())?;
        let per = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            _ => return Err(bad()),
        };
        if count == 0 {
            return Err(bad());
        }
        Ok(Rate { count, per })
    }
}

/// The settings the connector runs on: the configuration with its preset applied, checked.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The collection URL, without a trailing slash unless the API wants one.
    pub base_url: reqwest::Url,
    pub(crate) auth: Option<Auth>,
    pub(crate) headers: Vec<(reqwest::header::HeaderName, Secret)>,
    pub(crate) query: Vec<(String, String)>,
    pub(crate) timeout: Duration,
    pub(crate) paging: Paging,
    pub(crate) feed: Option<FeedSettings>,
    pub(crate) whole_document: bool,
    pub(crate) revision: Option<RevisionSettings>,
    /// Where a create's answer holds the new id.
    pub(crate) create_id: FieldPath,
    pub(crate) page_size_param: Option<String>,
    pub(crate) page_size: usize,
    pub(crate) items: String,
    pub(crate) id: FieldPath,
    pub(crate) item_url: String,
    pub(crate) create_url: reqwest::Url,
    pub(crate) delete_url: String,
    pub(crate) modified: Option<(FieldPath, TimeFormat, jiff::tz::TimeZone)>,
    pub(crate) since: Option<(String, TimeFormat, Option<jiff::tz::TimeZone>)>,
    pub(crate) order: Order,
    pub(crate) key_param: Option<KeyLookup>,
    pub(crate) exclude_param: Option<String>,
    pub(crate) update: Method,
    pub(crate) create: Create,
    pub(crate) create_defaults: Vec<(FieldPath, serde_json::Value)>,
    pub(crate) create_templates: Vec<(FieldPath, String)>,
    pub(crate) delete: Delete,
    /// What marks a record deleted (the soft delete's path and value, or `deleted`), parsed
    /// once: every listed record is checked.
    pub(crate) soft_delete: Option<(FieldPath, serde_json::Value)>,
    pub(crate) etag: bool,
    pub(crate) version: Option<FieldPath>,
    pub(crate) stale: Vec<reqwest::StatusCode>,
    pub(crate) empty: Empty,
    pub(crate) empty_paths: BTreeMap<String, Empty>,
    pub(crate) verify: Verify,
    /// The batch endpoint, the path of a create inside a batch, and the batch size.
    pub(crate) batch: Option<(reqwest::Url, String, usize)>,
    pub(crate) concurrency: usize,
    pub(crate) rate: Option<Rate>,
    pub(crate) pace: Option<Pace>,
    pub(crate) retries: u32,
}

impl RestConfig {
    /// A configuration for the collection at `base_url` with everything else left out.
    pub fn new(base_url: &str) -> Self {
        Self {
            preset: None,
            base_url: base_url.to_string(),
            auth: None,
            headers: BTreeMap::new(),
            query: BTreeMap::new(),
            timeout: None,
            paging: None,
            feed: None,
            page_size_param: None,
            page_size: None,
            items: None,
            id: None,
            item_url: None,
            create_url: None,
            delete_url: None,
            modified: None,
            since: None,
            order: None,
            key_param: None,
            exclude_param: None,
            update: None,
            whole_document: None,
            revision: None,
            create: None,
            delete: None,
            etag: None,
            version: None,
            stale: None,
            empty: None,
            empty_paths: BTreeMap::new(),
            deleted: None,
            verify: None,
            batch: None,
            concurrency: None,
            rate: None,
            pace: None,
            retries: None,
            date_formats: None,
        }
    }

    /// This configuration with its preset's conventions filled in where it is silent.
    pub fn with_preset(&self) -> RestConfig {
        let mut config = self.clone();
        let Some(preset) = self.preset else { return config };
        let mut query = |name: &str, value: &str| {
            config.query.entry(name.to_string()).or_insert_with(|| value.to_string());
        };
        match preset {
            Preset::Wordpress => {
                // Raw values (`context=edit`), drafts and trashed posts too (a post moved to
                // the trash is a delete, found by the next listing), oldest change first: an
                // incremental listing then ends at the newest.
                query("context", "edit");
                query("status", "any,trash");
                query("orderby", "modified");
                query("order", "asc");
                config.paging.get_or_insert(Paging::Page {
                    param: page_param(),
                    total_pages_header: Some("X-WP-TotalPages".into()),
                });
                config.page_size_param.get_or_insert_with(|| "per_page".into());
                config.items.get_or_insert_with(String::new);
                config.modified.get_or_insert_with(|| Modified {
                    path: "/modified_gmt".into(),
                    format: TimeFormat::Text,
                    zone: Some("UTC".into()),
                });
                config.since.get_or_insert_with(|| Since {
                    param: "modified_after".into(),
                    format: TimeFormat::Text,
                    zone: None,
                });
                config.order.get_or_insert(Order::Modified);
                // WordPress orders by the modified time alone, in no stable order within one
                // second (a bulk import shares one).
                config.exclude_param.get_or_insert_with(|| "exclude".into());
                config.update.get_or_insert(Method::Post);
                config.delete.get_or_insert_with(|| Delete::Http {
                    query: BTreeMap::from([("force".to_string(), "true".to_string())]),
                });
                let create = config.create.get_or_insert_with(Create::default);
                create.defaults.entry("/status".into()).or_insert_with(|| "publish".into());
                config
                    .deleted
                    .get_or_insert_with(|| Deleted { path: "/status".into(), value: "trash".into() });
            }
            Preset::Drf => {
                config.paging.get_or_insert_with(|| Paging::NextUrl { pointer: "/next".into() });
                config.page_size_param.get_or_insert_with(|| "page_size".into());
                config.items.get_or_insert_with(|| "/results".into());
                config.modified.get_or_insert_with(|| Modified {
                    path: "/updated_at".into(),
                    format: TimeFormat::Text,
                    zone: None,
                });
                config.since.get_or_insert_with(|| Since {
                    param: "updated_after".into(),
                    format: TimeFormat::Text,
                    zone: None,
                });
                if config.item_url.is_none() {
                    let base = self.base_url.trim_end_matches('/');
                    config.item_url = Some(format!("{base}/{{id}}/"));
                }
                config.update.get_or_insert(Method::Patch);
                // Serializers refuse `null` for text fields and `""` for dates and numbers.
                config.empty.get_or_insert(Empty::Schema);
                config.stale.get_or_insert_with(|| vec![409, 412]);
            }
        }
        config
    }

    /// Checks every setting and resolves the preset, without any request.
    ///
    /// # Errors
    ///
    /// The first setting that is wrong, with its key path.
    pub fn settings(&self) -> Result<Settings, SettingError> {
        let config = self.with_preset();
        let base_url = reqwest::Url::parse(&config.base_url).map_err(|error| {
            SettingError::new(["base_url"], format!("{:?} is not a URL: {error}", config.base_url))
        })?;
        if !matches!(base_url.scheme(), "http" | "https") {
            return Err(SettingError::new(
                ["base_url"],
                format!("{:?} must be an http:// or https:// URL", config.base_url),
            ));
        }
        let headers = config
            .headers
            .iter()
            .map(|(name, value)| {
                let name = reqwest::header::HeaderName::from_str(name)
                    .map_err(|_| SettingError::new(["headers"], format!("{name:?} is not a header name")))?;
                reqwest::header::HeaderValue::from_str(value.expose()).map_err(|_| {
                    SettingError::new(["headers"], format!("the value of {name} is not a valid header value"))
                })?;
                Ok((name, value.clone()))
            })
            .collect::<Result<Vec<_>, SettingError>>()?;
        let timeout = match &config.timeout {
            Some(text) => duration(text).map_err(|error| SettingError::new(["timeout"], error))?,
            None => Duration::from_secs(30),
        };
        let page_size = config.page_size.unwrap_or(100);
        if page_size == 0 {
            return Err(SettingError::new(["page_size"], "must be at least 1"));
        }
        let items = config.items.clone().unwrap_or_default();
        if !items.is_empty() && !items.starts_with('/') {
            return Err(SettingError::new(
                ["items"],
                format!("{items:?} must be a JSON pointer such as \"/results\", or \"\""),
            ));
        }
        let path = |text: &str, setting: &str| {
            FieldPath::parse(text).map_err(|problem| SettingError::new(setting.split('.'), problem))
        };
        let id = path(config.id.as_deref().unwrap_or("/id"), "id")?;
        let item_url = match &config.item_url {
            Some(template) if template.contains("{id}") => template.clone(),
            Some(template) => {
                return Err(SettingError::new(["item_url"], format!("{template:?} has no {{id}}")));
            }
            None => format!("{}/{{id}}", config.base_url.trim_end_matches('/')),
        };
        let create_url = match &config.create_url {
            Some(text) => reqwest::Url::parse(text).map_err(|error| {
                SettingError::new(["create_url"], format!("{text:?} is not a URL: {error}"))
            })?,
            None => base_url.clone(),
        };
        let delete_url = match &config.delete_url {
            Some(template) if template.contains("{id}") => template.clone(),
            Some(template) => {
                return Err(SettingError::new(["delete_url"], format!("{template:?} has no {{id}}")));
            }
            None => item_url.clone(),
        };
        let zone = |name: Option<&str>, setting: &str| match name {
            None | Some("UTC" | "utc" | "Z") => Ok(jiff::tz::TimeZone::UTC),
            Some(name) => jiff::tz::TimeZone::get(name).map_err(|error| {
                SettingError::new(setting.split('.'), format!("unknown time zone {name:?}: {error}"))
            }),
        };
        let modified = match &config.modified {
            Some(modified) => Some((
                path(&modified.path, "modified.path")?,
                modified.format,
                zone(modified.zone.as_deref(), "modified.zone")?,
            )),
            None => None,
        };
        let since = match &config.since {
            Some(since) => {
                if modified.is_none() {
                    return Err(SettingError::new(
                        ["since"],
                        "needs `modified`: where a record keeps its modification time",
                    ));
                }
                let since_zone = match &since.zone {
                    Some(name) => Some(zone(Some(name), "since.zone")?),
                    None => None,
                };
                Some((since.param.clone(), since.format, since_zone))
            }
            None => None,
        };
        let order = config.order.unwrap_or_default();
        if order == Order::Modified {
            if since.is_none() {
                return Err(SettingError::new(
                    ["order"],
                    "\"modified\" needs `since`, to resume a listing after a change",
                ));
            }
            if !matches!(config.paging, None | Some(Paging::Page { .. } | Paging::Offset { .. })) {
                return Err(SettingError::new(
                    ["order"],
                    "\"modified\" needs `paging` by page number or offset",
                ));
            }
        }
        let create = config.create.clone().unwrap_or_default();
        let create_defaults = create
            .defaults
            .iter()
            .map(|(target, value)| Ok((path(target, "create.defaults")?, value.clone())))
            .collect::<Result<Vec<_>, SettingError>>()?;
        if let Some(unique) = &create.unique {
            path(unique, "create.unique")?;
        }
        let create_templates = create
            .templates
            .iter()
            .map(|(target, template)| Ok((path(target, "create.templates")?, template.clone())))
            .collect::<Result<Vec<_>, SettingError>>()?;
        let delete = config.delete.clone().unwrap_or(Delete::Http { query: BTreeMap::new() });
        let soft_delete = match (&delete, &config.deleted) {
            (Delete::Soft { path: soft, value }, _) => Some((path(soft, "delete.soft.path")?, value.clone())),
            (Delete::Http { .. } | Delete::None, Some(deleted)) => {
                Some((path(&deleted.path, "deleted.path")?, deleted.value.clone()))
            }
            (Delete::Http { .. } | Delete::None, None) => None,
        };
        let version = config.version.as_deref().map(|text| path(text, "version")).transpose()?;
        let revision = config.revision.as_ref().map(revision_settings).transpose()?;
        if config.etag == Some(true)
            && let Some(revision) = &revision
            && (revision.update == RevisionIn::IfMatch || revision.delete == RevisionIn::IfMatch)
        {
            return Err(SettingError::new(
                ["revision"],
                "sent as `if_match` cannot go with `etag` = true, which sends the ETag there",
            ));
        }
        let feed = config.feed.as_ref().map(|feed| feed_settings(feed, &config, &base_url)).transpose()?;
        if config.key_param.is_some() && feed.as_ref().is_some_and(|feed| feed.full == FullRead::Feed) {
            return Err(SettingError::new(
                ["key_param"],
                "a change feed read in full (`feed.full = \"feed\"`) has no listing to look a key up in: \
                 set `feed.full = \"listing\"` with the listing at `base_url`, or leave `key_param` out",
            ));
        }
        let whole_document = config.whole_document.unwrap_or(false);
        let create_id = match config.create.as_ref().and_then(|create| create.id.as_deref()) {
            Some(text) => path(text, "create.id")?,
            None => id.clone(),
        };
        let stale = config
            .stale
            .clone()
            .unwrap_or_else(|| if revision.is_some() { vec![409, 412] } else { vec![412] })
            .into_iter()
            .map(|code| {
                reqwest::StatusCode::from_u16(code).ok().filter(|status| status.is_client_error()).ok_or_else(
                    || {
                        SettingError::new(
                            ["stale"],
                            format!("{code} is not an HTTP status of a refused request (4xx)"),
                        )
                    },
                )
            })
            .collect::<Result<Vec<_>, SettingError>>()?;
        for target in config.empty_paths.keys() {
            path(target, "empty_paths")?;
        }
        let concurrency = config.concurrency.unwrap_or(4);
        if concurrency == 0 {
            return Err(SettingError::new(["concurrency"], "must be at least 1"));
        }
        let rate = config
            .rate
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(|problem| SettingError::new(["rate"], problem))?;
        let pace = config
            .pace
            .as_deref()
            .map(|text| Pace::parse(text).map_err(|error| SettingError::new(["pace"], error)))
            .transpose()?;
        let batch =
            config.batch.as_ref().map(|batch| batch_settings(batch, &base_url, &create_url)).transpose()?;
        Ok(Settings {
            base_url,
            auth: config.auth.clone(),
            headers,
            query: config.query.iter().map(|(name, value)| (name.clone(), value.clone())).collect(),
            timeout,
            paging: config
                .paging
                .clone()
                .unwrap_or(Paging::Page { param: page_param(), total_pages_header: None }),
            feed,
            whole_document,
            revision,
            create_id,
            page_size_param: config.page_size_param.clone(),
            page_size,
            items,
            id,
            item_url,
            create_url,
            delete_url,
            modified,
            since,
            order,
            key_param: config.key_param.as_ref().map(key_lookup).transpose()?,
            exclude_param: config.exclude_param.clone(),
            update: config.update.unwrap_or(if whole_document { Method::Put } else { Method::Patch }),
            create,
            create_defaults,
            create_templates,
            delete,
            soft_delete,
            etag: config.etag.unwrap_or(false),
            version,
            stale,
            empty: config.empty.unwrap_or_default(),
            empty_paths: config.empty_paths.clone(),
            verify: config.verify.unwrap_or(Verify::Response),
            batch,
            concurrency,
            rate,
            pace,
            retries: config.retries.unwrap_or(3),
        })
    }

    /// Checks a field path.
    ///
    /// # Errors
    ///
    /// Says why `path` is not a field path.
    pub fn validate_path(path: &str) -> Result<(), PathError> {
        FieldPath::parse(path).map(|_| ()).map_err(PathError)
    }

    /// The configured date formats, none unless configured.
    pub fn date_formats(&self) -> &[String] {
        self.date_formats.as_deref().unwrap_or_default()
    }
}

impl ConnectorSettings for RestConfig {
    const KIND: &'static str = "rest";
    type Connector = RestConnector;

    fn check(&self) -> Result<(), SettingError> {
        self.settings().map(|_| ())
    }

    fn check_path(&self, path: &str) -> Result<(), PathError> {
        Self::validate_path(path)
    }

    fn date_formats(&self) -> &[String] {
        RestConfig::date_formats(self)
    }

    fn open(&self, _base_dir: &Path) -> Result<RestConnector, ConnectorError> {
        RestConnector::open(self)
    }
}

/// A change feed's settings, checked.
#[derive(Clone, Debug)]
pub(crate) struct FeedSettings {
    pub(crate) url: reqwest::Url,
    pub(crate) since_param: String,
    pub(crate) limit_param: String,
    pub(crate) sequence: String,
    pub(crate) rows: String,
    pub(crate) deleted: String,
    pub(crate) document: String,
    pub(crate) id: String,
    pub(crate) skip_ids: Vec<String>,
    pub(crate) start: Option<String>,
    pub(crate) full: FullRead,
    /// With `full = "listing"`: the URL and pointer of the sequence taken before a listing.
    pub(crate) current: Option<(reqwest::Url, String)>,
}

/// A revision's settings, checked.
#[derive(Clone, Debug)]
pub(crate) struct RevisionSettings {
    pub(crate) path: FieldPath,
    pub(crate) update: RevisionIn,
    pub(crate) delete: RevisionIn,
    pub(crate) param: String,
}

/// A JSON pointer of a setting: `""` (the whole value, where `empty` allows it) or `/…`.
fn pointer(text: &str, key: &[&str], empty: bool) -> Result<String, SettingError> {
    if (text.is_empty() && empty) || text.starts_with('/') {
        return Ok(text.to_string());
    }
    let wanted = if empty {
        "a JSON pointer such as \"/results\", or \"\""
    } else {
        "a JSON pointer such as \"/last_seq\""
    };
    Err(SettingError::new(key.iter().copied(), format!("{text:?} must be {wanted}")))
}

/// A parameter's name of a setting: not empty.
fn param_name(text: Option<&str>, default: &str, key: &[&str]) -> Result<String, SettingError> {
    match text {
        None => Ok(default.to_string()),
        Some(name) if name.trim().is_empty() => {
            Err(SettingError::new(key.iter().copied(), "the parameter's name is empty"))
        }
        Some(name) => Ok(name.to_string()),
    }
}

fn feed_settings(
    feed: &Feed,
    config: &RestConfig,
    base_url: &reqwest::Url,
) -> Result<FeedSettings, SettingError> {
    if config.since.is_some() {
        return Err(SettingError::new(
            ["feed"],
            "cannot go with `since` (reads by modification time, which the preset may set): a feed's incremental reads follow its sequence",
        ));
    }
    if config.order == Some(Order::Modified) {
        return Err(SettingError::new(
            ["feed"],
            "cannot go with `order` = \"modified\", which reads by time",
        ));
    }
    let url = match &feed.url {
        Some(text) => base_url
            .join(text)
            .map_err(|error| SettingError::new(["feed", "url"], format!("{text:?} is not a URL: {error}")))?,
        None => base_url.clone(),
    };
    let sequence = pointer(feed.sequence.as_deref().unwrap_or("/last_seq"), &["feed", "sequence"], false)?;
    let full = feed.full.unwrap_or_default();
    let current = match (full, &feed.current) {
        (FullRead::Listing, None) => {
            return Err(SettingError::new(
                ["feed", "full"],
                "\"listing\" needs `feed.current`: where the feed's sequence is read before the listing",
            ));
        }
        (FullRead::Feed, Some(_)) => {
            return Err(SettingError::new(
                ["feed", "current"],
                "is read only with `full` = \"listing\"; a read of the whole feed reaches its sequence itself",
            ));
        }
        (_, Some(current)) => Some((
            base_url.join(&current.url).map_err(|error| {
                SettingError::new(
                    ["feed", "current", "url"],
                    format!("{:?} is not a URL: {error}", current.url),
                )
            })?,
            pointer(current.pointer.as_deref().unwrap_or(&sequence), &["feed", "current", "pointer"], false)?,
        )),
        (FullRead::Feed, None) => None,
    };
    if full == FullRead::Listing && url == *base_url {
        return Err(SettingError::new(
            ["feed", "url"],
            "is needed with `full` = \"listing\": `base_url` is then the listing, not the feed",
        ));
    }
    if feed.skip_ids.iter().any(String::is_empty) {
        return Err(SettingError::new(["feed", "skip_ids"], "an empty beginning would skip every record"));
    }
    Ok(FeedSettings {
        url,
        since_param: param_name(feed.since_param.as_deref(), "since", &["feed", "since_param"])?,
        limit_param: param_name(feed.limit_param.as_deref(), "limit", &["feed", "limit_param"])?,
        sequence,
        rows: pointer(feed.rows.as_deref().unwrap_or("/results"), &["feed", "rows"], true)?,
        deleted: pointer(feed.deleted.as_deref().unwrap_or("/deleted"), &["feed", "deleted"], false)?,
        document: pointer(feed.document.as_deref().unwrap_or("/doc"), &["feed", "document"], true)?,
        id: pointer(feed.id.as_deref().unwrap_or("/id"), &["feed", "id"], false)?,
        skip_ids: feed.skip_ids.clone(),
        start: feed.start.clone(),
        full,
        current,
    })
}

fn revision_settings(revision: &Revision) -> Result<RevisionSettings, SettingError> {
    let path = FieldPath::parse(&revision.path)
        .map_err(|problem| SettingError::new(["revision", "path"], problem))?;
    if path.has_filter() {
        return Err(SettingError::new(["revision", "path"], "a revision is no element of an array"));
    }
    let delete = revision.delete.unwrap_or(RevisionIn::Query);
    if delete == RevisionIn::Body {
        return Err(SettingError::new(
            ["revision", "delete"],
            "a DELETE carries no body; \"query\" or \"if_match\"",
        ));
    }
    Ok(RevisionSettings {
        path,
        update: revision.update.unwrap_or(RevisionIn::Body),
        delete,
        param: param_name(revision.param.as_deref(), "rev", &["revision", "param"])?,
    })
}

/// The batch endpoint, a create's path inside a batch (the create URL's path below the REST
/// root, which the batch URL names: `/wp-json` of `/wp-json/batch/v1`), and the size.
fn batch_settings(
    batch: &Batch,
    base_url: &reqwest::Url,
    create_url: &reqwest::Url,
) -> Result<(reqwest::Url, String, usize), SettingError> {
    let url = base_url.join(&batch.url).map_err(|error| {
        SettingError::new(["batch", "url"], format!("{:?} is not a URL: {error}", batch.url))
    })?;
    let root = url.path().trim_end_matches('/').strip_suffix("/batch/v1").ok_or_else(|| {
        SettingError::new(
            ["batch", "url"],
            format!("{:?} is not a WordPress batch endpoint (`…/wp-json/batch/v1`)", batch.url),
        )
    })?;
    let path = match create_url.path().strip_prefix(root) {
        Some(path) if path.starts_with('/') && create_url.origin() == url.origin() => path.to_string(),
        _ => {
            return Err(SettingError::new(
                ["batch", "url"],
                format!(
                    "creates go to {}, which is not below the batch endpoint's API root {root}",
                    create_url.path()
                ),
            ));
        }
    };
    let size = batch.size.unwrap_or(25);
    if size == 0 {
        return Err(SettingError::new(["batch", "size"], "must be at least 1"));
    }
    Ok((url, path, size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_find_the_path_of_a_create_below_the_api_root() {
        let mut config = RestConfig::new("http://127.0.0.1:8080/wp-json/wp/v2/people");
        config.batch = Some(Batch { url: "/wp-json/batch/v1".into(), size: None });
        let (url, path, size) = config.settings().unwrap().batch.unwrap();
        assert_eq!(
            (url.as_str(), path.as_str(), size),
            ("http://127.0.0.1:8080/wp-json/batch/v1", "/wp/v2/people", 25)
        );
        config.batch = Some(Batch { url: "/api/bulk".into(), size: Some(10) });
        assert_eq!(config.settings().unwrap_err().key(), ["batch", "url"]);
        config.batch = Some(Batch { url: "http://other.example/wp-json/batch/v1".into(), size: None });
        assert_eq!(config.settings().unwrap_err().key(), ["batch", "url"]);
        config.batch = Some(Batch { url: "/wp-json/batch/v1".into(), size: Some(0) });
        assert_eq!(config.settings().unwrap_err().key(), ["batch", "size"]);
    }

    #[test]
    fn key_param_is_a_name_or_a_table_and_its_table_is_checked() {
        let read = |value: serde_json::Value| -> Result<KeyLookup, String> {
            let key_param: KeyParam = serde_json::from_value(value).map_err(|error| error.to_string())?;
            let mut config = RestConfig::new("http://127.0.0.1:8000/api/players/");
            config.key_param = Some(key_param);
            Ok(config.settings().map_err(|error| error.to_string())?.key_param.unwrap())
        };
        let plain = read(serde_json::json!("federation_id")).unwrap();
        assert_eq!((plain.join.clone(), plain.max), (None, 1));
        assert!(plain.finds(&FieldPath::parse("/meta/federation_id").unwrap()));
        let joined =
            read(serde_json::json!({ "name": "federation_id__in", "path": "/federation_id", "join": "," }))
                .unwrap();
        assert_eq!((joined.join.clone(), joined.max), (Some(Join::Text(",".into())), 50));
        assert!(joined.finds(&FieldPath::parse("/federation_id").unwrap()));
        assert!(!joined.finds(&FieldPath::parse("/meta/federation_id").unwrap()));
        let repeated = read(serde_json::json!({ "name": "id", "join": "repeat", "max": 10 })).unwrap();
        assert_eq!((repeated.join, repeated.max), (Some(Join::Repeat), 10));
        for (wrong, named) in [
            (serde_json::json!({ "name": "id", "max": 10 }), "`key_param.max`: needs `join`"),
            (serde_json::json!({ "name": "id", "join": ",", "max": 0 }), "`key_param.max`: must be"),
            (serde_json::json!({ "name": "id", "join": "" }), "`key_param.join`"),
            (serde_json::json!({ "name": "id", "path": "/tags[type=" }), "`key_param.path`"),
            (serde_json::json!({ "name": "id", "joins": "," }), "unknown field `joins`"),
            (serde_json::json!(""), "`key_param`"),
        ] {
            let error = read(wrong.clone()).unwrap_err();
            assert!(error.contains(named), "{wrong}: {error}");
        }
    }

    #[test]
    fn presets_fill_in_only_what_is_silent() {
        let mut config = RestConfig::new("http://127.0.0.1:8080/wp-json/wp/v2/people");
        config.preset = Some(Preset::Wordpress);
        config.query.insert("status".into(), "publish".into());
        let settings = config.settings().unwrap();
        assert_eq!(settings.update, Method::Post);
        assert!(settings.query.contains(&("status".into(), "publish".into())));
        assert!(settings.query.contains(&("context".into(), "edit".into())));
        assert_eq!(settings.since.as_ref().map(|since| since.0.as_str()), Some("modified_after"));
        assert_eq!(settings.item_url, "http://127.0.0.1:8080/wp-json/wp/v2/people/{id}");
        assert_eq!(settings.create.defaults["/status"], serde_json::json!("publish"));

        let mut drf = RestConfig::new("http://127.0.0.1:8000/api/members/");
        drf.preset = Some(Preset::Drf);
        let settings = drf.settings().unwrap();
        assert_eq!(settings.item_url, "http://127.0.0.1:8000/api/members/{id}/");
        assert_eq!(settings.items, "/results");
        assert_eq!(settings.update, Method::Patch);
    }

    #[test]
    fn bad_settings_are_named() {
        let problem = |change: fn(&mut RestConfig)| {
            let mut config = RestConfig::new("http://127.0.0.1/api");
            change(&mut config);
            config.settings().unwrap_err().to_string()
        };
        assert!(problem(|config| config.base_url = "ftp://x".into()).starts_with("`base_url`"));
        assert!(problem(|config| config.rate = Some("fast".into())).starts_with("`rate`"));
        assert!(problem(|config| config.pace = Some("2s..1s".into())).contains("ends before"));
        assert!(problem(|config| config.timeout = Some("soon".into())).starts_with("`timeout`"));
        assert!(problem(|config| config.item_url = Some("http://x/y".into())).starts_with("`item_url`"));
        assert!(
            problem(|config| config.since =
                Some(Since { param: "since".into(), format: TimeFormat::Unix, zone: None }))
            .starts_with("`since`: needs `modified`")
        );
        assert!(problem(|config| config.id = Some("/a[b".into())).starts_with("`id`"));
    }

    #[test]
    fn feeds_and_revisions_fill_in_couchdbs_shapes_and_bad_ones_are_named() {
        let read = |table: serde_json::Value| -> Result<Settings, String> {
            let mut object = serde_json::json!({ "base_url": "http://127.0.0.1:5984/club/_changes" });
            object.as_object_mut().unwrap().extend(table.as_object().unwrap().clone());
            let config: RestConfig = serde_json::from_value(object).map_err(|error| error.to_string())?;
            config.settings().map_err(|error| error.to_string())
        };
        let settings = read(serde_json::json!({
            "feed": {}, "whole_document": true, "revision": { "path": "/_rev" }
        }))
        .unwrap();
        let feed = settings.feed.as_ref().unwrap();
        assert_eq!(
            (
                feed.since_param.as_str(),
                feed.limit_param.as_str(),
                feed.sequence.as_str(),
                feed.rows.as_str()
            ),
            ("since", "limit", "/last_seq", "/results")
        );
        assert_eq!(
            (feed.deleted.as_str(), feed.document.as_str(), feed.id.as_str()),
            ("/deleted", "/doc", "/id")
        );
        assert_eq!((feed.full, feed.url.as_str()), (FullRead::Feed, "http://127.0.0.1:5984/club/_changes"));
        assert_eq!(settings.update, Method::Put, "a whole document is PUT");
        assert_eq!(settings.stale, [reqwest::StatusCode::CONFLICT, reqwest::StatusCode::PRECONDITION_FAILED]);
        let revision = settings.revision.as_ref().unwrap();
        assert_eq!(
            (revision.update, revision.delete, revision.param.as_str()),
            (RevisionIn::Body, RevisionIn::Query, "rev")
        );

        let listing = read(serde_json::json!({ "base_url": "http://127.0.0.1:5984/club/_all_docs", "feed": {
            "url": "/club/_changes", "full": "listing", "current": { "url": "/club" }
        }}))
        .unwrap();
        let feed = listing.feed.unwrap();
        assert_eq!(
            feed.current,
            Some((reqwest::Url::parse("http://127.0.0.1:5984/club").unwrap(), "/last_seq".into()))
        );

        for (wrong, named) in [
            (serde_json::json!({ "feed": { "rows": "results" } }), "`feed.rows`"),
            (serde_json::json!({ "feed": { "sequence": "" } }), "`feed.sequence`"),
            (serde_json::json!({ "feed": { "since_param": " " } }), "`feed.since_param`"),
            (
                serde_json::json!({ "feed": { "full": "listing" } }),
                "`feed.full`: \"listing\" needs `feed.current`",
            ),
            (
                serde_json::json!({ "feed": { "full": "listing", "current": { "url": "/club" } } }),
                "`feed.url`",
            ),
            (serde_json::json!({ "feed": { "current": { "url": "/club" } } }), "`feed.current`"),
            (serde_json::json!({ "feed": { "skip_ids": [""] } }), "`feed.skip_ids`"),
            (serde_json::json!({ "feed": {}, "preset": "drf" }), "`feed`: cannot go with `since`"),
            (serde_json::json!({ "feed": { "last_seq": "/x" } }), "unknown field `last_seq`"),
            (serde_json::json!({ "revision": { "path": "/_rev", "delete": "body" } }), "`revision.delete`"),
            (serde_json::json!({ "revision": { "path": "/revs[a=b]" } }), "`revision.path`"),
            (
                serde_json::json!({ "revision": { "path": "/_rev", "update": "if_match" }, "etag": true }),
                "`revision`",
            ),
            (serde_json::json!({ "revision": { "path": "/_rev", "send": "body" } }), "unknown field `send`"),
            (serde_json::json!({ "create": { "id": "/a[b" } }), "`create.id`"),
            (
                serde_json::json!({ "feed": {}, "key_param": "email" }),
                "`key_param`: a change feed read in full",
            ),
        ] {
            let error = read(wrong.clone()).err().unwrap_or_default();
            assert!(error.contains(named), "{wrong}: {error}");
        }
    }

    #[test]
    fn rates_read_per_second_or_minute() {
        assert_eq!("10/s".parse::<Rate>(), Ok(Rate { count: 10, per: Duration::from_secs(1) }));
        assert_eq!("300/m".parse::<Rate>(), Ok(Rate { count: 300, per: Duration::from_secs(60) }));
        assert!("0/s".parse::<Rate>().is_err());
    }

    #[test]
    fn secrets_do_not_show_in_debug_output() {
        let mut config = RestConfig::new("http://127.0.0.1/api");
        config.auth = Some(Auth::Basic { user: "admin".into(), password: Secret::new("hunter2") });
        config.headers.insert("X-Api-Key".into(), Secret::new("k3y"));
        let shown = format!("{config:?} {:?}", config.settings().unwrap());
        assert!(!shown.contains("hunter2") && !shown.contains("k3y"), "{shown}");
    }
}
