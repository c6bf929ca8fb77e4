//! One link for each of a federation's clubs: the list of clubs is a table of the federation's
//! PostgreSQL database, each club keeps its members in an SQLite file of its own and the
//! federation keeps each club's in a schema of its own, and every club has its own webhook
//! secret. Each club syncs only its own members; a token limited to one club sees and touches
//! nothing of another's; a club added to the list is synced by the running service without a
//! restart and one removed stops, its history kept; a webhook signed with one club's secret on
//! another's route changes nothing.
#![cfg(unix)]

use std::path::Path;
use std::time::Instant;

use fieldsync_connector::testkit::postgres::PostgresServer;
use fieldsync_test_support::Fieldsync;
use fieldsync_test_support::members::{member_fields_toml, sqlite_connector_toml};
use rusqlite::{Connection, params};
use serde_json::Value;

use crate::serve::{OPERATE_TOKEN, PATIENCE, Service, hub_headers};
use crate::support::fieldsync;

/// How many clubs the federation lists at first.
const CLUBS: usize = 20;

/// The token of the secretary of club c03, limited to that club.
const C03_TOKEN: &str = "c03-secretaris-7d1e5b9a2c4f";

/// The id of club `number`.
fn club(number: usize) -> String {
    format!("c{number:02}")
}

/// The webhook secret of club `id`.
fn hook_secret(id: &str) -> String {
    format!("{id}-webhooks-are-signed-with-this")
}

/// Real-looking names: the federation's spelling, trailing spaces and all.
fn club_name(number: usize) -> String {
    const NAMES: [&str; 5] =
        ["HV De Zwaluwen", "Hockeyclub Utrecht ", "MHC Amersfoort", "ZVV 't Gooi", "HC Rotterdam"];
    format!("{} {number}", NAMES[number % NAMES.len()])
}

/// The configuration: the clubs from the federation's table, the club's SQLite file and the
/// federation's schema for each, a token for the service and one limited to club c03.
fn config(server: &PostgresServer) -> String {
    let port = server.port();
    format!(
        r#"state = "sqlite://state.db"

[organisations]
from = "postgres://fieldsync@127.0.0.1:{port}/federation"
query = "SELECT code AS id, naam AS name FROM clubs WHERE actief ORDER BY code"
every = "1s"

{club}modified_format = "rfc3339"

[connectors.federation]
kind = "postgres"
url = "postgres://fieldsync@127.0.0.1:{port}/federation"
schema = "club_${{org.id}}"
table = "members"
key = "relatienummer"
modified = "updated_at"
webhook = {{ secret = "${{CLUB_${{org.id}}_HOOK_SECRET}}", signature = {{ header = "X-Hub-Signature-256", prefix = "sha256=", encoding = "hex" }} }}

[links.members]
for_each = "organisations"
left = "club"
right = "federation"
key = {{ left = "relatienummer", right = "relatienummer" }}
first_sync = {{ strategy = "prefer", side = "club" }}
every = "1h"
{fields}
[server]
listen = "127.0.0.1:0"
max_concurrent_runs = 5

[[server.tokens]]
name = "ops"
token = "${{FIELDSYNC_OPS_TOKEN}}"
role = "operate"

[[server.tokens]]
name = "secretaris-c03"
token = "${{C03_TOKEN}}"
role = "operate"
org = "c03"
"#,
        club = sqlite_connector_toml("club", "clubs/${org.id}.db", "members", "relatienummer", "updated_at"),
        fields =
            member_fields_toml("members", &[("email", "email", "email"), ("mobile", "mobile", "mobile")]),
    )
}

/// Adds club `number` to the federation: its row in `clubs`, its schema with two members, and
/// its own SQLite file with three (one without a mobile number, one whose e-mail the club
/// wrote in capitals).
fn add_club(server: &PostgresServer, dir: &Path, number: usize) {
    let id = club(number);
    server.sql(
        "federation",
        &format!(
            "INSERT INTO clubs (code, naam, actief) VALUES ('{id}', '{name}', true);
             CREATE SCHEMA club_{id};
             CREATE TABLE club_{id}.members (relatienummer text PRIMARY KEY, email text, mobile text,
                 updated_at timestamptz NOT NULL DEFAULT now());
             INSERT INTO club_{id}.members (relatienummer, email, mobile) VALUES
                 ('{upper}-2001', 'jeugd{number}@bond.example', '+3161{number:02}00201'),
                 ('{upper}-2002', 'senior{number}@bond.example', NULL);",
            name = club_name(number).replace('\'', "''"),
            upper = id.to_uppercase(),
        ),
    );
    std::fs::create_dir_all(dir.join("clubs")).unwrap();
    let file = Connection::open(dir.join("clubs").join(format!("{id}.db"))).unwrap();
    file.execute_batch(
        "CREATE TABLE members (relatienummer TEXT PRIMARY KEY, email TEXT, mobile TEXT, updated_at TEXT NOT NULL)",
    )
    .unwrap();
    let upper = id.to_uppercase();
    let members = [
        (
            format!("{upper}-1001"),
            Some(format!("Anna.Jansen{number}@Example.NL")),
            Some(format!("06 1{number:02}00101")),
        ),
        (format!("{upper}-1002"), Some(format!("p.devries{number}@example.nl")), None),
        (format!("{upper}-1003"), None, Some(format!("+31 6 2{number:02}00103"))),
    ];
    for (key, email, mobile) in members {
        file.execute(
            "INSERT INTO members (relatienummer, email, mobile, updated_at) VALUES (?1, ?2, ?3, '2026-11-02T19:30:00Z')",
            params![key, email, mobile],
        )
        .unwrap();
    }
}

