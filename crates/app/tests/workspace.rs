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
    let club = Club::new("review");
    let mut workspace = club.workspace();
    run_every_link(&mut workspace);
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
    assert_eq!((review.field.as_deref(), review.status), (Some("email"), ReviewStatus::Open));

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
    let club = Club::new("review");
    let mut workspace = club.workspace();
    run_every_link(&mut workspace);
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
    let club = Club::new("review");
    let mut workspace = club.workspace();
    run_every_link(&mut workspace);
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
    assert_eq!(keys(serde_json::to_value(workspace.run_history(run).unwrap()).unwrap()), ["audit", "run"]);
    let check = serde_json::to_value(block_on(workspace.check())).unwrap();
    assert_eq!(keys(check.clone()), ["config", "conflict_timing", "connectors", "links"]);
    assert_eq!(keys(check["connectors"]["register"].clone()), ["ok", "probe"]);
}
