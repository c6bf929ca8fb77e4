//! The couchdb connector against a real server of the CouchDB API (pouchdb-server,
//! `testkit::couchdb::CouchServer`, one per test binary): the conformance suite in
//! `connector.rs`, what is particular to CouchDB in `couchdb.rs`. Every fixture makes a
//! database of its own, so the tests share the server and run side by side.

mod connector;
mod couchdb;

use std::sync::atomic::{AtomicUsize, Ordering};

use fieldsync_connector::testkit::couchdb::CouchServer;
use fieldsync_connector::testkit::{Fixture, RejectedValue, TestPaths, TestRecord, TypedPaths};
use fieldsync_connector_couchdb::{CouchConfig, CouchConnector};
use serde_json::{Value as Json, json};

/// The server of this test binary; `None` (after a `SKIPPED:` line) when the machine has no
/// pouchdb-server.
fn server() -> Option<&'static CouchServer> {
    CouchServer::shared()
}

/// A database name no other test of this binary uses.
fn fresh_database(purpose: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(1);
    format!("{purpose}_{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The club app's validation: a member's e-mail address, when there is one, has an `@`; a
/// member needs a `knvb_id`.
const VALIDATE: &str = r#"function (newDoc, oldDoc, userCtx) {
    var member = newDoc.type === 'member' || (newDoc.meta && newDoc.meta.kind === 'member');
    if (newDoc._deleted || !member) return;
    var email = newDoc.contact && newDoc.contact.email;
    if (typeof email === 'string' && email !== '' && email.indexOf('@') < 0) {
        throw({ forbidden: 'contact.email must be an e-mail address, not ' + JSON.stringify(email) });
    }
    if (!newDoc.knvb_id) throw({ forbidden: 'a member needs a knvb_id' });
}"#;

/// Makes a fresh database holding the club app's design document (its validation and a view)
/// and `documents`.
fn club_database(server: &CouchServer, purpose: &str, documents: &[Json]) -> String {
    let database = fresh_database(purpose);
    server.create_database(&database);
    let design = json!({
        "_id": "_design/club",
        "language": "javascript",
        "validate_doc_update": VALIDATE,
        "views": { "by_knvb_id": { "map": "function (doc) { if (doc.knvb_id) emit(doc.knvb_id, null); }" } }
    });
    let mut all = vec![design];
    all.extend(documents.iter().cloned());
    for chunk in all.chunks(500) {
        let answer =
            server.request("POST", &format!("/{database}/_bulk_docs"), Some(&json!({ "docs": chunk })));
        assert_eq!(answer.status, 201, "{answer:?}");
        let failed: Vec<&Json> =
            answer.body.as_array().into_iter().flatten().filter(|item| item.get("error").is_some()).collect();
        assert!(failed.is_empty(), "seeding {database}: {failed:?}");
    }
    database
}

/// The document of another application at `id`.
fn document(server: &CouchServer, database: &str, id: &str) -> Json {
    let answer = server.request("GET", &format!("/{database}/{}", encode(id)), None);
    assert_eq!(answer.status, 200, "GET {id}: {answer:?}");
    answer.body
}

/// Saves `document` (with its `_rev`) as another application would, and returns its new
/// revision.
fn save(server: &CouchServer, database: &str, document: &Json) -> String {
    let id = document["_id"].as_str().expect("an id");
    let answer = server.request("PUT", &format!("/{database}/{}", encode(id)), Some(document));
    assert_eq!(answer.status, 201, "PUT {id}: {answer:?}");
    answer.body["rev"].as_str().expect("a rev").to_string()
}

/// Changes the value at `pointer` of the document `id`, as another application would.
fn edit(server: &CouchServer, database: &str, id: &str, pointer: &str, value: Json) -> String {
    let mut doc = document(server, database, id);
    set(&mut doc, pointer, value);
    save(server, database, &doc)
}

/// Sets a value at a pointer, making objects on the way.
fn set(document: &mut Json, pointer: &str, value: Json) {
    let mut at = document;
    let names: Vec<&str> = pointer.trim_start_matches('/').split('/').collect();
    for name in &names[..names.len() - 1] {
        at = at.as_object_mut().expect("an object").entry(name.to_string()).or_insert(json!({}));
    }
    at.as_object_mut().expect("an object").insert(names[names.len() - 1].to_string(), value);
}

/// A document id in a URL path.
fn encode(id: &str) -> String {
    id.replace('%', "%25").replace('/', "%2F").replace(':', "%3A").replace(' ', "%20")
}

/// The connector on `database`: members by `type`, ids from the KNVB id, 100 documents a page.
fn members_config(server: &CouchServer, database: &str) -> CouchConfig {
    let mut config = CouchConfig::new(&server.url(), database);
    config.type_field = Some("/type".into());
    config.type_value = Some(json!("member"));
    config.id = Some("member:{/knvb_id}".into());
    config.batch_size = Some(100);
    config
}

/// How the conformance fixture picks its documents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Style {
    /// `type_field = "/type"`, hard deletes.
    Typed,
    /// A Mango selector on a nested field, a soft-delete field.
    SelectorSoftDelete,
}

