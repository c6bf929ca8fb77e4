//! The three-way merge, as pure functions: given a record's baseline, the current values on
//! both sides, their edit times, live reviews and the link's policies, decide what each
//! field (or the whole record) should become and why. No I/O, no clock, no randomness:
//! the same inputs give the same decision, whatever the order of reads (guarantee 12).

use std::fmt;
use std::time::Duration;

use fieldsync_model::{Side, Value};
use fieldsync_store::{Decision, ReviewKind};
use jiff::Timestamp;
use serde::Serialize;

use crate::spec::{ConflictStrategy, Creates, DeletePolicy, Direction, FirstSyncStrategy, Tie};

/// Why a field was settled as it was; rendered into the audit trail and the report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum Reason {
    /// Only this side changed the field.
    OneSided {
        /// The side that changed it.
        side: Side,
    },
    /// Both sides changed the field to the same value: no conflict.
    SameValue,
    /// First sync: both sides already held the same value.
    FirstSyncEqual,
    /// First sync: the preferred side's value was taken.
    FirstSyncPrefer {
        /// The preferred side.
        side: Side,
    },
    /// A conflict settled by the later edit.
    LastWriteWins {
        /// The later side.
        winner: Side,
        /// When the left side's edit was made.
        left_time: Timestamp,
        /// When the right side's edit was made.
        right_time: Timestamp,
    },
    /// A conflict inside the grace window settled by the configured tie side.
    GraceTie {
        /// The tie side.
        winner: Side,
        /// How far apart the edits were.
        apart_ms: u64,
        /// The grace window.
        grace_ms: u64,
    },
    /// A conflict settled by the preferred side.
    Prefer {
        /// The preferred side.
        side: Side,
    },
    /// A one-way field follows its source.
    OneWay {
        /// The source side.
        source: Side,
        /// Whether an edit on the target was put back.
        reverted: bool,
    },
    /// A person decided.
    Decided {
        /// The decision.
        decision: Decision,
    },
}

impl Reason {
    /// The side whose value won, if one did.
    pub fn winner(&self) -> Option<Side> {
        match self {
            Reason::OneSided { side } | Reason::FirstSyncPrefer { side } | Reason::Prefer { side } => {
                Some(*side)
            }
            Reason::LastWriteWins { winner, .. } | Reason::GraceTie { winner, .. } => Some(*winner),
            Reason::OneWay { source, .. } => Some(*source),
            Reason::Decided { decision: Decision::Keep(side) } => Some(*side),
            Reason::SameValue | Reason::FirstSyncEqual | Reason::Decided { .. } => None,
        }
    }

    /// Whether this settled a conflict (both sides had changed the field).
    pub fn is_conflict(&self) -> bool {
        matches!(self, Reason::LastWriteWins { .. } | Reason::GraceTie { .. } | Reason::Prefer { .. })
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::OneSided { side } => write!(formatter, "changed on the {side} side only"),
            Reason::SameValue => formatter.write_str("both sides changed it to the same value"),
            Reason::FirstSyncEqual => formatter.write_str("first sync: both sides already agree"),
            Reason::FirstSyncPrefer { side } => write!(formatter, "first sync: the {side} side is preferred"),
            Reason::LastWriteWins { winner, left_time, right_time } => write!(
                formatter,
                "conflict: last write wins, the {winner} edit is later (left {left_time}, right {right_time})"
            ),
            Reason::GraceTie { winner, apart_ms, grace_ms } => write!(
                formatter,
                "conflict: edits {apart_ms} ms apart, inside the {grace_ms} ms grace window; the tie goes to {winner}"
            ),
            Reason::Prefer { side } => write!(formatter, "conflict: the {side} side is preferred"),
            Reason::OneWay { source, reverted: false } => {
                write!(formatter, "one-way field from the {source} side")
            }
            Reason::OneWay { source, reverted: true } => {
                write!(
                    formatter,
                    "one-way field from the {source} side: an edit on the {} side was reverted",
                    source.other()
                )
            }
            Reason::Decided { decision: Decision::Keep(side) } => {
                write!(formatter, "decided in review: keep {side}")
            }
            Reason::Decided { decision: Decision::Value(value) } => {
                write!(formatter, "decided in review: use {value}")
            }
        }
    }
}

/// What a field should become.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FieldOutcome {
    /// Neither side changed it: nothing to do.
    Unchanged,
    /// Both sides should hold `value`; the planner writes it where a side differs, and the
    /// baseline moves to it once both do.
    Settle {
        /// The merged value.
        value: Value,
        /// Why.
        reason: Reason,
    },
    /// Held for a person: nobody writes the field.
    Hold {
        /// Why a person must decide.
        kind: ReviewKind,
        /// A sentence for the person.
        reason: String,
    },
}

