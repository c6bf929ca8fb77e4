//! End-to-end runs of the engine over two memory connectors and a real state store (`World`'s:
//! SQLite, unless `FIELDSYNC_TEST_STORE=postgres` makes it PostgreSQL).

use std::time::Duration;

use fieldsync_connector::{MemoryConnector, MemoryFault};
use fieldsync_engine::{
    Action, ConflictStrategy, DeletePolicy, Direction, FieldSpec, Guard, Limit, LinkRun, ReadMode,
    RetryPolicy, RunOptions, RunStats, SidePair, SideStats, Tie,
};
use fieldsync_model::{FieldType, Normaliser, RecordId, RecordKey, Side, Value};
use fieldsync_store::{
    AuditEntry, AuditEvent, Decision, ListQuery, NewOutboxEntry, Operation, Origin, OutboxEntry,
    OutboxStatus, PlanChunk, ReviewId, ReviewStatus, RunStatus, StateStore,
};
use fieldsync_test_support::{Time, World, link_spec};
use jiff::Timestamp;
use serde_json::json;

fn world(conflicts: ConflictStrategy) -> World {
    World::new(
        link_spec("id", &[("email", FieldType::Email), ("mobile", FieldType::Text)], conflicts),
        Time::System,
    )
}

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + seconds).unwrap()
}

/// `last_write_wins` with a 5 s grace whose tie goes to the left side.
fn last_write_wins_tie_left() -> ConflictStrategy {
    ConflictStrategy::LastWriteWins { grace: Duration::from_secs(5), tie: Tie::Side(Side::Left) }
}

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

/// A seeded world under `review` in which, at 100 s, each side edited one field of m1 (a
/// field name and its new value).
async fn both_sides_edit_m1(left: (&str, &str), right: (&str, &str)) -> World {
    let world = world(ConflictStrategy::Review).seeded().await;
    world.set_time(at(100));
    world.left.edit("m1", left.0, json!(left.1));
    world.right.edit("m1", right.0, json!(right.1));
    world
}

/// A seeded world under `review` in which, at 100 s, the left side made member n1 with an
/// e-mail address and a mobile number.
async fn new_member_on_the_left(email: &str, mobile: &str) -> World {
    let world = world(ConflictStrategy::Review).seeded().await;
    world.left.set_now(at(100));
    world.left.edit("n1", "email", json!(email));
    world.left.edit("n1", "mobile", json!(mobile));
    world
}

/// A person's decision on a review of `members` at `now`, recorded with its audit.
fn decide(world: &mut World, review: ReviewId, decision: Decision, now: Timestamp) {
    let audit = AuditEntry::decided(&world.store.review(review).unwrap(), &decision, now);
    world.store.decide_review("members", review, &decision, &audit, now).unwrap();
}

/// Ten members `m0` to `m9` written on the left at time 0: the email `email(number)` and the
/// mobile `06-NUMBER`.
fn ten_on_the_left(world: &mut World, email: impl Fn(usize) -> String) {
    world.left.set_now(at(0));
    for number in 0..10 {
        let id = format!("m{number}");
        world.left.edit(&id, "email", json!(email(number)));
        world.left.edit(&id, "mobile", json!(format!("06-{number}")));
    }
}

/// The tests' own set-ups of a world.
trait Seeded {
    /// Ten members on the left, synced once to an empty right.
    async fn seeded(self) -> Self;
}

impl Seeded for World {
    async fn seeded(mut self) -> Self {
        ten_on_the_left(&mut self, |number| format!("Member{number}@Club.nl"));
        let report = self.run(RunOptions::default()).await;
        assert_eq!(report.stats.right.creates_planned, 10);
        assert_eq!(report.stats.writes_done, 10);
        self
    }
}

#[tokio::test]
async fn creates_then_nothing_to_do() {
    let mut world = world(ConflictStrategy::Review).seeded().await;
    assert_eq!(world.right.value("m3", "email"), json!("member3@club.nl"));
    let second = world.run(RunOptions::default()).await;
    assert_eq!(second.stats.writes_done, 0);
    assert_eq!(second.stats.compared, 0);
    let full = world.run(RunOptions { full: true, ..Default::default() }).await;
    assert_eq!(full.stats.writes_done, 0);
    assert_eq!(full.status, RunStatus::Done);
}

#[tokio::test]
async fn raw_digests_skip_unchanged_records_but_never_a_change() {
    let mut world = world(ConflictStrategy::Review).seeded().await;
    let full = RunOptions { full: true, ..Default::default() };
    // The creates remembered the raw values of both sides, as planned and as read back: no
    // full read normalises them again.
    let first = world.run(full).await;
    assert_eq!((first.stats.left.unchanged_raw, first.stats.right.unchanged_raw), (10, 10));
    let second = world.run(full).await;
    assert_eq!((second.stats.left.unchanged_raw, second.stats.right.unchanged_raw), (10, 10));

    // Another raw form of the same value is normalised again, found equal, and not written.
    world.left.set_now(at(100));
    world.left.edit("m1", "email", json!("MEMBER1@club.nl"));
    let same = world.run(full).await;
    assert_eq!(same.stats.left.unchanged_raw, 9);
    assert_eq!((same.stats.compared, same.stats.writes_done), (0, 0));

    // A real change is found and written.
    world.left.edit("m2", "email", json!("Other@Club.nl"));
    let changed = world.run(full).await;
    assert_eq!(changed.stats.writes_done, 1, "{changed:#?}");
    assert_eq!(world.right.value("m2", "email"), json!("other@club.nl"));

    // Other normalisers make every remembered raw digest useless.
    world.spec.fields[1].normalisers.left = Normaliser::new(FieldType::Text).with_empty_is_null(false);
    let reconfigured = world.run(full).await;
    assert_eq!(reconfigured.stats.left.unchanged_raw, 0);
    // m2's baseline moved with the verified write, which remembered what it wrote.
    assert_eq!(reconfigured.stats.right.unchanged_raw, 10);
    assert_eq!(reconfigured.stats.writes_done, 0);
}

/// The first full run after a first sync that created every record normalises nothing
/// fieldsync wrote or copied from: each create remembered the raw digest of its source (as
/// planned) and of its target (as read back), so that run costs no more than a steady one. An
/// update does the same, and a record that changes after its write is still found.
#[tokio::test]
async fn the_full_run_after_a_first_sync_of_creates_normalises_nothing_fieldsync_wrote() {
    let mut world = world(ConflictStrategy::Review).seeded().await;
    let full = RunOptions { full: true, ..Default::default() };
    let after = world.run(full).await;
    assert_eq!(
        (after.stats.left.unchanged_raw, after.stats.right.unchanged_raw),
        (after.stats.left.read, after.stats.right.read),
        "{:#?}",
        after.stats
    );
    assert_eq!((after.stats.left.read, after.stats.compared, after.stats.writes_done), (10, 0, 0));

    world.right.set_now(at(100));
    world.right.edit("m4", "mobile", json!("06-44"));
    let updated = world.run(RunOptions::default()).await;
    assert_eq!(updated.stats.writes_done, 1, "{updated:#?}");
    let quiet = world.run(full).await;
    assert_eq!((quiet.stats.left.unchanged_raw, quiet.stats.right.unchanged_raw), (10, 10), "{quiet:#?}");

    world.left.set_now(at(200));
    world.left.edit("m4", "mobile", json!("06-444"));
    let changed = world.run(full).await;
    assert_eq!((changed.stats.left.unchanged_raw, changed.stats.writes_done), (9, 1), "{changed:#?}");
    assert_eq!(world.right.value("m4", "mobile"), json!("06-444"));
}

/// A write's read-back is taken field by field: when two fields of one record are written with
/// the same raw text (a date in the target's own format beside a note holding that same text),
/// each is read as its own field's value, so the target's raw digest is still remembered.
#[tokio::test]
async fn a_read_back_is_matched_to_each_field_by_name_not_by_raw_text() {
    let fields = [("born", FieldType::Date), ("note", FieldType::Text)];
    let mut world = World::new(link_spec("id", &fields, ConflictStrategy::Review), Time::System);
    world.spec.fields[0].normalisers.right =
        Normaliser::new(FieldType::Date).with_date_formats(["%d-%m-%Y".to_string()]);
    world.left.set_now(at(0));
    for number in 1..=5 {
        let id = format!("m{number}");
        world.left.edit(&id, "born", json!(format!("2010-0{number}-17")));
        world.left.edit(&id, "note", json!(format!("17-0{number}-2010")));
    }
    let first = world.run(RunOptions::default()).await;
    assert_eq!(first.stats.writes_done, 5, "{first:#?}");
    assert_eq!(world.right.value("m3", "born"), json!("17-03-2010"));
    assert_eq!(world.right.value("m3", "note"), json!("17-03-2010"));

    let full = world.run(RunOptions { full: true, ..Default::default() }).await;
    assert_eq!((full.stats.right.read, full.stats.right.unchanged_raw), (5, 5), "{:#?}", full.stats);
    assert_eq!((full.stats.compared, full.stats.writes_done), (0, 0));
}

#[tokio::test]
async fn edits_on_both_sides_of_one_record_both_propagate() {
    let mut world = both_sides_edit_m1(("email", "new@club.nl"), ("mobile", "06-999")).await;
    let report = world.run(RunOptions::default()).await;
    assert_eq!(report.stats.writes_done, 2, "{report:#?}");
    assert_eq!(world.right.value("m1", "email"), json!("new@club.nl"));
    assert_eq!(world.left.value("m1", "mobile"), json!("06-999"));
    let again = world.run(RunOptions::default()).await;
    assert_eq!(again.stats.writes_done, 0);
}

#[tokio::test]
async fn last_write_wins_outside_grace_and_tie_inside() {
    let mut world = world(last_write_wins_tie_left()).seeded().await;
    // Outside the grace window: the later (right) edit wins.
    world.left.set_now(at(100));
    world.left.edit("m1", "email", json!("left@club.nl"));
    world.right.set_now(at(110));
    world.right.edit("m1", "email", json!("right@club.nl"));
    // Inside the grace window: the tie side (left) wins although right is later.
    world.left.set_now(at(200));
    world.left.edit("m2", "email", json!("left2@club.nl"));
    world.right.set_now(at(203));
    world.right.edit("m2", "email", json!("right2@club.nl"));
    let report = world.run(RunOptions::default()).await;
    assert_eq!(report.stats.conflicts_resolved, 2);
    assert_eq!(world.left.value("m1", "email"), json!("right@club.nl"));
    assert_eq!(world.right.value("m2", "email"), json!("left2@club.nl"));
}

#[tokio::test]
async fn review_holds_both_sides_until_resolved() {
    let mut world = both_sides_edit_m1(("email", "left@club.nl"), ("email", "right@club.nl")).await;
    let report = world.run(RunOptions::default()).await;
    assert_eq!(report.stats.writes_done, 0);
    assert_eq!(world.left.value("m1", "email"), json!("left@club.nl"));
    assert_eq!(world.right.value("m1", "email"), json!("right@club.nl"));
    let reviews = world.store.list_reviews(Some("members"), Some(ReviewStatus::Open), 10).unwrap();
    assert_eq!(reviews.len(), 1);
    assert_eq!(
        (reviews[0].review.left_changed, reviews[0].review.right_changed),
        (Some(at(100)), Some(at(100))),
        "each side's change time, as its connector reported it"
    );
    // A second run neither writes nor opens another review.
    world.run(RunOptions::default()).await;
    assert_eq!(world.store.list_reviews(Some("members"), None, 10).unwrap().len(), 1);
    decide(&mut world, reviews[0].id, Decision::Keep(Side::Right), at(150));
    let report = world.run(RunOptions::default()).await;
    assert_eq!(report.stats.writes_done, 1);
    assert_eq!(world.left.value("m1", "email"), json!("right@club.nl"));
    world.run(RunOptions::default()).await;
    assert_eq!(world.store.list_reviews(Some("members"), Some(ReviewStatus::Closed), 10).unwrap().len(), 1);
}

