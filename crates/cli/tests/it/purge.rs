//! Personal data in the state store, through the binary: a link whose `audit` keeps digests
//! (`values = "hashed"`) exports a history without a value in clear, `fieldsync purge LINK --key
//! KEY` leaves no byte of the erased member in the state file or its write-ahead log, and
//! `fieldsync purge` deletes the history past each link's `keep`.

use std::path::Path;
use std::time::Duration;

use fieldsync_test_support::json;
use rusqlite::Connection;

use crate::support::{exec, fieldsync, query, setup};

/// The conflicts and audit lines of the link: conflicts held for review, values hashed.
const POLICIES: &str = "conflicts = { strategy = \"review\" }\naudit = { values = \"hashed\" }";

/// The digest fieldsync keeps for `value` (a text) of `field` of the link `members`, worked out
/// here from its definition: the first 16 bytes of SHA-256 over the link, a 0 byte, the field,
/// a 0 byte and the value's JSON, in hex.
fn digest(field: &str, value: &str) -> String {
    let input = format!("members\0{field}\0{}", serde_json::to_string(value).unwrap());
    let sum = ring::digest::digest(&ring::digest::SHA256, input.as_bytes());
    let hex: String = sum.as_ref()[..16].iter().map(|byte| format!("{byte:02x}")).collect();
    format!("sha256:{hex}")
}

/// The texts of `texts` found in `bytes`.
fn found<'t>(bytes: &[u8], texts: &[&'t str]) -> Vec<&'t str> {
    texts
        .iter()
        .copied()
        .filter(|text| bytes.windows(text.len()).any(|window| window == text.as_bytes()))
        .collect()
}

/// The state file's bytes and its write-ahead log's, if it has one.
fn state_bytes(dir: &Path) -> Vec<u8> {
    let mut bytes = std::fs::read(dir.join("state.db")).unwrap();
    bytes.extend(std::fs::read(dir.join("state.db-wal")).unwrap_or_default());
    bytes
}

/// Every column of every audit entry of the state file, as text.
fn audit_rows(dir: &Path) -> String {
    let state = Connection::open(dir.join("state.db")).unwrap();
    let mut statement = state
        .prepare(
            "SELECT key || '|' || coalesce(field, '') || '|' || event || '|' || coalesce(base, '') || '|' \
             || coalesce(left_value, '') || '|' || coalesce(right_value, '') || '|' || coalesce(value, '') \
             || '|' || reason || '|' || kept FROM audit",
        )
        .unwrap();
    let rows: Vec<String> =
        statement.query_map([], |row| row.get(0)).unwrap().collect::<Result<_, _>>().unwrap();
    rows.join("\n")
}

