//! The `fieldsync` binary keeping a club's SQLite member table and a real WordPress site (the
//! `wordpress` preset, site time zone Europe/Amsterdam) in step: an initial sync of 300
//! members, then edits on both sides (some on the same fields), creates on both sides (one that
//! WordPress fails after inserting the post), posts moved to the trash, deletes found by a full
//! scan, a value the site refuses ending dead with its message; every field of every member
//! compared; then quiet runs that PHP's own request log shows changed nothing.

use std::path::Path;

use fieldsync_connector::testkit::wordpress::WordPress;
use fieldsync_test_support::Fieldsync;
use fieldsync_test_support::members::{link_toml, member_fields_toml};
use rusqlite::{Connection, params};
use serde_json::{Value, json};

use crate::support::{assert_one_write_refused, assert_quiet_runs, club_config_start, fieldsync as binary};

const MEMBERS: usize = 300;

fn fieldsync<'a>(dir: &Path, site: &'a WordPress) -> Fieldsync<'a> {
    binary(dir).env("WP_USER", site.user()).secret("WP_APP_PASSWORD", site.app_password())
}

/// One run, timed, ending with `code`; its report as JSON.
fn run(dir: &Path, site: &WordPress, step: &str, code: i32) -> Value {
    fieldsync(dir, site).run_ending(step, &[], code).report()
}