#[tokio::test]
async fn rejected_write_is_dead_while_others_go_on() {
    let mut world = world(ConflictStrategy::Review).seeded().await;
    world.right.inject(MemoryFault::RejectValue(json!("bad@club.nl")));
    world.left.set_now(at(100));
    world.left.edit("m1", "email", json!("bad@club.nl"));
    world.left.edit("m2", "email", json!("good@club.nl"));
    let report = world.run(RunOptions::default()).await;
    assert_eq!(report.status, RunStatus::Partial);
    assert_eq!(report.stats.writes_dead, 1);
    assert_eq!(world.right.value("m2", "email"), json!("good@club.nl"));
    let dead = world.store.list_outbox(Some("members"), Some(OutboxStatus::Dead), 10).unwrap();
    assert_eq!(dead.len(), 1);
    assert!(dead[0].last_error.as_deref().unwrap().contains("not allowed"));
    // The dead entry is not planned again and again.
    let again = world.run(RunOptions::default()).await;
    assert_eq!(again.stats.writes_dead, 0);
    assert_eq!(world.store.list_outbox(Some("members"), Some(OutboxStatus::Pending), 10).unwrap().len(), 0);
}

#[tokio::test]
async fn transient_failure_is_retried_and_baseline_waits() {
    let mut world = world(ConflictStrategy::Review).seeded().await;
    world.right.inject(MemoryFault::WriteUnavailable);
    world.left.set_now(at(100));
    world.left.edit("m1", "email", json!("later@club.nl"));
    let report = world.run(RunOptions::default()).await;
    assert_eq!(report.status, RunStatus::Partial);
    assert_eq!(report.failures[0].outcome, "retrying");
    assert_eq!(world.right.value("m1", "email"), json!("member1@club.nl"));
    world.spec.retry.wait_in_run = Duration::from_secs(5);
    let report = world.run(RunOptions::default()).await;
    assert_eq!(report.status, RunStatus::Done, "{report:#?}");
    assert_eq!(world.right.value("m1", "email"), json!("later@club.nl"));
}

#[tokio::test]
async fn guard_stops_mass_delete() {
    let mut world = world(ConflictStrategy::Review).seeded().await;
    for number in 0..6 {
        world.left.remove(&format!("m{number}"));
    }
    let report = world.run(RunOptions { full: true, ..Default::default() }).await;
    assert_eq!(report.status, RunStatus::Guarded);
    assert_eq!(world.right.records().len(), 10);
    let forced = world.run(RunOptions { full: true, force: true, ..Default::default() }).await;
    assert_eq!(forced.stats.right.deletes_planned, 6);
    assert_eq!(world.right.records().len(), 4);
}

#[tokio::test]
async fn plan_writes_nothing() {
    let mut world = world(ConflictStrategy::Review);
    world.left.edit("m1", "email", json!("a@b.nl"));
    let report = world.run(RunOptions { dry_run: true, ..Default::default() }).await;
    assert_eq!(report.stats.right.creates_planned, 1);
    assert!(world.right.records().is_empty());
    assert!(world.store.list_runs(None, 10).unwrap().is_empty());
}

/// Every counter of a run's statistics, on a run that exercises each of them once or more.
#[tokio::test]
async fn statistics_count_every_kind_of_work() {
    let mut world = world(last_write_wins_tie_left()).seeded().await;
    world.spec.guard = Guard { max_delete: Limit::Share(1.0), max_change: Limit::Share(1.0) };
    world.left.set_now(at(100));
    world.right.set_now(at(200));
    // m1: one side, two fields.
    world.left.edit("m1", "email", json!("one@club.nl"));
    world.left.edit("m1", "mobile", json!("06-111"));
    // m2: both sides, the same value.
    world.left.edit("m2", "email", json!("same@club.nl"));
    world.right.edit("m2", "email", json!("SAME@club.nl"));
    // m3: both sides, different values, the right one later (outside the grace window).
    world.left.edit("m3", "email", json!("left3@club.nl"));
    world.right.edit("m3", "email", json!("right3@club.nl"));
    // m4: deleted on the left; m5: an invalid value on the right; n1: new on the right.
    world.left.remove("m4");
    world.right.edit("m5", "email", json!(["not", "an", "address"]));
    world.right.edit("n1", "email", json!("new@club.nl"));
    world.right.edit("n1", "mobile", json!("06-222"));
    // m6: a write the right side refuses, m7: one it cannot take now.
    world.left.edit("m6", "email", json!("refused@club.nl"));
    world.right.inject(MemoryFault::RejectValue(json!("refused@club.nl")));
    let report = world.run(RunOptions { full: true, ..Default::default() }).await;
    // Every record read and not changed was created by the first sync, which remembered its
    // raw digests on both sides: it is not normalised.
    let side = |read, changed, deleted, updates, creates, deletes, fields| SideStats {
        mode: ReadMode::Full,
        read,
        changed,
        unchanged_raw: read - changed,
        deleted,
        updates_planned: updates,
        creates_planned: creates,
        deletes_planned: deletes,
        fields_planned: fields,
    };
    let expected = RunStats {
        // m3 updated, n1 created (its two fields and its link key); m5's value is left as it is.
        left: side(9, 4, 1, 1, 1, 0, 4),
        // m1 (two fields) and m6 updated, m4 deleted.
        right: side(11, 4, 0, 2, 0, 1, 3),
        compared: 5,
        conflicts_resolved: 1,
        false_conflicts: 1,
        writes_done: 4,
        writes_dead: 1,
        invalid_values: 1,
        ..RunStats::default()
    };
    assert_eq!(report.stats, expected);
    // Only the record both sides changed to the same value is listed as agreed; m5's value is
    // listed as one that cannot be read.
    let listed = |action: Action| -> Vec<String> {
        report
            .lines
            .iter()
            .filter(|line| line.action == action)
            .map(|line| format!("{} {}", line.key.as_str(), line.field.as_deref().unwrap_or("-")))
            .collect()
    };
    assert_eq!(listed(Action::Agreed), ["m2 email"]);
    let mut updates = listed(Action::Update);
    updates.sort();
    assert_eq!(updates, ["m1 email", "m1 mobile", "m6 email"], "m3's conflict is listed as one");
    assert_eq!(listed(Action::Conflict), ["m3 email"]);
    assert_eq!(listed(Action::Invalid), ["m5 email"]);

    // A review, a write to retry and a write whose target moved; the next run closes the review.
    world.spec.conflicts = ConflictStrategy::Review;
    world.right.clear_faults();
    world.set_time(at(300));
    world.left.edit("m7", "email", json!("left7@club.nl"));
    world.right.edit("m7", "email", json!("right7@club.nl"));
    world.right.edit("m8", "mobile", json!("06-888"));
    world.left.edit("m9", "mobile", json!("06-999"));
    world.left.inject(MemoryFault::WriteUnavailable);
    world.right.inject(MemoryFault::EditBeforeWrite {
        id: "m9".into(),
        path: "mobile".into(),
        value: json!("06-000"),
    });
    let report = world.run(RunOptions::default()).await;
    assert_eq!(
        (report.stats.reviews_open, report.stats.writes_retrying, report.stats.writes_moved),
        (1, 1, 1),
        "{:#?}",
        report.stats
    );
    // m7 settles by itself; m9's moved write met the user's edit and is now a conflict.
    world.right.edit("m7", "email", json!("left7@club.nl"));
    let report = world.run(RunOptions::default()).await;
    assert_eq!((report.stats.reviews_open, report.stats.reviews_closed), (1, 1), "{:#?}", report.stats);
}

/// A baseline remembers which side a value came from and when that side changed it: the
/// winner of a one-sided copy and of a conflict alike.
#[tokio::test]
async fn baselines_remember_who_changed_a_field_and_when() {
    let mut world = world(last_write_wins_tie_left()).seeded().await;
    world.left.set_now(at(100));
    world.right.set_now(at(200));
    world.left.edit("m1", "email", json!("one@club.nl"));
    world.left.edit("m2", "email", json!("left@club.nl"));
    world.right.edit("m2", "email", json!("right@club.nl"));
    world.run(RunOptions::default()).await;
    let layout = world.store.layout("members", &["email".to_string(), "mobile".to_string()]).unwrap();
    let keys = [RecordKey::new("m1"), RecordKey::new("m2")];
    let baselines = world.store.baselines("members", &layout, &keys).unwrap();
    let one_sided = &baselines[&keys[0]].fields[0];
    assert_eq!((one_sided.origin, one_sided.left_changed), (Some(Origin::Left), Some(at(100))));
    let conflict = &baselines[&keys[1]].fields[0];
    assert_eq!((conflict.origin, conflict.right_changed), (Some(Origin::Right), Some(at(200))));
}

/// An outbox entry written by a fieldsync that knew another payload version is not guessed at:
/// delivering it makes a dead entry that says why — also when an earlier attempt of it may
/// have happened (it is then not read first as if it could be understood).
#[tokio::test]
async fn an_unknown_payload_version_is_a_dead_entry() {
    let mut world = world(ConflictStrategy::Review).seeded().await;
    {
        // Due now: the world runs on the system clock.
        let now = Timestamp::now();
        let lease = world.store.lease("members", "test", Duration::from_secs(60)).unwrap();
        let run = world.store.start_run(&lease, "incremental", true, now).unwrap();
        let entries = ["m3", "m4"]
            .map(|record| NewOutboxEntry {
                key: RecordKey::new(record),
                side: Side::Right,
                operation: Operation::Update,
                record_id: Some(fieldsync_model::RecordId::new(record)),
                payload: r#"{"version":99,"fields":[],"source_id":null,"soft_delete_of":null}"#.into(),
                source: None,
            })
            .to_vec();
        let layout = world.store.layout("members", &world.spec.field_names()).unwrap();
        let chunk = PlanChunk { entries, ..PlanChunk::default() };
        world.store.commit_plan_chunk(&lease, run, &layout, chunk, now).unwrap();
        // m4's send began and its process died: the next run counts that attempt.
        let m4 = world.store.open_outbox_for("members", &[RecordKey::new("m4")]).unwrap()[0].id;
        world.store.start_send(&lease, vec![m4], now).unwrap();
        world.store.release(lease).unwrap();
    }
    let report = world.run(RunOptions { deliver_only: true, ..Default::default() }).await;
    assert_eq!((report.stats.writes_done, report.stats.writes_dead), (0, 2), "{report:#?}");
    let dead = world.store.list_outbox(Some("members"), Some(OutboxStatus::Dead), 10).unwrap();
    assert!(
        dead.iter().all(|entry| entry.last_error.as_deref().unwrap().contains("version 99")),
        "{dead:#?}"
    );
    assert_eq!(world.right.value("m3", "email"), json!("member3@club.nl"));
    assert_eq!(world.right.value("m4", "email"), json!("member4@club.nl"));
}