/// The binary with every club's webhook secret and both tokens in its environment.
fn binary(dir: &Path, clubs: usize) -> Fieldsync<'static> {
    let tokens = fieldsync(dir).secret("FIELDSYNC_OPS_TOKEN", OPERATE_TOKEN).secret("C03_TOKEN", C03_TOKEN);
    (1..=clubs).fold(tokens, |binary, number| {
        let id = club(number);
        binary.secret(&format!("CLUB_{id}_HOOK_SECRET"), &hook_secret(&id))
    })
}

/// The record keys of club `id`'s members on each side.
fn keys(server: &PostgresServer, dir: &Path, id: &str) -> (Vec<String>, Vec<String>) {
    let file = Connection::open(dir.join("clubs").join(format!("{id}.db"))).unwrap();
    let mut statement = file.prepare("SELECT relatienummer FROM members ORDER BY relatienummer").unwrap();
    let club: Vec<String> = statement.query_map([], |row| row.get(0)).unwrap().map(Result::unwrap).collect();
    let federation =
        server.sql("federation", &format!("SELECT relatienummer FROM club_{id}.members ORDER BY 1"));
    (club, federation.lines().filter(|line| !line.is_empty()).map(str::to_string).collect())
}

/// The links of `answer` (`GET /api/links`).
fn link_names(answer: &Value) -> Vec<String> {
    answer.as_array().expect("a list").iter().map(|link| link["link"].as_str().unwrap().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_club_syncs_its_own_members_and_sees_nothing_of_another() {
    let Some(server) = PostgresServer::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    server.create_database("federation");
    server.sql(
        "federation",
        "CREATE TABLE clubs (code text PRIMARY KEY, naam text NOT NULL, actief boolean NOT NULL)",
    );
    for number in 1..=CLUBS {
        add_club(&server, dir.path(), number);
    }
    std::fs::write(dir.path().join("fieldsync.toml"), config(&server)).unwrap();

    // One run of every club's link: each ends with its own five members on both sides.
    let run = binary(dir.path(), CLUBS).run("first sync", &["run", "--json"]);
    assert_eq!(run.code(), Some(0), "{}", run.stderr());
    let reports = run.json.as_array().expect("a report a link").clone();
    assert_eq!(reports.len(), CLUBS);
    for number in 1..=CLUBS {
        let id = club(number);
        let upper = id.to_uppercase();
        let (club_keys, federation_keys) = keys(&server, dir.path(), &id);
        let expected: Vec<String> = ["1001", "1002", "1003", "2001", "2002"]
            .iter()
            .map(|member| format!("{upper}-{member}"))
            .collect();
        assert_eq!(club_keys, expected, "club {id}'s own file");
        assert_eq!(federation_keys, expected, "the federation's schema of club {id}");
    }
    let mobile =
        server.sql("federation", "SELECT mobile FROM club_c07.members WHERE relatienummer = 'C07-1001'");
    assert_eq!(mobile.trim(), "+31610700101", "the club's national number, in the federation's form");

    // The command line limited to one club.
    let c03 = binary(dir.path(), CLUBS);
    let status = c03.output(&["--org", "c03", "--json", "status"]);
    assert_eq!(status.status.code(), Some(0));
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(link_names(&status), ["members/c03"]);
    let history = c03.output(&["--org", "c03", "--json", "history", "list"]);
    let history: Value = serde_json::from_slice(&history.stdout).unwrap();
    let runs = history.as_array().unwrap();
    assert!(!runs.is_empty() && runs.iter().all(|run| run["link"] == "members/c03"), "{history}");
    let refused = c03.output(&["--org", "c03", "run", "members/c04"]);
    assert_eq!(refused.status.code(), Some(2), "another club's link is no link of this one's");

    // The service, with a token limited to c03.
    let mut secrets: Vec<(String, String)> = (1..=CLUBS + 1)
        .map(|number| (format!("CLUB_{}_HOOK_SECRET", club(number)), hook_secret(&club(number))))
        .collect();
    secrets.push(("C03_TOKEN".into(), C03_TOKEN.into()));
    let secrets: Vec<(&str, &str)> =
        secrets.iter().map(|(name, value)| (name.as_str(), value.as_str())).collect();
    let service = Service::start_with(dir.path(), &secrets);

    let (status, links) = service.get("/api/links", C03_TOKEN).await;
    assert_eq!((status, link_names(&links)), (200, vec!["members/c03".to_string()]));
    let (status, runs) = service.get("/api/runs?limit=0", C03_TOKEN).await;
    assert_eq!(status, 200);
    let runs = runs["items"].as_array().unwrap();
    assert!(!runs.is_empty() && runs.iter().all(|run| run["link"] == "members/c03"), "{runs:?}");
    let (status, _) = service.get("/api/runs?org=c04", C03_TOKEN).await;
    assert_eq!(status, 403, "another club's runs");
    let (_, every_run) = service.get("/api/runs?org=c04", OPERATE_TOKEN).await;
    let c04_run = every_run["items"][0]["id"].as_i64().expect("c04 has a run");
    let (status, _) = service.get(&format!("/api/runs/{c04_run}"), C03_TOKEN).await;
    assert_eq!(status, 403, "another club's run by its number");
    let (status, _) = service.post("/api/links/members%2Fc04/runs", C03_TOKEN, None).await;
    assert_eq!(status, 403, "running another club's link");
    let (status, _) = service.post("/api/links/members%2Fc04/plan", C03_TOKEN, None).await;
    assert_eq!(status, 403, "planning another club's link");
    let (status, _) = service.post("/api/links/members%2Fc03/runs", C03_TOKEN, None).await;
    assert_eq!(status, 202, "running its own");
    let (status, export) = service.get("/api/history?format=json", C03_TOKEN).await;
    assert_eq!(status, 200);
    let export = export.as_array().unwrap();
    assert!(!export.is_empty() && export.iter().all(|run| run["run"]["link"] == "members/c03"), "{export:?}");

    // A webhook signed with c03's secret on c04's route changes nothing; c04's own is taken.
    let body = r#"{"relatienummer":"C04-2001"}"#;
    let (status, _) =
        service.hook("/hooks/members/c04/federation", &hub_headers(&hook_secret("c03"), body), body).await;
    assert_eq!(status, 401);
    let (status, _) =
        service.hook("/hooks/members/c04/federation", &hub_headers(&hook_secret("c04"), body), body).await;
    assert_eq!(status, 202);

    // A club joins and one leaves, in the federation's table: the running service follows.
    add_club(&server, dir.path(), CLUBS + 1);
    server.sql("federation", "UPDATE clubs SET actief = false WHERE code = 'c02'");
    let started = Instant::now();
    let joined = loop {
        let (_, links) = service.get("/api/links", OPERATE_TOKEN).await;
        let names = link_names(&links);
        let c21 = links.as_array().unwrap().iter().find(|link| link["link"] == "members/c21").cloned();
        if !names.contains(&"members/c02".to_string())
            && let Some(c21) = c21
            && c21["last_run"]["status"] == "done"
        {
            break names;
        }
        assert!(started.elapsed() < PATIENCE, "the new list was not followed: {links}\n{}", service.log());
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    };
    assert_eq!(joined.len(), CLUBS);
    let (club_keys, federation_keys) = keys(&server, dir.path(), "c21");
    assert_eq!((club_keys.len(), federation_keys.len()), (5, 5), "the new club's first sync");
    // The club that left keeps its history until it is purged.
    let (status, gone) = service.get("/api/runs?org=c02", OPERATE_TOKEN).await;
    assert_eq!(status, 200);
    assert!(!gone["items"].as_array().unwrap().is_empty(), "{gone}");
    assert!(service.stop().success());

    // Until a command purges it: a member of the club that left, erased from the state store.
    let purge =
        binary(dir.path(), CLUBS + 1).output(&["--json", "purge", "members/c02", "--key", "C02-1001"]);
    assert_eq!(purge.status.code(), Some(0), "{}", String::from_utf8_lossy(&purge.stderr));
    let state: Vec<u8> = ["state.db", "state.db-wal"]
        .iter()
        .filter_map(|file| std::fs::read(dir.path().join(file)).ok())
        .flatten()
        .collect();
    let holds = |text: &str| state.windows(text.len()).any(|window| window == text.as_bytes());
    for erased in ["C02-1001", "jansen2@example.nl", "Jansen2@Example.NL", "610200101"] {
        assert!(!holds(erased), "{erased} is still in the state store");
    }
    for kept in ["C02-1002", "p.devries2@example.nl", "C03-1001"] {
        assert!(holds(kept), "{kept} is kept");
    }
}