/// A live review of a field, as the merge needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReviewView<'a> {
    /// The left value when the review was opened.
    pub left: Option<&'a Value>,
    /// The right value when the review was opened.
    pub right: Option<&'a Value>,
    /// The decision, once a person made one.
    pub decision: Option<&'a Decision>,
}

/// The rules that apply to one field.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FieldRules {
    /// How conflicts are settled.
    pub conflicts: ConflictStrategy,
    /// How a first sync settles a difference.
    pub first_sync: FirstSyncStrategy,
    /// Which way the field flows.
    pub direction: Direction,
}

/// One field's merge inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldInput<'a> {
    /// The agreed value, `None` when the sides never agreed.
    pub base: Option<&'a Value>,
    /// The left value now.
    pub left: &'a Value,
    /// The right value now.
    pub right: &'a Value,
    /// When the left record was last edited.
    pub left_time: Timestamp,
    /// When the right record was last edited.
    pub right_time: Timestamp,
}

impl FieldInput<'_> {
    fn value(&self, side: Side) -> &Value {
        side.pick(self.left, self.right)
    }
}

fn settle(value: &Value, reason: Reason) -> FieldOutcome {
    FieldOutcome::Settle { value: value.clone(), reason }
}

/// Merges one field. A live review governs first: a decision is applied while each side
/// still holds its reviewed value (or already the decided one); an open review holds the
/// field while its values stand. Otherwise the three-way merge of `product.md` applies.
pub fn merge_field(input: FieldInput<'_>, rules: FieldRules, review: Option<ReviewView<'_>>) -> FieldOutcome {
    if let Some(review) = review {
        let as_reviewed = review.left == Some(input.left) && review.right == Some(input.right);
        match review.decision {
            Some(decision) => {
                let decided = match decision {
                    Decision::Keep(Side::Left) => review.left,
                    Decision::Keep(Side::Right) => review.right,
                    Decision::Value(value) => Some(value),
                };
                if let Some(decided) = decided {
                    let holds = |current: &Value, reviewed: Option<&Value>| {
                        current == decided || Some(current) == reviewed
                    };
                    if holds(input.left, review.left) && holds(input.right, review.right) {
                        return settle(decided, Reason::Decided { decision: decision.clone() });
                    }
                }
            }
            None if as_reviewed => {
                return FieldOutcome::Hold {
                    kind: ReviewKind::Conflict,
                    reason: "waiting for a person".into(),
                };
            }
            None => {}
        }
    }
    merge_values(input, rules)
}