/// A target that stores its own form of a value (here upper-cased) reads back a value that
/// normalises to what was written: the write verifies, the baseline moves, and the next runs
/// write nothing — the target's form is not taken for an edit.
#[tokio::test]
async fn a_target_that_stores_its_own_form_of_a_value_verifies_and_writes_nothing_more() {
    let mut world = world(ConflictStrategy::Review).seeded().await;
    world.right.inject(MemoryFault::StoreUpperCase("email".into()));
    world.left.set_now(at(100));
    world.left.edit("m1", "email", json!("New@Club.nl"));
    let report = world.run(RunOptions::default()).await;
    assert_eq!((report.stats.writes_done, report.stats.writes_dead), (1, 0), "{report:#?}");
    assert_eq!(world.right.value("m1", "email"), json!("NEW@CLUB.NL"));
    for full in [false, true] {
        let again = world.run(RunOptions { full, ..Default::default() }).await;
        assert_eq!((again.stats.writes_done, again.stats.compared), (0, 0), "{again:#?}");
    }
}

/// A target that keeps less than it was sent (here cut to three characters) reads back a
/// value that is not what was written: the entry is dead with both values in its message,
/// the baseline stays where it was, and the write is not planned again and again.
#[tokio::test]
async fn a_target_that_keeps_less_than_it_was_sent_makes_a_dead_entry_and_moves_no_baseline() {
    let mut world = world(ConflictStrategy::Review).seeded().await;
    world.right.inject(MemoryFault::Truncate { path: "mobile".into(), length: 3 });
    world.left.set_now(at(100));
    world.left.edit("m1", "mobile", json!("06-12345"));
    let report = world.run(RunOptions::default()).await;
    assert_eq!((report.stats.writes_done, report.stats.writes_dead), (0, 1), "{report:#?}");
    let dead = world.store.list_outbox(Some("members"), Some(OutboxStatus::Dead), 10).unwrap();
    let message = dead[0].last_error.as_deref().unwrap();
    assert!(message.contains("\"06-12345\"") && message.contains("\"06-\""), "{message}");
    let layout = world.store.layout("members", &world.spec.field_names()).unwrap();
    let baseline = world.store.baselines("members", &layout, &[RecordKey::new("m1")]).unwrap();
    assert_eq!(baseline[&RecordKey::new("m1")].fields[1].value, Some(fieldsync_model::Value::from("06-1")));
    let again = world.run(RunOptions::default()).await;
    assert_eq!((again.stats.writes_done, again.stats.writes_dead), (0, 0), "{again:#?}");
}

/// A count the wrapped connectors share with the test; atomic, as connectors are `Send`.
#[derive(Clone, Default)]
struct Counter(std::sync::Arc<std::sync::atomic::AtomicU32>);