#[test]
fn a_hashed_history_holds_no_value_and_an_erased_member_is_in_no_byte_of_the_state() {
    let (dir, left, right) = setup(POLICIES, 30);
    let dir = dir.path();
    let binary = fieldsync(dir);
    binary.run_ending("the first sync", &[], 0);
    // Anna (M007) changes her address and mobile in the register; Bram (M008) his address; M009
    // is changed on both sides, held for review and decided by a typed value.
    exec(
        &left,
        "UPDATE members SET email = 'anna.devries@example.nl', mobile = '06 12345678', \
         updated_at = datetime('now') WHERE id = 'M007'",
    );
    exec(
        &left,
        "UPDATE members SET email = 'bram.jansen@example.nl', updated_at = datetime('now') WHERE id = 'M008'",
    );
    exec(&left, "UPDATE members SET email = 'left9@club.nl', updated_at = datetime('now') WHERE id = 'M009'");
    exec(
        &right,
        "UPDATE people SET mail = 'right9@club.nl', modified = datetime('now') WHERE number = 'M009'",
    );
    binary.run_ending("the edits", &[], 0);
    assert_eq!(query(&right, "SELECT mail FROM people WHERE number = 'M007'"), "anna.devries@example.nl");
    assert_eq!(query(&right, "SELECT phone FROM people WHERE number = 'M007'"), "+31612345678");
    let reviews = json(&binary.output(&["conflicts", "list", "--json"]));
    let review = reviews[0]["id"].as_i64().unwrap().to_string();
    assert_eq!(reviews[0]["left"], "left9@club.nl", "a review keeps its values");
    let decided = binary.output(&["conflicts", "resolve", &review, "--value", "person9@club.nl"]);
    assert!(decided.status.success(), "{}", String::from_utf8_lossy(&decided.stderr));
    binary.run_ending("the decision", &[], 0);

    // The history, exported as JSON and as CSV, and every audit row of the state file, hold a
    // digest wherever a value was, never the value.
    let values = [
        "anna.devries@example.nl",
        "+31612345678",
        "06 12345678",
        "bram.jansen@example.nl",
        "left9@club.nl",
        "right9@club.nl",
        "person9@club.nl",
        "member7@club.nl",
    ];
    let exported = binary.output(&["history", "export", "--format", "json"]);
    assert!(exported.status.success());
    let history: serde_json::Value = serde_json::from_slice(&exported.stdout).unwrap();
    assert_eq!(found(&exported.stdout, &values), Vec::<&str>::new());
    let audit: Vec<&serde_json::Value> =
        history.as_array().unwrap().iter().flat_map(|run| run["audit"].as_array().unwrap()).collect();
    assert!(audit.iter().all(|entry| entry["values"] == "hashed"), "{history:#}");
    let anna = digest("email", "anna.devries@example.nl");
    let written = audit
        .iter()
        .find(|entry| entry["key"] == "M007" && entry["event"] == "written" && entry["field"] == "email")
        .expect("her address's write is audited");
    assert_eq!(written["value"], anna.as_str());
    let person = audit
        .iter()
        .find(|entry| entry["key"] == "M009" && entry["event"] == "written")
        .expect("the decided value's write is audited");
    assert_eq!(person["value"], digest("email", "person9@club.nl").as_str());
    let csv = binary.output(&["history", "export", "--format", "csv"]);
    assert!(csv.status.success() && csv.stdout.starts_with(b"run,link,"));
    assert_eq!(found(&csv.stdout, &values), Vec::<&str>::new());
    let rows = audit_rows(dir);
    assert!(rows.contains(&anna) && rows.lines().all(|row| row.ends_with("|hashed")), "{rows}");
    assert_eq!(found(rows.as_bytes(), &values), Vec::<&str>::new(), "{rows}");
    // Baselines and the outbox keep values: fieldsync works from them.
    assert_eq!(found(&state_bytes(dir), &["anna.devries@example.nl", "+31612345678"]).len(), 2);

    // Anna asks to be forgotten.
    let erased = binary.output(&["purge", "members", "--key", "M007"]);
    assert!(erased.status.success(), "{}", String::from_utf8_lossy(&erased.stderr));
    let told = String::from_utf8_lossy(&erased.stdout);
    let key_digest = digest("", "M007");
    assert!(told.contains("Erased from link members: its baseline"), "{told}");
    assert!(told.contains(&key_digest) && told.contains("erase the member there too"), "{told}");
    let hers =
        ["M007", "anna.devries@example.nl", "+31612345678", "06 12345678", "0620000007", "member7@club.nl"];
    assert_eq!(found(&state_bytes(dir), &hers), Vec::<&str>::new());
    assert_eq!(
        found(&state_bytes(dir), &["M008", "bram.jansen@example.nl", "M009"]).len(),
        3,
        "the others stay"
    );
    let state = Connection::open(dir.join("state.db")).unwrap();
    let (event, reason): (String, String) = state
        .query_row("SELECT event, reason FROM audit WHERE key = ?1", [&key_digest], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .unwrap();
    assert_eq!(event, "erased");
    assert!(reason.starts_with("record erased by a person: its baseline"), "{reason}");
    let status = json(&binary.output(&["status", "--json"]));
    assert_eq!(status[0]["records"], 29);
    let again = json(&binary.output(&["purge", "members", "--key", "M007", "--json"]));
    assert_eq!(
        (&again["baseline"], &again["audit_entries"], &again["wiped"]),
        (&false.into(), &0.into(), &true.into())
    );
    assert_eq!(again["key_digest"], key_digest.as_str());

    // Asked wrongly: a key without its link, a link that is not there.
    assert_eq!(binary.output(&["purge", "--key", "M001"]).status.code(), Some(2));
    let unknown = binary.output(&["purge", "nope", "--key", "M001"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no link named \"nope\""));

    // Without a key: nothing while the link keeps its history for ever; with `keep`, what is
    // older goes, but the last run that read both sides stays.
    let kept = binary.output(&["purge"]);
    assert!(String::from_utf8_lossy(&kept.stdout).contains("members: history kept for ever"), "{kept:?}");
    let config = std::fs::read_to_string(dir.join("fieldsync.toml")).unwrap();
    let config =
        config.replace("audit = { values = \"hashed\" }", "audit = { values = \"hashed\", keep = \"1s\" }");
    std::fs::write(dir.join("fieldsync.toml"), config).unwrap();
    std::thread::sleep(Duration::from_millis(1_500));
    let purged = json(&binary.output(&["purge", "--json"]));
    assert_eq!((&purged[0]["link"], &purged[0]["keep"]), (&"members".into(), &"1s".into()), "{purged:#}");
    assert!(
        purged[0]["runs"].as_u64().unwrap() >= 2 && purged[0]["audit_entries"].as_u64().unwrap() > 0,
        "{purged:#}"
    );
    let runs = json(&binary.output(&["history", "list", "--json"]));
    assert_eq!(runs.as_array().unwrap().len(), 1, "{runs:#}");
    let help = binary.output(&["purge", "--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("--key <KEY>")
            && help.contains("audit.keep")
            && help.contains("erase the member there too"),
        "{help}"
    );
}
