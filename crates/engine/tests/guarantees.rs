//! The eighteen guarantees of `docs/product.md` ("What must always hold"), proved one by one
//! over two `MemorySystem`s and a real `StateStore`: SQLite in a temporary directory, or with
//! `FIELDSYNC_TEST_STORE=postgres` a schema of its own on a real PostgreSQL (`World`'s store).
//!
//! Every test is named after its guarantee. Where generated inputs add power (baselines,
//! edits on both sides — none, a touch, the same value, different values —, edit times
//! around the grace boundary, conflict strategies, faults) the test is a `proptest` with a
//! modest number of cases. Time is a `FakeClock` whose `sleep` advances it at once, so
//! backoffs and waits cost nothing; retry jitter is fixed by `RunOptions::seed`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use fieldsync_connector::{
    Capabilities, Connector, ConnectorError, ConnectorRecord, Lookup, MemoryConnector, MemoryFault,
    MemorySystem, Page, PageToken, Probe, ReadRequest, Write, WriteResults,
};
use fieldsync_engine::{
    Clock, ConflictStrategy, EngineError, Guard, Limit, LinkSpec, ReadMode, RunOptions, RunReport, SidePair,
    Tie,
};
use fieldsync_model::{FieldType, LinkName, RecordKey, Side, Value};
use fieldsync_store::{
    AuditEntry, AuditEvent, Baseline, Operation, OutboxEntry, OutboxStatus, Review, ReviewStatus, RunStatus,
    StateStore, StoreError,
};
use fieldsync_test_support::{Snapshot, StoreKind, Time, World, link_spec, run_link};
use jiff::Timestamp;
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use serde_json::{Value as Json, json};
use tokio::sync::Notify;

const LINK: &str = "members";
const FIELDS: [&str; 2] = ["email", "name"];
/// The records every generated case starts with, on both sides.
const KEYS: [&str; 3] = ["m0", "m1", "m2"];
/// The values generated edits pick from, per field; few, so that equal values are common.
const POOL: [[&str; 4]; 2] = [["", "ann@club.nl", "bob@club.nl", "cas@club.nl"], ["", "Ann", "Bob", "Cas"]];
const SEED: u64 = 7;

/// Every field of every record: the record's index and key, the field's index and name.
fn cells() -> impl Iterator<Item = (usize, &'static str, usize, &'static str)> {
    KEYS.into_iter().enumerate().flat_map(|(record, key)| {
        FIELDS.into_iter().enumerate().map(move |(field, name)| (record, key, field, name))
    })
}

const CASES: u32 = 64;

fn config() -> ProptestConfig {
    ProptestConfig { cases: CASES, failure_persistence: None, ..ProptestConfig::default() }
}

/// An instant, in milliseconds from a fixed origin.
fn at(ms: i64) -> Timestamp {
    Timestamp::from_millisecond(1_800_000_000_000 + ms).unwrap()
}

fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(future)
}

fn options() -> RunOptions {
    RunOptions { seed: Some(SEED), ..RunOptions::default() }
}

fn full() -> RunOptions {
    RunOptions { full: true, ..options() }
}

fn deliver_only() -> RunOptions {
    RunOptions { deliver_only: true, ..options() }
}

/// The raw form of a pool value; `variant` spells it differently with the same normalised
/// value (upper case e-mail, padded name).
fn raw_value(field: usize, value: usize, variant: bool) -> Json {
    let text = POOL[field][value];
    match (variant, field) {
        (false, _) => json!(text),
        (true, 0) => json!(text.to_uppercase()),
        (true, _) => json!(format!("  {text} ")),
    }
}

// ---------------------------------------------------------------------------------------
// The harness.

/// Two notifications: the gated connector says it is inside a read, and waits to be let go.
#[derive(Clone, Debug, Default)]
struct Gate {
    entered: Arc<Notify>,
    release: Arc<Notify>,
}

/// A memory connector with knobs: without conditional writes (the engine must re-read before
/// writing), or stopping inside its first read until a gate opens.
#[derive(Clone, Debug)]
struct Wrapped {
    inner: MemoryConnector,
    conditional: bool,
    gate: Option<Gate>,
}

impl Wrapped {
    fn plain(system: &MemorySystem) -> Self {
        Self { inner: system.connector(), conditional: true, gate: None }
    }
}

impl Connector for Wrapped {
    fn capabilities(&self) -> Capabilities {
        Capabilities { conditional_writes: self.conditional, ..self.inner.capabilities() }
    }

    async fn check(&mut self, paths: &[String]) -> Result<Probe, ConnectorError> {
        self.inner.check(paths).await
    }

    async fn read_page(
        &mut self,
        request: &ReadRequest,
        token: Option<&PageToken>,
    ) -> Result<Page, ConnectorError> {
        if let Some(gate) = self.gate.take() {
            gate.entered.notify_one();
            gate.release.notified().await;
        }
        self.inner.read_page(request, token).await
    }

    async fn lookup(
        &mut self,
        paths: &[String],
        lookup: &Lookup,
    ) -> Result<Vec<ConnectorRecord>, ConnectorError> {
        self.inner.lookup(paths, lookup).await
    }

    async fn apply(&mut self, writes: &[Write]) -> Result<WriteResults, ConnectorError> {
        let mut writes = writes.to_vec();
        if !self.conditional {
            for write in &mut writes {
                if let Write::Update { fields, .. } | Write::Create { fields } = write {
                    for field in fields {
                        field.expected = None;
                    }
                }
            }
        }
        self.inner.apply(&writes).await
    }

    async fn feed_past_own_writes(
        &mut self,
        since: &fieldsync_connector::Sequence,
        mine: &std::collections::HashSet<fieldsync_model::RecordId>,
    ) -> Result<Option<fieldsync_connector::Sequence>, ConnectorError> {
        self.inner.feed_past_own_writes(since, mine).await
    }
}

/// A world of the link over `FIELDS` with `conflicts`, at `at(0)` on a fake clock that moves
/// the systems' clocks only when a test sets the time.
fn new_world(conflicts: ConflictStrategy) -> World {
    let spec = link_spec("id", &[(FIELDS[0], FieldType::Email), (FIELDS[1], FieldType::Text)], conflicts);
    World::new(spec, Time::Fake { start: at(0), systems_follow: false })
}

/// No guard: for scenarios whose point is not the guard.
fn no_guard() -> Guard {
    Guard { max_delete: Limit::Count(1_000), max_change: Limit::Count(1_000) }
}

/// What the guarantees ask of a world beyond the shared one: fields by their index in
/// `FIELDS`, open work, and equal records on both sides to start from.
trait Guarantees: Sized {
    /// The agreed value of one field, `None` when there is no baseline or no agreed value.
    fn base_value(&mut self, key: &str, field: usize) -> Option<Value>;
    /// The raw value of one field on one side.
    fn raw(&self, side: Side, key: &str, field: usize) -> Json;
    /// The normalised value of one field on one side; `None` when the record is absent.
    fn value(&self, side: Side, key: &str, field: usize) -> Option<Value>;
    /// The pending, sending and dead outbox entries of one record on one side.
    fn open_outbox(&self, key: &str, side: Side) -> Vec<OutboxEntry>;
    /// The open reviews.
    fn open_reviews(&self) -> Vec<Review>;
    /// The open review of one record's field (`None`: of the record as a whole).
    fn open_review(&self, key: &str, field: Option<&str>) -> Option<Review>;
    /// Both sides hold the same records with the same values as `base` for each field, at
    /// `at(0)`; a first full run agrees them without writing.
    async fn seeded(self, records: &[(&str, [Json; 2])]) -> Self;
}

impl Guarantees for World {
    fn base_value(&mut self, key: &str, field: usize) -> Option<Value> {
        self.baseline(key).and_then(|baseline| baseline.fields[field].value.clone())
    }

    fn raw(&self, side: Side, key: &str, field: usize) -> Json {
        self.system(side).value(key, FIELDS[field])
    }

    fn value(&self, side: Side, key: &str, field: usize) -> Option<Value> {
        self.system(side).record(key)?;
        Some(norm(&self.spec, side, field, &self.raw(side, key, field)))
    }

    fn open_outbox(&self, key: &str, side: Side) -> Vec<OutboxEntry> {
        self.outbox()
            .into_iter()
            .filter(|entry| entry.write.key.as_str() == key && entry.write.side == side)
            .filter(|entry| {
                matches!(entry.status, OutboxStatus::Pending | OutboxStatus::Sending | OutboxStatus::Dead)
            })
            .collect()
    }

    fn open_reviews(&self) -> Vec<Review> {
        self.reviews(Some(ReviewStatus::Open))
    }

    fn open_review(&self, key: &str, field: Option<&str>) -> Option<Review> {
        self.open_reviews()
            .into_iter()
            .find(|review| review.review.key.as_str() == key && review.review.field.as_deref() == field)
    }

    async fn seeded(mut self, records: &[(&str, [Json; 2])]) -> Self {
        self.set_time(at(0));
        for (key, values) in records {
            for side in Side::BOTH {
                for (field, value) in values.iter().enumerate() {
                    self.system(side).edit(key, FIELDS[field], value.clone());
                }
            }
        }
        let report = self.run(full()).await;
        assert_eq!(report.status, RunStatus::Done, "{report:#?}");
        assert_eq!(self.writes(), 0, "a first sync of equal records writes nothing");
        self
    }
}

fn norm(spec: &LinkSpec, side: Side, field: usize, raw: &Json) -> Value {
    spec.fields[field].normalisers.get(side).normalise(raw).unwrap()
}

