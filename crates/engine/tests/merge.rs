//! The three-way merge as pure functions, table by table: `merge_field` for one field under
//! every strategy, one-way fields and reviews, `merge_presence` for records absent on a side.
//! Each table renders one line per row (input `=>` outcome, per strategy where they differ)
//! into an `expect!` snapshot; two exhaustive sweeps over a tiny domain check the invariants
//! of `product.md` that no table can enumerate (order independence above all).

use std::fmt::Write as _;
use std::time::Duration;

use expect_test::{Expect, expect};
use fieldsync_engine::merge::{
    FieldInput, FieldOutcome, FieldRules, PresenceInput, PresenceOutcome, Reason, ReviewView, merge_field,
    merge_presence,
};
use fieldsync_engine::{
    ConflictStrategy, Creates, DeletePolicy, Direction, FirstSyncStrategy, SidePair, Tie,
};
use fieldsync_model::{Side, Value};
use fieldsync_store::{Decision, ReviewKind};
use jiff::Timestamp;

use Side::{Left, Right};

const NULL: Value = Value::Null;

// ---------------------------------------------------------------------------------------------
// Shared vocabulary.

/// A timestamp `ms` milliseconds after a fixed instant.
fn at(ms: i64) -> Timestamp {
    Timestamp::from_millisecond(1_800_000_000_000 + ms).unwrap()
}

fn lww(grace_ms: u64, tie: Tie) -> ConflictStrategy {
    ConflictStrategy::LastWriteWins { grace: Duration::from_millis(grace_ms), tie }
}

fn show_value(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        other => other.to_string(),
    }
}

fn show_decision(decision: &Decision) -> String {
    match decision {
        Decision::Keep(side) => format!("keep {side}"),
        Decision::Value(value) => format!("value {}", show_value(value)),
    }
}

fn show_ms(ms: i64) -> String {
    if ms % 1000 == 0 { format!("{}s", ms / 1000) } else { format!("{ms}ms") }
}

