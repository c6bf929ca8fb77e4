//! The rest connector on a change feed of revisioned documents (`feed`, `whole_document`,
//! `revision`): the conformance suite and the feed's own checks against the fixture's feed API
//! ([`Style::Feed`], CouchDB's shapes), and the same generic settings against a real CouchDB
//! API (pouchdb-server), so that the fixture and the connector cannot share a misreading.

use std::collections::BTreeMap;

use crate::fixture::{FixtureServer, Style};
use fieldsync_connector::testkit::couchdb::CouchServer;
use fieldsync_connector::testkit::{
    self, Fixture, RejectedValue, TestPaths, TestRecord, TypedPaths, read_with_sequence,
};
use fieldsync_connector::{
    Connector, ConnectorError, ConnectorRecord, FieldWrite, Lookup, ReadRequest, Sequence, Since, Write,
};
use fieldsync_connector_rest::{
    Create, Current, Feed, FieldPath, FullRead, Paging, RestConfig, RestConnector, Revision, RevisionIn,
};
use fieldsync_model::RecordId;
use serde_json::{Value, json};

/// The generic settings of a feed in CouchDB's shapes on the fixture: the feed is the listing
/// (`base_url`), documents are read, replaced whole and deleted at their own URLs with their
/// `_rev`, and creates go to the collection, whose answer names the new id at `/id`.
fn feed_config(server: &FixtureServer) -> RestConfig {
    let mut config = RestConfig::new(&server.feed_url());
    // CouchDB's shapes are the defaults: `since`, `limit`, `/last_seq`, `/results`,
    // `/deleted`, `/doc`, `/id`.
    config.feed = Some(Feed::default());
    config.id = Some("/_id".into());
    config.item_url = Some(format!("{}/{{id}}", server.list_url()));
    config.create_url = Some(server.list_url());
    config.create = Some(Create { id: Some("/id".into()), unique: Some("/key".into()), ..Create::default() });
    config.whole_document = Some(true);
    config.revision = Some(Revision { path: "/_rev".into(), update: None, delete: None, param: None });
    config.page_size = Some(40);
    config
}

/// The same API read in full by its listing (`/sync/docs`, by offset) with the feed's
/// sequence taken first from the database's `update_seq`.
fn listing_config(server: &FixtureServer) -> RestConfig {
    let mut config = feed_config(server);
    config.base_url = server.list_url();
    config.paging = Some(Paging::Offset { param: "offset".into() });
    config.page_size_param = Some("limit".into());
    config.items = Some("/rows".into());
    config.feed = Some(Feed {
        url: Some(server.feed_url()),
        full: Some(FullRead::Listing),
        current: Some(Current { url: server.database_url(), pointer: Some("/update_seq".into()) }),
        ..Feed::default()
    });
    config
}

/// Fresh feed APIs for the conformance suite.
struct FeedFixture {
    full: FullRead,
    server: Option<FixtureServer>,
}

impl Fixture for FeedFixture {
    type Connector = RestConnector;

    async fn open(&mut self, records: &[TestRecord]) -> RestConnector {
        let server = FixtureServer::start(Style::Feed).await;
        for record in records {
            server.insert(json!({"key": record.key, "name": record.name, "email": record.email}));
        }
        server.reject_invalid_email(true);
        let config = match self.full {
            FullRead::Feed => feed_config(&server),
            FullRead::Listing => listing_config(&server),
        };
        let connector = RestConnector::open(&config).expect("a valid configuration");
        self.server = Some(server);
        connector
    }

    async fn edit(&mut self, key: &str, path: &str, value: Value) {
        let server = self.server.as_ref().expect("an open fixture");
        let number = number_of(server, key);
        let mut record = server.record(number).expect("the record");
        let path = FieldPath::parse(path).unwrap();
        path.set(&mut record, value).unwrap();
        let top = path.unit().as_str().trim_start_matches('/').split('/').next().unwrap().to_string();
        server.update(number, json!({ top.clone(): record[top.as_str()].clone() }));
    }

    fn paths(&self) -> TestPaths {
        TestPaths { key: "/key".into(), name: "/name".into(), email: "/email".into() }
    }

    fn rejected_value(&self) -> Option<RejectedValue> {
        Some(RejectedValue { path: "/email".into(), value: json!("not-an-email") })
    }

    fn typed_paths(&self) -> Option<TypedPaths> {
        Some(TypedPaths { number: "/number".into(), flag: "/flag".into(), list: "/list".into() })
    }
}

