//! The `fieldsync` binary against a real Django REST Framework site (`testkit::django`, from
//! Debian's packages): the README's example as written, and a club's SQLite table and 300
//! players kept in step both ways — edits on both sides, conflicts, creates, a value Django
//! refuses ending dead with its message, deletes found by a full scan — compared field by field,
//! then quiet runs that Django's own request log shows changed nothing.

use std::collections::BTreeMap;
use std::path::Path;

use fieldsync_connector::testkit::django::{DjangoOptions, DjangoServer};
use fieldsync_test_support::members::{link_toml, member_fields_toml};
use fieldsync_test_support::{Fieldsync, readme_blocks};
use rusqlite::{Connection, params};
use serde_json::{Value, json};

use crate::support::{
    assert_one_write_refused, assert_quiet_runs, club_config_start, django_backend_toml, fieldsync as binary,
};

fn fieldsync<'a>(dir: &Path, site: &'a DjangoServer) -> Fieldsync<'a> {
    binary(dir).secret("DRF_TOKEN", site.token()).log(|| site.log_tail())
}

/// One run ending with `code`; its report as JSON.
fn run(dir: &Path, site: &DjangoServer, step: &str, code: i32) -> Value {
    fieldsync(dir, site).run_ending(step, &[], code).report()
}

/// The README's Django REST Framework example, with the site's address in place of the
/// example's.
fn readme_example(site: &DjangoServer) -> String {
    let block = readme_blocks("## REST APIs", "toml").remove(1);
    assert!(block.contains("https://backend.example/api/players/"), "the example's address changed");
    block.replace("https://backend.example/api/players/", &site.players_url())
}

#[test]
fn the_readme_django_rest_framework_example_runs_as_written() {
    // Issue 12, point 8: the README's example failed as written against a real API.
    let Some(site) = DjangoServer::start(&DjangoOptions { players: 12, ..DjangoOptions::default() }) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("fieldsync.toml"), readme_example(&site)).unwrap();
    let club = Connection::open(dir.path().join("club.db")).unwrap();
    club.execute_batch(
        "CREATE TABLE members (federation_id TEXT PRIMARY KEY, first_name TEXT, last_name TEXT, email TEXT,
                               birth_date TEXT, updated_at TEXT);
         INSERT INTO members VALUES ('CLB00001', 'Fleur', 'de Wit', 'fleur@example.org', '1999-09-09', datetime('now')),
                                    ('CLB00002', 'Gijs', 'Kok', NULL, NULL, datetime('now'));",
    )
    .unwrap();
    let check = fieldsync(dir.path(), &site).output(&["check"]);
    assert_eq!(check.status.code(), Some(0), "{}", String::from_utf8_lossy(&check.stderr));
    run(dir.path(), &site, "the README's example", 0);

    let players: BTreeMap<String, serde_json::Map<String, Value>> = site
        .players()
        .into_iter()
        .map(|player| (player["federation_id"].as_str().unwrap().to_owned(), player))
        .collect();
    assert_eq!(players.len(), 14, "12 players and the club's 2");
    let gijs = &players["CLB00002"];
    assert_eq!(
        (&gijs["first_name"], &gijs["email"], &gijs["birth_date"]),
        (&json!("Gijs"), &json!(""), &Value::Null)
    );
    assert_eq!(players["CLB00001"]["birth_date"], "1999-09-09");
    let mut rows = club.prepare("SELECT federation_id, first_name, last_name FROM members").unwrap();
    let members: BTreeMap<String, (String, String)> = rows
        .query_map([], |row| Ok((row.get(0)?, (row.get(1)?, row.get(2)?))))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(members.len(), 14, "the site's 12 players and the club's 2");
    for (key, player) in &players {
        assert_eq!(
            (player["first_name"].as_str().unwrap(), player["last_name"].as_str().unwrap()),
            (members[key].0.as_str(), members[key].1.as_str()),
            "{key}"
        );
    }
}

const PLAYERS: usize = 200;
const CLUB_ONLY: usize = 100;

fn config(site: &DjangoServer) -> String {
    let names =
        ["first_name", "last_name", "email", "mobile", "birth_date", "active", "shirt_number", "tags"];
    let paths: Vec<String> = names.iter().map(|name| format!("/{name}")).collect();
    let fields: Vec<_> = names.iter().zip(&paths).map(|(name, path)| (*name, *name, path.as_str())).collect();
    format!(
        r#"{start}{backend}
{link}deletes = "propagate"
guard = {{ max_delete = "20%", max_change = "100%" }}
{fields}"#,
        link = link_toml("players", "club", "backend", ("federation_id", "/federation_id"), "club"),
        start = club_config_start("members", "federation_id"),
        backend = django_backend_toml(site),
        fields = member_fields_toml("players", &fields)
    )
}

