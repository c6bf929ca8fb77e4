//! The conformance suite every state store passes, written against `StateStore`'s use cases
//! only: one `pub fn` per property (baselines and layouts, paging in key order under the
//! collation contract, cursors, the outbox lifecycle, reviews, audit, runs, leases and lost
//! ones, concurrent writers, what each commit of a run writes), `run_all`, and
//! `conformance_tests!`, which makes one `#[test]` of each. A failed property panics.

use std::collections::HashMap;

use fieldsync_model::{RecordId, RecordKey, RunId, Side, Value};
use jiff::Timestamp;
use serde_json::json;

use crate::{
    AuditEntry, AuditEvent, AuditValues, Baseline, BaselineField, BaselineWrite, BatchClose, CursorState,
    Decision, EntryOutcome, Lease, LinkLayout, NamedRecords, NewOutboxEntry, NewReview, NewWebhook,
    Operation, Origin, OutboxId, OutboxStatus, PlanChunk, PlanPublication, ReviewId, ReviewKind,
    ReviewStatus, RunEnd, RunStatus, SeenDigest, SendId, StateStore, StoreError,
};

/// Makes the stores the suite runs against.
pub trait Fixture {
    /// The store under test.
    type Store: StateStore;

    /// Opens a new handle on this fixture's store, which starts empty; every handle of one
    /// fixture sees the same data (as after reopening, or as another process would).
    fn open(&self) -> Self::Store;
}

/// A fixture for a store kept in files: a fresh temporary directory, and `open` with the path
/// of the store's file in it (which need not exist yet). Every `open` is a new handle on it.
pub struct FileFixture<S> {
    dir: tempfile::TempDir,
    open: fn(&std::path::Path) -> S,
}

impl<S> FileFixture<S> {
    /// A fixture whose handles `open` makes from the store file's path.
    ///
    /// # Panics
    ///
    /// When no temporary directory can be made.
    pub fn new(open: fn(&std::path::Path) -> S) -> Self {
        Self { dir: tempfile::tempdir().expect("a temporary directory"), open }
    }

    /// The store's file.
    pub fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("state.db")
    }
}

impl<S: StateStore> Fixture for FileFixture<S> {
    type Store = S;

    fn open(&self) -> S {
        (self.open)(&self.path())
    }
}

/// Runs every property, each against a fresh fixture from `new`.
pub fn run_all<F: Fixture>(new: impl Fn() -> F)
where
    F::Store: Send,
{
    keys_page_in_byte_order_whatever_the_collation(&new());
    concurrent_writers_lose_nothing(&new());
    a_lease_excludes_other_holders_until_released(&new());
    a_commit_under_a_lost_lease_fails_and_keeps_nothing(&new());
    baselines_round_trip_exactly_with_their_digests(&new());
    many_keys_are_read_across_chunks(&new());
    digests_are_paged_in_key_order(&new());
    a_baseline_is_read_onto_another_layout_by_field_name(&new());
    cursors_default_and_round_trip(&new());
    keys_are_found_by_their_ids_on_either_side(&new());
    a_sequence_moves_only_from_where_it_stands(&new());
    outbox_lifecycle(&new());
    an_unpublished_plan_is_discarded_by_the_next_run_of_its_link(&new());
    a_send_marks_its_entries_and_a_crashed_one_is_counted_by_the_next_run(&new());
    due_outbox_is_oldest_first_and_limited(&new());
    open_outbox_and_counts_by_status(&new());
    review_lifecycle(&new());
    live_reviews_are_per_field_and_exclude_closed_ones(&new());
    audit_entries_round_trip_per_run_and_per_record(&new());
    runs_are_recorded_and_listed_newest_first(&new());
    a_run_commits_its_plan_in_chunks_and_publishes_it_at_once(&new());
    a_delivered_batch_closes_with_its_baselines_digests_and_attempts(&new());
    a_person_decides_reviews_and_settles_dead_entries(&new());
    webhooks_wait_until_a_run_reads_them_and_a_replay_is_refused(&new());
    waiting_webhooks_name_the_records_a_targeted_run_reads(&new());
    a_renewed_lease_outlives_its_ttl_and_a_lost_one_cannot_be_renewed(&new());
    leases_under_a_limit_leave_no_place_beyond_it(&new());
    a_run_that_never_ended_is_recorded_as_abandoned_by_the_next(&new());
    history_older_than_a_time_is_purged_but_what_fieldsync_needs_stays(&new());
    an_erased_record_leaves_no_row_but_an_audit_of_its_digest(&new());
}

/// Declares one `#[test]` per property of the suite, each against a fresh fixture made by
/// `$new` (an expression). With `optional $new`, `$new` gives an `Option` of a fixture, and a
/// test given `None` (a server the machine lacks, which the expression said loudly) ends at once.
#[macro_export]
macro_rules! conformance_tests {
    (optional $new:expr) => {
        $crate::conformance_tests!(@names [optional] $new);
    };
    ($new:expr) => {
        $crate::conformance_tests!(@names [] $new);
    };
    (@names [$($optional:ident)?] $new:expr) => {
        $crate::conformance_tests!(@each [$($optional)?] $new;
            keys_page_in_byte_order_whatever_the_collation,
            concurrent_writers_lose_nothing,
            a_lease_excludes_other_holders_until_released,
            a_commit_under_a_lost_lease_fails_and_keeps_nothing,
            baselines_round_trip_exactly_with_their_digests,
            many_keys_are_read_across_chunks,
            digests_are_paged_in_key_order,
            a_baseline_is_read_onto_another_layout_by_field_name,
            cursors_default_and_round_trip,
            keys_are_found_by_their_ids_on_either_side,
            a_sequence_moves_only_from_where_it_stands,
            outbox_lifecycle,
            an_unpublished_plan_is_discarded_by_the_next_run_of_its_link,
            a_send_marks_its_entries_and_a_crashed_one_is_counted_by_the_next_run,
            due_outbox_is_oldest_first_and_limited,
            open_outbox_and_counts_by_status,
            review_lifecycle,
            live_reviews_are_per_field_and_exclude_closed_ones,
            audit_entries_round_trip_per_run_and_per_record,
            runs_are_recorded_and_listed_newest_first,
            a_run_commits_its_plan_in_chunks_and_publishes_it_at_once,
            a_delivered_batch_closes_with_its_baselines_digests_and_attempts,
            a_person_decides_reviews_and_settles_dead_entries,
            webhooks_wait_until_a_run_reads_them_and_a_replay_is_refused,
            waiting_webhooks_name_the_records_a_targeted_run_reads,
            a_renewed_lease_outlives_its_ttl_and_a_lost_one_cannot_be_renewed,
            leases_under_a_limit_leave_no_place_beyond_it,
            a_run_that_never_ended_is_recorded_as_abandoned_by_the_next,
            history_older_than_a_time_is_purged_but_what_fieldsync_needs_stays,
            an_erased_record_leaves_no_row_but_an_audit_of_its_digest
        );
    };
    (@each [] $new:expr; $($name:ident),+ $(,)?) => {
        $(
            #[test]
            fn $name() {
                $crate::testkit::$name(&$new);
            }
        )+
    };
    (@each [optional] $new:expr; $($name:ident),+ $(,)?) => {
        $(
            #[test]
            fn $name() {
                if let Some(fixture) = $new {
                    $crate::testkit::$name(&fixture);
                }
            }
        )+
    };
}

/// The link the suite's properties write.
pub const LINK: &str = "members";

/// A timestamp with whole milliseconds (the store keeps milliseconds).
pub fn ts(ms: i64) -> Timestamp {
    Timestamp::from_millisecond(ms).expect("valid timestamp")
}

/// The suite's first moment, in milliseconds.
pub const T0: i64 = 1_700_000_000_000;

/// A record key.
pub fn key(text: &str) -> RecordKey {
    RecordKey::new(text)
}

/// Field names.
pub fn names(fields: &[&str]) -> Vec<String> {
    fields.iter().map(|name| name.to_string()).collect()
}

/// Registers `fields` as the layout of `LINK`.
pub fn layout<S: StateStore>(store: &mut S, fields: &[&str]) -> LinkLayout {
    store.layout(LINK, &names(fields)).expect("register layout")
}

/// A baseline field: its value, its change times on each side (milliseconds) and origin.
pub fn field(
    value: Option<Value>,
    left: Option<i64>,
    right: Option<i64>,
    origin: Option<Origin>,
) -> BaselineField {
    BaselineField { value, left_changed: left.map(ts), right_changed: right.map(ts), origin }
}

/// How long the suite's leases last.
const MINUTE: std::time::Duration = std::time::Duration::from_secs(60);

/// Takes the lease of `link` for the suite.
pub fn lease_of<S: StateStore>(store: &mut S, link: &str) -> Lease {
    store.lease(link, "testkit", MINUTE).expect("lease the link")
}

/// A handle on `fixture`'s store with `fields` registered as the layout of `LINK`, which it
/// leases.
fn leased<F: Fixture>(fixture: &F, fields: &[&str]) -> (F::Store, LinkLayout, Lease) {
    let mut store = fixture.open();
    let fields = layout(&mut store, fields);
    let lease = lease_of(&mut store, LINK);
    (store, fields, lease)
}

/// Writes and forgets baselines of `link` in one commit, under a lease of its own: a delivered
/// batch that moves baselines only.
pub fn commit_baselines<S: StateStore>(
    store: &mut S,
    link: &str,
    layout: &LinkLayout,
    baselines: Vec<BaselineWrite>,
) {
    let lease = lease_of(store, link);
    let batch = BatchClose { baselines, ..BatchClose::default() };
    store.close_batch(&lease, layout, batch, ts(T0)).expect("close a batch of baselines");
    store.release(lease).expect("release the lease");
}

/// Writes `baselines` of `LINK` in one commit.
pub fn put<S: StateStore>(store: &mut S, layout: &LinkLayout, baselines: &[&Baseline]) {
    let writes = baselines.iter().map(|baseline| BaselineWrite::Put((*baseline).clone())).collect();
    commit_baselines(store, LINK, layout, writes);
}

/// Starts a run of `lease`'s link at `at` (its plan published from the start when
/// `published`, as a run that only delivers is) and commits `chunk` as its plan.
fn planned<S: StateStore>(
    store: &mut S,
    lease: &Lease,
    layout: &LinkLayout,
    published: bool,
    chunk: PlanChunk,
    at: i64,
) -> RunId {
    let run = store.start_run(lease, "incremental", published, ts(at)).expect("start a run");
    store.commit_plan_chunk(lease, run, layout, chunk, ts(at)).expect("commit a chunk of the plan");
    run
}

/// A chunk of a plan that writes `entries` only.
fn writes(entries: Vec<NewOutboxEntry>) -> PlanChunk {
    PlanChunk { entries, ..PlanChunk::default() }
}

/// The ids of the `count` newest outbox entries of every link, oldest first.
fn newest_ids<S: StateStore>(store: &S, count: usize) -> Vec<OutboxId> {
    let mut newest = ids(&store.list_outbox(None, None, count).expect("list the outbox"));
    newest.reverse();
    newest
}

/// How an entry's attempt ends, for a `BatchClose`.
fn outcome(
    id: OutboxId,
    status: OutboxStatus,
    next: Option<i64>,
    error: Option<&str>,
    attempted: bool,
) -> EntryOutcome {
    EntryOutcome { id, status, next_attempt_at: next.map(ts), error: error.map(str::to_string), attempted }
}

/// Closes a batch of `lease`'s link that only sets `outcomes`, ending `send` when given.
fn settle<S: StateStore>(
    store: &mut S,
    lease: &Lease,
    layout: &LinkLayout,
    send: Option<SendId>,
    outcomes: Vec<EntryOutcome>,
    at: i64,
) {
    let batch = BatchClose { send, outcomes, ..BatchClose::default() };
    store.close_batch(lease, layout, batch, ts(at)).expect("close a batch");
}

// ---------------------------------------------------------------------------------------------
// Baselines and layouts.

fn rich_baseline() -> Baseline {
    Baseline {
        key: key("member-1"),
        left_id: Some(RecordId::new("L-17")),
        right_id: Some(RecordId::new("wp:42")),
        fields: vec![
            field(Some(Value::from("Ada \"Lovelace\" — ünïcode")), Some(T0 + 1), None, Some(Origin::Left)),
            field(Some(Value::Int(-42)), None, Some(T0 + 2), Some(Origin::Right)),
            field(Some(Value::Int(i64::MAX)), Some(T0 + 3), Some(T0 + 4), Some(Origin::Both)),
            field(Some(Value::Int(i64::MIN)), None, None, None),
            field(Some(Value::Bool(true)), None, None, Some(Origin::Person)),
            field(Some(Value::Bool(false)), Some(T0), Some(T0), Some(Origin::Both)),
            field(Some(Value::Null), Some(T0 + 5), None, Some(Origin::Both)),
            field(Some(Value::from("")), None, None, Some(Origin::Left)),
            // Text that looks like the store's marker for "no value", or like other types.
            field(Some(Value::from("{}")), None, None, None),
            field(Some(Value::from("null")), None, None, None),
            field(Some(Value::from("7")), None, None, None),
            // No agreed value, but known change times.
            field(None, Some(T0 + 6), Some(T0 + 7), None),
            BaselineField::default(),
        ],
        tombstone: None,
    }
}

const RICH_FIELDS: &[&str] =
    &["f0", "f1", "f2", "f3", "f4", "f5", "f6", "f7", "f8", "f9", "f10", "f11", "f12"];

/// Baselines round trip exactly with their digests.
pub fn baselines_round_trip_exactly_with_their_digests<F: Fixture>(fixture: &F) {
    let mut store = fixture.open();
    let fields = layout(&mut store, RICH_FIELDS);
    let rich = rich_baseline();
    assert_eq!(rich.fields.len(), RICH_FIELDS.len());
    // Its right id is its link key, which a digest entry does not keep twice.
    let tombstoned = Baseline {
        left_id: Some(RecordId::new("L-18")),
        right_id: Some(RecordId::new("member-2")),
        tombstone: Some(Side::Right),
        ..Baseline::empty(key("member-2"), RICH_FIELDS.len())
    };
    let mut left_tombstone = rich_baseline();
    left_tombstone.key = key("member-3");
    left_tombstone.left_id = None;
    left_tombstone.tombstone = Some(Side::Left);

    put(&mut store, &fields, &[&rich, &tombstoned, &left_tombstone]);

    let keys = [rich.key.clone(), tombstoned.key.clone(), left_tombstone.key.clone(), key("absent")];
    let read = store.baselines(LINK, &fields, &keys).unwrap();
    assert_eq!(read.len(), 3, "absent keys have no baseline");
    assert_eq!(read[&rich.key], rich);
    assert_eq!(read[&tombstoned.key], tombstoned);
    assert_eq!(read[&left_tombstone.key], left_tombstone);

    let all = store.all_digests(LINK, &fields).unwrap();
    assert_eq!(all.len(), 3);
    for baseline in [&rich, &tombstoned, &left_tombstone] {
        let entry = &all[&baseline.key];
        assert_eq!(entry.digest, Some(baseline.digest()), "digest of {}", baseline.key);
        assert_eq!(entry.id(Side::Left, &baseline.key), baseline.left_id);
        assert_eq!(entry.id(Side::Right, &baseline.key), baseline.right_id);
        assert_eq!(entry.tombstone, baseline.tombstone);
    }
    let some = store.digests(LINK, &fields, &[rich.key.clone(), key("absent")]).unwrap();
    assert_eq!(some.len(), 1);
    assert_eq!(some[&rich.key], all[&rich.key]);

    // Tombstones are not counted; another link sees nothing.
    assert_eq!(store.baseline_count(LINK).unwrap(), 1);
    assert_eq!(store.baseline_count("other").unwrap(), 0);
    assert!(store.all_digests("other", &fields).unwrap().is_empty());
    assert!(store.baselines("other", &fields, &keys).unwrap().is_empty());

    // Replacing and deleting.
    let mut changed = rich.clone();
    changed.fields[0].value = Some(Value::from("Grace"));
    changed.right_id = None;
    let writes = vec![BaselineWrite::Put(changed.clone()), BaselineWrite::Forget(tombstoned.key.clone())];
    commit_baselines(&mut store, LINK, &fields, writes);
    let read = store.baselines(LINK, &fields, &keys).unwrap();
    assert_eq!(read.len(), 2);
    assert_eq!(read[&rich.key], changed);
    assert_ne!(changed.digest(), rich.digest());
    assert_eq!(
        store.digests(LINK, &fields, std::slice::from_ref(&rich.key)).unwrap()[&rich.key].digest,
        Some(changed.digest())
    );
}

