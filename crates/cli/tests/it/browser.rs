//! The `fieldsync` binary keeping a club's SQLite member table and a web admin without an API
//! (the browser connector's fixture site) in step: seven fields in both directions, a site
//! that stops answering in the middle of a run, a refused address, and `kill -9` in the middle
//! of a run leaving no browser behind.

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use fieldsync_connector_browser::testkit::site::SiteServer;
use fieldsync_test_support::Fieldsync;
use fieldsync_test_support::members::{fields_toml, link_toml};
use rusqlite::{Connection, params};
use serde_json::{Value, json};

use crate::support::{WEB_ADMIN_POLICIES, browser_available, club_config_start, fieldsync as binary};

const FIELDS: [(&str, &str); 7] = [
    ("email", "email"),
    ("email2", "email"),
    ("mobile", "phone"),
    ("phone", "phone"),
    ("note", "text"),
    ("remarks", "text"),
    ("financial_block", "bool"),
];

fn config(site: &SiteServer) -> String {
    let mut text = format!(
        r##"{start}[connectors.federation]
kind = "browser"
base_url = "{base}"
id = "relation_code"
modified = "modified"
list = {{ csv = {{ url = "/members/export.csv" }} }}
login = {{ url = "/login", username_field = "#username", password_field = "#password", submit = "#login-submit", username = "${{SITE_USER}}", password = "${{SITE_PASSWORD}}", page = "form#login", error = "#login-error" }}
timeout = "10s"

[[connectors.federation.pages]]
url = "/member/{{id}}/general"
edit = "#edit"
save = "#save"
saved = "#saved"
error = "#form-error"
fields = {{ email = {{ selector = "#email" }}, email2 = {{ selector = "#email2" }}, mobile = {{ selector = "#mobile" }}, phone = {{ selector = "#phone" }} }}

[[connectors.federation.pages]]
url = "/member/{{id}}/other"
edit = "#edit"
save = "#save"
saved = "#saved"
fields = {{ note = {{ selector = "#note" }}, remarks = {{ selector = "#remarks" }} }}

[[connectors.federation.pages]]
url = "/member/{{id}}/financial"
edit = "#edit"
save = "#save"
saved = "#saved"
fields = {{ financial_block = {{ selector = "#financial_block", kind = "checkbox" }} }}

{link}{WEB_ADMIN_POLICIES}"##,
        link = link_toml("members", "club", "federation", ("relation_code", "relation_code"), "federation"),
        start = club_config_start("members", "relation_code"),
        base = site.base_url()
    );
    text.push_str(&fields_toml("members", &FIELDS.map(|(name, kind)| (name, kind, name, name))));
    text
}

fn fieldsync(dir: &Path, site: &SiteServer) -> Fieldsync<'static> {
    let (user, password) = site.credentials();
    binary(dir).env("SITE_USER", &user).env("SITE_PASSWORD", &password)
}

fn run(dir: &Path, site: &SiteServer, step: &str) -> (Value, Output) {
    let run = fieldsync(dir, site).run(step, &["run", "--json"]);
    (run.report(), run.output)
}