impl Counter {
    fn get(&self) -> u32 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn set(&self, value: u32) {
        self.0.store(value, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The world's connectors, the right one counting its look-ups by key and by id.
fn counting(world: &World, key_lookups: &Counter, id_lookups: &Counter) -> SidePair<Wrapped> {
    SidePair::new(
        Wrapped::new(world.left.connector()),
        Wrapped {
            key_lookups: key_lookups.clone(),
            id_lookups: id_lookups.clone(),
            ..Wrapped::new(world.right.connector())
        },
    )
}

/// A create is sent at its first attempt without first looking for the record; only one
/// whose earlier attempt may have happened (left `sending` by a crash) is looked for by its
/// link key — and found, so that it is not made twice. An initial sync of a million members
/// would otherwise read the target a million times more.
#[tokio::test]
async fn only_a_create_that_may_have_happened_is_looked_for_first() {
    let mut world = new_member_on_the_left("new@club.nl", "06-99").await;
    let key_lookups = Counter::default();
    async fn run(
        world: &mut World,
        key_lookups: &Counter,
        options: RunOptions,
    ) -> fieldsync_engine::RunReport {
        let mut connectors = counting(world, key_lookups, &Default::default());
        world.run_with(&mut connectors, options).await
    }
    // The run finds n1 on the left only and looks for it on the right by its key (it has no
    // baseline yet); that is detection. Delivering its create looks for nothing more.
    let report = run(&mut world, &key_lookups, RunOptions::default()).await;
    assert_eq!(report.stats.writes_done, 1, "{report:#?}");
    assert_eq!(key_lookups.get(), 1, "one look-up, by detection; the first attempt of the create adds none");

    // A create left `sending` by a crash: delivery looks for it first, finds it, and closes it.
    world.left.edit("n2", "email", json!("two@club.nl"));
    world.right.inject(MemoryFault::WriteLostAnswer);
    let report = run(&mut world, &key_lookups, RunOptions::default()).await;
    assert_eq!(report.failures[0].outcome, "retrying", "{report:#?}");
    let before = key_lookups.get();
    world.spec.retry.wait_in_run = Duration::from_secs(5);
    let report = run(&mut world, &key_lookups, RunOptions { deliver_only: true, ..Default::default() }).await;
    assert_eq!((report.stats.writes_done, world.right.writes_applied()), (1, 12), "{report:#?}");
    assert_eq!(key_lookups.get(), before + 1, "the uncertain create was looked for once");
}

/// A soft delete writes its value to a column the link does not track, and that write is
/// read back like any other: a target that keeps less than it was sent makes a dead entry.
#[tokio::test]
async fn a_soft_delete_is_read_back_too() {
    let mut world = world(ConflictStrategy::Review);
    world.spec.deletes = DeletePolicy::Soft {
        paths: SidePair::new("status".into(), "status".into()),
        value: json!("inactive"),
    };
    let mut world = world.seeded().await;
    world.right.inject(MemoryFault::Truncate { path: "status".into(), length: 3 });
    world.left.remove("m1");
    let report = world.run(RunOptions { full: true, ..Default::default() }).await;
    assert_eq!((report.stats.writes_done, report.stats.writes_dead), (0, 1), "{report:#?}");
    assert_eq!(report.stats.right.deletes_planned, 1, "{:#?}", report.stats);
    assert_eq!(world.right.value("m1", "status"), json!("ina"));
    let dead = world.store.list_outbox(Some("members"), Some(OutboxStatus::Dead), 10).unwrap();
    assert!(dead[0].last_error.as_deref().unwrap().contains("\"inactive\""), "{dead:#?}");
}

/// The first attempt of an update to a target with conditional writes is sent as it is, and
/// read back once after; only an attempt that may have happened before is read first.
#[tokio::test]
async fn a_first_attempt_of_an_update_is_read_back_and_not_read_first() {
    let mut world = world(ConflictStrategy::Review).seeded().await;
    world.left.set_now(at(100));
    world.left.edit("m1", "email", json!("later@club.nl"));
    // The run dies right after publishing its plan (1 starts it, 2 writes the plan, 3
    // publishes it): the write is waiting, never tried.
    world.store.crash_at_commit(3, true);
    let id_lookups = Counter::default();
    let run = async |world: &mut World, options: RunOptions| {
        let mut connectors = counting(world, &Default::default(), &id_lookups);
        world.try_run_with(&mut connectors, options).await
    };
    assert!(run(&mut world, RunOptions::default()).await.is_err(), "the injected crash");
    world.reopen();
    id_lookups.set(0);
    let report = run(&mut world, RunOptions { deliver_only: true, ..Default::default() }).await.unwrap();
    assert_eq!(report.stats.writes_done, 1, "{report:#?}");
    assert_eq!(world.right.value("m1", "email"), json!("later@club.nl"));
    assert_eq!(id_lookups.get(), 1, "one read-back, no read before the first attempt");
}

/// A memory connector that counts the look-ups it answers, by link key and by id, and can
/// go without some of its capabilities: modification times (as a CSV file) or finding
/// records by link key.
struct Wrapped {
    inner: MemoryConnector,
    times: bool,
    find_by_key: bool,
    key_lookups: Counter,
    id_lookups: Counter,
    /// Whether it claims conditional writes (without, the engine reads a record just before
    /// writing it).
    conditional: bool,
    /// Every look-up by id fails as unavailable (an API that answers it in another shape).
    id_lookups_fail: bool,
    /// Every update answers that the record does not exist, though listings show it.
    updates_not_found: bool,
    /// Every create makes the record with its link key only and then fails, as WordPress
    /// answers 400 for a bad meta value after it inserted the post.
    creates_half_made: bool,
}

impl Wrapped {
    fn new(inner: MemoryConnector) -> Self {
        Self {
            inner,
            times: true,
            find_by_key: true,
            key_lookups: Counter::default(),
            id_lookups: Counter::default(),
            conditional: true,
            id_lookups_fail: false,
            updates_not_found: false,
            creates_half_made: false,
        }
    }

    fn without_times(inner: MemoryConnector) -> Self {
        Self { times: false, ..Self::new(inner) }
    }

    fn without_key_lookups(inner: MemoryConnector) -> Self {
        Self { find_by_key: false, ..Self::new(inner) }
    }

    fn strip(&self, records: &mut [fieldsync_connector::ConnectorRecord]) {
        if !self.times {
            records.iter_mut().for_each(|record| record.modified = None);
        }
    }
}

impl fieldsync_connector::Connector for Wrapped {
    fn capabilities(&self) -> fieldsync_connector::Capabilities {
        let all = self.inner.capabilities();
        fieldsync_connector::Capabilities {
            incremental: all.incremental && self.times,
            lookup_by_key: all.lookup_by_key && self.find_by_key,
            conditional_writes: all.conditional_writes && self.conditional,
            ..all
        }
    }

    async fn check(
        &mut self,
        paths: &[String],
    ) -> Result<fieldsync_connector::Probe, fieldsync_connector::ConnectorError> {
        self.inner.check(paths).await
    }

    async fn read_page(
        &mut self,
        request: &fieldsync_connector::ReadRequest,
        token: Option<&fieldsync_connector::PageToken>,
    ) -> Result<fieldsync_connector::Page, fieldsync_connector::ConnectorError> {
        let mut page = self.inner.read_page(request, token).await?;
        self.strip(&mut page.records);
        Ok(page)
    }

    async fn lookup(
        &mut self,
        paths: &[String],
        lookup: &fieldsync_connector::Lookup,
    ) -> Result<Vec<fieldsync_connector::ConnectorRecord>, fieldsync_connector::ConnectorError> {
        let counter = match lookup {
            fieldsync_connector::Lookup::Key { .. } => {
                assert!(self.find_by_key, "a look-up by key on a connector that cannot do one");
                &self.key_lookups
            }
            fieldsync_connector::Lookup::Ids(_) => &self.id_lookups,
        };
        counter.set(counter.get() + 1);
        if self.id_lookups_fail && matches!(lookup, fieldsync_connector::Lookup::Ids(_)) {
            return Err(fieldsync_connector::ConnectorError::Malformed {
                what: "the record's answer".into(),
                message: "expected an object at /data, found a list".into(),
            });
        }
        let mut records = self.inner.lookup(paths, lookup).await?;
        self.strip(&mut records);
        Ok(records)
    }

    async fn apply(
        &mut self,
        writes: &[fieldsync_connector::Write],
    ) -> Result<fieldsync_connector::WriteResults, fieldsync_connector::ConnectorError> {
        if self.creates_half_made {
            let mut results = Vec::new();
            for write in writes {
                let fieldsync_connector::Write::Create { fields } = write else {
                    results.extend(self.inner.apply(std::slice::from_ref(write)).await?);
                    continue;
                };
                let key_only = fields.iter().take(1).cloned().collect();
                self.inner.apply(&[fieldsync_connector::Write::Create { fields: key_only }]).await?;
                results.push(Err(fieldsync_connector::ConnectorError::Rejected {
                    message: "400 Bad Request: meta.mobile is not of type string".into(),
                }));
            }
            return Ok(results);
        }
        if self.updates_not_found {
            let (updates, others): (Vec<_>, Vec<_>) = writes
                .iter()
                .cloned()
                .enumerate()
                .partition(|(_, write)| matches!(write, fieldsync_connector::Write::Update { .. }));
            let others: Vec<_> = others.into_iter().map(|(_, write)| write).collect();
            let mut applied = self.inner.apply(&others).await?.into_iter();
            return Ok((0..writes.len())
                .map(|index| match updates.iter().find(|(position, _)| *position == index) {
                    Some((_, fieldsync_connector::Write::Update { id, .. })) => {
                        Err(fieldsync_connector::ConnectorError::NotFound { id: id.clone() })
                    }
                    _ => applied.next().unwrap_or_else(|| unreachable!("one result per write")),
                })
                .collect());
        }
        self.inner.apply(writes).await
    }
}

/// Regression: a connector without conditional writes whose look-up by id always fails made
/// the re-read before each write fail without counting an attempt, so the entry's backoff
/// stayed near its first step, under `wait_in_run`, and the run retried it forever. Every
/// failure on the way to a write counts; the run waits no longer than `wait_in_run` in all,
/// ends partial with the entry pending, and after the retry limit the entry is dead with the
/// look-up's message.
#[tokio::test]
async fn a_write_whose_read_before_keeps_failing_ends_the_run_and_dies_at_the_limit() {
    let mut world = world(ConflictStrategy::Review).seeded().await;
    world.spec.retry =
        RetryPolicy { attempts: 6, initial: ms(20), max: Duration::from_secs(60), wait_in_run: ms(300) };
    world.left.set_now(at(100));
    world.left.edit("m1", "email", json!("moved-on@club.nl"));
    let mut connectors = SidePair::new(
        Wrapped::new(world.left.connector()),
        Wrapped { conditional: false, id_lookups_fail: true, ..Wrapped::new(world.right.connector()) },
    );
    // A run that never ends fails here instead of hanging the suite.
    let bounded = std::time::Duration::from_secs(60);
    let report = tokio::time::timeout(bounded, world.run_with(&mut connectors, RunOptions::default()))
        .await
        .expect("the run ends");
    assert_eq!(report.status, RunStatus::Partial, "{report:#?}");
    assert_eq!(report.failures.len(), 1, "{report:#?}");
    assert_eq!(report.failures[0].outcome, "retrying");
    let pending = world.store.list_outbox(Some("members"), Some(OutboxStatus::Pending), 10).unwrap();
    assert_eq!(pending.len(), 1, "{pending:#?}");
    let first = pending[0].attempts;
    assert!(first >= 1, "every failed re-read counts as an attempt: {pending:#?}");
    // The backoff grows with the attempts: 20 ms, 40 ms, 80 ms, 160 ms fit in 300 ms, not more.
    assert!(first < 6, "the run stopped waiting at wait_in_run: {pending:#?}");

    // Later runs count on until the limit; the entry is then dead with the look-up's message.
    world.spec.retry.wait_in_run = Duration::from_secs(30);
    let mut runs = 0;
    let dead = loop {
        runs += 1;
        assert!(runs < 10, "the entry never reached its retry limit");
        let report = tokio::time::timeout(bounded, world.run_with(&mut connectors, RunOptions::default()))
            .await
            .expect("the run ends");
        let dead = world.store.list_outbox(Some("members"), Some(OutboxStatus::Dead), 10).unwrap();
        if !dead.is_empty() {
            assert_eq!(report.status, RunStatus::Partial, "{report:#?}");
            break dead;
        }
    };
    assert_eq!(dead[0].attempts, 6, "{dead:#?}");
    let message = dead[0].last_error.as_deref().unwrap();
    assert!(message.contains("expected an object at /data"), "{message}");
    assert_eq!(world.right.value("m1", "email"), json!("member1@club.nl"));
}

/// Regression: a write whose target says the record does not exist, right after its listing
/// showed it, was taken for a target that moved, planned again by every run, and the runs
/// ended done. The first refusal is a move (planned again from fresh reads); the same write
/// refused again is a failure that ends the run partial, and at the retry limit it is dead
/// with the connector's message — not planned again and again.
#[tokio::test]
async fn a_write_refused_as_missing_run_after_run_is_a_failure_then_dead() {
    let mut world = world(ConflictStrategy::Review).seeded().await;
    world.spec.retry.attempts = 3;
    world.left.set_now(at(100));
    world.left.edit("m1", "email", json!("nowhere@club.nl"));
    let mut connectors = SidePair::new(
        Wrapped::new(world.left.connector()),
        Wrapped { updates_not_found: true, ..Wrapped::new(world.right.connector()) },
    );
    let first = world.run_with(&mut connectors, RunOptions::default()).await;
    assert_eq!(first.status, RunStatus::Done, "a first refusal as moved is planned again: {first:#?}");
    assert_eq!(first.failures[0].outcome, "moved");
    let moved = world.store.list_outbox(Some("members"), Some(OutboxStatus::Moved), 10).unwrap();
    assert_eq!((moved.len(), moved[0].attempts), (1, 1), "{moved:#?}");

    let second = world.run_with(&mut connectors, RunOptions::default()).await;
    assert_eq!(second.status, RunStatus::Partial, "the same refusal again is a failure: {second:#?}");
    assert_eq!(second.failures[0].outcome, "retrying");
    let moved = world.store.list_outbox(Some("members"), Some(OutboxStatus::Moved), 10).unwrap();
    assert_eq!(moved.len(), 1, "one entry, sent again: {moved:#?}");
    assert_eq!(moved[0].attempts, 2);

    let third = world.run_with(&mut connectors, RunOptions::default()).await;
    assert_eq!(third.status, RunStatus::Partial, "{third:#?}");
    assert_eq!(third.failures[0].outcome, "dead");
    let dead = world.store.list_outbox(Some("members"), Some(OutboxStatus::Dead), 10).unwrap();
    assert_eq!(dead.len(), 1, "{dead:#?}");
    assert!(dead[0].last_error.as_deref().unwrap().contains("refused the same way 3 times"), "{dead:#?}");

    // A dead write is not planned again: the next run sends nothing and changes nothing.
    let quiet = world.run_with(&mut connectors, RunOptions { full: true, ..Default::default() }).await;
    assert_eq!((quiet.stats.writes_done, quiet.stats.writes_dead), (0, 0), "{quiet:#?}");
    assert!(quiet.failures.is_empty(), "{quiet:#?}");

    // Once the target takes writes again, a person's retry lands it.
    connectors.right.updates_not_found = false;
    world.store.retry_dead(&[dead[0].id], Timestamp::now()).unwrap();
    let retried = world.run_with(&mut connectors, RunOptions::default()).await;
    assert_eq!((retried.status, retried.stats.writes_done), (RunStatus::Done, 1), "{retried:#?}");
    assert_eq!(world.right.value("m1", "email"), json!("nowhere@club.nl"));
}

/// Records created from a side that keeps no modification times get their baseline like any
/// other: the values written, so that the next run finds them equal and compares nothing.
#[tokio::test]
async fn creates_from_a_side_without_times_get_their_baseline() {
    let mut world = world(ConflictStrategy::Review);
    world.left.set_now(at(0));
    for number in 0..3 {
        world.left.edit(&format!("m{number}"), "email", json!(format!("M{number}@Club.nl")));
    }
    for run in 0..2 {
        let mut connectors = SidePair::new(
            Wrapped::without_times(world.left.connector()),
            Wrapped::without_times(world.right.connector()),
        );
        let report = world.run_with(&mut connectors, RunOptions::default()).await;
        if run == 0 {
            assert_eq!(report.stats.writes_done, 3, "{report:#?}");
        } else {
            assert_eq!((report.stats.writes_done, report.stats.compared), (0, 0), "{report:#?}");
        }
    }
    let layout = world.store.layout("members", &world.spec.field_names()).unwrap();
    let baselines = world.store.baselines("members", &layout, &[RecordKey::new("m1")]).unwrap();
    assert_eq!(
        baselines[&RecordKey::new("m1")].fields[0].value,
        Some(fieldsync_model::Value::from("m1@club.nl"))
    );
}

/// A delete whose answer was lost, found done when its entry comes round again, is closed as
/// written — once, and audited once — rather than refused as a target that moved.
#[tokio::test]
async fn a_delete_whose_answer_was_lost_is_closed_as_done() {
    let mut world = world(ConflictStrategy::Review).seeded().await;
    world.left.remove("m1");
    world.right.inject(MemoryFault::WriteLostAnswer);
    let report = world.run(RunOptions { full: true, ..Default::default() }).await;
    assert_eq!(report.failures[0].outcome, "retrying", "{report:#?}");
    assert!(world.right.record("m1").is_none(), "deleted, though unanswered");
    world.spec.retry.wait_in_run = Duration::from_secs(5);
    let report = world.run(RunOptions { deliver_only: true, ..Default::default() }).await;
    assert_eq!((report.stats.writes_done, report.stats.writes_moved), (1, 0), "{report:#?}");
    let done = world.store.list_outbox(Some("members"), Some(OutboxStatus::Done), 100).unwrap();
    assert!(
        done.iter()
            .any(|entry| entry.write.key.as_str() == "m1" && entry.write.operation == Operation::Delete),
        "{done:#?}"
    );
}

/// The reasons of a record's audit entries of one event, in order.
fn audited(world: &World, key: &str, event: fieldsync_store::AuditEvent) -> Vec<String> {
    let entries = world.store.audit_for_record("members", &RecordKey::new(key)).unwrap();
    entries.into_iter().filter(|entry| entry.event == event).map(|entry| entry.reason).collect()
}

/// Every write the engine makes is audited once, saying what it did: a create as a create, an
/// update field by field, a delete and a soft delete as what they are.
#[tokio::test]
async fn the_audit_says_what_each_write_did() {
    use fieldsync_store::AuditEvent::Written;
    let mut world = world(ConflictStrategy::Review).seeded().await;
    assert_eq!(audited(&world, "m3", Written), ["created on the right side and read back"]);
    world.left.set_now(at(100));
    world.left.edit("m3", "email", json!("changed@club.nl"));
    world.left.remove("m4");
    world.run(RunOptions { full: true, ..Default::default() }).await;
    assert_eq!(
        audited(&world, "m3", Written),
        ["created on the right side and read back", "written to the right side and read back"]
    );
    assert_eq!(
        audited(&world, "m4", Written),
        ["created on the right side and read back", "deleted on the right side"]
    );

    let mut soft = self::world(ConflictStrategy::Review);
    soft.spec.deletes = DeletePolicy::Soft {
        paths: SidePair::new("status".into(), "status".into()),
        value: json!("inactive"),
    };
    let mut soft = soft.seeded().await;
    soft.left.remove("m1");
    soft.run(RunOptions { full: true, ..Default::default() }).await;
    assert_eq!(soft.right.value("m1", "status"), json!("inactive"));
    assert_eq!(
        audited(&soft, "m1", Written),
        ["created on the right side and read back", "soft-deleted on the right side and read back"]
    );
}

/// A write that keeps failing with a transient error is dead after its attempts, counted
/// once, with an audit entry that says so; the target is left as it was.
#[tokio::test]
async fn a_write_that_keeps_failing_is_dead_after_its_attempts() {
    let mut world = world(ConflictStrategy::Review).seeded().await;
    world.spec.retry =
        RetryPolicy { attempts: 2, initial: ms(1), max: ms(5), wait_in_run: Duration::from_secs(5) };
    world.right.inject(MemoryFault::WriteUnavailable);
    world.right.inject(MemoryFault::WriteUnavailable);
    world.left.set_now(at(100));
    world.left.edit("m1", "email", json!("never@club.nl"));
    let report = world.run(RunOptions::default()).await;
    assert_eq!((report.stats.writes_done, report.stats.writes_dead), (0, 1), "{report:#?}");
    assert_eq!(report.failures[0].outcome, "dead");
    assert_eq!(world.right.value("m1", "email"), json!("member1@club.nl"));
    let failed = audited(&world, "m1", fieldsync_store::AuditEvent::Failed);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0].starts_with("gave up after 2 attempts"), "{failed:?}");
}

/// A record new on one side, whose counterpart the other side can neither list (it is read
/// from its cursor) nor look up by link key, is neither created nor taken for deleted: it
/// waits for the next full scan, which creates it once.
#[tokio::test]
async fn a_record_the_other_side_cannot_look_up_waits_for_a_full_scan() {
    let mut world = world(ConflictStrategy::Review).seeded().await;
    let connectors = |world: &World| {
        SidePair::new(
            Wrapped::new(world.left.connector()),
            Wrapped::without_key_lookups(world.right.connector()),
        )
    };
    // The right side was empty when first read: this run gives it a cursor.
    world.run_with(&mut connectors(&world), RunOptions { full: true, ..Default::default() }).await;
    world.left.set_now(at(100));
    world.left.edit("n1", "email", json!("new@club.nl"));
    let report = world.run_with(&mut connectors(&world), RunOptions::default()).await;
    assert_eq!(report.stats.writes_done, 0, "{report:#?}");
    assert!(world.right.record("n1").is_none());
    assert!(
        report.lines.iter().any(|line| line.key == RecordKey::new("n1") && line.reason.contains("full scan")),
        "{report:#?}"
    );
    let full = RunOptions { full: true, ..Default::default() };
    let report = world.run_with(&mut connectors(&world), full).await;
    assert_eq!(report.stats.writes_done, 1, "{report:#?}");
    assert_eq!(world.right.value("n1", "email"), json!("new@club.nl"));
    let report = world.run_with(&mut connectors(&world), full).await;
    assert_eq!(report.stats.writes_done, 0, "{report:#?}");
}

/// A record made again on one side under a new id, with the same link key and values, is
/// the same record: its baseline follows the new id, and the next change reaches it there.
#[tokio::test]
async fn a_record_made_again_under_a_new_id_is_written_under_it() {
    let world = world(ConflictStrategy::Review);
    world.right.assign_ids("r");
    let mut world = world.seeded().await;
    let (old, record) = world
        .right
        .records()
        .into_iter()
        .find(|(_, record)| record.fields.get("id") == Some(&json!("m1")))
        .unwrap();
    world.right.remove(old.as_str());
    world.right.set_now(at(50));
    for (path, value) in &record.fields {
        world.right.edit("again", path, value.clone());
    }
    let report = world.run(RunOptions::default()).await;
    assert_eq!((report.stats.writes_done, report.stats.writes_dead), (0, 0), "{report:#?}");
    let layout = world.store.layout("members", &world.spec.field_names()).unwrap();
    let baselines = world.store.baselines("members", &layout, &[RecordKey::new("m1")]).unwrap();
    assert_eq!(
        baselines[&RecordKey::new("m1")].id(Side::Right).map(|id| id.as_str()),
        Some("again"),
        "{report:#?}"
    );

    world.left.set_now(at(100));
    world.left.edit("m1", "mobile", json!("06-777"));
    let report = world.run(RunOptions::default()).await;
    assert_eq!((report.stats.writes_done, report.stats.writes_dead), (1, 0), "{report:#?}");
    assert_eq!(world.right.value("again", "mobile"), json!("06-777"));
    assert!(world.right.record(old.as_str()).is_none());
}

/// A conflict held for review follows the values while it waits (the person decides on what
/// the sides hold now), and is closed when the sides settle it themselves: both back to the
/// value they last agreed on (no write), or one of them back to it (the other's edit wins).
#[tokio::test]
async fn a_review_follows_the_values_and_closes_when_the_sides_settle_it() {
    let mut world = world(ConflictStrategy::Review).seeded().await;
    world.set_time(at(100));
    for key in ["m1", "m2"] {
        world.left.edit(key, "mobile", json!("06-left"));
        world.right.edit(key, "mobile", json!("06-right"));
    }
    let report = world.run(RunOptions::default()).await;
    assert_eq!((report.stats.reviews_open, report.stats.writes_done), (2, 0), "{:#?}", report.stats);

    world.right.edit("m1", "mobile", json!("06-right-again"));
    world.run(RunOptions::default()).await;
    let open = world.store.list_reviews(Some("members"), Some(ReviewStatus::Open), 10).unwrap();
    let m1 = open.iter().find(|review| review.review.key == RecordKey::new("m1")).unwrap();
    assert_eq!(
        (m1.review.left.clone(), m1.review.right.clone()),
        (Some(fieldsync_model::Value::from("06-left")), Some(fieldsync_model::Value::from("06-right-again")))
    );
    assert_eq!(open.len(), 2);

    world.left.edit("m1", "mobile", json!("06-1"));
    world.right.edit("m1", "mobile", json!("06-1"));
    world.left.edit("m2", "mobile", json!("06-2"));
    let report = world.run(RunOptions::default()).await;
    assert_eq!((report.stats.reviews_closed, report.stats.writes_done), (2, 1), "{:#?}", report.stats);
    assert_eq!(world.left.value("m2", "mobile"), json!("06-right"));
    assert!(world.store.list_reviews(Some("members"), Some(ReviewStatus::Open), 10).unwrap().is_empty());
}

/// A first sync of two sides that already agree builds the baselines, writes nothing, and
/// lists nothing record by record: at a million members the report would be all agreement.
/// Each record's agreement is still audited, once.
#[tokio::test]
async fn a_first_sync_of_equal_sides_is_counted_not_listed() {
    let mut world = world(ConflictStrategy::Review);
    for system in [&world.left, &world.right] {
        system.set_now(at(0));
        for number in 0..3 {
            system.edit(&format!("m{number}"), "email", json!(format!("m{number}@club.nl")));
            system.edit(&format!("m{number}"), "mobile", json!(format!("06-{number}")));
        }
    }
    let report = world.run(RunOptions::default()).await;
    assert_eq!((report.stats.compared, report.stats.writes_done), (3, 0), "{:#?}", report.stats);
    assert!(report.lines.is_empty(), "{:#?}", report.lines);
    assert_eq!(
        audited(&world, "m1", fieldsync_store::AuditEvent::Agreed),
        ["first sync: both sides already agree on 2 fields"]
    );
    for (system, mobile) in [(&world.left, "06-left"), (&world.right, "06-right")] {
        system.edit("n1", "email", json!("n1@club.nl"));
        system.edit("n1", "mobile", json!(mobile));
    }
    let report = world.run(RunOptions::default()).await;
    assert_eq!(report.stats.reviews_open, 1, "{:#?}", report.stats);
    assert_eq!(
        audited(&world, "n1", fieldsync_store::AuditEvent::Agreed),
        ["first sync: both sides already agree on 1 field"]
    );
}

/// A record deleted on one side and edited on the other is not deleted: the edit would be
/// lost. It is held for a person, who alone settles it.
#[tokio::test]
async fn a_record_deleted_on_one_side_and_edited_on_the_other_is_held() {
    let mut world = world(ConflictStrategy::Review).seeded().await;
    world.right.set_now(at(100));
    world.left.remove("m1");
    world.right.edit("m1", "mobile", json!("06-kept"));
    let full = RunOptions { full: true, ..Default::default() };
    let report = world.run(full).await;
    assert_eq!((report.stats.reviews_open, report.stats.writes_done), (1, 0), "{:#?}", report.stats);
    assert_eq!(world.right.value("m1", "mobile"), json!("06-kept"));
    // The review shows the record that would be deleted or kept, and when it changed.
    let [held] = <[_; 1]>::try_from(world.store.list_reviews(Some("members"), None, 10).unwrap()).unwrap();
    assert_eq!((held.review.left, held.review.left_changed), (None, None), "absent on the left");
    assert_eq!(held.review.right, Some(Value::from("email: member1@club.nl · mobile: 06-kept")));
    assert_eq!(held.review.right_changed, Some(at(100)));

    // Taking the edit back does not settle it: a person was asked about a delete.
    world.right.edit("m1", "mobile", json!("06-1"));
    let report = world.run(full).await;
    assert_eq!((report.stats.reviews_closed, report.stats.writes_done), (0, 0), "{:#?}", report.stats);
    let open = world.store.list_reviews(Some("members"), Some(ReviewStatus::Open), 10).unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].id, held.id);
    assert_eq!(
        open[0].review.right,
        Some(Value::from("email: member1@club.nl · mobile: 06-1")),
        "the review follows the record while it waits"
    );
    decide(&mut world, open[0].id, Decision::Keep(Side::Left), at(150));
    let report = world.run(full).await;
    assert_eq!((report.stats.reviews_closed, report.stats.writes_done), (1, 1), "{:#?}", report.stats);
    assert!(world.right.record("m1").is_none());
}

