//! `RunReport`: what a run did, for people and programs. The CLI renders it as text or JSON;
//! its statistics are stored in the run history.

use fieldsync_model::{LinkName, RecordKey, RunId, Side, Value};
use fieldsync_store::RunStatus;
use serde::Serialize;

use crate::spec::SidePair;

/// How many report lines a run keeps; the statistics count everything.
pub const REPORT_LINE_LIMIT: usize = 500;

/// How a side was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ReadMode {
    /// Every record.
    #[default]
    Full,
    /// Only records modified since the cursor, minus the overlap.
    Incremental,
    /// Only the records a webhook named, looked up by id; the cursor stays where it was.
    Targeted,
}

impl ReadMode {
    /// `full`, `incremental` or `targeted`.
    pub fn as_str(self) -> &'static str {
        match self {
            ReadMode::Full => "full",
            ReadMode::Incremental => "incremental",
            ReadMode::Targeted => "targeted",
        }
    }
}

/// Counts of one side.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SideStats {
    /// How the side was read.
    pub mode: ReadMode,
    /// Records read.
    pub read: u64,
    /// Records whose values differed from their baseline (or had none).
    pub changed: u64,
    /// Records whose raw values were the same as when last found equal to their baseline, so
    /// they were not normalised again (the scan's fast path).
    pub unchanged_raw: u64,
    /// Records found deleted.
    pub deleted: u64,
    /// Record updates planned on this side.
    pub updates_planned: u64,
    /// Creates planned on this side.
    pub creates_planned: u64,
    /// Deletes (and soft deletes) planned on this side.
    pub deletes_planned: u64,
    /// Field values planned to be written on this side.
    pub fields_planned: u64,
}

/// The statistics of a run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RunStats {
    /// Per side.
    pub left: SideStats,
    /// Per side.
    pub right: SideStats,
    /// Records compared field by field (the slow path).
    pub compared: u64,
    /// Conflicts settled by a strategy.
    pub conflicts_resolved: u64,
    /// Fields where both sides changed to the same value.
    pub false_conflicts: u64,
    /// Reviews opened or refreshed.
    pub reviews_open: u64,
    /// Reviews whose decision was applied or that settled by themselves.
    pub reviews_closed: u64,
    /// Values that could not be normalised.
    pub invalid_values: u64,
    /// Values no rule of their type reads, copied verbatim to the other side (`invalid =
    /// "copy"`).
    #[serde(default)]
    pub copied_values: u64,
    /// Outbox entries written and verified.
    pub writes_done: u64,
    /// Outbox entries that failed and will be retried.
    pub writes_retrying: u64,
    /// Outbox entries that failed for good.
    pub writes_dead: u64,
    /// Outbox entries dropped because the target changed since it was read (planned again
    /// by the next run).
    pub writes_moved: u64,
}

impl RunStats {
    /// The counts of one side.
    pub fn side(&self, side: Side) -> &SideStats {
        side.pick(&self.left, &self.right)
    }

    /// The counts of one side, mutably.
    pub fn side_mut(&mut self, side: Side) -> &mut SideStats {
        side.pick(&mut self.left, &mut self.right)
    }
}

/// What happened to one record or field, for people.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// A value is written to `target`.
    Update,
    /// A record is created on `target`.
    Create,
    /// A record is deleted (or soft-deleted) on `target`.
    Delete,
    /// A conflict was settled by a strategy (a write follows).
    Conflict,
    /// Held for a person.
    Review,
    /// Both sides agree without a write.
    Agreed,
    /// A value could not be normalised; the field was left alone.
    Invalid,
    /// A value could not be normalised and was copied verbatim (`invalid = "copy"`).
    Copied,
    /// The delete was remembered, nothing written.
    Tombstone,
    /// Nothing was done, for a reason worth telling.
    Skipped,
}

/// One line of a run's report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReportLine {
    /// The record's link key.
    pub key: RecordKey,
    /// The field, if the line is about one.
    pub field: Option<String>,
    /// What happened.
    pub action: Action,
    /// The side written, if any.
    pub target: Option<Side>,
    /// The left value, if known.
    pub left: Option<Value>,
    /// The right value, if known.
    pub right: Option<Value>,
    /// The value written or agreed, if any.
    pub value: Option<Value>,
    /// Why.
    pub reason: String,
}

impl ReportLine {
    /// A line about a record (`field` `None`) or one of its fields, with no target and no
    /// values; `to`, `with_values` and `with_value` add them.
    pub(crate) fn about(
        key: &RecordKey,
        field: Option<&str>,
        action: Action,
        reason: impl Into<String>,
    ) -> Self {
        ReportLine {
            key: key.clone(),
            field: field.map(str::to_string),
            action,
            target: None,
            left: None,
            right: None,
            value: None,
            reason: reason.into(),
        }
    }

    /// The line with the side written.
    pub(crate) fn to(mut self, target: Option<Side>) -> Self {
        self.target = target;
        self
    }

    /// The line with both sides' values.
    pub(crate) fn with_values(mut self, left: &Value, right: &Value) -> Self {
        self.left = Some(left.clone());
        self.right = Some(right.clone());
        self
    }

    /// The line with the value written or agreed.
    pub(crate) fn with_value(mut self, value: &Value) -> Self {
        self.value = Some(value.clone());
        self
    }
}