fn text(value: &str) -> Value {
    Value::from(value)
}

/// The tracked fields an outbox entry writes (a delete writes none, whatever it checks).
fn payload_fields(entry: &OutboxEntry) -> Vec<String> {
    if entry.write.operation == Operation::Delete {
        return Vec::new();
    }
    let payload: Json = serde_json::from_str(&entry.write.payload).unwrap();
    payload["fields"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|field| field["name"].as_str().map(str::to_string))
        .collect()
}

fn audit_for<'a>(audit: &'a [AuditEntry], key: &str, field: usize) -> Vec<&'a AuditEntry> {
    audit
        .iter()
        .filter(|entry| entry.key.as_str() == key && entry.field.as_deref() == Some(FIELDS[field]))
        .collect()
}

fn written(audit: &[AuditEntry], key: &str, field: usize, side: Side) -> usize {
    audit_for(audit, key, field)
        .into_iter()
        .filter(|entry| entry.event == AuditEvent::Written && entry.side == Some(side))
        .count()
}

fn mirror_side(side: Side) -> Side {
    side.other()
}

fn mirror(strategy: ConflictStrategy) -> ConflictStrategy {
    match strategy {
        ConflictStrategy::Prefer(side) => ConflictStrategy::Prefer(mirror_side(side)),
        ConflictStrategy::LastWriteWins { grace, tie: Tie::Side(side) } => {
            ConflictStrategy::LastWriteWins { grace, tie: Tie::Side(mirror_side(side)) }
        }
        other => other,
    }
}

// ---------------------------------------------------------------------------------------
// Generated cases: a baseline per record and field, then an edit per record, side and field.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Edit {
    /// Not touched.
    Keep,
    /// Saved again with the same value (a new modified time).
    Touch,
    /// Set to a pool value, maybe spelled differently.
    Set(usize, bool),
}

#[derive(Clone, Debug)]
struct RecordCase {
    /// Pool index of each field's baseline value.
    base: [usize; 2],
    /// Per side (left, right), per field.
    edits: [[Edit; 2]; 2],
    /// Per side: when its edits are stamped, in ms from the seed (the cursor); from one
    /// overlap before it to a few seconds after.
    offsets: [i64; 2],
}

#[derive(Clone, Debug)]
struct Case {
    records: Vec<RecordCase>,
    conflicts: ConflictStrategy,
    full: bool,
}

fn side_strategy() -> impl Strategy<Value = Side> {
    prop_oneof![Just(Side::Left), Just(Side::Right)]
}

fn tie_strategy() -> impl Strategy<Value = Tie> {
    prop_oneof![side_strategy().prop_map(Tie::Side), Just(Tie::Review)]
}

fn conflicts_strategy() -> impl Strategy<Value = ConflictStrategy> {
    prop_oneof![
        Just(ConflictStrategy::Review),
        side_strategy().prop_map(ConflictStrategy::Prefer),
        (prop_oneof![Just(0u64), Just(1_000), 0u64..4_000], tie_strategy()).prop_map(|(grace, tie)| {
            ConflictStrategy::LastWriteWins { grace: Duration::from_millis(grace), tie }
        }),
    ]
}

fn edit_strategy() -> impl Strategy<Value = Edit> {
    prop_oneof![
        3 => Just(Edit::Keep),
        1 => Just(Edit::Touch),
        4 => (0..4usize, any::<bool>()).prop_map(|(value, variant)| Edit::Set(value, variant)),
    ]
}

fn record_strategy() -> impl Strategy<Value = RecordCase> {
    (
        proptest::array::uniform2(0..4usize),
        proptest::array::uniform2(proptest::array::uniform2(edit_strategy())),
        proptest::array::uniform2(-1_000i64..=3_000),
    )
        .prop_map(|(base, edits, offsets)| RecordCase { base, edits, offsets })
}

fn case_strategy() -> impl Strategy<Value = Case> {
    (proptest::collection::vec(record_strategy(), KEYS.len()), conflicts_strategy(), any::<bool>())
        .prop_map(|(records, conflicts, full)| Case { records, conflicts, full })
}

/// What a generated case looked like just before, and just after, the run that saw its edits.
struct Played {
    world: World,
    /// Per record, per field: the agreed value before the edits.
    base: Vec<[Value; 2]>,
    /// Per side, per record, per field: the raw value before and after the run.
    before: SidePair<Vec<[Json; 2]>>,
    after: SidePair<Vec<[Json; 2]>>,
    report: RunReport,
    audit: Vec<AuditEntry>,
}

impl Played {
    fn before_value(&self, side: Side, record: usize, field: usize) -> Value {
        norm(&self.world.spec, side, field, &self.before.get(side)[record][field])
    }

    fn after_value(&self, side: Side, record: usize, field: usize) -> Value {
        norm(&self.world.spec, side, field, &self.after.get(side)[record][field])
    }

    /// Whether a side changed the field (its normalised value differs from the baseline).
    fn changed(&self, side: Side, record: usize, field: usize) -> bool {
        self.before_value(side, record, field) != self.base[record][field]
    }
}

fn raws(world: &World, side: Side) -> Vec<[Json; 2]> {
    KEYS.iter().map(|key| [world.raw(side, key, 0), world.raw(side, key, 1)]).collect()
}

/// Seeds both sides with the case's baseline, applies its edits (on the mirrored sides, with
/// the mirrored configuration, when `swap`), queues a write fault if asked, and runs once.
async fn play(case: &Case, swap: bool, fault: Option<(Side, MemoryFault)>) -> Played {
    let conflicts = if swap { mirror(case.conflicts) } else { case.conflicts };
    let seed: Vec<(&str, [Json; 2])> = KEYS
        .iter()
        .zip(&case.records)
        .map(|(key, record)| {
            (*key, [raw_value(0, record.base[0], false), raw_value(1, record.base[1], false)])
        })
        .collect();
    let mut world = new_world(conflicts);
    world.spec.guard = no_guard();
    let mut world = world.seeded(&seed).await;
    let base = case
        .records
        .iter()
        .map(|record| {
            [
                norm(&world.spec, Side::Left, 0, &raw_value(0, record.base[0], false)),
                norm(&world.spec, Side::Left, 1, &raw_value(1, record.base[1], false)),
            ]
        })
        .collect();
    apply_edits(&world, case, swap);
    if let Some((side, fault)) = fault {
        world.system(side).inject(fault);
    }
    let before = SidePair::new(raws(&world, Side::Left), raws(&world, Side::Right));
    // The systems' clocks stand at the run: its writes are stamped after every edit.
    world.set_time(at(10_000));
    let report = world.run(if case.full { full() } else { options() }).await;
    let audit = world.audit(&report);
    let after = SidePair::new(raws(&world, Side::Left), raws(&world, Side::Right));
    Played { world, base, before, after, report, audit }
}