/// A club table and a site holding the same `count` members; `None` (the test then has nothing
/// to run) when the browser is not here.
async fn setup(count: usize) -> Option<(tempfile::TempDir, Connection, SiteServer)> {
    if !browser_available() {
        return None;
    }
    let site = SiteServer::start().await;
    site.set_edit_delay(Duration::from_millis(50));
    let dir = tempfile::tempdir().unwrap();
    let club = Connection::open(dir.path().join("club.db")).unwrap();
    club.execute_batch(
        "CREATE TABLE members (relation_code TEXT PRIMARY KEY, email TEXT, email2 TEXT, mobile TEXT, phone TEXT,
                               note TEXT, remarks TEXT, financial_block INTEGER, updated_at TEXT NOT NULL);",
    )
    .unwrap();
    let earlier = (jiff::Timestamp::now() - jiff::SignedDuration::from_hours(1)).to_string();
    for number in 1..=count {
        let code = format!("KNVB{number:04}");
        let email = format!("member{number}@club.nl");
        let mobile = format!("+316{:08}", 10_000_000 + number);
        site.insert(json!({
            "relation_code": code, "first_name": format!("First{number}"), "last_name": "Jansen",
            "email": email, "email2": "", "mobile": mobile, "phone": "", "note": "", "remarks": "", "financial_block": false,
        }));
        club.execute(
            "INSERT INTO members VALUES (?1, ?2, '', ?3, '', '', '', 0, ?4)",
            params![code, email, mobile, earlier],
        )
        .unwrap();
    }
    std::fs::write(dir.path().join("fieldsync.toml"), config(&site)).unwrap();
    Some((dir, club, site))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seven_fields_sync_both_ways_through_the_sites_forms_and_a_second_run_writes_nothing() {
    let Some((dir, club, site)) = setup(12).await else { return };
    let (first, _) = run(dir.path(), &site, "first run: baselines of 12 members");
    assert_eq!(first["stats"]["writes_done"], json!(0), "{first:#}");

    // The club edits members 1-4 on every page; the site's people edit 5-8.
    let now = jiff::Timestamp::now().to_string();
    for number in 1..=4 {
        club.execute(
            "UPDATE members SET email = ?1, email2 = ?2, mobile = ?3, phone = ?4, note = ?5, remarks = ?6,
                                financial_block = 1, updated_at = ?7 WHERE relation_code = ?8",
            params![
                format!("club{number}@club.nl"),
                format!("second{number}@club.nl"),
                "06-12345678",
                "010-1234567",
                format!("note from the club {number}"),
                format!("line one\nline two {number}"),
                now,
                format!("KNVB{number:04}")
            ],
        )
        .unwrap();
    }
    for number in 5..=8 {
        let code = format!("KNVB{number:04}");
        site.update(&code, "email2", format!("site{number}@club.nl"));
        site.update(&code, "note", format!("note from the site {number}"));
        site.update(&code, "financial_block", true);
    }
    site.clear_requests();
    let began = Instant::now();
    let (second, output) =
        run(dir.path(), &site, "4 members written through 3 pages each, 4 read from the export");
    assert_eq!(output.status.code(), Some(0), "{second:#}\n{}", String::from_utf8_lossy(&output.stderr));
    let writes = second["stats"]["writes_done"].as_u64().unwrap();
    assert_eq!(writes, 8, "4 members to the site, 4 to the club: {second:#}");
    eprintln!(
        "about {:.1} s a member written to the site, starting the browser and logging in included",
        began.elapsed().as_secs_f64() / 4.0
    );
    for number in 1..=4 {
        let member = site.member(&format!("KNVB{number:04}")).unwrap();
        assert_eq!(member.email, format!("club{number}@club.nl"));
        assert_eq!(member.email2, format!("second{number}@club.nl"));
        assert_eq!(member.mobile, "+31612345678", "written as the club's number in E.164");
        assert_eq!(member.note, format!("note from the club {number}"));
        assert_eq!(member.remarks.replace("\r\n", "\n"), format!("line one\nline two {number}"));
        assert!(member.financial_block);
        assert_eq!(site.saves(&format!("KNVB{number:04}")), 3, "one save per page");
    }
    for number in 5..=8 {
        let (email2, note, block): (String, String, i64) = club
            .query_row(
                "SELECT email2, note, financial_block FROM members WHERE relation_code = ?1",
                params![format!("KNVB{number:04}")],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .unwrap();
        assert_eq!(
            (email2, note, block),
            (format!("site{number}@club.nl"), format!("note from the site {number}"), 1)
        );
        assert_eq!(site.saves(&format!("KNVB{number:04}")), 0, "nothing written back to the site");
    }

    // Every field of every member, on both sides: the club keeps its own spelling of the
    // numbers it typed, the site holds them in E.164.
    let mut on_site: Vec<Row> = (1..=12)
        .map(|number| {
            (
                format!("KNVB{number:04}"),
                format!("member{number}@club.nl"),
                String::new(),
                format!("+316{:08}", 10_000_000 + number),
                String::new(),
                String::new(),
                String::new(),
                false,
            )
        })
        .collect();
    for (number, row) in (1..).zip(&mut on_site[0..4]) {
        row.1 = format!("club{number}@club.nl");
        row.2 = format!("second{number}@club.nl");
        row.3 = "+31612345678".into();
        row.4 = "+31101234567".into();
        row.5 = format!("note from the club {number}");
        row.6 = format!("line one\nline two {number}");
        row.7 = true;
    }
    for (number, row) in (5..).zip(&mut on_site[4..8]) {
        row.2 = format!("site{number}@club.nl");
        row.5 = format!("note from the site {number}");
        row.7 = true;
    }
    let mut in_club = on_site.clone();
    for row in &mut in_club[0..4] {
        row.3 = "06-12345678".into();
        row.4 = "010-1234567".into();
    }
    assert_eq!(site_rows(&site), on_site);
    assert_eq!(club_rows(&club), in_club);

    let saves = site.total_saves();
    let (quiet, _) = run(dir.path(), &site, "a run with no new edits");
    assert_eq!(quiet["stats"]["writes_done"], json!(0), "{quiet:#}");
    assert_eq!(site.total_saves(), saves, "no form was saved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_that_stops_answering_leaves_writes_pending_and_a_refused_address_is_dead_with_a_screenshot() {
    let Some((dir, club, site)) = setup(10).await else { return };
    run(dir.path(), &site, "first run: baselines");
    let now = jiff::Timestamp::now().to_string();
    for number in 1..=10 {
        let email = if number == 3 { "not-an-address".to_string() } else { format!("new{number}@club.nl") };
        club.execute(
            "UPDATE members SET email = ?1, updated_at = ?2 WHERE relation_code = ?3",
            params![email, now, format!("KNVB{number:04}")],
        )
        .unwrap();
    }
    // The site stops answering after four saves.
    let mut command = fieldsync(dir.path(), &site).command(&["run", "--json"]);
    let runner = tokio::task::spawn_blocking(move || command.output().expect("fieldsync runs"));
    let stopper = {
        let started = Instant::now();
        async move {
            while site.total_saves() < 4 && started.elapsed() < Duration::from_secs(60) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            site.refuse_connections();
            site
        }
    };
    let site = stopper.await;
    let output = runner.await.unwrap();
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(output.status.code(), Some(1), "some writes wait: {report:#}");
    let done = report[0]["stats"]["writes_done"].as_u64().unwrap();
    assert!(done < 9, "the site went away in the middle: {report:#}");
    assert_eq!(site.member("KNVB0010").unwrap().email, "member10@club.nl", "not yet written");

    site.accept_connections();
    let (next, _) = run(dir.path(), &site, "the next run, with the site back");
    let done_next = next["stats"]["writes_done"].as_u64().unwrap();
    assert_eq!(done + done_next, 9, "every member but the refused one: {next:#}");
    for number in (1..=10).filter(|&number| number != 3) {
        assert_eq!(site.member(&format!("KNVB{number:04}")).unwrap().email, format!("new{number}@club.nl"));
    }
    assert_eq!(site.member("KNVB0003").unwrap().email, "member3@club.nl");
    let dead = fieldsync(dir.path(), &site).only_dead_entry();
    let message = dead["last_error"].as_str().unwrap_or_default();
    assert!(message.contains("E-mail address is not valid: not-an-address"), "the site's message: {message}");
    assert!(message.contains("/member/KNVB0003/general"), "the page: {message}");
    let shot =
        message.split("screenshot ").nth(1).map(|rest| rest.trim_end_matches(')')).expect("a screenshot");
    assert!(std::fs::read(shot).unwrap().starts_with(b"\x89PNG"));
    assert!(Path::new(shot).starts_with(dir.path().join("screenshots")), "beside the configuration: {shot}");
}

/// The processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(command) = std::fs::read(entry.path().join("cmdline")) else { continue };
        // A zombie has an empty command line: it is gone, only not yet reaped.
        if String::from_utf8_lossy(&command).contains(needle) {
            found.push(pid);
        }
    }
    found
}