/// The fixture's number of the record holding `key` at `/key`.
fn number_of(server: &FixtureServer, key: &str) -> i64 {
    server
        .records()
        .iter()
        .find(|record| record["key"] == json!(key))
        .and_then(|record| record["_id"].as_str()?.strip_prefix("lid-")?.parse().ok())
        .unwrap_or_else(|| panic!("no fixture record with key {key}"))
}

#[tokio::test]
async fn conforms_as_a_change_feed_of_revisioned_documents() {
    // Incremental reads are by sequence here, not by time.
    testkit::run_all(&mut FeedFixture { full: FullRead::Feed, server: None }, &["incremental_read"]).await;
}

#[tokio::test]
async fn conforms_reading_in_full_by_listing_with_the_sequence_taken_first() {
    testkit::run_all(&mut FeedFixture { full: FullRead::Listing, server: None }, &["incremental_read"]).await;
}

/// Dutch club members as the club app keeps them: diacritics, `+31 6` mobiles, an empty
/// e-mail and a missing mobile, and fields fieldsync does not track.
fn dutch_members() -> Vec<Value> {
    vec![
        json!({"key": "NL-0001", "name": "Sanne de Vries", "email": "sanne.devries@ziggo.nl", "mobile": "+31 6 12345678",
               "lidmaatschap": {"sinds": "2011-09-01", "team": "JO17-1"}}),
        json!({"key": "NL-0002", "name": "Zoë Bakker", "email": "zoe.bakker@kpnmail.nl", "mobile": "+31 6 23456789",
               "lidmaatschap": {"sinds": "2019-08-15", "team": "MO15-2"}}),
        json!({"key": "NL-0003", "name": "Joost van 't Hek", "email": "", "mobile": "+31 6 34567890"}),
        json!({"key": "NL-0004", "name": "Thijs Çelik", "email": "thijs.celik@gmail.com"}),
        json!({"key": "NL-0005", "name": "Fleur Jansen-Ødegaard", "email": "fleur@jansen-odegaard.nl",
               "mobile": "+31 6 45678901", "notities": "trainster op woensdag"}),
        json!({"key": "NL-0006", "name": "Daan Hoekstra", "email": "daan.hoekstra@xs4all.nl", "mobile": "+31 6 56789012"}),
    ]
}

const PATHS: [&str; 4] = ["/key", "/name", "/email", "/mobile"];

fn request(since: Option<Since>) -> ReadRequest {
    ReadRequest { paths: PATHS.iter().map(|path| (*path).to_string()).collect(), since }
}

fn by_key(records: &[ConnectorRecord]) -> BTreeMap<String, &ConnectorRecord> {
    records
        .iter()
        .filter(|record| !record.deleted)
        .map(|record| (record.values[0].as_str().unwrap().to_string(), record))
        .collect()
}

fn set(path: &str, value: Value, expected: Option<Value>) -> FieldWrite {
    FieldWrite { path: path.into(), value, expected }
}

/// A feed fixture holding the Dutch members and 114 more, numbered 1 to 120.
async fn club() -> FixtureServer {
    let server = FixtureServer::start(Style::Feed).await;
    for member in dutch_members() {
        server.insert(member);
    }
    for number in 7..=120 {
        server.insert(json!({"key": format!("NL-{number:04}"), "name": format!("Lid {number}"), "email": format!("lid{number}@vvoranje.nl")}));
    }
    server
}

