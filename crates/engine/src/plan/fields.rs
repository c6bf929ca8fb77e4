//! Planning a record both sides hold: its fields merged one by one against the baseline
//! (`merge_field`), each outcome turned into writes, a baseline change, reviews, audit
//! entries and report lines. Key type: `Fields`, one record's merge as it goes.

use fieldsync_model::{RecordKey, Side, Value};
use fieldsync_store::{AuditEntry, AuditEvent, Baseline, NewReview, Origin, Review, ReviewKind};
use jiff::Timestamp;

use super::{BaselineChange, Operation};
use super::{PAYLOAD_VERSION, Payload, PayloadField, PlannedWrite, Planner, RecordPlan, ReviewChange};
use crate::detect::SideRecord;
use crate::merge::{FieldInput, FieldOutcome, FieldRules, Reason, ReviewView, merge_field};
use crate::report::{Action, ReportLine, RunReport};
use crate::spec::{FieldSpec, FirstSyncStrategy, SidePair};

/// One record's field-by-field merge as it goes: the writes it collects per side, and whether
/// the baseline it builds (kept beside it, since each field's merge reads it) changed.
struct Fields<'r> {
    key: RecordKey,
    records: SidePair<&'r SideRecord>,
    /// Each side's edit time: the record's modification time, or now when it has none.
    times: SidePair<Timestamp>,
    first_sync: FirstSyncStrategy,
    baseline_changed: bool,
    writes: SidePair<Vec<PayloadField>>,
    /// Fields a first sync found equal, audited once for the record.
    first_sync_equal: usize,
}

/// One field's merge: its index, its spec, its live review and what the merge was given.
struct FieldMerge<'f> {
    index: usize,
    field: &'f FieldSpec,
    review: Option<&'f Review>,
    input: FieldInput<'f>,
}