fn config(site: &WordPress) -> String {
    format!(
        r#"{start}[connectors.site]
kind = "rest"
preset = "wordpress"
base_url = "{base}"
auth = {{ basic = {{ user = "${{WP_USER}}", password = "${{WP_APP_PASSWORD}}" }} }}
create = {{ unique = "/meta/knvb_id", templates = {{ "/title" = "{{/meta/first_name}} {{/meta/last_name}}" }} }}

{link}deletes = "propagate"
{fields}"#,
        link = link_toml("members", "club", "site", ("knvb_id", "/meta/knvb_id"), "club"),
        start = club_config_start("members", "knvb_id"),
        base = site.base_url(),
        fields = member_fields_toml(
            "members",
            &[
                ("first_name", "first_name", "/meta/first_name"),
                ("last_name", "last_name", "/meta/last_name"),
                ("email", "email", "/meta/email"),
                ("mobile", "mobile", "/meta/contact_info[type=mobile]/value"),
            ]
        )
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

/// The club's members by key: first name, last name, e-mail and mobile.
fn members_of(club: &Connection) -> std::collections::BTreeMap<String, [String; 4]> {
    let mut rows = club.prepare("SELECT knvb_id, first_name, last_name, email, mobile FROM members").unwrap();
    rows.query_map([], |row| {
        let text = |index: usize| row.get::<_, Option<String>>(index).map(Option::unwrap_or_default);
        Ok((row.get(0)?, [text(1)?, text(2)?, text(3)?, text(4)?]))
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

/// A Dutch mobile number in E.164, however it is written.
fn e164(number: &str) -> String {
    let digits: String = number.chars().filter(char::is_ascii_digit).collect();
    match (digits.strip_prefix("31"), digits.strip_prefix('0')) {
        (Some(rest), _) | (None, Some(rest)) => format!("+31{rest}"),
        (None, None) => digits,
    }
}

/// Asserts that the site's live (not trashed) people and the club's members are the same
/// records with the same values, field by field; returns the people.
async fn assert_same(site: &WordPress, club: &Connection) -> std::collections::BTreeMap<String, Value> {
    let people: std::collections::BTreeMap<String, Value> =
        people_of(site).await.into_iter().filter(|(_, person)| person["status"] != "trash").collect();
    let members = members_of(club);
    assert_eq!(
        people.keys().collect::<Vec<_>>(),
        members.keys().collect::<Vec<_>>(),
        "the two sides hold other members"
    );
    for (key, [first_name, last_name, email, mobile]) in &members {
        let person = &people[key];
        let text = |name: &str| person[name].as_str().unwrap_or_default().to_owned();
        assert_eq!(
            [text("first_name"), text("last_name"), text("email").to_lowercase(), e164(&text("mobile"))],
            [first_name.clone(), last_name.clone(), email.to_lowercase(), e164(mobile)],
            "member {key}: the site and the club differ"
        );
    }
    people
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_club_table_and_a_real_wordpress_site_in_amsterdam_time_keep_300_members_in_step() {
    let Some(site) = WordPress::start().await else { return };
    site.set_time_zone("Europe/Amsterdam").await;
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
                // Some members have no e-mail address: no element, never a null, in the array.
                if number % 10 == 0 { None } else { Some(format!("member{number}@club.nl")) },
                if number % 12 == 0 { None } else { Some(format!("06-{}", 20_000_000 + number)) },
                earlier
            ],
        )
        .unwrap();
    }
    std::fs::write(dir.path().join("fieldsync.toml"), config(&site)).unwrap();

    let check = fieldsync(dir.path(), &site).output(&["check", "--json"]);
    assert_eq!(check.status.code(), Some(0), "{}", String::from_utf8_lossy(&check.stderr));

    let first = run(dir.path(), &site, "initial sync of 300 members", 0);
    assert_eq!(first["stats"]["writes_done"], json!(MEMBERS), "{first:#}");
    let people = assert_same(&site, &club).await;
    assert_eq!(people["K00007"]["title"], "First7 Last7");
    assert_eq!(people["K00012"]["mobile"], Value::Null, "a member without a mobile has no element");

    // The club renames members 1-60 and adds three (whose creates WordPress fails after inserting
    // the posts); the site renames people 31-45 (the same field of the same members: conflicts),
    // changes the e-mail of 46-105, adds two, and moves 250-254 to the trash. Member 200 gets an
    // address the site refuses (WordPress's `is_email` wants a dot in the domain).
    let edited = (jiff::Timestamp::now() - jiff::SignedDuration::from_mins(30)).to_string();
    for number in 1..=60 {
        club.execute(
            "UPDATE members SET first_name = ?1, updated_at = ?2 WHERE knvb_id = ?3",
            params![format!("Club{number}"), edited, format!("K{number:05}")],
        )
        .unwrap();
    }
    for number in 1..=3 {
        club.execute(
            "INSERT INTO members VALUES (?1, 'Nieuw', ?2, ?3, '+31612340000', ?4)",
            params![
                format!("N{number:05}"),
                format!("Lid{number}"),
                format!("nieuw{number}@club.nl"),
                edited
            ],
        )
        .unwrap();
    }
    club.execute(
        "UPDATE members SET email = 'ann@localhost', updated_at = ?1 WHERE knvb_id = 'K00200'",
        params![edited],
    )
    .unwrap();
    let edits: Vec<Value> = (31..=105)
        .map(|number| {
            let key = format!("K{number:05}");
            if number <= 45 {
                json!({"id": people[&key]["id"], "first_name": format!("Site{number}")})
            } else {
                json!({"id": people[&key]["id"], "email": format!("site{number}@club.nl")})
            }
        })
        .collect();
    let trashed: Vec<Value> =
        (250..=254).map(|number| people[&format!("K{number:05}")]["id"].clone()).collect();
    let code = r#"
        foreach ( $input['edits'] as $edit ) {
            if ( isset( $edit['first_name'] ) ) {
                update_post_meta( $edit['id'], 'first_name', $edit['first_name'] );
            } else {
                update_post_meta( $edit['id'], 'email', $edit['email'] );
            }
            wp_update_post( array( 'ID' => $edit['id'] ) );
        }
        foreach ( $input['trash'] as $id ) {
            wp_trash_post( $id );
        }
        foreach ( array( 1, 2 ) as $n ) {
            wp_insert_post( array(
                'post_type' => 'person', 'post_status' => 'publish', 'post_title' => "Web $n",
                'meta_input' => array( 'knvb_id' => "W0000$n", 'first_name' => 'Web', 'last_name' => "Site$n",
                    'email' => "web$n@club.nl", 'contact_info' => array( array( 'type' => 'mobile', 'value' => "06-1111222$n" ) ) ),
            ) );
        }
    "#;
    site.php_with(code, &json!({"edits": edits, "trash": trashed})).await;
    site.fail_contact_info(true).await;

    let second = run(dir.path(), &site, "edits on both sides", 1);
    let dead = assert_one_write_refused(
        &fieldsync(dir.path(), &site),
        &second,
        15,
        "not a valid email",
        site.app_password(),
    );
    // The failed creates left one half-made post each, no more.
    let half_made = people_of(&site).await;
    for number in 1..=3 {
        assert!(half_made.contains_key(&format!("N{number:05}")), "the half-made post N{number:05}");
    }

    // The fault ends; the club puts the refused address back and the dead entry is dropped. The
    // next run completes the half-made posts (found by their keys), and a full run finds the
    // club's hard deletes.
    site.fail_contact_info(false).await;
    club.execute("UPDATE members SET email = 'member200@club.nl' WHERE knvb_id = 'K00200'", []).unwrap();
    let dropped = fieldsync(dir.path(), &site).output(&["outbox", "drop", &dead["id"].to_string()]);
    assert_eq!(dropped.status.code(), Some(0), "{}", String::from_utf8_lossy(&dropped.stderr));
    run(dir.path(), &site, "completing the half-made posts", 0);
    for number in 260..=262 {
        club.execute("DELETE FROM members WHERE knvb_id = ?1", params![format!("K{number:05}")]).unwrap();
    }
    let full = fieldsync(dir.path(), &site).output(&["run", "--full", "--json"]);
    assert_eq!(full.status.code(), Some(0), "{}", String::from_utf8_lossy(&full.stderr));

    let people = assert_same(&site, &club).await;
    assert_eq!(people.len(), MEMBERS + 3 + 2 - 5 - 3);
    let members = members_of(&club);
    for number in 1..=105 {
        let [first_name, _, email, _] = &members[&format!("K{number:05}")];
        let expected_first = match number {
            31..=45 => format!("Site{number}"),
            1..=60 => format!("Club{number}"),
            _ => format!("First{number}"),
        };
        assert_eq!(first_name, &expected_first, "K{number:05}");
        if number >= 46 {
            assert_eq!(email, &format!("site{number}@club.nl"), "K{number:05}");
        }
    }
    for number in 250..=254 {
        assert!(
            !members.contains_key(&format!("K{number:05}")),
            "the trashed K{number:05} is deleted at the club"
        );
    }
    assert_eq!(members["N00002"][2], "nieuw2@club.nl", "a half-made post was completed");
    assert_eq!(members["W00001"][3], "+31611112221");
    let all = people_of(&site).await;
    assert_eq!(all.keys().filter(|key| key.starts_with('N')).count(), 3, "no duplicate of a half-made post");
    assert!(!all.contains_key("K00261"), "the club's hard delete reached the site");
    // Every conflict is in the history, with both values.
    let history =
        fieldsync(dir.path(), &site).output(&["history", "show", &second["run_id"].to_string(), "--json"]);
    let history = String::from_utf8_lossy(&history.stdout);
    assert!(history.contains("Site31") && history.contains("Club31"), "both values of a conflict: {history}");

    // Quiet runs, incremental and full: nothing that changes anything reaches the site.
    let before = site.changing_requests();
    assert_quiet_runs(&fieldsync(dir.path(), &site));
    let after = site.changing_requests();
    assert_eq!(after.len(), before.len(), "a quiet run changed something: {:?}", &after[before.len()..]);
    assert!(!before.is_empty(), "the site's request log holds the sync's writes");
}