/// Many keys are read across chunks.
pub fn many_keys_are_read_across_chunks<F: Fixture>(fixture: &F) {
    let mut store = fixture.open();
    let fields = layout(&mut store, &["n"]);
    let baselines: Vec<Baseline> = (0..1_234)
        .map(|index| Baseline {
            fields: vec![field(Some(Value::Int(index)), None, None, Some(Origin::Both))],
            ..Baseline::empty(key(&format!("k{index}")), 1)
        })
        .collect();
    put(&mut store, &fields, &baselines.iter().collect::<Vec<_>>());
    let keys: Vec<RecordKey> = baselines.iter().map(|baseline| baseline.key.clone()).collect();
    let read = store.baselines(LINK, &fields, &keys).unwrap();
    assert_eq!(read.len(), baselines.len());
    let digests = store.digests(LINK, &fields, &keys).unwrap();
    assert_eq!(digests.len(), baselines.len());
    for baseline in &baselines {
        assert_eq!(&read[&baseline.key], baseline);
        assert_eq!(digests[&baseline.key].digest, Some(baseline.digest()));
    }
}

/// Digests are paged in key order.
pub fn digests_are_paged_in_key_order<F: Fixture>(fixture: &F) {
    let mut store = fixture.open();
    let fields = layout(&mut store, &["n"]);
    // Inserted out of order; "k10" sorts before "k9" byte by byte.
    let baselines: Vec<Baseline> = [9, 10, 1, 100, 2, 5]
        .into_iter()
        .map(|index| Baseline {
            fields: vec![field(Some(Value::Int(index)), None, None, Some(Origin::Both))],
            ..Baseline::empty(key(&format!("k{index}")), 1)
        })
        .collect();
    put(&mut store, &fields, &baselines.iter().collect::<Vec<_>>());
    let mut pages = Vec::new();
    let mut after = None;
    loop {
        let mut page = Vec::new();
        let last = store
            .digest_page(LINK, &fields, after.as_ref(), 4, |key, entry| {
                page.push((key.to_string(), entry.digest))
            })
            .unwrap();
        let Some(last) = last else { break };
        assert_eq!(Some(last.as_str()), page.last().map(|(key, _)| key.as_str()));
        pages.push(page);
        after = Some(last);
    }
    let keys: Vec<Vec<&str>> =
        pages.iter().map(|page| page.iter().map(|(key, _)| key.as_str()).collect()).collect();
    assert_eq!(keys, [vec!["k1", "k10", "k100", "k2"], vec!["k5", "k9"]]);
    for (key, digest) in pages.iter().flatten() {
        let baseline = baselines.iter().find(|baseline| baseline.key.as_str() == key).unwrap();
        assert_eq!(*digest, Some(baseline.digest()));
    }
    assert!(store.digest_page("other", &fields, None, 4, |_, _| panic!("another link's")).unwrap().is_none());
}

/// A baseline is read onto another layout by field name.
pub fn a_baseline_is_read_onto_another_layout_by_field_name<F: Fixture>(fixture: &F) {
    let mut store = fixture.open();
    let abc = layout(&mut store, &["a", "b", "c"]);
    let a = field(Some(Value::from("alpha")), Some(T0 + 1), None, Some(Origin::Left));
    let b = field(Some(Value::Int(2)), None, Some(T0 + 2), Some(Origin::Right));
    let c = field(Some(Value::Bool(true)), Some(T0 + 3), Some(T0 + 4), Some(Origin::Both));
    let old = Baseline {
        key: key("k1"),
        left_id: Some(RecordId::new("l1")),
        right_id: Some(RecordId::new("r1")),
        fields: vec![a.clone(), b, c.clone()],
        tombstone: Some(Side::Left),
    };
    put(&mut store, &abc, &[&old]);

    let cad = layout(&mut store, &["c", "a", "d"]);
    assert_ne!(cad.id, abc.id);
    assert_eq!(cad.fields, names(&["c", "a", "d"]));

    let read = store.baselines(LINK, &cad, &[key("k1")]).unwrap();
    let mapped = &read[&key("k1")];
    assert_eq!(mapped.fields, vec![c.clone(), a.clone(), BaselineField::default()]);
    assert_eq!(mapped.left_id, old.left_id);
    assert_eq!(mapped.right_id, old.right_id);
    assert_eq!(mapped.tombstone, old.tombstone);
    assert_eq!(mapped.fields[2].value, None, "the new field has no agreed value");

    // Written with another layout: no digest, so the engine compares the record in full;
    // ids and tombstone are still given.
    for digests in [store.digests(LINK, &cad, &[key("k1")]).unwrap(), store.all_digests(LINK, &cad).unwrap()]
    {
        let entry = &digests[&key("k1")];
        assert_eq!(entry.digest, None);
        assert_eq!(entry.id(Side::Left, &key("k1")), old.left_id);
        assert_eq!(entry.id(Side::Right, &key("k1")), old.right_id);
        assert_eq!(entry.tombstone, old.tombstone);
    }

    // Registering the old field list again gives the old layout back, and its digest.
    let abc_again = layout(&mut store, &["a", "b", "c"]);
    assert_eq!(abc_again.id, abc.id);
    assert_eq!(store.baselines(LINK, &abc_again, &[key("k1")]).unwrap()[&key("k1")], old);
    assert_eq!(store.digests(LINK, &abc_again, &[key("k1")]).unwrap()[&key("k1")].digest, Some(old.digest()));

    // Rewritten with the new layout, it has a digest there (and none under the old one).
    let mut new = mapped.clone();
    new.fields[2] = field(Some(Value::from("delta")), None, None, Some(Origin::Both));
    put(&mut store, &cad, &[&new]);
    assert_eq!(store.digests(LINK, &cad, &[key("k1")]).unwrap()[&key("k1")].digest, Some(new.digest()));
    assert_eq!(store.digests(LINK, &abc, &[key("k1")]).unwrap()[&key("k1")].digest, None);
    let back = &store.baselines(LINK, &abc, &[key("k1")]).unwrap()[&key("k1")];
    assert_eq!(back.fields, vec![a, BaselineField::default(), c]);

    // Layouts belong to their link.
    let other = store.layout("other", &names(&["a", "b", "c"])).unwrap();
    assert_ne!(other.id, abc.id);
}

// ---------------------------------------------------------------------------------------------
// Cursors.

/// Cursors default and round trip.
pub fn cursors_default_and_round_trip<F: Fixture>(fixture: &F) {
    let mut store = fixture.open();
    assert_eq!(store.cursor(LINK, Side::Left).unwrap(), CursorState::default());
    assert_eq!(
        store.cursor(LINK, Side::Right).unwrap(),
        CursorState { cursor: None, last_full_scan: None, sequence: None }
    );

    let left =
        CursorState { cursor: Some(ts(T0 + 123)), last_full_scan: Some(ts(T0 - 1_000)), sequence: None };
    // A change feed's sequence as CouchDB spells one: kept to the byte.
    let sequence = "1042-g1AAAAFTeJzLYWBg4MhgTmHgz8tPSTV0MDQ3MjA0MjAzBgA2Kgqc";
    let right = CursorState { cursor: None, last_full_scan: None, sequence: Some(sequence.into()) };
    publish_cursors(&mut store, vec![(Side::Left, left.clone()), (Side::Right, right.clone())]);
    assert_eq!(store.cursor(LINK, Side::Left).unwrap(), left);
    assert_eq!(store.cursor(LINK, Side::Right).unwrap(), right);
    assert_eq!(store.cursor("other", Side::Left).unwrap(), CursorState::default());

    // Overwritten, and kept across a reopen.
    let later = CursorState {
        cursor: Some(ts(T0 + 9_999)),
        last_full_scan: Some(ts(T0 + 9_000)),
        sequence: Some("7".into()),
    };
    publish_cursors(&mut store, vec![(Side::Left, later.clone())]);
    drop(store);
    let store = fixture.open();
    assert_eq!(store.cursor(LINK, Side::Left).unwrap(), later);
    assert_eq!(store.cursor(LINK, Side::Right).unwrap(), right);
}

/// A change feed's sequence moves past the link's own writes only from where it stands, only
/// under the link's lease, and leaves the rest of the cursor and the other side as they were.
pub fn a_sequence_moves_only_from_where_it_stands<F: Fixture>(fixture: &F) {
    let mut store = fixture.open();
    let right = CursorState { cursor: None, last_full_scan: Some(ts(T0)), sequence: Some("12".into()) };
    let left = CursorState { cursor: Some(ts(T0 + 5)), last_full_scan: None, sequence: Some("12".into()) };
    publish_cursors(&mut store, vec![(Side::Left, left.clone()), (Side::Right, right.clone())]);

    let lease = lease_of(&mut store, LINK);
    assert!(!store.move_sequence(&lease, Side::Right, "11", "20").unwrap(), "it stands at 12, not 11");
    assert_eq!(store.cursor(LINK, Side::Right).unwrap(), right);
    assert!(store.move_sequence(&lease, Side::Right, "12", "20").unwrap());
    let moved = CursorState { sequence: Some("20".into()), ..right };
    assert_eq!(store.cursor(LINK, Side::Right).unwrap(), moved);
    assert_eq!(store.cursor(LINK, Side::Left).unwrap(), left, "the other side's stays");
    store.release(lease).unwrap();

    // Under a lease that is not the holder's, nothing moves.
    let held = lease_of(&mut store, LINK);
    let other = Lease::new(&held.link, &held.owner, held.token + 1, held.expires_at, held.ttl, None);
    assert!(store.move_sequence(&other, Side::Right, "20", "30").is_err(), "a lease not held");
    store.release(held).unwrap();
    assert_eq!(store.cursor(LINK, Side::Right).unwrap(), moved);
}

/// Runs `LINK` once under a lease of its own: a run whose plan publishes `cursors` only.
/// Keys are found by their ids on either side.
pub fn keys_are_found_by_their_ids_on_either_side<F: Fixture>(fixture: &F) {
    let mut store = fixture.open();
    let fields = layout(&mut store, &["n"]);
    // Enough to span chunks of a look-up; every third has no right id yet.
    let baselines: Vec<Baseline> = (0..1_234)
        .map(|index| Baseline {
            left_id: Some(RecordId::new(format!("{index}"))),
            right_id: (index % 3 != 0).then(|| RecordId::new(format!("doc-{index:05}"))),
            ..Baseline::empty(key(&format!("KNVB{index:07}")), 1)
        })
        .collect();
    put(&mut store, &fields, &baselines.iter().collect::<Vec<_>>());

    let ids: Vec<RecordId> = (0..1_234).map(|index| RecordId::new(format!("doc-{index:05}"))).collect();
    let found = store.keys_of_ids(LINK, Side::Right, &ids).unwrap();
    assert_eq!(found.len(), 1_234 - 1_234_usize.div_ceil(3), "ids no baseline holds are absent");
    assert_eq!(found[&RecordId::new("doc-00001")], key("KNVB0000001"));
    assert!(!found.contains_key(&RecordId::new("doc-00003")));
    // An id is looked up on its own side only, and in its own link only.
    let left =
        store.keys_of_ids(LINK, Side::Left, &[RecordId::new("17"), RecordId::new("doc-00017")]).unwrap();
    assert_eq!(left, HashMap::from([(RecordId::new("17"), key("KNVB0000017"))]));
    assert!(store.keys_of_ids("other", Side::Left, &[RecordId::new("17")]).unwrap().is_empty());
    assert!(store.keys_of_ids(LINK, Side::Left, &[]).unwrap().is_empty());
}

fn publish_cursors<S: StateStore>(store: &mut S, cursors: Vec<(Side, CursorState)>) {
    let fields = layout(store, &["n"]);
    let lease = lease_of(store, LINK);
    let run = store.start_run(&lease, "incremental", false, ts(T0)).unwrap();
    let publication = PlanPublication { cursors, ..PlanPublication::default() };
    store.publish_plan(&lease, run, &fields, publication, ts(T0)).unwrap();
    store.release(lease).unwrap();
}

// ---------------------------------------------------------------------------------------------
// The outbox.

fn outbox_entry(record: &str, side: Side, operation: Operation) -> NewOutboxEntry {
    NewOutboxEntry {
        key: key(record),
        side,
        operation,
        record_id: (operation != Operation::Create).then(|| RecordId::new(format!("id-{record}"))),
        payload: json!({ "version": 1, "record": record }).to_string(),
        // Kept as given, whatever it says.
        source: (side == Side::Right).then(|| crate::SourceDigest {
            basis: fieldsync_model::digest_values([Some(&Value::from(record))]),
            raw: fieldsync_model::digest_raw(fieldsync_model::RecordDigest::new(7), 7, &[json!(record)]),
        }),
    }
}

fn ids(entries: &[crate::OutboxEntry]) -> Vec<i64> {
    entries.iter().map(|entry| entry.id).collect()
}