/// One player's synced fields, each in one comparable form: text trimmed (`null` and `""` the
/// same), e-mail lower-cased, a Dutch mobile in E.164, a boolean, a number or null, a JSON list.
type Fields = BTreeMap<&'static str, Value>;

fn comparable(get: impl Fn(&str) -> Value) -> Fields {
    let text = |value: Value| match value {
        Value::Null => json!(""),
        Value::String(text) => json!(text.trim()),
        other => json!(other.to_string()),
    };
    let mobile = |value: Value| {
        let digits: String =
            value.as_str().unwrap_or_default().chars().filter(char::is_ascii_digit).collect();
        match (digits.strip_prefix("316"), digits.strip_prefix("06")) {
            (Some(rest), _) => json!(format!("+316{rest}")),
            (None, Some(rest)) => json!(format!("+316{rest}")),
            (None, None) => json!(digits),
        }
    };
    let truth = |value: Value| match value {
        Value::Bool(flag) => json!(flag),
        Value::Number(number) => json!(number.as_i64() != Some(0)),
        Value::String(text) => json!(matches!(text.as_str(), "1" | "true")),
        other => panic!("{other} is no boolean"),
    };
    let list = |value: Value| match value {
        Value::String(text) => serde_json::from_str(&text).unwrap_or_else(|error| panic!("{text}: {error}")),
        Value::Null => json!([]),
        other => other,
    };
    BTreeMap::from([
        ("first_name", text(get("first_name"))),
        ("last_name", text(get("last_name"))),
        ("email", json!(text(get("email")).as_str().unwrap().to_lowercase())),
        ("mobile", mobile(get("mobile"))),
        ("birth_date", text(get("birth_date"))),
        ("active", truth(get("active"))),
        ("shirt_number", get("shirt_number")),
        ("tags", list(get("tags"))),
    ])
}

/// Django's players by federation id, from its database.
fn players_of(site: &DjangoServer) -> BTreeMap<String, Fields> {
    site.players()
        .into_iter()
        .map(|player| {
            (player["federation_id"].as_str().unwrap().to_owned(), comparable(|name| player[name].clone()))
        })
        .collect()
}