/// A delete that the link ignores is remembered once: the record stays on the other side,
/// and later runs neither restore it nor list it again, unless it changes there: that run
/// says why the change goes nowhere.
#[tokio::test]
async fn an_ignored_delete_is_remembered_and_not_listed_again() {
    let mut world = world(ConflictStrategy::Review);
    world.spec.deletes = DeletePolicy::Ignore;
    let mut world = world.seeded().await;
    world.left.remove("m1");
    let full = RunOptions { full: true, ..Default::default() };
    let report = world.run(full).await;
    assert_eq!(report.stats.writes_done, 0, "{report:#?}");
    assert!(report.lines.iter().any(|line| line.key == RecordKey::new("m1")), "{report:#?}");
    let report = world.run(full).await;
    assert_eq!(report.stats.writes_done, 0, "{report:#?}");
    assert!(report.lines.is_empty(), "{:#?}", report.lines);
    assert!(world.left.record("m1").is_none() && world.right.record("m1").is_some());
    world.right.set_now(at(100));
    world.right.edit("m1", "mobile", json!("06-on-the-right"));
    let report = world.run(full).await;
    assert_eq!(report.stats.writes_done, 0, "{report:#?}");
    assert_eq!(report.lines.len(), 1, "{:#?}", report.lines);
    assert_eq!(report.lines[0].action, Action::Skipped);
    assert_eq!(report.lines[0].reason, "deleted on the left side earlier");
    assert!(world.left.record("m1").is_none());
}