/// Outbox lifecycle: an entry is stored as planned, pending and due at once; an attempt that
/// a crash interrupted is counted by the link's next run and the entry stays due; a failure
/// puts it back for later, a permanent one makes it dead; a person retries or drops it.
pub fn outbox_lifecycle<F: Fixture>(fixture: &F) {
    let (mut store, fields, lease) = leased(fixture, &["n"]);
    let new = outbox_entry("k1", Side::Right, Operation::Update);
    let run = planned(&mut store, &lease, &fields, true, writes(vec![new.clone()]), T0);
    let [id] = <[i64; 1]>::try_from(newest_ids(&store, 1)).unwrap();

    // Stored as given, pending and due at once.
    let entry = store.outbox_entry(id).unwrap();
    assert_eq!(entry.id, id);
    assert_eq!(entry.link, LINK);
    assert_eq!(entry.run_id, run);
    assert_eq!(entry.write, new);
    assert!(entry.write.source.is_some());
    assert_eq!(entry.status, OutboxStatus::Pending);
    assert_eq!(entry.attempts, 0);
    assert_eq!(entry.next_attempt_at, ts(T0));
    assert_eq!(entry.last_error, None);
    assert_eq!(entry.created_at, ts(T0));
    assert_eq!(entry.updated_at, ts(T0));

    assert_eq!(store.due_outbox(LINK, ts(T0), 0, 10).unwrap(), vec![entry.clone()]);
    assert!(store.due_outbox(LINK, ts(T0 - 1), 0, 10).unwrap().is_empty(), "not due before its next attempt");
    assert!(store.due_outbox("other", ts(T0), 0, 10).unwrap().is_empty());
    assert_eq!(store.next_due(LINK).unwrap(), Some(ts(T0)));

    // An attempt starts and the process dies: the next run counts it, and a `sending` entry
    // is still due.
    store.start_send(&lease, vec![id], ts(T0 + 10)).unwrap();
    drop(store);
    let mut store = fixture.open();
    store.start_run(&lease, "incremental", true, ts(T0 + 10)).unwrap();
    let due = store.due_outbox(LINK, ts(T0 + 10), 0, 10).unwrap();
    assert_eq!(ids(&due), vec![id]);
    assert_eq!(due[0].status, OutboxStatus::Sending);
    assert_eq!(due[0].attempts, 1);
    assert_eq!(due[0].updated_at, ts(T0 + 10));
    assert_eq!(store.next_due(LINK).unwrap(), Some(ts(T0)));

    // It fails and is put back for later: hidden from due_outbox until then.
    let send = store.start_send(&lease, vec![id], ts(T0 + 20)).unwrap();
    let retry = outcome(id, OutboxStatus::Pending, Some(T0 + 60_000), Some("timeout"), true);
    settle(&mut store, &lease, &fields, Some(send), vec![retry], T0 + 21);
    let entry = store.outbox_entry(id).unwrap();
    assert_eq!(entry.status, OutboxStatus::Pending);
    assert_eq!(entry.attempts, 2);
    assert_eq!(entry.last_error.as_deref(), Some("timeout"));
    assert_eq!(entry.next_attempt_at, ts(T0 + 60_000));
    assert_eq!(entry.updated_at, ts(T0 + 21));
    assert!(store.due_outbox(LINK, ts(T0 + 59_999), 0, 10).unwrap().is_empty());
    assert_eq!(ids(&store.due_outbox(LINK, ts(T0 + 60_000), 0, 10).unwrap()), vec![id]);
    assert_eq!(store.next_due(LINK).unwrap(), Some(ts(T0 + 60_000)));

    // It fails for good.
    let dead = outcome(id, OutboxStatus::Dead, None, Some("rejected"), false);
    settle(&mut store, &lease, &fields, None, vec![dead], T0 + 60_001);
    let entry = store.outbox_entry(id).unwrap();
    assert_eq!(entry.status, OutboxStatus::Dead);
    assert_eq!(entry.attempts, 2, "an outcome with no attempt counts none");
    assert_eq!(entry.next_attempt_at, ts(T0 + 60_000), "no next attempt given: unchanged");
    assert_eq!(entry.last_error.as_deref(), Some("rejected"));
    assert!(store.due_outbox(LINK, ts(T0 + 1_000_000), 0, 10).unwrap().is_empty());
    assert_eq!(store.next_due(LINK).unwrap(), None);
    assert_eq!(ids(&store.open_outbox_for(LINK, &[key("k1")]).unwrap()), vec![id], "dead is still open");

    // Dropping needs a dead entry; retrying puts it back in line, due now, attempts reset.
    store.retry_dead(&[id], ts(T0 + 100_000)).unwrap();
    assert!(matches!(
        store.drop_dead(id, ts(T0 + 100_000)),
        Err(StoreError::NotFound { id: found, .. }) if found == id
    ));
    assert!(matches!(store.retry_dead(&[id], ts(T0 + 100_000)), Err(StoreError::NotFound { .. })));
    let entry = store.outbox_entry(id).unwrap();
    assert_eq!(entry.status, OutboxStatus::Pending);
    assert_eq!(entry.attempts, 0);
    assert_eq!(entry.next_attempt_at, ts(T0 + 100_000));
    assert_eq!(ids(&store.due_outbox(LINK, ts(T0 + 100_000), 0, 10).unwrap()), vec![id]);
    assert!(store.due_outbox(LINK, ts(T0 + 99_999), 0, 10).unwrap().is_empty());

    // Dead again, then dropped for good.
    settle(
        &mut store,
        &lease,
        &fields,
        None,
        vec![outcome(id, OutboxStatus::Dead, None, None, false)],
        T0 + 100_001,
    );
    store.drop_dead(id, ts(T0 + 100_002)).unwrap();
    assert!(matches!(store.drop_dead(id, ts(T0 + 100_003)), Err(StoreError::NotFound { .. })));
    assert!(matches!(store.retry_dead(&[id], ts(T0 + 100_003)), Err(StoreError::NotFound { .. })));
    assert!(matches!(store.drop_dead(424_242, ts(T0)), Err(StoreError::NotFound { id: 424_242, .. })));
    let entry = store.outbox_entry(id).unwrap();
    assert_eq!(entry.status, OutboxStatus::Dropped);
    assert_eq!(entry.last_error.as_deref(), Some("rejected"), "a missing error keeps the last one");
    assert!(store.open_outbox_for(LINK, &[key("k1")]).unwrap().is_empty());
    assert!(store.open_outbox_keys(LINK).unwrap().is_empty());
    assert!(store.due_outbox(LINK, ts(T0 + 1_000_000), 0, 10).unwrap().is_empty());
    assert!(matches!(store.outbox_entry(424_242), Err(StoreError::NotFound { id: 424_242, .. })));
    store.release(lease).unwrap();
}

/// A run writes its plan a chunk at a time and publishes it at the end. The writes, the
/// reviews it opened and the audit of a run that never published are discarded by the next
/// run of its link (not of another link); a published run's are kept, and so are reviews the
/// dead run only updated.
pub fn an_unpublished_plan_is_discarded_by_the_next_run_of_its_link<F: Fixture>(fixture: &F) {
    let (mut store, fields, lease) = leased(fixture, &["email"]);
    let others = lease_of(&mut store, "others");
    let earlier_plan = PlanChunk {
        entries: vec![outbox_entry("k0", Side::Right, Operation::Update)],
        reviews: vec![review("k0", Some("email"), 1, 2)],
        ..PlanChunk::default()
    };
    planned(&mut store, &lease, &fields, true, earlier_plan, T0);
    let [published] = <[i64; 1]>::try_from(newest_ids(&store, 1)).unwrap();
    let kept_review = ids_of(&store.live_reviews_for(LINK, &[key("k0")]).unwrap());

    let dead_plan = PlanChunk {
        entries: ["k1", "k2"].map(|record| outbox_entry(record, Side::Left, Operation::Update)).to_vec(),
        // Updating a review opened by a published run leaves it that run's.
        reviews: vec![review("k1", Some("email"), 3, 4), review("k0", Some("email"), 5, 6)],
        ..PlanChunk::default()
    };
    let dead = store.start_run(&lease, "incremental", false, ts(T0 + 10)).unwrap();
    let audit = vec![audit_entry(Some(dead), "k1", AuditEvent::Resolved, T0 + 10)];
    store.commit_plan_chunk(&lease, dead, &fields, PlanChunk { audit, ..dead_plan }, ts(T0 + 10)).unwrap();
    let other_plan = writes(vec![outbox_entry("k9", Side::Left, Operation::Update)]);
    planned(&mut store, &others, &fields, false, other_plan, T0 + 10);
    assert_eq!(store.due_outbox(LINK, ts(T0 + 20), 0, 10).unwrap().len(), 3);

    let next = store.start_run(&lease, "incremental", false, ts(T0 + 20)).unwrap();
    assert_eq!(ids(&store.due_outbox(LINK, ts(T0 + 20), 0, 10).unwrap()), vec![published]);
    assert_eq!(
        store.due_outbox("others", ts(T0 + 20), 0, 10).unwrap().len(),
        1,
        "another link's run is its own"
    );
    let live = store.live_reviews_for(LINK, &[key("k0"), key("k1")]).unwrap();
    assert_eq!(ids_of(&live), kept_review);
    assert!(store.audit_for_run(dead).unwrap().is_empty());

    // A guarded run discards its own plan at once; then nothing is left to discard.
    let guarded = writes(vec![outbox_entry("k3", Side::Left, Operation::Delete)]);
    store.commit_plan_chunk(&lease, next, &fields, guarded, ts(T0 + 20)).unwrap();
    assert_eq!(store.discard_plan(&lease, next).unwrap(), 1);
    assert_eq!(ids(&store.due_outbox(LINK, ts(T0 + 30), 0, 10).unwrap()), vec![published]);
    let last = store.start_run(&lease, "incremental", false, ts(T0 + 30)).unwrap();
    store.publish_plan(&lease, last, &fields, PlanPublication::default(), ts(T0 + 30)).unwrap();
    store.start_run(&lease, "incremental", false, ts(T0 + 40)).unwrap();
    assert_eq!(ids(&store.due_outbox(LINK, ts(T0 + 40), 0, 10).unwrap()), vec![published]);
    store.release(lease).unwrap();
    store.release(others).unwrap();
}

/// A batch being sent is marked at once: readers see its entries `sending` with the attempt
/// counted; closing the batch counts each attempt on its entry; a send a crash left open is
/// counted on each of its entries by the link's next run, which then sees them `sending`.
pub fn a_send_marks_its_entries_and_a_crashed_one_is_counted_by_the_next_run<F: Fixture>(fixture: &F) {
    let (mut store, fields, lease) = leased(fixture, &["n"]);
    let plan = ["k1", "k2"].map(|record| outbox_entry(record, Side::Right, Operation::Update)).to_vec();
    planned(&mut store, &lease, &fields, true, writes(plan), T0);
    let [first, second] = <[i64; 2]>::try_from(newest_ids(&store, 2)).unwrap();
    let send = store.start_send(&lease, vec![first, second], ts(T0 + 1)).unwrap();
    for id in [first, second] {
        let entry = store.outbox_entry(id).unwrap();
        assert_eq!((entry.status, entry.attempts), (OutboxStatus::Sending, 1), "entry {id} while sent");
    }
    // The first attempt closes: counted once, the send gone.
    let outcomes = vec![
        outcome(first, OutboxStatus::Done, None, None, true),
        outcome(second, OutboxStatus::Pending, Some(T0 + 60), Some("busy"), true),
    ];
    settle(&mut store, &lease, &fields, Some(send), outcomes, T0 + 2);
    let done = store.outbox_entry(first).unwrap();
    assert_eq!((done.status, done.attempts), (OutboxStatus::Done, 1));
    let waiting = store.outbox_entry(second).unwrap();
    assert_eq!(
        (waiting.status, waiting.attempts, waiting.last_error.as_deref()),
        (OutboxStatus::Pending, 1, Some("busy"))
    );

    // Sent again, and the process dies before the send is closed.
    store.start_send(&lease, vec![second], ts(T0 + 61)).unwrap();
    let crashed = store.outbox_entry(second).unwrap();
    assert_eq!(
        (crashed.status, crashed.attempts),
        (OutboxStatus::Sending, 2),
        "seen as sent before recovery"
    );
    store.start_run(&lease, "incremental", true, ts(T0 + 100)).unwrap();
    let recovered = store.outbox_entry(second).unwrap();
    assert_eq!((recovered.status, recovered.attempts), (OutboxStatus::Sending, 2), "counted once, stored");
    store.start_run(&lease, "incremental", true, ts(T0 + 200)).unwrap();
    assert_eq!(store.outbox_entry(second).unwrap().attempts, 2, "a recovered send is not counted again");
    assert_eq!(store.outbox_entry(first).unwrap().attempts, 1);
    store.release(lease).unwrap();
}

/// Due outbox is oldest first and limited.
pub fn due_outbox_is_oldest_first_and_limited<F: Fixture>(fixture: &F) {
    let (mut store, fields, lease) = leased(fixture, &["n"]);
    let run = store.start_run(&lease, "incremental", true, ts(T0)).unwrap();
    let plan = [
        ("k1", Side::Left, Operation::Update),
        ("k2", Side::Right, Operation::Create),
        ("k3", Side::Left, Operation::Delete),
    ];
    for (at, (record, side, operation)) in (T0..).zip(plan) {
        let chunk = writes(vec![outbox_entry(record, side, operation)]);
        store.commit_plan_chunk(&lease, run, &fields, chunk, ts(at)).unwrap();
    }
    let [first, second, third] = <[i64; 3]>::try_from(newest_ids(&store, 3)).unwrap();
    assert_eq!(ids(&store.due_outbox(LINK, ts(T0 + 2), 0, 10).unwrap()), vec![first, second, third]);
    assert_eq!(ids(&store.due_outbox(LINK, ts(T0 + 1), 0, 10).unwrap()), vec![first, second]);
    assert_eq!(ids(&store.due_outbox(LINK, ts(T0 + 2), 0, 2).unwrap()), vec![first, second]);
    assert_eq!(ids(&store.due_outbox(LINK, ts(T0 + 2), second, 2).unwrap()), vec![third]);
    assert_eq!(store.next_due(LINK).unwrap(), Some(ts(T0)));
    assert_eq!(store.outbox_entry(second).unwrap().write.record_id, None);
    assert_eq!(store.outbox_entry(third).unwrap().write.operation, Operation::Delete);
    store.release(lease).unwrap();
}

