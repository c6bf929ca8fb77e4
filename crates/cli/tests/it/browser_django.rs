//! The `fieldsync` binary keeping a club's SQLite table of players and a real web admin in
//! step through the browser connector: Django's own admin site (Debian's python3-django),
//! driven through the README's configuration as written — its login page, its change list
//! with a change form per player, the CSRF token in every form, "was changed successfully",
//! `errorlist` as the site's refusal and its row-version refusal as a moved target — and
//! proven by reading Django's SQLite database directly.

use std::path::Path;
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fieldsync_connector::testkit::django::{DjangoOptions, DjangoServer};
use fieldsync_test_support::members::{fields_toml, link_toml};
use fieldsync_test_support::{Fieldsync, readme_blocks};
use rusqlite::{Connection, params};
use serde_json::{Value, json};

use crate::support::{WEB_ADMIN_POLICIES, browser_available, club_config_start, fieldsync as binary};

/// The fields kept in step, as the club's columns and the admin's form hold them.
const FIELDS: [(&str, &str); 4] =
    [("email", "email"), ("mobile", "text"), ("active", "bool"), ("notes", "text")];

/// The README's configuration of Django's admin as written, pointed at `django`, with a
/// club's table beside it.
fn config(django: &DjangoServer) -> String {
    let block = readme_blocks("Django's own admin site is such a web admin", "toml").remove(0);
    assert!(block.contains("base_url = \"https://club.example\""), "{block}");
    let admin = block.replace("https://club.example", &django.url());
    let mut text = format!(
        r##"{start}{admin}
{link}{WEB_ADMIN_POLICIES}"##,
        link = link_toml("players", "club", "admin", ("federation_id", "federation_id"), "admin"),
        start = club_config_start("players", "federation_id"),
    );
    text.push_str(&fields_toml("players", &FIELDS.map(|(name, kind)| (name, kind, name, name))));
    text
}

fn fieldsync<'a>(dir: &Path, django: &'a DjangoServer) -> Fieldsync<'a> {
    binary(dir)
        .env("ADMIN_USER", django.user())
        .env("ADMIN_PASSWORD", django.password())
        .log(|| django.log_tail())
}

fn run(dir: &Path, django: &DjangoServer, step: &str) -> (Value, Output) {
    let run = fieldsync(dir, django).run(step, &["run", "--json"]);
    (run.report(), run.output)
}

/// A player as both sides should hold it: federation id, email, mobile, active, notes (with
/// line breaks as LF: a browser sends a text area's as CRLF, and Django keeps them so).
type Row = (String, String, String, bool, String);

/// Every player as Django's database holds it, by federation id.
fn django_rows(django: &DjangoServer) -> Vec<Row> {
    django
        .players()
        .iter()
        .map(|player| {
            (
                player["federation_id"].as_str().unwrap().to_string(),
                player["email"].as_str().unwrap().to_string(),
                player["mobile"].as_str().unwrap().to_string(),
                player["active"].as_bool().unwrap(),
                player["notes"].as_str().unwrap().replace("\r\n", "\n"),
            )
        })
        .collect()
}

/// Every player as the club's table holds it, by federation id.
fn club_rows(club: &Connection) -> Vec<Row> {
    let mut statement = club
        .prepare("SELECT federation_id, email, mobile, active, notes FROM players ORDER BY federation_id")
        .unwrap();
    statement
        .query_map([], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get::<_, i64>(3)? != 0, row.get(4)?))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn set_row(rows: &mut [Row], id: &str, change: impl FnOnce(&mut Row)) {
    change(rows.iter_mut().find(|row| row.0 == id).unwrap_or_else(|| panic!("no player {id}")));
}

