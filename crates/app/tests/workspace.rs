//! The use cases of `Workspace` on real SQLite files: runs told to their observer, plans that
//! write nothing, status, reviews decided, dead writes retried and dropped, and the history.

use std::cell::RefCell;
use std::path::PathBuf;

use fieldsync_app::workspace::{
    NoProgress, OutboxStatus, Outcome, Resolution, ReviewStatus, RunObserver, RunReport, RunScope,
};
use fieldsync_app::{Workspace, WorkspaceError};
use rusqlite::Connection;

/// A federation register and a club website with three players each; the club's table
/// refuses an e-mail address without `@`. The link settles conflicts by `strategy`.
struct Club {
    dir: tempfile::TempDir,
}

impl Club {
    fn new(strategy: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let register = Connection::open(dir.path().join("register.db")).unwrap();
        register
            .execute_batch(
                "CREATE TABLE players (federation_id TEXT PRIMARY KEY, email TEXT, changed TEXT NOT NULL);
                 INSERT INTO players VALUES ('P1', 'p1@club.nl', datetime('now', '-1 hour')),
                     ('P2', 'p2@club.nl', datetime('now', '-1 hour')), ('P3', 'p3@club.nl', datetime('now', '-1 hour'));",
            )
            .unwrap();
        let website = Connection::open(dir.path().join("website.db")).unwrap();
        website
            .execute_batch(
                "CREATE TABLE accounts (player TEXT PRIMARY KEY, mail TEXT CHECK (mail LIKE '%@%'), changed TEXT NOT NULL);
                 INSERT INTO accounts VALUES ('P1', 'p1@club.nl', datetime('now', '-1 hour')),
                     ('P2', 'p2@club.nl', datetime('now', '-1 hour')), ('P3', 'p3@club.nl', datetime('now', '-1 hour'));",
            )
            .unwrap();
        let config = format!(
            r#"state = "state.db"

[connectors.register]
kind = "sqlite"
path = "register.db"
table = "players"
key = "federation_id"
modified = "changed"

[connectors.website]
kind = "sqlite"
path = "website.db"
table = "accounts"
key = "player"
modified = "changed"

[links.players]
left = "register"
right = "website"
key = {{ left = "federation_id", right = "player" }}
conflicts = {{ strategy = "{strategy}" }}

[[links.players.fields]]
name = "email"
left = "email"
right = "mail"
"#
        );
        std::fs::write(dir.path().join("fieldsync.toml"), config).unwrap();
        Self { dir }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("fieldsync.toml")
    }

    /// The workspace for every use case.
    fn workspace(&self) -> Workspace {
        Workspace::open(&self.config()).unwrap()
    }

    /// A club whose conflicts are settled by `strategy`, its players synced once, with its
    /// workspace.
    fn synced(strategy: &str) -> (Self, Workspace) {
        let club = Club::new(strategy);
        let mut workspace = club.workspace();
        run_every_link(&mut workspace);
        (club, workspace)
    }

    /// Sets the link's `audit` table (`{ values = "hashed" }`) in the configuration file.
    fn set_audit(&self, audit: &str) {
        let text = std::fs::read_to_string(self.config()).unwrap();
        let mut lines: Vec<&str> = text.lines().filter(|line| !line.starts_with("audit = ")).collect();
        let at = lines.iter().position(|line| line.starts_with("conflicts = ")).unwrap() + 1;
        let line = format!("audit = {audit}");
        lines.insert(at, &line);
        std::fs::write(self.config(), lines.join("\n")).unwrap();
    }

    /// The state store's file.
    fn state(&self) -> Connection {
        Connection::open(self.dir.path().join("state.db")).unwrap()
    }

    /// A person changes a player's e-mail address in the register.
    fn register_email(&self, player: &str, email: &str) {
        let register = Connection::open(self.dir.path().join("register.db")).unwrap();
        let sql = "UPDATE players SET email = ?2, changed = datetime('now') WHERE federation_id = ?1";
        register.execute(sql, [player, email]).unwrap();
    }

