//! `CouchConfig`: what a user writes to point the couchdb connector at the documents of one
//! kind in a database, checked once into `Settings` without connecting.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use fieldsync_connector::{ConnectorError, ConnectorSettings, PathError, Secret, SettingError, duration};
use fieldsync_connector_rest::Auth;
use serde::Deserialize;
use serde_json::{Map, Value as Json};

use crate::CouchConnector;
use crate::pointer::Pointer;
use crate::selector::Selector;

/// How many documents a page of a read (and a batch of writes) holds unless `batch_size` says
/// otherwise.
pub const DEFAULT_BATCH_SIZE: usize = 1_000;

/// How long one request may take unless `timeout` says otherwise.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The couchdb connector's configuration: the documents of one kind in a database of a server
/// speaking CouchDB's replication API (CouchDB, pouchdb-server, Couchbase Sync Gateway).
///
/// ```toml
/// [connectors.app]
/// kind = "couchdb"
/// url = "https://couch.club.example:6984"   # the server
/// database = "club"
/// auth = { basic = { user = "sync", password = "${COUCH_PASSWORD}" } }
/// type_field = "/type"                      # optional: only documents with type "member"
/// type_value = "member"
/// selector = { status = { "$ne" = "archived" } }  # optional Mango selector
/// id = "member:{/knvb_id}"                  # optional: ids of new documents
/// deleted = "/deleted"                      # optional soft-delete field
/// batch_size = 1000                         # optional
/// ```
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CouchConfig {
    /// The server's URL (`https://couch.example:6984`, or below a path behind a proxy); `${NAME}`
    /// in it comes from the environment.
    pub url: ServerUrl,
    /// The database.
    pub database: String,
    /// How requests are authenticated, spelled as the rest connector's; none when absent.
    pub auth: Option<Auth>,
    /// A Mango selector the documents of this connector match (a TOML table).
    pub selector: Option<Map<String, Json>>,
    /// A field (JSON pointer) holding the document's type; with `type_value`.
    pub type_field: Option<String>,
    /// The type of this connector's documents; creates write it at `type_field`.
    pub type_value: Option<Json>,
    /// The id of a new document, from its values: `{/PATH}` is replaced by the text of the
    /// value written at `PATH` (`member:{/knvb_id}`). Without it, a new document gets a random
    /// UUID as CouchDB would give.
    pub id: Option<String>,
    /// A soft-delete field (JSON pointer): a document holding anything there but null, false,
    /// 0 or "" is deleted, and a delete sets it to `true` instead of deleting the document.
    pub deleted: Option<String>,
    /// How many documents a page of a read or a batch of writes holds; 1,000.
    pub batch_size: Option<usize>,
    /// How long one request may take; `30s`.
    pub timeout: Option<String>,
    /// Date formats of the documents' date fields, for the normalisers.
    pub date_formats: Option<Vec<String>>,
}

/// A server's URL, which may hold a user and password: kept as a `Secret`, its `Debug` and
/// `Display` leave the password out.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct ServerUrl(Secret);

impl ServerUrl {
    /// Wraps a URL.
    pub fn new(url: impl Into<String>) -> Self {
        Self(Secret::new(url))
    }

    /// The URL as written, password and all.
    pub fn expose(&self) -> &str {
        self.0.expose()
    }
}

impl fmt::Display for ServerUrl {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match reqwest::Url::parse(self.expose()) {
            Ok(url) => formatter.write_str(&crate::http::shown(&url)),
            Err(_) => formatter.write_str("an unreadable URL"),
        }
    }
}

impl fmt::Debug for ServerUrl {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "ServerUrl({self})")
    }
}

/// A piece of the `id` template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Piece {
    Text(String),
    Value(Pointer),
}

