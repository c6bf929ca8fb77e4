//! The `fieldsync` binary against a real CouchDB API (pouchdb-server, `testkit::couchdb`): the
//! README's CouchDB example as written, keeping a club's SQLite register of 1,000 members in step
//! with the member documents of a club app's database that also holds trainers, teams and a
//! design document — a first sync, edits on both sides, a conflict settled by the rule, deletes
//! both ways, runs that read only what changed since the sequence the last one reached, and
//! quiet runs that leave the database's `update_seq` where it was; and an edit the app makes
//! between fieldsync's read of a document and its write (a stale `_rev`), which is not
//! overwritten but merged by the next run.

use std::collections::BTreeMap;
use std::path::Path;

use fieldsync_connector::testkit::couchdb::CouchServer;
use fieldsync_test_support::{Fieldsync, readme_blocks};
use rusqlite::{Connection, params};
use serde_json::{Value, json};

use crate::support::fieldsync as binary;

const PASSWORD: &str = "Oranje-boven-2026!";
const MEMBERS: usize = 1_000;

/// The README's CouchDB example, with the test server's address in place of the example's.
fn readme_example(server: &CouchServer) -> String {
    let block = readme_blocks("## CouchDB", "toml").remove(0);
    assert!(block.contains("https://couch.club.example:6984"), "the example's address changed");
    block.replace("https://couch.club.example:6984", &server.url())
}

fn fieldsync<'a>(dir: &Path, server: &'a CouchServer) -> Fieldsync<'a> {
    binary(dir).secret("COUCH_PASSWORD", PASSWORD).log(|| server.log_tail())
}

/// A member of the club: KNVB id, first and last name, e-mail (none, empty or an address), and
/// a Dutch mobile number in E.164 (or none).
struct Member {
    knvb_id: String,
    email: Option<String>,
    mobile: Option<String>,
}

const FIRST: [&str; 10] = ["Daan", "Sanne", "Joël", "Fleur", "Bram", "Anouk", "Thijs", "Eline", "Sem", "Zoë"];
const LAST: [&str; 8] =
    ["de Vries", "Jansen", "van den Berg", "Bakker", "Visser", "Smit", "Meijer", "de Boer"];

fn member(number: usize) -> Member {
    let first = FIRST[number % FIRST.len()];
    let last = LAST[(number / FIRST.len()) % LAST.len()];
    let local: String = format!("{first}.{last}").to_lowercase().replace(' ', "").replace(['ë', 'ö'], "e");
    let email = match number % 17 {
        0 => None,
        1 => Some(String::new()),
        _ => Some(format!("{local}{number}@example.nl")),
    };
    // 06-1 to 06-5 with eight digits: mobile numbers of the Dutch numbering plan.
    let mobile = (!number.is_multiple_of(13))
        .then(|| format!("+316{}{:07}", 1 + number % 5, 1_000_000 + number * 7_919 % 8_999_999));
    Member { knvb_id: format!("KNVB{:07}", 3_100_000 + number), email, mobile }
}

/// The club's register: `members` with every member, as the README's link reads it.
fn club_register(dir: &Path) -> Connection {
    let club = Connection::open(dir.join("club.db")).unwrap();
    club.execute_batch(
        "CREATE TABLE members (knvb_id TEXT PRIMARY KEY, email TEXT, mobile TEXT, updated_at TEXT NOT NULL);",
    )
    .unwrap();
    let insert = "INSERT INTO members VALUES (?1, ?2, ?3, datetime('now', '-1 hour'))";
    for number in 0..MEMBERS {
        let member = member(number);
        club.execute(insert, params![member.knvb_id, member.email, member.mobile]).unwrap();
    }
    club
}

/// The app's database: an admin `sync` (which ends the server's open access), the database
/// `club`, and what the link must never touch: trainers, a team and a design document.
fn app_database(server: &CouchServer) -> Vec<(String, String)> {
    let made = server.request("PUT", "/_config/admins/sync", Some(&json!(PASSWORD)));
    assert_eq!(made.status, 200, "making the admin: {made:?}");
    let answer = server.request_as("PUT", "/club", None, Some(("sync", PASSWORD)));
    assert_eq!(answer.status, 201, "making the database: {answer:?}");
    let others = json!({"docs": [
        {"_id": "trainer:ilse", "type": "trainer", "name": "Ilse de Groot", "contact": {"email": "ilse@example.nl"}},
        {"_id": "trainer:noel", "type": "trainer", "name": "Noël Verbeek", "knvb_id": "KNVB3100004"},
        {"_id": "team:JO11-1", "type": "team", "name": "JO11-1", "players": ["KNVB3100001", "KNVB3100002"]},
        {"_id": "_design/members", "views": {"by_email": {"map": "function (doc) { emit(doc.contact && doc.contact.email); }"}}},
    ]});
    let answer = app(server, "POST", "/_bulk_docs", Some(&others));
    answer
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|row| (row["id"].as_str().unwrap().to_string(), row["rev"].as_str().unwrap().to_string()))
        .collect()
}