#[tokio::test]
async fn a_read_from_the_full_reads_sequence_returns_only_the_changes_and_the_deletes() {
    let server = club().await;
    let mut config = feed_config(&server);
    config.page_size = Some(25);
    let mut connector = RestConnector::open(&config).expect("a valid configuration");
    assert!(connector.capabilities().sequences && !connector.capabilities().incremental);

    let (all, sequence) = read_with_sequence(&mut connector, &request(None)).await;
    assert_eq!(all.len(), 120);
    assert_eq!(server.rows_served(), 120, "a full read serves each document once");
    assert_eq!(sequence, Sequence(server.update_seq().to_string()));
    let zoe = by_key(&all)["NL-0002"];
    assert_eq!((zoe.id.as_str(), &zoe.values[1]), ("lid-0002", &json!("Zoë Bakker")));
    assert_eq!(by_key(&all)["NL-0004"].values[3], Value::Null, "a missing mobile reads as null");
    // The first page asks from the start, the next ones from the sequence the last reached.
    let asked: Vec<String> = server.requests().iter().map(|request| request.path.clone()).collect();
    assert!(asked[0].ends_with("/sync/changes?limit=25"), "{asked:?}");
    assert!(asked[1].contains("since=25"), "{asked:?}");

    // A person edits two members and deletes one; fieldsync updates another.
    server.update(3, json!({"email": "joost@vanthek.nl"}));
    server.update(118, json!({"mobile": "+31 6 98765432"}));
    server.delete(40);
    let results = connector
        .apply(&[Write::Update {
            id: RecordId::new("lid-0005"),
            fields: vec![set("/mobile", json!("+31 6 45678999"), Some(json!("+31 6 45678901")))],
        }])
        .await
        .expect("applied");
    assert!(results[0].is_ok(), "{results:?}");

    let served = server.rows_served();
    let (changes, reached) =
        read_with_sequence(&mut connector, &request(Some(Since::Sequence(sequence.clone())))).await;
    assert_eq!(server.rows_served() - served, 4, "only the changes are served");
    let live = by_key(&changes);
    assert_eq!(live.keys().collect::<Vec<_>>(), ["NL-0003", "NL-0005", "NL-0118"]);
    assert_eq!(live["NL-0003"].values[2], json!("joost@vanthek.nl"));
    assert_eq!(live["NL-0005"].values[3], json!("+31 6 45678999"));
    let deleted: Vec<&ConnectorRecord> = changes.iter().filter(|record| record.deleted).collect();
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0].id.as_str(), "lid-0040", "a delete names the id item URLs take");
    assert!(deleted[0].values.iter().all(Value::is_null));
    assert_eq!(reached, Sequence(server.update_seq().to_string()));

    // Nothing changed since: nothing is served, and the sequence stays.
    let served = server.rows_served();
    let (quiet, again) =
        read_with_sequence(&mut connector, &request(Some(Since::Sequence(reached.clone())))).await;
    assert!(quiet.is_empty() && again == reached && server.rows_served() == served);
}

#[tokio::test]
async fn a_full_read_by_listing_takes_the_sequence_before_its_first_page() {
    let server = club().await;
    let mut connector = RestConnector::open(&listing_config(&server)).expect("a valid configuration");
    let before = server.update_seq();
    // A member edited while the listing pages is read again from the sequence taken first.
    server.change_after_read(2, json!({"name": "Zoë Bakker-Visser"}));
    let (all, sequence) = read_with_sequence(&mut connector, &request(None)).await;
    assert_eq!(all.len(), 120);
    assert_eq!(server.rows_served(), 0, "the listing, not the feed");
    assert_eq!(sequence, Sequence(before.to_string()));
    let (changes, _) = read_with_sequence(&mut connector, &request(Some(Since::Sequence(sequence)))).await;
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].values[1], json!("Zoë Bakker-Visser"));
}