/// The settings the connector runs on, checked.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    /// The server's root, ending in `/`.
    pub(crate) server: reqwest::Url,
    pub(crate) database: String,
    pub(crate) auth: Option<Auth>,
    /// The selector and the type together; `None` keeps every document.
    pub(crate) filter: Option<Selector>,
    /// The same as JSON, for `_find`.
    pub(crate) filter_json: Option<Json>,
    pub(crate) id: Option<Vec<Piece>>,
    pub(crate) deleted: Option<Pointer>,
    pub(crate) batch_size: usize,
    pub(crate) timeout: Duration,
}

impl CouchConfig {
    /// A configuration for `database` on the server at `url`, everything else left out.
    pub fn new(url: &str, database: &str) -> Self {
        Self {
            url: ServerUrl::new(url),
            database: database.to_string(),
            auth: None,
            selector: None,
            type_field: None,
            type_value: None,
            id: None,
            deleted: None,
            batch_size: None,
            timeout: None,
            date_formats: None,
        }
    }

    /// Checks every setting.
    pub(crate) fn settings(&self) -> Result<Settings, SettingError> {
        let mut server = reqwest::Url::parse(self.url.expose()).map_err(|error| {
            SettingError::new(["url"], format!("not a URL ({error}); write it as https://HOST:PORT"))
        })?;
        if !matches!(server.scheme(), "http" | "https") || server.cannot_be_a_base() {
            return Err(SettingError::new(["url"], format!("{} is not an http or https URL", self.url)));
        }
        if server.query().is_some() || server.fragment().is_some() {
            return Err(SettingError::new(["url"], "the server's URL takes no query or fragment"));
        }
        if !server.path().ends_with('/') {
            let path = format!("{}/", server.path());
            server.set_path(&path);
        }
        check_database(&self.database).map_err(|problem| SettingError::new(["database"], problem))?;
        if let Some(Auth::Basic { user, .. }) = &self.auth
            && user.is_empty()
        {
            return Err(SettingError::new(["auth", "basic", "user"], "is empty"));
        }
        let pointer =
            |text: &str, key: &str| Pointer::parse(text).map_err(|problem| SettingError::new([key], problem));
        let type_field = match (&self.type_field, &self.type_value) {
            (Some(field), Some(value)) => {
                if !matches!(value, Json::String(_) | Json::Number(_) | Json::Bool(_)) {
                    return Err(SettingError::new(["type_value"], "must be text, a number or a boolean"));
                }
                Some((pointer(field, "type_field")?, value.clone()))
            }
            (Some(_), None) => return Err(SettingError::new(["type_field"], "needs `type_value`")),
            (None, Some(_)) => return Err(SettingError::new(["type_value"], "needs `type_field`")),
            (None, None) => None,
        };
        let selector = self
            .selector
            .as_ref()
            .map(|selector| {
                Selector::parse(selector).map_err(|problem| SettingError::new(["selector"], problem))
            })
            .transpose()?;
        let type_selector =
            type_field.as_ref().map(|(field, value)| Selector::equals(field.names().to_vec(), value.clone()));
        let (filter, filter_json) = match (selector, type_selector) {
            (None, None) => (None, None),
            (Some(selector), None) => (Some(selector), self.selector.clone().map(Json::Object)),
            (None, Some(typed)) => {
                (Some(typed), type_field.as_ref().map(|(field, value)| type_json(field, value)))
            }
            (Some(selector), Some(typed)) => {
                let (field, value) = type_field.as_ref().expect("a type");
                let json = serde_json::json!({ "$and": [
                    Json::Object(self.selector.clone().unwrap_or_default()),
                    type_json(field, value),
                ]});
                (Some(Selector::And(vec![selector, typed])), Some(json))
            }
        };
        let id = self
            .id
            .as_deref()
            .map(|template| id_template(template).map_err(|problem| SettingError::new(["id"], problem)))
            .transpose()?;
        let deleted = self.deleted.as_deref().map(|text| pointer(text, "deleted")).transpose()?;
        if let (Some(deleted), Some((field, _))) = (&deleted, &type_field)
            && deleted == field
        {
            return Err(SettingError::new(["deleted"], "cannot be the type field"));
        }
        let batch_size = self.batch_size.unwrap_or(DEFAULT_BATCH_SIZE);
        if batch_size == 0 {
            return Err(SettingError::new(["batch_size"], "must be at least 1"));
        }
        let timeout = match &self.timeout {
            Some(text) => match duration(text) {
                Ok(timeout) if !timeout.is_zero() => timeout,
                Ok(_) => return Err(SettingError::new(["timeout"], "must be more than zero")),
                Err(error) => return Err(SettingError::new(["timeout"], error)),
            },
            None => DEFAULT_TIMEOUT,
        };
        Ok(Settings {
            server,
            database: self.database.clone(),
            auth: self.auth.clone(),
            filter,
            filter_json,
            id,
            deleted,
            batch_size,
            timeout,
        })
    }

