//! The `fieldsync` binary keeping a club's SQLite member table and a real WordPress site (the
//! `wordpress` preset) in step: an initial sync of 1,200 members, then 100 edits on each side,
//! some on the same fields, then a quiet run. Prints the time of each step.

#[path = "../../connector-rest/tests/support/wordpress.rs"]
mod wordpress;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Instant;

use rusqlite::{Connection, params};
use serde_json::{Value, json};
use wordpress::WordPress;

const MEMBERS: usize = 1_200;

fn fieldsync(dir: &Path, site: &WordPress, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fieldsync"))
        .current_dir(dir)
        .args(args)
        .env("WP_USER", site.user())
        .env("WP_APP_PASSWORD", site.app_password())
        .env_remove("FIELDSYNC_CONFIG")
        .output()
        .expect("the fieldsync binary runs")
}

/// One run, timed, ending with `code`; its report as JSON.
fn run(dir: &Path, site: &WordPress, step: &str, code: i32) -> Value {
    let began = Instant::now();
    let output = fieldsync(dir, site, &["run", "--json"]);
    eprintln!("{step}: {:.1} s", began.elapsed().as_secs_f64());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains(site.app_password()), "the password reached the logs");
    let report: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!("not JSON ({error}): {}\n{stderr}", String::from_utf8_lossy(&output.stdout))
    });
    assert_eq!(output.status.code(), Some(code), "{step}: {report:#}\n{stderr}");
    report[0].clone()
}

fn config(site: &WordPress) -> String {
    format!(
        r#"state = "sqlite://state.db"

[connectors.club]
kind = "sqlite"
path = "club.db"
table = "members"
key = "knvb_id"
modified = "updated_at"
modified_format = "rfc3339"

[connectors.site]
kind = "rest"
preset = "wordpress"
base_url = "{base}"
auth = {{ basic = {{ user = "${{WP_USER}}", password = "${{WP_APP_PASSWORD}}" }} }}
create = {{ unique = "/meta/knvb_id", templates = {{ "/title" = "{{/meta/first_name}} {{/meta/last_name}}" }} }}

[links.members]
left = "club"
right = "site"
key = {{ left = "knvb_id", right = "/meta/knvb_id" }}
conflicts = {{ strategy = "last_write_wins", grace = "5s", tie = "club" }}
first_sync = {{ strategy = "prefer", side = "club" }}
deletes = "propagate"

[[links.members.fields]]
name = "first_name"
left = "first_name"
right = "/meta/first_name"

[[links.members.fields]]
name = "last_name"
left = "last_name"
right = "/meta/last_name"

[[links.members.fields]]
name = "email"
type = "email"
left = "email"
right = "/meta/email"

[[links.members.fields]]
name = "mobile"
type = "phone"
region = "NL"
left = "mobile"
right = "/meta/contact_info[type=mobile]/value"
"#,
        base = site.base_url()
    )
}