#[tokio::test]
async fn a_stale_revision_is_target_moved_and_nothing_is_overwritten() {
    let server = club().await;
    let mut connector = RestConnector::open(&feed_config(&server)).expect("a valid configuration");
    // The app saves Sanne's record between fieldsync's read of it and its write.
    server.change_after_read(1, json!({"email": "sanne@vvoranje.nl"}));
    let write = Write::Update {
        id: RecordId::new("lid-0001"),
        fields: vec![set("/email", json!("sanne@devries.nl"), Some(json!("sanne.devries@ziggo.nl")))],
    };
    let results = connector.apply(std::slice::from_ref(&write)).await.expect("applied");
    assert!(matches!(results[0], Err(ConnectorError::TargetMoved { .. })), "{results:?}");
    let put = server.requests().into_iter().find(|request| request.method == "PUT").expect("a PUT");
    assert_eq!(put.status, Some(409));
    let sanne = server.record(1).unwrap();
    assert_eq!((&sanne["email"], &sanne["mobile"]), (&json!("sanne@vvoranje.nl"), &json!("+31 6 12345678")));
    assert_eq!(server.writes(1), 0);

    // A value that no longer holds is refused before anything is sent.
    server.clear_requests();
    let results = connector.apply(&[write]).await.expect("applied");
    assert!(matches!(results[0], Err(ConnectorError::TargetMoved { .. })), "{results:?}");
    assert!(server.requests().iter().all(|request| request.method == "GET"));

    // A refusal for good is rejected with the API's reason, not target moved.
    server.reject_invalid_email(true);
    let results = connector
        .apply(&[Write::Update {
            id: RecordId::new("lid-0002"),
            fields: vec![set("/email", json!("zoe bij bakker"), None)],
        }])
        .await
        .expect("applied");
    match &results[0] {
        Err(error @ ConnectorError::Rejected { message }) => {
            assert!(message.contains("Enter a valid email address"), "{error}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_update_sends_the_whole_document_with_its_revision_and_keeps_untracked_fields() {
    for (sent, check) in
        [(RevisionIn::Body, "body"), (RevisionIn::Query, "query"), (RevisionIn::IfMatch, "if_match")]
    {
        let server = club().await;
        let mut config = feed_config(&server);
        config.revision =
            Some(Revision { path: "/_rev".into(), update: Some(sent), delete: None, param: None });
        let mut connector = RestConnector::open(&config).expect("a valid configuration");
        let revision = server.record(2).unwrap()["_rev"].as_str().unwrap().to_string();
        let results = connector
            .apply(&[Write::Update {
                id: RecordId::new("lid-0002"),
                fields: vec![
                    set("/email", json!("zoë@bakker.frl"), Some(json!("zoe.bakker@kpnmail.nl"))),
                    set("/mobile", json!(""), Some(json!("+31 6 23456789"))),
                ],
            }])
            .await
            .expect("applied");
        assert!(results[0].is_ok(), "{check}: {results:?}");
        let put = server.requests().into_iter().find(|request| request.method == "PUT").expect("a PUT");
        let body = put.body.expect("a JSON body");
        assert_eq!(body["lidmaatschap"], json!({"sinds": "2019-08-15", "team": "MO15-2"}), "{check}");
        assert_eq!((&body["key"], &body["name"]), (&json!("NL-0002"), &json!("Zoë Bakker")), "{check}");
        match sent {
            RevisionIn::Body => assert_eq!(body["_rev"], json!(revision)),
            RevisionIn::Query => assert!(put.path.ends_with(&format!("?rev={revision}")), "{}", put.path),
            RevisionIn::IfMatch => assert_eq!(put.if_match.as_deref(), Some(revision.as_str())),
        }
        let zoe = server.record(2).unwrap();
        assert_eq!(zoe["email"], json!("zoë@bakker.frl"));
        assert_eq!(zoe["mobile"], Value::Null, "an empty value is written as null");
        assert_eq!(zoe["lidmaatschap"]["team"], json!("MO15-2"), "{check}: untracked fields survive");
        assert_ne!(zoe["_rev"], json!(revision));
        // Verified by reading the document again: the PUT's answer is not the document.
        let found = connector
            .lookup(&["/email".to_string()], &Lookup::Ids(vec![RecordId::new("lid-0002")]))
            .await
            .expect("looked up");
        assert_eq!(found[0].values, [json!("zoë@bakker.frl")]);
    }
}

#[tokio::test]
async fn a_create_takes_its_id_from_the_answer_and_a_delete_names_its_revision() {
    let server = club().await;
    let mut connector = RestConnector::open(&feed_config(&server)).expect("a valid configuration");
    let results = connector
        .apply(&[Write::Create {
            fields: vec![
                set("/key", json!("NL-0121"), None),
                set("/name", json!("Noor El Amrani"), None),
                set("/email", json!("noor.elamrani@hotmail.nl"), None),
                set("/mobile", json!("+31 6 87654321"), None),
            ],
        }])
        .await
        .expect("applied");
    assert_eq!(results[0].as_ref().map(|outcome| outcome.id.as_str()).ok(), Some("lid-0121"), "{results:?}");

    let revision = server.record(6).unwrap()["_rev"].as_str().unwrap().to_string();
    let results = connector.apply(&[Write::Delete { id: RecordId::new("lid-0006") }]).await.expect("applied");
    assert!(results[0].is_ok(), "{results:?}");
    let delete = server.requests().into_iter().find(|request| request.method == "DELETE").expect("a DELETE");
    assert!(delete.path.ends_with(&format!("/sync/docs/lid-0006?rev={revision}")), "{}", delete.path);
    assert!(server.record(6).is_none());

    // By If-Match; and a document saved meanwhile is not deleted.
    let mut config = feed_config(&server);
    config.revision =
        Some(Revision { path: "/_rev".into(), update: None, delete: Some(RevisionIn::IfMatch), param: None });
    let mut connector = RestConnector::open(&config).expect("a valid configuration");
    server.change_after_read(7, json!({"name": "Lid Zeven"}));
    let results = connector.apply(&[Write::Delete { id: RecordId::new("lid-0007") }]).await.expect("applied");
    assert!(matches!(results[0], Err(ConnectorError::TargetMoved { .. })), "{results:?}");
    assert_eq!(server.record(7).unwrap()["name"], json!("Lid Zeven"));
    let results = connector.apply(&[Write::Delete { id: RecordId::new("lid-0007") }]).await.expect("applied");
    assert!(results[0].is_ok(), "{results:?}");
    let delete = server.requests().into_iter().rev().find(|request| request.method == "DELETE").unwrap();
    assert!(delete.if_match.is_some() && !delete.path.contains("rev="), "{delete:?}");
    assert!(server.record(7).is_none());
    let results = connector.apply(&[Write::Delete { id: RecordId::new("lid-0007") }]).await.expect("applied");
    assert!(matches!(results[0], Err(ConnectorError::NotFound { .. })), "{results:?}");
}

/// The generic settings on a database of a real CouchDB API.
fn couch_config(couch: &CouchServer, database: &str) -> RestConfig {
    let root = format!("{}/{database}", couch.url());
    let mut config = RestConfig::new(&format!("{root}/_changes"));
    config.query.insert("include_docs".into(), "true".into());
    config.query.insert("style".into(), "main_only".into());
    config.feed = Some(Feed {
        since_param: Some("since".into()),
        limit_param: Some("limit".into()),
        sequence: Some("/last_seq".into()),
        rows: Some("/results".into()),
        deleted: Some("/deleted".into()),
        document: Some("/doc".into()),
        id: Some("/id".into()),
        skip_ids: vec!["_design/".into()],
        ..Feed::default()
    });
    config.id = Some("/_id".into());
    config.item_url = Some(format!("{root}/{{id}}"));
    config.create_url = Some(root);
    config.create = Some(Create { id: Some("/id".into()), ..Create::default() });
    config.whole_document = Some(true);
    config.revision = Some(Revision { path: "/_rev".into(), update: None, delete: None, param: None });
    config.page_size = Some(4);
    config
}

#[tokio::test]
async fn the_generic_feed_settings_read_and_write_a_real_couchdb_api() {
    let Some(couch) = CouchServer::shared() else { return };
    let database = "rest_feed_club";
    couch.create_database(database);
    let design = json!({"_id": "_design/club", "views": {"by_key": {"map": "function (doc) { emit(doc.key, null); }"}}});
    assert_eq!(couch.request("PUT", &format!("/{database}/_design/club"), Some(&design)).status, 201);
    for (index, member) in dutch_members().into_iter().enumerate() {
        let id = format!("lid-{:04}", index + 1);
        let answer = couch.request("PUT", &format!("/{database}/{id}"), Some(&member));
        assert_eq!(answer.status, 201, "{answer:?}");
    }
    let rev = |id: &str| {
        couch.request("GET", &format!("/{database}/{id}"), None).body["_rev"].as_str().map(str::to_string)
    };
    let mut connector = RestConnector::open(&couch_config(couch, database)).expect("a valid configuration");
    let probe = connector.check(&PATHS.map(String::from)).await.expect("checked");
    assert!(probe.capabilities.sequences && probe.capabilities.conditional_writes);

    let (all, sequence) = read_with_sequence(&mut connector, &request(None)).await;
    assert_eq!(all.len(), 6, "the design document is no record: {all:?}");
    let members = by_key(&all);
    assert_eq!(members["NL-0005"].id.as_str(), "lid-0005");
    assert_eq!(members["NL-0005"].values[1], json!("Fleur Jansen-Ødegaard"));
    assert_eq!(members["NL-0003"].values[2], json!(""));
    assert_eq!(members["NL-0004"].values[3], Value::Null);

    // The app edits Joost and deletes Daan; fieldsync updates Zoë and creates Noor.
    let mut joost = couch.request("GET", &format!("/{database}/lid-0003"), None).body;
    joost["email"] = json!("joost@vanthek.nl");
    assert_eq!(couch.request("PUT", &format!("/{database}/lid-0003"), Some(&joost)).status, 201);
    let daan = rev("lid-0006").unwrap();
    assert_eq!(couch.request("DELETE", &format!("/{database}/lid-0006?rev={daan}"), None).status, 200);
    let zoe_before = rev("lid-0002").unwrap();
    let results = connector
        .apply(&[
            Write::Update {
                id: RecordId::new("lid-0002"),
                fields: vec![set("/mobile", json!("+31 6 20000000"), Some(json!("+31 6 23456789")))],
            },
            Write::Create {
                fields: vec![
                    set("/key", json!("NL-0007"), None),
                    set("/name", json!("Noor El Amrani"), None),
                    set("/email", json!("noor.elamrani@hotmail.nl"), None),
                ],
            },
        ])
        .await
        .expect("applied");
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let noor = results[1].as_ref().unwrap().id.clone();
    let zoe = couch.request("GET", &format!("/{database}/lid-0002"), None).body;
    assert_eq!(zoe["mobile"], json!("+31 6 20000000"));
    assert_eq!(
        zoe["lidmaatschap"],
        json!({"sinds": "2019-08-15", "team": "MO15-2"}),
        "untracked fields survive"
    );
    assert_ne!(zoe["_rev"].as_str(), Some(zoe_before.as_str()));
    let found =
        connector.lookup(&PATHS.map(String::from), &Lookup::Ids(vec![noor.clone()])).await.expect("found");
    assert_eq!(found[0].values[1], json!("Noor El Amrani"), "the create's id is the document's");

    let (changes, reached) =
        read_with_sequence(&mut connector, &request(Some(Since::Sequence(sequence)))).await;
    let live = by_key(&changes);
    assert_eq!(live.keys().collect::<Vec<_>>(), ["NL-0002", "NL-0003", "NL-0007"], "{changes:?}");
    let deleted: Vec<&str> =
        changes.iter().filter(|record| record.deleted).map(|record| record.id.as_str()).collect();
    assert_eq!(deleted, ["lid-0006"]);
    let (quiet, _) = read_with_sequence(&mut connector, &request(Some(Since::Sequence(reached)))).await;
    assert!(quiet.is_empty(), "{quiet:?}");

    // A value the app changed meanwhile is not overwritten; a delete carries the revision.
    let results = connector
        .apply(&[
            Write::Update {
                id: RecordId::new("lid-0003"),
                fields: vec![set("/email", json!("joost@example.nl"), Some(json!("")))],
            },
            Write::Delete { id: RecordId::new("lid-0001") },
        ])
        .await
        .expect("applied");
    assert!(matches!(results[0], Err(ConnectorError::TargetMoved { .. })), "{results:?}");
    assert!(results[1].is_ok(), "{results:?}");
    let joost = couch.request("GET", &format!("/{database}/lid-0003"), None).body;
    assert_eq!(joost["email"], json!("joost@vanthek.nl"));
    assert_eq!(couch.request("GET", &format!("/{database}/lid-0001"), None).status, 404);
}

#[tokio::test]
async fn a_record_read_back_without_its_revision_is_never_passed_over_in_the_feed() {
    let server = club().await;
    let mut config = feed_config(&server);
    // The documents hold no revision where this configuration says: a read-back tells nothing.
    config.revision = Some(Revision { path: "/version".into(), update: None, delete: None, param: None });
    let mut connector = RestConnector::open(&config).expect("a valid configuration");
    let (_, sequence) = read_with_sequence(&mut connector, &request(None)).await;
    let results = connector
        .apply(&[Write::Create {
            fields: vec![
                set("/key", json!("NL-0121"), None),
                set("/name", json!("Sanne de Graaf"), None),
                set("/email", json!("sanne.degraaf@ziggo.nl"), None),
            ],
        }])
        .await
        .expect("applied");
    let sanne = results[0].as_ref().expect("created").id.clone();
    connector.lookup(&PATHS.map(String::from), &Lookup::Ids(vec![sanne.clone()])).await.expect("read back");
    // Her trainer corrects the e-mail address before fieldsync's run ends.
    server.update(number_of(&server, "NL-0121"), json!({"email": "sanne@degraaf.nl"}));
    let past =
        connector.feed_past_own_writes(&sequence, &[sanne.clone()].into()).await.expect("the feed is read");
    let (read, _) =
        read_with_sequence(&mut connector, &request(Some(Since::Sequence(past.unwrap_or(sequence))))).await;
    let found = read.iter().find(|record| record.id == sanne).expect("the trainer's edit is read");
    assert_eq!(found.values[2], json!("sanne@degraaf.nl"));
}