fn apply_edits(world: &World, case: &Case, swap: bool) {
    for (key, record) in KEYS.iter().zip(&case.records) {
        for (index, side) in Side::BOTH.into_iter().enumerate() {
            let edits = record.edits[index];
            if edits.iter().all(|edit| *edit == Edit::Keep) {
                continue;
            }
            let system = world.system(if swap { side.other() } else { side });
            system.set_now(at(record.offsets[index]));
            for (field, edit) in edits.iter().enumerate() {
                match *edit {
                    Edit::Keep => {}
                    Edit::Touch => system.edit(key, FIELDS[field], system.value(key, FIELDS[field])),
                    Edit::Set(value, variant) => {
                        system.edit(key, FIELDS[field], raw_value(field, value, variant))
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// 1, 2, 4, 5, 6, 12, 13: generated edits against generated baselines.

proptest! {
    #![proptest_config(config())]

    /// 1. Detection never misses a real change (it may report a false one): every field one
    /// side changed since the baseline is settled or held for review by the run that reads
    /// it — incremental (edits stamped from one overlap before the cursor on) or full.
    #[test]
    fn guarantee_01_detection_never_misses_a_change(case in case_strategy()) {
        let played = block_on(play(&case, false, None));
        for (record, key, field, name) in cells() {
            let changed = Side::BOTH.into_iter().filter(|side| played.changed(*side, record, field)).count();
            if changed == 0 {
                continue;
            }
            let seen = audit_for(&played.audit, key, field)
                .iter()
                .any(|entry| matches!(entry.event, AuditEvent::Resolved | AuditEvent::Agreed | AuditEvent::Review));
            prop_assert!(seen, "the change of {key}.{} was missed: {:#?}", name, played.report);
        }
        for (index, side) in Side::BOTH.into_iter().enumerate() {
            let changed_records = (0..KEYS.len())
                .filter(|&record| (0..FIELDS.len()).any(|field| played.changed(side, record, field)))
                .count() as u64;
            prop_assert!(played.report.stats.side(side).changed >= changed_records, "side {index}");
        }
    }

    /// 2. A field that neither side changed is never written: its raw value stays as it was
    /// on both sides (even when another field of the record is written), no outbox entry
    /// carries it, and the audit has no write of it.
    #[test]
    fn guarantee_02_unchanged_field_never_written(case in case_strategy()) {
        let played = block_on(play(&case, false, None));
        let outbox = played.world.outbox();
        for (record, key, field, name) in cells() {
            if Side::BOTH.into_iter().any(|side| played.changed(side, record, field)) {
                continue;
            }
            for side in Side::BOTH {
                prop_assert_eq!(
                    &played.after.get(side)[record][field],
                    &played.before.get(side)[record][field],
                    "{}.{} was written on the {} side", key, name, side
                );
                prop_assert_eq!(written(&played.audit, key, field, side), 0);
            }
            let planned = outbox
                .iter()
                .filter(|entry| entry.write.key.as_str() == key)
                .any(|entry| payload_fields(entry).iter().any(|planned| planned == name));
            prop_assert!(!planned, "a write of the unchanged {key}.{} was planned", name);
        }
    }

    /// 4. No edit is lost silently: a value is overwritten only by a strategy's decision, the
    /// audit then holds both values and the reason, and under `review` neither side is written.
    #[test]
    fn guarantee_04_no_silent_lost_edit(case in case_strategy()) {
        let played = block_on(play(&case, false, None));
        let reviews = played.world.open_reviews();
        for (record, key, field, name) in cells() {
            let left = played.before_value(Side::Left, record, field);
            let right = played.before_value(Side::Right, record, field);
            let conflict = played.changed(Side::Left, record, field)
                && played.changed(Side::Right, record, field)
                && left != right;
            let entries = audit_for(&played.audit, key, field);
            for side in Side::BOTH {
                let before = played.before_value(side, record, field);
                let after = played.after_value(side, record, field);
                if before == after {
                    continue;
                }
                // Overwritten: the audit holds both values, the new one and the reason.
                let decision = entries.iter().find(|entry| {
                    entry.event == AuditEvent::Resolved
                        && entry.left.as_ref() == Some(&left)
                        && entry.right.as_ref() == Some(&right)
                        && entry.value.as_ref() == Some(&after)
                        && !entry.reason.is_empty()
                });
                prop_assert!(decision.is_some(), "{key}.{} overwritten on the {side} side without an audit", name);
                if played.changed(side, record, field) {
                    // The side's own edit was overwritten: only a conflict rule may do that.
                    let decision = decision.unwrap();
                    prop_assert!(conflict);
                    prop_assert!(decision.reason.starts_with("conflict"), "{}", decision.reason);
                    prop_assert_eq!(decision.base.as_ref(), Some(&played.base[record][field]));
                }
            }
            if !conflict {
                continue;
            }
            let held = match case.conflicts {
                ConflictStrategy::Review => true,
                ConflictStrategy::LastWriteWins { tie: Tie::Review, grace } => {
                    let apart = (case.records[record].offsets[0] - case.records[record].offsets[1]).unsigned_abs();
                    u128::from(apart) <= grace.as_millis()
                }
                _ => false,
            };
            if held {
                for side in Side::BOTH {
                    prop_assert_eq!(&played.after.get(side)[record][field], &played.before.get(side)[record][field]);
                }
                let review = reviews.iter().find(|review| {
                    review.review.key.as_str() == key && review.review.field.as_deref() == Some(name)
                });
                prop_assert!(review.is_some(), "no review for {key}.{}", name);
                let review = review.unwrap();
                prop_assert_eq!(review.review.left.as_ref(), Some(&left));
                prop_assert_eq!(review.review.right.as_ref(), Some(&right));
            } else {
                let decided = entries.iter().any(|entry| {
                    entry.event == AuditEvent::Resolved
                        && entry.reason.starts_with("conflict")
                        && entry.left.as_ref() == Some(&left)
                        && entry.right.as_ref() == Some(&right)
                });
                prop_assert!(decided, "the conflict on {key}.{} has no decision in the audit", name);
            }
        }
    }

    /// 5. Two sides changed to the same value (spelled alike or not) make no conflict and no
    /// write: no review, no conflict decision, nothing planned, and the baseline moves.
    #[test]
    fn guarantee_05_same_value_no_conflict_no_write(case in case_strategy()) {
        let mut played = block_on(play(&case, false, None));
        let outbox = played.world.outbox();
        let mut same = 0;
        for (record, key, field, name) in cells() {
            let value = played.before_value(Side::Left, record, field);
            if !(played.changed(Side::Left, record, field)
                && played.changed(Side::Right, record, field)
                && value == played.before_value(Side::Right, record, field))
            {
                continue;
            }
            same += 1;
            for side in Side::BOTH {
                prop_assert_eq!(&played.after.get(side)[record][field], &played.before.get(side)[record][field]);
            }
            prop_assert!(played.world.open_review(key, Some(name)).is_none());
            let conflict = audit_for(&played.audit, key, field)
                .iter()
                .any(|entry| entry.reason.starts_with("conflict") || entry.event == AuditEvent::Review);
            prop_assert!(!conflict, "{key}.{} became a conflict", name);
            let planned = outbox
                .iter()
                .filter(|entry| entry.write.key.as_str() == key)
                .any(|entry| payload_fields(entry).iter().any(|planned| planned == name));
            prop_assert!(!planned);
            prop_assert_eq!(played.world.base_value(key, field), Some(value));
        }
        prop_assert!(played.report.stats.false_conflicts >= same);
    }

    /// 6. A second run with no new edits writes nothing; nor does a touch (a new modified
    /// time, the same values) on every record of both sides; nor a full run after it.
    #[test]
    fn guarantee_06_second_run_and_touch_write_nothing(case in case_strategy()) {
        block_on(async {
            let Played { mut world, .. } = play(&case, false, None).await;
            let writes = world.writes();
            let planned = world.outbox().len();
            world.clock.set(at(20_000));
            let second = world.run(options()).await;
            prop_assert_eq!(world.writes(), writes, "{:#?}", second);
            prop_assert_eq!(world.outbox().len(), planned);
            prop_assert_eq!(second.stats.writes_done, 0);
            world.set_time(at(30_000));
            for side in Side::BOTH {
                let system = world.system(side);
                for key in KEYS {
                    for field in FIELDS {
                        system.edit(key, field, system.value(key, field));
                    }
                }
            }
            world.clock.set(at(40_000));
            let touched = world.run(options()).await;
            prop_assert_eq!(world.writes(), writes, "{:#?}", touched);
            prop_assert_eq!(world.outbox().len(), planned);
            let again = world.run(full()).await;
            prop_assert_eq!(world.writes(), writes, "{:#?}", again);
            prop_assert_eq!(world.outbox().len(), planned);
            Ok(())
        })?;
    }

    /// 12. The outcome depends on values, baselines, timestamps and configuration only: the
    /// same case with left and right swapped (and the configuration mirrored), with a
    /// transient write failure on one side, ends in the mirrored state.
    #[test]
    fn guarantee_12_outcome_independent_of_order(
        case in case_strategy(),
        fault in proptest::option::of((side_strategy(), any::<bool>())),
    ) {
        block_on(async {
            let Played { world: mut straight, .. } = play(&case, false, None).await;
            let fault = fault.map(|(side, lost)| {
                (side, if lost { MemoryFault::WriteLostAnswer } else { MemoryFault::WriteUnavailable })
            });
            let Played { world: mut swapped, .. } = play(&case, true, fault).await;
            for world in [&mut straight, &mut swapped] {
                for hour in 1..=2 {
                    world.set_time(at(10_000 + hour * 3_600_000));
                    world.run(options()).await;
                }
            }
            for side in Side::BOTH {
                prop_assert_eq!(straight.snapshot(side), swapped.snapshot(side.other()));
            }
            let reviews = |world: &World, swap: bool| -> BTreeSet<String> {
                world
                    .open_reviews()
                    .into_iter()
                    .map(|review| {
                        let review = review.review;
                        let (left, right) = if swap { (review.right, review.left) } else { (review.left, review.right) };
                        format!("{} {:?} {left:?} {right:?}", review.key, review.field)
                    })
                    .collect()
            };
            prop_assert_eq!(reviews(&straight, false), reviews(&swapped, true));
            Ok(())
        })?;
    }

    /// 13. Inside the grace window the configured tie side (or review) decides, never the raw
    /// clock: whichever edit is later, however the engine's own clock stands, in whichever
    /// order the edits were made. Outside it the later edit wins.
    #[test]
    fn guarantee_13_grace_window_uses_tie_side_not_clock(
        grace in prop_oneof![Just(0u64), Just(1_000), Just(5_000), 0u64..10_000],
        tie in tie_strategy(),
        delta in prop_oneof![-2i64..=2, -10_000i64..10_000],
        later in side_strategy(),
        left_first in any::<bool>(),
        clock in -3_600_000i64..3_600_000,
    ) {
        let apart = (grace as i64 + delta).max(0);
        let conflicts = ConflictStrategy::LastWriteWins { grace: Duration::from_millis(grace), tie };
        let (world, report) = block_on(async {
            let mut world = new_world(conflicts);
            world.spec.guard = no_guard();
            let mut world = world.seeded(&[("m1", [json!("base@club.nl"), json!("Base")])]).await;
            let times = match later {
                Side::Left => [at(100_000 + apart), at(100_000)],
                Side::Right => [at(100_000), at(100_000 + apart)],
            };
            let order = if left_first { [Side::Left, Side::Right] } else { [Side::Right, Side::Left] };
            for side in order {
                let index = if side == Side::Left { 0 } else { 1 };
                world.system(side).set_now(times[index]);
                world.system(side).edit("m1", "email", json!(format!("{side}@club.nl")));
            }
            world.clock.set(at(100_000 + clock));
            let report = world.run(options()).await;
            (world, report)
        });
        let inside = apart as u64 <= grace;
        let value = |side: Side| Some(text(&format!("{side}@club.nl")));
        let winner = match (inside, tie) {
            (true, Tie::Side(side)) => Some(side),
            (true, Tie::Review) => None,
            (false, _) => Some(later),
        };
        match winner {
            Some(winner) => {
                for side in Side::BOTH {
                    prop_assert_eq!(world.value(side, "m1", 0), value(winner), "{:#?}", report);
                }
                let audit = world.audit(&report);
                let decision = audit_for(&audit, "m1", 0).into_iter().find(|entry| entry.event == AuditEvent::Resolved);
                prop_assert!(decision.is_some());
                let reason = &decision.unwrap().reason;
                prop_assert_eq!(reason.contains("grace window"), inside, "{}", reason);
            }
            None => {
                for side in Side::BOTH {
                    prop_assert_eq!(world.value(side, "m1", 0), value(side));
                }
                prop_assert!(world.open_review("m1", Some("email")).is_some());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// 3. One-sided changes under faults.

#[derive(Clone, Copy, Debug)]
enum Fault {
    Read,
    WriteUnavailable,
    WriteLostAnswer,
}

impl Fault {
    fn memory(self) -> MemoryFault {
        match self {
            Fault::Read => MemoryFault::ReadUnavailable,
            Fault::WriteUnavailable => MemoryFault::WriteUnavailable,
            Fault::WriteLostAnswer => MemoryFault::WriteLostAnswer,
        }
    }
}

fn fault_strategy() -> impl Strategy<Value = Fault> {
    prop_oneof![Just(Fault::Read), Just(Fault::WriteUnavailable), Just(Fault::WriteLostAnswer)]
}

/// A one-sided change: record, field, the side that made it, its new and its old value.
type OneSided = (usize, usize, Side, Value, Value);

/// Guarantee 3 at one instant: each one-sided change reached the other side, or its baseline
/// is unmoved and a write of it is still open; the baseline only ever holds the new value
/// when the other side does.
fn check_one_sided(world: &mut World, changes: &[OneSided]) -> Result<(), TestCaseError> {
    for (record, field, side, new, old) in changes {
        let key = KEYS[*record];
        let target = side.other();
        let reached = world.value(target, key, *field).as_ref() == Some(new);
        let base = world.base_value(key, *field);
        prop_assert!(base.as_ref() == Some(old) || base.as_ref() == Some(new), "{key}: baseline {base:?}");
        if base.as_ref() == Some(new) {
            prop_assert!(reached, "the baseline of {key} moved before its write reached the {target} side");
        }
        if !reached {
            prop_assert_eq!(base.as_ref(), Some(old));
            prop_assert!(!world.open_outbox(key, target).is_empty(), "{key}: neither written nor pending");
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    /// 3. A change made on one side only reaches the other side, or stays pending with the
    /// baseline unmoved — under a failed read, a failed write or a write whose answer is lost;
    /// and once the fault is gone, it reaches the other side.
    #[test]
    fn guarantee_03_one_sided_change_reaches_other_side_or_stays_pending(
        base in proptest::collection::vec(proptest::array::uniform2(0..4usize), KEYS.len()),
        edits in proptest::collection::vec(
            proptest::array::uniform2(proptest::option::of((side_strategy(), 0..4usize, any::<bool>()))),
            KEYS.len(),
        ),
        fault in proptest::option::of((side_strategy(), fault_strategy())),
    ) {
        block_on(async {
            let seed: Vec<(&str, [Json; 2])> =
                KEYS.iter().zip(&base).map(|(key, base)| (*key, [raw_value(0, base[0], false), raw_value(1, base[1], false)])).collect();
            let mut world = new_world(ConflictStrategy::Review);
            world.spec.guard = no_guard();
            let mut world = world.seeded(&seed).await;
            let mut changes: Vec<OneSided> = Vec::new();
            for (record, key, field, name) in cells() {
                let Some((side, value, variant)) = edits[record][field] else { continue };
                let system = world.system(side);
                system.set_now(at(1_000));
                system.edit(key, name, raw_value(field, value, variant));
                let old = norm(&world.spec, side, field, &raw_value(field, base[record][field], false));
                let new = norm(&world.spec, side, field, &raw_value(field, value, variant));
                if new != old {
                    changes.push((record, field, side, new, old));
                }
            }
            if let Some((side, fault)) = fault {
                world.system(side).inject(fault.memory());
            }
            world.set_time(at(10_000));
            world.run(options()).await;
            check_one_sided(&mut world, &changes)?;
            // The fault is gone: within a few runs (a queued fault may meet a later write),
            // every change reaches the other side and its baseline.
            for hour in 1..=3 {
                world.set_time(at(10_000 + hour * 3_600_000));
                world.run(options()).await;
                check_one_sided(&mut world, &changes)?;
            }
            for (record, field, side, new, _) in &changes {
                let key = KEYS[*record];
                prop_assert_eq!(world.value(side.other(), key, *field), Some(new.clone()));
                prop_assert_eq!(world.base_value(key, *field), Some(new.clone()));
            }
            Ok(())
        })?;
    }
}

// ---------------------------------------------------------------------------------------
// 7. Crashes at every commit.

/// The records of the crash scenario, on both sides at first.
const CRASH_RECORDS: [&str; 5] = ["m1", "m2", "m3", "m4", "m5"];

/// A world with one of everything a run does: one-sided updates both ways, a conflict that
/// last-write-wins settles, a create each way, a false conflict and (with `delete`) a delete.
async fn crash_scenario(delete: bool) -> World {
    let conflicts =
        ConflictStrategy::LastWriteWins { grace: Duration::from_secs(5), tie: Tie::Side(Side::Left) };
    let mut world = new_world(conflicts);
    world.spec.guard = no_guard();
    let records: Vec<(&str, [Json; 2])> = CRASH_RECORDS
        .iter()
        .map(|key| (*key, [json!(format!("{key}@club.nl")), json!(key.to_uppercase())]))
        .collect();
    let world = world.seeded(&records).await;
    let (left, right) = (&world.left, &world.right);
    left.set_now(at(100_000));
    left.edit("m1", "email", json!("one@club.nl"));
    right.set_now(at(100_000));
    right.edit("m2", "name", json!("Two"));
    left.set_now(at(110_000));
    left.edit("m3", "email", json!("left3@club.nl"));
    right.set_now(at(200_000));
    right.edit("m3", "email", json!("right3@club.nl"));
    left.set_now(at(120_000));
    left.edit("n1", "email", json!("n1@club.nl"));
    left.edit("n1", "name", json!("Nina"));
    right.set_now(at(130_000));
    right.edit("n2", "email", json!("n2@club.nl"));
    right.edit("n2", "name", json!("Noor"));
    left.set_now(at(140_000));
    left.edit("m5", "name", json!("Same"));
    right.set_now(at(150_000));
    right.edit("m5", "name", json!("Same"));
    if delete {
        left.remove("m4");
    }
    world.set_time(at(300_000));
    world
}

/// Every record on `side` holds, field by field, its value before the run or after it.
fn old_or_new(current: &Snapshot, old: &Snapshot, new: &Snapshot, what: &str) {
    let ids: BTreeSet<&String> = current.keys().chain(old.keys()).chain(new.keys()).collect();
    for id in ids {
        match (current.get(id), old.get(id), new.get(id)) {
            (None, None, _) | (None, _, None) => {}
            (Some(now), before, after) => {
                let fields: BTreeSet<&String> =
                    now.keys().chain(before.into_iter().flat_map(|b| b.keys())).collect();
                for field in fields {
                    let value = now.get(field);
                    let was = before.map(|record| record.get(field));
                    let will = after.map(|record| record.get(field));
                    assert!(
                        was == Some(value) || will == Some(value),
                        "{what}: {id}.{field} holds {value:?}, neither its old {was:?} nor its new {will:?}"
                    );
                }
            }
            (None, Some(_), Some(_)) => panic!("{what}: {id} vanished, though it exists before and after"),
        }
    }
}

/// The state store describes only verified work: every baseline value that moved since
/// `before` is held by both sides now, and a removed baseline belongs to a record gone from both.
fn only_verified(world: &mut World, before: &BTreeMap<String, Option<Baseline>>, what: &str) {
    for (key, old) in before {
        let now = world.baseline(key);
        match (&now, old) {
            (None, Some(_)) => {
                assert!(
                    world.left.record(key).is_none() && world.right.record(key).is_none(),
                    "{what}: {key}"
                );
            }
            (Some(baseline), _) => {
                for (field, name) in FIELDS.into_iter().enumerate() {
                    let value = &baseline.fields[field].value;
                    let old_value = old.as_ref().and_then(|old| old.fields[field].value.clone());
                    if *value == old_value {
                        continue;
                    }
                    for side in Side::BOTH {
                        assert_eq!(
                            &world.value(side, key, field),
                            value,
                            "{what}: the baseline of {key}.{} moved to a value the {side} side does not hold",
                            name
                        );
                    }
                }
            }
            (None, None) => {}
        }
    }
}

async fn crash_everywhere(delete: bool) {
    let run_options = if delete { full() } else { options() };
    let keys: Vec<&str> = CRASH_RECORDS.iter().copied().chain(["n1", "n2"]).collect();
    let mut reference = crash_scenario(delete).await;
    let report = reference.run(run_options).await;
    assert_eq!(report.status, RunStatus::Done, "{report:#?}");
    let finals = SidePair::new(reference.snapshot(Side::Left), reference.snapshot(Side::Right));
    assert_eq!(reference.value(Side::Left, "m3", 0), Some(text("right3@club.nl")));
    assert_eq!(reference.value(Side::Right, "n1", 1), Some(text("Nina")));
    assert_eq!(reference.value(Side::Left, "n2", 1), Some(text("Noor")));
    assert_eq!(reference.right.record("m4").is_none(), delete);
    let writes = reference.writes();
    reference.clock.set(at(400_000));
    reference.run(run_options).await;
    assert_eq!(reference.writes(), writes, "the reference converges in one run");

    let mut exercised = 0;
    'commits: for commit in 1.. {
        for committed in [false, true] {
            let what = format!("crash at commit {commit} ({})", if committed { "after" } else { "before" });
            let mut world = crash_scenario(delete).await;
            let olds = SidePair::new(world.snapshot(Side::Left), world.snapshot(Side::Right));
            let baselines: BTreeMap<String, Option<Baseline>> =
                keys.iter().map(|key| (key.to_string(), world.baseline(key))).collect();
            world.store.crash_at_commit(commit, committed);
            match world.try_run(run_options).await {
                Ok(_) => break 'commits,
                Err(EngineError::Store(StoreError::InjectedCrash { .. })) => exercised += 1,
                Err(other) => panic!("{what}: {other:?}"),
            }
            for side in Side::BOTH {
                old_or_new(
                    &world.snapshot(side),
                    olds.get(side),
                    finals.get(side),
                    &format!("{what}, {side}"),
                );
            }
            only_verified(&mut world, &baselines, &what);

            // The next run, on a reopened store, converges: the reference's values, no
            // duplicates, no reviews, no conflict but the real one.
            world.reopen();
            world.clock.set(at(400_000));
            let recovery = world.run(run_options).await;
            assert_eq!(recovery.status, RunStatus::Done, "{what}: {recovery:#?}");
            for side in Side::BOTH {
                assert_eq!(&world.snapshot(side), finals.get(side), "{what}: the {side} side after recovery");
            }
            assert!(world.open_reviews().is_empty(), "{what}: {:#?}", world.open_reviews());
            for entry in world.audit(&recovery) {
                let conflict = entry.reason.starts_with("conflict") || entry.event == AuditEvent::Review;
                assert!(
                    !conflict || (entry.key.as_str() == "m3" && entry.field.as_deref() == Some("email")),
                    "{what}: a spurious conflict {entry:#?}"
                );
            }
            only_verified(&mut world, &baselines, &what);
            let writes = world.writes();
            world.clock.set(at(500_000));
            let quiet = world.run(run_options).await;
            assert_eq!(world.writes(), writes, "{what}: {quiet:#?}");
            assert!(world.audit(&quiet).is_empty(), "{what}: {:#?}", world.audit(&quiet));
        }
    }
    // The run's start, its plan, and per side a send and a close; then its end.
    assert!(exercised >= 2 * 6, "only {exercised} crash points");
}

/// 7. Killed at any commit of a run, before or after it lands, every field holds its old or
/// its new value, the state store describes only verified work, and the next run (on a
/// reopened store) converges to the uninterrupted run's result without duplicates or
/// spurious conflicts.
#[tokio::test]
async fn guarantee_07_crash_at_any_commit_converges() {
    crash_everywhere(true).await;
    crash_everywhere(false).await;
}

// ---------------------------------------------------------------------------------------
// 8. Lost and damaged baselines.

/// 8. A lost or damaged baseline turns differences into reviews, never into a silent
/// last-write-wins: a deleted row, a row whose values are not JSON, have the wrong length,
/// or are well-formed but not what was agreed. An intact record beside them is merged as usual.
#[tokio::test]
async fn guarantee_08_lost_or_damaged_baseline_becomes_review() {
    let conflicts =
        ConflictStrategy::LastWriteWins { grace: Duration::from_secs(5), tie: Tie::Side(Side::Left) };
    let mut world = new_world(conflicts);
    world.spec.guard = no_guard();
    let keys = ["m1", "m2", "m3", "m4", "ok"];
    let records: Vec<(&str, [Json; 2])> =
        keys.iter().map(|key| (*key, [json!(format!("{key}@club.nl")), json!(key.to_uppercase())])).collect();
    let mut world = world.seeded(&records).await;
    let damage = [
        "DELETE FROM baselines WHERE link = 'members' AND key = 'm1'",
        "UPDATE baselines SET field_values = 'not json' WHERE link = 'members' AND key = 'm2'",
        "UPDATE baselines SET field_values = '[\"m3@club.nl\"]' WHERE link = 'members' AND key = 'm3'",
        "UPDATE baselines SET field_values = '[\"zed@club.nl\", \"Zed\"]' WHERE link = 'members' AND key = 'm4'",
    ];
    for sql in damage {
        assert_eq!(world.execute_in_store(sql), 1, "{sql}");
    }
    // On every record: a conflict on email that the right side would win by last write, and
    // an edit of name on the left only.
    for key in keys {
        world.left.set_now(at(100_000));
        world.left.edit(key, "email", json!(format!("{key}-left@club.nl")));
        world.left.edit(key, "name", json!(format!("{key} left")));
        world.right.set_now(at(200_000));
        world.right.edit(key, "email", json!(format!("{key}-right@club.nl")));
    }
    let before = SidePair::new(world.snapshot(Side::Left), world.snapshot(Side::Right));
    world.clock.set(at(300_000));
    let report = world.run(options()).await;
    for key in ["m1", "m2", "m3", "m4"] {
        for side in Side::BOTH {
            assert_eq!(
                world.snapshot(side).get(key),
                before.get(side).get(key),
                "{key} was written: {report:#?}"
            );
        }
        for field in FIELDS {
            let review = world.open_review(key, Some(field));
            assert!(review.is_some(), "no review of {key}.{field}: {report:#?}");
        }
    }
    for key in ["m2", "m3", "m4"] {
        assert!(
            report
                .problems
                .iter()
                .any(|problem| problem.contains(&format!("baseline of record {key} is damaged"))),
            "{key}: {:#?}",
            report.problems
        );
    }
    // The intact record: last write wins on email, the one-sided name is copied.
    assert_eq!(world.value(Side::Left, "ok", 0), Some(text("ok-right@club.nl")));
    assert_eq!(world.value(Side::Right, "ok", 1), Some(text("ok left")));
    assert!(world.open_review("ok", Some("email")).is_none());

    // A store that lost every baseline: differences become reviews, agreements baselines.
    world.clock.set(at(400_000));
    world.execute_in_store("DELETE FROM baselines");
    world.execute_in_store("DELETE FROM reviews");
    world.right.set_now(at(450_000));
    world.right.edit("ok", "name", json!("ok right"));
    let writes = world.writes();
    world.clock.set(at(500_000));
    let report = world.run(full()).await;
    assert_eq!(world.writes(), writes, "{report:#?}");
    assert!(world.open_review("ok", Some("name")).is_some());
    assert!(world.open_review("ok", Some("email")).is_none());
    assert_eq!(world.base_value("ok", 0), Some(text("ok-right@club.nl")));
}

// ---------------------------------------------------------------------------------------
// 9. A target that moved between read and write.

/// A write planned from a read, a person's edit of its target, then delivery. With `empty`,
/// the target's field was empty (JSON `null`, as the engine itself writes an empty value)
/// when it was read.
async fn moved_target(conditional: bool, empty: bool) {
    let conflicts =
        ConflictStrategy::LastWriteWins { grace: Duration::from_secs(5), tie: Tie::Side(Side::Left) };
    let mut world = new_world(conflicts);
    world.spec.guard = no_guard();
    let mut world = world.seeded(&[("m1", [json!("base@club.nl"), json!("Base")])]).await;
    let connectors = |world: &World| {
        let mut pair = SidePair::new(Wrapped::plain(&world.left), Wrapped::plain(&world.right));
        pair.left.conditional = conditional;
        pair.right.conditional = conditional;
        pair
    };
    let mut base = text("base@club.nl");
    if empty {
        world.left.set_now(at(50_000));
        world.left.edit("m1", "email", json!(""));
        world.clock.set(at(60_000));
        world.try_run_with(&mut connectors(&world), options()).await.unwrap();
        assert_eq!(world.right.value("m1", "email"), Json::Null);
        base = Value::Null;
        assert_eq!(world.base_value("m1", 0), Some(base.clone()));
    }
    world.left.set_now(at(100_000));
    world.left.edit("m1", "email", json!("left@club.nl"));
    world.clock.set(at(150_000));
    // Killed right after the plan (commit 1 starts the run, 2 writes its one chunk of plans,
    // 3 publishes them).
    world.store.crash_at_commit(3, true);
    let crashed = world.try_run_with(&mut connectors(&world), options()).await;
    assert!(
        matches!(crashed, Err(EngineError::Store(StoreError::InjectedCrash { committed: true }))),
        "{crashed:?}"
    );
    world.reopen();
    assert_eq!(world.open_outbox("m1", Side::Right).len(), 1);
    // A person edits the target before the write goes out.
    world.right.set_now(at(200_000));
    world.right.edit("m1", "email", json!("person@club.nl"));
    world.clock.set(at(210_000));
    let writes = world.right.writes_applied();
    let delivery = world.try_run_with(&mut connectors(&world), deliver_only()).await.unwrap();
    assert_eq!(delivery.stats.writes_moved, 1, "{delivery:#?}");
    assert_eq!(delivery.failures[0].outcome, "moved");
    assert_eq!(delivery.status, RunStatus::Done);
    assert_eq!(world.right.writes_applied(), writes);
    assert_eq!(world.value(Side::Right, "m1", 0), Some(text("person@club.nl")));
    assert_eq!(world.base_value("m1", 0), Some(base));
    assert!(world.open_outbox("m1", Side::Right).is_empty());
    // The next run plans again from fresh reads: now a conflict, and the later edit wins.
    world.clock.set(at(220_000));
    let replanned = world.try_run_with(&mut connectors(&world), options()).await.unwrap();
    assert_eq!(replanned.stats.conflicts_resolved, 1, "{replanned:#?}");
    for side in Side::BOTH {
        assert_eq!(world.value(side, "m1", 0), Some(text("person@club.nl")));
    }
    assert_eq!(world.base_value("m1", 0), Some(text("person@club.nl")));
}

/// 9. A target that changed between read and write fails that write (whether the connector
/// refuses it itself or the engine re-reads before writing), and the next run plans again.
#[tokio::test]
async fn guarantee_09_target_changed_between_read_and_write_fails_that_write() {
    for conditional in [true, false] {
        for empty in [false, true] {
            moved_target(conditional, empty).await;
        }
    }
}

// ---------------------------------------------------------------------------------------
// 10, 11. Rounds of edits, then quiet.

/// Records rounds may edit, create (by editing a record a side lacks) or remove.
const ROUND_KEYS: [&str; 5] = ["m0", "m1", "m2", "n0", "n1"];

#[derive(Clone, Copy, Debug)]
enum Act {
    Edit { key: usize, side: Side, field: usize, value: usize },
    Remove { key: usize, side: Side },
}

#[derive(Clone, Debug)]
struct Round {
    acts: Vec<Act>,
    fault: Option<(Side, Fault)>,
}

fn act_strategy() -> impl Strategy<Value = Act> {
    prop_oneof![
        6 => (0..ROUND_KEYS.len(), side_strategy(), 0..2usize, 0..4usize)
            .prop_map(|(key, side, field, value)| Act::Edit { key, side, field, value }),
        1 => (0..ROUND_KEYS.len(), side_strategy()).prop_map(|(key, side)| Act::Remove { key, side }),
    ]
}

fn rounds_strategy(faults: bool) -> impl Strategy<Value = Vec<Round>> {
    let fault = if faults {
        proptest::option::of((side_strategy(), fault_strategy())).boxed()
    } else {
        Just(None).boxed()
    };
    proptest::collection::vec(
        (proptest::collection::vec(act_strategy(), 0..5), fault)
            .prop_map(|(acts, fault)| Round { acts, fault }),
        1..5,
    )
}

/// Seeds `m0`–`m2` and two pulse records on both sides, then plays the rounds, one run each.
/// A round with a write fault on a side also edits, on the other side, the pulse record only
/// that other side ever edits: a one-sided change, so that the fault meets a write in that
/// round. Faults are cleared after each round.
async fn play_rounds(conflicts: ConflictStrategy, rounds: &[Round]) -> World {
    let mut world = new_world(conflicts);
    world.spec.guard = no_guard();
    let seed: Vec<(&str, [Json; 2])> = ["m0", "m1", "m2", "pulse-left", "pulse-right"]
        .iter()
        .map(|key| (*key, [json!("ann@club.nl"), json!("Ann")]))
        .collect();
    let mut world = world.seeded(&seed).await;
    let mut now = 0;
    for (index, round) in rounds.iter().enumerate() {
        now += 60_000;
        for (step, act) in round.acts.iter().enumerate() {
            match *act {
                Act::Edit { key, side, field, value } => {
                    world.system(side).set_now(at(now + step as i64 * 100));
                    world.system(side).edit(ROUND_KEYS[key], FIELDS[field], raw_value(field, value, false));
                }
                Act::Remove { key, side } => world.system(side).remove(ROUND_KEYS[key]),
            }
        }
        if let Some((side, fault)) = round.fault {
            if !matches!(fault, Fault::Read) {
                let other = world.system(side.other());
                other.set_now(at(now + 1_000));
                other.edit(&format!("pulse-{}", side.other()), "name", json!(format!("Pulse {index}")));
            }
            world.system(side).inject(fault.memory());
        }
        world.set_time(at(now + 10_000));
        // A hard delete is found by a full read (on schedule); everything else incrementally.
        let removes = round.acts.iter().any(|act| matches!(act, Act::Remove { .. }));
        world.run(if removes { full() } else { options() }).await;
        // A fault that met no write (its record went to review, or its retry was not due yet)
        // must not outlive its round: the quiet period has no faults.
        world.left.clear_faults();
        world.right.clear_faults();
    }
    world
}

proptest! {
    #![proptest_config(config())]

    /// 10. The engine's own writes never come back as changes: once people stop editing,
    /// the runs that follow (incremental, full, and after a full-scan period) write nothing,
    /// plan nothing and audit nothing.
    #[test]
    fn guarantee_10_own_writes_never_come_back(conflicts in conflicts_strategy(), rounds in rounds_strategy(false)) {
        block_on(async {
            let mut world = play_rounds(conflicts, &rounds).await;
            let writes = world.writes();
            let planned = world.outbox().len();
            let mut now = 1_000_000;
            for run in [options(), options(), full()] {
                now += 3_600_000;
                world.clock.set(at(now));
                let report = world.run(run).await;
                prop_assert_eq!(world.writes(), writes, "{:#?}", report);
                prop_assert_eq!(world.outbox().len(), planned);
                let audit = world.audit(&report);
                prop_assert!(audit.is_empty(), "{:#?}", audit);
            }
            world.clock.set(at(now + 25 * 3_600_000));
            let report = world.run(options()).await;
            prop_assert_eq!(report.stats.left.mode, ReadMode::Full);
            prop_assert_eq!(world.writes(), writes);
            prop_assert!(world.audit(&report).is_empty());
            Ok(())
        })?;
    }

    /// 11. After a quiet period and one full run, both sides agree on every tracked field not
    /// under review — whatever edits, creates, deletes and faults came before.
    #[test]
    fn guarantee_11_quiet_period_converges(conflicts in conflicts_strategy(), rounds in rounds_strategy(true)) {
        block_on(async {
            let mut world = play_rounds(conflicts, &rounds).await;
            world.clock.set(at(10_000_000 + 2 * 86_400_000));
            let report = world.run(full()).await;
            let reviews = world.open_reviews();
            let reviewed = |key: &str, field: Option<&str>| {
                reviews.iter().any(|review| review.review.key.as_str() == key && review.review.field.as_deref() == field)
            };
            for key in ROUND_KEYS.iter().chain(&["pulse-left", "pulse-right"]) {
                if reviewed(key, None) {
                    continue;
                }
                let present = SidePair::new(world.left.record(key).is_some(), world.right.record(key).is_some());
                prop_assert_eq!(present.left, present.right, "{} on one side only: {:#?}", key, report);
                if !present.left {
                    continue;
                }
                for (field, name) in FIELDS.into_iter().enumerate() {
                    if reviewed(key, Some(name)) {
                        continue;
                    }
                    prop_assert_eq!(
                        world.value(Side::Left, key, field),
                        world.value(Side::Right, key, field),
                        "{}.{}: {:#?}", key, name, report
                    );
                }
            }
            Ok(())
        })?;
    }
}

// ---------------------------------------------------------------------------------------
// 14. Incremental reads.

/// 14. Every change stamped at or after the cursor minus the overlap is found by an
/// incremental read: one stamped exactly at the cursor, one stamped before it but within the
/// overlap (a late commit), one exactly at the overlap's edge. One stamped before the window
/// is left to the next full scan, which finds it.
#[tokio::test]
async fn guarantee_14_equal_and_late_timestamps_found() {
    let mut world = new_world(ConflictStrategy::Review);
    world.spec.guard = no_guard();
    let records: Vec<(&str, [Json; 2])> = ["m1", "m2", "m3", "m4", "m5"]
        .iter()
        .map(|key| (*key, [json!(format!("{key}@club.nl")), json!("Name")]))
        .collect();
    let mut world = world.seeded(&records).await;
    // The cursor: the latest modification the last read saw on each side.
    world.left.set_now(at(60_000));
    world.left.edit("m5", "name", json!("Cursor"));
    world.clock.set(at(70_000));
    let report = world.run(options()).await;
    assert_eq!(report.stats.left.mode, ReadMode::Incremental);
    assert_eq!(world.store.cursor(LINK, Side::Left).unwrap().cursor, Some(at(60_000)));
    let overlap = world.spec.overlap.left.as_millis() as i64;
    // Committed after that read, stamped at or before the cursor.
    let stamps = [
        ("m1", 60_000),
        ("m2", 60_000 - overlap / 2),
        ("m3", 60_000 - overlap),
        ("m4", 60_000 - overlap - 1),
    ];
    for (key, stamp) in stamps {
        world.left.set_now(at(stamp));
        world.left.edit(key, "email", json!(format!("{key}-new@club.nl")));
    }
    world.clock.set(at(80_000));
    let report = world.run(options()).await;
    assert_eq!(report.stats.left.mode, ReadMode::Incremental);
    for key in ["m1", "m2", "m3"] {
        assert_eq!(
            world.value(Side::Right, key, 0),
            Some(text(&format!("{key}-new@club.nl"))),
            "{key}: {report:#?}"
        );
    }
    assert_eq!(world.value(Side::Right, "m4", 0), Some(text("m4@club.nl")), "outside the overlap");
    let report = world.run(full()).await;
    assert_eq!(report.stats.left.mode, ReadMode::Full);
    assert_eq!(world.value(Side::Right, "m4", 0), Some(text("m4-new@club.nl")));
}

// ---------------------------------------------------------------------------------------
// 15. Duplicate deliveries.

/// One record edited on the left: a write of its email to the right.
async fn one_write() -> World {
    let mut world = new_world(ConflictStrategy::Review);
    world.spec.guard = no_guard();
    let world = world.seeded(&[("m1", [json!("base@club.nl"), json!("Base")])]).await;
    world.left.set_now(at(100_000));
    world.left.edit("m1", "email", json!("new@club.nl"));
    world.clock.set(at(150_000));
    world
}

/// The state a duplicate delivery must leave: both sides' records, the agreed values, and how
/// often the audit says the write was made.
fn delivered_state(world: &mut World) -> (Snapshot, Snapshot, Vec<Option<Value>>, usize) {
    let audit = world.store.audit_for_record(LINK, &RecordKey::new("m1")).unwrap();
    let baseline = world.baseline("m1").unwrap();
    (
        world.snapshot(Side::Left),
        world.snapshot(Side::Right),
        baseline.fields.into_iter().map(|field| field.value).collect(),
        written(&audit, "m1", 0, Side::Right),
    )
}

/// 15. Delivering the same write twice — its answer lost and the retry timer sending it
/// again, or the process killed after the write and before its bookkeeping, or the same plan
/// made twice — leaves the same state as one delivery, and one audit entry of the write.
#[tokio::test]
async fn guarantee_15_duplicate_delivery_same_state_one_audit() {
    let mut once = one_write().await;
    let report = once.run(options()).await;
    assert_eq!(report.stats.writes_done, 1);
    let expected = delivered_state(&mut once);
    assert_eq!(expected.3, 1);
    assert_eq!(once.right.writes_applied(), 1);

    // The answer is lost; the retry timer delivers the same entry again.
    let mut lost = one_write().await;
    lost.right.inject(MemoryFault::WriteLostAnswer);
    let report = lost.run(options()).await;
    assert_eq!(report.failures[0].outcome, "retrying", "{report:#?}");
    assert_eq!(lost.value(Side::Right, "m1", 0), Some(text("new@club.nl")), "written, though unanswered");
    lost.clock.set(at(150_000 + 3_600_000));
    let report = lost.run(deliver_only()).await;
    assert_eq!(report.status, RunStatus::Done, "{report:#?}");
    lost.clock.set(at(150_000 + 7_200_000));
    lost.run(options()).await;
    assert_eq!(delivered_state(&mut lost), expected);

    // Killed after the write, before the transaction that closes its entry.
    let mut killed = one_write().await;
    // Commits: 1 starts the run, 2 writes its plan, 3 publishes it, 4 marks the entry as
    // sending, 5 closes it.
    killed.crashed_run(5, false, options()).await;
    assert_eq!(killed.right.writes_applied(), 1);
    assert_eq!(killed.open_outbox("m1", Side::Right)[0].status, OutboxStatus::Sending);
    killed.clock.set(at(160_000));
    killed.run(deliver_only()).await;
    killed.clock.set(at(170_000));
    killed.run(options()).await;
    assert_eq!(delivered_state(&mut killed), expected);

    // Killed after the plan was published; the next run plans the same write again: one
    // entry, one write.
    let mut replanned = one_write().await;
    replanned.crashed_run(3, true, options()).await;
    replanned.clock.set(at(160_000));
    replanned.run(options()).await;
    assert_eq!(delivered_state(&mut replanned), expected);
    assert_eq!(replanned.right.writes_applied(), 1);
    assert_eq!(replanned.outbox().len(), 1);

    // Killed after its plan was written and before it was published: the next run discards
    // the unpublished entry and plans the write anew: one entry, one write.
    let mut unpublished = one_write().await;
    unpublished.crashed_run(2, true, options()).await;
    assert_eq!(unpublished.outbox().len(), 1, "written, not yet published");
    unpublished.clock.set(at(160_000));
    unpublished.run(options()).await;
    assert_eq!(delivered_state(&mut unpublished), expected);
    assert_eq!(unpublished.right.writes_applied(), 1);
    assert_eq!(unpublished.outbox().len(), 1, "the unpublished entry was discarded");
}

// ---------------------------------------------------------------------------------------
// 16. Retries on a timer.

/// 16. A failed write is tried again within its backoff even if nothing else happens: with
/// only the retry timer (`deliver_only`) passing as time moves on, it is not tried before it
/// is due, it is tried when due, and it lands after its backoffs — no new edit, no read, no
/// new plan. A run whose `wait_in_run` covers the backoff waits for it itself.
#[tokio::test]
async fn guarantee_16_failed_write_retried_without_new_edits() {
    let mut world = one_write().await;
    for _ in 0..3 {
        world.right.inject(MemoryFault::WriteUnavailable);
    }
    let left_before = world.left.record("m1");
    let report = world.run(options()).await;
    assert_eq!(report.status, RunStatus::Partial);
    assert_eq!(report.failures[0].outcome, "retrying");
    for attempt in 1..=3u32 {
        let [entry] = world.outbox().try_into().unwrap();
        assert_eq!(entry.attempts, attempt);
        assert_eq!(entry.status, OutboxStatus::Pending);
        // Exponential backoff with a quarter of jitter either way.
        let backoff = entry.next_attempt_at.duration_since(world.clock.now()).as_millis() as f64;
        let base = 1_000.0 * f64::from(1u32 << (attempt - 1));
        assert!((0.75 * base..=1.25 * base).contains(&backoff), "attempt {attempt}: backoff {backoff} ms");
        // Not yet due: the timer leaves it alone.
        world.clock.set(entry.next_attempt_at - Duration::from_millis(1));
        let early = world.run(deliver_only()).await;
        assert_eq!(world.outbox()[0].attempts, attempt, "{early:#?}");
        // Due: the timer tries it, and nothing else.
        world.clock.set(entry.next_attempt_at);
        let report = world.run(deliver_only()).await;
        assert_eq!(report.stats.left.read + report.stats.right.read, 0);
        assert_eq!(report.stats.compared, 0);
        for entry in world.audit(&report) {
            assert!(matches!(entry.event, AuditEvent::Written | AuditEvent::Failed), "{entry:#?}");
        }
        assert_eq!(world.outbox()[0].attempts, attempt + 1);
        if attempt == 3 {
            assert_eq!(report.status, RunStatus::Done, "{report:#?}");
        }
    }
    assert_eq!(world.outbox().len(), 1, "no new plan");
    assert_eq!(world.outbox()[0].status, OutboxStatus::Done);
    assert_eq!(world.value(Side::Right, "m1", 0), Some(text("new@club.nl")));
    assert_eq!(world.base_value("m1", 0), Some(text("new@club.nl")));
    assert_eq!(world.left.record("m1"), left_before, "no new edit");
    assert_eq!(world.left.writes_applied(), 0);

    // Within one run: a run that may wait `wait_in_run` sleeps out the backoff and retries.
    let mut world = one_write().await;
    world.spec.retry.wait_in_run = Duration::from_secs(10);
    world.right.inject(MemoryFault::WriteUnavailable);
    let started = world.clock.now();
    let report = world.run(options()).await;
    assert_eq!(report.status, RunStatus::Done, "{report:#?}");
    assert_eq!(report.stats.writes_done, 1);
    assert!(world.clock.now().duration_since(started) >= jiff::SignedDuration::from_millis(750));
    assert_eq!(world.value(Side::Right, "m1", 0), Some(text("new@club.nl")));
}

// ---------------------------------------------------------------------------------------
// 17. The guard.

/// Everything in the state store but the run history, as text.
fn store_contents(world: &World) -> Vec<String> {
    ["layouts", "baselines", "cursors", "outbox", "reviews", "audit"]
        .into_iter()
        .flat_map(|table| world.store_rows(table).into_iter().map(move |row| format!("{table}: {row}")))
        .collect()
}

/// Ten records on both sides; `deletes` removed from the left, `changes` others edited there.
async fn guard_world(deletes: usize, changes: usize) -> World {
    let keys: Vec<String> = (0..10).map(|number| format!("m{number}")).collect();
    let records: Vec<(&str, [Json; 2])> =
        keys.iter().map(|key| (key.as_str(), [json!(format!("{key}@club.nl")), json!("Name")])).collect();
    let world = new_world(ConflictStrategy::Review).seeded(&records).await;
    world.left.set_now(at(100_000));
    for key in &keys[..deletes] {
        world.left.remove(key);
    }
    for key in &keys[deletes..deletes + changes] {
        world.left.edit(key, "name", json!("Changed"));
    }
    world.clock.set(at(200_000));
    world
}

/// 17. A run that would delete or change more than the guard allows (by default 10 % and
/// 50 % of one side's records) writes nothing: not to either side, not to the state store
/// (but its run history); just under the limits, or with `--force`, it goes on.
#[tokio::test]
async fn guarantee_17_guard_writes_nothing() {
    let cases = [(0, 0), (1, 0), (2, 0), (4, 0), (0, 5), (0, 6), (0, 10), (1, 5), (2, 3), (1, 6)];
    for (deletes, changes) in cases {
        let mut world = guard_world(deletes, changes).await;
        let guarded = deletes > 1 || changes > 5;
        let contents = store_contents(&world);
        let right = world.snapshot(Side::Right);
        let report = world.run(full()).await;
        let what = format!("{deletes} deletes, {changes} changes");
        if guarded {
            assert_eq!(report.status, RunStatus::Guarded, "{what}: {report:#?}");
            assert!(report.guard.is_some());
            assert_eq!(world.writes(), 0, "{what}");
            assert_eq!(world.snapshot(Side::Right), right, "{what}");
            assert_eq!(store_contents(&world), contents, "{what}");
            let forced = world.run(RunOptions { force: true, ..full() }).await;
            assert_eq!(forced.status, RunStatus::Done, "{what}: {forced:#?}");
        } else {
            assert_eq!(report.status, RunStatus::Done, "{what}: {report:#?}");
        }
        assert_eq!(world.writes() as usize, deletes + changes, "{what}");
        assert_eq!(world.right.records().len(), 10 - deletes, "{what}");
    }
}

// ---------------------------------------------------------------------------------------
// 18. One run per link.

/// 18. At most one run of a link at a time: a second `run_link` while the first holds the
/// link's lock fails with the store's `Locked` error and records nothing, while another link
/// may run; a run that is abandoned (its future dropped mid-read, as a killed task) releases
/// the lock, and so does one that failed. On PostgreSQL, which has no lock that dies with its
/// holder, the abandoned run's lease (of a second) is taken over once it expired.
///
/// That the lock dies with the process (`kill -9`) is proved across processes in
/// `crates/store-sqlite/tests/store.rs` (`a_killed_lock_holder_releases_the_lock`,
/// `a_lock_held_by_flock_1_is_respected_and_released_on_kill`); that a lease expires and that
/// a commit under a lost one fails, by the store conformance suite
/// (`a_commit_under_a_lost_lease_fails_and_keeps_nothing`).
#[tokio::test]
async fn guarantee_18_one_run_per_link_and_lock_dies_with_process() {
    let mut world = one_write().await;
    let names = SidePair::new("left".to_string(), "right".to_string());
    let gate = Gate::default();
    let mut gated = SidePair::new(Wrapped::plain(&world.left), Wrapped::plain(&world.right));
    gated.left.gate = Some(gate.clone());
    let mut second_store = world.open_store();
    let runs_before = world.store.list_runs(Some(LINK), 100).unwrap().len();
    let first = run_link(&world.spec, &names, &mut gated, &mut world.store, options(), &world.clock);
    let second = async {
        gate.entered.notified().await;
        let mut plain = SidePair::new(Wrapped::plain(&world.left), Wrapped::plain(&world.right));
        let second =
            run_link(&world.spec, &names, &mut plain, &mut second_store, options(), &world.clock).await;
        // Another link runs meanwhile.
        let mut other = world.spec.clone();
        other.name = LinkName::new("others");
        let mut plain = SidePair::new(Wrapped::plain(&world.left), Wrapped::plain(&world.right));
        let other = run_link(&other, &names, &mut plain, &mut second_store, options(), &world.clock).await;
        gate.release.notify_one();
        (second, other)
    };
    let (first, (second, other)) = tokio::join!(first, second);
    assert!(matches!(second, Err(EngineError::Store(StoreError::Locked { .. }))), "{second:?}");
    assert!(other.is_ok(), "{other:?}");
    let first = first.unwrap();
    assert_eq!(first.stats.writes_done, 1, "{first:#?}");
    assert_eq!(world.right.writes_applied(), 1);
    assert_eq!(
        world.store.list_runs(Some(LINK), 100).unwrap().len(),
        runs_before + 1,
        "the refused run left no trace"
    );

    // An abandoned run: dropped while it holds the lock, inside a read.
    let postgres = world.store_kind() == StoreKind::Postgres;
    let abandoned_options = if postgres {
        RunOptions { lease_timeout: Some(Duration::from_secs(1)), ..options() }
    } else {
        options()
    };
    let gate = Gate::default();
    let mut gated = SidePair::new(Wrapped::plain(&world.left), Wrapped::plain(&world.right));
    gated.left.gate = Some(gate.clone());
    {
        let abandoned =
            run_link(&world.spec, &names, &mut gated, &mut world.store, abandoned_options, &world.clock);
        tokio::pin!(abandoned);
        tokio::select! {
            result = &mut abandoned => panic!("the gated run finished: {result:?}"),
            () = gate.entered.notified() => {}
        }
        let mut plain = SidePair::new(Wrapped::plain(&world.left), Wrapped::plain(&world.right));
        let refused =
            run_link(&world.spec, &names, &mut plain, &mut second_store, options(), &world.clock).await;
        assert!(matches!(refused, Err(EngineError::Store(StoreError::Locked { .. }))), "{refused:?}");
    }
    if postgres {
        // Nothing of the abandoned run died with it but its future: its lease runs out.
        tokio::time::sleep(Duration::from_millis(1_500)).await;
    }
    let after = run_link(
        &world.spec,
        &names,
        &mut SidePair::new(Wrapped::plain(&world.left), Wrapped::plain(&world.right)),
        &mut second_store,
        options(),
        &world.clock,
    )
    .await;
    assert!(after.is_ok(), "{after:?}");

    // A failed run (a crash injected at its plan) releases the lock too.
    world.crashed_run(2, false, options()).await;
    assert!(world.try_run(options()).await.is_ok());
}

/// 18, past a lease's timeout: a run that stalls (held inside a read, as a hung connector or a
/// stopped process would be) for longer than its `lease_timeout` loses its link. Another run
/// takes the lease over and makes the write; the stalled run, once it goes on, can commit
/// nothing (its next commit finds the lease taken) and the write is made once. The lease's
/// expiry is the store's wall clock: the test waits a second and a half of real time.
#[tokio::test]
async fn guarantee_18_a_run_stalled_past_its_lease_timeout_is_taken_over_and_fenced() {
    let mut world = one_write().await;
    let names = SidePair::new("left".to_string(), "right".to_string());
    let short = RunOptions { lease_timeout: Some(std::time::Duration::from_secs(1)), ..options() };
    let gate = Gate::default();
    let mut gated = SidePair::new(Wrapped::plain(&world.left), Wrapped::plain(&world.right));
    gated.left.gate = Some(gate.clone());
    let mut second_store = world.open_store();
    let stalled = run_link(&world.spec, &names, &mut gated, &mut world.store, short, &world.clock);
    let other = async {
        gate.entered.notified().await;
        tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
        let mut plain = SidePair::new(Wrapped::plain(&world.left), Wrapped::plain(&world.right));
        let taken = run_link(&world.spec, &names, &mut plain, &mut second_store, short, &world.clock).await;
        gate.release.notify_one();
        taken
    };
    let (stalled, taken) = tokio::join!(stalled, other);
    let taken = taken.expect("the lease past its timeout is taken over");
    assert_eq!(taken.stats.writes_done, 1, "{taken:#?}");
    assert!(matches!(stalled, Err(EngineError::Store(StoreError::LeaseLost { .. }))), "{stalled:?}");
    assert_eq!(world.right.writes_applied(), 1, "the write is made once");
    assert_eq!(world.try_run(options()).await.map(|report| report.stats.writes_done).ok(), Some(0));
}

/// Guarantee 10, found by `guarantee_11`: a write applied whose answer was lost, then retried
/// in vain, was read back as an edit of its target and met the source's next edit as a conflict — a
/// spurious review, or under last-write-wins a newer edit overwritten by the engine's own
/// stale write. A write the target holds has landed: its baseline moves before the merge.
#[test]
fn guarantee_10_a_landed_write_whose_answer_was_lost_is_not_an_edit() {
    block_on(async {
        let rounds = vec![
            Round { acts: vec![], fault: Some((Side::Left, Fault::WriteLostAnswer)) },
            Round { acts: vec![], fault: Some((Side::Left, Fault::WriteUnavailable)) },
            Round {
                acts: vec![Act::Edit { key: 3, side: Side::Right, field: 0, value: 0 }],
                fault: Some((Side::Left, Fault::WriteUnavailable)),
            },
        ];
        let mut world = play_rounds(ConflictStrategy::Review, &rounds).await;
        assert!(world.open_reviews().is_empty(), "{:#?}", world.open_reviews());
        world.clock.set(at(10_000_000 + 2 * 86_400_000));
        let report = world.run(full()).await;
        assert!(report.failures.is_empty(), "{:#?}", report.failures);
        assert_eq!(world.left.value("pulse-right", "name"), json!("Pulse 2"));
        assert!(world.left.record(ROUND_KEYS[3]).is_some());
    });
}

/// Found by `guarantee_11_quiet_period_converges`: a write waiting for a retry (its target was
/// down) kept its expectations after the target changed a field to a spelling that means the
/// same (`""` where it held null); the next run planned the same write, kept the waiting entry,
/// and its target refused the stale expectation run after run. A fresh plan now replaces a
/// waiting entry planned from other reads, and one full run converges.
#[test]
fn regression_a_waiting_write_whose_target_respelled_its_value_is_planned_from_fresh_reads() {
    let conflicts =
        ConflictStrategy::LastWriteWins { grace: Duration::from_millis(1_000), tie: Tie::Side(Side::Left) };
    let edit = |side, value| Act::Edit { key: 1, side, field: 0, value };
    let rounds = vec![
        Round { acts: vec![edit(Side::Left, 0)], fault: None },
        Round { acts: vec![edit(Side::Left, 1)], fault: Some((Side::Right, Fault::WriteUnavailable)) },
        Round { acts: vec![edit(Side::Right, 0)], fault: Some((Side::Right, Fault::WriteUnavailable)) },
    ];
    block_on(async {
        let mut world = play_rounds(conflicts, &rounds).await;
        world.clock.set(at(10_000_000 + 2 * 86_400_000));
        let report = world.run(full()).await;
        assert_eq!(world.value(Side::Left, "m1", 0), world.value(Side::Right, "m1", 0), "{report:#?}");
        assert!(report.failures.is_empty(), "{report:#?}");
    });
}