fn merge_values(input: FieldInput<'_>, rules: FieldRules) -> FieldOutcome {
    let FieldInput { base, left, right, .. } = input;
    let source = rules.direction.source();
    let Some(base) = base else {
        if left == right {
            return settle(left, Reason::FirstSyncEqual);
        }
        if let Some(source) = source {
            return settle(input.value(source), Reason::OneWay { source, reverted: false });
        }
        return match rules.first_sync {
            FirstSyncStrategy::Prefer(side) => settle(input.value(side), Reason::FirstSyncPrefer { side }),
            FirstSyncStrategy::Review => FieldOutcome::Hold {
                kind: ReviewKind::FirstSync,
                reason: "first sync: the sides differ and first_sync is review".into(),
            },
        };
    };
    let left_changed = left != base;
    let right_changed = right != base;
    if !left_changed && !right_changed {
        return FieldOutcome::Unchanged;
    }
    if left == right {
        return settle(left, Reason::SameValue);
    }
    if let Some(source) = source {
        let target_changed = input.value(source.other()) != base;
        return settle(input.value(source), Reason::OneWay { source, reverted: target_changed });
    }
    match (left_changed, right_changed) {
        (true, false) => return settle(left, Reason::OneSided { side: Side::Left }),
        (false, true) => return settle(right, Reason::OneSided { side: Side::Right }),
        _ => {}
    }
    match rules.conflicts {
        ConflictStrategy::Prefer(side) => settle(input.value(side), Reason::Prefer { side }),
        ConflictStrategy::Review => FieldOutcome::Hold {
            kind: ReviewKind::Conflict,
            reason: "conflict: both sides changed it and the strategy is review".into(),
        },
        ConflictStrategy::LastWriteWins { grace, tie } => {
            let apart = input.left_time.duration_since(input.right_time).unsigned_abs();
            if apart <= grace {
                let apart_ms = millis(apart);
                let grace_ms = millis(grace);
                match tie {
                    Tie::Side(winner) => {
                        settle(input.value(winner), Reason::GraceTie { winner, apart_ms, grace_ms })
                    }
                    Tie::Review => FieldOutcome::Hold {
                        kind: ReviewKind::Conflict,
                        reason: format!(
                            "conflict: edits {apart_ms} ms apart, inside the {grace_ms} ms grace window, and the tie is review"
                        ),
                    },
                }
            } else {
                let winner = if input.left_time > input.right_time { Side::Left } else { Side::Right };
                settle(
                    input.value(winner),
                    Reason::LastWriteWins {
                        winner,
                        left_time: input.left_time,
                        right_time: input.right_time,
                    },
                )
            }
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// What should happen to a record that is absent on one side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PresenceOutcome {
    /// Nothing to do now (creates not allowed that way, or already settled).
    Nothing {
        /// Why.
        reason: String,
    },
    /// Create the record on `target` from the other side's values.
    Create {
        /// Where to create it.
        target: Side,
        /// Why.
        reason: String,
    },
    /// Delete the record on `target` (it was deleted on the other side).
    Delete {
        /// Where to delete it.
        target: Side,
        /// Why.
        reason: String,
    },
    /// Write the soft-delete value on `target`, and remember the delete.
    SoftDelete {
        /// Where to write it.
        target: Side,
        /// Why.
        reason: String,
    },
    /// Leave the record on the other side, and remember the delete on `deleted_on`.
    Tombstone {
        /// The side it was deleted on.
        deleted_on: Side,
        /// Why.
        reason: String,
    },
    /// The record is gone from both sides: forget its baseline.
    Forget,
    /// Held for a person.
    Hold {
        /// A sentence for the person.
        reason: String,
    },
}

/// The record-level inputs when at least one side lacks the record.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PresenceInput<'a> {
    /// Whether a baseline exists, and its tombstone.
    pub baseline: Option<Option<Side>>,
    /// Which side holds the record; `None` when neither does.
    pub present: Option<Side>,
    /// Whether the present side changed any field since the baseline.
    pub present_changed: bool,
    /// A live delete review's decision, if one exists (`Some(None)`: open, undecided).
    pub review: Option<Option<&'a Decision>>,
    /// Where records may be created.
    pub creates: Creates,
    /// What deletes do.
    pub deletes: &'a DeletePolicy,
    /// How conflicts are settled (a delete against an edit follows `prefer`).
    pub conflicts: ConflictStrategy,
}

/// Decides what happens to a record that exists on one side only, or on neither.
pub fn merge_presence(input: PresenceInput<'_>) -> PresenceOutcome {
    let Some(present) = input.present else {
        return if input.baseline.is_some() {
            PresenceOutcome::Forget
        } else {
            PresenceOutcome::Nothing { reason: "absent on both sides".into() }
        };
    };
    let absent = present.other();
    let Some(tombstone) = input.baseline else {
        return if input.creates.allows(absent) {
            PresenceOutcome::Create { target: absent, reason: format!("new on the {present} side") }
        } else {
            PresenceOutcome::Nothing {
                reason: format!(
                    "only on the {present} side, and creates on the {absent} side are not allowed"
                ),
            }
        };
    };
    if tombstone == Some(absent) {
        return PresenceOutcome::Nothing { reason: format!("deleted on the {absent} side earlier") };
    }
    // Keeping the record means creating it again where it was deleted, where creates are
    // allowed; elsewhere the delete is remembered and the record stays on its side.
    let restore = || {
        if input.creates.allows(absent) {
            PresenceOutcome::Create {
                target: absent,
                reason: format!("deleted on the {absent} side, kept on the {present} side"),
            }
        } else {
            PresenceOutcome::Tombstone {
                deleted_on: absent,
                reason: format!(
                    "deleted on the {absent} side, kept on the {present} side; creates on the {absent} side are not allowed"
                ),
            }
        }
    };
    match input.review {
        Some(Some(Decision::Keep(side))) if *side == absent => {
            return apply_delete(input.deletes, absent, true);
        }
        Some(Some(_)) => return restore(),
        Some(None) => return PresenceOutcome::Hold { reason: "waiting for a person".into() },
        None => {}
    }
    if input.present_changed {
        return match input.conflicts {
            ConflictStrategy::Prefer(side) if side == present => restore(),
            ConflictStrategy::Prefer(_) => apply_delete(input.deletes, absent, false),
            _ => PresenceOutcome::Hold {
                reason: format!("deleted on the {absent} side but edited on the {present} side"),
            },
        };
    }
    apply_delete(input.deletes, absent, false)
}

fn apply_delete(policy: &DeletePolicy, deleted_on: Side, decided: bool) -> PresenceOutcome {
    let target = deleted_on.other();
    let why = format!("deleted on the {deleted_on} side");
    match policy {
        DeletePolicy::Propagate => {
            PresenceOutcome::Delete { target, reason: format!("{why}: deletes propagate") }
        }
        DeletePolicy::Soft { .. } => {
            PresenceOutcome::SoftDelete { target, reason: format!("{why}: soft delete") }
        }
        DeletePolicy::Ignore => {
            PresenceOutcome::Tombstone { deleted_on, reason: format!("{why}: deletes are ignored") }
        }
        DeletePolicy::Review if decided => {
            PresenceOutcome::Delete { target, reason: format!("{why}: decided in review") }
        }
        DeletePolicy::Review => PresenceOutcome::Hold { reason: format!("{why}: deletes are reviewed") },
    }
}