    /// Checks a field path, a JSON pointer.
    ///
    /// # Errors
    ///
    /// Says why `path` is not a JSON pointer fieldsync can use.
    pub fn validate_path(path: &str) -> Result<(), PathError> {
        Pointer::parse(path).map(|_| ()).map_err(PathError)
    }
}

/// `{field: value}` as a Mango selector.
fn type_json(field: &Pointer, value: &Json) -> Json {
    let mut selector = Map::new();
    selector.insert(field.field(), value.clone());
    Json::Object(selector)
}

/// CouchDB's rule for database names: a lowercase letter, then lowercase letters, digits and
/// `_ $ ( ) + - /`.
fn check_database(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|first| first.is_ascii_lowercase());
    if first_ok
        && chars.all(|char| char.is_ascii_lowercase() || char.is_ascii_digit() || "_$()+-/".contains(char))
    {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a CouchDB database name (a lowercase letter, then lowercase letters, digits and _ $ ( ) + - /)"
        ))
    }
}

/// Reads an `id` template: text with at least one `{/PATH}`.
fn id_template(template: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        if start > 0 {
            pieces.push(Piece::Text(rest[..start].to_string()));
        }
        let end =
            rest[start..].find('}').ok_or_else(|| format!("{template:?}: a `{{` has no closing `}}`"))?;
        let pointer = Pointer::parse(&rest[start + 1..start + end])
            .map_err(|problem| format!("{template:?}: {problem}"))?;
        pieces.push(Piece::Value(pointer));
        rest = &rest[start + end + 1..];
    }
    if rest.contains('}') {
        return Err(format!("{template:?}: a `}}` has no opening `{{`"));
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest.to_string()));
    }
    if !pieces.iter().any(|piece| matches!(piece, Piece::Value(_))) {
        return Err(format!("{template:?} holds no `{{/PATH}}`: every new document would get the same id"));
    }
    if matches!(pieces.first(), Some(Piece::Text(text)) if text.starts_with('_')) {
        return Err(format!("{template:?}: CouchDB reserves ids starting with `_`"));
    }
    Ok(pieces)
}

impl ConnectorSettings for CouchConfig {
    const KIND: &'static str = "couchdb";
    type Connector = CouchConnector;

    fn check(&self) -> Result<(), SettingError> {
        self.settings().map(|_| ())
    }

    fn check_path(&self, path: &str) -> Result<(), PathError> {
        Self::validate_path(path)
    }

    fn date_formats(&self) -> &[String] {
        self.date_formats.as_deref().unwrap_or_default()
    }