/// The site's people by link key, with the synced fields, read from its database.
async fn people_of(site: &WordPress) -> std::collections::BTreeMap<String, Value> {
    let code = r#"
        $people = array();
        foreach ( get_posts( array( 'post_type' => 'person', 'post_status' => 'any', 'numberposts' => -1 ) ) as $post ) {
            $info = get_post_meta( $post->ID, 'contact_info', true );
            $mobile = null;
            foreach ( is_array( $info ) ? $info : array() as $item ) {
                if ( 'mobile' === $item['type'] ) { $mobile = $item['value']; }
            }
            $people[] = array(
                'key' => get_post_meta( $post->ID, 'knvb_id', true ),
                'id' => $post->ID,
                'status' => $post->post_status,
                'title' => $post->post_title,
                'first_name' => get_post_meta( $post->ID, 'first_name', true ),
                'last_name' => get_post_meta( $post->ID, 'last_name', true ),
                'email' => get_post_meta( $post->ID, 'email', true ),
                'mobile' => $mobile,
            );
        }
        echo wp_json_encode( $people );
    "#;
    let people: Vec<Value> = serde_json::from_str(&site.php(code).await).expect("people as JSON");
    let mut by_key = std::collections::BTreeMap::new();
    for person in people {
        let key = person["key"].as_str().expect("a key").to_string();
        assert!(by_key.insert(key.clone(), person).is_none(), "two people with key {key}");
    }
    by_key
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_club_table_and_a_real_wordpress_site_converge_through_edits_on_both_sides() {
    let Some(site) = WordPress::start().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let club_path = dir.path().join("club.db");
    let club = Connection::open(&club_path).unwrap();
    club.execute_batch(
        "CREATE TABLE members (knvb_id TEXT PRIMARY KEY, first_name TEXT, last_name TEXT, email TEXT,
                               mobile TEXT, updated_at TEXT NOT NULL);",
    )
    .unwrap();
    // An hour ago: the site's edits below are later, and win their conflicts.
    let earlier = (jiff::Timestamp::now() - jiff::SignedDuration::from_hours(1)).to_string();
    for number in 1..=MEMBERS {
        club.execute(
            "INSERT INTO members VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                format!("K{number:05}"),
                format!("First{number}"),
                format!("Last{number}"),
                format!("member{number}@club.nl"),
                format!("06-{}", 20_000_000 + number),
                earlier
            ],
        )
        .unwrap();
    }
    std::fs::write(dir.path().join("fieldsync.toml"), config(&site)).unwrap();

    let check = fieldsync(dir.path(), &site, &["check", "--json"]);
    assert_eq!(check.status.code(), Some(0), "{}", String::from_utf8_lossy(&check.stderr));

    let first = run(dir.path(), &site, "initial sync of 1,200 members", 0);
    assert_eq!(first["stats"]["writes_done"], json!(MEMBERS), "{first:#}");
    let people = people_of(&site).await;
    assert_eq!(people.len(), MEMBERS);
    let seven = &people["K00007"];
    assert_eq!(
        (
            seven["status"].as_str(),
            seven["title"].as_str(),
            seven["email"].as_str(),
            seven["mobile"].as_str()
        ),
        (Some("publish"), Some("First7 Last7"), Some("member7@club.nl"), Some("+31620000007"))
    );

    // 100 edits on each side: the club renames members 1-100; the site renames people
    // 51-75 (the same field of the same members: conflicts) and changes the e-mail of people
    // 76-175 (the same members as the club's 76-100, another field).
    let edited = (jiff::Timestamp::now() - jiff::SignedDuration::from_mins(30)).to_string();
    for number in 1..=100 {
        club.execute(
            "UPDATE members SET first_name = ?1, updated_at = ?2 WHERE knvb_id = ?3",
            params![format!("Club{number}"), edited, format!("K{number:05}")],
        )
        .unwrap();
    }
    let edits: Vec<Value> = (51..=175)
        .map(|number| {
            let key = format!("K{number:05}");
            if number <= 75 {
                json!({"id": people[&key]["id"], "first_name": format!("Site{number}")})
            } else {
                json!({"id": people[&key]["id"], "email": format!("site{number}@club.nl")})
            }
        })
        .collect();
    let code = r#"
        foreach ( $input as $edit ) {
            if ( isset( $edit['first_name'] ) ) {
                update_post_meta( $edit['id'], 'first_name', $edit['first_name'] );
            } else {
                update_post_meta( $edit['id'], 'email', $edit['email'] );
            }
            wp_update_post( array( 'ID' => $edit['id'] ) );
        }
    "#;
    site.php_with(code, &Value::Array(edits)).await;
    // One more club edit, of an address the site refuses (WordPress's `is_email` wants a dot
    // in the domain): its write is a dead entry with the site's message; the others go on.
    club.execute(
        "UPDATE members SET email = 'ann@localhost', updated_at = ?1 WHERE knvb_id = 'K00500'",
        params![edited],
    )
    .unwrap();

    let second = run(dir.path(), &site, "100 edits on each side", 1);
    assert_eq!(second["stats"]["conflicts_resolved"], json!(25), "{second:#}");
    assert_eq!(second["stats"]["writes_dead"], json!(1), "{second:#}");
    let dead = fieldsync(dir.path(), &site, &["outbox", "list", "--status", "dead", "--json"]);
    let dead: Value = serde_json::from_slice(&dead.stdout).unwrap();
    assert_eq!(dead.as_array().map(Vec::len), Some(1), "{dead:#}");
    let message = dead[0]["last_error"].as_str().unwrap_or_default();
    assert!(
        message.contains("400") && message.contains("not a valid email"),
        "the site's message: {message}"
    );
    assert!(!message.contains(site.app_password()));
    // The member keeps its new address on the club's side, the site its old one.
    club.execute("UPDATE members SET email = 'member500@club.nl' WHERE knvb_id = 'K00500'", []).unwrap();
    let people = people_of(&site).await;
    let mut rows = club.prepare("SELECT knvb_id, first_name, last_name, email, mobile FROM members").unwrap();
    let members: Vec<(String, String, String, String, String)> = rows
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(members.len(), MEMBERS);
    for (key, first_name, last_name, email, _) in &members {
        let person = &people[key];
        assert_eq!(person["first_name"].as_str(), Some(first_name.as_str()), "{key}");
        assert_eq!(person["last_name"].as_str(), Some(last_name.as_str()), "{key}");
        assert_eq!(person["email"].as_str(), Some(email.as_str()), "{key}");
    }
    let number = |key: &str| key[1..].parse::<usize>().unwrap();
    for (key, first_name, _, email, _) in &members {
        let number = number(key);
        let expected_first = match number {
            51..=75 => format!("Site{number}"),
            1..=100 => format!("Club{number}"),
            _ => format!("First{number}"),
        };
        assert_eq!(first_name, &expected_first, "{key}");
        let expected_email = if (76..=175).contains(&number) {
            format!("site{number}@club.nl")
        } else {
            format!("member{number}@club.nl")
        };
        assert_eq!(email, &expected_email, "{key}");
    }
    // Every conflict is in the history, with both values.
    let history = fieldsync(dir.path(), &site, &["history", "show", &second["run_id"].to_string(), "--json"]);
    let history = String::from_utf8_lossy(&history.stdout);
    assert!(history.contains("Site51") && history.contains("Club51"), "both values of a conflict: {history}");

    let quiet = run(dir.path(), &site, "a run with no new edits", 0);
    assert_eq!(quiet["stats"]["writes_done"], json!(0), "{quiet:#}");
    let full = fieldsync(dir.path(), &site, &["run", "--full", "--json"]);
    let full: Value = serde_json::from_slice(&full.stdout).unwrap();
    assert_eq!(full[0]["stats"]["writes_done"], json!(0), "a full run finds nothing to do: {full:#}");
}