    /// A person changes a player's e-mail address on the website.
    fn website_email(&self, player: &str, email: &str) {
        let website = Connection::open(self.dir.path().join("website.db")).unwrap();
        let sql = "UPDATE accounts SET mail = ?2, changed = datetime('now') WHERE player = ?1";
        website.execute(sql, [player, email]).unwrap();
    }
}

/// What the observer saw, in order.
#[derive(Default)]
struct Seen {
    events: RefCell<Vec<String>>,
}

impl RunObserver for &Seen {
    type Progress = NoProgress;

    fn link_starts(&mut self, link: &str) -> NoProgress {
        self.events.borrow_mut().push(format!("start {link}"));
        NoProgress
    }

    fn link_ends(&mut self, _progress: NoProgress, report: Option<&RunReport>) {
        let status = report.map_or("none".to_string(), |report| report.status.to_string());
        self.events.borrow_mut().push(format!("end {status}"));
    }

    fn link_failed(&mut self, link: &str, error: &WorkspaceError) {
        self.events.borrow_mut().push(format!("failed {link}: {error}"));
    }
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(future)
}

fn every_link() -> RunScope {
    RunScope::default()
}

/// Runs every link once, watched by nobody.
fn run_every_link(workspace: &mut Workspace) -> fieldsync_app::workspace::RunsOutcome {
    block_on(workspace.run(&every_link(), false, &mut &Seen::default())).unwrap()
}

#[test]
fn a_run_is_told_to_its_observer_and_leaves_the_link_in_step_with_its_history() {
    let club = Club::new("review");
    let mut workspace = club.workspace();
    let seen = Seen::default();
    let runs = block_on(workspace.run(&every_link(), false, &mut &seen)).unwrap();
    assert_eq!(runs.outcome, Outcome::Done);
    assert_eq!(runs.reports.len(), 1);
    assert_eq!(*seen.events.borrow(), ["start players", "end done"]);

    let status = workspace.status().unwrap();
    assert_eq!((status[0].link.as_str(), status[0].records, status[0].in_step), ("players", 3, true));
    assert_eq!(status[0].connectors.left, "register");

    let page = workspace.runs(None, 20).unwrap();
    assert_eq!((page.items.len(), page.more, page.next_before), (1, 0, None));
    let history = workspace.run_history(page.items[0].id.0).unwrap();
    assert_eq!(history.run.link, "players");
    assert!(!history.audit.is_empty(), "a first sync is audited");
    let exported = workspace.export_history(10, false).unwrap();
    assert!(exported[0].audit.is_empty(), "an export without audit reads none");
}

#[test]
fn a_plan_writes_nothing_and_records_no_run() {
    let club = Club::new("review");
    let mut workspace = club.workspace();
    let plan = block_on(workspace.plan(&every_link(), &mut &Seen::default())).unwrap();
    assert!(plan.reports[0].dry_run);
    assert!(workspace.runs(None, 0).unwrap().items.is_empty());
}

#[test]
fn an_unknown_link_is_a_usage_error_naming_the_links() {
    let club = Club::new("review");
    let scope = RunScope { link: Some("nope".into()), full: false };
    let error = block_on(club.workspace().run(&scope, false, &mut &Seen::default())).unwrap_err();
    assert!(error.is_usage());
    assert_eq!(error.to_string(), "no link named \"nope\"; the configuration has players");
}