impl Planner<'_> {
    /// Plans a record both sides hold, field by field. `created_from` names the side an
    /// unfinished create of ours copied the record from (see `plan_record`).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn plan_fields(
        &self,
        plan: &mut RecordPlan,
        left: &SideRecord,
        right: &SideRecord,
        baseline: Option<&Baseline>,
        reviews: &[Review],
        created_from: Option<Side>,
        report: &mut RunReport,
    ) {
        let (mut fields, mut next) =
            self.start_fields(plan.key.clone(), SidePair::new(left, right), baseline, created_from);
        report.stats.compared += 1;
        for (index, field) in self.spec.fields.iter().enumerate() {
            let review =
                reviews.iter().find(|review| review.review.field.as_deref() == Some(field.name.as_str()));
            let (Ok(left_value), Ok(right_value)) = (&left.values[index], &right.values[index]) else {
                self.report_invalid(&fields.key, field, SidePair::new(left, right), index, plan, report);
                continue;
            };
            let input = FieldInput {
                base: next.fields[index].value.as_ref(),
                left: left_value,
                right: right_value,
                left_time: fields.times.left,
                right_time: fields.times.right,
            };
            let merge = FieldMerge { index, field, review, input };
            if let Some((value, origin)) = self.plan_field(&mut fields, &merge, plan, report) {
                let base_field = &mut next.fields[index];
                base_field.value = Some(value);
                base_field.origin = Some(origin);
                fields.baseline_changed = true;
            }
        }
        self.finish_fields(fields, next, plan, report);
    }

    /// The merge of a record's fields before the first: the baseline it starts from (a new
    /// one without), with both records' ids and without a tombstone.
    fn start_fields<'r>(
        &self,
        key: RecordKey,
        records: SidePair<&'r SideRecord>,
        baseline: Option<&Baseline>,
        created_from: Option<Side>,
    ) -> (Fields<'r>, Baseline) {
        let first_sync = match (baseline, created_from) {
            (None, Some(source)) => FirstSyncStrategy::Prefer(source),
            _ => self.spec.first_sync,
        };
        let mut next =
            baseline.cloned().unwrap_or_else(|| Baseline::empty(key.clone(), self.spec.fields.len()));
        let mut baseline_changed = baseline.is_none();
        for side in Side::BOTH {
            if next.id(side) != Some(&records.get(side).id) {
                next.set_id(side, records.get(side).id.clone());
                baseline_changed = true;
            }
        }
        if next.tombstone.is_some() {
            next.tombstone = None;
            baseline_changed = true;
        }
        let time = |side: Side| records.get(side).modified.unwrap_or(self.now);
        let fields = Fields {
            key,
            records,
            times: SidePair::new(time(Side::Left), time(Side::Right)),
            first_sync,
            baseline_changed,
            writes: SidePair::default(),
            first_sync_equal: 0,
        };
        (fields, next)
    }

    /// Reports and audits each side's value of a field that cannot be normalised; the field is
    /// left as it is.
    fn report_invalid(
        &self,
        key: &RecordKey,
        field: &FieldSpec,
        records: SidePair<&SideRecord>,
        index: usize,
        plan: &mut RecordPlan,
        report: &mut RunReport,
    ) {
        for side in Side::BOTH {
            if let Err(error) = &records.get(side).values[index] {
                report.stats.invalid_values += 1;
                let reason = format!("{side} value {error}; the field is left as it is");
                plan.audit.push(self.audit(key, Some(&field.name), AuditEvent::Invalid, reason.clone()));
                report.push_line(|| ReportLine::about(key, Some(&field.name), Action::Invalid, reason));
            }
        }
    }

    /// Merges one field and plans what its outcome asks for; returns the value and origin the
    /// baseline's field takes, when both sides now agree on another value than it holds.
    fn plan_field(
        &self,
        fields: &mut Fields<'_>,
        merge: &FieldMerge<'_>,
        plan: &mut RecordPlan,
        report: &mut RunReport,
    ) -> Option<(Value, Origin)> {
        let rules = FieldRules {
            conflicts: self.spec.conflicts,
            first_sync: fields.first_sync,
            direction: merge.field.direction,
        };
        let view = merge.review.map(|review| ReviewView {
            left: review.review.left.as_ref(),
            right: review.review.right.as_ref(),
            decision: review.decision.as_ref(),
        });
        match merge_field(merge.input, rules, view) {
            FieldOutcome::Unchanged => close_review(merge.review, plan, report),
            FieldOutcome::Settle { value, reason } => {
                return self.settle_field(fields, merge, value, reason, plan, report);
            }
            FieldOutcome::Hold { kind, reason } => self.hold_field(fields, merge, kind, reason, plan, report),
        }
        None
    }

    /// A field the merge settled on `value`: agreed (the baseline takes it: returned) when both
    /// sides hold it, else written to the sides that do not; audited, and counted as a
    /// conflict when it was one.
    fn settle_field(
        &self,
        fields: &mut Fields<'_>,
        merge: &FieldMerge<'_>,
        value: Value,
        reason: Reason,
        plan: &mut RecordPlan,
        report: &mut RunReport,
    ) -> Option<(Value, Origin)> {
        let input = merge.input;
        let values = SidePair::new(input.left, input.right);
        let targets: Vec<Side> = Side::BOTH.into_iter().filter(|side| *values.get(*side) != &value).collect();
        let mut entry = self.field_audit(&fields.key, merge, AuditEvent::Resolved, reason.to_string());
        entry.value = Some(value.clone());
        if reason.is_conflict() {
            report.stats.conflicts_resolved += 1;
            report.push_line(|| {
                ReportLine::about(&fields.key, Some(&merge.field.name), Action::Conflict, reason.to_string())
                    .to(targets.first().copied())
                    .with_values(input.left, input.right)
                    .with_value(&value)
            });
        }
        if matches!(reason, Reason::SameValue) {
            report.stats.false_conflicts += 1;
        }
        let origin = match (&reason, reason.winner()) {
            (Reason::Decided { .. }, _) => Origin::Person,
            (_, Some(side)) => Origin::from(side),
            (_, None) => Origin::Both,
        };
        let mut agreed = None;
        if targets.is_empty() {
            entry.event = AuditEvent::Agreed;
            agreed = self.agree_field(fields, merge, &value, &reason, origin, plan, report);
        } else if merge.review.is_some_and(|review| review.decision.is_none()) {
            // A rule settled what a person was asked about: the values moved on.
            close_review(merge.review, plan, report);
        }
        // A first sync of equal values is the common case: one entry per record says so (in
        // `finish_fields`), rather than one per field.
        if reason == Reason::FirstSyncEqual {
            fields.first_sync_equal += 1;
        } else {
            plan.audit.push(entry);
        }
        for target in targets {
            self.write_field(fields, merge, target, &value, &reason, origin, plan, report);
        }
        agreed
    }

    /// Both sides hold the settled value: a review of the field is closed, and the value is
    /// returned with its origin when the baseline does not hold it yet.
    #[allow(clippy::too_many_arguments)]
    fn agree_field(
        &self,
        fields: &mut Fields<'_>,
        merge: &FieldMerge<'_>,
        value: &Value,
        reason: &Reason,
        origin: Origin,
        plan: &mut RecordPlan,
        report: &mut RunReport,
    ) -> Option<(Value, Origin)> {
        let already_agreed = merge.input.base == Some(value);
        // A first sync of equal values is the common case: counted, not listed.
        if !already_agreed && *reason != Reason::FirstSyncEqual {
            report.push_line(|| {
                ReportLine::about(&fields.key, Some(&merge.field.name), Action::Agreed, reason.to_string())
                    .with_values(merge.input.left, merge.input.right)
                    .with_value(value)
            });
        }
        close_review(merge.review, plan, report);
        (!already_agreed).then(|| (value.clone(), origin))
    }

    /// The settled value is written to `target`, with the raw value it holds as the
    /// expectation; warned about when its source copies it verbatim.
    #[allow(clippy::too_many_arguments)]
    fn write_field(
        &self,
        fields: &mut Fields<'_>,
        merge: &FieldMerge<'_>,
        target: Side,
        value: &Value,
        reason: &Reason,
        origin: Origin,
        plan: &mut RecordPlan,
        report: &mut RunReport,
    ) {
        let (index, field) = (merge.index, merge.field);
        self.warn_if_copied(
            fields.records.get(target.other()),
            index,
            &fields.key,
            field,
            target,
            plan,
            report,
        );
        fields.writes.get_mut(target).push(PayloadField {
            name: Some(field.name.clone()),
            path: field.paths.get(target).clone(),
            value: Some(value.clone()),
            raw: field.normalisers.get(target).to_raw(value),
            expected: Some(fields.records.get(target).raw[index].clone()),
            origin: Some(origin),
            changed_at: reason.winner().map(|winner| *fields.times.get(winner)),
        });
        if !reason.is_conflict() {
            report.push_line(|| {
                ReportLine::about(&fields.key, Some(&field.name), Action::Update, reason.to_string())
                    .to(Some(target))
                    .with_values(merge.input.left, merge.input.right)
                    .with_value(value)
            });
        }
    }

    /// A field held for a person: its review opened (or renewed when the values moved) and
    /// audited; nobody writes it.
    fn hold_field(
        &self,
        fields: &Fields<'_>,
        merge: &FieldMerge<'_>,
        kind: ReviewKind,
        reason: String,
        plan: &mut RecordPlan,
        report: &mut RunReport,
    ) {
        let (key, input) = (&fields.key, merge.input);
        report.stats.reviews_open += 1;
        let unchanged_review = merge.review.is_some_and(|review| {
            review.decision.is_none()
                && review.review.left.as_ref() == Some(input.left)
                && review.review.right.as_ref() == Some(input.right)
        });
        if !unchanged_review {
            plan.audit.push(self.field_audit(key, merge, AuditEvent::Review, reason.clone()));
            plan.reviews.push(ReviewChange::Put(NewReview {
                key: key.clone(),
                field: Some(merge.field.name.clone()),
                kind: merge.review.map_or(kind, |review| review.review.kind),
                base: input.base.cloned(),
                left: Some(input.left.clone()),
                right: Some(input.right.clone()),
                left_changed: fields.records.left.modified,
                right_changed: fields.records.right.modified,
                reason: reason.clone(),
            }));
        }
        report.push_line(|| {
            ReportLine::about(key, Some(&merge.field.name), Action::Review, reason)
                .with_values(input.left, input.right)
        });
    }

    /// After the last field: the first sync's one audit entry, an update per side that has
    /// values to write, and the baseline when it changed.
    fn finish_fields(
        &self,
        fields: Fields<'_>,
        next: Baseline,
        plan: &mut RecordPlan,
        report: &mut RunReport,
    ) {
        let Fields { key, records, first_sync_equal, mut writes, baseline_changed, .. } = fields;
        if first_sync_equal > 0 {
            let noun = if first_sync_equal == 1 { "field" } else { "fields" };
            let reason = format!("first sync: both sides already agree on {first_sync_equal} {noun}");
            plan.audit.push(self.audit(&key, None, AuditEvent::Agreed, reason));
        }
        for side in Side::BOTH {
            let fields = std::mem::take(writes.get_mut(side));
            if fields.is_empty() {
                continue;
            }
            let stats = report.stats.side_mut(side);
            stats.updates_planned += 1;
            stats.fields_planned += fields.len() as u64;
            plan.writes.push(PlannedWrite {
                side,
                operation: Operation::Update,
                record_id: Some(records.get(side).id.clone()),
                payload: Payload { version: PAYLOAD_VERSION, fields, source_id: None, soft_delete_of: None },
            });
        }
        if baseline_changed {
            plan.baseline = BaselineChange::Put(next);
        }
    }

    /// An audit entry about one field, with the base and both sides' values.
    fn field_audit(
        &self,
        key: &RecordKey,
        merge: &FieldMerge<'_>,
        event: AuditEvent,
        reason: String,
    ) -> AuditEntry {
        let mut entry = self.audit(key, Some(&merge.field.name), event, reason);
        entry.base = merge.input.base.cloned();
        entry.left = Some(merge.input.left.clone());
        entry.right = Some(merge.input.right.clone());
        entry
    }
}

/// Closes a field's review, when it has one: the values settled it.
fn close_review(review: Option<&Review>, plan: &mut RecordPlan, report: &mut RunReport) {
    if let Some(review) = review {
        plan.reviews.push(ReviewChange::Close(review.id));
        report.stats.reviews_closed += 1;
    }
}