/// The conformance suite's systems: a fresh database per `open`, with members (as the suite's
/// records), a trainer document of the same person (another type, which must never be read or
/// written), and the club's design document.
struct ClubFixture {
    style: Style,
    database: Option<String>,
}

impl ClubFixture {
    fn new(style: Style) -> Self {
        Self { style, database: None }
    }

    fn server(&self) -> &'static CouchServer {
        server().expect("the test checked the server")
    }

    fn member(&self, record: &TestRecord) -> Json {
        let mut document = json!({
            "_id": format!("member:{}", record.key),
            "knvb_id": record.key,
            "name": record.name,
            "contact": { "email": record.email },
            "joined": "2019-08-31",
        });
        match self.style {
            Style::Typed => document["type"] = json!("member"),
            Style::SelectorSoftDelete => document["meta"] = json!({ "kind": "member", "club": "VV Oranje" }),
        }
        document
    }
}

impl Fixture for ClubFixture {
    type Connector = CouchConnector;

    async fn open(&mut self, records: &[TestRecord]) -> CouchConnector {
        let server = self.server();
        let mut documents: Vec<Json> = records.iter().map(|record| self.member(record)).collect();
        // The same person as a trainer: another kind of document holding the same KNVB id.
        documents.push(json!({
            "_id": "trainer:m0007", "type": "trainer", "meta": { "kind": "trainer" },
            "knvb_id": "m0007", "name": "Member 7", "contact": { "email": "trainer7@example.org" },
        }));
        let database = club_database(server, "conformance", &documents);
        let mut config = CouchConfig::new(&server.url(), &database);
        config.id = Some("member:{/knvb_id}".into());
        config.batch_size = Some(100);
        match self.style {
            Style::Typed => {
                config.type_field = Some("/type".into());
                config.type_value = Some(json!("member"));
            }
            Style::SelectorSoftDelete => {
                config.selector = Some(
                    json!({ "meta.kind": "member", "meta": { "club": "VV Oranje" }, "knvb_id": { "$exists": true } })
                        .as_object()
                        .expect("an object")
                        .clone(),
                );
                config.deleted = Some("/deleted".into());
            }
        }
        self.database = Some(database);
        CouchConnector::open(&config).expect("the connector opens")
    }

    async fn edit(&mut self, key: &str, path: &str, value: Json) {
        let database = self.database.as_deref().expect("a database");
        edit(self.server(), database, &format!("member:{key}"), path, value);
    }

    fn paths(&self) -> TestPaths {
        TestPaths { key: "/knvb_id".into(), name: "/name".into(), email: "/contact/email".into() }
    }

    fn typed_paths(&self) -> Option<TypedPaths> {
        Some(TypedPaths { number: "/shirt_number".into(), flag: "/newsletter".into(), list: "/teams".into() })
    }

    fn rejected_value(&self) -> Option<RejectedValue> {
        Some(RejectedValue { path: "/contact/email".into(), value: json!("not-an-email") })
    }
}