#[test]
fn a_conflict_is_held_listed_a_page_at_a_time_and_decided() {
    let (club, mut workspace) = Club::synced("review");
    for player in ["P1", "P2"] {
        club.register_email(player, &format!("left-{player}@club.nl"));
        club.website_email(player, &format!("right-{player}@club.nl"));
    }
    run_every_link(&mut workspace);
    assert!(!workspace.status().unwrap()[0].in_step);

    let first = workspace.reviews(None, false, None, 1).unwrap();
    assert_eq!((first.items.len(), first.more), (1, 1));
    let rest = workspace.reviews(None, false, first.next_before, 0).unwrap();
    assert_eq!((rest.items.len(), rest.more, rest.next_before), (1, 0, None));
    let review = &first.items[0];
    assert_eq!((review.review.field.as_deref(), review.status), (Some("email"), ReviewStatus::Open));

    let wrong = workspace.resolve(review.id, Resolution::Keep("middle".into()), None).unwrap_err();
    assert!(wrong.is_usage());
    assert_eq!(wrong.to_string(), "keep \"middle\": expected left, right, register or website");
    let resolved = workspace.resolve(review.id, Resolution::Keep("website".into()), Some("ops")).unwrap();
    assert_eq!(resolved.review, review.id);
    let detail = workspace.review(review.id).unwrap();
    assert_eq!(detail.review.status, ReviewStatus::Resolved);
    assert!(
        detail.audit.iter().any(|entry| entry.reason.starts_with("decided by token \"ops\": ")),
        "the decision is audited with the token's name: {:#?}",
        detail.audit
    );
    // Decided without a token (the command line): by a person.
    let other = rest.items[0].id;
    workspace.resolve(other, Resolution::Keep("left".into()), None).unwrap();
    let audit = workspace.review(other).unwrap().audit;
    assert!(audit.iter().any(|entry| entry.reason.starts_with("decided by a person: ")), "{audit:#?}");
    assert_eq!(workspace.status().unwrap()[0].reviews.resolved, 2);
}

#[test]
fn a_dead_write_is_listed_put_back_in_line_and_dropped() {
    let (club, mut workspace) = Club::synced("review");
    club.register_email("P3", "no address");
    let runs = run_every_link(&mut workspace);
    assert_eq!(runs.outcome, Outcome::WritesFailed);

    let dead = workspace.outbox(Some(OutboxStatus::Dead), None, 0).unwrap();
    assert_eq!(dead.items.len(), 1);
    let entry = &dead.items[0];
    assert!(entry.last_error.as_deref().unwrap_or_default().contains("CHECK constraint failed"));
    assert_eq!(entry.write.as_ref().unwrap()["fields"][0]["value"], "no address");
    assert_eq!(workspace.status().unwrap()[0].outbox.dead, 1);

    workspace.retry_outbox_entry(entry.id).unwrap();
    assert_eq!(workspace.status().unwrap()[0].outbox.pending, 1);
    run_every_link(&mut workspace);
    workspace.drop_outbox_entry(entry.id).unwrap();
    assert!(workspace.outbox(Some(OutboxStatus::Dead), None, 0).unwrap().items.is_empty());
    assert!(workspace.drop_outbox_entry(entry.id).is_err(), "a dropped entry is not dead any more");
    let missing = workspace.retry_outbox_entry(9_999).unwrap_err();
    assert!(
        matches!(missing, WorkspaceError::NotFound { what: "outbox entry", id: 9_999 }) && missing.is_usage()
    );

    // The last 30 days: every run so far counted on today's day, the days before empty.
    let now = jiff::Timestamp::now();
    let days = workspace.activity(30, now).unwrap();
    assert_eq!(days.len(), 30);
    let today = days.last().unwrap();
    assert_eq!(today.day, now.to_zoned(jiff::tz::TimeZone::UTC).date());
    let runs = workspace.runs(None, 0).unwrap().items;
    let sum = |pointer: &str| runs.iter().map(|run| run.stat(pointer)).sum::<u64>();
    assert_eq!(today.runs, runs.len() as u64);
    assert_eq!(today.writes, sum("/writes_done"));
    assert_eq!(today.failures, sum("/writes_dead"));
    assert!(today.failures >= 1, "the refused write: {today:?}");
    assert!(days[..29].iter().all(|day| day.runs == 0 && day.writes == 0 && day.failures == 0));
    assert_eq!(days[28].day.tomorrow().unwrap(), today.day);
}