/// Django's own numeric id of a player.
fn pk(django: &DjangoServer, federation_id: &str) -> i64 {
    django.query(&format!("SELECT id FROM club_player WHERE federation_id = '{federation_id}'"))[0]["id"]
        .as_i64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn djangos_admin_is_kept_in_step_through_its_forms_and_a_persons_edit_while_fieldsync_saves_stands() {
    if !browser_available() {
        return;
    }
    let Some(django) = DjangoServer::start(&DjangoOptions { players: 12, ..DjangoOptions::default() }) else {
        return;
    };
    let django = Arc::new(django);
    let dir = tempfile::tempdir().unwrap();
    let club = Connection::open(dir.path().join("club.db")).unwrap();
    club.execute_batch(
        "CREATE TABLE players (federation_id TEXT PRIMARY KEY, email TEXT NOT NULL, mobile TEXT NOT NULL,
                               active INTEGER NOT NULL, notes TEXT NOT NULL, updated_at TEXT NOT NULL);",
    )
    .unwrap();
    let earlier = (jiff::Timestamp::now() - jiff::SignedDuration::from_hours(1)).to_string();
    let seeded = django_rows(&django);
    assert_eq!(seeded.len(), 12);
    for (id, email, mobile, active, notes) in &seeded {
        club.execute(
            "INSERT INTO players VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![id, email, mobile, i64::from(*active), notes, earlier],
        )
        .unwrap();
    }
    std::fs::write(dir.path().join("fieldsync.toml"), config(&django)).unwrap();

    let (first, output) = run(dir.path(), &django, "first run: baselines of 12 players");
    assert_eq!(output.status.code(), Some(0), "{first:#}\n{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(first["stats"]["writes_done"], json!(0), "{first:#}");
    let check = fieldsync(dir.path(), &django).output(&["check"]);
    let said = String::from_utf8_lossy(&check.stdout);
    assert!(
        said.contains("active, email, mobile, notes from /admin/club/player/{id}/change/")
            && !said.contains(django.password()),
        "check names the fields read from each player's page: {said}"
    );

    // The club edits four players (one with an address Django refuses); a person edits a fifth
    // in the admin.
    let now = jiff::Timestamp::now().to_string();
    let club_edit = |id: &str, column: &str, value: rusqlite::types::Value| {
        club.execute(
            &format!("UPDATE players SET {column} = ?1, updated_at = ?2 WHERE federation_id = ?3"),
            params![value, now, id],
        )
        .unwrap();
    };
    club_edit("FED00001", "email", "new1@club.example".to_string().into());
    club_edit("FED00002", "notes", "keeper\nplays on Saturdays".to_string().into());
    club_edit("FED00003", "active", i64::from(!seeded[2].3).into());
    club_edit("FED00004", "email", "someone@invalid.example".to_string().into());
    club_edit("FED00006", "email", "club6@club.example".to_string().into());
    django.python(
        "player = Player.objects.get(federation_id='FED00005')\n\
         player.email = 'site5@club.example'\n\
         player.save()",
    );

    // While fieldsync saves player 6 (the first time its form is opened after a save of this
    // run: the reads come before any save), a person saves a new mobile number for it.
    let six = format!("/admin/club/player/{}/change/", pk(&django, "FED00006"));
    let logged_before = django.requests().len();
    let person_saved = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (django, six, person_saved) = (Arc::clone(&django), six.clone(), Arc::clone(&person_saved));
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(180);
            while Instant::now() < deadline {
                let requests = django.requests();
                let run = &requests[logged_before.min(requests.len())..];
                let first_save = run.iter().position(|request| {
                    request.method == "POST" && request.path.starts_with("/admin/club/player/")
                });
                if let Some(first_save) = first_save
                    && run[first_save..].iter().any(|request| request.method == "GET" && request.path == six)
                {
                    let stamp = jiff::Timestamp::now().strftime("%Y-%m-%d %H:%M:%S%.6f");
                    django.query(&format!(
                        "UPDATE club_player SET mobile = '+31699999999', version = version + 1, \
                         updated_at = '{stamp}' WHERE federation_id = 'FED00006'"
                    ));
                    person_saved.store(true, Ordering::SeqCst);
                    return;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let (second, output) = run(dir.path(), &django, "players written through the admin's change forms");
    watcher.join().unwrap();
    assert!(person_saved.load(Ordering::SeqCst), "the person's save was made while fieldsync wrote");
    assert_eq!(output.status.code(), Some(1), "a refused address: {second:#}");
    let refusals: Vec<u16> = django.requests()[logged_before..]
        .iter()
        .filter(|request| request.method == "POST" && request.path == six)
        .map(|request| request.status)
        .collect();
    assert_eq!(refusals, [200], "Django refused the form opened before the person's save: {second:#}");
    // Only the refused address is dead.
    let dead = fieldsync(dir.path(), &django).only_dead_entry();
    let message = dead["last_error"].as_str().unwrap_or_default();
    let four = format!("/admin/club/player/{}/change/", pk(&django, "FED00004"));
    assert!(
        message.contains("E-mail addresses at invalid.example are not accepted.") && message.contains(&four),
        "Django's message and the page: {message}"
    );

    // The next run reads player 6 again and merges again: the club's address goes to Django, the
    // person's number to the club.
    let (third, _) = run(dir.path(), &django, "the moved player read and merged again");
    let mut expected = seeded.clone();
    set_row(&mut expected, "FED00001", |row| row.1 = "new1@club.example".into());
    set_row(&mut expected, "FED00002", |row| row.4 = "keeper\nplays on Saturdays".into());
    set_row(&mut expected, "FED00003", |row| row.3 = !row.3);
    set_row(&mut expected, "FED00005", |row| row.1 = "site5@club.example".into());
    set_row(&mut expected, "FED00006", |row| {
        row.1 = "club6@club.example".into();
        row.2 = "+31699999999".into();
    });
    assert_eq!(django_rows(&django), expected, "Django's database: {third:#}");
    let mut club_expected = expected.clone();
    set_row(&mut club_expected, "FED00004", |row| row.1 = "someone@invalid.example".into());
    assert_eq!(club_rows(&club), club_expected, "the club's table: {third:#}");

    // A quiet run saves nothing: Django received no form but the login.
    let logged = django.requests().len();
    let (quiet, _) = run(dir.path(), &django, "a run with no new edits");
    assert_eq!(quiet["stats"]["writes_done"], json!(0), "{quiet:#}");
    let changes: Vec<String> = django.requests()[logged..]
        .iter()
        .filter(|request| request.changes() && request.path != "/admin/login/")
        .map(|request| format!("{} {}", request.method, request.path))
        .collect();
    assert!(changes.is_empty(), "a quiet run posted {changes:?}");
    assert_eq!(django_rows(&django), expected);
}