/// The club's members by federation id.
fn members_of(club: &Connection) -> BTreeMap<String, Fields> {
    let mut rows = club
        .prepare(
            "SELECT federation_id, first_name, last_name, email, mobile, birth_date, active, shirt_number, tags
             FROM members",
        )
        .unwrap();
    let names =
        ["first_name", "last_name", "email", "mobile", "birth_date", "active", "shirt_number", "tags"];
    rows.query_map([], |row| {
        let mut values = BTreeMap::new();
        for (index, name) in names.iter().enumerate() {
            let value = match row.get_ref(index + 1)? {
                rusqlite::types::ValueRef::Null => Value::Null,
                rusqlite::types::ValueRef::Integer(number) => json!(number),
                rusqlite::types::ValueRef::Real(number) => json!(number),
                rusqlite::types::ValueRef::Text(text) => json!(String::from_utf8_lossy(text)),
                rusqlite::types::ValueRef::Blob(_) => panic!("a blob in {name}"),
            };
            values.insert(*name, value);
        }
        Ok((row.get::<_, String>(0)?, comparable(|name| values[name].clone())))
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

/// Asserts both sides hold the same players with the same values, field by field, but for the
/// `(key, field)` pairs in `except`.
fn assert_same(site: &DjangoServer, club: &Connection, except: &[(&str, &str)]) -> BTreeMap<String, Fields> {
    let players = players_of(site);
    let members = members_of(club);
    assert_eq!(
        players.keys().collect::<Vec<_>>(),
        members.keys().collect::<Vec<_>>(),
        "the two sides hold other players"
    );
    for (key, player) in &players {
        for (field, value) in player {
            if except.contains(&(key.as_str(), field)) {
                continue;
            }
            assert_eq!(
                value, &members[key][field],
                "player {key}, field {field}: Django and the club differ"
            );
        }
    }
    players
}

fn changing_requests(site: &DjangoServer) -> usize {
    site.requests().iter().filter(|request| request.changes()).count()
}

#[test]
fn a_club_table_and_a_real_django_api_keep_300_players_in_step() {
    let Some(site) = DjangoServer::start(&DjangoOptions { players: PLAYERS, ..DjangoOptions::default() })
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let club = Connection::open(dir.path().join("club.db")).unwrap();
    club.execute_batch(
        "CREATE TABLE members (federation_id TEXT PRIMARY KEY, first_name TEXT, last_name TEXT, email TEXT,
                               mobile TEXT, birth_date TEXT, active INTEGER, shirt_number INTEGER, tags TEXT,
                               updated_at TEXT);",
    )
    .unwrap();
    // The club's own players, an hour old: the site's edits below are later.
    let hour_ago = (jiff::Timestamp::now() - jiff::SignedDuration::from_hours(1)).to_string();
    for number in 1..=CLUB_ONLY {
        club.execute(
            "INSERT INTO members VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                format!("CLB{number:05}"),
                format!("Thijs{number}"),
                if number % 3 == 0 { "van der Berg".to_owned() } else { format!("Bakker{number}") },
                if number % 10 == 0 { None } else { Some(format!("thijs{number}@example.org")) },
                format!("06-{}", 30_000_000 + number),
                if number % 7 == 0 { None } else { Some(format!("2005-03-{:02}", number % 28 + 1)) },
                i64::from(number % 11 != 0),
                if number % 4 == 0 { None } else { Some(i64::try_from(number).unwrap()) },
                if number % 5 == 0 { "[\"jeugd\"]" } else { "[]" },
                hour_ago
            ],
        )
        .unwrap();
    }
    std::fs::write(dir.path().join("fieldsync.toml"), config(&site)).unwrap();
    let check = fieldsync(dir.path(), &site).output(&["check"]);
    assert_eq!(check.status.code(), Some(0), "{}", String::from_utf8_lossy(&check.stderr));

    let first = run(dir.path(), &site, "initial sync", 0);
    assert_eq!(first["stats"]["writes_done"], json!(PLAYERS + CLUB_ONLY), "{first:#}");
    let players = assert_same(&site, &club, &[]);
    assert_eq!(players.len(), PLAYERS + CLUB_ONLY);

    // Edits on both sides. The club: last names of FED00001-30 and CLB00001-10, cleared shirt
    // numbers of FED00061-70, cleared e-mails of FED00071-75, five new members, five deleted
    // (FED00081-85), and FED00095's e-mail at a domain Django refuses. Half an hour ago.
    let half_hour_ago = (jiff::Timestamp::now() - jiff::SignedDuration::from_mins(30)).to_string();
    let club_edit = |sql: &str, keys: Vec<String>| {
        for key in keys {
            club.execute(sql, params![key, half_hour_ago]).unwrap();
        }
    };
    let fed =
        |range: std::ops::RangeInclusive<usize>| range.map(|n| format!("FED{n:05}")).collect::<Vec<_>>();
    club_edit(
        "UPDATE members SET last_name = 'Club ' || federation_id, updated_at = ?2 WHERE federation_id = ?1",
        fed(1..=30),
    );
    club_edit(
        "UPDATE members SET last_name = 'Club ' || federation_id, updated_at = ?2 WHERE federation_id = ?1",
        (1..=10).map(|n| format!("CLB{n:05}")).collect(),
    );
    club_edit(
        "UPDATE members SET shirt_number = NULL, updated_at = ?2 WHERE federation_id = ?1",
        fed(61..=70),
    );
    club_edit("UPDATE members SET email = NULL, updated_at = ?2 WHERE federation_id = ?1", fed(71..=75));
    club_edit("DELETE FROM members WHERE federation_id = ?1 AND ?2 IS NOT NULL", fed(81..=85));
    club_edit(
        "UPDATE members SET email = 'kees@invalid.example', updated_at = ?2 WHERE federation_id = ?1",
        fed(95..=95),
    );
    for number in 1..=5 {
        club.execute(
            "INSERT INTO members VALUES (?1, 'Nieuw', ?2, NULL, '+31687654321', '2010-10-10', 1, 7, '[\"jeugd\"]', ?3)",
            params![format!("NEW{number:05}"), format!("Lid{number}"), half_hour_ago],
        )
        .unwrap();
    }
    // Django, now: last names of FED00021-40 (21-30 are conflicts the later edit wins), e-mails
    // of FED00041-60, shirt numbers and tags of CLB00011-20, five new players, five deleted
    // (FED00086-90).
    site.python(
        "for n in range(21, 41):\n    p = Player.objects.get(federation_id='FED%05d' % n); p.last_name = 'Site %d' % n; p.save()\n\
         for n in range(41, 61):\n    p = Player.objects.get(federation_id='FED%05d' % n); p.email = 'site%d@example.net' % n; p.save()\n\
         for n in range(11, 21):\n    p = Player.objects.get(federation_id='CLB%05d' % n); p.shirt_number = 90 + n % 9; p.tags = ['keeper']; p.save()\n\
         for n in range(1, 6):\n    Player.objects.create(federation_id='WEB%05d' % n, first_name='Sanne', last_name='Web %d' % n, email='web%d@example.com' % n, mobile='06-1234567%d' % n)\n\
         Player.objects.filter(federation_id__in=['FED%05d' % n for n in range(86, 91)]).delete()\n",
    );

    let second = run(dir.path(), &site, "edits on both sides", 1);
    let refusal = "invalid.example are not accepted";
    let dead = assert_one_write_refused(&fieldsync(dir.path(), &site), &second, 10, refusal, site.token());

    // Hard deletes are found by full scans only: this incremental run has not seen them.
    let players = players_of(&site);
    let members = members_of(&club);
    assert!(
        players.contains_key("FED00083") && members.contains_key("FED00088"),
        "deletes without a full scan"
    );
    for key in members.keys().filter(|key| !(81..=90).any(|n| **key == format!("FED{n:05}"))) {
        for (field, value) in &members[key] {
            if (key.as_str(), *field) != ("FED00095", "email") {
                assert_eq!(
                    value, &players[key][field],
                    "player {key}, field {field}: Django and the club differ"
                );
            }
        }
    }
    for n in 1..=40 {
        let want = if n <= 20 { format!("Club FED{n:05}") } else { format!("Site {n}") };
        assert_eq!(players[&format!("FED{n:05}")]["last_name"], json!(want), "FED{n:05}");
    }
    for n in 41..=60 {
        assert_eq!(players[&format!("FED{n:05}")]["email"], json!(format!("site{n}@example.net")));
    }
    for n in 61..=70 {
        assert_eq!(players[&format!("FED{n:05}")]["shirt_number"], Value::Null);
    }
    for n in 71..=75 {
        assert_eq!(players[&format!("FED{n:05}")]["email"], json!(""));
    }
    for n in 11..=20 {
        assert_eq!(players[&format!("CLB{n:05}")]["tags"], json!(["keeper"]));
    }
    assert!(members.contains_key("WEB00004") && players.contains_key("NEW00003"), "creates both ways");
    assert_ne!(players["FED00095"]["email"], json!("kees@invalid.example"), "Django kept its address");

    // The club puts the refused address back and the dead entry is dropped; a full scan then
    // finds the deletes of both sides and the two sides agree on everything.
    let django_email =
        site.query("SELECT email FROM club_player WHERE federation_id = 'FED00095'")[0]["email"].clone();
    club.execute(
        "UPDATE members SET email = ?1 WHERE federation_id = 'FED00095'",
        params![django_email.as_str()],
    )
    .unwrap();
    let id = dead["id"].to_string();
    let dropped = fieldsync(dir.path(), &site).output(&["outbox", "drop", &id]);
    assert_eq!(dropped.status.code(), Some(0), "{}", String::from_utf8_lossy(&dropped.stderr));
    let full = fieldsync(dir.path(), &site).output(&["run", "--full", "--json"]);
    assert_eq!(full.status.code(), Some(0), "{}", String::from_utf8_lossy(&full.stderr));
    let full: Value = serde_json::from_slice(&full.stdout).unwrap();
    assert_eq!(full[0]["stats"]["writes_done"], json!(10), "the ten deletes: {full:#}");
    let players = assert_same(&site, &club, &[]);
    assert_eq!(players.len(), PLAYERS + CLUB_ONLY + 5 + 5 - 5 - 5);
    assert!(!players.contains_key("FED00083") && !players.contains_key("FED00088"));

    // A run with no new edits, incremental and full, sends Django nothing that changes anything.
    let before = changing_requests(&site);
    assert_quiet_runs(&fieldsync(dir.path(), &site));
    assert_eq!(changing_requests(&site), before, "a quiet run sent requests that change something to Django");
    assert_same(&site, &club, &[]);
}