    /// Opens the connector; nothing is sent until its first call.
    fn open(&self, _base_dir: &Path) -> Result<CouchConnector, ConnectorError> {
        CouchConnector::open(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> CouchConfig {
        CouchConfig::new("http://127.0.0.1:5984", "club")
    }

    #[test]
    fn a_urls_password_shows_only_when_exposed() {
        let url = ServerUrl::new("http://sync:geheim@127.0.0.1:5984/");
        assert!(!format!("{url} {url:?}").contains("geheim"), "{url:?}");
        assert_eq!(url.expose(), "http://sync:geheim@127.0.0.1:5984/");
    }

    #[test]
    fn settings_deserialise_from_toml_and_refuse_unknown_keys() {
        let config: CouchConfig = toml::from_str(
            r#"
            url = "https://sync:hunter2@couch.club.example:6984"
            database = "club"
            auth = { basic = { user = "sync", password = "geheim" } }
            type_field = "/type"
            type_value = "member"
            selector = { status = { "$ne" = "archived" }, "contact.country" = "NL" }
            id = "member:{/knvb_id}"
            deleted = "/deleted"
            batch_size = 200
            "#,
        )
        .expect("valid settings");
        let settings = config.settings().expect("valid settings");
        assert_eq!(settings.server.as_str(), "https://sync:hunter2@couch.club.example:6984/");
        assert_eq!(settings.batch_size, 200);
        let filter = settings.filter.expect("a filter");
        let member =
            serde_json::json!({ "type": "member", "status": "active", "contact": { "country": "NL" } });
        assert!(filter.matches(&member));
        assert!(!filter.matches(
            &serde_json::json!({ "type": "team", "status": "active", "contact": { "country": "NL" } })
        ));
        assert_eq!(settings.filter_json.unwrap()["$and"][1], serde_json::json!({ "type": "member" }));
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2") && !shown.contains("geheim"), "{shown}");
        assert!(shown.contains("couch.club.example"), "{shown}");
        assert!(
            toml::from_str::<CouchConfig>("url = \"http://h\"\ndatabase = \"club\"\ndatabse = \"x\"")
                .is_err()
        );
    }

    #[test]
    fn every_wrong_setting_is_named_by_its_key() {
        let wrong = |change: fn(&mut CouchConfig)| {
            let mut config = config();
            change(&mut config);
            config.settings().unwrap_err().key().join(".")
        };
        assert_eq!(wrong(|c| c.url = ServerUrl::new("ftp://x/")), "url");
        assert_eq!(wrong(|c| c.url = ServerUrl::new("couch.example")), "url");
        assert_eq!(wrong(|c| c.url = ServerUrl::new("http://h:5984/?x=1")), "url");
        assert_eq!(wrong(|c| c.database = "Club".into()), "database");
        assert_eq!(wrong(|c| c.database = "_users".into()), "database");
        assert_eq!(wrong(|c| c.type_field = Some("/type".into())), "type_field");
        assert_eq!(wrong(|c| c.type_value = Some("member".into())), "type_value");
        assert_eq!(
            wrong(|c| {
                c.type_field = Some("type".into());
                c.type_value = Some("member".into());
            }),
            "type_field"
        );
        assert_eq!(
            wrong(|c| c.selector =
                Some(serde_json::json!({ "a": { "$near": 1 } }).as_object().unwrap().clone())),
            "selector"
        );
        assert_eq!(wrong(|c| c.id = Some("member".into())), "id");
        assert_eq!(wrong(|c| c.id = Some("_design/{/knvb_id}".into())), "id");
        assert_eq!(wrong(|c| c.id = Some("m:{/knvb_id".into())), "id");
        assert_eq!(wrong(|c| c.deleted = Some("/_deleted".into())), "deleted");
        assert_eq!(wrong(|c| c.batch_size = Some(0)), "batch_size");
        assert_eq!(wrong(|c| c.timeout = Some("soon".into())), "timeout");
        assert_eq!(
            wrong(|c| c.auth = Some(Auth::Basic { user: String::new(), password: Secret::new("x") })),
            "auth.basic.user"
        );
    }

    #[test]
    fn id_templates_hold_text_and_values() {
        assert_eq!(
            id_template("member:{/knvb_id}").unwrap(),
            vec![Piece::Text("member:".into()), Piece::Value(Pointer::parse("/knvb_id").unwrap())]
        );
        assert_eq!(id_template("{/a}-{/b/c}").unwrap().len(), 3);
        assert!(id_template("x}").is_err());
    }
}