/// A request to the database `club` as its admin.
fn app(
    server: &CouchServer,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> fieldsync_connector::testkit::couchdb::Answer {
    server.request_as(method, &format!("/club{path}"), body, Some(("sync", PASSWORD)))
}

/// Every document of the database by id, design documents included.
fn documents(server: &CouchServer) -> BTreeMap<String, Value> {
    let answer = app(server, "GET", "/_all_docs?include_docs=true", None);
    assert_eq!(answer.status, 200, "{answer:?}");
    answer.body["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| (row["id"].as_str().unwrap().to_string(), row["doc"].clone()))
        .collect()
}

fn update_seq(server: &CouchServer) -> Value {
    app(server, "GET", "", None).body["update_seq"].clone()
}

/// Sets `value` at `/contact/FIELD` of member `knvb_id`'s document, as the app's users do.
fn edit_in_app(server: &CouchServer, knvb_id: &str, field: &str, value: Value) {
    let path = format!("/member:{knvb_id}");
    let mut document = app(server, "GET", &path, None).body;
    document["contact"][field] = value;
    let answer = app(server, "PUT", &path, Some(&document));
    assert_eq!(answer.status, 201, "editing {knvb_id}: {answer:?}");
}

/// What the club's register holds of member `knvb_id`: e-mail and mobile, or `None` when the
/// row is gone.
fn in_register(club: &Connection, knvb_id: &str) -> Option<(Option<String>, Option<String>)> {
    club.query_row("SELECT email, mobile FROM members WHERE knvb_id = ?1", [knvb_id], |row| {
        Ok((row.get(0)?, row.get(1)?))
    })
    .ok()
}

/// A text value as the app holds it: absent, null and "" are all no value.
fn text(value: &Value) -> Option<&str> {
    value.as_str().filter(|text| !text.is_empty())
}

#[test]
fn the_readme_couchdb_example_keeps_a_club_register_and_an_apps_member_documents_in_step() {
    let Some(server) = CouchServer::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("fieldsync.toml"), readme_example(&server)).unwrap();
    let club = club_register(dir.path());
    let untouched = app_database(&server);
    let fieldsync = fieldsync(dir.path(), &server);

    let check = fieldsync.output(&["check"]);
    assert_eq!(check.status.code(), Some(0), "{}", String::from_utf8_lossy(&check.stderr));

    // The first sync makes a document for every member, with the id the example's template gives.
    let first = fieldsync.run_ending("the first sync", &[], 0).report();
    assert_eq!(first["stats"]["writes_done"], json!(MEMBERS), "{first:#}");
    let docs = documents(&server);
    for number in 0..MEMBERS {
        let member = member(number);
        let doc = &docs[&format!("member:{}", member.knvb_id)];
        assert_eq!(doc["type"], json!("member"), "{doc}");
        assert_eq!(doc["knvb_id"], json!(member.knvb_id));
        assert_eq!(
            text(&doc["contact"]["email"]),
            member.email.as_deref().filter(|email| !email.is_empty()),
            "{doc}"
        );
        assert_eq!(text(&doc["contact"]["mobile"]), member.mobile.as_deref(), "{doc}");
    }
    for (id, rev) in &untouched {
        assert_eq!(docs[id]["_rev"], json!(rev), "{id} was written");
    }

    // The documents it wrote came after the sequence the first listing started from, but the
    // first sync moved its cursor past them: the next run reads none of them back.
    let seq = update_seq(&server);
    let quiet = fieldsync.run_ending("a quiet run", &[], 0).report();
    assert_eq!(
        (&quiet["stats"]["right"]["mode"], &quiet["stats"]["right"]["read"]),
        (&json!("incremental"), &json!(0)),
        "{quiet:#}"
    );
    assert_eq!(quiet["stats"]["writes_done"], json!(0));
    assert_eq!(update_seq(&server), seq, "a quiet run wrote to the database");

    // Edits on both sides, a conflict and a delete in the app.
    for number in [10, 20, 30, 40, 50] {
        let knvb_id = member(number).knvb_id;
        club.execute(
            "UPDATE members SET email = ?2, updated_at = datetime('now') WHERE knvb_id = ?1",
            params![knvb_id, format!("nieuw.{number}@vvoranje.nl")],
        )
        .unwrap();
    }
    for number in [11, 21, 31, 41, 51] {
        edit_in_app(&server, &member(number).knvb_id, "mobile", json!(format!("+3165555{number:04}")));
    }
    // The register's edit is half an hour old, the app's is now: the app's wins.
    let contested = member(60).knvb_id;
    club.execute(
        "UPDATE members SET email = 'register@example.nl', updated_at = datetime('now', '-30 minutes') WHERE knvb_id = ?1",
        [&contested],
    )
    .unwrap();
    edit_in_app(&server, &contested, "email", json!("app@example.nl"));
    let gone_in_app = member(70).knvb_id;
    let doc = app(&server, "GET", &format!("/member:{gone_in_app}"), None).body;
    let deleted =
        app(&server, "DELETE", &format!("/member:{gone_in_app}?rev={}", doc["_rev"].as_str().unwrap()), None);
    assert_eq!(deleted.status, 200, "{deleted:?}");

    let edited = fieldsync.run_ending("a run after edits on both sides", &[], 0).report();
    assert_eq!(edited["stats"]["right"]["mode"], json!("incremental"), "{edited:#}");
    // Only what changed in the app: five mobiles, the contested e-mail and the delete.
    assert_eq!(edited["stats"]["right"]["read"], json!(7), "{edited:#}");
    assert_eq!(edited["stats"]["conflicts_resolved"], json!(1), "{edited:#}");
    let docs = documents(&server);
    for number in [10, 20, 30, 40, 50] {
        let doc = &docs[&format!("member:{}", member(number).knvb_id)];
        assert_eq!(doc["contact"]["email"], json!(format!("nieuw.{number}@vvoranje.nl")), "{doc}");
    }
    for number in [11, 21, 31, 41, 51] {
        let mobile = in_register(&club, &member(number).knvb_id).unwrap().1;
        assert_eq!(mobile.as_deref(), Some(format!("+3165555{number:04}").as_str()));
    }
    assert_eq!(in_register(&club, &contested).unwrap().0.as_deref(), Some("app@example.nl"));
    assert_eq!(docs[&format!("member:{contested}")]["contact"]["email"], json!("app@example.nl"));
    assert_eq!(in_register(&club, &gone_in_app), None, "the app's delete reached the register");

    // A member struck from the register: a full read finds it, and the app's document goes.
    let struck = member(80).knvb_id;
    club.execute("DELETE FROM members WHERE knvb_id = ?1", [&struck]).unwrap();
    let full = fieldsync.run_ending("a full run after a delete in the register", &["--full"], 0).report();
    assert_eq!(full["stats"]["writes_done"], json!(1), "{full:#}");
    // CouchDB says "deleted", pouchdb-server "missing": a tombstone either way.
    let answer = app(&server, "GET", &format!("/member:{struck}"), None);
    assert_eq!(answer.status, 404, "{answer:?}");

    // Settled: the trainers, the team and the design document were never written, and runs with
    // nothing new leave the database as it is.
    fieldsync.run_ending("the run after the delete", &[], 0);
    let docs = documents(&server);
    for (id, rev) in &untouched {
        assert_eq!(docs[id]["_rev"], json!(rev), "{id} was written");
    }
    assert_eq!(docs.keys().filter(|id| id.starts_with("member:")).count(), MEMBERS - 2);
    let seq = update_seq(&server);
    let quiet = fieldsync.run_ending("a quiet run at the end", &[], 0).report();
    assert_eq!(
        (&quiet["stats"]["right"]["read"], &quiet["stats"]["writes_done"]),
        (&json!(0), &json!(0)),
        "{quiet:#}"
    );
    let full = fieldsync.run_ending("a quiet full run at the end", &["--full"], 0).report();
    assert_eq!(full["stats"]["writes_done"], json!(0), "{full:#}");
    assert_eq!(update_seq(&server), seq, "a quiet run wrote to the database");
}

/// The README's example over a server of its own, in a fresh directory, after its first sync.
struct FirstSynced {
    /// Never dropped: a proxy's hook holds it until the test binary ends.
    server: &'static CouchServer,
    dir: tempfile::TempDir,
    config: String,
    club: Connection,
}

impl FirstSynced {
    fn new() -> Option<Self> {
        let server: &'static CouchServer = Box::leak(Box::new(CouchServer::start()?));
        let dir = tempfile::tempdir().unwrap();
        let config = readme_example(server);
        std::fs::write(dir.path().join("fieldsync.toml"), &config).unwrap();
        let club = club_register(dir.path());
        app_database(server);
        fieldsync(dir.path(), server).run_ending("the first sync", &[], 0);
        Some(Self { server, dir, config, club })
    }

    /// From now on fieldsync reaches the server through a proxy that, just before the first
    /// request holding `marker`, has someone in the app change member `knvb_id`'s mobile
    /// number to +31687654321.
    fn mobile_edited_in_app_before(&self, marker: &'static str, knvb_id: &str) {
        let (server, knvb_id) = (self.server, knvb_id.to_string());
        let proxy = self.server.proxy_running_before(marker, move || {
            edit_in_app(server, &knvb_id, "mobile", json!("+31687654321"));
        });
        let config = self.config.replace(&self.server.url(), &proxy);
        std::fs::write(self.dir.path().join("fieldsync.toml"), config).unwrap();
    }
}

#[test]
fn an_app_edit_between_fieldsyncs_read_and_its_write_is_not_overwritten() {
    let Some(synced) = FirstSynced::new() else { return };
    let FirstSynced { server, ref club, .. } = synced;
    let fieldsync = fieldsync(synced.dir.path(), server);

    // The register corrects a member's e-mail; in the app, someone changes the same member's
    // mobile number after fieldsync read the document to update it, before its write arrives.
    let member = member(42).knvb_id;
    club.execute(
        "UPDATE members SET email = 'correctie@vvoranje.nl', updated_at = datetime('now') WHERE knvb_id = ?1",
        [&member],
    )
    .unwrap();
    synced.mobile_edited_in_app_before("/_bulk_docs ", &member);

    // The write carries the document's old revision: refused as moved, nothing overwritten.
    let moved = fieldsync.run_ending("the run whose write meets the app's edit", &[], 0).report();
    assert_eq!(moved["stats"]["writes_done"], json!(0), "{moved:#}");
    assert_eq!(moved["failures"][0]["outcome"], json!("moved"), "{moved:#}");
    let doc = app(server, "GET", &format!("/member:{member}"), None).body;
    assert_eq!(doc["contact"]["mobile"], json!("+31687654321"), "{doc}");
    // The next run reads the document again and merges both edits.
    let merged = fieldsync.run_ending("the run after", &[], 0).report();
    assert_eq!(merged["stats"]["writes_done"], json!(2), "{merged:#}");
    let doc = app(server, "GET", &format!("/member:{member}"), None).body;
    assert_eq!(
        (&doc["contact"]["email"], &doc["contact"]["mobile"]),
        (&json!("correctie@vvoranje.nl"), &json!("+31687654321")),
        "{doc}"
    );
    assert_eq!(
        in_register(club, &member),
        Some((Some("correctie@vvoranje.nl".into()), Some("+31687654321".into())))
    );
    assert_eq!(fieldsync.run_ending("a quiet run", &[], 0).report()["stats"]["writes_done"], json!(0));
}

#[test]
fn an_app_edit_right_after_fieldsyncs_write_is_read_by_the_next_run() {
    let Some(synced) = FirstSynced::new() else { return };
    let FirstSynced { server, ref club, .. } = synced;
    let fieldsync = fieldsync(synced.dir.path(), server);

    // The register corrects two members' e-mails; fieldsync writes both documents, and in the
    // app someone changes one of them again before fieldsync looks past its own writes.
    let (first, second) = (member(42).knvb_id, member(43).knvb_id);
    for knvb_id in [&first, &second] {
        club.execute(
            "UPDATE members SET email = ?2, updated_at = datetime('now') WHERE knvb_id = ?1",
            params![knvb_id, format!("correctie.{knvb_id}@vvoranje.nl")],
        )
        .unwrap();
    }
    // Just before fieldsync asks the database how far its sequence stands after the writes.
    synced.mobile_edited_in_app_before("GET /club ", &first);
    let written = fieldsync.run_ending("the run that writes both", &[], 0).report();
    assert_eq!(written["stats"]["writes_done"], json!(2), "{written:#}");

    // The cursor moved past the untouched document's write only: the next run reads the one
    // the app changed, and its mobile reaches the register.
    let next = fieldsync.run_ending("the run after", &[], 0).report();
    assert_eq!(next["stats"]["right"]["read"], json!(1), "{next:#}");
    assert_eq!(in_register(club, &first).unwrap().1.as_deref(), Some("+31687654321"));
    let quiet = fieldsync.run_ending("a quiet run", &[], 0).report();
    assert_eq!(
        (&quiet["stats"]["right"]["read"], &quiet["stats"]["writes_done"]),
        (&json!(0), &json!(0)),
        "{quiet:#}"
    );
}