/// Open outbox and counts by status.
pub fn open_outbox_and_counts_by_status<F: Fixture>(fixture: &F) {
    let (mut store, fields, lease) = leased(fixture, &["n"]);
    let other = lease_of(&mut store, "other");
    let records = ["pending", "sending", "dead", "done", "superseded"];
    // A second, pending entry for the dead record (the other side), and one of another link.
    let plan = records
        .map(|record| outbox_entry(record, Side::Right, Operation::Update))
        .into_iter()
        .chain([outbox_entry("dead", Side::Left, Operation::Update)])
        .collect();
    planned(&mut store, &lease, &fields, true, writes(plan), T0);
    let planned_ids = newest_ids(&store, records.len() + 1);
    let by_key: HashMap<&str, i64> = records.into_iter().chain(["dead-left"]).zip(planned_ids).collect();
    planned(
        &mut store,
        &other,
        &fields,
        true,
        writes(vec![outbox_entry("pending", Side::Right, Operation::Update)]),
        T0,
    );

    let outcomes = [(by_key["dead"], OutboxStatus::Dead), (by_key["done"], OutboxStatus::Done)]
        .map(|(id, status)| outcome(id, status, None, None, false))
        .to_vec();
    settle(&mut store, &lease, &fields, None, outcomes, T0 + 1);
    // A send a crash left open: the next run stores its entry as `sending`; that run's plan
    // supersedes another.
    store.start_send(&lease, vec![by_key["sending"]], ts(T0 + 1)).unwrap();
    let next = store.start_run(&lease, "incremental", false, ts(T0 + 1)).unwrap();
    let publication =
        PlanPublication { superseded: vec![by_key["superseded"]], ..PlanPublication::default() };
    store.publish_plan(&lease, next, &fields, publication, ts(T0 + 1)).unwrap();

    let all_keys: Vec<RecordKey> = records.iter().map(|record| key(record)).chain([key("nothing")]).collect();
    let open = store.open_outbox_for(LINK, &all_keys).unwrap();
    let mut open_ids = ids(&open);
    open_ids.sort_unstable();
    let mut expected = vec![by_key["pending"], by_key["sending"], by_key["dead"], by_key["dead-left"]];
    expected.sort_unstable();
    assert_eq!(open_ids, expected);
    assert!(open.iter().all(|entry| entry.link == LINK));
    assert!(store.open_outbox_for(LINK, &[key("done"), key("superseded")]).unwrap().is_empty());

    let mut keys = store.open_outbox_keys(LINK).unwrap();
    keys.sort();
    assert_eq!(keys, vec![key("dead"), key("pending"), key("sending")], "distinct keys");
    assert_eq!(store.open_outbox_keys("other").unwrap(), vec![key("pending")]);

    let counts = store.outbox_counts(LINK).unwrap();
    let expected: HashMap<OutboxStatus, u64> = [
        (OutboxStatus::Pending, 2),
        (OutboxStatus::Sending, 1),
        (OutboxStatus::Dead, 1),
        (OutboxStatus::Done, 1),
        (OutboxStatus::Superseded, 1),
    ]
    .into();
    assert_eq!(counts, expected);
    assert_eq!(store.outbox_counts("other").unwrap(), [(OutboxStatus::Pending, 1)].into());
    assert!(store.outbox_counts("nobody").unwrap().is_empty());

    // list_outbox: newest first, filtered.
    let listed = store.list_outbox(Some(LINK), Some(OutboxStatus::Pending), 10).unwrap();
    assert_eq!(ids(&listed), vec![by_key["dead-left"], by_key["pending"]]);
    assert_eq!(store.list_outbox(None, None, 100).unwrap().len(), 7);
    assert_eq!(store.list_outbox(None, None, 3).unwrap().len(), 3);
    store.release(lease).unwrap();
    store.release(other).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Reviews.

fn review(record: &str, field: Option<&str>, left: i64, right: i64) -> NewReview {
    NewReview {
        key: key(record),
        field: field.map(str::to_string),
        kind: ReviewKind::Conflict,
        base: Some(Value::Int(0)),
        left: Some(Value::Int(left)),
        right: Some(Value::Int(right)),
        left_changed: Some(ts(T0 - 60_000 + left)),
        right_changed: None,
        reason: format!("both sides changed {field:?}"),
    }
}

/// Review lifecycle.
pub fn review_lifecycle<F: Fixture>(fixture: &F) {
    let (mut store, fields, lease) = leased(fixture, &["email"]);
    let first = review("k1", Some("email"), 1, 2);
    let open = |reviews| PlanChunk { reviews, ..PlanChunk::default() };

    // The same values twice: the same review.
    let run = planned(&mut store, &lease, &fields, true, open(vec![first.clone(), first.clone()]), T0);
    let [id] = <[i64; 1]>::try_from(ids_of(&store.live_reviews_for(LINK, &[key("k1")]).unwrap())).unwrap();
    let stored = store.review(id).unwrap();
    assert_eq!(stored.id, id);
    assert_eq!(stored.link, LINK);
    assert_eq!(stored.review, first);
    assert_eq!(stored.review.left_changed, Some(ts(T0 - 60_000 + 1)), "a change time round-trips");
    assert_eq!(stored.review.right_changed, None, "a side without a change time stays without");
    assert_eq!(stored.status, ReviewStatus::Open);
    assert_eq!(stored.decision, None);
    assert_eq!(stored.run_id, Some(run));
    assert_eq!(stored.created_at, ts(T0));
    assert_eq!(store.list_reviews(Some(LINK), None, 100).unwrap().len(), 1, "one review, not two");

    // A person decides; the same values again keep the decision.
    decide(&mut store, id, Decision::Keep(Side::Left), T0 + 2).unwrap();
    store.commit_plan_chunk(&lease, run, &fields, open(vec![first.clone()]), ts(T0 + 3)).unwrap();
    let stored = store.review(id).unwrap();
    assert_eq!(stored.status, ReviewStatus::Resolved);
    assert_eq!(stored.decision, Some(Decision::Keep(Side::Left)));
    assert_eq!(stored.updated_at, ts(T0 + 2));
    assert_eq!(ids_of(&store.live_reviews_for(LINK, &[key("k1")]).unwrap()), vec![id]);

    // New values: the same review, updated and reopened, its decision cleared.
    let mut changed = review("k1", Some("email"), 1, 3);
    changed.base = Some(Value::Null);
    changed.reason = "the right side changed again".into();
    (changed.left_changed, changed.right_changed) = (None, Some(ts(T0 + 3)));
    store.commit_plan_chunk(&lease, run, &fields, open(vec![changed.clone()]), ts(T0 + 4)).unwrap();
    assert_eq!(ids_of(&store.live_reviews_for(LINK, &[key("k1")]).unwrap()), vec![id]);
    let stored = store.review(id).unwrap();
    assert_eq!(stored.review, changed);
    assert_eq!((stored.review.left_changed, stored.review.right_changed), (None, Some(ts(T0 + 3))));
    assert_eq!(stored.status, ReviewStatus::Open);
    assert_eq!(stored.decision, None);
    assert_eq!(stored.created_at, ts(T0));
    assert_eq!(stored.updated_at, ts(T0 + 4));
    assert_eq!(store.list_reviews(None, None, 100).unwrap().len(), 1);

    // Resolved with a value (Null, to check it is not lost), kept across a reopen, then closed
    // by a run whose plan applies it.
    decide(&mut store, id, Decision::Value(Value::Null), T0 + 5).unwrap();
    drop(store);
    let mut store = fixture.open();
    let stored = store.review(id).unwrap();
    assert_eq!(stored.status, ReviewStatus::Resolved);
    assert_eq!(stored.decision, Some(Decision::Value(Value::Null)));
    decide(&mut store, id, Decision::Value(Value::from("chosen")), T0 + 6).unwrap();
    let applying = store.start_run(&lease, "incremental", false, ts(T0 + 7)).unwrap();
    let publication = PlanPublication { closed_reviews: vec![id], ..PlanPublication::default() };
    store.publish_plan(&lease, applying, &fields, publication, ts(T0 + 7)).unwrap();
    assert!(matches!(
        decide(&mut store, id, Decision::Keep(Side::Right), T0 + 8),
        Err(StoreError::NotFound { id: found, .. }) if found == id
    ));
    let stored = store.review(id).unwrap();
    assert_eq!(stored.status, ReviewStatus::Closed);
    assert_eq!(stored.decision, Some(Decision::Value(Value::from("chosen"))));
    assert!(store.live_reviews_for(LINK, &[key("k1")]).unwrap().is_empty());
    assert!(store.keys_with_live_reviews(LINK).unwrap().is_empty());

    // A closed review is not refreshed: a new conflict on the field opens a new review.
    let later = planned(&mut store, &lease, &fields, true, open(vec![changed]), T0 + 9);
    let [again] = <[i64; 1]>::try_from(ids_of(&store.live_reviews_for(LINK, &[key("k1")]).unwrap())).unwrap();
    assert_ne!(again, id);
    let stored = store.review(again).unwrap();
    assert_eq!(stored.status, ReviewStatus::Open);
    assert_eq!(stored.run_id, Some(later));
    assert_eq!(store.review(id).unwrap().status, ReviewStatus::Closed);
    assert!(matches!(store.review(987_654), Err(StoreError::NotFound { id: 987_654, .. })));
    store.release(lease).unwrap();
}

/// A person's decision on review `id` of `LINK` at `at`, with its audit.
fn decide<S: StateStore>(store: &mut S, id: ReviewId, decision: Decision, at: i64) -> Result<(), StoreError> {
    let audit = audit_entry(None, "k1", AuditEvent::Decided, at);
    store.decide_review(LINK, id, &decision, &audit, ts(at))
}

fn ids_of(reviews: &[crate::Review]) -> Vec<i64> {
    reviews.iter().map(|review| review.id).collect()
}

/// Live reviews are per field and exclude closed ones.
pub fn live_reviews_are_per_field_and_exclude_closed_ones<F: Fixture>(fixture: &F) {
    let (mut store, fields, lease) = leased(fixture, &["email"]);
    let other = lease_of(&mut store, "other");
    let delete = NewReview {
        key: key("k2"),
        field: None,
        kind: ReviewKind::Delete,
        base: None,
        left: None,
        right: Some(Value::Null),
        left_changed: None,
        right_changed: Some(ts(T0 - 1)),
        reason: "deleted on the left, edited on the right".into(),
    };
    let first_sync =
        NewReview { kind: ReviewKind::FirstSync, base: None, ..review("k1", Some("phone"), 5, 6) };
    let email = review("k1", Some("email"), 1, 2);
    // A whole-record review is refreshed like a field review (field IS NULL).
    let reviews = vec![
        email.clone(),
        first_sync.clone(),
        delete.clone(),
        delete.clone(),
        review("k3", Some("name"), 1, 2),
    ];
    let run = planned(&mut store, &lease, &fields, false, PlanChunk { reviews, ..PlanChunk::default() }, T0);
    let other_chunk = PlanChunk { reviews: vec![email], ..PlanChunk::default() };
    planned(&mut store, &other, &fields, true, other_chunk, T0);
    let id = |store: &F::Store, link: &str, record: &str, field: Option<&str>| {
        let live = store.live_reviews_for(link, &[key(record)]).unwrap();
        let [id] = <[i64; 1]>::try_from(ids_of(
            &live.into_iter().filter(|review| review.review.field.as_deref() == field).collect::<Vec<_>>(),
        ))
        .unwrap();
        id
    };
    let (email, phone, deleted, closed, other_link) = (
        id(&store, LINK, "k1", Some("email")),
        id(&store, LINK, "k1", Some("phone")),
        id(&store, LINK, "k2", None),
        id(&store, LINK, "k3", Some("name")),
        id(&store, "other", "k1", Some("email")),
    );
    let publication = PlanPublication { closed_reviews: vec![closed], ..PlanPublication::default() };
    store.publish_plan(&lease, run, &fields, publication, ts(T0 + 1)).unwrap();
    assert_eq!(store.review(phone).unwrap().review, first_sync);
    assert_eq!(store.review(deleted).unwrap().review, delete);
    assert_ne!(other_link, email);

    let live = store.live_reviews_for(LINK, &[key("k1"), key("k2"), key("k3"), key("none")]).unwrap();
    assert_eq!(ids_of(&live), vec![email, phone, deleted]);
    assert!(live.iter().all(|review| review.link == LINK));
    let mut keys = store.keys_with_live_reviews(LINK).unwrap();
    keys.sort();
    assert_eq!(keys, vec![key("k1"), key("k2")]);
    assert_eq!(store.keys_with_live_reviews("other").unwrap(), vec![key("k1")]);

    let open = store.list_reviews(Some(LINK), Some(ReviewStatus::Open), 100).unwrap();
    assert_eq!(ids_of(&open), vec![deleted, phone, email], "newest first");
    assert_eq!(ids_of(&store.list_reviews(None, Some(ReviewStatus::Closed), 100).unwrap()), vec![closed]);
    assert_eq!(store.list_reviews(None, None, 100).unwrap().len(), 5);
    store.release(lease).unwrap();
    store.release(other).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Audit and runs.

fn audit_entry(run_id: Option<RunId>, record: &str, event: AuditEvent, at: i64) -> AuditEntry {
    AuditEntry {
        run_id,
        key: key(record),
        field: Some("email".into()),
        event,
        side: Some(Side::Left),
        base: Some(Value::Null),
        left: Some(Value::from("a@example.org")),
        right: Some(Value::Int(3)),
        value: Some(Value::Bool(false)),
        reason: format!("{event} at {at}"),
        at: ts(at),
        values: AuditValues::Full,
    }
}

/// Audit entries round trip per run and per record.
pub fn audit_entries_round_trip_per_run_and_per_record<F: Fixture>(fixture: &F) {
    let (mut store, fields, lease) = leased(fixture, &["email"]);
    let other = lease_of(&mut store, "other");
    let first = store.start_run(&lease, "incremental", true, ts(T0)).unwrap();
    let second = store.start_run(&lease, "incremental", true, ts(T0 + 100)).unwrap();
    let bare = AuditEntry {
        run_id: None,
        key: key("k1"),
        field: None,
        event: AuditEvent::Decided,
        side: None,
        base: None,
        left: None,
        right: None,
        value: None,
        reason: "a person decided".into(),
        at: ts(T0 + 50),
        values: AuditValues::Hashed,
    };
    let entries = [
        (LINK, audit_entry(Some(first), "k1", AuditEvent::Detected, T0 + 1)),
        (LINK, audit_entry(Some(first), "k2", AuditEvent::Written, T0 + 2)),
        (LINK, audit_entry(Some(first), "k1", AuditEvent::Resolved, T0 + 3)),
        (LINK, bare.clone()),
        (LINK, audit_entry(Some(second), "k1", AuditEvent::Failed, T0 + 101)),
        ("other", audit_entry(None, "k1", AuditEvent::Agreed, T0 + 102)),
        (
            LINK,
            AuditEntry {
                side: Some(Side::Right),
                ..audit_entry(Some(second), "k2", AuditEvent::Reverted, T0 + 102)
            },
        ),
    ];
    // Each link's entries in one chunk of its plan, in order; an entry keeps the run it names.
    for lease in [&lease, &other] {
        let audit =
            entries.iter().filter(|(link, _)| *link == lease.link).map(|(_, entry)| entry.clone()).collect();
        let run = store.start_run(lease, "incremental", true, ts(T0 + 100)).unwrap();
        store
            .commit_plan_chunk(lease, run, &fields, PlanChunk { audit, ..PlanChunk::default() }, ts(T0 + 100))
            .unwrap();
    }
    let pick = |indices: &[usize]| indices.iter().map(|&index| entries[index].1.clone()).collect::<Vec<_>>();
    assert_eq!(store.audit_for_run(first).unwrap(), pick(&[0, 1, 2]));
    assert_eq!(store.audit_for_run(second).unwrap(), pick(&[4, 6]));
    assert_eq!(store.audit_for_record(LINK, &key("k1")).unwrap(), pick(&[0, 2, 3, 4]));
    assert_eq!(store.audit_for_record(LINK, &key("k2")).unwrap(), pick(&[1, 6]));
    assert_eq!(store.audit_for_record("other", &key("k1")).unwrap(), pick(&[5]));
    assert!(store.audit_for_run(RunId(9_999)).unwrap().is_empty());
    assert_eq!(store.audit_for_record(LINK, &key("k1")).unwrap()[2], bare);
    store.release(lease).unwrap();
    store.release(other).unwrap();
}

/// Runs are recorded and listed newest first.
pub fn runs_are_recorded_and_listed_newest_first<F: Fixture>(fixture: &F) {
    let mut store = fixture.open();
    let (lease, other_lease) = (lease_of(&mut store, LINK), lease_of(&mut store, "other"));
    let first = store.start_run(&lease, "full", true, ts(T0)).unwrap();
    let other = store.start_run(&other_lease, "incremental", true, ts(T0 + 1)).unwrap();
    let third = store.start_run(&lease, "incremental", true, ts(T0 + 2)).unwrap();
    assert!(first < other && other < third);

    let running = store.run(other).unwrap();
    assert_eq!(running.id, other);
    assert_eq!(running.link, "other");
    assert_eq!(running.mode, "incremental");
    assert_eq!(running.status, RunStatus::Running);
    assert_eq!(running.started_at, ts(T0 + 1));
    assert_eq!(running.finished_at, None);
    assert_eq!(running.stats, serde_json::Value::Null);
    assert_eq!(running.error, None);

    let stats = json!({ "read": { "left": 10, "right": 12 }, "written": 3, "notes": ["a", null] });
    let end = |run, status, stats, error: Option<&str>, at| RunEnd {
        run,
        status,
        mode: "full".into(),
        stats,
        error: error.map(str::to_string),
        at: ts(at),
    };
    store.finish_run(&lease, end(first, RunStatus::Done, stats.clone(), None, T0 + 10)).unwrap();
    // The mode may change on the way (an incremental run that turned into a full one).
    let failed = end(third, RunStatus::Failed, json!({}), Some("connector went away"), T0 + 20);
    store.finish_run(&lease, failed).unwrap();
    let done = store.run(first).unwrap();
    assert_eq!(done.status, RunStatus::Done);
    assert_eq!(done.mode, "full");
    assert_eq!(done.stats, stats);
    assert_eq!(done.started_at, ts(T0));
    assert_eq!(done.finished_at, Some(ts(T0 + 10)));
    assert_eq!(done.error, None);
    let failed = store.run(third).unwrap();
    assert_eq!(failed.status, RunStatus::Failed);
    assert_eq!(failed.mode, "full");
    assert_eq!(failed.error.as_deref(), Some("connector went away"));
    assert_eq!(failed.finished_at, Some(ts(T0 + 20)));

    let listed = |link: Option<&str>, limit: usize| -> Vec<RunId> {
        store.list_runs(link, limit).unwrap().into_iter().map(|run| run.id).collect()
    };
    assert_eq!(listed(Some(LINK), 10), vec![third, first]);
    assert_eq!(listed(None, 10), vec![third, other, first]);
    assert_eq!(listed(None, 1), vec![third]);
    assert_eq!(listed(Some("nobody"), 10), Vec::<RunId>::new());
    assert_eq!(store.list_runs(Some(LINK), 10).unwrap()[1], done);
    // The runs of a set of links (an organisation's), paged.
    let of_links = |links: &[&str], before: Option<RunId>| {
        let links: Vec<String> = links.iter().map(|link| (*link).to_string()).collect();
        let query = crate::ListQuery { link: None, links: Some(&links), status: None, before, limit: 1 };
        let page = store.runs_page(query).unwrap();
        (page.rows.into_iter().map(|run| run.id).collect::<Vec<_>>(), page.more)
    };
    assert_eq!(of_links(&["other"], None), (vec![other], 0));
    assert_eq!(of_links(&[LINK, "nobody"], None), (vec![third], 1));
    assert_eq!(of_links(&[LINK, "nobody"], Some(third)), (vec![first], 0));
    assert_eq!(of_links(&[], None), (vec![], 0));
    // Every link's runs started at or after a time, newest first.
    let since =
        |at| -> Vec<RunId> { store.runs_since(ts(at)).unwrap().into_iter().map(|run| run.id).collect() };
    assert_eq!(since(T0), vec![third, other, first]);
    assert_eq!(since(T0 + 1), vec![third, other]);
    assert_eq!(since(T0 + 3), Vec::<RunId>::new());
    assert_eq!(store.runs_since(ts(T0 + 2)).unwrap(), vec![store.run(third).unwrap()]);

    assert!(matches!(store.run(RunId(123_456)), Err(StoreError::NotFound { what: "run", id: 123_456 })));
    store.release(lease).unwrap();
    store.release(other_lease).unwrap();
}

/// The collation contract: keys page and list in byte order (UTF-8 code units, the order of
/// `RecordKey` and of code points), not in the database's own collation: upper case before
/// lower, digits compared one by one, accented letters after every ASCII one.
pub fn keys_page_in_byte_order_whatever_the_collation<F: Fixture>(fixture: &F) {
    let mut store = fixture.open();
    let fields = layout(&mut store, &["n"]);
    let texts =
        ["b", "B", "a", "A", "Z", "é", "e", "ä", "a b", "a-b", "a_b", "10", "9", "~", "Ω", "日本", "a"];
    let baselines: Vec<Baseline> = texts
        .iter()
        .enumerate()
        .map(|(index, text)| Baseline {
            fields: vec![field(Some(Value::Int(index as i64)), None, None, Some(Origin::Both))],
            ..Baseline::empty(key(text), 1)
        })
        .collect();
    put(&mut store, &fields, &baselines.iter().collect::<Vec<_>>());
    let mut expected: Vec<String> = texts.iter().map(|text| text.to_string()).collect();
    expected.sort();
    expected.dedup();

    let mut paged = Vec::new();
    let mut after: Option<RecordKey> = None;
    while let Some(last) =
        store.digest_page(LINK, &fields, after.as_ref(), 3, |key, _| paged.push(key.to_string())).unwrap()
    {
        after = Some(last);
    }
    assert_eq!(paged, expected, "digest_page in byte order");
    let mut listed = Vec::new();
    store.for_each_digest(LINK, &fields, |key, _| listed.push(key.to_string())).unwrap();
    assert_eq!(listed, expected, "for_each_digest in byte order");
}

/// Two handles on one store write at once (each its own commits, as two runs of two links on
/// two workers would): every commit is kept, none is lost or mixed up.
pub fn concurrent_writers_lose_nothing<F: Fixture>(fixture: &F)
where
    F::Store: Send,
{
    const EACH: usize = 40;
    let links = ["first", "second"];
    let mut stores = [fixture.open(), fixture.open()];
    std::thread::scope(|scope| {
        for (store, link) in stores.iter_mut().zip(links) {
            scope.spawn(move || {
                let fields = store.layout(link, &names(&["n"])).unwrap();
                let lease = lease_of(store, link);
                let run = store.start_run(&lease, "full", true, ts(T0)).unwrap();
                for index in 0..EACH {
                    let baseline = Baseline {
                        fields: vec![field(Some(Value::Int(index as i64)), None, None, Some(Origin::Both))],
                        ..Baseline::empty(key(&format!("k{index:03}")), 1)
                    };
                    let audit = vec![audit_entry(None, baseline.key.as_str(), AuditEvent::Agreed, T0)];
                    let chunk = PlanChunk { baselines: vec![baseline], audit, ..PlanChunk::default() };
                    store.commit_plan_chunk(&lease, run, &fields, chunk, ts(T0)).unwrap();
                }
                store.release(lease).unwrap();
            });
        }
    });
    let mut store = fixture.open();
    for link in links {
        assert_eq!(store.baseline_count(link).unwrap(), EACH as u64, "{link}");
        let fields = store.layout(link, &names(&["n"])).unwrap();
        let all = store.all_digests(link, &fields).unwrap();
        assert_eq!(all.len(), EACH, "{link}");
        assert_eq!(store.audit_for_record(link, &key("k000")).unwrap().len(), 1, "{link}");
    }
}

/// A live lease excludes every other holder of its link (a conflict, on this handle or
/// another), not of another link; released, the link is leased again at once, with a new
/// token. Commits under a live lease succeed.
pub fn a_lease_excludes_other_holders_until_released<F: Fixture>(fixture: &F) {
    let minute = std::time::Duration::from_secs(60);
    let (mut first, mut second) = (fixture.open(), fixture.open());
    let lease = first.lease(LINK, "first", minute).unwrap();
    assert_eq!((lease.link.as_str(), lease.owner.as_str(), lease.ttl), (LINK, "first", minute));
    for store in [&mut first, &mut second] {
        let refused = store.lease(LINK, "second", minute).unwrap_err();
        assert!(refused.is_conflict(), "{refused:?}");
        assert!(!refused.is_retryable(), "{refused:?}");
    }
    let other = second.lease("other", "second", minute).expect("another link's lease");
    let fields = layout(&mut first, &["n"]);
    let run = first.start_run(&lease, "full", false, ts(T0)).expect("a commit under a live lease");
    let cursors =
        vec![(Side::Left, CursorState { cursor: Some(ts(T0)), last_full_scan: None, sequence: None })];
    let publication = PlanPublication { cursors, ..PlanPublication::default() };
    first.publish_plan(&lease, run, &fields, publication, ts(T0)).expect("a commit under a live lease");
    let token = lease.token;
    first.release(lease).unwrap();
    let again = second.lease(LINK, "second", minute).expect("free once released");
    assert_ne!(again.token, token, "a new holder, a new token");
    assert_eq!(first.cursor(LINK, Side::Left).unwrap().cursor, Some(ts(T0)));
    second.release(again).unwrap();
    second.release(other).unwrap();
}

/// `renew` keeps a lease live past its ttl for as long as its holder renews it, so that a run
/// reading for a long time keeps its link; once another holder took an expired lease over,
/// renewing the old one fails as a conflict (`StoreError::LeaseLost`) and the new holder keeps it.
pub fn a_renewed_lease_outlives_its_ttl_and_a_lost_one_cannot_be_renewed<F: Fixture>(fixture: &F) {
    let short = std::time::Duration::from_millis(400);
    let (mut first, mut second) = (fixture.open(), fixture.open());
    let lease = first.lease(LINK, "first", short).unwrap();
    for _ in 0..4 {
        std::thread::sleep(short / 4);
        first.renew(&lease).expect("the holder renews its lease");
    }
    // A full ttl has passed since the lease was taken; renewed, it is still live.
    let refused = second.lease(LINK, "second", MINUTE).unwrap_err();
    assert!(refused.is_conflict(), "{refused:?}");

    std::thread::sleep(short + short / 2);
    let taken = second.lease(LINK, "second", MINUTE).expect("an expired lease is taken");
    let lost = first.renew(&lease).unwrap_err();
    assert!(matches!(lost, StoreError::LeaseLost { .. }), "{lost:?}");
    let refused = first.lease(LINK, "first", MINUTE).unwrap_err();
    assert!(refused.is_conflict(), "the new holder keeps it: {refused:?}");
    second.renew(&taken).expect("the new holder renews");
    second.release(taken).unwrap();
}

/// A run whose process died (or lost its lease) never records its end; the next run of its
/// link, which took the lease over, records it as failed with `ABANDONED`, ended when the
/// next one started. Another link's run is left as it is.
pub fn a_run_that_never_ended_is_recorded_as_abandoned_by_the_next<F: Fixture>(fixture: &F) {
    let short = std::time::Duration::from_millis(50);
    let (mut first, mut second) = (fixture.open(), fixture.open());
    let lease = first.lease(LINK, "first", short).unwrap();
    let dead = first.start_run(&lease, "full", true, ts(T0)).unwrap();
    let other_lease = first.lease("other", "first", MINUTE).unwrap();
    let other = first.start_run(&other_lease, "full", true, ts(T0)).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(150));
    let taken = second.lease(LINK, "second", MINUTE).expect("an expired lease is taken");
    let next = second.start_run(&taken, "incremental", true, ts(T0 + 5_000)).unwrap();
    let abandoned = second.run(dead).unwrap();
    assert_eq!(
        (abandoned.status, abandoned.finished_at, abandoned.error.as_deref()),
        (RunStatus::Failed, Some(ts(T0 + 5_000)), Some(crate::ABANDONED))
    );
    assert_eq!(second.run(next).unwrap().status, RunStatus::Running);
    assert_eq!(second.run(other).unwrap().status, RunStatus::Running, "another link's run is its own");
    second.release(taken).unwrap();
    first.release(other_lease).unwrap();
}

/// `lease_within` grants a lease only while fewer than `max_running` leases of other links
/// are live, whichever handle (process) holds them: the limit on runs at once holds across
/// every worker sharing the store. Released and expired leases leave their place; a link's
/// own lease does not count against it; without a limit any number are granted.
pub fn leases_under_a_limit_leave_no_place_beyond_it<F: Fixture>(fixture: &F) {
    let short = std::time::Duration::from_millis(300);
    let (mut first, mut second) = (fixture.open(), fixture.open());
    let a = first.lease_within("a", "first", MINUTE, Some(2)).expect("a first place");
    let b = second.lease_within("b", "second", short, Some(2)).expect("a second place");
    for store in [&mut first, &mut second] {
        let full = store.lease_within("c", "third", MINUTE, Some(2)).unwrap_err();
        assert!(matches!(full, StoreError::AtCapacity { running: 2, .. }), "{full:?}");
        assert!(full.is_conflict() && !full.is_retryable(), "{full:?}");
    }
    let unlimited = first.lease("c", "third", MINUTE).expect("no limit, no refusal");
    first.release(unlimited).unwrap();

    first.release(a).unwrap();
    let c = first.lease_within("c", "third", MINUTE, Some(2)).expect("a released lease leaves its place");
    std::thread::sleep(short + short / 2);
    let d = second.lease_within("d", "fourth", MINUTE, Some(2)).expect("an expired lease leaves its place");
    let full = first.lease_within("e", "fifth", MINUTE, Some(2)).unwrap_err();
    assert!(matches!(full, StoreError::AtCapacity { .. }), "{full:?}");
    drop(b);
    for (store, lease) in [(&mut first, c), (&mut second, d)] {
        store.release(lease).unwrap();
    }
}

/// A commit by a holder whose lease was taken over once expired fails as a conflict
/// (`StoreError::LeaseLost`) and keeps nothing of what it would have written — baselines,
/// raw digests, cursors, outbox entries and their outcomes, reviews, audit, the run's start
/// or end — on this handle or any other; the new holder's commits succeed. A lease that
/// expired with nobody taking it over is still its holder's, and its commit renews it.
pub fn a_commit_under_a_lost_lease_fails_and_keeps_nothing<F: Fixture>(fixture: &F) {
    let short = std::time::Duration::from_millis(50);
    let pause = || std::thread::sleep(std::time::Duration::from_millis(150));
    let (mut first, mut second) = (fixture.open(), fixture.open());
    let fields = layout(&mut first, &["n"]);
    let baseline = |text: &str| Baseline {
        fields: vec![field(Some(Value::from(text)), None, None, Some(Origin::Both))],
        ..Baseline::empty(key(text), 1)
    };
    let agreed = |text: &str| PlanChunk { baselines: vec![baseline(text)], ..PlanChunk::default() };

    // Expired, nobody took it over: still the holder's, and its commit renews it.
    let lease = first.lease(LINK, "first", short).unwrap();
    pause();
    planned(&mut first, &lease, &fields, true, agreed("late"), T0);
    first.release(lease).unwrap();

    // Expired and taken over by another holder.
    let lease = first.lease(LINK, "first", short).unwrap();
    let entries = vec![outbox_entry("kept", Side::Right, Operation::Update)];
    let run = planned(&mut first, &lease, &fields, true, PlanChunk { entries, ..agreed("kept") }, T0);
    let [kept] = <[i64; 1]>::try_from(newest_ids(&first, 1)).unwrap();
    let send = first.start_send(&lease, vec![kept], ts(T0)).expect("a commit under a live lease");
    pause();
    let taken = second.lease(LINK, "second", MINUTE).expect("an expired lease is taken");
    assert_ne!(taken.token, lease.token);
    let seen =
        SeenDigest { key: key("kept"), side: Side::Left, digest: fieldsync_model::RecordDigest::new(7) };
    let stale = PlanChunk {
        entries: vec![outbox_entry("stale", Side::Right, Operation::Create)],
        reviews: vec![review("stale", Some("n"), 1, 2)],
        audit: vec![audit_entry(Some(run), "stale", AuditEvent::Detected, T0 + 1)],
        seen: vec![seen.clone()],
        ..agreed("stale")
    };
    let cursor = CursorState { cursor: Some(ts(T0)), last_full_scan: None, sequence: None };
    let publication = PlanPublication { cursors: vec![(Side::Left, cursor)], ..PlanPublication::default() };
    let batch = BatchClose {
        send: Some(send),
        outcomes: vec![outcome(kept, OutboxStatus::Done, None, None, true)],
        baselines: vec![BaselineWrite::Forget(key("kept"))],
        seen: vec![seen],
        audit: vec![audit_entry(Some(run), "stale", AuditEvent::Written, T0 + 1)],
        full_scan_of: Some(Side::Left),
    };
    let end = RunEnd {
        run,
        status: RunStatus::Done,
        mode: "full".into(),
        stats: json!({}),
        error: None,
        at: ts(T0 + 1),
    };
    let lost = [
        first.commit_plan_chunk(&lease, run, &fields, stale, ts(T0 + 1)),
        first.publish_plan(&lease, run, &fields, publication, ts(T0 + 1)),
        first.close_batch(&lease, &fields, batch, ts(T0 + 1)),
        first.start_send(&lease, vec![kept], ts(T0 + 1)).map(drop),
        first.discard_plan(&lease, run).map(drop),
        first.finish_run(&lease, end),
        first.start_run(&lease, "full", false, ts(T0 + 1)).map(drop),
    ];
    for lost in lost {
        let lost = lost.unwrap_err();
        assert!(matches!(lost, StoreError::LeaseLost { .. }), "{lost:?}");
        assert!(lost.is_conflict(), "{lost:?}");
    }
    let kept_nothing = |store: &F::Store| {
        let digests = store.digests(LINK, &fields, &[key("kept"), key("stale")]).unwrap();
        assert_eq!(digests.keys().collect::<Vec<_>>(), [&key("kept")], "baselines");
        assert_eq!(digests[&key("kept")].seen(Side::Left), None, "raw digests");
        assert_eq!(store.cursor(LINK, Side::Left).unwrap(), CursorState::default());
        assert!(store.open_outbox_for(LINK, &[key("stale")]).unwrap().is_empty());
        let entry = store.outbox_entry(kept).unwrap();
        assert_eq!((entry.status, entry.attempts), (OutboxStatus::Sending, 1), "the send is still open");
        assert!(store.live_reviews_for(LINK, &[key("stale")]).unwrap().is_empty());
        assert!(store.audit_for_record(LINK, &key("stale")).unwrap().is_empty());
        assert_eq!(store.run(run).unwrap().status, RunStatus::Running);
        assert_eq!(store.list_runs(Some(LINK), 10).unwrap().len(), 2, "no run started");
    };
    kept_nothing(&first);
    kept_nothing(&second);
    kept_nothing(&fixture.open());
    planned(&mut second, &taken, &fields, true, agreed("new"), T0 + 2);

    let keys = [key("late"), key("kept"), key("stale"), key("new")];
    let mut found: Vec<String> =
        second.baselines(LINK, &fields, &keys).unwrap().into_keys().map(|key| key.to_string()).collect();
    found.sort();
    assert_eq!(found, ["kept", "late", "new"]);
    // The old holder cannot give the link up for the new one.
    first.release(lease).unwrap();
    assert!(first.lease(LINK, "first", short).unwrap_err().is_conflict());
    second.release(taken).unwrap();
}

// ---------------------------------------------------------------------------------------------
// What a run commits: its plan in chunks, the publication, delivered batches, its end.

/// A run's plan is committed a chunk at a time (entries, baselines, reviews, audit, raw
/// digests), each chunk at once; the publication sets the
/// cursors, closes reviews, supersedes, resends and closes landed entries, writes and forgets
/// baselines, all at once; the run's end is recorded. A guarded run's plan is discarded.
pub fn a_run_commits_its_plan_in_chunks_and_publishes_it_at_once<F: Fixture>(fixture: &F) {
    let mut store = fixture.open();
    let fields = layout(&mut store, &["n"]);
    let agreed = |record: &str, value: i64| Baseline {
        fields: vec![field(Some(Value::Int(value)), None, None, Some(Origin::Both))],
        ..Baseline::empty(key(record), 1)
    };
    let lease = lease_of(&mut store, LINK);

    // An earlier, published run leaves entries that the next plan settles.
    let earlier = store.start_run(&lease, "full", true, ts(T0)).unwrap();
    let earlier_chunk = PlanChunk {
        entries: ["k1", "k2", "k3"]
            .map(|record| outbox_entry(record, Side::Right, Operation::Update))
            .to_vec(),
        baselines: vec![agreed("k1", 1), agreed("k2", 2), agreed("k9", 9)],
        reviews: vec![review("k4", Some("n"), 1, 2)],
        ..PlanChunk::default()
    };
    store.commit_plan_chunk(&lease, earlier, &fields, earlier_chunk, ts(T0)).unwrap();
    let waiting = ids(&store.due_outbox(LINK, ts(T0), 0, 10).unwrap());
    assert_eq!(waiting.len(), 3, "a run published from the start delivers at once");
    let review_id = store.list_reviews(Some(LINK), None, 10).unwrap()[0].id;

    let run = store.start_run(&lease, "incremental", false, ts(T0 + 10)).unwrap();
    let digest = fieldsync_model::digest_raw(agreed("k5", 5).digest(), 7, &[json!(5)]);
    let chunk = PlanChunk {
        entries: vec![outbox_entry("k5", Side::Left, Operation::Create)],
        baselines: vec![agreed("k5", 5)],
        reviews: vec![review("k6", Some("n"), 3, 4)],
        audit: vec![audit_entry(Some(run), "k5", AuditEvent::Agreed, T0 + 10)],
        seen: vec![SeenDigest { key: key("k5"), side: Side::Right, digest }],
    };
    store.commit_plan_chunk(&lease, run, &fields, chunk, ts(T0 + 10)).unwrap();
    assert_eq!(store.run(run).unwrap().status, RunStatus::Running);
    let entry = store.digests(LINK, &fields, &[key("k5")]).unwrap()[&key("k5")].clone();
    assert_eq!(
        (entry.digest, entry.seen(Side::Right), entry.seen(Side::Left)),
        (Some(agreed("k5", 5).digest()), Some(digest), None)
    );
    assert_eq!(store.audit_for_run(run).unwrap().len(), 1);
    assert_eq!(store.live_reviews_for(LINK, &[key("k6")]).unwrap().len(), 1);

    let cursor = CursorState { cursor: Some(ts(T0 + 5)), last_full_scan: Some(ts(T0 + 10)), sequence: None };
    let publication = PlanPublication {
        cursors: vec![(Side::Left, cursor.clone())],
        closed_reviews: vec![review_id],
        superseded: vec![waiting[0]],
        resent: vec![waiting[1]],
        landed: vec![waiting[2]],
        audit: vec![audit_entry(Some(run), "k3", AuditEvent::Written, T0 + 10)],
        baselines: vec![
            BaselineWrite::Put(Baseline { tombstone: Some(Side::Left), ..agreed("k2", 2) }),
            BaselineWrite::Forget(key("k9")),
        ],
    };
    store.publish_plan(&lease, run, &fields, publication, ts(T0 + 20)).unwrap();
    let status = |store: &F::Store, id| store.outbox_entry(id).unwrap().status;
    assert_eq!(status(&store, waiting[0]), OutboxStatus::Superseded);
    assert_eq!(status(&store, waiting[1]), OutboxStatus::Pending);
    assert_eq!(status(&store, waiting[2]), OutboxStatus::Done);
    assert_eq!(
        store.due_outbox(LINK, ts(T0 + 20), 0, 10).unwrap().len(),
        2,
        "the resent entry and the create"
    );
    assert_eq!(store.cursor(LINK, Side::Left).unwrap(), cursor);
    assert_eq!(store.review(review_id).unwrap().status, ReviewStatus::Closed);
    let read = store.baselines(LINK, &fields, &[key("k2"), key("k9")]).unwrap();
    assert_eq!((read.len(), read[&key("k2")].tombstone), (1, Some(Side::Left)));
    assert_eq!(store.audit_for_run(run).unwrap().len(), 2);
    let stats = json!({ "writes_done": 1 });
    let end = RunEnd {
        run,
        status: RunStatus::Done,
        mode: "incremental".into(),
        stats: stats.clone(),
        error: None,
        at: ts(T0 + 30),
    };
    store.finish_run(&lease, end).unwrap();
    let row = store.run(run).unwrap();
    assert_eq!((row.status, row.stats, row.finished_at), (RunStatus::Done, stats, Some(ts(T0 + 30))));

    // A guarded run's plan is discarded: its entries, reviews and audit.
    let guarded = store.start_run(&lease, "full", false, ts(T0 + 40)).unwrap();
    let chunk = PlanChunk {
        entries: vec![outbox_entry("k7", Side::Left, Operation::Delete)],
        reviews: vec![review("k7", Some("n"), 5, 6)],
        audit: vec![audit_entry(Some(guarded), "k7", AuditEvent::Detected, T0 + 40)],
        ..PlanChunk::default()
    };
    store.commit_plan_chunk(&lease, guarded, &fields, chunk, ts(T0 + 40)).unwrap();
    assert_eq!(store.discard_plan(&lease, guarded).unwrap(), 1);
    assert!(store.open_outbox_for(LINK, &[key("k7")]).unwrap().is_empty());
    assert!(store.live_reviews_for(LINK, &[key("k7")]).unwrap().is_empty());
    assert!(store.audit_for_run(guarded).unwrap().is_empty());
    store.release(lease).unwrap();
}

/// A batch starts as a send (its entries `sending`, the attempt counted) and closes at once:
/// the send ends, baselines move or are forgotten, raw digests are recorded after them, the
/// audit is appended, each entry gets its outcome (an attempt counted only where one was
/// made), and a side is asked to be read in full.
pub fn a_delivered_batch_closes_with_its_baselines_digests_and_attempts<F: Fixture>(fixture: &F) {
    let (mut store, fields, lease) = leased(fixture, &["n"]);
    let old = Baseline {
        fields: vec![field(Some(Value::Int(1)), None, None, None)],
        ..Baseline::empty(key("k2"), 1)
    };
    let chunk = PlanChunk {
        entries: ["k1", "k2", "k3"]
            .map(|record| outbox_entry(record, Side::Right, Operation::Update))
            .to_vec(),
        baselines: vec![old],
        ..PlanChunk::default()
    };
    let run = planned(&mut store, &lease, &fields, true, chunk, T0);
    let cursor = CursorState { cursor: Some(ts(T0)), last_full_scan: Some(ts(T0)), sequence: None };
    let publication =
        PlanPublication { cursors: vec![(Side::Right, cursor.clone())], ..PlanPublication::default() };
    store.publish_plan(&lease, run, &fields, publication, ts(T0)).unwrap();
    let [first, second, third] =
        <[i64; 3]>::try_from(ids(&store.due_outbox(LINK, ts(T0), 0, 10).unwrap())).unwrap();

    let send = store.start_send(&lease, vec![first, second], ts(T0 + 1)).unwrap();
    for id in [first, second] {
        let entry = store.outbox_entry(id).unwrap();
        assert_eq!((entry.status, entry.attempts), (OutboxStatus::Sending, 1), "entry {id} while sent");
    }
    let moved = Baseline {
        fields: vec![field(Some(Value::Int(2)), None, Some(T0 + 2), Some(Origin::Left))],
        ..Baseline::empty(key("k1"), 1)
    };
    let digest = fieldsync_model::digest_raw(moved.digest(), 7, &[json!(2)]);
    let batch = BatchClose {
        send: Some(send),
        outcomes: vec![
            outcome(first, OutboxStatus::Done, None, None, true),
            outcome(second, OutboxStatus::Pending, Some(T0 + 60), Some("busy"), true),
            outcome(third, OutboxStatus::Dead, None, Some("damaged"), false),
        ],
        baselines: vec![BaselineWrite::Put(moved.clone()), BaselineWrite::Forget(key("k2"))],
        seen: vec![SeenDigest { key: key("k1"), side: Side::Right, digest }],
        audit: vec![audit_entry(Some(run), "k1", AuditEvent::Written, T0 + 2)],
        full_scan_of: Some(Side::Right),
    };
    store.close_batch(&lease, &fields, batch, ts(T0 + 2)).unwrap();
    let entry = |id| store.outbox_entry(id).unwrap();
    assert_eq!((entry(first).status, entry(first).attempts), (OutboxStatus::Done, 1));
    assert_eq!(
        (entry(second).status, entry(second).attempts, entry(second).last_error.as_deref()),
        (OutboxStatus::Pending, 1, Some("busy"))
    );
    assert_eq!(entry(second).next_attempt_at, ts(T0 + 60));
    assert_eq!((entry(third).status, entry(third).attempts), (OutboxStatus::Dead, 0), "not attempted");
    let read = store.baselines(LINK, &fields, &[key("k1"), key("k2")]).unwrap();
    assert_eq!((read.len(), &read[&key("k1")]), (1, &moved));
    let digests = store.digests(LINK, &fields, &[key("k1")]).unwrap();
    assert_eq!(digests[&key("k1")].seen(Side::Right), Some(digest), "recorded after the baseline");
    assert_eq!(store.audit_for_run(run).unwrap().len(), 1);
    assert_eq!(store.cursor(LINK, Side::Right).unwrap(), CursorState { last_full_scan: None, ..cursor });
    // The send was closed: the next run counts no attempt again.
    store.start_run(&lease, "full", true, ts(T0 + 100)).unwrap();
    assert_eq!(store.outbox_entry(second).unwrap().attempts, 1);
    store.release(lease).unwrap();
}

/// A person's decision is recorded with its audit at once; dead entries are retried all or
/// none, and dropped one by one; anything else is `NotFound`.
pub fn a_person_decides_reviews_and_settles_dead_entries<F: Fixture>(fixture: &F) {
    let (mut store, fields, lease) = leased(fixture, &["n"]);
    let chunk = PlanChunk {
        entries: ["k1", "k2"].map(|record| outbox_entry(record, Side::Right, Operation::Update)).to_vec(),
        reviews: vec![review("k3", Some("n"), 1, 2)],
        ..PlanChunk::default()
    };
    planned(&mut store, &lease, &fields, true, chunk, T0);
    let [first, second] = <[i64; 2]>::try_from(ids(&store.due_outbox(LINK, ts(T0), 0, 10).unwrap())).unwrap();
    let dead = outcome(first, OutboxStatus::Dead, None, Some("rejected"), true);
    settle(&mut store, &lease, &fields, None, vec![dead], T0 + 1);
    store.release(lease).unwrap();

    let review_id = store.list_reviews(Some(LINK), None, 10).unwrap()[0].id;
    let audit = audit_entry(None, "k3", AuditEvent::Decided, T0 + 2);
    store.decide_review(LINK, review_id, &Decision::Keep(Side::Left), &audit, ts(T0 + 2)).unwrap();
    let decided = store.review(review_id).unwrap();
    assert_eq!(
        (decided.status, decided.decision),
        (ReviewStatus::Resolved, Some(Decision::Keep(Side::Left)))
    );
    assert_eq!(store.audit_for_record(LINK, &key("k3")).unwrap(), vec![audit.clone()]);
    let missing = store.decide_review(LINK, 424_242, &Decision::Keep(Side::Left), &audit, ts(T0 + 3));
    assert!(matches!(missing, Err(StoreError::NotFound { .. })), "{missing:?}");
    assert_eq!(
        store.audit_for_record(LINK, &key("k3")).unwrap().len(),
        1,
        "nothing kept of a failed decision"
    );

    // The second entry is not dead: retrying both retries neither.
    assert!(
        matches!(store.retry_dead(&[first, second], ts(T0 + 4)), Err(StoreError::NotFound { id, .. }) if id == second)
    );
    assert_eq!(store.outbox_entry(first).unwrap().status, OutboxStatus::Dead);
    store.retry_dead(&[first], ts(T0 + 5)).unwrap();
    let retried = store.outbox_entry(first).unwrap();
    assert_eq!(
        (retried.status, retried.attempts, retried.next_attempt_at),
        (OutboxStatus::Pending, 0, ts(T0 + 5))
    );
    assert!(matches!(store.drop_dead(first, ts(T0 + 6)), Err(StoreError::NotFound { .. })));
}

/// A webhook is kept until a run that started after it settles it; the same id for the same
/// link and side within the replay window is refused and keeps nothing, and outside it (or for
/// the other side) is a new webhook; settled ones are forgotten after the window.
pub fn webhooks_wait_until_a_run_reads_them_and_a_replay_is_refused<F: Fixture>(fixture: &F) {
    let mut store = fixture.open();
    let hook = |id: &str, side: Side, at: i64| NewWebhook {
        link: LINK.to_string(),
        side,
        hook_id: id.to_string(),
        received_at: ts(at),
        records: vec!["KNVB1234567".to_string()],
    };
    assert_eq!(store.waiting_webhook(LINK).unwrap(), None);
    assert!(store.accept_webhook(&hook("msg_1", Side::Left, 10_000), ts(0)).unwrap());
    assert!(!store.accept_webhook(&hook("msg_1", Side::Left, 11_000), ts(1_000)).unwrap(), "a replay");
    assert!(store.accept_webhook(&hook("msg_1", Side::Right, 11_000), ts(1_000)).unwrap(), "the other side");
    assert!(store.accept_webhook(&hook("msg_2", Side::Left, 12_000), ts(2_000)).unwrap());
    assert_eq!(store.waiting_webhook(LINK).unwrap(), Some(ts(10_000)), "the oldest waits");
    assert_eq!(store.waiting_webhook("other").unwrap(), None, "per link");

    // A run that started at 11,500 read after the first two, not after the third.
    store.settle_webhooks(LINK, ts(11_500), ts(0)).unwrap();
    assert_eq!(store.waiting_webhook(LINK).unwrap(), Some(ts(12_000)));
    assert!(
        !store.accept_webhook(&hook("msg_1", Side::Left, 13_000), ts(3_000)).unwrap(),
        "read, still known"
    );
    // Once forgotten, past the window, the id is new again.
    store.settle_webhooks(LINK, ts(12_500), ts(20_000)).unwrap();
    assert_eq!(store.waiting_webhook(LINK).unwrap(), None);
    assert!(store.accept_webhook(&hook("msg_1", Side::Left, 30_000), ts(20_000)).unwrap());
    assert_eq!(fixture.open().waiting_webhook(LINK).unwrap(), Some(ts(30_000)), "kept on disk");
}

/// The records the waiting webhooks of a link name, each once with its side, for a targeted
/// run; none when a waiting webhook names no record (the side must be read) or more webhooks
/// The records the waiting webhooks of a link name, each once with its side, for a targeted
/// run, with the webhooks read; none when a waiting webhook names no record (the side must be
/// read) or more webhooks wait than a targeted run takes; nothing when none waits. Settling
/// the webhooks read leaves one that came meanwhile waiting, though it came before.
pub fn waiting_webhooks_name_the_records_a_targeted_run_reads<F: Fixture>(fixture: &F) {
    let mut store = fixture.open();
    let hook = |id: &str, side: Side, at: i64, records: &[&str]| NewWebhook {
        link: LINK.to_string(),
        side,
        hook_id: id.to_string(),
        received_at: ts(at),
        records: records.iter().map(|record| (*record).to_string()).collect(),
    };
    let none = Some(NamedRecords::default());
    assert_eq!(store.webhook_records(LINK, 10).unwrap(), none, "none waits");
    store.accept_webhook(&hook("msg_1", Side::Left, 10_000, &["KNVB1234567"]), ts(0)).unwrap();
    store.accept_webhook(&hook("msg_2", Side::Left, 10_001, &["KNVB1234567", "KNVB7654321"]), ts(0)).unwrap();
    store.accept_webhook(&hook("msg_3", Side::Right, 10_002, &["KNVB1234567"]), ts(0)).unwrap();
    let named = store.webhook_records(LINK, 10).unwrap().expect("all name records");
    assert_eq!(named.webhooks.len(), 3);
    let mut records = named.records.clone();
    records.sort();
    assert_eq!(
        records,
        vec![
            (Side::Left, "KNVB1234567".to_string()),
            (Side::Left, "KNVB7654321".to_string()),
            (Side::Right, "KNVB1234567".to_string()),
        ]
    );
    assert_eq!(store.webhook_records(LINK, 2).unwrap(), None, "more webhooks wait than 2");
    assert_eq!(store.webhook_records("other", 10).unwrap(), none, "per link");

    // One that came earlier but was kept after the targeted run read the others stays.
    store.accept_webhook(&hook("msg_0", Side::Right, 9_000, &["KNVB5555555"]), ts(0)).unwrap();
    store.settle_named_webhooks(&named.webhooks).unwrap();
    let left = store.webhook_records(LINK, 10).unwrap().expect("it names a record");
    assert_eq!(left.records, vec![(Side::Right, "KNVB5555555".to_string())]);
    assert_eq!(store.waiting_webhook(LINK).unwrap(), Some(ts(9_000)));

    store.accept_webhook(&hook("msg_4", Side::Right, 10_003, &[]), ts(0)).unwrap();
    assert_eq!(store.webhook_records(LINK, 10).unwrap(), None, "one names no record");
    store.settle_webhooks(LINK, ts(10_004), ts(0)).unwrap();
    assert_eq!(store.webhook_records(LINK, 10).unwrap(), none, "read ones are not named");
}

// ---------------------------------------------------------------------------------------------
// Purging the history and erasing a record.

/// Ends `run` of `lease`'s link with `status` at `at`.
fn end_run<S: StateStore>(store: &mut S, lease: &Lease, run: RunId, mode: &str, status: RunStatus, at: i64) {
    let end = RunEnd { run, status, mode: mode.into(), stats: json!({}), error: None, at: ts(at) };
    store.finish_run(lease, end).expect("finish a run");
}

/// The history of a link older than a time is deleted: its audit entries, its runs that ended,
/// and its finished outbox entries and closed reviews, with the values they hold; what
/// fieldsync still needs stays (a run still planning, the last run that read both sides,
/// unfinished entries, live reviews, newer rows), and so does every other link's history.
pub fn history_older_than_a_time_is_purged_but_what_fieldsync_needs_stays<F: Fixture>(fixture: &F) {
    let (mut store, fields, lease) = leased(fixture, &["email"]);
    let other = lease_of(&mut store, "other");
    let cutoff = T0 + 500;
    let old_full = store.start_run(&lease, "full", true, ts(T0)).unwrap();
    end_run(&mut store, &lease, old_full, "full", RunStatus::Done, T0 + 10);
    let old_delivery = store.start_run(&lease, "deliver", true, ts(T0 + 20)).unwrap();
    end_run(&mut store, &lease, old_delivery, "deliver", RunStatus::Done, T0 + 30);
    // Its chunk: entries that will be finished long ago, dead, pending or finished lately,
    // reviews closed long ago or lately, or open; audit old and new.
    let chunk = PlanChunk {
        entries: ["k1", "k2", "k3", "k4", "k5"]
            .iter()
            .map(|record| outbox_entry(record, Side::Right, Operation::Update))
            .collect(),
        reviews: vec![
            review("k1", Some("email"), 1, 2),
            review("k2", Some("email"), 1, 2),
            review("k3", Some("email"), 1, 2),
        ],
        audit: vec![
            audit_entry(None, "k1", AuditEvent::Detected, T0 + 1),
            audit_entry(None, "k2", AuditEvent::Written, cutoff - 1),
            audit_entry(None, "k1", AuditEvent::Resolved, cutoff),
        ],
        ..PlanChunk::default()
    };
    let recent = planned(&mut store, &lease, &fields, true, chunk, T0 + 40);
    end_run(&mut store, &lease, recent, "incremental", RunStatus::Done, cutoff + 500);
    let [done, superseded, dead, pending, done_lately] = <[i64; 5]>::try_from(newest_ids(&store, 5)).unwrap();
    let finish = |id, status| outcome(id, status, None, Some("a message"), true);
    settle(
        &mut store,
        &lease,
        &fields,
        None,
        vec![
            finish(done, OutboxStatus::Done),
            finish(superseded, OutboxStatus::Superseded),
            finish(dead, OutboxStatus::Dead),
        ],
        T0 + 100,
    );
    settle(&mut store, &lease, &fields, None, vec![finish(done_lately, OutboxStatus::Done)], cutoff + 100);
    let review_id =
        |store: &F::Store, record: &str| store.live_reviews_for(LINK, &[key(record)]).unwrap()[0].id;
    let (closed, closed_lately, open) =
        (review_id(&store, "k1"), review_id(&store, "k2"), review_id(&store, "k3"));
    let mut closing = Vec::new();
    for (id, at) in [(closed, T0 + 100), (closed_lately, cutoff + 100)] {
        let run = store.start_run(&lease, "deliver", false, ts(at)).unwrap();
        let publication = PlanPublication { closed_reviews: vec![id], ..PlanPublication::default() };
        store.publish_plan(&lease, run, &fields, publication, ts(at)).unwrap();
        end_run(&mut store, &lease, run, "deliver", RunStatus::Done, at + 1);
        closing.push(run);
    }
    // The last run still plans: it ended (killed while planning, say) and nothing discarded
    // its plan yet.
    let planning = store.start_run(&lease, "incremental", false, ts(T0 + 60)).unwrap();
    end_run(&mut store, &lease, planning, "incremental", RunStatus::Failed, T0 + 70);
    // The other link: an old run, its last that read both sides, then an old delivery.
    let other_full = store.start_run(&other, "full", true, ts(T0)).unwrap();
    end_run(&mut store, &other, other_full, "full", RunStatus::Done, T0 + 10);
    let other_delivery = store.start_run(&other, "deliver", true, ts(T0 + 20)).unwrap();
    end_run(&mut store, &other, other_delivery, "deliver", RunStatus::Done, T0 + 30);
    let other_audit = PlanChunk {
        audit: vec![audit_entry(None, "k1", AuditEvent::Agreed, T0 + 1)],
        ..PlanChunk::default()
    };
    store.commit_plan_chunk(&other, other_full, &fields, other_audit, ts(T0 + 1)).unwrap();
    let runs_of = |store: &F::Store, link: &str| -> Vec<RunId> {
        let mut runs: Vec<RunId> =
            store.list_runs(Some(link), 100).unwrap().iter().map(|run| run.id).collect();
        runs.sort();
        runs
    };

    let purged = store.purge_history(LINK, ts(cutoff)).unwrap();
    assert_eq!(
        purged,
        crate::PurgedHistory { runs: 3, audit_entries: 2, outbox_entries: 2, reviews: 1 },
        "the old full run and delivery, and the delivery that closed a review long ago"
    );
    assert_eq!(
        runs_of(&store, LINK),
        vec![recent, closing[1], planning],
        "the run still planning and newer ones stay"
    );
    assert_eq!(store.audit_for_record(LINK, &key("k1")).unwrap().len(), 1, "the entry at the cutoff stays");
    assert!(store.audit_for_record(LINK, &key("k2")).unwrap().is_empty());
    let statuses: Vec<(OutboxId, OutboxStatus)> = store
        .list_outbox(Some(LINK), None, 100)
        .unwrap()
        .iter()
        .map(|entry| (entry.id, entry.status))
        .collect();
    let mut statuses = statuses;
    statuses.sort_by_key(|(id, _)| *id);
    assert_eq!(
        statuses,
        vec![(dead, OutboxStatus::Dead), (pending, OutboxStatus::Pending), (done_lately, OutboxStatus::Done)]
    );
    let mut reviews: Vec<ReviewId> =
        store.list_reviews(Some(LINK), None, 100).unwrap().iter().map(|review| review.id).collect();
    reviews.sort();
    assert_eq!(reviews, vec![closed_lately, open]);
    // The other link's history is its own.
    assert_eq!(runs_of(&store, "other"), vec![other_full, other_delivery]);
    assert_eq!(store.audit_for_record("other", &key("k1")).unwrap().len(), 1);
    // Its purge keeps its last run that read both sides, however old.
    let purged = store.purge_history("other", ts(cutoff)).unwrap();
    assert_eq!((purged.runs, purged.audit_entries), (1, 1));
    assert_eq!(runs_of(&store, "other"), vec![other_full]);
    // Nothing more to purge.
    assert_eq!(store.purge_history(LINK, ts(cutoff)).unwrap(), crate::PurgedHistory::default());
    store.release(lease).unwrap();
    store.release(other).unwrap();
}

/// An erased record leaves no row behind: its baseline, outbox entries, reviews and audit
/// entries are removed, its ids struck from the webhooks that name it (one naming nothing else
/// removed), and its key and values struck from messages about other records and runs; one
/// audit entry, named by the key's digest and holding no value, tells of the erasure. Another
/// record, and the same key of another link, keep everything.
pub fn an_erased_record_leaves_no_row_but_an_audit_of_its_digest<F: Fixture>(fixture: &F) {
    let mut store = fixture.open();
    let fields = layout(&mut store, &["email", "mobile"]);
    let member = |record: &str, email: &str, mobile: &str| Baseline {
        left_id: Some(RecordId::new(format!("L-{record}"))),
        right_id: Some(RecordId::new(format!("wp-{record}"))),
        fields: vec![
            field(Some(Value::from(email)), Some(T0), None, Some(Origin::Left)),
            field(Some(Value::from(mobile)), None, Some(T0), Some(Origin::Right)),
        ],
        ..Baseline::empty(key(record), 2)
    };
    let erased_member = member("M-1042", "anna.devries@example.nl", "+31612345678");
    let kept_member = member("M-2001", "bram.jansen@example.nl", "+31687654321");
    put(&mut store, &fields, &[&erased_member, &kept_member]);
    let other_fields = store.layout("other", &names(&["email", "mobile"])).unwrap();
    commit_baselines(&mut store, "other", &other_fields, vec![BaselineWrite::Put(erased_member.clone())]);
    let (lease, other) = (lease_of(&mut store, LINK), lease_of(&mut store, "other"));
    let write = |record: &str, email: &str| NewOutboxEntry {
        payload: json!({ "version": 2, "fields": [{ "name": "email", "path": "mail", "value": email }] })
            .to_string(),
        ..outbox_entry(record, Side::Right, Operation::Update)
    };
    let valued = |record: &str, event: AuditEvent, value: &str| AuditEntry {
        value: Some(Value::from(value)),
        reason: "changed on the left side only".into(),
        ..audit_entry(None, record, event, T0 + 1)
    };
    let chunk = PlanChunk {
        entries: vec![write("M-1042", "anna.devries@example.nl"), write("M-2001", "bram.jansen@example.nl")],
        reviews: vec![NewReview {
            left: Some(Value::from("+31612345678")),
            right: Some(Value::from("+31611111111")),
            ..review("M-1042", Some("mobile"), 1, 2)
        }],
        audit: vec![
            valued("M-1042", AuditEvent::Resolved, "anna.devries@example.nl"),
            valued("M-2001", AuditEvent::Resolved, "bram.jansen@example.nl"),
            AuditEntry {
                reason: "gave up after 8 attempts: rejected: anna.devries@example.nl is taken".into(),
                ..audit_entry(None, "M-2001", AuditEvent::Failed, T0 + 2)
            },
        ],
        ..PlanChunk::default()
    };
    let run = planned(&mut store, &lease, &fields, true, chunk, T0);
    let failed = RunEnd {
        run,
        status: RunStatus::Failed,
        mode: "incremental".into(),
        stats: json!({}),
        error: Some("reading the left side failed: record M-1042 cannot be read".into()),
        at: ts(T0 + 5),
    };
    store.finish_run(&lease, failed).unwrap();
    let other_chunk = PlanChunk {
        audit: vec![valued("M-1042", AuditEvent::Resolved, "anna.devries@example.nl")],
        ..PlanChunk::default()
    };
    planned(&mut store, &other, &other_fields, true, other_chunk, T0);
    let hook = |id: &str, side: Side, records: &[&str]| NewWebhook {
        link: LINK.into(),
        side,
        hook_id: id.into(),
        received_at: ts(T0),
        records: records.iter().map(|record| record.to_string()).collect(),
    };
    store.accept_webhook(&hook("only-her", Side::Left, &["L-M-1042"]), ts(0)).unwrap();
    store.accept_webhook(&hook("both", Side::Right, &["wp-M-1042", "wp-M-2001"]), ts(0)).unwrap();
    // A left id on the right side is another record's.
    store.accept_webhook(&hook("elsewhere", Side::Right, &["L-M-1042"]), ts(0)).unwrap();
    store.release(lease).unwrap();
    let count_before = store.baseline_count(LINK).unwrap();

    let erased = store.erase_record(LINK, &key("M-1042"), "a person", ts(T0 + 1_000)).unwrap();
    assert_eq!(
        (
            erased.baseline,
            erased.outbox_entries,
            erased.reviews,
            erased.audit_entries,
            erased.webhooks,
            erased.messages
        ),
        (true, 1, 1, 1, 2, 2),
        "{erased:?}"
    );
    let member_key = key("M-1042");
    assert!(store.baselines(LINK, &fields, std::slice::from_ref(&member_key)).unwrap().is_empty());
    assert_eq!(store.baseline_count(LINK).unwrap(), count_before - 1);
    assert!(
        store.list_outbox(Some(LINK), None, 100).unwrap().iter().all(|entry| entry.write.key != member_key)
    );
    assert!(store.list_reviews(Some(LINK), None, 100).unwrap().is_empty());
    assert!(store.audit_for_record(LINK, &member_key).unwrap().is_empty());
    let named = store.webhook_records(LINK, 10).unwrap().expect("every webhook names a record");
    let mut records = named.records;
    records.sort();
    assert_eq!(records, vec![(Side::Right, "L-M-1042".into()), (Side::Right, "wp-M-2001".into())]);
    assert_eq!(named.webhooks.len(), 2, "the webhook naming only her is gone");
    let error = store.run(run).unwrap().error.unwrap();
    assert_eq!(error, "reading the left side failed: record (erased) cannot be read");
    let kept_audit = store.audit_for_record(LINK, &key("M-2001")).unwrap();
    assert_eq!(kept_audit.len(), 2);
    assert_eq!(kept_audit[0].value, Some(Value::from("bram.jansen@example.nl")));
    assert_eq!(kept_audit[1].reason, "gave up after 8 attempts: rejected: (erased) is taken");
    // One entry tells of it, by the key's digest, with no value.
    let digest = key(&crate::key_digest(LINK, &member_key));
    let [told] = <[AuditEntry; 1]>::try_from(store.audit_for_record(LINK, &digest).unwrap()).unwrap();
    assert_eq!(
        (told.event, told.values, told.at),
        (AuditEvent::Erased, crate::AuditValues::None, ts(T0 + 1_000))
    );
    assert_eq!(
        (&told.base, &told.left, &told.right, &told.value, told.run_id),
        (&None, &None, &None, &None, None)
    );
    assert!(told.reason.starts_with("record erased by a person: its baseline"), "{}", told.reason);
    assert!(!told.reason.contains("M-1042"));
    // The other record and the other link keep theirs.
    assert_eq!(store.baselines(LINK, &fields, &[key("M-2001")]).unwrap().len(), 1);
    assert_eq!(store.list_outbox(Some(LINK), None, 100).unwrap().len(), 1);
    assert_eq!(store.baselines("other", &other_fields, std::slice::from_ref(&member_key)).unwrap().len(), 1);
    assert_eq!(store.audit_for_record("other", &member_key).unwrap().len(), 1);
    // Erasing again finds nothing, and says so.
    let again = store.erase_record(LINK, &member_key, "a person", ts(T0 + 2_000)).unwrap();
    assert_eq!(
        (
            again.baseline,
            again.outbox_entries,
            again.reviews,
            again.audit_entries,
            again.webhooks,
            again.messages
        ),
        (false, 0, 0, 0, 0, 0)
    );
    store.release(other).unwrap();
}

/// What `a_member_history` wrote: the texts of the member it is about, to be erased, and of
/// another member, to be kept.
pub struct MemberHistory {
    /// The member's key.
    pub key: RecordKey,
    /// Its key, ids and values, every one of which the store held in its rows.
    pub erased: Vec<&'static str>,
    /// Another member's values, which an erasure of the first keeps.
    pub kept: Vec<&'static str>,
}

/// Writes through the use cases what syncing `LINK` leaves of a member (`M-1042`: an e-mail
/// address that changed from `anna@devries.nl` to `anna.devries@example.nl`, a mobile number
/// `+31612345678` decided in a review) among 200 others: baselines written and moved several
/// times, an outbox entry planned, sent and done, a review opened, decided by a person and
/// closed, audit entries of every run, a webhook naming it, and a failed run whose error names
/// it. For the tests that look for the member in a store's files after it was erased.
pub fn a_member_history<S: StateStore>(store: &mut S) -> MemberHistory {
    let fields = layout(store, &["email", "mobile", "first_name"]);
    let member = |record: &str, email: &str, mobile: &str, name: &str| Baseline {
        left_id: Some(RecordId::new(record)),
        right_id: Some(RecordId::new(format!("wp-{record}"))),
        fields: vec![
            field(Some(Value::from(email)), Some(T0), None, Some(Origin::Left)),
            field(Some(Value::from(mobile)), None, Some(T0), Some(Origin::Right)),
            field(Some(Value::from(name)), Some(T0), Some(T0), Some(Origin::Both)),
        ],
        ..Baseline::empty(key(record), 3)
    };
    let mut first: Vec<Baseline> = (0..200)
        .map(|number| {
            let record = format!("M-{number:04}");
            member(&record, &format!("member{number}@club.example"), &format!("+316{number:08}"), "Lid")
        })
        .collect();
    first.push(member("M-1042", "anna@devries.nl", "+31655501234", "Anna"));
    first.push(member("M-2001", "bram.jansen@example.nl", "+31687654321", "Bram"));
    let lease = lease_of(store, LINK);
    let agreed = PlanChunk {
        audit: vec![AuditEntry {
            run_id: None,
            key: key("M-1042"),
            field: None,
            event: AuditEvent::Agreed,
            side: None,
            base: None,
            left: None,
            right: None,
            value: None,
            reason: "first sync: both sides already agree on 3 fields".into(),
            at: ts(T0),
            values: AuditValues::Full,
        }],
        baselines: first,
        ..PlanChunk::default()
    };
    let run = planned(store, &lease, &fields, true, agreed, T0);
    end_run(store, &lease, run, "full", RunStatus::Done, T0 + 10);

    // Her e-mail changes on the left and is written to the right; her mobile is a conflict.
    let changed = |field: &str, event: AuditEvent, base: &str, left: &str, right: &str| AuditEntry {
        run_id: None,
        key: key("M-1042"),
        field: Some(field.into()),
        event,
        side: None,
        base: Some(Value::from(base)),
        left: Some(Value::from(left)),
        right: Some(Value::from(right)),
        value: Some(Value::from(left)),
        reason: "changed on the left side only".into(),
        at: ts(T0 + 100),
        values: AuditValues::Full,
    };
    let payload = json!({ "version": 2, "fields": [{
        "name": "email", "path": "/meta/email", "value": "anna.devries@example.nl",
        "expected": "anna@devries.nl", "origin": "left"
    }] });
    let plan = PlanChunk {
        entries: vec![NewOutboxEntry {
            key: key("M-1042"),
            side: Side::Right,
            operation: Operation::Update,
            record_id: Some(RecordId::new("wp-M-1042")),
            payload: payload.to_string(),
            source: None,
        }],
        reviews: vec![NewReview {
            key: key("M-1042"),
            field: Some("mobile".into()),
            kind: ReviewKind::Conflict,
            base: Some(Value::from("+31655501234")),
            left: Some(Value::from("+31612345678")),
            right: Some(Value::from("+31687650000")),
            left_changed: Some(ts(T0 + 90)),
            right_changed: Some(ts(T0 + 95)),
            reason: "conflict: both sides changed it and the strategy is review".into(),
        }],
        audit: vec![
            changed(
                "email",
                AuditEvent::Resolved,
                "anna@devries.nl",
                "anna.devries@example.nl",
                "anna@devries.nl",
            ),
            changed("mobile", AuditEvent::Review, "+31655501234", "+31612345678", "+31687650000"),
        ],
        ..PlanChunk::default()
    };
    let run = planned(store, &lease, &fields, true, plan, T0 + 100);
    let [entry] = <[OutboxId; 1]>::try_from(newest_ids(store, 1)).unwrap();
    let send = store.start_send(&lease, vec![entry], ts(T0 + 110)).unwrap();
    let mut moved = member("M-1042", "anna.devries@example.nl", "+31655501234", "Anna");
    moved.fields[0].left_changed = Some(ts(T0 + 90));
    let delivered = BatchClose {
        send: Some(send),
        outcomes: vec![outcome(entry, OutboxStatus::Done, None, None, true)],
        baselines: vec![BaselineWrite::Put(moved)],
        audit: vec![AuditEntry {
            event: AuditEvent::Written,
            side: Some(Side::Right),
            reason: "written to the right side and read back".into(),
            ..changed(
                "email",
                AuditEvent::Written,
                "anna@devries.nl",
                "anna.devries@example.nl",
                "anna@devries.nl",
            )
        }],
        ..BatchClose::default()
    };
    store.close_batch(&lease, &fields, delivered, ts(T0 + 120)).unwrap();
    let failed = RunEnd {
        run,
        status: RunStatus::Partial,
        mode: "incremental".into(),
        stats: json!({ "writes_done": 1 }),
        error: Some("reading the left side failed: record M-1042 has no valid e-mail".into()),
        at: ts(T0 + 130),
    };
    store.finish_run(&lease, failed).unwrap();
    store.release(lease).unwrap();

    // A person keeps her left mobile; the next run writes it and closes the review.
    let review = store.live_reviews_for(LINK, &[key("M-1042")]).unwrap().remove(0);
    let decision = Decision::Keep(Side::Left);
    let decided = AuditEntry::decided(&review, &decision, ts(T0 + 200));
    store.decide_review(LINK, review.id, &decision, &decided, ts(T0 + 200)).unwrap();
    let lease = lease_of(store, LINK);
    let run = store.start_run(&lease, "incremental", false, ts(T0 + 300)).unwrap();
    let mut settled = member("M-1042", "anna.devries@example.nl", "+31612345678", "Anna");
    settled.fields[1].origin = Some(Origin::Person);
    let chunk = PlanChunk { baselines: vec![settled], ..PlanChunk::default() };
    store.commit_plan_chunk(&lease, run, &fields, chunk, ts(T0 + 300)).unwrap();
    let publication = PlanPublication { closed_reviews: vec![review.id], ..PlanPublication::default() };
    store.publish_plan(&lease, run, &fields, publication, ts(T0 + 300)).unwrap();
    end_run(store, &lease, run, "incremental", RunStatus::Done, T0 + 310);
    store.release(lease).unwrap();
    let hook = NewWebhook {
        link: LINK.into(),
        side: Side::Right,
        hook_id: "msg_1".into(),
        received_at: ts(T0 + 400),
        records: vec!["wp-M-1042".into(), "wp-M-2001".into()],
    };
    store.accept_webhook(&hook, ts(0)).unwrap();
    MemberHistory {
        key: key("M-1042"),
        erased: vec![
            "M-1042",
            "anna.devries@example.nl",
            "anna@devries.nl",
            "+31612345678",
            "+31687650000",
            "+31655501234",
            "Anna",
        ],
        kept: vec!["M-2001", "bram.jansen@example.nl", "+31687654321"],
    }
}