/// A new record with a value that cannot be normalised is not created (its other side would
/// get a record missing that value); it is counted and listed, and created once it is fixed.
#[tokio::test]
async fn a_new_record_with_a_value_that_cannot_be_read_is_not_created() {
    let mut world = world(ConflictStrategy::Review).seeded().await;
    world.left.set_now(at(100));
    world.left.edit("n1", "email", json!(["two", "addresses"]));
    world.left.edit("n1", "mobile", json!("06-1"));
    let report = world.run(RunOptions::default()).await;
    assert_eq!((report.stats.invalid_values, report.stats.writes_done), (1, 0), "{:#?}", report.stats);
    assert_eq!(report.lines[0].action, Action::Invalid, "{:#?}", report.lines);
    assert!(world.right.record("n1").is_none());
    world.left.set_now(at(200));
    world.left.edit("n1", "email", json!("n1@club.nl"));
    let report = world.run(RunOptions::default()).await;
    assert_eq!((report.stats.invalid_values, report.stats.writes_done), (0, 1), "{:#?}", report.stats);
    assert_eq!(world.right.value("n1", "email"), json!("n1@club.nl"));
}

/// The guard weighs a run's deletes against the baselines there were before it, in a plan as
/// in the run: baselines the plan itself builds (a first sync of equal records) count in
/// neither, so that `fieldsync plan` stops exactly where `fieldsync run` would.
#[tokio::test]
async fn a_plan_and_its_run_meet_the_guard_alike() {
    let mut world = world(ConflictStrategy::Review).seeded().await;
    world.spec.guard = Guard { max_delete: Limit::Share(0.5), max_change: Limit::Share(1.0) };
    for number in 0..6 {
        for system in [&world.left, &world.right] {
            system.edit(&format!("n{number}"), "email", json!(format!("n{number}@club.nl")));
        }
    }
    for number in 0..4 {
        world.left.remove(&format!("m{number}"));
    }
    let full = RunOptions { full: true, ..Default::default() };
    let plan = world.run(RunOptions { dry_run: true, ..full }).await;
    assert_eq!((plan.stats.right.deletes_planned, plan.guard.is_none()), (4, true), "{:#?}", plan.guard);
    let run = world.run(full).await;
    assert_eq!((run.stats.writes_done, run.guard.is_none()), (4, true), "{:#?}", run.guard);
}

/// A write an earlier attempt made, whose answer was lost, is found landed by the next plan
/// and closed as done when that plan is published: not by a guarded run, which leaves the
/// entry open and counts no write done.
#[tokio::test]
async fn a_landed_write_is_done_only_when_its_plan_is_published() {
    let mut world = world(ConflictStrategy::Review).seeded().await;
    world.left.set_now(at(100));
    world.left.edit("m1", "email", json!("landed@club.nl"));
    world.right.inject(MemoryFault::WriteLostAnswer);
    let report = world.run(RunOptions::default()).await;
    assert_eq!(report.failures[0].outcome, "retrying", "{report:#?}");
    assert_eq!(world.right.value("m1", "email"), json!("landed@club.nl"));

    for number in 2..6 {
        world.left.remove(&format!("m{number}"));
    }
    world.spec.guard = Guard { max_delete: Limit::Count(2), max_change: Limit::Share(1.0) };
    let full = RunOptions { full: true, ..Default::default() };
    let guarded = world.run(full).await;
    assert!(guarded.guard.is_some(), "{guarded:#?}");
    assert_eq!(guarded.stats.writes_done, 0, "{:#?}", guarded.stats);
    let open = world.store.list_outbox(Some("members"), None, 10).unwrap();
    assert!(
        open.iter()
            .any(|entry| entry.write.key == RecordKey::new("m1") && entry.status != OutboxStatus::Done)
    );

    world.spec.guard = Guard { max_delete: Limit::Share(1.0), max_change: Limit::Share(1.0) };
    let report = world.run(full).await;
    assert_eq!(report.stats.writes_done, 5, "the landed write and four deletes: {:#?}", report.stats);
    assert_eq!(audited(&world, "m1", fieldsync_store::AuditEvent::Written).len(), 2);
}

#[tokio::test]
async fn a_full_scan_across_many_baselines_misses_nothing_in_key_order_or_out_of_it() {
    // The baselines are loaded a page at a time in key order, as the listings go. The left
    // lists by its own ids: in the link keys' order, then in the reverse.
    full_scan_across_many_baselines(false).await;
    full_scan_across_many_baselines(true).await;
}

async fn full_scan_across_many_baselines(reverse: bool) {
    let mut world =
        world(ConflictStrategy::LastWriteWins { grace: Duration::ZERO, tie: Tie::Side(Side::Left) });
    // Baselines load 256, 512, 1,024, … at a time: the third page ends right before the last
    // key, which only the load after both listings reaches.
    const MEMBERS: usize = 256 + 512 + 1_024 + 1;
    let id = |number: usize| format!("l{number:05}");
    let key = |number: usize| format!("k{:05}", if reverse { MEMBERS - 1 - number } else { number });
    world.left.set_now(at(0));
    for number in 0..MEMBERS {
        world.left.edit(&id(number), "id", json!(key(number)));
        world.left.edit(&id(number), "email", json!(format!("m{number}@club.nl")));
    }
    let first = world.run(RunOptions::default()).await;
    assert_eq!(first.stats.writes_done, MEMBERS as u64);

    // Edits near both ends of the key range and in the middle, a record deleted on the right,
    // and the record with the last key deleted on both sides: no listing brings it, so only
    // the baselines loaded after both listings ended tell that it vanished.
    world.set_time(at(100));
    world.left.edit(&id(10), "email", json!("ten@club.nl"));
    world.left.edit(&id(MEMBERS - 10), "email", json!("ten.from.the.end@club.nl"));
    world.right.edit(&key(900), "mobile", json!("06-900"));
    let number_of =
        |wanted: usize| (0..MEMBERS).find(|&number| key(number) == format!("k{wanted:05}")).unwrap();
    let (gone, last) = (number_of(MEMBERS - 2), number_of(MEMBERS - 1));
    world.right.remove(&key(gone));
    world.right.remove(&key(last));
    world.left.remove(&id(last));
    let baselines = world.store.baseline_count("members").unwrap();
    let full = world.run(RunOptions { full: true, ..Default::default() }).await;
    assert_eq!(full.status, RunStatus::Done);
    assert_eq!(full.stats.right.updates_planned, 2);
    assert_eq!(full.stats.left.updates_planned, 1);
    assert_eq!(full.stats.left.deletes_planned, 1);
    assert_eq!((full.stats.left.deleted, full.stats.right.deleted), (1, 2));
    assert_eq!(full.stats.writes_done, 4);
    assert_eq!(world.store.baseline_count("members").unwrap(), baselines - 2);
    assert_eq!(world.right.value(&key(10), "email"), json!("ten@club.nl"));
    assert_eq!(world.right.value(&key(MEMBERS - 10), "email"), json!("ten.from.the.end@club.nl"));
    assert_eq!(world.left.value(&id(900), "mobile"), json!("06-900"));
    assert!(world.left.record(&id(gone)).is_none_or(|record| record.deleted));
    let again = world.run(RunOptions { full: true, ..Default::default() }).await;
    assert_eq!(again.stats.writes_done, 0);
    assert_eq!(again.stats.left.changed + again.stats.right.changed, 0);
}

/// A value no rule of its type reads (a phone number the numbering plan does not know) is
/// held by `invalid = "hold"`: reported, the field left alone. With `invalid = "copy"` it is
/// written to the other side as it is, with a warning in the report and the audit, and the
/// two sides then agree: the next run writes nothing.
#[tokio::test]
async fn a_value_no_rule_reads_is_held_or_copied_as_the_field_says() {
    let phone = |invalid| {
        let normaliser = Normaliser::new(FieldType::Phone).with_region("NL").unwrap().with_invalid(invalid);
        SidePair::new(normaliser.clone(), normaliser)
    };
    let mut world = world(ConflictStrategy::Review);
    world.spec.fields[1].normalisers = phone(fieldsync_model::Invalid::Hold);
    world.left.set_now(at(0));
    world.left.edit("m1", "email", json!("jan@club.nl"));
    world.left.edit("m1", "mobile", json!("06 12345678"));
    world.run(RunOptions::default()).await;
    assert_eq!(world.right.value("m1", "mobile"), json!("+31612345678"));

    world.left.set_now(at(100));
    world.left.edit("m1", "mobile", json!(" 06-1234 "));
    let held = world.run(RunOptions::default()).await;
    assert_eq!((held.stats.invalid_values, held.stats.writes_done), (1, 0), "{held:#?}");
    assert_eq!(world.right.value("m1", "mobile"), json!("+31612345678"));

    world.spec.fields[1].normalisers = phone(fieldsync_model::Invalid::Copy);
    // One member in all: its one change is more than the guard's share, so force.
    let copied = world.run(RunOptions { full: true, force: true, ..Default::default() }).await;
    assert_eq!((copied.stats.copied_values, copied.stats.writes_done), (1, 1), "{copied:#?}");
    assert_eq!(world.right.value("m1", "mobile"), json!("06-1234"));
    let line = copied.lines.iter().find(|line| line.action == Action::Copied).expect("a warning line");
    assert!(line.reason.contains("\" 06-1234 \" is not a valid phone"), "{}", line.reason);
    let audit = audited(&world, "m1", fieldsync_store::AuditEvent::Invalid);
    assert!(
        audit.iter().any(|reason| reason.contains("copied as it is written to the right side")),
        "{audit:?}"
    );
    let quiet = world.run(RunOptions { full: true, ..Default::default() }).await;
    assert_eq!((quiet.stats.writes_done, quiet.stats.compared), (0, 0), "{quiet:#?}");

    // Corrected at its source, the number is written in its canonical form.
    world.left.set_now(at(200));
    world.left.edit("m1", "mobile", json!("06-12345679"));
    let corrected = world.run(RunOptions { force: true, ..Default::default() }).await;
    assert_eq!((corrected.stats.copied_values, corrected.stats.writes_done), (0, 1), "{corrected:#?}");
    assert_eq!(world.right.value("m1", "mobile"), json!("+31612345679"));
}

/// A side's own spelling of a value (`Ja`/`Nee` for a boolean) is read as the value and written
/// in the spelling, both ways, and a run after writes nothing.
#[tokio::test]
async fn a_sides_own_spelling_of_values_is_read_and_written() {
    let mut world = world(ConflictStrategy::Review);
    let spelled = Normaliser::new(FieldType::Bool)
        .with_spellings([("true".to_string(), json!("Ja")), ("false".to_string(), json!("Nee"))])
        .unwrap();
    world.spec.fields[1] = FieldSpec {
        name: "blocked".into(),
        paths: SidePair::new("blocked".into(), "geblokkeerd".into()),
        normalisers: SidePair::new(Normaliser::new(FieldType::Bool), spelled),
        direction: Direction::Both,
    };
    world.set_time(at(0));
    for (id, blocked) in [("m1", json!(1)), ("m2", json!(0))] {
        world.left.edit(id, "email", json!(format!("{id}@club.nl")));
        world.left.edit(id, "blocked", blocked);
    }
    world.run(RunOptions::default()).await;
    assert_eq!(world.right.value("m1", "geblokkeerd"), json!("Ja"));
    assert_eq!(world.right.value("m2", "geblokkeerd"), json!("Nee"));

    world.right.set_now(at(100));
    world.right.edit("m2", "geblokkeerd", json!("ja"));
    let report = world.run(RunOptions { force: true, ..Default::default() }).await;
    assert_eq!(report.stats.writes_done, 1, "{report:#?}");
    assert_eq!(world.left.value("m2", "blocked"), json!(true));
    let quiet = world.run(RunOptions { full: true, ..Default::default() }).await;
    assert_eq!((quiet.stats.writes_done, quiet.stats.compared), (0, 0), "{quiet:#?}");
}

