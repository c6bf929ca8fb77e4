//! What is particular to CouchDB, against a real pouchdb-server: revisions, validation,
//! attachments, the changes feed, documents of another type, and what `check` says.

use fieldsync_connector::testkit::couchdb::CouchServer;
use fieldsync_connector::testkit::read_all;
use fieldsync_connector::{
    Connector, ConnectorError, ConnectorRecord, FieldWrite, Lookup, ReadRequest, Secret, Since, Write,
};
use fieldsync_connector_couchdb::{Auth, CouchConfig, CouchConnector};
use fieldsync_model::RecordId;
use serde_json::{Value as Json, json};

use crate::{club_database, document, edit, members_config, server};

/// A member's KNVB id, first and last name, e-mail address and mobile number.
type Person = (&'static str, &'static str, &'static str, Option<&'static str>, Option<&'static str>);

/// Members of a Dutch club as the club's app keeps them: names with diacritics, +31 6 mobile
/// numbers, some without an e-mail address or phone, a nested address the link does not track.
fn members() -> Vec<Json> {
    let people: [Person; 8] = [
        ("BBKX060", "Zoë", "de Vries", Some("zoe.devries@ziggo.nl"), Some("+31 6 12345678")),
        ("CCLP214", "Daan", "Janssen", Some("daan.janssen@gmail.com"), Some("+31 6 23456789")),
        ("DDMQ305", "Noëlle", "van den Berg", None, Some("+31 6 34567890")),
        ("EENR416", "Thijs", "Bakker", Some("thijs@bakker-loodgieters.nl"), None),
        ("FFOS527", "Anouk", "Smit", Some(""), Some("+31 6 45678901")),
        ("GGPT638", "Joëlle", "Hendriks", Some("joelle.hendriks@kpnmail.nl"), Some("+31 6 56789012")),
        ("HHQU749", "Bram", "Visser", Some("bram.visser@outlook.com"), Some("+31 6 18273645")),
        ("IIRV850", "Fenna", "Mulder", None, None),
    ];
    people
        .iter()
        .map(|(knvb_id, first, last, email, mobile)| {
            let mut contact = json!({});
            if let Some(email) = email {
                contact["email"] = json!(email);
            }
            if let Some(mobile) = mobile {
                contact["mobile"] = json!(mobile);
            }
            json!({
                "_id": format!("member:{knvb_id}"),
                "type": "member",
                "knvb_id": knvb_id,
                "first_name": first,
                "last_name": last,
                "contact": contact,
                "address": { "street": "Oranjestraat 12", "postcode": "3511 AB", "city": "Utrecht" },
            })
        })
        .collect()
}

/// A trainer document of the same person as member BBKX060, and a team: other types.
fn others() -> Vec<Json> {
    vec![
        json!({ "_id": "trainer:BBKX060", "type": "trainer", "knvb_id": "BBKX060", "first_name": "Zoë",
                "last_name": "de Vries", "contact": { "email": "trainer.zoe@vvoranje.nl" }, "teams": ["JO11-1"] }),
        json!({ "_id": "team:JO11-1", "type": "team", "name": "JO11-1", "trainers": ["trainer:BBKX060"] }),
    ]
}

fn paths() -> Vec<String> {
    ["/knvb_id", "/first_name", "/last_name", "/contact/email", "/contact/mobile"].map(String::from).to_vec()
}

fn update(id: &str, fields: &[(&str, Json, Option<Json>)]) -> Write {
    Write::Update {
        id: RecordId::new(id),
        fields: fields
            .iter()
            .map(|(path, value, expected)| FieldWrite {
                path: (*path).to_string(),
                value: value.clone(),
                expected: expected.clone(),
            })
            .collect(),
    }
}

fn ids(records: &[ConnectorRecord]) -> Vec<String> {
    let mut ids: Vec<String> = records.iter().map(|record| record.id.as_str().to_string()).collect();
    ids.sort();
    ids
}

/// Seeds a club database of members and other documents, and opens the connector on it.
fn club(server: &CouchServer, purpose: &str) -> (String, CouchConnector) {
    let mut documents = members();
    documents.extend(others());
    let database = club_database(server, purpose, &documents);
    let connector = CouchConnector::open(&members_config(server, &database)).expect("the connector opens");
    (database, connector)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_edited_between_read_and_write_is_target_moved_and_not_overwritten() {
    let Some(server) = server() else { return };
    let mut documents = members();
    documents.extend(others());
    let database = club_database(server, "stale_rev", &documents);
    // The club's app changes Daan's mobile number after fieldsync read the document to update
    // it, before its write arrives: the write carries a stale `_rev`.
    let edited_database = database.clone();
    let url = server.proxy_running_before("/_bulk_docs ", move || {
        edit(server, &edited_database, "member:CCLP214", "/contact/mobile", json!("+31 6 87654321"));
    });
    let mut config = members_config(server, &database);
    config.url = fieldsync_connector_couchdb::ServerUrl::new(url);
    let mut connector = CouchConnector::open(&config).expect("the connector opens");
    let writes = [
        update(
            "member:CCLP214",
            &[("/contact/email", json!("daan@janssen.nl"), Some(json!("daan.janssen@gmail.com")))],
        ),
        update("member:HHQU749", &[("/first_name", json!("Bram-Jan"), Some(json!("Bram")))]),
    ];
    let results = connector.apply(&writes).await.expect("the batch is sent");
    assert!(
        matches!(&results[0], Err(ConnectorError::TargetMoved { id }) if id.as_str() == "member:CCLP214"),
        "{:?}",
        results[0]
    );
    assert!(results[1].is_ok(), "{:?}", results[1]);
    let daan = document(server, &database, "member:CCLP214");
    assert_eq!(daan["contact"], json!({ "email": "daan.janssen@gmail.com", "mobile": "+31 6 87654321" }));
    assert!(daan["_rev"].as_str().unwrap().starts_with("2-"), "{daan}");
    assert_eq!(document(server, &database, "member:HHQU749")["first_name"], "Bram-Jan");
}

#[tokio::test]
async fn a_validation_rejection_is_dead_with_its_reason_while_the_rest_of_the_batch_is_written() {
    let Some(server) = server() else { return };
    let (database, mut connector) = club(server, "validation");
    let create = Write::Create {
        fields: vec![
            FieldWrite { path: "/knvb_id".into(), value: json!("JJSW961"), expected: None },
            FieldWrite { path: "/first_name".into(), value: json!("Sem"), expected: None },
            FieldWrite { path: "/last_name".into(), value: json!("Peters"), expected: None },
            FieldWrite { path: "/contact/mobile".into(), value: json!("+31 6 29384756"), expected: None },
        ],
    };
    let writes = [
        update(
            "member:BBKX060",
            &[("/contact/mobile", json!("+31 6 11223344"), Some(json!("+31 6 12345678")))],
        ),
        update("member:EENR416", &[("/contact/email", json!("thijs bij bakker"), None)]),
        create,
        update("member:IIRV850", &[("/contact/email", json!("fenna.mulder@hetnet.nl"), Some(Json::Null))]),
    ];
    let results = connector.apply(&writes).await.expect("the batch is sent");
    assert!(results[0].is_ok(), "{:?}", results[0]);
    let rejected = &results[1];
    match rejected {
        Err(error @ ConnectorError::Rejected { message }) => {
            assert!(message.contains("contact.email must be an e-mail address"), "{message}");
            assert!(!error.is_retryable());
        }
        other => panic!("{other:?}, not Rejected"),
    }
    assert_eq!(
        results[2].as_ref().map(|outcome| outcome.id.as_str().to_string()).ok(),
        Some("member:JJSW961".into())
    );
    assert!(results[3].is_ok(), "{:?}", results[3]);
    assert_eq!(document(server, &database, "member:BBKX060")["contact"]["mobile"], "+31 6 11223344");
    assert_eq!(
        document(server, &database, "member:EENR416")["contact"]["email"],
        "thijs@bakker-loodgieters.nl"
    );
    let sem = document(server, &database, "member:JJSW961");
    assert_eq!((sem["type"].as_str(), sem["last_name"].as_str()), (Some("member"), Some("Peters")));
    assert_eq!(document(server, &database, "member:IIRV850")["contact"]["email"], "fenna.mulder@hetnet.nl");

    // The same create again is a conflict on its id: AlreadyExists, not a second Sem.
    let again = connector.apply(&writes[2..3]).await.expect("sent");
    assert!(
        matches!(&again[0], Err(ConnectorError::AlreadyExists { id }) if id.as_str() == "member:JJSW961"),
        "{again:?}"
    );
}

#[tokio::test]
async fn attachments_and_untracked_fields_survive_an_update() {
    let Some(server) = server() else { return };
    let (database, mut connector) = club(server, "attachments");
    let mut zoe = document(server, &database, "member:BBKX060");
    zoe["emergency_contact"] = json!({ "name": "Pieter de Vries", "phone": "+31 6 99887766" });
    zoe["x-club-app"] = json!({ "last_login": "2025-11-02T19:04:11Z", "push": true });
    zoe["_attachments"] = json!({
        "pasfoto.jpg": { "content_type": "image/jpeg", "data": "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAP8=" },
        "toestemming.pdf": { "content_type": "application/pdf", "data": "JVBERi0xLjQKJcTl8uXr" }
    });
    crate::save(server, &database, &zoe);
    let before = server.request("GET", &format!("/{database}/member:BBKX060?attachments=true"), None).body;

    let results = connector
        .apply(&[update(
            "member:BBKX060",
            &[("/contact/email", json!("zoe@devries.frl"), Some(json!("zoe.devries@ziggo.nl")))],
        )])
        .await
        .expect("sent");
    assert!(results[0].is_ok(), "{results:?}");
    let after = server.request("GET", &format!("/{database}/member:BBKX060?attachments=true"), None).body;
    assert_eq!(after["contact"], json!({ "email": "zoe@devries.frl", "mobile": "+31 6 12345678" }));
    for kept in ["emergency_contact", "x-club-app", "address", "first_name", "last_name", "type", "knvb_id"] {
        assert_eq!(after[kept], before[kept], "{kept}");
    }
    for name in ["pasfoto.jpg", "toestemming.pdf"] {
        assert_eq!(after["_attachments"][name]["data"], before["_attachments"][name]["data"], "{name}");
        assert_eq!(after["_attachments"][name]["content_type"], before["_attachments"][name]["content_type"]);
    }
    assert_ne!(after["_rev"], before["_rev"]);
}

#[tokio::test]
async fn a_full_reads_sequence_then_reading_the_changes_gives_only_the_changed_documents_and_the_deletes() {
    let Some(server) = server() else { return };
    let mut documents = members();
    documents.extend(others());
    let database = club_database(server, "changes", &documents);
    let mut config = members_config(server, &database);
    config.batch_size = Some(3);
    let mut connector = CouchConnector::open(&config).expect("the connector opens");
    let full = ReadRequest { paths: paths(), since: None };

    // A full read, in pages of 3; an edit made while it goes on is read by the next run.
    let first = connector.read_page(&full, None).await.expect("a page");
    let sequence = first.sequence.clone().expect("a full read gives the sequence taken before it");
    edit(server, &database, "member:IIRV850", "/contact/mobile", json!("+31 6 51234567"));
    let mut records = first.records.clone();
    let mut token = first.next.clone();
    while let Some(next) = token {
        let page = connector.read_page(&full, Some(&next)).await.expect("a page");
        assert_eq!(
            page.sequence.as_ref(),
            Some(&sequence),
            "every page of a full read gives the same sequence"
        );
        records.extend(page.records);
        token = page.next;
    }
    assert_eq!(records.len(), 8, "the members and nothing else: {:?}", ids(&records));
    assert!(records.iter().all(|record| record.id.as_str().starts_with("member:")));

    // Edits by the club's app, deletes (one by fieldsync, one by the app), a new member, and
    // edits to documents of other types.
    edit(server, &database, "member:CCLP214", "/contact/email", json!("daan@janssen.nl"));
    edit(server, &database, "member:GGPT638", "/last_name", json!("Hendriks-Özdemir"));
    edit(server, &database, "member:CCLP214", "/first_name", json!("Daniël"));
    edit(server, &database, "trainer:BBKX060", "/contact/email", json!("zoe@vvoranje.nl"));
    edit(server, &database, "team:JO11-1", "/name", json!("JO11-1 (voorjaar)"));
    let deleted =
        connector.apply(&[Write::Delete { id: RecordId::new("member:EENR416") }]).await.expect("sent");
    assert!(deleted[0].is_ok(), "{deleted:?}");
    let anouk = document(server, &database, "member:FFOS527");
    let gone = server.request(
        "DELETE",
        &format!("/{database}/member:FFOS527?rev={}", anouk["_rev"].as_str().unwrap()),
        None,
    );
    assert_eq!(gone.status, 200, "{gone:?}");
    let made = server.request(
        "PUT",
        &format!("/{database}/member:KKTX072"),
        Some(&json!({ "type": "member", "knvb_id": "KKTX072", "first_name": "Mees", "last_name": "Bos",
                      "contact": { "mobile": "+31 6 40302010" } })),
    );
    assert_eq!(made.status, 201, "{made:?}");

    let since = ReadRequest { paths: paths(), since: Some(Since::Sequence(sequence.clone())) };
    let mut changes = Vec::new();
    let mut token = None;
    let mut pages = 0;
    let mut last_sequence: Option<fieldsync_connector::Sequence>;
    loop {
        let page = connector.read_page(&since, token.as_ref()).await.expect("a page of changes");
        pages += 1;
        last_sequence = Some(page.sequence.clone().expect("each page of changes gives its sequence"));
        changes.extend(page.records);
        match page.next {
            Some(next) => token = Some(next),
            None => break,
        }
    }
    assert!(pages >= 3, "the feed is read in pages of 3: {pages}");
    assert_eq!(
        ids(&changes),
        [
            "member:CCLP214",
            "member:EENR416",
            "member:FFOS527",
            "member:GGPT638",
            "member:IIRV850",
            "member:KKTX072"
        ],
        "the changed members, each once, and the deletes"
    );
    for record in &changes {
        let deletion = ["member:EENR416", "member:FFOS527"].contains(&record.id.as_str());
        assert_eq!(record.deleted, deletion, "{record:?}");
        if deletion {
            assert!(record.values.iter().all(Json::is_null), "{record:?}");
        }
    }
    let daan = changes.iter().find(|record| record.id.as_str() == "member:CCLP214").unwrap();
    assert_eq!(daan.values[1], "Daniël");
    assert_eq!(daan.values[3], "daan@janssen.nl");
    let last_sequence = last_sequence.expect("a page was read");
    assert_ne!(last_sequence, sequence);

    // Nothing happened since: no rows, the same sequence.
    let quiet = ReadRequest { paths: paths(), since: Some(Since::Sequence(last_sequence.clone())) };
    let page = connector.read_page(&quiet, None).await.expect("a page");
    assert!(page.records.is_empty() && page.next.is_none(), "{page:?}");
    assert_eq!(page.sequence, Some(last_sequence));
}

#[tokio::test]
async fn documents_of_another_type_are_never_listed_or_written() {
    let Some(server) = server() else { return };
    let (database, mut connector) = club(server, "other_types");
    let read = read_all(&mut connector, &ReadRequest { paths: paths(), since: None }).await;
    assert_eq!(read.len(), 8);
    assert!(read.iter().all(|record| record.id.as_str().starts_with("member:")), "{:?}", ids(&read));

    let by_id = connector
        .lookup(
            &paths(),
            &Lookup::Ids(vec![
                RecordId::new("trainer:BBKX060"),
                RecordId::new("member:BBKX060"),
                RecordId::new("_design/club"),
            ]),
        )
        .await
        .expect("a lookup");
    assert_eq!(ids(&by_id), ["member:BBKX060"]);
    let by_key = connector
        .lookup(
            &paths(),
            &Lookup::Key { path: "/knvb_id".into(), values: vec!["BBKX060".into(), "ZZZZ999".into()] },
        )
        .await
        .expect("a lookup");
    assert_eq!(ids(&by_key), ["member:BBKX060"]);

    let trainer_before = document(server, &database, "trainer:BBKX060");
    let team_before = document(server, &database, "team:JO11-1");
    let results = connector
        .apply(&[
            update("trainer:BBKX060", &[("/contact/email", json!("zoe@devries.frl"), None)]),
            Write::Delete { id: RecordId::new("team:JO11-1") },
            Write::Delete { id: RecordId::new("_design/club") },
        ])
        .await
        .expect("sent");
    for result in &results {
        assert!(matches!(result, Err(ConnectorError::NotFound { .. })), "{results:?}");
    }
    assert_eq!(document(server, &database, "trainer:BBKX060"), trainer_before);
    assert_eq!(document(server, &database, "team:JO11-1"), team_before);
    assert_eq!(document(server, &database, "_design/club")["_id"], "_design/club");

    // An update may not turn a member into another type either.
    let results = connector
        .apply(&[update("member:DDMQ305", &[("/type", json!("trainer"), None)])])
        .await
        .expect("sent");
    assert!(matches!(&results[0], Err(ConnectorError::Rejected { .. })), "{results:?}");
    assert_eq!(document(server, &database, "member:DDMQ305")["type"], "member");
}

#[tokio::test]
async fn check_names_a_missing_database_and_a_refused_login_without_the_password() {
    // A server of its own: an admin ends the "admin party" for everyone.
    let Some(server) = CouchServer::start() else { return };
    server.create_database("club");
    let mut config = CouchConfig::new(&server.url(), "club");
    let probe = CouchConnector::open(&config).unwrap().check(&paths()).await.expect("check passes");
    assert_eq!((probe.kind, probe.records), ("couchdb", Some(0)));

    config.database = "clubb".into();
    let error = CouchConnector::open(&config).unwrap().check(&paths()).await.unwrap_err();
    assert!(matches!(error, ConnectorError::Misconfigured { .. }), "{error:?}");
    assert!(error.to_string().contains("database \"clubb\" does not exist"), "{error}");

    let made = server.request("PUT", "/_config/admins/clubadmin", Some(&json!("geheim-wachtwoord")));
    assert_eq!(made.status, 200, "{made:?}");
    config.database = "club".into();
    config.auth =
        Some(Auth::Basic { user: "clubadmin".into(), password: Secret::new("verkeerd-wachtwoord") });
    let error = CouchConnector::open(&config).unwrap().check(&paths()).await.unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, ConnectorError::Misconfigured { .. }), "{error:?}");
    assert!(message.contains("refused the login of user \"clubadmin\""), "{message}");
    assert!(!message.contains("wachtwoord"), "{message}");
    config.auth = Some(Auth::Basic { user: "clubadmin".into(), password: Secret::new("geheim-wachtwoord") });
    CouchConnector::open(&config)
        .unwrap()
        .check(&paths())
        .await
        .expect("check passes with the right password");
}

