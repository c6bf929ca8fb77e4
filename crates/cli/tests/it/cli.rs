//! The `fieldsync` binary end to end, on real SQLite files in temporary directories: the
//! checks the sync-engine issue names, run as a user would run them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use fieldsync_test_support::json;
use serde_json::Value;

use crate::support::{add_new_members, exec, fieldsync as binary, outbox_entries, query, setup};

fn fieldsync(dir: &Path, args: &[&str]) -> Output {
    binary(dir).output(args)
}

fn run(dir: &Path) -> (i32, Value) {
    let run = binary(dir).run("run", &["run", "--json"]);
    (run.code().unwrap(), run.json)
}

/// The `conflicts` line of a link whose conflicts wait for a person to review them.
const REVIEW: &str = r#"conflicts = { strategy = "review" }"#;

/// `setup` of `count` members with conflicts held for review, after a first run that took the
/// baselines.
fn synced(count: usize) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let (dir, left, right) = setup(REVIEW, count);
    run(dir.path());
    (dir, left, right)
}

#[test]
fn edits_on_both_sides_propagate_and_conflicts_follow_the_strategy() {
    let (dir, left, right) =
        setup(r#"conflicts = { strategy = "last_write_wins", grace = "5s", tie = "register" }"#, 20);
    let (code, first) = run(dir.path());
    assert_eq!(code, 0, "{first}");
    assert_eq!(first[0]["stats"]["writes_done"], 0, "the sides already agree once normalised");

    // One member: e-mail edited on the left, mobile on the right.
    exec(&left, "UPDATE members SET email = 'New@Club.nl', updated_at = datetime('now') WHERE id = 'M001'");
    exec(&right, "UPDATE people SET phone = '06 11223344', modified = datetime('now') WHERE number = 'M001'");
    // Same field on both sides, 2 s apart (inside the grace): the tie side (register) wins.
    exec(
        &left,
        "UPDATE members SET email = 'tie-left@club.nl', updated_at = datetime('now', '-2 seconds') WHERE id = 'M002'",
    );
    exec(
        &right,
        "UPDATE people SET mail = 'tie-right@club.nl', modified = datetime('now') WHERE number = 'M002'",
    );
    // Same field on both sides, a minute apart: the later edit (website) wins.
    exec(
        &left,
        "UPDATE members SET email = 'old-left@club.nl', updated_at = datetime('now', '-60 seconds') WHERE id = 'M003'",
    );
    exec(
        &right,
        "UPDATE people SET mail = 'late-right@club.nl', modified = datetime('now') WHERE number = 'M003'",
    );

    let (code, report) = run(dir.path());
    assert_eq!(code, 0, "{report}");
    assert_eq!(query(&right, "SELECT mail FROM people WHERE number = 'M001'"), "new@club.nl");
    assert_eq!(query(&left, "SELECT mobile FROM members WHERE id = 'M001'"), "+31611223344");
    assert_eq!(query(&right, "SELECT mail FROM people WHERE number = 'M002'"), "tie-left@club.nl");
    assert_eq!(query(&left, "SELECT email FROM members WHERE id = 'M003'"), "late-right@club.nl");
    assert_eq!(report[0]["stats"]["conflicts_resolved"], 2);

    // Every decision is in the history with both values and the reason.
    let run_id = report[0]["run_id"].as_i64().unwrap().to_string();
    let shown = json(&fieldsync(dir.path(), &["history", "show", &run_id, "--json"]));
    let audit = shown["audit"].as_array().unwrap();
    let tie = audit
        .iter()
        .find(|entry| entry["key"] == "M002" && entry["event"] == "resolved")
        .expect("the tie is audited");
    assert_eq!(tie["left"], "tie-left@club.nl");
    assert_eq!(tie["right"], "tie-right@club.nl");
    assert!(tie["reason"].as_str().unwrap().contains("grace"), "{tie}");

    let (_, again) = run(dir.path());
    assert_eq!(again[0]["stats"]["writes_done"], 0, "a second run writes nothing: {again}");
}

#[test]
fn review_holds_both_sides_until_a_person_decides() {
    let (dir, left, right) = synced(5);
    exec(&left, "UPDATE members SET email = 'left@club.nl', updated_at = datetime('now') WHERE id = 'M001'");
    exec(
        &right,
        "UPDATE people SET mail = 'right@club.nl', modified = datetime('now') WHERE number = 'M001'",
    );
    let (code, report) = run(dir.path());
    assert_eq!(code, 0, "{report}");
    assert_eq!(report[0]["stats"]["writes_done"], 0);
    assert_eq!(query(&left, "SELECT email FROM members WHERE id = 'M001'"), "left@club.nl");
    assert_eq!(query(&right, "SELECT mail FROM people WHERE number = 'M001'"), "right@club.nl");

    let reviews = json(&fieldsync(dir.path(), &["conflicts", "list", "--json"]));
    let id = reviews[0]["id"].as_i64().unwrap().to_string();
    // What the review is about stands beside its number and status, not nested.
    let about = [&reviews[0]["key"], &reviews[0]["field"], &reviews[0]["left"], &reviews[0]["status"]];
    assert_eq!(about, ["M001", "email", "left@club.nl", "open"], "{reviews}");
    // Each side's value with when that side changed it (the rows' modification times).
    let shown = fieldsync(dir.path(), &["conflicts", "show", &id]);
    let shown = String::from_utf8_lossy(&shown.stdout);
    let left_changed = query(&left, "SELECT updated_at FROM members WHERE id = 'M001'");
    let right_changed = query(&right, "SELECT modified FROM people WHERE number = 'M001'");
    assert!(shown.contains(&format!("\"left@club.nl\"  (changed {left_changed} UTC)")), "{shown}");
    assert!(shown.contains(&format!("\"right@club.nl\"  (changed {right_changed} UTC)")), "{shown}");
    let resolve = fieldsync(dir.path(), &["conflicts", "resolve", &id, "--value", "Decided@Club.nl"]);
    assert!(resolve.status.success(), "{}", String::from_utf8_lossy(&resolve.stderr));
    let (code, report) = run(dir.path());
    assert_eq!(code, 0, "{report}");
    assert_eq!(query(&left, "SELECT email FROM members WHERE id = 'M001'"), "decided@club.nl");
    assert_eq!(query(&right, "SELECT mail FROM people WHERE number = 'M001'"), "decided@club.nl");
    let (_, quiet) = run(dir.path());
    assert_eq!(quiet[0]["stats"]["writes_done"], 0);
    let all = json(&fieldsync(dir.path(), &["conflicts", "list", "--all", "--json"]));
    assert_eq!(all[0]["status"], "closed", "{all}");
}

#[test]
fn a_typo_in_the_configuration_names_the_place_and_touches_nothing() {
    let (dir, _, _) = setup(REVIEW, 1);
    let path = dir.path().join("fieldsync.toml");
    let text = std::fs::read_to_string(&path).unwrap().replace("type = \"email\"", "type = \"emial\"");
    std::fs::write(&path, text).unwrap();
    let output = fieldsync(dir.path(), &["run"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("fieldsync.toml:27:8"), "{stderr}");
    assert!(stderr.contains("emial"), "{stderr}");
    assert!(!dir.path().join("state.db").exists(), "no state store was created");
}

#[test]
fn a_rejected_write_is_a_dead_entry_while_the_others_sync() {
    let (dir, left, right) = synced(5);
    exec(&left, "UPDATE members SET email = 'no-at-sign', updated_at = datetime('now') WHERE id = 'M001'");
    exec(&left, "UPDATE members SET email = 'fine@club.nl', updated_at = datetime('now') WHERE id = 'M002'");
    let (code, report) = run(dir.path());
    assert_eq!(code, 1, "{report}");
    assert_eq!(query(&right, "SELECT mail FROM people WHERE number = 'M002'"), "fine@club.nl");
    let dead = json(&fieldsync(dir.path(), &["outbox", "list", "--status", "dead", "--json"]));
    assert_eq!(dead.as_array().unwrap().len(), 1);
    assert!(dead[0]["last_error"].as_str().unwrap().contains("CHECK constraint failed"), "{dead}");
}

#[test]
fn deleting_most_records_stops_at_the_guard() {
    let (dir, left, right) = synced(10);
    exec(&left, "DELETE FROM members WHERE id < 'M006'");
    let output = fieldsync(dir.path(), &["run", "--full"]);
    assert_eq!(output.status.code(), Some(3), "{}", String::from_utf8_lossy(&output.stdout));
    assert!(String::from_utf8_lossy(&output.stdout).contains("STOPPED BY THE GUARD"));
    assert_eq!(query(&right, "SELECT count(*) || '' FROM people"), "10");
}

#[test]
fn history_exports_to_csv_and_json() {
    let (dir, left, _) = synced(3);
    exec(&left, "UPDATE members SET email = 'x@club.nl', updated_at = datetime('now') WHERE id = 'M001'");
    run(dir.path());
    let csv_out = fieldsync(dir.path(), &["history", "export", "--format", "csv", "--output", "history.csv"]);
    assert!(csv_out.status.success());
    let mut reader = csv::Reader::from_path(dir.path().join("history.csv")).unwrap();
    let headers = reader.headers().unwrap().clone();
    assert_eq!(&headers[0], "run");
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 2);
    let writes = headers.iter().position(|header| header == "writes_done").unwrap();
    assert_eq!(&rows[0][writes], "1");
    let exported = json(&fieldsync(dir.path(), &["history", "export", "--format", "json"]));
    assert_eq!(exported.as_array().unwrap().len(), 2);
    assert!(exported[0]["audit"].as_array().unwrap().iter().any(|entry| entry["event"] == "written"));
}

#[test]
fn the_demo_ends_with_a_run_that_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let output = fieldsync(dir.path(), &["demo"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("conflict"), "{stdout}");
    assert!(stdout.contains("last write wins"), "{stdout}");
    assert!(stdout.contains("fieldsync -c"), "{stdout}");
    let (code, report) = run(&dir.path().join("fieldsync-demo"));
    assert_eq!(code, 0);
    assert_eq!(report[0]["stats"]["writes_done"], 0);
    // The demo refuses to overwrite a directory it did not make.
    std::fs::create_dir(dir.path().join("mine")).unwrap();
    std::fs::write(dir.path().join("mine/notes.txt"), "keep me").unwrap();
    let refused = fieldsync(dir.path(), &["demo", "--dir", "mine"]);
    assert_eq!(refused.status.code(), Some(2));
}

#[test]
fn check_opens_every_connector_and_lists_what_it_can_do() {
    let (dir, left, _) = setup(REVIEW, 2);
    let output = fieldsync(dir.path(), &["check", "--json"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let checked = json(&output);
    assert_eq!(checked["connectors"]["register"]["probe"]["records"], 2);
    assert_eq!(checked["connectors"]["website"]["probe"]["capabilities"]["incremental"], true);
    // A connector whose table lacks a configured column fails the check, naming it.
    exec(&left, "ALTER TABLE members RENAME COLUMN mobile TO gsm");
    let output = fieldsync(dir.path(), &["check"]);
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("register: FAILED") && stdout.contains("mobile"), "{stdout}");
}

/// Regression: the guard weighed a run's changes against the live baselines only, so changes
/// to records seen on both sides for the first time read "would change 10 of 3 records". A
/// side read in full weighs them against every record it listed.
#[test]
fn the_guard_weighs_changes_against_the_records_a_side_holds() {
    let first_sync =
        "conflicts = { strategy = \"review\" }\nfirst_sync = { strategy = \"prefer\", side = \"register\" }";
    let (dir, left, right) = setup(first_sync, 3);
    assert_eq!(run(dir.path()).0, 0);
    for number in 3..13 {
        let (id, mobile) = (format!("M{number:03}"), format!("+316{:08}", 30_000_000 + number));
        exec(
            &left,
            &format!(
                "INSERT INTO members VALUES ('{id}', 'member{number}@club.nl', '{mobile}', datetime('now'))"
            ),
        );
        exec(
            &right,
            &format!(
                "INSERT INTO people VALUES ('{id}', 'old{number}@club.nl', '{mobile}', datetime('now'))"
            ),
        );
    }
    let output = fieldsync(dir.path(), &["run", "--full"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(3), "{stdout}");
    assert!(stdout.contains("would change 10 of 13 records on the website side"), "{stdout}");
    assert_eq!(query(&right, "SELECT mail FROM people WHERE number = 'M005'"), "old5@club.nl");
}

/// Regression: `fieldsync run | head` panicked with a backtrace when the reader closed the
/// pipe. A closed standard output ends the output quietly; the run itself still finishes and
/// is recorded, and its exit code is what it would have been.
#[test]
fn a_closed_standard_output_ends_the_output_quietly() {
    let (dir, left, right) = synced(3);
    exec(&left, "UPDATE members SET email = 'piped@club.nl', updated_at = datetime('now') WHERE id = 'M001'");
    for args in [&["run"][..], &["history", "list"], &["history", "export", "--format", "json"], &["status"]]
    {
        let (reader, writer) = std::io::pipe().unwrap();
        // Closed before fieldsync writes a byte: every write it makes meets a closed pipe.
        drop(reader);
        let output = binary(dir.path()).command(args).stdout(writer).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked") && stderr.is_empty(), "{args:?}: {stderr}");
    }
    assert_eq!(query(&right, "SELECT mail FROM people WHERE number = 'M001'"), "piped@club.nl");
}

/// Regression: `status`, `history`, `conflicts` and `outbox` required every connector's
/// `${NAME}` variables though they open no connector. Only the commands that open one need
/// them, and those name the variable that is missing.
#[test]
fn commands_that_open_no_connector_need_no_secrets() {
    let (dir, _, _) = setup(REVIEW, 3);
    let config_path = dir.path().join("fieldsync.toml");
    let config = std::fs::read_to_string(&config_path).unwrap();
    std::fs::write(&config_path, config.replace("path = \"right.db\"", "path = \"${WEBSITE_DB}\"")).unwrap();
    let with_secret = binary(dir.path()).env("WEBSITE_DB", "right.db").output(&["run", "--json"]);
    assert_eq!(with_secret.status.code(), Some(0), "{}", String::from_utf8_lossy(&with_secret.stderr));
    for args in [&["status"][..], &["history", "list"], &["conflicts", "list"], &["outbox", "list"]] {
        let output = fieldsync(dir.path(), args);
        assert_eq!(output.status.code(), Some(0), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
    }
    let status = fieldsync(dir.path(), &["status"]);
    assert!(String::from_utf8_lossy(&status.stdout).contains("3 records in step"));
    for args in [&["run"][..], &["plan"], &["check"]] {
        let output = fieldsync(dir.path(), args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("WEBSITE_DB is not set"), "{args:?}: {stderr}");
    }
}

/// Regression: `outbox list --json` stopped at 50 entries without saying so, and `status` said
/// "in step" while writes were dead. Lists say how many more there are and page with
/// `--before`; `status` counts what waits and says the link is not in step.
#[test]
fn lists_page_and_status_never_says_in_step_while_writes_wait() {
    let (dir, left, _) = synced(60);
    exec(&left, "UPDATE members SET email = 'no-at-sign-' || id, updated_at = datetime('now')");
    assert_eq!(fieldsync(dir.path(), &["run", "--force"]).status.code(), Some(1));

    let first = fieldsync(dir.path(), &["outbox", "list", "--json"]);
    let page = json(&first);
    assert_eq!(page.as_array().unwrap().len(), 50);
    let stderr = String::from_utf8_lossy(&first.stderr);
    let last = page[49]["id"].as_i64().unwrap();
    assert!(stderr.contains(&format!("10 more entries; the next page: --before {last}")), "{stderr}");
    let rest = json(&fieldsync(dir.path(), &["outbox", "list", "--json", "--before", &last.to_string()]));
    assert_eq!(rest.as_array().unwrap().len(), 10);
    let mut ids: Vec<i64> = page
        .as_array()
        .unwrap()
        .iter()
        .chain(rest.as_array().unwrap())
        .map(|entry| entry["id"].as_i64().unwrap())
        .collect();
    ids.dedup();
    assert_eq!(ids.len(), 60, "two pages list every entry once");
    let all = json(&fieldsync(dir.path(), &["outbox", "list", "--json", "--limit", "0"]));
    assert_eq!(all.as_array().unwrap().len(), 60);
    let text = String::from_utf8_lossy(&fieldsync(dir.path(), &["outbox", "list"]).stdout).to_string();
    assert!(text.contains("10 more entries"), "{text}");

    let status = fieldsync(dir.path(), &["status"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("NOT in step: 60 writes dead") && !text.contains("in step\n"), "{text}");
    let status = json(&fieldsync(dir.path(), &["status", "--json"]));
    assert_eq!(
        (status[0]["in_step"].as_bool(), status[0]["outbox"]["dead"].as_u64()),
        (Some(false), Some(60))
    );
}

/// Regression: a number no review, run or outbox entry has (a typo) exited 1, the code for
/// writes that failed and wait in the outbox; it is a usage error.
#[test]
fn a_number_nothing_has_is_a_usage_error() {
    let (dir, _, _) = setup(REVIEW, 2);
    assert_eq!(fieldsync(dir.path(), &["run"]).status.code(), Some(0));
    for (args, message) in [
        (&["history", "show", "999"][..], "no run with id 999"),
        (&["conflicts", "show", "999"], "no review with id 999"),
        (&["conflicts", "resolve", "999", "--keep", "left"], "no review with id 999"),
        (&["outbox", "retry", "999"], "no outbox entry with id 999"),
        (&["outbox", "drop", "999"], "no outbox entry with id 999"),
    ] {
        let output = fieldsync(dir.path(), args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
}

/// Every Rust source file of the workspace opens with a `//!` doc saying what it is, as the
/// architecture asks; a file without one fails here with its path.
#[test]
fn every_source_file_starts_with_a_module_doc() {
    fn sources(dir: &Path, found: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("a readable source folder") {
            let path = entry.expect("a folder entry").path();
            let name = path.file_name().and_then(|name| name.to_str()).unwrap_or_default();
            if path.is_dir() && !name.starts_with('.') && name != "target" {
                sources(&path, found);
            } else if path.extension().is_some_and(|extension| extension == "rs") {
                found.push(path);
            }
        }
    }
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    sources(&crates, &mut files);
    assert!(files.len() > 50, "the workspace's sources were found: {}", files.len());
    let undocumented: Vec<String> = files
        .iter()
        .filter(|path| {
            let text = std::fs::read_to_string(path).expect("a readable source file");
            !text.trim_start().starts_with("//!")
        })
        .map(|path| path.strip_prefix(&crates).unwrap_or(path).display().to_string())
        .collect();
    assert!(undocumented.is_empty(), "files without a `//!` doc: {undocumented:?}");
}

/// Ctrl-C (SIGINT) during a run stops it between two commits: fieldsync exits 130 after the run
/// recorded itself as cancelled (the history says so), and the next run completes the sync.
#[test]
fn ctrl_c_cancels_a_run_which_records_itself_and_the_next_run_completes() {
    const MEMBERS: usize = 20_000;
    let (dir, left, right) = setup(REVIEW, 0);
    add_new_members(&left, MEMBERS);
    let mut child = binary(dir.path())
        .command(&["run", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the fieldsync binary runs");
    // Interrupted once the run has committed a chunk of its plan.
    let state = dir.path().join("state.db");
    let started = std::time::Instant::now();
    loop {
        if outbox_entries(&state) > 0 {
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "the run ended before it could be interrupted");
        assert!(started.elapsed() < std::time::Duration::from_secs(120), "no plan committed");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let interrupted = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(interrupted.success());
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130), "{}", String::from_utf8_lossy(&output.stdout));
    assert_eq!(json(&output)[0]["status"], "cancelled");
    let history = fieldsync(dir.path(), &["history"]);
    let history = String::from_utf8_lossy(&history.stdout);
    assert!(history.lines().any(|line| line.contains("cancelled")), "{history}");

    let (code, reports) = run(dir.path());
    assert_eq!((code, reports[0]["status"].as_str()), (0, Some("done")), "{reports:#}");
    assert_eq!(query(&right, "SELECT count(*) || '' FROM people"), MEMBERS.to_string());
    assert_eq!(query(&right, "SELECT count(DISTINCT number) || '' FROM people"), MEMBERS.to_string());
    let (code, quiet) = run(dir.path());
    assert_eq!((code, quiet[0]["stats"]["writes_done"].as_u64()), (0, Some(0)), "{quiet:#}");
}