#[test]
fn the_offline_use_cases_need_no_connector_secrets() {
    let club = Club::new("review");
    let text = std::fs::read_to_string(club.config())
        .unwrap()
        .replace("\"website.db\"", "\"${FIELDSYNC_WORKSPACE_TEST_UNSET}/website.db\"");
    std::fs::write(club.config(), text).unwrap();
    assert!(matches!(Workspace::open(&club.config()), Err(WorkspaceError::Config(_))));
    let mut workspace = Workspace::open_offline(&club.config()).unwrap();
    assert_eq!(workspace.status().unwrap()[0].last_run, None);
    assert!(workspace.reviews(None, true, None, 0).unwrap().items.is_empty());
    assert!(workspace.outbox(None, None, 0).unwrap().items.is_empty());
    assert!(workspace.runs(None, 0).unwrap().items.is_empty());
}

#[test]
fn check_asks_every_connector_and_reports_one_that_fails() {
    let club = Club::new("review");
    std::fs::remove_file(club.dir.path().join("website.db")).unwrap();
    let report = block_on(club.workspace().check());
    assert!(report.connectors["register"].ok);
    assert_eq!(report.connectors["register"].probe.as_ref().unwrap().records, Some(3));
    assert!(!report.connectors["website"].ok);
    assert!(!report.ok());
    assert!(report.conflict_timing.is_empty(), "only last_write_wins links are timed");
}

#[test]
fn a_link_that_cannot_run_is_told_and_does_not_stop_the_others() {
    let club = Club::new("review");
    let mut text = std::fs::read_to_string(club.config()).unwrap();
    text.push_str(
        r#"
[connectors.archive]
kind = "sqlite"
path = "register.db"
table = "no_such_table"
key = "federation_id"

[links.archive]
left = "register"
right = "archive"
key = { left = "federation_id", right = "federation_id" }
fields = [{ name = "email", left = "email", right = "email" }]
"#,
    );
    std::fs::write(club.config(), text).unwrap();
    let seen = Seen::default();
    let runs = block_on(club.workspace().run(&every_link(), false, &mut &seen)).unwrap();
    assert_eq!(runs.outcome, Outcome::WritesFailed);
    assert_eq!(runs.reports.iter().map(|report| report.link.to_string()).collect::<Vec<_>>(), ["players"]);
    let events = seen.events.borrow();
    assert_eq!(events[..2], ["start archive", "end none"]);
    assert_eq!(events[2], "failed archive: running link archive");
    assert_eq!(events[3..], ["start players", "end done"]);

    // Asked for by name, the same link's failure is the run's error.
    let scope = RunScope { link: Some("archive".into()), full: false };
    let error = block_on(club.workspace().run(&scope, false, &mut &Seen::default())).unwrap_err();
    assert!(matches!(error, WorkspaceError::Run { .. }) && !error.is_usage(), "{error}");
}

/// The JSON the command line prints (and a service would answer) is the serialisation of
/// these types: their keys are the interface, pinned here.
#[test]
fn the_returned_types_serialise_to_the_keys_the_command_line_has_always_printed() {
    let keys =
        |value: serde_json::Value| -> Vec<String> { value.as_object().unwrap().keys().cloned().collect() };
    let (club, mut workspace) = Club::synced("review");
    club.register_email("P1", "left@club.nl");
    club.website_email("P1", "right@club.nl");
    club.register_email("P2", "no address");
    run_every_link(&mut workspace);

    let status = serde_json::to_value(&workspace.status().unwrap()[0]).unwrap();
    assert_eq!(keys(status.clone()), ["in_step", "last_run", "link", "outbox", "records", "reviews"]);
    assert_eq!((status["outbox"]["dead"].as_u64(), status["reviews"]["open"].as_u64()), (Some(1), Some(1)));
    let review = serde_json::to_value(&workspace.reviews(None, false, None, 0).unwrap().items[0]).unwrap();
    assert_eq!(
        keys(review).join(" "),
        "base created_at decision field id key kind left left_changed link reason right right_changed run_id status \
         updated_at"
    );
    let entry = serde_json::to_value(&workspace.outbox(None, None, 0).unwrap().items[0]).unwrap();
    assert_eq!(
        keys(entry).join(" "),
        "attempts id key last_error link next_attempt_at operation run_id side status write"
    );
    let run = workspace.runs(None, 1).unwrap().items[0].id.0;
    let history = serde_json::to_value(workspace.run_history(run).unwrap()).unwrap();
    assert_eq!(keys(history.clone()), ["audit", "run"]);
    assert_eq!(
        keys(history["audit"][0].clone()).join(" "),
        "at base event field key left reason right run_id side value values"
    );
    let purged =
        serde_json::to_value(&workspace.purge_history(None, jiff::Timestamp::now()).unwrap()[0]).unwrap();
    assert_eq!(keys(purged).join(" "), "audit_entries before keep link outbox_entries reviews runs");
    let erased = serde_json::to_value(workspace.erase_record("players", "P3", None).unwrap()).unwrap();
    assert_eq!(
        keys(erased).join(" "),
        "audit_entries baseline key_digest link messages outbox_entries reviews webhooks wiped"
    );
    let check = serde_json::to_value(block_on(workspace.check())).unwrap();
    assert_eq!(keys(check.clone()), ["config", "conflict_timing", "connectors", "links"]);
    assert_eq!(keys(check["connectors"]["register"].clone()), ["ok", "probe"]);
}