/// The run directories of browsers started by process `pid` and its children.
fn browser_runs_of(pid: u32) -> Vec<String> {
    let mut runs = Vec::new();
    for entry in std::fs::read_dir(std::env::temp_dir()).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if !name.starts_with("fieldsync-browser-") {
            continue;
        }
        let owner = std::fs::read_to_string(entry.path().join("owner")).unwrap_or_default();
        if owner.split_whitespace().next() == Some(pid.to_string().as_str()) {
            runs.push(name);
        }
    }
    runs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_in_the_middle_of_a_run_fieldsync_leaves_no_browser_behind() {
    let Some((dir, club, site)) = setup(20).await else { return };
    run(dir.path(), &site, "first run: baselines");
    let now = jiff::Timestamp::now().to_string();
    club.execute("UPDATE members SET note = 'changed', updated_at = ?1", params![now]).unwrap();
    let mut child = fieldsync(dir.path(), &site)
        .command(&["run"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let started = Instant::now();
    while site.total_saves() < 3 {
        assert!(started.elapsed() < Duration::from_secs(60), "the run never started saving");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let runs = browser_runs_of(pid);
    assert_eq!(runs.len(), 1, "one browser run of this fieldsync: {runs:?}");
    let browser = processes_mentioning(&runs[0]);
    assert!(browser.len() >= 3, "chromedriver, Chromium and its helpers: {browser:?}");
    let mut memory_kib = 0;
    for process in &browser {
        let status = std::fs::read_to_string(format!("/proc/{process}/smaps_rollup")).unwrap_or_default();
        memory_kib += status
            .lines()
            .find_map(|line| line.strip_prefix("Pss:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0);
    }
    eprintln!(
        "the browser while writing: {} processes, {} MB proportional set size",
        browser.len(),
        memory_kib / 1024
    );

    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let killed = Instant::now();
    loop {
        let left = processes_mentioning(&runs[0]);
        if left.is_empty() {
            break;
        }
        assert!(killed.elapsed() < Duration::from_secs(10), "still running after kill -9: {left:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("every browser process gone {} ms after kill -9", killed.elapsed().as_millis());
    // The next run sweeps the killed run's profile and finishes the writes.
    let (next, _) = run(dir.path(), &site, "the run after the kill");
    assert!(next["stats"]["writes_done"].as_u64().unwrap() > 0, "{next:#}");
    assert!(!std::env::temp_dir().join(&runs[0]).exists(), "the stale profile was swept");
    assert!(site.members().iter().all(|member| member.note == "changed"));
}

/// The configuration for a site that is no longer convenient: numeric ids, an export lacking
/// the other pages' fields, local modification times to the minute, forms fetched only when
/// Edit is pressed and refused for a stale row version, the financial block spelled `Ja`/`Nee`
/// (a select, and a value map on the link).
fn awkward_config(site: &SiteServer) -> String {
    let mut text = config(site)
        .replace(
            "id = \"relation_code\"\nmodified = \"modified\"\n",
            "id = \"id\"\nmodified = \"modified\"\nmodified_format = \"%d-%m-%Y %H:%M\"\ntime_zone = \"Europe/Amsterdam\"\n",
        )
        .replace(
            "fields = { email = { selector = \"#email\" }, email2 = { selector = \"#email2\" }, mobile = { selector = \"#mobile\" }, phone = { selector = \"#phone\" } }",
            "moved = \"#form-error.moved\"\nfields = { email = { selector = \"#email\", view = \"#view-email\" }, email2 = { selector = \"#email2\", view = \"#view-email2\" }, mobile = { selector = \"#mobile\", view = \"#view-mobile\" }, phone = { selector = \"#phone\", view = \"#view-phone\" } }",
        )
        .replace(
            "fields = { financial_block = { selector = \"#financial_block\", kind = \"checkbox\" } }",
            "moved = \"#form-error.moved\"\nfields = { financial_block = { selector = \"#financial_block\", kind = \"select\", view = \"#view-financial_block\" } }",
        )
        .replace(
            "name = \"financial_block\"\ntype = \"bool\"\n",
            "name = \"financial_block\"\ntype = \"bool\"\nvalues = { right = { true = \"Ja\", false = \"Nee\" } }\n",
        );
    // The other page has no views: its fields are read from the form, opened with Edit.
    text = text.replacen(
        "saved = \"#saved\"\nfields = { note",
        "saved = \"#saved\"\nerror = \"#form-error\"\nmoved = \"#form-error.moved\"\nfields = { note",
        1,
    );
    assert_eq!(text.matches("moved = ").count(), 3, "{text}");
    assert!(text.contains("time_zone") && text.contains("values = { right"), "{text}");
    text
}

/// A member as both sides should hold it: the seven fields, a text area's line breaks as LF.
type Row = (String, String, String, String, String, String, String, bool);

fn site_rows(site: &SiteServer) -> Vec<Row> {
    let mut rows: Vec<Row> = site
        .members()
        .into_iter()
        .map(|m| {
            (
                m.relation_code,
                m.email,
                m.email2,
                m.mobile,
                m.phone,
                m.note,
                m.remarks.replace("\r\n", "\n"),
                m.financial_block,
            )
        })
        .collect();
    rows.sort();
    rows
}

fn club_rows(club: &Connection) -> Vec<Row> {
    let mut statement = club
        .prepare(
            "SELECT relation_code, email, email2, mobile, phone, note, remarks, financial_block FROM members
             ORDER BY relation_code",
        )
        .unwrap();
    statement
        .query_map([], |row| {
            Ok((
                row.get(0)?,
                row.get(1)?,
                row.get(2)?,
                row.get(3)?,
                row.get(4)?,
                row.get(5)?,
                row.get(6)?,
                row.get::<_, i64>(7)? != 0,
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_whose_forms_appear_only_after_edit_syncs_both_ways_spelling_ja_nee_and_a_persons_save_meanwhile_stands()
 {
    let Some((dir, club, site)) = setup(8).await else { return };
    site.set_form_mode(fieldsync_connector_browser::testkit::site::FormMode::Fetched);
    site.use_numeric_ids();
    site.leave_out_of_export(&["email2", "note", "remarks", "financial_block"]);
    site.show_local_times("Europe/Amsterdam");
    site.use_row_versions();
    site.spell_block("Ja", "Nee");
    std::fs::write(dir.path().join("fieldsync.toml"), awkward_config(&site)).unwrap();
    let (first, output) = run(dir.path(), &site, "first run: baselines of 8 members");
    assert_eq!(output.status.code(), Some(0), "{first:#}\n{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(first["stats"]["writes_done"], json!(0), "{first:#}");

    // The club edits members 1-3 and 6; the site's people edit 4 and 5, and member 6's phone
    // while fieldsync has its form open.
    let now = jiff::Timestamp::now().to_string();
    for number in [1, 2, 3] {
        club.execute(
            "UPDATE members SET email = ?1, note = ?2, remarks = ?3, financial_block = 1, updated_at = ?4
             WHERE relation_code = ?5",
            params![
                format!("club{number}@club.nl"),
                format!("note from the club {number}"),
                format!("line one\nline two {number}"),
                now,
                format!("KNVB{number:04}")
            ],
        )
        .unwrap();
    }
    club.execute(
        "UPDATE members SET email = 'club6@club.nl', updated_at = ?1 WHERE relation_code = 'KNVB0006'",
        params![now],
    )
    .unwrap();
    for number in [4, 5] {
        let code = format!("KNVB{number:04}");
        site.update(&code, "email2", format!("site{number}@club.nl"));
        site.update(&code, "note", format!("note from the site {number}"));
        site.update(&code, "financial_block", true);
    }
    site.edit_before_next_save("KNVB0006", "phone", "+31107654321");
    let (second, output) = run(dir.path(), &site, "members written through forms fetched on Edit");
    assert_eq!(site.moved_refusals(), 1, "the site refused member 6's stale form: {second:#}");
    assert_eq!(site.member("KNVB0006").unwrap().phone, "+31107654321", "the person's save stands");
    assert_eq!(
        fieldsync(dir.path(), &site).dead_entries(),
        json!([]),
        "a moved member is no dead entry: {second:#}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // The next run reads member 6 again and merges again.
    let (third, _) = run(dir.path(), &site, "the moved member read and merged again");
    let rows = site_rows(&site);
    assert_eq!(club_rows(&club), rows, "both sides hold the same members: {third:#}");
    let six = rows.iter().find(|row| row.0 == "KNVB0006").unwrap();
    assert_eq!((six.1.as_str(), six.4.as_str()), ("club6@club.nl", "+31107654321"));
    for number in [1, 2, 3] {
        let row = rows.iter().find(|row| row.0 == format!("KNVB{number:04}")).unwrap();
        assert_eq!(
            (row.1.as_str(), row.5.as_str(), row.6.as_str(), row.7),
            (
                format!("club{number}@club.nl").as_str(),
                format!("note from the club {number}").as_str(),
                format!("line one\nline two {number}").as_str(),
                true
            )
        );
    }
    for number in [4, 5] {
        let row = rows.iter().find(|row| row.0 == format!("KNVB{number:04}")).unwrap();
        assert_eq!(
            (row.2.as_str(), row.5.as_str(), row.7),
            (format!("site{number}@club.nl").as_str(), format!("note from the site {number}").as_str(), true)
        );
    }

    let saves = site.total_saves();
    let (quiet, _) = run(dir.path(), &site, "a run with no new edits");
    assert_eq!(quiet["stats"]["writes_done"], json!(0), "{quiet:#}");
    assert_eq!(site.total_saves(), saves, "no form was saved");
}