/// Writes `as_str` and serialises to the same text, so that the command line's output and the
/// JSON interface read as they did when these outcomes were strings; tests and older callers
/// may still compare them with that text.
macro_rules! text_outcome {
    ($(#[$doc:meta])* $name:ident { $($(#[$variant_doc:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
        pub enum $name {
            $($(#[$variant_doc])* #[serde(rename = $text)] $variant,)+
        }

        impl $name {
            /// The outcome's text, as it is rendered and serialised.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str(self.as_str())
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, text: &&str) -> bool {
                self.as_str() == *text
            }
        }
    };
}

text_outcome!(
    /// How a write that did not succeed in this run stands.
    FailureOutcome {
        /// It failed for now and will be tried again after its backoff.
        Retrying => "retrying",
        /// It failed for good: a person retries or drops it.
        Dead => "dead",
        /// Its target changed since it was read: the next run plans it again from fresh reads.
        Moved => "moved",
    }
);

text_outcome!(
    /// What the guard found too much of.
    GuardKind {
        /// Records a run would delete.
        Delete => "delete",
        /// Records a run would change.
        Change => "change",
    }
);

/// A write that did not succeed in this run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WriteFailure {
    /// The outbox entry.
    pub outbox_id: i64,
    /// The record's link key.
    pub key: RecordKey,
    /// The side written.
    pub side: Side,
    /// How it stands: retrying, dead or moved.
    pub outcome: FailureOutcome,
    /// The target's message.
    pub message: String,
}

/// Why the guard stopped a run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GuardStop {
    /// The side that would have lost or changed too much.
    pub side: Side,
    /// Whether it deletes or changes that would have been too many.
    pub kind: GuardKind,
    /// How many records.
    pub count: u64,
    /// Out of how many.
    pub total: u64,
    /// The limit, as configured.
    pub limit: String,
}

/// What a run did.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunReport {
    /// The link.
    pub link: LinkName,
    /// The run's number; `None` for a plan (nothing is recorded).
    pub run_id: Option<RunId>,
    /// Whether this was only a plan.
    pub dry_run: bool,
    /// How it ended.
    pub status: RunStatus,
    /// The connector names of the sides, for rendering.
    pub sides: SidePair<String>,
    /// The counts.
    pub stats: RunStats,
    /// What happened, record by record (at most `REPORT_LINE_LIMIT` lines).
    pub lines: Vec<ReportLine>,
    /// How many lines were left out.
    pub lines_omitted: u64,
    /// Writes that failed.
    pub failures: Vec<WriteFailure>,
    /// Problems that did not stop the run (a record without a link key, a duplicate key).
    pub problems: Vec<String>,
    /// Set when the guard stopped the run.
    pub guard: Option<GuardStop>,
    /// How long the run took, in milliseconds.
    pub elapsed_ms: u64,
}

impl RunReport {
    /// The report of a run of `link` between the connectors `sides` as it starts: nothing
    /// counted, nothing happened yet.
    pub fn new(link: LinkName, sides: SidePair<String>, dry_run: bool) -> Self {
        RunReport {
            link,
            run_id: None,
            dry_run,
            status: RunStatus::Running,
            sides,
            stats: RunStats::default(),
            lines: Vec::new(),
            lines_omitted: 0,
            failures: Vec::new(),
            problems: Vec::new(),
            guard: None,
            elapsed_ms: 0,
        }
    }

    /// Keeps a line, made only while there is room for it (a run of a million creates would
    /// otherwise build a million lines to count them).
    pub(crate) fn push_line(&mut self, line: impl FnOnce() -> ReportLine) {
        if self.lines.len() < REPORT_LINE_LIMIT {
            self.lines.push(line());
        } else {
            self.lines_omitted += 1;
        }
    }
}

impl<T: Serialize> Serialize for SidePair<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut pair = serializer.serialize_struct("SidePair", 2)?;
        pair.serialize_field("left", &self.left)?;
        pair.serialize_field("right", &self.right)?;
        pair.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The outcomes read, render and serialise as the strings they replaced: the command
    /// line's text and the JSON interface are unchanged.
    #[test]
    fn outcomes_render_and_serialise_as_their_text() {
        let outcomes = [
            (FailureOutcome::Retrying.as_str(), FailureOutcome::Retrying.to_string(), "retrying"),
            (FailureOutcome::Dead.as_str(), FailureOutcome::Dead.to_string(), "dead"),
            (FailureOutcome::Moved.as_str(), FailureOutcome::Moved.to_string(), "moved"),
            (GuardKind::Delete.as_str(), GuardKind::Delete.to_string(), "delete"),
            (GuardKind::Change.as_str(), GuardKind::Change.to_string(), "change"),
        ];
        for (text, rendered, expected) in outcomes {
            assert_eq!((text, rendered.as_str()), (expected, expected));
        }
        let failure = WriteFailure {
            outbox_id: 7,
            key: RecordKey::new("M1"),
            side: Side::Right,
            outcome: FailureOutcome::Moved,
            message: "target moved".into(),
        };
        assert_eq!(
            serde_json::to_value(&failure).unwrap(),
            serde_json::json!({"outbox_id": 7, "key": "M1", "side": "right", "outcome": "moved", "message": "target moved"})
        );
        assert!(failure.outcome == "moved" && failure.outcome != "dead");
        let stop =
            GuardStop { side: Side::Left, kind: GuardKind::Change, count: 6, total: 10, limit: "50%".into() };
        assert_eq!(
            serde_json::to_value(&stop).unwrap(),
            serde_json::json!({"side": "left", "kind": "change", "count": 6, "total": 10, "limit": "50%"})
        );
    }
}