/// Regression: a create its target made in part before failing (WordPress inserts the post,
/// then answers 400 for one meta value) left a half-made record: the next run saw it on both
/// sides without a baseline and held every difference for review. A record that an unfinished
/// create of ours made is completed from the create's source, once, with no duplicate.
#[tokio::test]
async fn a_create_the_target_made_in_part_is_completed_by_the_next_run() {
    let mut world = new_member_on_the_left("Nieuw@Club.nl", "06-55").await;
    let mut connectors = SidePair::new(
        Wrapped::new(world.left.connector()),
        Wrapped { creates_half_made: true, ..Wrapped::new(world.right.connector()) },
    );
    let first = world.run_with(&mut connectors, RunOptions::default()).await;
    assert_eq!((first.status, first.stats.writes_dead), (RunStatus::Partial, 1), "{first:#?}");
    assert_eq!(world.right.value("n1", "email"), json!(null), "the target made it in part");

    connectors.right.creates_half_made = false;
    let second = world.run_with(&mut connectors, RunOptions::default()).await;
    assert_eq!((second.status, second.stats.reviews_open), (RunStatus::Done, 0), "{second:#?}");
    assert_eq!(world.right.value("n1", "email"), json!("nieuw@club.nl"));
    assert_eq!(world.right.value("n1", "mobile"), json!("06-55"));
    let made: Vec<_> = world
        .right
        .records()
        .into_values()
        .filter(|record| record.fields.get("id") == Some(&json!("n1")))
        .collect();
    assert_eq!(made.len(), 1, "no duplicate: {made:#?}");
    let dead = world.store.list_outbox(Some("members"), Some(OutboxStatus::Dead), 10).unwrap();
    assert!(dead.is_empty(), "the failed create is settled by its completion: {dead:#?}");
    let quiet = world.run_with(&mut connectors, RunOptions { full: true, ..Default::default() }).await;
    assert_eq!((quiet.stats.writes_done, quiet.stats.compared), (0, 0), "{quiet:#?}");
}

/// A progress display that cancels the run once `after` units of the phase `phase` are done.
struct CancelAt {
    phase: &'static str,
    after: u64,
    token: fieldsync_engine::CancellationToken,
    current: std::cell::RefCell<String>,
    done: std::cell::Cell<u64>,
}

impl fieldsync_engine::Progress for CancelAt {
    fn phase(&self, name: &str, _total: Option<u64>) {
        *self.current.borrow_mut() = name.to_string();
        self.done.set(0);
    }

    fn advance(&self, count: u64) {
        self.done.set(self.done.get() + count);
        if *self.current.borrow() == self.phase && self.done.get() >= self.after {
            self.token.cancel();
        }
    }
}

/// A run cancelled between chunks of planning, or between delivery batches, leaves what a kill
/// there would — the chunks it committed unpublished (the next run discards them), the batches
/// it closed closed — but records itself as cancelled and releases its lease; the next run
/// completes the sync with nothing lost or duplicated.
#[tokio::test]
async fn a_cancelled_run_leaves_what_a_kill_would_and_the_next_run_completes() {
    for (phase, after) in [("reading and planning", 1_100), ("writing", 1)] {
        let mut world = world(ConflictStrategy::Review);
        world.left.set_now(at(0));
        for number in 0..1_200 {
            world.left.edit(&format!("m{number:04}"), "email", json!(format!("member{number}@club.nl")));
        }
        let token = fieldsync_engine::CancellationToken::new();
        let progress = CancelAt {
            phase,
            after,
            token: token.clone(),
            current: std::cell::RefCell::default(),
            done: std::cell::Cell::default(),
        };
        let names = SidePair::new("left".to_string(), "right".to_string());
        let mut connectors = world.connectors();
        let options = RunOptions::default();
        let run = LinkRun {
            spec: &world.spec,
            names: &names,
            options,
            clock: &fieldsync_engine::SystemClock,
            progress: &progress,
            cancel: &token,
            targets: None,
        };
        let report =
            fieldsync_test_support::run_link_watched(run, &mut connectors, &mut world.store).await.unwrap();
        assert_eq!(report.status, RunStatus::Cancelled, "{phase}: {:#?}", report.stats);
        let runs = world.store.list_runs(Some("members"), 10).unwrap();
        assert_eq!(runs[0].status, RunStatus::Cancelled, "{phase}");
        let created = world.right.records().len();
        if phase == "writing" {
            // The first batch was sent and closed; the others wait, published, for the next run.
            assert_eq!((created, report.stats.writes_done), (500, 500), "{phase}");
            let pending = all_outbox(&world.store, Some(OutboxStatus::Pending));
            assert_eq!(pending.len(), 700, "{phase}");
        } else {
            // Cancelled while planning: nothing was published, so nothing was sent.
            assert_eq!(created, 0, "{phase}");
            let planned = all_outbox(&world.store, None);
            assert!(planned.len() >= 1_000, "{phase}: the first chunk was committed, {}", planned.len());
        }

        // The lease was released: the next run starts at once, and completes the sync.
        let next = world.run(RunOptions::default()).await;
        assert_eq!(next.status, RunStatus::Done, "{phase}: {next:#?}");
        assert_eq!(world.right.records().len(), 1_200, "{phase}: nothing lost, nothing duplicated");
        let done = all_outbox(&world.store, Some(OutboxStatus::Done));
        assert_eq!(done.len(), 1_200, "{phase}: each create made once");
        assert_eq!(world.right.value("m0999", "email"), json!("member999@club.nl"));
        let quiet = world.run(RunOptions { full: true, ..Default::default() }).await;
        assert_eq!((quiet.status, quiet.stats.writes_done), (RunStatus::Done, 0), "{phase}");
    }
}

/// Every outbox entry of the link `members` in `status` (or all), newest first.
fn all_outbox(store: &impl StateStore, status: Option<OutboxStatus>) -> Vec<OutboxEntry> {
    let query = ListQuery { link: Some("members"), links: None, status, before: None, limit: 0 };
    store.outbox_page(query).unwrap().rows
}

/// Takes the state store's write lock from another connection when the run enters `phase`,
/// and hands that connection to whoever must release it.
struct LockAt {
    phase: &'static str,
    path: std::path::PathBuf,
    holder: std::sync::Mutex<Option<tokio::sync::oneshot::Sender<rusqlite::Connection>>>,
}

impl fieldsync_engine::Progress for LockAt {
    fn phase(&self, name: &str, _total: Option<u64>) {
        if name != self.phase {
            return;
        }
        let Some(holder) = self.holder.lock().unwrap().take() else { return };
        let connection = rusqlite::Connection::open(&self.path).unwrap();
        connection.execute_batch("BEGIN IMMEDIATE").unwrap();
        holder.send(connection).unwrap();
    }
}

/// A state-store call that waits does not stall the runtime: on a multi-threaded runtime with a
/// single worker, while the run's first commit of its plan waits for a write lock another
/// connection holds, the task that releases the lock still runs, and the run completes. (Were
/// the store called on the worker itself, the release could never run, and the commit would
/// fail when the store's busy timeout ran out.)
#[test]
fn a_store_call_that_waits_leaves_the_runtime_to_its_other_tasks() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let mut world = world(ConflictStrategy::Review);
    let Some(path) = world.sqlite_path().map(std::path::Path::to_path_buf) else {
        eprintln!(
            "SKIPPED: a_store_call_that_waits_leaves_the_runtime_to_its_other_tasks holds SQLite's write \
             lock, and FIELDSYNC_TEST_STORE gave the world a PostgreSQL store"
        );
        return;
    };
    world.left.set_now(at(0));
    for number in 0..3 {
        world.left.edit(&format!("m{number}"), "email", json!(format!("member{number}@club.nl")));
    }
    let (holder, held) = tokio::sync::oneshot::channel::<rusqlite::Connection>();
    let progress =
        LockAt { phase: "reading and planning", path, holder: std::sync::Mutex::new(Some(holder)) };
    runtime.block_on(async move {
        let release = tokio::spawn(async move {
            let connection = held.await.expect("the run entered planning");
            // Long enough for the run to reach its commit and wait on the lock.
            tokio::time::sleep(Duration::from_millis(200)).await;
            connection.execute_batch("COMMIT").unwrap();
        });
        let run = tokio::spawn(async move {
            let names = SidePair::new("left".to_string(), "right".to_string());
            let mut connectors = world.connectors();
            let never = fieldsync_engine::CancellationToken::new();
            let run = LinkRun {
                spec: &world.spec,
                names: &names,
                options: RunOptions::default(),
                clock: &fieldsync_engine::SystemClock,
                progress: &progress,
                cancel: &never,
                targets: None,
            };
            let report =
                fieldsync_test_support::run_link_watched(run, &mut connectors, &mut world.store).await;
            (report, world)
        });
        let (report, world) = run.await.unwrap();
        release.await.unwrap();
        let report = report.expect("the commit waited for the lock, then landed");
        assert_eq!((report.status, report.stats.writes_done), (RunStatus::Done, 3), "{report:#?}");
        assert_eq!(world.right.records().len(), 3);
    });
}

/// A targeted run (a webhook named a record) reads only the records named, by id, and the
/// other side's counterparts: it propagates their changes with the same merge, outbox and
/// audit as any run, leaves other changes alone and moves no cursor, so the next incremental
/// run still reads what no webhook told of.
#[tokio::test]
async fn a_targeted_run_syncs_the_records_named_and_leaves_the_cursors_to_the_next_run() {
    let mut world = world(last_write_wins_tie_left()).seeded().await;
    world.set_time(at(100));
    world.left.edit("m1", "email", json!("named@club.nl"));
    world.left.edit("m2", "email", json!("not.named@club.nl"));
    world.right.edit("m3", "mobile", json!("06-333"));
    let cursors = |world: &World| Side::BOTH.map(|side| world.store.cursor("members", side).unwrap());
    let before = cursors(&world);

    let targets = SidePair::new(vec![RecordId::new("m1")], vec![RecordId::new("m3"), RecordId::new("gone")]);
    let report = world.run_targeted(&targets).await;
    assert_eq!(report.status, RunStatus::Done, "{report:#?}");
    assert_eq!((report.stats.left.mode, report.stats.right.mode), (ReadMode::Targeted, ReadMode::Targeted));
    assert_eq!((report.stats.left.read, report.stats.right.read), (1, 1), "only the records named");
    assert_eq!(report.stats.writes_done, 2, "{report:#?}");
    assert_eq!(world.right.value("m1", "email"), json!("named@club.nl"));
    assert_eq!(world.left.value("m3", "mobile"), json!("06-333"));
    assert_eq!(world.right.value("m2", "email"), json!("member2@club.nl"), "not named, not read");
    assert_eq!(cursors(&world), before, "no cursor moved");
    let history = world.store.runs_page(ListQuery {
        link: Some("members"),
        links: None,
        status: None,
        before: None,
        limit: 1,
    });
    assert_eq!(history.unwrap().rows[0].mode, "targeted");

    let next = world.run(RunOptions::default()).await;
    assert_eq!(next.stats.left.mode, ReadMode::Incremental);
    assert_eq!(world.right.value("m2", "email"), json!("not.named@club.nl"), "the next run reads it");
    assert_eq!(next.stats.writes_done, 1, "{next:#?}");
}