/// With `audit = { values = "hashed" }` the history holds digests where values were, and shows
/// what was written in full as digests too (the same digest for the same value); with `none`
/// it shows no value; a person's decision is stored as the link keeps values. The review itself
/// keeps its values: a person decides from them.
#[test]
fn the_history_is_shown_and_written_as_the_link_keeps_values_now() {
    use fieldsync_app::workspace::{AuditValues, Value};
    let (club, mut workspace) = Club::synced("review");
    club.register_email("P1", "anna.devries@example.nl");
    club.register_email("P2", "left-p2@club.nl");
    club.website_email("P2", "right-p2@club.nl");
    run_every_link(&mut workspace);
    let run = workspace.runs(None, 1).unwrap().items[0].id.0;
    let full = workspace.run_history(run).unwrap().audit;
    assert!(
        full.iter().any(|entry| entry.value == Some(Value::from("anna.devries@example.nl"))),
        "{full:#?}"
    );

    club.set_audit("{ values = \"hashed\" }");
    let mut workspace = club.workspace();
    let digest = |text: &str| {
        Some(Value::from(fieldsync_store::value_digest("players", "email", &Value::from(text)).as_str()))
    };
    let hashed = workspace.run_history(run).unwrap().audit;
    assert_eq!(hashed.len(), full.len());
    for (shown, written) in hashed.iter().zip(&full) {
        let mut expected = written.clone();
        AuditValues::Hashed.keep("players", &mut expected);
        assert_eq!((shown, shown.values), (&expected, AuditValues::Hashed));
        assert!(!format!("{shown:?}").contains('@'), "{shown:#?}");
    }
    assert!(hashed.iter().any(|entry| entry.value == digest("anna.devries@example.nl")), "{hashed:#?}");
    let exported = workspace.export_history(10, true).unwrap();
    assert_eq!(exported.iter().find(|history| history.run.id.0 == run).unwrap().audit, hashed);
    let review = workspace.reviews(None, false, None, 0).unwrap().items[0].clone();
    assert_eq!(review.review.left, Some(Value::from("left-p2@club.nl")), "a review keeps its values");
    let detail = workspace.review(review.id).unwrap();
    assert!(detail.audit.iter().all(|entry| entry.values == AuditValues::Hashed), "{:#?}", detail.audit);

    // A person's typed value is stored as a digest; the run that applies it writes it hashed.
    workspace.resolve(review.id, Resolution::Value("person@club.nl".into()), None).unwrap();
    let stored: (String, String, String) = club
        .state()
        .query_row("SELECT kept, value, reason FROM audit WHERE event = 'decided'", [], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })
        .unwrap();
    let person = digest("person@club.nl").unwrap();
    assert_eq!(stored.0, "hashed");
    assert_eq!(stored.1, serde_json::to_string(&person).unwrap());
    assert_eq!(
        stored.2,
        format!("decided by a person: {{\"value\":{}}}", serde_json::to_string(&person).unwrap())
    );
    run_every_link(&mut workspace);
    let applied = workspace.runs(None, 1).unwrap().items[0].id.0;
    let written = workspace.run_history(applied).unwrap().audit;
    assert!(written.iter().any(|entry| entry.value.as_ref() == Some(&person)), "{written:#?}");
    let clear: i64 = club
        .state()
        .query_row(
            "SELECT count(*) FROM audit WHERE kept = 'hashed' AND (value LIKE '%@%' OR reason LIKE '%@%' \
             OR left_value LIKE '%@%' OR right_value LIKE '%@%' OR base LIKE '%@%')",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(clear, 0, "no entry written under hashed holds an address");

    club.set_audit("{ values = \"none\" }");
    let mut workspace = club.workspace();
    for history in workspace.export_history(10, true).unwrap() {
        for entry in history.audit {
            assert_eq!(
                (entry.values, &entry.base, &entry.left, &entry.right, &entry.value),
                (AuditValues::None, &None, &None, &None, &None)
            );
        }
    }
    // Kept in full again, what was written hashed stays hashed.
    club.set_audit("{ values = \"full\" }");
    let mut workspace = club.workspace();
    assert_eq!(workspace.run_history(applied).unwrap().audit, written);
    assert_eq!(workspace.run_history(run).unwrap().audit, full);
}

