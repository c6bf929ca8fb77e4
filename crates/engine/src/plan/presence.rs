//! Planning a record one side lacks: `merge_presence` decides (create, delete, soft delete,
//! tombstone, review or nothing) and each decision becomes its write, baseline change, review,
//! audit entry and report line.

use fieldsync_model::{RecordKey, Side, Value};
use fieldsync_store::{AuditEvent, Baseline, NewReview, Operation, Origin, Review, ReviewKind};

use super::{
    BaselineChange, PAYLOAD_VERSION, Payload, PayloadField, PlannedWrite, Planner, RecordPlan, ReviewChange,
};
use crate::detect::{Presence, SideRecord};
use crate::merge::{PresenceInput, PresenceOutcome, merge_presence};
use crate::report::{Action, ReportLine, RunReport};
use crate::spec::{DeletePolicy, SidePair};

/// A record-level report line: no field, no values.
fn line(key: &RecordKey, action: Action, target: Option<Side>, reason: &str) -> ReportLine {
    ReportLine::about(key, None, action, reason).to(target)
}

impl Planner<'_> {
    /// Plans a record absent (or not known) on at least one side, from its baseline and its
    /// live record-level review.
    pub(super) fn plan_presence(
        &self,
        plan: &mut RecordPlan,
        presence: &SidePair<Presence>,
        baseline: Option<&Baseline>,
        reviews: &[Review],
        report: &mut RunReport,
    ) {
        let key = plan.key.clone();
        let present = Side::BOTH.into_iter().find(|side| matches!(presence.get(*side), Presence::Present(_)));
        let record_review = reviews.iter().find(|review| review.review.field.is_none());
        let outcome = merge_presence(PresenceInput {
            baseline: baseline.map(|baseline| baseline.tombstone),
            present,
            present_changed: self.changed_since(presence, present, baseline),
            review: record_review.map(|review| review.decision.as_ref()),
            creates: self.spec.creates,
            deletes: &self.spec.deletes,
            conflicts: self.spec.conflicts,
        });
        if let Some(review) = record_review
            && !matches!(outcome, PresenceOutcome::Hold { .. })
        {
            plan.reviews.push(ReviewChange::Close(review.id));
            report.stats.reviews_closed += 1;
        }
        let source = present.map(|side| presence.get(side));
        match outcome {
            PresenceOutcome::Nothing { reason } => {
                // A record left alone on its side says why (only on a run that found it changed).
                if present.is_some() {
                    report.push_line(|| line(&key, Action::Skipped, None, &reason));
                }
            }
            PresenceOutcome::Forget => plan.baseline = BaselineChange::Delete,
            PresenceOutcome::Create { target, reason } => {
                if let Some(Presence::Present(source)) = source {
                    self.plan_create(plan, source, target, reason, report);
                }
            }
            PresenceOutcome::Delete { target, reason } => {
                if let Presence::Present(record) = presence.get(target) {
                    self.plan_delete(plan, record, target, reason, report);
                }
            }
            PresenceOutcome::SoftDelete { target, reason } => {
                self.plan_soft_delete(plan, baseline, target, reason, report);
            }
            PresenceOutcome::Tombstone { deleted_on, reason } => {
                self.plan_tombstone(plan, baseline, deleted_on, reason, report);
            }
            PresenceOutcome::Hold { reason } => {
                self.hold_record(plan, presence, record_review, reason, report)
            }
        }
    }

    /// Whether the record on the `present` side holds another value than its baseline in any
    /// field.
    fn changed_since(
        &self,
        presence: &SidePair<Presence>,
        present: Option<Side>,
        baseline: Option<&Baseline>,
    ) -> bool {
        let (Some(baseline), Some(Presence::Present(record))) =
            (baseline, present.map(|side| presence.get(side)))
        else {
            return false;
        };
        (0..self.spec.fields.len())
            .any(|index| record.values[index].as_ref().ok() != baseline.fields[index].value.as_ref())
    }

    /// The record is created on `target` from `source`, with its link key; not when some of
    /// its values cannot be normalised.
    fn plan_create(
        &self,
        plan: &mut RecordPlan,
        source: &SideRecord,
        target: Side,
        reason: String,
        report: &mut RunReport,
    ) {
        let key = plan.key.clone();
        let Some(values) = source.valid_values() else {
            report.stats.invalid_values += 1;
            let reason = "not created: some of its values cannot be normalised";
            report.push_line(|| line(&key, Action::Invalid, Some(target), reason));
            return;
        };
        let origin = Origin::from(target.other());
        let mut fields = vec![PayloadField {
            name: None,
            path: self.spec.key.get(target).clone(),
            value: None,
            raw: serde_json::Value::String(key.as_str().to_string()),
            expected: None,
            origin: None,
            changed_at: None,
        }];
        for (index, (field, value)) in self.spec.fields.iter().zip(values).enumerate() {
            self.warn_if_copied(source, index, &key, field, target, plan, report);
            fields.push(PayloadField {
                name: Some(field.name.clone()),
                path: field.paths.get(target).clone(),
                value: Some(value.clone()),
                raw: field.normalisers.get(target).to_raw(value),
                expected: None,
                origin: Some(origin),
                changed_at: source.modified,
            });
        }
        let stats = report.stats.side_mut(target);
        stats.creates_planned += 1;
        stats.fields_planned += fields.len() as u64;
        report.push_line(|| line(&key, Action::Create, Some(target), &reason));
        plan.audit.push(self.audit(&key, None, AuditEvent::Detected, reason));
        let payload = Payload {
            version: PAYLOAD_VERSION,
            fields,
            source_id: Some(source.id.clone()),
            soft_delete_of: None,
        };
        plan.writes.push(PlannedWrite {
            side: target,
            operation: Operation::Create,
            record_id: None,
            payload,
        });
    }

    /// `record` is deleted on `target`, its payload holding what it held when read: a delete
    /// cannot carry a condition, so delivery reads the record again and refuses to delete one
    /// that changed.
    fn plan_delete(
        &self,
        plan: &mut RecordPlan,
        record: &SideRecord,
        target: Side,
        reason: String,
        report: &mut RunReport,
    ) {
        let key = plan.key.clone();
        report.stats.side_mut(target).deletes_planned += 1;
        report.push_line(|| line(&key, Action::Delete, Some(target), &reason));
        plan.audit.push(self.audit(&key, None, AuditEvent::Deleted, reason));
        let fields = self
            .spec
            .fields
            .iter()
            .zip(&record.raw)
            .map(|(field, raw)| PayloadField {
                name: Some(field.name.clone()),
                path: field.paths.get(target).clone(),
                value: None,
                raw: raw.clone(),
                expected: Some(raw.clone()),
                origin: None,
                changed_at: None,
            })
            .collect();
        let payload = Payload { version: PAYLOAD_VERSION, fields, source_id: None, soft_delete_of: None };
        plan.writes.push(PlannedWrite {
            side: target,
            operation: Operation::Delete,
            record_id: Some(record.id.clone()),
            payload,
        });
    }

    /// The record is marked deleted on `target` by the soft-delete field's value, under the id
    /// its baseline knows there.
    fn plan_soft_delete(
        &self,
        plan: &mut RecordPlan,
        baseline: Option<&Baseline>,
        target: Side,
        reason: String,
        report: &mut RunReport,
    ) {
        let (Some(id), DeletePolicy::Soft { paths, value }) =
            (baseline.and_then(|baseline| baseline.id(target)).cloned(), &self.spec.deletes)
        else {
            return;
        };
        let key = plan.key.clone();
        report.stats.side_mut(target).deletes_planned += 1;
        report.push_line(|| line(&key, Action::Delete, Some(target), &reason));
        plan.audit.push(self.audit(&key, None, AuditEvent::Deleted, reason));
        let field = PayloadField {
            name: None,
            path: paths.get(target).clone(),
            value: None,
            raw: value.clone(),
            expected: None,
            origin: None,
            changed_at: None,
        };
        let payload = Payload {
            version: PAYLOAD_VERSION,
            fields: vec![field],
            source_id: None,
            soft_delete_of: Some(target.other()),
        };
        plan.writes.push(PlannedWrite {
            side: target,
            operation: Operation::Update,
            record_id: Some(id),
            payload,
        });
    }

    /// The delete on `deleted_on` is remembered in the baseline, and nothing written: the
    /// record must not be created there again.
    fn plan_tombstone(
        &self,
        plan: &mut RecordPlan,
        baseline: Option<&Baseline>,
        deleted_on: Side,
        reason: String,
        report: &mut RunReport,
    ) {
        if let Some(baseline) = baseline {
            let mut next = baseline.clone();
            next.tombstone = Some(deleted_on);
            plan.baseline = BaselineChange::Put(next);
        }
        report.push_line(|| line(&plan.key, Action::Tombstone, None, &reason));
        plan.audit.push(self.audit(&plan.key, None, AuditEvent::Deleted, reason));
    }

    /// The record is held for a person (a delete against an edit): a delete review opened, or
    /// refreshed when the present record changed since it was; an undecided one showing the same
    /// record stands as it is.
    fn hold_record(
        &self,
        plan: &mut RecordPlan,
        presence: &SidePair<Presence>,
        record_review: Option<&Review>,
        reason: String,
        report: &mut RunReport,
    ) {
        let key = plan.key.clone();
        report.stats.reviews_open += 1;
        let record = |side: Side| match presence.get(side) {
            Presence::Present(record) => Some(record),
            Presence::Absent | Presence::Unknown => None,
        };
        let [left, right] = Side::BOTH.map(|side| record(side).map(|record| self.record_text(record)));
        // Unchanged while undecided and the present record still holds what it showed.
        let unchanged_review = record_review.is_some_and(|review| {
            review.decision.is_none() && review.review.left == left && review.review.right == right
        });
        if !unchanged_review {
            plan.reviews.push(ReviewChange::Put(NewReview {
                key: key.clone(),
                field: None,
                kind: ReviewKind::Delete,
                base: None,
                left,
                right,
                left_changed: record(Side::Left).and_then(|record| record.modified),
                right_changed: record(Side::Right).and_then(|record| record.modified),
                reason: reason.clone(),
            }));
            plan.audit.push(self.audit(&key, None, AuditEvent::Review, reason.clone()));
        }
        report.push_line(|| line(&key, Action::Review, None, &reason));
    }

    /// A present record as one text for a delete review: each tracked field's normalised value
    /// as `name: value`, in field order, joined by ` · `; empty values left out, a value that
    /// cannot be normalised shown as read.
    fn record_text(&self, record: &SideRecord) -> Value {
        let parts: Vec<String> = self
            .spec
            .fields
            .iter()
            .zip(record.values.iter().zip(&record.raw))
            .filter_map(|(field, (value, raw))| {
                let shown = match value {
                    Ok(Value::Null) => return None,
                    Ok(Value::Text(text)) => text.to_string(),
                    Ok(value) => value.to_string(),
                    Err(_) => raw.to_string(),
                };
                Some(format!("{}: {shown}", field.name))
            })
            .collect();
        if parts.is_empty() {
            Value::from("(every field empty)")
        } else {
            Value::from(parts.join(" · ").as_str())
        }
    }
}