/// A world whose right side reads as a change feed (ids of its own, as a document store gives)
/// after ten members were synced to it from the left; the feed's cursor has moved past
/// fieldsync's own creates, so that the run after the first sync reads none of them back.
async fn synced_to_a_feed() -> World {
    let mut world = world(ConflictStrategy::Review);
    world.right.read_as_feed();
    world.right.assign_ids("doc-");
    ten_on_the_left(&mut world, |number| format!("member{number}@club.nl"));
    let first = world.run(RunOptions::default()).await;
    assert_eq!((first.status, first.stats.writes_done), (RunStatus::Done, 10));
    assert_eq!(first.stats.right.mode, ReadMode::Full);
    // The creates landed after the sequence the first listing started at, each read back as
    // written: the cursor stands past them.
    let served = world.right.records_served();
    let next = world.run(RunOptions::default()).await;
    assert_eq!(next.stats.right.mode, ReadMode::Incremental);
    assert_eq!((next.stats.right.read, next.stats.writes_done), (0, 0));
    assert_eq!(world.right.records_served(), served, "the feed served none of the creates back");
    world
}

#[tokio::test]
async fn a_change_feeds_cursor_moves_past_own_writes_but_not_past_an_edit_made_meanwhile() {
    let mut world = synced_to_a_feed().await;
    world.left.set_now(at(100));
    for member in ["m1", "m2", "m3"] {
        world.left.edit(member, "email", json!(format!("{member}.new@club.nl")));
    }
    // Between fieldsync's read and its write, someone changes m2's mobile on the feed side:
    // the write of m2's email lands on top of it, and the feed then lists m2 once, at
    // fieldsync's write. That row carries news; the cursor must not pass it.
    let m2 = doc_of(&world, "m2");
    world.right.inject(MemoryFault::EditBeforeWrite {
        id: m2.clone(),
        path: "mobile".into(),
        value: json!("06-222"),
    });
    let run = world.run(RunOptions::default()).await;
    assert_eq!((run.status, run.stats.writes_done), (RunStatus::Done, 3), "{:?}", run.problems);
    assert_eq!(world.right.value(&m2, "mobile"), json!("06-222"));

    let next = world.run(RunOptions::default()).await;
    assert!(next.stats.right.read >= 1, "m2 is read again: {next:#?}");
    assert_eq!(world.left.value("m2", "mobile"), json!("06-222"), "the edit made meanwhile reached the left");

    // Once every row is fieldsync's own and clean, the cursor passes them all.
    let quiet = world.run(RunOptions::default()).await;
    assert_eq!((quiet.stats.right.read, quiet.stats.writes_done), (0, 0), "{quiet:#?}");
}

/// The id the feed side gave member `key`.
fn doc_of(world: &World, key: &str) -> String {
    let records = world.right.records();
    let (id, _) = records.iter().find(|(_, record)| record.fields["id"] == json!(key)).expect("the member");
    id.to_string()
}

#[tokio::test]
async fn a_change_feed_is_read_from_the_sequence_its_last_listing_reached() {
    let mut world = synced_to_a_feed().await;
    let sequence = world.store.cursor("members", Side::Right).unwrap().sequence;
    assert!(sequence.is_some(), "the feed's sequence is kept");

    // Nothing changed: the feed serves nothing, and nothing is written.
    let served = world.right.records_served();
    let quiet = world.run(RunOptions::default()).await;
    assert_eq!((quiet.stats.right.mode, quiet.stats.right.read), (ReadMode::Incremental, 0));
    assert_eq!((world.right.records_served(), quiet.stats.writes_done), (served, 0));

    // One document edited on the feed side: only it is read, and its edit reaches the left.
    world.right.set_now(at(100));
    world.right.edit(&doc_of(&world, "m4"), "email", json!("m4.new@example.nl"));
    let edited = world.run(RunOptions::default()).await;
    assert_eq!((edited.stats.right.mode, edited.stats.right.read), (ReadMode::Incremental, 1));
    assert_eq!(world.left.value("m4", "email"), json!("m4.new@example.nl"));
    assert_ne!(world.store.cursor("members", Side::Right).unwrap().sequence, sequence);
}

#[tokio::test]
async fn a_change_feeds_delete_names_only_an_id_and_deletes_the_record_without_a_full_read() {
    let mut world = synced_to_a_feed().await;
    world.right.remove(&doc_of(&world, "m7"));
    // A document fieldsync never paired, removed too: nothing to delete for it.
    world.right.edit("stranger", "email", json!("someone@example.nl"));
    world.right.remove("stranger");

    let report = world.run(RunOptions::default()).await;
    assert_eq!(report.stats.right.mode, ReadMode::Incremental, "no full read was needed");
    assert_eq!(report.status, RunStatus::Done, "{:?}", report.problems);
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.stats.left.deletes_planned, 1);
    assert!(world.left.record("m7").is_none(), "the delete propagated to the left");
    assert!(world.left.record("m6").is_some());
    let quiet = world.run(RunOptions::default()).await;
    assert_eq!((quiet.stats.writes_done, quiet.stats.right.read), (0, 0));
}

#[tokio::test]
async fn a_run_that_fails_keeps_the_sequence_it_started_from() {
    let mut world = synced_to_a_feed().await;
    let before = world.store.cursor("members", Side::Right).unwrap();
    world.right.edit(&doc_of(&world, "m3"), "mobile", json!("06-33"));
    // Down for every try of the read.
    for _ in 0..3 {
        world.right.inject(MemoryFault::ReadUnavailable);
    }
    assert!(world.try_run(RunOptions::default()).await.is_err(), "the read failed");
    assert_eq!(world.store.cursor("members", Side::Right).unwrap(), before, "the cursor did not move");
    let next = world.run(RunOptions::default()).await;
    assert_eq!((next.stats.right.mode, next.stats.right.read), (ReadMode::Incremental, 1));
    assert_eq!(world.left.value("m3", "mobile"), json!("06-33"));
}

#[tokio::test]
async fn a_delivery_only_if_due_records_no_run_when_another_delivered_what_was_due() {
    let spec = link_spec("id", &[("email", FieldType::Email)], ConflictStrategy::Review);
    let mut world = World::new(spec, Time::Fake { start: at(0), systems_follow: true });
    world.left.edit("m2", "email", json!("m2@example.nl"));
    world.run(RunOptions::default()).await;
    world.left.edit("m2", "email", json!("m2.new@example.nl"));
    world.right.inject(MemoryFault::WriteUnavailable);
    // Forced past the guard, which a change to the one member of the link would stop.
    let failed = world.run(RunOptions { force: true, ..Default::default() }).await;
    assert_eq!(failed.status, RunStatus::Partial);
    let runs = world.store.list_runs(Some("members"), 100).unwrap().len();
    let due = RunOptions { deliver_only: true, only_if_due: true, ..Default::default() };

    // Not due yet (its retry waits out a backoff): nothing to deliver, no run recorded.
    let error = world.try_run(due).await.expect_err("nothing is due");
    assert!(matches!(error, fieldsync_engine::EngineError::NothingDue { .. }), "{error}");
    assert_eq!(world.store.list_runs(Some("members"), 100).unwrap().len(), runs);

    // Due: delivered.
    world.clock.set(world.outbox()[0].next_attempt_at);
    let delivered = world.run(due).await;
    assert_eq!((delivered.status, delivered.stats.writes_done), (RunStatus::Done, 1));
    assert_eq!(world.right.value("m2", "email"), json!("m2.new@example.nl"));
    assert!(world.try_run(due).await.is_err(), "delivered: nothing is due any more");
    assert_eq!(world.store.list_runs(Some("members"), 100).unwrap().len(), runs + 1);
}

/// Under `audit.values = "hashed"` every audit entry a run stores keeps the digest of each value
/// (the same value of a field always the same digest), under `none` no value at all; under both
/// the reasons that quoted a value (a person's typed value, a value that cannot be read, a
/// target's refusal) quote none. The values reach the other side all the same.
#[tokio::test]
async fn the_history_keeps_digests_or_nothing_of_values_as_the_link_says() {
    use fieldsync_store::{AuditValues, value_digest};
    for policy in [AuditValues::Hashed, AuditValues::None] {
        let mut world = world(ConflictStrategy::Review);
        world.spec.audit = policy;
        let mut world = world.seeded().await;
        world.set_time(at(100));
        world.left.edit("m1", "email", json!("anna.devries@example.nl"));
        world.left.edit("m2", "mobile", json!("06-left"));
        world.right.edit("m2", "mobile", json!("06-right"));
        world.right.edit("m3", "email", json!(["not", "an", "address"]));
        world.left.edit("m4", "email", json!("bad@club.nl"));
        world.right.inject(MemoryFault::RejectValue(json!("bad@club.nl")));
        let mut reports = vec![world.run(RunOptions::default()).await];
        assert_eq!(world.right.value("m1", "email"), json!("anna.devries@example.nl"));
        let review = world.reviews(Some(ReviewStatus::Open))[0].id;
        decide(&mut world, review, Decision::Value(Value::from("06-person")), at(200));
        reports.push(world.run(RunOptions::default()).await);
        assert_eq!(world.left.value("m2", "mobile"), json!("06-person"));

        let audit: Vec<AuditEntry> = reports.iter().flat_map(|report| world.audit(report)).collect();
        assert!(audit.len() > 10, "{audit:#?}");
        for entry in &audit {
            assert_eq!(entry.values, policy, "{entry:#?}");
            let values = [&entry.base, &entry.left, &entry.right, &entry.value];
            match policy {
                AuditValues::Hashed => assert!(
                    values.iter().all(|value| match value {
                        Some(Value::Text(text)) => text.starts_with("sha256:") && text.len() == 39,
                        Some(_) => false,
                        None => true,
                    }),
                    "{entry:#?}"
                ),
                _ => assert!(values.iter().all(|value| value.is_none()), "{entry:#?}"),
            }
            let text = format!("{entry:?}");
            for clear in ["anna.devries", "06-left", "06-right", "06-person", "bad@club.nl", "\"an\""] {
                assert!(!text.contains(clear), "{clear} in {entry:#?}");
            }
        }
        let event = |event: AuditEvent, key: &str| {
            audit.iter().find(|entry| entry.event == event && entry.key.as_str() == key).expect("an entry")
        };
        assert_eq!(
            event(AuditEvent::Invalid, "m3").reason,
            "right value is not a valid email; the field is left as it is"
        );
        assert!(event(AuditEvent::Failed, "m4").reason.starts_with("failed for good; "));
        let decided = audit
            .iter()
            .find(|entry| entry.key.as_str() == "m2" && entry.reason.starts_with("decided in review: use "))
            .expect("the decision applied");
        if policy == AuditValues::Hashed {
            let digest = |field: &str, text: &str| {
                Some(Value::from(value_digest("members", field, &Value::from(text)).as_str()))
            };
            let written = event(AuditEvent::Written, "m1");
            assert_eq!(written.value, digest("email", "anna.devries@example.nl"));
            assert_eq!(event(AuditEvent::Resolved, "m1").value, written.value, "one value, one digest");
            assert_eq!(decided.value, digest("mobile", "06-person"));
            assert_eq!(
                decided.reason,
                format!(
                    "decided in review: use {}",
                    value_digest("members", "mobile", &Value::from("06-person"))
                )
            );
        } else {
            assert_eq!(decided.reason, "decided in review: use a value a person gave");
        }
    }
}