/// Writes `line => outcome` when every strategy agrees, else the line and one indented
/// `strategy, strategy => outcome` per outcome.
fn write_row(out: &mut String, line: &str, labels: &[&str], outcomes: &[String]) {
    if outcomes.iter().all(|outcome| *outcome == outcomes[0]) {
        writeln!(out, "{line} => {}", outcomes[0]).unwrap();
    } else {
        writeln!(out, "{line}").unwrap();
        // One line per outcome, naming every strategy that reached it, in the order of the
        // strategies that first did.
        let mut groups: Vec<(String, &String)> = Vec::new();
        for (label, outcome) in labels.iter().zip(outcomes) {
            match groups.iter_mut().find(|(_, seen)| *seen == outcome) {
                Some((named, _)) => write!(named, ", {label}").unwrap(),
                None => groups.push((label.to_string(), outcome)),
            }
        }
        let width = groups.iter().map(|(named, _)| named.len()).max().unwrap_or(0);
        for (named, outcome) in groups {
            writeln!(out, "    {named:<width$} => {outcome}").unwrap();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// merge_field: rows, strategies, rendering, the check.

#[derive(Clone)]
struct Reviewed {
    left: Value,
    right: Value,
    decision: Option<Decision>,
}

struct Row {
    name: &'static str,
    base: Option<Value>,
    left: Value,
    right: Value,
    /// Edit times in ms after `at(0)`; both `0` (the same instant) when not given.
    times: Option<(i64, i64)>,
    review: Option<Reviewed>,
}

fn row(name: &'static str) -> Row {
    Row { name, base: None, left: NULL, right: NULL, times: None, review: None }
}

impl Row {
    fn base(self, value: impl Into<Value>) -> Self {
        Self { base: Some(value.into()), ..self }
    }

    fn left(self, value: impl Into<Value>) -> Self {
        Self { left: value.into(), ..self }
    }

    fn right(self, value: impl Into<Value>) -> Self {
        Self { right: value.into(), ..self }
    }

    fn at(self, left_ms: i64, right_ms: i64) -> Self {
        Self { times: Some((left_ms, right_ms)), ..self }
    }

    fn review(self, review: &Reviewed) -> Self {
        Self { review: Some(review.clone()), ..self }
    }

    fn input(&self) -> FieldInput<'_> {
        let (left_ms, right_ms) = self.times.unwrap_or((0, 0));
        FieldInput {
            base: self.base.as_ref(),
            left: &self.left,
            right: &self.right,
            left_time: at(left_ms),
            right_time: at(right_ms),
        }
    }

    fn view(&self) -> Option<ReviewView<'_>> {
        self.review.as_ref().map(|review| ReviewView {
            left: Some(&review.left),
            right: Some(&review.right),
            decision: review.decision.as_ref(),
        })
    }

    fn render(&self) -> String {
        let base =
            self.base.as_ref().map_or("no baseline".into(), |base| format!("base {}", show_value(base)));
        let (left_at, right_at) = match self.times {
            Some((left, right)) => (format!(" at {}", show_ms(left)), format!(" at {}", show_ms(right))),
            None => (String::new(), String::new()),
        };
        let mut line = format!(
            "{}: {base}, left {}{left_at}, right {}{right_at}",
            self.name,
            show_value(&self.left),
            show_value(&self.right)
        );
        if let Some(review) = &self.review {
            let state = review
                .decision
                .as_ref()
                .map_or("open".into(), |decision| format!("decided {}", show_decision(decision)));
            write!(
                line,
                "; review of left {} / right {} {state}",
                show_value(&review.left),
                show_value(&review.right)
            )
            .unwrap();
        }
        line
    }
}

fn show_reason(reason: &Reason) -> String {
    match reason {
        Reason::OneSided { side } => format!("one_sided {side}"),
        Reason::SameValue => "same_value".into(),
        Reason::FirstSyncEqual => "first_sync_equal".into(),
        Reason::FirstSyncPrefer { side } => format!("first_sync_prefer {side}"),
        Reason::LastWriteWins { winner, .. } => format!("last_write_wins {winner}"),
        Reason::GraceTie { winner, apart_ms, grace_ms } => {
            format!("grace_tie {winner}, {apart_ms} ms apart, grace {grace_ms} ms")
        }
        Reason::Prefer { side } => format!("prefer {side}"),
        Reason::OneWay { source, reverted: false } => format!("one_way from {source}"),
        Reason::OneWay { source, reverted: true } => format!("one_way from {source}, reverted"),
        Reason::Decided { decision } => format!("decided {}", show_decision(decision)),
    }
}

fn show_field(outcome: &FieldOutcome) -> String {
    match outcome {
        FieldOutcome::Unchanged => "unchanged".into(),
        FieldOutcome::Settle { value, reason } => {
            format!("settle {} ({})", show_value(value), show_reason(reason))
        }
        FieldOutcome::Hold { kind, .. } => format!("hold {kind}"),
    }
}

fn rules(conflicts: ConflictStrategy, first_sync: FirstSyncStrategy, direction: Direction) -> FieldRules {
    FieldRules { conflicts, first_sync, direction }
}

/// The six conflict strategies, on a two-way field (first sync: review).
fn every_conflict_strategy() -> Vec<(&'static str, FieldRules)> {
    let two_way = |conflicts| rules(conflicts, FirstSyncStrategy::Review, Direction::Both);
    vec![
        ("last_write_wins 5s tie left", two_way(lww(5_000, Tie::Side(Left)))),
        ("last_write_wins 5s tie right", two_way(lww(5_000, Tie::Side(Right)))),
        ("last_write_wins 5s tie review", two_way(lww(5_000, Tie::Review))),
        ("prefer left", two_way(ConflictStrategy::Prefer(Left))),
        ("prefer right", two_way(ConflictStrategy::Prefer(Right))),
        ("review", two_way(ConflictStrategy::Review)),
    ]
}

/// Renders every row under every strategy and compares the whole table with `expect`. Also
/// checks that a `last_write_wins` reason records the input's times.
fn check(strategies: &[(&str, FieldRules)], rows: &[Row], expect: Expect) {
    let labels: Vec<&str> = strategies.iter().map(|(label, _)| *label).collect();
    let mut out = format!("under: {}\n", labels.join(" | "));
    for row in rows {
        let outcomes: Vec<String> = strategies
            .iter()
            .map(|(_, rules)| {
                let outcome = merge_field(row.input(), *rules, row.view());
                if let FieldOutcome::Settle {
                    reason: Reason::LastWriteWins { left_time, right_time, .. },
                    ..
                } = &outcome
                {
                    assert_eq!((*left_time, *right_time), (row.input().left_time, row.input().right_time));
                }
                show_field(&outcome)
            })
            .collect();
        write_row(&mut out, &row.render(), &labels, &outcomes);
    }
    expect.assert_eq(&out);
}

// ---------------------------------------------------------------------------------------------
// merge_field tables.

#[test]
fn two_way_field_with_a_baseline_under_every_strategy() {
    let rows = [
        row("unchanged").base("a").left("a").right("a"),
        row("unchanged and empty").base(NULL).left(NULL).right(NULL),
        row("one-sided left edit").base("a").left("b").right("a"),
        row("one-sided right edit").base("a").left("a").right("b"),
        row("left empties the field").base("a").left(NULL).right("a"),
        row("right fills an empty field").base(NULL).left(NULL).right("b"),
        row("false conflict").base("a").left("b").right("b"),
        row("false conflict, both emptied").base("a").left(NULL).right(NULL),
        row("conflict, left 10 s later").base("a").left("b").right("c").at(10_000, 0),
        row("conflict, right 10 s later").base("a").left("b").right("c").at(0, 10_000),
        row("conflict, left 3 s later (inside the grace)").base("a").left("b").right("c").at(3_000, 0),
        row("conflict, left empties it 10 s later").base("a").left(NULL).right("c").at(10_000, 0),
        row("conflict from empty, right 10 s later").base(NULL).left("b").right("c").at(0, 10_000),
    ];
    check(
        &every_conflict_strategy(),
        &rows,
        expect![[r#"
            under: last_write_wins 5s tie left | last_write_wins 5s tie right | last_write_wins 5s tie review | prefer left | prefer right | review
            unchanged: base "a", left "a", right "a" => unchanged
            unchanged and empty: base null, left null, right null => unchanged
            one-sided left edit: base "a", left "b", right "a" => settle "b" (one_sided left)
            one-sided right edit: base "a", left "a", right "b" => settle "b" (one_sided right)
            left empties the field: base "a", left null, right "a" => settle null (one_sided left)
            right fills an empty field: base null, left null, right "b" => settle "b" (one_sided right)
            false conflict: base "a", left "b", right "b" => settle "b" (same_value)
            false conflict, both emptied: base "a", left null, right null => settle null (same_value)
            conflict, left 10 s later: base "a", left "b" at 10s, right "c" at 0s
                last_write_wins 5s tie left, last_write_wins 5s tie right, last_write_wins 5s tie review => settle "b" (last_write_wins left)
                prefer left                                                                              => settle "b" (prefer left)
                prefer right                                                                             => settle "c" (prefer right)
                review                                                                                   => hold conflict
            conflict, right 10 s later: base "a", left "b" at 0s, right "c" at 10s
                last_write_wins 5s tie left, last_write_wins 5s tie right, last_write_wins 5s tie review => settle "c" (last_write_wins right)
                prefer left                                                                              => settle "b" (prefer left)
                prefer right                                                                             => settle "c" (prefer right)
                review                                                                                   => hold conflict
            conflict, left 3 s later (inside the grace): base "a", left "b" at 3s, right "c" at 0s
                last_write_wins 5s tie left           => settle "b" (grace_tie left, 3000 ms apart, grace 5000 ms)
                last_write_wins 5s tie right          => settle "c" (grace_tie right, 3000 ms apart, grace 5000 ms)
                last_write_wins 5s tie review, review => hold conflict
                prefer left                           => settle "b" (prefer left)
                prefer right                          => settle "c" (prefer right)
            conflict, left empties it 10 s later: base "a", left null at 10s, right "c" at 0s
                last_write_wins 5s tie left, last_write_wins 5s tie right, last_write_wins 5s tie review => settle null (last_write_wins left)
                prefer left                                                                              => settle null (prefer left)
                prefer right                                                                             => settle "c" (prefer right)
                review                                                                                   => hold conflict
            conflict from empty, right 10 s later: base null, left "b" at 0s, right "c" at 10s
                last_write_wins 5s tie left, last_write_wins 5s tie right, last_write_wins 5s tie review => settle "c" (last_write_wins right)
                prefer left                                                                              => settle "b" (prefer left)
                prefer right                                                                             => settle "c" (prefer right)
                review                                                                                   => hold conflict
        "#]],
    );
}

#[test]
fn last_write_wins_and_its_grace_window() {
    let two_way = |conflicts| rules(conflicts, FirstSyncStrategy::Review, Direction::Both);
    let strategies = [
        ("grace 5s tie left", two_way(lww(5_000, Tie::Side(Left)))),
        ("grace 5s tie right", two_way(lww(5_000, Tie::Side(Right)))),
        ("grace 5s tie review", two_way(lww(5_000, Tie::Review))),
        ("grace 0s tie left", two_way(lww(0, Tie::Side(Left)))),
        ("grace 0s tie right", two_way(lww(0, Tie::Side(Right)))),
        ("grace 0s tie review", two_way(lww(0, Tie::Review))),
    ];
    let conflict = |name| row(name).base("a").left("b").right("c");
    let rows = [
        conflict("left 10 s later").at(10_000, 0),
        conflict("right 10 s later").at(0, 10_000),
        conflict("left 3 s later").at(3_000, 0),
        conflict("right 3 s later").at(0, 3_000),
        conflict("left exactly 5 s later (the boundary is inside)").at(5_000, 0),
        conflict("right exactly 5 s later (the boundary is inside)").at(0, 5_000),
        conflict("left 5.001 s later (just outside)").at(5_001, 0),
        conflict("right 5.001 s later (just outside)").at(0, 5_001),
        conflict("left 1 ms later").at(1, 0),
        conflict("equal times").at(0, 0),
    ];
    check(
        &strategies,
        &rows,
        expect![[r#"
            under: grace 5s tie left | grace 5s tie right | grace 5s tie review | grace 0s tie left | grace 0s tie right | grace 0s tie review
            left 10 s later: base "a", left "b" at 10s, right "c" at 0s => settle "b" (last_write_wins left)
            right 10 s later: base "a", left "b" at 0s, right "c" at 10s => settle "c" (last_write_wins right)
            left 3 s later: base "a", left "b" at 3s, right "c" at 0s
                grace 5s tie left                                          => settle "b" (grace_tie left, 3000 ms apart, grace 5000 ms)
                grace 5s tie right                                         => settle "c" (grace_tie right, 3000 ms apart, grace 5000 ms)
                grace 5s tie review                                        => hold conflict
                grace 0s tie left, grace 0s tie right, grace 0s tie review => settle "b" (last_write_wins left)
            right 3 s later: base "a", left "b" at 0s, right "c" at 3s
                grace 5s tie left                                          => settle "b" (grace_tie left, 3000 ms apart, grace 5000 ms)
                grace 5s tie right                                         => settle "c" (grace_tie right, 3000 ms apart, grace 5000 ms)
                grace 5s tie review                                        => hold conflict
                grace 0s tie left, grace 0s tie right, grace 0s tie review => settle "c" (last_write_wins right)
            left exactly 5 s later (the boundary is inside): base "a", left "b" at 5s, right "c" at 0s
                grace 5s tie left                                          => settle "b" (grace_tie left, 5000 ms apart, grace 5000 ms)
                grace 5s tie right                                         => settle "c" (grace_tie right, 5000 ms apart, grace 5000 ms)
                grace 5s tie review                                        => hold conflict
                grace 0s tie left, grace 0s tie right, grace 0s tie review => settle "b" (last_write_wins left)
            right exactly 5 s later (the boundary is inside): base "a", left "b" at 0s, right "c" at 5s
                grace 5s tie left                                          => settle "b" (grace_tie left, 5000 ms apart, grace 5000 ms)
                grace 5s tie right                                         => settle "c" (grace_tie right, 5000 ms apart, grace 5000 ms)
                grace 5s tie review                                        => hold conflict
                grace 0s tie left, grace 0s tie right, grace 0s tie review => settle "c" (last_write_wins right)
            left 5.001 s later (just outside): base "a", left "b" at 5001ms, right "c" at 0s => settle "b" (last_write_wins left)
            right 5.001 s later (just outside): base "a", left "b" at 0s, right "c" at 5001ms => settle "c" (last_write_wins right)
            left 1 ms later: base "a", left "b" at 1ms, right "c" at 0s
                grace 5s tie left                                          => settle "b" (grace_tie left, 1 ms apart, grace 5000 ms)
                grace 5s tie right                                         => settle "c" (grace_tie right, 1 ms apart, grace 5000 ms)
                grace 5s tie review                                        => hold conflict
                grace 0s tie left, grace 0s tie right, grace 0s tie review => settle "b" (last_write_wins left)
            equal times: base "a", left "b" at 0s, right "c" at 0s
                grace 5s tie left                        => settle "b" (grace_tie left, 0 ms apart, grace 5000 ms)
                grace 5s tie right                       => settle "c" (grace_tie right, 0 ms apart, grace 5000 ms)
                grace 5s tie review, grace 0s tie review => hold conflict
                grace 0s tie left                        => settle "b" (grace_tie left, 0 ms apart, grace 0 ms)
                grace 0s tie right                       => settle "c" (grace_tie right, 0 ms apart, grace 0 ms)
        "#]],
    );
}

#[test]
fn first_sync_without_a_baseline() {
    let first = |first_sync| rules(lww(5_000, Tie::Side(Left)), first_sync, Direction::Both);
    let strategies = [
        ("first_sync prefer left", first(FirstSyncStrategy::Prefer(Left))),
        ("first_sync prefer right", first(FirstSyncStrategy::Prefer(Right))),
        ("first_sync review", first(FirstSyncStrategy::Review)),
    ];
    let rows = [
        row("equal values").left("a").right("a"),
        row("both empty").left(NULL).right(NULL),
        row("different values, left later").left("a").right("b").at(10_000, 0),
        row("different values, right later").left("a").right("b").at(0, 10_000),
        row("text against empty").left("a").right(NULL),
        row("empty against text").left(NULL).right("b"),
    ];
    check(
        &strategies,
        &rows,
        expect![[r#"
        under: first_sync prefer left | first_sync prefer right | first_sync review
        equal values: no baseline, left "a", right "a" => settle "a" (first_sync_equal)
        both empty: no baseline, left null, right null => settle null (first_sync_equal)
        different values, left later: no baseline, left "a" at 10s, right "b" at 0s
            first_sync prefer left  => settle "a" (first_sync_prefer left)
            first_sync prefer right => settle "b" (first_sync_prefer right)
            first_sync review       => hold first_sync
        different values, right later: no baseline, left "a" at 0s, right "b" at 10s
            first_sync prefer left  => settle "a" (first_sync_prefer left)
            first_sync prefer right => settle "b" (first_sync_prefer right)
            first_sync review       => hold first_sync
        text against empty: no baseline, left "a", right null
            first_sync prefer left  => settle "a" (first_sync_prefer left)
            first_sync prefer right => settle null (first_sync_prefer right)
            first_sync review       => hold first_sync
        empty against text: no baseline, left null, right "b"
            first_sync prefer left  => settle null (first_sync_prefer left)
            first_sync prefer right => settle "b" (first_sync_prefer right)
            first_sync review       => hold first_sync
    "#]],
    );
}

#[test]
fn one_way_fields_follow_their_source() {
    // The strictest policies, to show that a one-way field never waits for a person.
    let one_way = |direction| rules(ConflictStrategy::Review, FirstSyncStrategy::Review, direction);
    let strategies = [
        ("left_to_right", one_way(Direction::LeftToRight)),
        ("right_to_left", one_way(Direction::RightToLeft)),
    ];
    let rows = [
        row("unchanged").base("a").left("a").right("a"),
        row("left edited").base("a").left("b").right("a"),
        row("right edited").base("a").left("a").right("b"),
        row("left emptied").base("a").left(NULL).right("a"),
        row("both edited, left later").base("a").left("b").right("c").at(10_000, 0),
        row("both edited, right later").base("a").left("b").right("c").at(0, 10_000),
        row("both edited to the same value").base("a").left("b").right("b"),
        row("no baseline, values differ").left("a").right("b"),
        row("no baseline, left empty").left(NULL).right("b"),
        row("no baseline, values equal").left("a").right("a"),
    ];
    check(
        &strategies,
        &rows,
        expect![[r#"
        under: left_to_right | right_to_left
        unchanged: base "a", left "a", right "a" => unchanged
        left edited: base "a", left "b", right "a"
            left_to_right => settle "b" (one_way from left)
            right_to_left => settle "a" (one_way from right, reverted)
        right edited: base "a", left "a", right "b"
            left_to_right => settle "a" (one_way from left, reverted)
            right_to_left => settle "b" (one_way from right)
        left emptied: base "a", left null, right "a"
            left_to_right => settle null (one_way from left)
            right_to_left => settle "a" (one_way from right, reverted)
        both edited, left later: base "a", left "b" at 10s, right "c" at 0s
            left_to_right => settle "b" (one_way from left, reverted)
            right_to_left => settle "c" (one_way from right, reverted)
        both edited, right later: base "a", left "b" at 0s, right "c" at 10s
            left_to_right => settle "b" (one_way from left, reverted)
            right_to_left => settle "c" (one_way from right, reverted)
        both edited to the same value: base "a", left "b", right "b" => settle "b" (same_value)
        no baseline, values differ: no baseline, left "a", right "b"
            left_to_right => settle "a" (one_way from left)
            right_to_left => settle "b" (one_way from right)
        no baseline, left empty: no baseline, left null, right "b"
            left_to_right => settle null (one_way from left)
            right_to_left => settle "b" (one_way from right)
        no baseline, values equal: no baseline, left "a", right "a" => settle "a" (first_sync_equal)
    "#]],
    );
}

#[test]
fn reviews_govern_before_the_merge() {
    let two_way = |conflicts| rules(conflicts, FirstSyncStrategy::Review, Direction::Both);
    let strategies = [
        ("review", two_way(ConflictStrategy::Review)),
        ("last_write_wins 5s tie left", two_way(lww(5_000, Tie::Side(Left)))),
        ("prefer right", two_way(ConflictStrategy::Prefer(Right))),
    ];
    // Every review in this table is of left "b" / right "c": open, or decided one of three ways.
    let reviewed = |decision| Reviewed { left: "b".into(), right: "c".into(), decision };
    let open = reviewed(None);
    let keep_left = reviewed(Some(Decision::Keep(Left)));
    let keep_right = reviewed(Some(Decision::Keep(Right)));
    let value_x = reviewed(Some(Decision::Value("x".into())));
    let rows = [
        // Open reviews.
        row("open, values stand").base("a").left("b").right("c").at(10_000, 0).review(&open),
        // The merge gives `hold conflict` for any open review; the planner keeps the stored kind.
        row("open first-sync review, values stand").left("b").right("c").review(&open),
        row("open, left edited anew").base("a").left("d").right("c").at(10_000, 0).review(&open),
        row("open, right edited anew").base("a").left("b").right("d").at(0, 10_000).review(&open),
        row("open, right went back to the baseline").base("a").left("b").right("a").review(&open),
        row("open, both now agree").base("a").left("c").right("c").review(&open),
        row("open, both back to the baseline").base("a").left("a").right("a").review(&open),
        // Decisions applied while each side holds its reviewed value or the decided one.
        row("keep left, values stand").base("a").left("b").right("c").review(&keep_left),
        row("keep left, right already written").base("a").left("b").right("b").review(&keep_left),
        row("keep right, values stand").base("a").left("b").right("c").review(&keep_right),
        row("keep right, left already written").base("a").left("c").right("c").review(&keep_right),
        row("value, values stand").base("a").left("b").right("c").review(&value_x),
        row("value, left already written").base("a").left("x").right("c").review(&value_x),
        row("value, both written").base("a").left("x").right("x").review(&value_x),
        row("keep left on a first sync").left("b").right("c").review(&keep_left),
        // A side edited anew since the review (so its record is the later one): the decision
        // no longer applies, the merge does.
        row("keep left, left edited anew").base("a").left("d").right("c").at(10_000, 0).review(&keep_left),
        row("keep left, right edited anew").base("a").left("b").right("d").at(0, 10_000).review(&keep_left),
        row("keep right, left edited anew").base("a").left("d").right("c").at(10_000, 0).review(&keep_right),
        row("value, right edited anew").base("a").left("b").right("d").at(0, 10_000).review(&value_x),
        row("keep left, both back to the baseline").base("a").left("a").right("a").review(&keep_left),
    ];
    check(
        &strategies,
        &rows,
        expect![[r#"
        under: review | last_write_wins 5s tie left | prefer right
        open, values stand: base "a", left "b" at 10s, right "c" at 0s; review of left "b" / right "c" open => hold conflict
        open first-sync review, values stand: no baseline, left "b", right "c"; review of left "b" / right "c" open => hold conflict
        open, left edited anew: base "a", left "d" at 10s, right "c" at 0s; review of left "b" / right "c" open
            review                      => hold conflict
            last_write_wins 5s tie left => settle "d" (last_write_wins left)
            prefer right                => settle "c" (prefer right)
        open, right edited anew: base "a", left "b" at 0s, right "d" at 10s; review of left "b" / right "c" open
            review                      => hold conflict
            last_write_wins 5s tie left => settle "d" (last_write_wins right)
            prefer right                => settle "d" (prefer right)
        open, right went back to the baseline: base "a", left "b", right "a"; review of left "b" / right "c" open => settle "b" (one_sided left)
        open, both now agree: base "a", left "c", right "c"; review of left "b" / right "c" open => settle "c" (same_value)
        open, both back to the baseline: base "a", left "a", right "a"; review of left "b" / right "c" open => unchanged
        keep left, values stand: base "a", left "b", right "c"; review of left "b" / right "c" decided keep left => settle "b" (decided keep left)
        keep left, right already written: base "a", left "b", right "b"; review of left "b" / right "c" decided keep left => settle "b" (decided keep left)
        keep right, values stand: base "a", left "b", right "c"; review of left "b" / right "c" decided keep right => settle "c" (decided keep right)
        keep right, left already written: base "a", left "c", right "c"; review of left "b" / right "c" decided keep right => settle "c" (decided keep right)
        value, values stand: base "a", left "b", right "c"; review of left "b" / right "c" decided value "x" => settle "x" (decided value "x")
        value, left already written: base "a", left "x", right "c"; review of left "b" / right "c" decided value "x" => settle "x" (decided value "x")
        value, both written: base "a", left "x", right "x"; review of left "b" / right "c" decided value "x" => settle "x" (decided value "x")
        keep left on a first sync: no baseline, left "b", right "c"; review of left "b" / right "c" decided keep left => settle "b" (decided keep left)
        keep left, left edited anew: base "a", left "d" at 10s, right "c" at 0s; review of left "b" / right "c" decided keep left
            review                      => hold conflict
            last_write_wins 5s tie left => settle "d" (last_write_wins left)
            prefer right                => settle "c" (prefer right)
        keep left, right edited anew: base "a", left "b" at 0s, right "d" at 10s; review of left "b" / right "c" decided keep left
            review                      => hold conflict
            last_write_wins 5s tie left => settle "d" (last_write_wins right)
            prefer right                => settle "d" (prefer right)
        keep right, left edited anew: base "a", left "d" at 10s, right "c" at 0s; review of left "b" / right "c" decided keep right
            review                      => hold conflict
            last_write_wins 5s tie left => settle "d" (last_write_wins left)
            prefer right                => settle "c" (prefer right)
        value, right edited anew: base "a", left "b" at 0s, right "d" at 10s; review of left "b" / right "c" decided value "x"
            review                      => hold conflict
            last_write_wins 5s tie left => settle "d" (last_write_wins right)
            prefer right                => settle "d" (prefer right)
        keep left, both back to the baseline: base "a", left "a", right "a"; review of left "b" / right "c" decided keep left => unchanged
    "#]],
    );
}

// ---------------------------------------------------------------------------------------------
// merge_presence: rows, policies, rendering, the check.

struct Record {
    name: &'static str,
    baseline: Option<Option<Side>>,
    present: Option<Side>,
    present_changed: bool,
    review: Option<Option<Decision>>,
}

fn record(name: &'static str) -> Record {
    Record { name, baseline: None, present: None, present_changed: false, review: None }
}

impl Record {
    fn only_on(self, side: Side) -> Self {
        Self { present: Some(side), ..self }
    }

    fn baseline(self) -> Self {
        Self { baseline: Some(None), ..self }
    }

    fn tombstone(self, deleted_on: Side) -> Self {
        Self { baseline: Some(Some(deleted_on)), ..self }
    }

    fn edited(self) -> Self {
        Self { present_changed: true, ..self }
    }

    fn open_review(self) -> Self {
        Self { review: Some(None), ..self }
    }

    fn decided(self, decision: Decision) -> Self {
        Self { review: Some(Some(decision)), ..self }
    }

    fn render(&self) -> String {
        let mut line = format!("{}: ", self.name);
        match self.present {
            Some(side) => write!(line, "only on {side}").unwrap(),
            None => line.push_str("on neither side"),
        }
        match self.baseline {
            None => line.push_str(", no baseline"),
            Some(None) => line.push_str(", baseline"),
            Some(Some(side)) => write!(line, ", baseline tombstoned on {side}").unwrap(),
        }
        if self.present.is_some() && self.baseline.is_some() {
            line.push_str(if self.present_changed { ", edited since" } else { ", unchanged since" });
        }
        match &self.review {
            None => {}
            Some(None) => line.push_str("; delete review open"),
            Some(Some(decision)) => {
                write!(line, "; delete review decided {}", show_decision(decision)).unwrap()
            }
        }
        line
    }
}

#[derive(Clone)]
struct Policy {
    creates: Creates,
    deletes: DeletePolicy,
    conflicts: ConflictStrategy,
}

fn policy(creates: Creates, deletes: DeletePolicy, conflicts: ConflictStrategy) -> Policy {
    Policy { creates, deletes, conflicts }
}

fn soft() -> DeletePolicy {
    DeletePolicy::Soft {
        paths: SidePair::new("status".into(), "/meta/status".into()),
        value: serde_json::Value::String("inactive".into()),
    }
}

fn presence(record: &Record, policy: &Policy) -> PresenceOutcome {
    merge_presence(PresenceInput {
        baseline: record.baseline,
        present: record.present,
        present_changed: record.present_changed,
        review: record.review.as_ref().map(Option::as_ref),
        creates: policy.creates,
        deletes: &policy.deletes,
        conflicts: policy.conflicts,
    })
}

fn show_presence(outcome: &PresenceOutcome) -> String {
    match outcome {
        PresenceOutcome::Nothing { reason } => format!("nothing ({reason})"),
        PresenceOutcome::Create { target, reason } => format!("create on {target} ({reason})"),
        PresenceOutcome::Delete { target, reason } => format!("delete on {target} ({reason})"),
        PresenceOutcome::SoftDelete { target, reason } => format!("soft delete on {target} ({reason})"),
        PresenceOutcome::Tombstone { deleted_on, reason } => {
            format!("tombstone, deleted on {deleted_on} ({reason})")
        }
        PresenceOutcome::Forget => "forget the baseline".into(),
        PresenceOutcome::Hold { reason } => format!("hold ({reason})"),
    }
}

fn check_presence(policies: &[(&str, Policy)], records: &[Record], expect: Expect) {
    let labels: Vec<&str> = policies.iter().map(|(label, _)| *label).collect();
    let mut out = format!("under: {}\n", labels.join(" | "));
    for record in records {
        let outcomes: Vec<String> =
            policies.iter().map(|(_, policy)| show_presence(&presence(record, policy))).collect();
        write_row(&mut out, &record.render(), &labels, &outcomes);
    }
    expect.assert_eq(&out);
}

// ---------------------------------------------------------------------------------------------
// merge_presence tables.

#[test]
fn records_on_one_side_without_a_baseline_follow_creates() {
    let creates = |creates| policy(creates, DeletePolicy::Review, ConflictStrategy::Review);
    let policies = [
        ("creates both", creates(Creates::Both)),
        ("creates left_to_right", creates(Creates::LeftToRight)),
        ("creates right_to_left", creates(Creates::RightToLeft)),
        ("creates none", creates(Creates::None)),
    ];
    let records = [
        record("new on the left").only_on(Left),
        record("new on the right").only_on(Right),
        record("on neither side, never seen").open_review(),
    ];
    check_presence(
        &policies,
        &records,
        expect![[r#"
            under: creates both | creates left_to_right | creates right_to_left | creates none
            new on the left: only on left, no baseline
                creates both, creates left_to_right => create on right (new on the left side)
                creates right_to_left, creates none => nothing (only on the left side, and creates on the right side are not allowed)
            new on the right: only on right, no baseline
                creates both, creates right_to_left => create on left (new on the right side)
                creates left_to_right, creates none => nothing (only on the right side, and creates on the left side are not allowed)
            on neither side, never seen: on neither side, no baseline; delete review open => nothing (absent on both sides)
        "#]],
    );
}

#[test]
fn deletes_follow_the_delete_policy() {
    let deletes = |deletes| policy(Creates::Both, deletes, lww(5_000, Tie::Side(Left)));
    let policies = [
        ("propagate", deletes(DeletePolicy::Propagate)),
        ("soft", deletes(soft())),
        ("ignore", deletes(DeletePolicy::Ignore)),
        ("review", deletes(DeletePolicy::Review)),
    ];
    let records = [
        record("deleted on the right").only_on(Left).baseline(),
        record("deleted on the left").only_on(Right).baseline(),
        record("deleted on the right earlier").only_on(Left).tombstone(Right),
        record("deleted on the right earlier, left edited").only_on(Left).tombstone(Right).edited(),
        record("deleted on the left earlier").only_on(Right).tombstone(Left),
        record("gone from both sides").baseline(),
        record("gone from both sides, tombstoned").tombstone(Left),
        record("gone from both sides, never seen"),
    ];
    check_presence(
        &policies,
        &records,
        expect![[r#"
        under: propagate | soft | ignore | review
        deleted on the right: only on left, baseline, unchanged since
            propagate => delete on left (deleted on the right side: deletes propagate)
            soft      => soft delete on left (deleted on the right side: soft delete)
            ignore    => tombstone, deleted on right (deleted on the right side: deletes are ignored)
            review    => hold (deleted on the right side: deletes are reviewed)
        deleted on the left: only on right, baseline, unchanged since
            propagate => delete on right (deleted on the left side: deletes propagate)
            soft      => soft delete on right (deleted on the left side: soft delete)
            ignore    => tombstone, deleted on left (deleted on the left side: deletes are ignored)
            review    => hold (deleted on the left side: deletes are reviewed)
        deleted on the right earlier: only on left, baseline tombstoned on right, unchanged since => nothing (deleted on the right side earlier)
        deleted on the right earlier, left edited: only on left, baseline tombstoned on right, edited since => nothing (deleted on the right side earlier)
        deleted on the left earlier: only on right, baseline tombstoned on left, unchanged since => nothing (deleted on the left side earlier)
        gone from both sides: on neither side, baseline => forget the baseline
        gone from both sides, tombstoned: on neither side, baseline tombstoned on left => forget the baseline
        gone from both sides, never seen: on neither side, no baseline => nothing (absent on both sides)
    "#]],
    );
}

#[test]
fn delete_versus_edit_is_a_review_unless_a_side_is_preferred() {
    let policies = [
        ("review, propagate", policy(Creates::Both, DeletePolicy::Propagate, ConflictStrategy::Review)),
        (
            "lww tie left, propagate",
            policy(Creates::Both, DeletePolicy::Propagate, lww(5_000, Tie::Side(Left))),
        ),
        (
            "lww tie review, propagate",
            policy(Creates::Both, DeletePolicy::Propagate, lww(5_000, Tie::Review)),
        ),
        (
            "prefer left, propagate",
            policy(Creates::Both, DeletePolicy::Propagate, ConflictStrategy::Prefer(Left)),
        ),
        (
            "prefer right, propagate",
            policy(Creates::Both, DeletePolicy::Propagate, ConflictStrategy::Prefer(Right)),
        ),
        ("prefer left, soft", policy(Creates::Both, soft(), ConflictStrategy::Prefer(Left))),
        ("prefer right, soft", policy(Creates::Both, soft(), ConflictStrategy::Prefer(Right))),
        ("prefer left, ignore", policy(Creates::Both, DeletePolicy::Ignore, ConflictStrategy::Prefer(Left))),
        (
            "prefer right, ignore",
            policy(Creates::Both, DeletePolicy::Ignore, ConflictStrategy::Prefer(Right)),
        ),
        ("prefer left, review", policy(Creates::Both, DeletePolicy::Review, ConflictStrategy::Prefer(Left))),
        (
            "prefer right, review",
            policy(Creates::Both, DeletePolicy::Review, ConflictStrategy::Prefer(Right)),
        ),
        // A restore under `creates` that forbids it: see `a_restore_is_a_create_and_obeys_creates`.
    ];
    let records = [
        record("deleted on the right, edited on the left").only_on(Left).baseline().edited(),
        record("deleted on the left, edited on the right").only_on(Right).baseline().edited(),
    ];
    check_presence(
        &policies,
        &records,
        expect![[r#"
            under: review, propagate | lww tie left, propagate | lww tie review, propagate | prefer left, propagate | prefer right, propagate | prefer left, soft | prefer right, soft | prefer left, ignore | prefer right, ignore | prefer left, review | prefer right, review
            deleted on the right, edited on the left: only on left, baseline, edited since
                review, propagate, lww tie left, propagate, lww tie review, propagate               => hold (deleted on the right side but edited on the left side)
                prefer left, propagate, prefer left, soft, prefer left, ignore, prefer left, review => create on right (deleted on the right side, kept on the left side)
                prefer right, propagate                                                             => delete on left (deleted on the right side: deletes propagate)
                prefer right, soft                                                                  => soft delete on left (deleted on the right side: soft delete)
                prefer right, ignore                                                                => tombstone, deleted on right (deleted on the right side: deletes are ignored)
                prefer right, review                                                                => hold (deleted on the right side: deletes are reviewed)
            deleted on the left, edited on the right: only on right, baseline, edited since
                review, propagate, lww tie left, propagate, lww tie review, propagate                   => hold (deleted on the left side but edited on the right side)
                prefer left, propagate                                                                  => delete on right (deleted on the left side: deletes propagate)
                prefer right, propagate, prefer right, soft, prefer right, ignore, prefer right, review => create on left (deleted on the left side, kept on the right side)
                prefer left, soft                                                                       => soft delete on right (deleted on the left side: soft delete)
                prefer left, ignore                                                                     => tombstone, deleted on left (deleted on the left side: deletes are ignored)
                prefer left, review                                                                     => hold (deleted on the left side: deletes are reviewed)
        "#]],
    );
}

#[test]
fn delete_reviews_apply_the_decision() {
    let deletes = |deletes| policy(Creates::Both, deletes, ConflictStrategy::Review);
    let policies = [
        ("deletes review", deletes(DeletePolicy::Review)),
        ("deletes propagate", deletes(DeletePolicy::Propagate)),
        ("deletes soft", deletes(soft())),
        ("deletes ignore", deletes(DeletePolicy::Ignore)),
    ];
    let keep = Decision::Keep;
    let records = [
        record("deleted on the right").only_on(Left).baseline().open_review(),
        record("deleted on the right, edited on the left").only_on(Left).baseline().edited().open_review(),
        record("deleted on the right, keep the deleted side").only_on(Left).baseline().decided(keep(Right)),
        record("deleted on the right, keep the present side").only_on(Left).baseline().decided(keep(Left)),
        record("deleted on the left, keep the deleted side").only_on(Right).baseline().decided(keep(Left)),
        record("deleted on the left, keep the present side").only_on(Right).baseline().decided(keep(Right)),
        record("deleted on the left, edited, keep the deleted side")
            .only_on(Right)
            .baseline()
            .edited()
            .decided(keep(Left)),
        record("deleted on the left, edited, keep the present side")
            .only_on(Right)
            .baseline()
            .edited()
            .decided(keep(Right)),
        record("deleted on the right, decided a value")
            .only_on(Left)
            .baseline()
            .decided(Decision::Value("x".into())),
        record("gone from both sides").baseline().open_review(),
    ];
    check_presence(
        &policies,
        &records,
        expect![[r#"
        under: deletes review | deletes propagate | deletes soft | deletes ignore
        deleted on the right: only on left, baseline, unchanged since; delete review open => hold (waiting for a person)
        deleted on the right, edited on the left: only on left, baseline, edited since; delete review open => hold (waiting for a person)
        deleted on the right, keep the deleted side: only on left, baseline, unchanged since; delete review decided keep right
            deletes review    => delete on left (deleted on the right side: decided in review)
            deletes propagate => delete on left (deleted on the right side: deletes propagate)
            deletes soft      => soft delete on left (deleted on the right side: soft delete)
            deletes ignore    => tombstone, deleted on right (deleted on the right side: deletes are ignored)
        deleted on the right, keep the present side: only on left, baseline, unchanged since; delete review decided keep left => create on right (deleted on the right side, kept on the left side)
        deleted on the left, keep the deleted side: only on right, baseline, unchanged since; delete review decided keep left
            deletes review    => delete on right (deleted on the left side: decided in review)
            deletes propagate => delete on right (deleted on the left side: deletes propagate)
            deletes soft      => soft delete on right (deleted on the left side: soft delete)
            deletes ignore    => tombstone, deleted on left (deleted on the left side: deletes are ignored)
        deleted on the left, keep the present side: only on right, baseline, unchanged since; delete review decided keep right => create on left (deleted on the left side, kept on the right side)
        deleted on the left, edited, keep the deleted side: only on right, baseline, edited since; delete review decided keep left
            deletes review    => delete on right (deleted on the left side: decided in review)
            deletes propagate => delete on right (deleted on the left side: deletes propagate)
            deletes soft      => soft delete on right (deleted on the left side: soft delete)
            deletes ignore    => tombstone, deleted on left (deleted on the left side: deletes are ignored)
        deleted on the left, edited, keep the present side: only on right, baseline, edited since; delete review decided keep right => create on left (deleted on the left side, kept on the right side)
        deleted on the right, decided a value: only on left, baseline, unchanged since; delete review decided value "x" => create on right (deleted on the right side, kept on the left side)
        gone from both sides: on neither side, baseline; delete review open => forget the baseline
    "#]],
    );
}

// ---------------------------------------------------------------------------------------------
// Exhaustive sweeps over a tiny domain: invariants, and order independence by mirroring.

fn mirror_conflicts(conflicts: ConflictStrategy) -> ConflictStrategy {
    match conflicts {
        ConflictStrategy::LastWriteWins { grace, tie: Tie::Side(side) } => {
            ConflictStrategy::LastWriteWins { grace, tie: Tie::Side(side.other()) }
        }
        ConflictStrategy::Prefer(side) => ConflictStrategy::Prefer(side.other()),
        other @ (ConflictStrategy::LastWriteWins { tie: Tie::Review, .. } | ConflictStrategy::Review) => {
            other
        }
    }
}

fn mirror_rules(rules: FieldRules) -> FieldRules {
    FieldRules {
        conflicts: mirror_conflicts(rules.conflicts),
        first_sync: match rules.first_sync {
            FirstSyncStrategy::Prefer(side) => FirstSyncStrategy::Prefer(side.other()),
            FirstSyncStrategy::Review => FirstSyncStrategy::Review,
        },
        direction: match rules.direction {
            Direction::Both => Direction::Both,
            Direction::LeftToRight => Direction::RightToLeft,
            Direction::RightToLeft => Direction::LeftToRight,
        },
    }
}

fn mirror_decision(decision: &Decision) -> Decision {
    match decision {
        Decision::Keep(side) => Decision::Keep(side.other()),
        Decision::Value(value) => Decision::Value(value.clone()),
    }
}

fn mirror_reason(reason: Reason) -> Reason {
    match reason {
        Reason::OneSided { side } => Reason::OneSided { side: side.other() },
        Reason::FirstSyncPrefer { side } => Reason::FirstSyncPrefer { side: side.other() },
        Reason::LastWriteWins { winner, left_time, right_time } => {
            Reason::LastWriteWins { winner: winner.other(), left_time: right_time, right_time: left_time }
        }
        Reason::GraceTie { winner, apart_ms, grace_ms } => {
            Reason::GraceTie { winner: winner.other(), apart_ms, grace_ms }
        }
        Reason::Prefer { side } => Reason::Prefer { side: side.other() },
        Reason::OneWay { source, reverted } => Reason::OneWay { source: source.other(), reverted },
        Reason::Decided { decision } => Reason::Decided { decision: mirror_decision(&decision) },
        same @ (Reason::SameValue | Reason::FirstSyncEqual) => same,
    }
}

fn mirror_field(outcome: FieldOutcome) -> FieldOutcome {
    match outcome {
        FieldOutcome::Settle { value, reason } => {
            FieldOutcome::Settle { value, reason: mirror_reason(reason) }
        }
        same @ (FieldOutcome::Unchanged | FieldOutcome::Hold { .. }) => same,
    }
}

/// The six conflict strategies, unlabelled, for the sweeps.
fn conflict_strategies() -> [ConflictStrategy; 6] {
    [
        lww(5_000, Tie::Side(Left)),
        lww(5_000, Tie::Side(Right)),
        lww(5_000, Tie::Review),
        ConflictStrategy::Prefer(Left),
        ConflictStrategy::Prefer(Right),
        ConflictStrategy::Review,
    ]
}

/// Every field rule: six conflict strategies × three first-sync strategies × three directions.
fn every_field_rule() -> Vec<FieldRules> {
    let conflicts = conflict_strategies();
    let first_syncs =
        [FirstSyncStrategy::Prefer(Left), FirstSyncStrategy::Prefer(Right), FirstSyncStrategy::Review];
    let directions = [Direction::Both, Direction::LeftToRight, Direction::RightToLeft];
    let mut all = Vec::new();
    for conflicts in conflicts {
        for first_sync in first_syncs {
            for direction in directions {
                all.push(rules(conflicts, first_sync, direction));
            }
        }
    }
    all
}

#[test]
fn merge_field_invariants_over_a_tiny_domain() {
    let domain = [NULL, Value::from("a"), Value::from("b")];
    let bases: Vec<Option<&Value>> = std::iter::once(None).chain(domain.iter().map(Some)).collect();
    // Left 10 s later, right 10 s later, and the same instant (inside any grace).
    let times = [(10_000, 0), (0, 10_000), (0, 0)];
    // No review, or a realistic one: its reviewed values differ; open, or decided each way.
    let decisions =
        [None, Some(Decision::Keep(Left)), Some(Decision::Keep(Right)), Some(Decision::Value("z".into()))];
    let mut reviews: Vec<Option<Reviewed>> = vec![None];
    for left in &domain {
        for right in domain.iter().filter(|right| *right != left) {
            for decision in &decisions {
                reviews.push(Some(Reviewed {
                    left: left.clone(),
                    right: right.clone(),
                    decision: decision.clone(),
                }));
            }
        }
    }
    let mut cases = 0;
    for rules in every_field_rule() {
        for base in &bases {
            for left in &domain {
                for right in &domain {
                    for (left_ms, right_ms) in times {
                        for review in &reviews {
                            cases += 1;
                            let input = FieldInput {
                                base: *base,
                                left,
                                right,
                                left_time: at(left_ms),
                                right_time: at(right_ms),
                            };
                            let view = review.as_ref().map(|review| ReviewView {
                                left: Some(&review.left),
                                right: Some(&review.right),
                                decision: review.decision.as_ref(),
                            });
                            let outcome = merge_field(input, rules, view);
                            let case = || format!("{input:?} {rules:?} {view:?} => {outcome:?}");

                            // (1) Neither side differs from the baseline: nothing to do.
                            if review.is_none() && *base == Some(left) && *base == Some(right) {
                                assert_eq!(outcome, FieldOutcome::Unchanged, "(1) {}", case());
                            }
                            // (2) A settled value is one of the sides' or a person's.
                            if let FieldOutcome::Settle { value, reason } = &outcome {
                                let decided = matches!(reason, Reason::Decided { decision: Decision::Value(v) } if v == value);
                                assert!(value == left || value == right || decided, "(2) {}", case());
                            }
                            // (3) Under `review`, a real conflict waits for a person (or their decision).
                            let real_conflict =
                                base.is_some_and(|base| left != base && right != base) && left != right;
                            if real_conflict
                                && rules.direction == Direction::Both
                                && rules.conflicts == ConflictStrategy::Review
                            {
                                assert!(
                                    matches!(
                                        outcome,
                                        FieldOutcome::Hold { .. }
                                            | FieldOutcome::Settle { reason: Reason::Decided { .. }, .. }
                                    ),
                                    "(3) {}",
                                    case()
                                );
                                if review.is_none() {
                                    assert!(
                                        matches!(
                                            outcome,
                                            FieldOutcome::Hold { kind: ReviewKind::Conflict, .. }
                                        ),
                                        "(3) {}",
                                        case()
                                    );
                                }
                            }
                            // (4) Equal values never wait for a person.
                            if left == right {
                                assert!(!matches!(outcome, FieldOutcome::Hold { .. }), "(4) {}", case());
                            }
                            // (5) Swapping the sides (and mirroring every side in the rules) mirrors the outcome.
                            let mirrored_review = review.as_ref().map(|review| Reviewed {
                                left: review.right.clone(),
                                right: review.left.clone(),
                                decision: review.decision.as_ref().map(mirror_decision),
                            });
                            let mirrored = merge_field(
                                FieldInput {
                                    base: *base,
                                    left: right,
                                    right: left,
                                    left_time: at(right_ms),
                                    right_time: at(left_ms),
                                },
                                mirror_rules(rules),
                                mirrored_review.as_ref().map(|review| ReviewView {
                                    left: Some(&review.left),
                                    right: Some(&review.right),
                                    decision: review.decision.as_ref(),
                                }),
                            );
                            assert_eq!(mirrored, mirror_field(outcome.clone()), "(5) {}", case());

                            if review.is_none() {
                                // (6) A one-way field only ever settles to its source's value.
                                if let Some(source) = rules.direction.source() {
                                    let source_value = if source == Left { left } else { right };
                                    match &outcome {
                                        FieldOutcome::Unchanged => {}
                                        FieldOutcome::Settle { value, .. } => {
                                            assert_eq!(value, source_value, "(6) {}", case())
                                        }
                                        FieldOutcome::Hold { .. } => panic!("(6) {}", case()),
                                    }
                                }
                                // (7) Without a baseline, a difference follows `first_sync` (or the
                                // direction), never a conflict rule and never the clock.
                                if base.is_none() {
                                    let ok = match &outcome {
                                        FieldOutcome::Settle { reason: Reason::FirstSyncEqual, .. } => {
                                            left == right
                                        }
                                        FieldOutcome::Settle {
                                            reason: Reason::OneWay { reverted: false, .. },
                                            ..
                                        } => rules.direction != Direction::Both,
                                        FieldOutcome::Settle {
                                            reason: Reason::FirstSyncPrefer { side },
                                            ..
                                        } => rules.first_sync == FirstSyncStrategy::Prefer(*side),
                                        FieldOutcome::Hold { kind: ReviewKind::FirstSync, .. } => {
                                            rules.first_sync == FirstSyncStrategy::Review
                                        }
                                        _ => false,
                                    };
                                    assert!(ok, "(7) {}", case());
                                }
                                // (8) Edit times matter only to `last_write_wins` deciding a real conflict.
                                let conflict_by_clock = real_conflict
                                    && rules.direction == Direction::Both
                                    && matches!(rules.conflicts, ConflictStrategy::LastWriteWins { .. });
                                if !conflict_by_clock {
                                    let later = merge_field(
                                        FieldInput { left_time: at(left_ms + 60_000), ..input },
                                        rules,
                                        None,
                                    );
                                    assert_eq!(later, outcome, "(8) {}", case());
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    assert_eq!(cases, 54 * 4 * 3 * 3 * 3 * 25);
}

fn mirror_policy(policy: &DeletePolicy) -> DeletePolicy {
    match policy {
        DeletePolicy::Soft { paths, value } => DeletePolicy::Soft {
            paths: SidePair::new(paths.right.clone(), paths.left.clone()),
            value: value.clone(),
        },
        other => other.clone(),
    }
}

/// Swaps the words `left` and `right` in a reason sentence.
fn mirror_words(text: &str) -> String {
    text.replace("left", "\u{0}").replace("right", "left").replace('\u{0}', "right")
}

fn mirror_presence(outcome: PresenceOutcome) -> PresenceOutcome {
    match outcome {
        PresenceOutcome::Nothing { reason } => PresenceOutcome::Nothing { reason: mirror_words(&reason) },
        PresenceOutcome::Create { target, reason } => {
            PresenceOutcome::Create { target: target.other(), reason: mirror_words(&reason) }
        }
        PresenceOutcome::Delete { target, reason } => {
            PresenceOutcome::Delete { target: target.other(), reason: mirror_words(&reason) }
        }
        PresenceOutcome::SoftDelete { target, reason } => {
            PresenceOutcome::SoftDelete { target: target.other(), reason: mirror_words(&reason) }
        }
        PresenceOutcome::Tombstone { deleted_on, reason } => {
            PresenceOutcome::Tombstone { deleted_on: deleted_on.other(), reason: mirror_words(&reason) }
        }
        PresenceOutcome::Forget => PresenceOutcome::Forget,
        PresenceOutcome::Hold { reason } => PresenceOutcome::Hold { reason: mirror_words(&reason) },
    }
}

#[test]
fn merge_presence_invariants_over_every_input() {
    let baselines = [None, Some(None), Some(Some(Left)), Some(Some(Right))];
    let presents = [None, Some(Left), Some(Right)];
    let reviews = [
        None,
        Some(None),
        Some(Some(Decision::Keep(Left))),
        Some(Some(Decision::Keep(Right))),
        Some(Some(Decision::Value("z".into()))),
    ];
    let creates = [Creates::Both, Creates::LeftToRight, Creates::RightToLeft, Creates::None];
    let deletes = [DeletePolicy::Propagate, soft(), DeletePolicy::Ignore, DeletePolicy::Review];
    let conflicts = conflict_strategies();
    let mut cases = 0;
    for baseline in baselines {
        for present in presents {
            for present_changed in [false, true] {
                for review in &reviews {
                    for creates in creates {
                        for deletes in &deletes {
                            for conflicts in conflicts {
                                cases += 1;
                                let input = PresenceInput {
                                    baseline,
                                    present,
                                    present_changed,
                                    review: review.as_ref().map(Option::as_ref),
                                    creates,
                                    deletes,
                                    conflicts,
                                };
                                let outcome = merge_presence(input);
                                let case = || format!("{input:?} => {outcome:?}");
                                let absent = present.map(Side::other);

                                // (a) Creates go to the absent side, deletes to the present one.
                                match &outcome {
                                    PresenceOutcome::Create { target, .. } => {
                                        assert_eq!(Some(*target), absent, "(a) {}", case())
                                    }
                                    PresenceOutcome::Delete { target, .. }
                                    | PresenceOutcome::SoftDelete { target, .. } => {
                                        assert_eq!(Some(*target), present, "(a) {}", case())
                                    }
                                    PresenceOutcome::Tombstone { deleted_on, .. } => {
                                        assert_eq!(Some(*deleted_on), absent, "(a) {}", case())
                                    }
                                    _ => {}
                                }
                                // (b) A record never agreed on is only ever created (or left alone).
                                if baseline.is_none() {
                                    assert!(
                                        matches!(
                                            outcome,
                                            PresenceOutcome::Create { .. } | PresenceOutcome::Nothing { .. }
                                        ),
                                        "(b) {}",
                                        case()
                                    );
                                }
                                // (c) Gone from both sides: the baseline is forgotten, if any.
                                if present.is_none() {
                                    let forget = matches!(outcome, PresenceOutcome::Forget);
                                    assert_eq!(forget, baseline.is_some(), "(c) {}", case());
                                }
                                // (d) No edit is lost silently: an edited record is deleted only when
                                // the deleted side is preferred or a person kept it.
                                if present_changed
                                    && matches!(
                                        outcome,
                                        PresenceOutcome::Delete { .. } | PresenceOutcome::SoftDelete { .. }
                                    )
                                {
                                    let absent = absent.unwrap();
                                    let chosen = conflicts == ConflictStrategy::Prefer(absent)
                                        || matches!(review, Some(Some(Decision::Keep(side))) if *side == absent);
                                    assert!(chosen, "(d) {}", case());
                                }
                                // (e) An open review holds, unless the record is settled already.
                                if matches!(review, Some(None))
                                    && present.is_some()
                                    && baseline.is_some()
                                    && baseline != Some(absent)
                                {
                                    assert!(
                                        matches!(outcome, PresenceOutcome::Hold { .. }),
                                        "(e) {}",
                                        case()
                                    );
                                }
                                // (f) Swapping the sides mirrors the outcome.
                                let mirrored_review =
                                    review.as_ref().map(|review| review.as_ref().map(mirror_decision));
                                let mirrored_deletes = mirror_policy(deletes);
                                let mirrored = merge_presence(PresenceInput {
                                    baseline: baseline.map(|tombstone| tombstone.map(Side::other)),
                                    present: absent,
                                    present_changed,
                                    review: mirrored_review.as_ref().map(Option::as_ref),
                                    creates: match creates {
                                        Creates::LeftToRight => Creates::RightToLeft,
                                        Creates::RightToLeft => Creates::LeftToRight,
                                        other => other,
                                    },
                                    deletes: &mirrored_deletes,
                                    conflicts: mirror_conflicts(conflicts),
                                });
                                assert_eq!(mirrored, mirror_presence(outcome.clone()), "(f) {}", case());
                            }
                        }
                    }
                }
            }
        }
    }
    assert_eq!(cases, 4 * 3 * 2 * 5 * 4 * 4 * 6);
}

/// `product.md`, "How a run works" 3: records that exist on one side only are created on the
/// other "where the link allows creates in that direction". Restoring a record deleted on one
/// side (the present side preferred, or a person kept it) is such a create. Regression: the
/// restore once ignored `creates`; where creates are not allowed the delete is remembered.
#[test]
fn a_restore_is_a_create_and_obeys_creates() {
    let mut wrong = Vec::new();
    for creates in [Creates::LeftToRight, Creates::RightToLeft, Creates::None] {
        for present in [Left, Right] {
            let ways: [(&str, ConflictStrategy, Option<Option<Decision>>); 3] = [
                ("edited, prefer the present side", ConflictStrategy::Prefer(present), None),
                (
                    "review decided keep the present side",
                    ConflictStrategy::Review,
                    Some(Some(Decision::Keep(present))),
                ),
                ("review decided a value", ConflictStrategy::Review, Some(Some(Decision::Value("x".into())))),
            ];
            for (way, conflicts, review) in ways {
                let outcome = merge_presence(PresenceInput {
                    baseline: Some(None),
                    present: Some(present),
                    present_changed: true,
                    review: review.as_ref().map(Option::as_ref),
                    creates,
                    deletes: &DeletePolicy::Propagate,
                    conflicts,
                });
                if let PresenceOutcome::Create { target, .. } = &outcome
                    && !creates.allows(*target)
                {
                    wrong.push(format!(
                        "{creates:?}, only on {present}, {way} => {}",
                        show_presence(&outcome)
                    ));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "creates where the link forbids them:\n{}", wrong.join("\n"));
}