/// `purge_history` deletes each link's history older than its `audit.keep` (nothing when it has
/// none, saying so), keeping the last run that read both sides; `erase_record` removes a record
/// from the state store and names it by its key's digest only.
#[test]
fn the_history_is_purged_past_its_keep_and_a_record_is_erased() {
    let (club, mut workspace) = Club::synced("review");
    club.register_email("P1", "anna.devries@example.nl");
    run_every_link(&mut workspace);
    let now = jiff::Timestamp::now();
    let forever = workspace.purge_history(None, now).unwrap();
    assert_eq!((forever.len(), forever[0].keep.as_deref(), forever[0].before), (1, None, None));
    assert_eq!(forever[0].purged, Default::default());

    club.set_audit("{ keep = \"1d\" }");
    let mut workspace = club.workspace();
    let today = workspace.purge_history(Some("players"), now).unwrap();
    assert_eq!((today[0].keep.as_deref(), today[0].purged), (Some("1d"), Default::default()));
    let later = now.checked_add(jiff::SignedDuration::from_hours(49)).unwrap();
    let purged = workspace.purge_history(None, later).unwrap();
    assert_eq!(purged[0].before, Some(later.checked_sub(jiff::SignedDuration::from_hours(24)).unwrap()));
    let counts = purged[0].purged;
    assert_eq!(counts.runs, 1, "the last run that read both sides stays: {counts:?}");
    assert!(counts.audit_entries >= 2 && counts.outbox_entries == 1, "{counts:?}");
    let runs = workspace.runs(None, 0).unwrap().items;
    assert_eq!(runs.len(), 1);
    assert!(workspace.run_history(runs[0].id.0).unwrap().audit.is_empty());
    let unknown = workspace.purge_history(Some("nope"), now).unwrap_err();
    assert!(matches!(unknown, WorkspaceError::UnknownLink { .. }) && unknown.is_usage());

    let erasure = workspace.erase_record("players", "P1", None).unwrap();
    assert_eq!(
        erasure.key_digest,
        fieldsync_store::key_digest("players", &fieldsync_app::workspace::RecordKey::new("P1"))
    );
    assert!(erasure.erased.baseline && erasure.erased.wiped, "{erasure:?}");
    assert_eq!(workspace.status().unwrap()[0].records, 2);
    let audited: String = club
        .state()
        .query_row(
            "SELECT reason FROM audit WHERE event = 'erased' AND key = ?1",
            [&erasure.key_digest],
            |row| row.get(0),
        )
        .unwrap();
    assert!(audited.starts_with("record erased by a person: its baseline"), "{audited}");
    let unknown = workspace.erase_record("nope", "P1", None).unwrap_err();
    assert!(unknown.is_usage());
}