#[tokio::test]
async fn the_read_back_of_a_write_is_answered_from_the_documents_written_and_only_right_after_it() {
    let Some(server) = server() else { return };
    let (database, mut connector) = club(server, "read_back");
    let write = update("member:BBKX060", &[("/contact/email", json!("zoe@devries.frl"), None)]);
    let results = connector.apply(&[write]).await.expect("sent");
    assert!(results[0].is_ok(), "{results:?}");
    // Another app edits the document after the write: a read-back right after the write is
    // answered from what was written, without asking the server (which would show the edit).
    edit(server, &database, "member:BBKX060", "/contact/mobile", json!("+31 6 55544433"));
    let asked = Lookup::Ids(vec![RecordId::new("member:BBKX060"), RecordId::new("member:EENR416")]);
    let read_back = connector.lookup(&paths(), &asked).await.expect("a lookup");
    let zoe = read_back.iter().find(|record| record.id.as_str() == "member:BBKX060").expect("Zoë");
    assert_eq!((&zoe.values[3], &zoe.values[4]), (&json!("zoe@devries.frl"), &json!("+31 6 12345678")));
    assert_eq!(ids(&read_back), ["member:BBKX060", "member:EENR416"], "the rest is asked of the server");
    // Any other call forgets the written documents: the next look-up asks the server.
    let again = connector.lookup(&paths(), &asked).await.expect("a lookup");
    let zoe = again.iter().find(|record| record.id.as_str() == "member:BBKX060").expect("Zoë");
    assert_eq!((&zoe.values[3], &zoe.values[4]), (&json!("zoe@devries.frl"), &json!("+31 6 55544433")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_are_looked_up_by_bulk_get_and_by_all_docs_where_the_server_has_no_bulk_get() {
    let Some(server) = server() else { return };
    let (database, mut connector) = club(server, "bulk_get");
    // Fenna left the club: her document is deleted; a trainer is of another type.
    let fenna = document(server, &database, "member:IIRV850");
    let rev = fenna["_rev"].as_str().expect("a revision");
    let answer = server.request("DELETE", &format!("/{database}/member%3AIIRV850?rev={rev}"), None);
    assert_eq!(answer.status, 200, "{answer:?}");
    let asked = Lookup::Ids(
        ["member:CCLP214", "member:IIRV850", "member:ZZZZ999", "trainer:BBKX060", "member:FFOS527"]
            .map(RecordId::new)
            .to_vec(),
    );
    let found = connector.lookup(&paths(), &asked).await.expect("a lookup");
    assert_eq!(ids(&found), ["member:CCLP214", "member:FFOS527"], "{found:?}");
    let daan = found.iter().find(|record| record.id.as_str() == "member:CCLP214").expect("Daan");
    assert_eq!(daan.values, ["CCLP214", "Daan", "Janssen", "daan.janssen@gmail.com", "+31 6 23456789"]);
    logged(server, &format!("POST /{database}/_bulk_get ")).await;

    // A server without `_bulk_get` (CouchDB 1.x) is read by `_all_docs` with keys, the same.
    let url = server.proxy_answering(
        "/_bulk_get ",
        "HTTP/1.1 404 Object Not Found\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\
         Connection: close\r\n\r\n{\"error\":\"not_found\",\"reason\":\"missing\"}",
    );
    let mut config = members_config(server, &database);
    config.url = fieldsync_connector_couchdb::ServerUrl::new(url);
    let mut old = CouchConnector::open(&config).expect("the connector opens");
    let again = old.lookup(&paths(), &asked).await.expect("a lookup without _bulk_get");
    assert_eq!(again, found);
    logged(server, &format!("POST /{database}/_all_docs?include_docs=true ")).await;
    // Writes read the documents they update the same way.
    let results = old
        .apply(&[update("member:EENR416", &[("/contact/mobile", json!("+31 6 11122233"), None)])])
        .await
        .expect("sent");
    assert!(results[0].is_ok(), "{results:?}");
    assert_eq!(document(server, &database, "member:EENR416")["contact"]["mobile"], "+31 6 11122233");
}

/// Waits (up to ten seconds) until the server's log holds `line`, which it writes a moment after
/// it answers.
async fn logged(server: &CouchServer, line: &str) {
    for _ in 0..100 {
        if server.log_tail().contains(line) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the server's log has no {line:?}:\n{}", server.log_tail());
}
