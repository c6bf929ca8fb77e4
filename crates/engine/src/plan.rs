//! Planning: turn each candidate record's merge into outbox writes, baseline changes,
//! reviews and audit entries — the whole of what a run will do, before it does any of it.

use fieldsync_model::{RecordDigest, RecordId, RecordKey, RunId, Side, Value, digest_raw, digest_values};
use fieldsync_store::{
    AuditEntry, AuditEvent, Baseline, NewReview, Operation, Origin, Review, ReviewId, ReviewKind,
};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::detect::{Presence, SideRecord};
use crate::merge::{FieldInput, FieldOutcome, FieldRules, PresenceInput, PresenceOutcome, ReviewView};
use crate::merge::{merge_field, merge_presence};
use crate::report::{Action, ReportLine, RunReport};
use crate::spec::{DeletePolicy, LinkSpec, SidePair};

/// The version of `Payload` written into outbox entries.
pub(crate) const PAYLOAD_VERSION: u32 = 1;

/// One value an outbox entry writes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct PayloadField {
    /// The tracked field, or `None` for the link key and the soft-delete value.
    pub name: Option<String>,
    pub path: String,
    /// The normalised value, which becomes the baseline once verified.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    pub value: Option<Value>,
    pub raw: serde_json::Value,
    /// The raw value the target held when it was read.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    pub expected: Option<serde_json::Value>,
    pub origin: Option<Origin>,
    /// When the winning side made the edit, if known; becomes that side's change time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed_at: Option<Timestamp>,
}

/// Reads a value that is present as `Some`, even when it is `null`: an empty value to write
/// (`Some(Value::Null)`) or an empty target (`Some(Json::Null)`) must not come back as `None`
/// (no baseline move, no condition). An absent one is `None`.
fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// What an outbox entry does, as stored in its payload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Payload {
    pub version: u32,
    pub fields: Vec<PayloadField>,
    /// For a create, the record's id on the side it came from.
    pub source_id: Option<RecordId>,
    /// For a soft delete, the side the record was deleted on.
    pub soft_delete_of: Option<Side>,
}

impl Payload {
    /// Whether two payloads write the same values to the same places (expectations aside).
    pub fn same_write(&self, other: &Payload) -> bool {
        self.fields.len() == other.fields.len()
            && self.soft_delete_of == other.soft_delete_of
            && self.fields.iter().zip(&other.fields).all(|(a, b)| a.path == b.path && a.raw == b.raw)
    }
}

/// A write planned for one side of one record.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct PlannedWrite {
    pub side: Side,
    pub operation: Operation,
    pub record_id: Option<RecordId>,
    pub payload: Payload,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum BaselineChange {
    Keep,
    Put(Baseline),
    Delete,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum ReviewChange {
    Put(NewReview),
    Close(ReviewId),
}

/// Everything a run will do to one record.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct RecordPlan {
    pub key: RecordKey,
    pub writes: Vec<PlannedWrite>,
    pub baseline: BaselineChange,
    pub reviews: Vec<ReviewChange>,
    pub audit: Vec<AuditEntry>,
    /// Raw digests of the sides that already hold the new baseline (the next scan's fast path).
    pub seen: Vec<(Side, RecordDigest)>,
}

/// The context every record's plan shares.
pub(crate) struct Planner<'a> {
    pub spec: &'a LinkSpec,
    pub run_id: Option<RunId>,
    pub now: Timestamp,
    /// `LinkSpec::fingerprint` of each side.
    pub fingerprints: SidePair<u64>,
}

fn value_at(presence: &SidePair<Presence>, side: Side, index: usize) -> Option<&Value> {
    match presence.get(side) {
        Presence::Present(record) => record.values[index].as_ref().ok(),
        _ => None,
    }
}

impl Planner<'_> {
    fn audit(&self, key: &RecordKey, field: Option<&str>, event: AuditEvent, reason: String) -> AuditEntry {
        AuditEntry {
            run_id: self.run_id,
            key: key.clone(),
            field: field.map(str::to_string),
            event,
            side: None,
            base: None,
            left: None,
            right: None,
            value: None,
            reason,
            at: self.now,
        }
    }

    /// Plans one record from its baseline, both sides' state and its live reviews.
    pub fn plan_record(
        &self,
        key: RecordKey,
        presence: SidePair<Presence>,
        baseline: Option<&Baseline>,
        reviews: &[Review],
        report: &mut RunReport,
    ) -> RecordPlan {
        let mut plan = RecordPlan {
            key,
            writes: Vec::new(),
            baseline: BaselineChange::Keep,
            reviews: Vec::new(),
            audit: Vec::new(),
            seen: Vec::new(),
        };
        match (&presence.left, &presence.right) {
            (Presence::Present(left), Presence::Present(right)) => {
                self.plan_fields(&mut plan, left, right, baseline, reviews, report);
            }
            (Presence::Unknown, _) | (_, Presence::Unknown) => {
                report.push_line(ReportLine {
                    key: plan.key.clone(),
                    field: None,
                    action: Action::Skipped,
                    target: None,
                    left: None,
                    right: None,
                    value: None,
                    reason: "waiting for a full scan: the other side cannot look the record up by key".into(),
                });
            }
            _ => self.plan_presence(&mut plan, &presence, baseline, reviews, report),
        }
        if let BaselineChange::Put(next) = &plan.baseline {
            let basis = next.digest();
            for side in Side::BOTH {
                if let Presence::Present(record) = presence.get(side)
                    && record
                        .valid_values()
                        .is_some_and(|values| digest_values(values.into_iter().map(Some)) == basis)
                {
                    let digest = digest_raw(basis, *self.fingerprints.get(side), &record.raw);
                    plan.seen.push((side, digest));
                }
            }
        }
        plan
    }

    fn plan_fields(
        &self,
        plan: &mut RecordPlan,
        left: &SideRecord,
        right: &SideRecord,
        baseline: Option<&Baseline>,
        reviews: &[Review],
        report: &mut RunReport,
    ) {
        let spec = self.spec;
        let key = plan.key.clone();
        let records = SidePair::new(left, right);
        let mut next = baseline.cloned().unwrap_or_else(|| Baseline::empty(key.clone(), spec.fields.len()));
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
        let times = SidePair::new(left.modified.unwrap_or(self.now), right.modified.unwrap_or(self.now));
        let mut field_writes: SidePair<Vec<PayloadField>> = SidePair::default();
        report.stats.compared += 1;
        for (index, field) in spec.fields.iter().enumerate() {
            let review =
                reviews.iter().find(|review| review.review.field.as_deref() == Some(field.name.as_str()));
            let (left_value, right_value) = match (&left.values[index], &right.values[index]) {
                (Ok(left_value), Ok(right_value)) => (left_value, right_value),
                (left_result, right_result) => {
                    for (side, result) in [(Side::Left, left_result), (Side::Right, right_result)] {
                        if let Err(error) = result {
                            report.stats.invalid_values += 1;
                            let reason = format!("{side} value {error}; the field is left as it is");
                            plan.audit.push(self.audit(
                                &key,
                                Some(&field.name),
                                AuditEvent::Invalid,
                                reason.clone(),
                            ));
                            report.push_line(ReportLine {
                                key: key.clone(),
                                field: Some(field.name.clone()),
                                action: Action::Invalid,
                                target: None,
                                left: None,
                                right: None,
                                value: None,
                                reason,
                            });
                        }
                    }
                    continue;
                }
            };
            let base_field = &next.fields[index];
            let input = FieldInput {
                base: base_field.value.as_ref(),
                left: left_value,
                right: right_value,
                left_time: times.left,
                right_time: times.right,
            };
            let rules = FieldRules {
                conflicts: spec.conflicts,
                first_sync: spec.first_sync,
                direction: field.direction,
            };
            let view = review.map(|review| ReviewView {
                left: review.review.left.as_ref(),
                right: review.review.right.as_ref(),
                decision: review.decision.as_ref(),
            });
            let outcome = merge_field(input, rules, view);
            let values = SidePair::new(left_value, right_value);
            match outcome {
                FieldOutcome::Unchanged => {
                    if let Some(review) = review {
                        plan.reviews.push(ReviewChange::Close(review.id));
                        report.stats.reviews_closed += 1;
                    }
                }
                FieldOutcome::Settle { value, reason } => {
                    let targets: Vec<Side> =
                        Side::BOTH.into_iter().filter(|side| *values.get(*side) != &value).collect();
                    let mut entry =
                        self.audit(&key, Some(&field.name), AuditEvent::Resolved, reason.to_string());
                    entry.base = input.base.cloned();
                    entry.left = Some(left_value.clone());
                    entry.right = Some(right_value.clone());
                    entry.value = Some(value.clone());
                    if reason.is_conflict() {
                        report.stats.conflicts_resolved += 1;
                        report.push_line(ReportLine {
                            key: key.clone(),
                            field: Some(field.name.clone()),
                            action: Action::Conflict,
                            target: targets.first().copied(),
                            left: Some(left_value.clone()),
                            right: Some(right_value.clone()),
                            value: Some(value.clone()),
                            reason: reason.to_string(),
                        });
                    }
                    if matches!(reason, crate::merge::Reason::SameValue) {
                        report.stats.false_conflicts += 1;
                    }
                    let origin = match (&reason, reason.winner()) {
                        (crate::merge::Reason::Decided { .. }, _) => Origin::Person,
                        (_, Some(side)) => Origin::from(side),
                        (_, None) => Origin::Both,
                    };
                    if targets.is_empty() {
                        entry.event = AuditEvent::Agreed;
                        let already_agreed = input.base == Some(&value);
                        let base_field = &mut next.fields[index];
                        if base_field.value.as_ref() != Some(&value) {
                            base_field.value = Some(value.clone());
                            base_field.origin = Some(origin);
                            baseline_changed = true;
                        }
                        // A first sync of equal values is the common case: counted, not listed.
                        if !already_agreed && reason != crate::merge::Reason::FirstSyncEqual {
                            report.push_line(ReportLine {
                                key: key.clone(),
                                field: Some(field.name.clone()),
                                action: Action::Agreed,
                                target: None,
                                left: Some(left_value.clone()),
                                right: Some(right_value.clone()),
                                value: Some(value.clone()),
                                reason: reason.to_string(),
                            });
                        }
                        if let Some(review) = review {
                            plan.reviews.push(ReviewChange::Close(review.id));
                            report.stats.reviews_closed += 1;
                        }
                    } else if let Some(review) = review
                        && review.decision.is_none()
                    {
                        // A rule settled what a person was asked about: the values moved on.
                        plan.reviews.push(ReviewChange::Close(review.id));
                        report.stats.reviews_closed += 1;
                    }
                    plan.audit.push(entry);
                    for target in targets {
                        let record = records.get(target);
                        let normaliser = field.normalisers.get(target);
                        field_writes.get_mut(target).push(PayloadField {
                            name: Some(field.name.clone()),
                            path: field.paths.get(target).clone(),
                            value: Some(value.clone()),
                            raw: normaliser.to_raw(&value),
                            expected: Some(record.raw[index].clone()),
                            origin: Some(origin),
                            changed_at: reason.winner().map(|winner| *times.get(winner)),
                        });
                        if !reason.is_conflict() {
                            report.push_line(ReportLine {
                                key: key.clone(),
                                field: Some(field.name.clone()),
                                action: Action::Update,
                                target: Some(target),
                                left: Some(left_value.clone()),
                                right: Some(right_value.clone()),
                                value: Some(value.clone()),
                                reason: reason.to_string(),
                            });
                        }
                    }
                }
                FieldOutcome::Hold { kind, reason } => {
                    report.stats.reviews_open += 1;
                    let new_review = NewReview {
                        key: key.clone(),
                        field: Some(field.name.clone()),
                        kind: review.map_or(kind, |review| review.review.kind),
                        base: input.base.cloned(),
                        left: Some(left_value.clone()),
                        right: Some(right_value.clone()),
                        reason: reason.clone(),
                    };
                    let unchanged_review = review.is_some_and(|review| {
                        review.decision.is_none()
                            && review.review.left.as_ref() == Some(left_value)
                            && review.review.right.as_ref() == Some(right_value)
                    });
                    if !unchanged_review {
                        let mut entry =
                            self.audit(&key, Some(&field.name), AuditEvent::Review, reason.clone());
                        entry.base = input.base.cloned();
                        entry.left = Some(left_value.clone());
                        entry.right = Some(right_value.clone());
                        plan.audit.push(entry);
                        plan.reviews.push(ReviewChange::Put(new_review));
                    }
                    report.push_line(ReportLine {
                        key: key.clone(),
                        field: Some(field.name.clone()),
                        action: Action::Review,
                        target: None,
                        left: Some(left_value.clone()),
                        right: Some(right_value.clone()),
                        value: None,
                        reason,
                    });
                }
            }
        }
        for side in Side::BOTH {
            let fields = std::mem::take(field_writes.get_mut(side));
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

    fn plan_presence(
        &self,
        plan: &mut RecordPlan,
        presence: &SidePair<Presence>,
        baseline: Option<&Baseline>,
        reviews: &[Review],
        report: &mut RunReport,
    ) {
        let spec = self.spec;
        let key = plan.key.clone();
        let present = Side::BOTH.into_iter().find(|side| matches!(presence.get(*side), Presence::Present(_)));
        let present_changed = match (present, baseline) {
            (Some(side), Some(baseline)) => (0..spec.fields.len())
                .any(|index| value_at(presence, side, index) != baseline.fields[index].value.as_ref()),
            _ => false,
        };
        let record_review = reviews.iter().find(|review| review.review.field.is_none());
        let outcome = merge_presence(PresenceInput {
            baseline: baseline.map(|baseline| baseline.tombstone),
            present,
            present_changed,
            review: record_review.map(|review| review.decision.as_ref()),
            creates: spec.creates,
            deletes: &spec.deletes,
            conflicts: spec.conflicts,
        });
        if let Some(review) = record_review
            && !matches!(outcome, PresenceOutcome::Hold { .. })
        {
            plan.reviews.push(ReviewChange::Close(review.id));
            report.stats.reviews_closed += 1;
        }
        let line = |action: Action, target: Option<Side>, reason: &str| ReportLine {
            key: key.clone(),
            field: None,
            action,
            target,
            left: None,
            right: None,
            value: None,
            reason: reason.to_string(),
        };
        match outcome {
            PresenceOutcome::Nothing { reason } => {
                if present.is_some() && baseline.is_none() {
                    report.push_line(line(Action::Skipped, None, &reason));
                }
            }
            PresenceOutcome::Forget => plan.baseline = BaselineChange::Delete,
            PresenceOutcome::Create { target, reason } => {
                let Some(Presence::Present(source)) = present.map(|side| presence.get(side)) else {
                    return;
                };
                let Some(values) = source.valid_values() else {
                    report.stats.invalid_values += 1;
                    report.push_line(line(
                        Action::Invalid,
                        Some(target),
                        "not created: some of its values cannot be normalised",
                    ));
                    return;
                };
                let origin = Origin::from(target.other());
                let mut fields = vec![PayloadField {
                    name: None,
                    path: spec.key.get(target).clone(),
                    value: None,
                    raw: serde_json::Value::String(key.as_str().to_string()),
                    expected: None,
                    origin: None,
                    changed_at: None,
                }];
                for (field, value) in spec.fields.iter().zip(values) {
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
                report.push_line(line(Action::Create, Some(target), &reason));
                plan.audit.push(self.audit(&key, None, AuditEvent::Detected, reason));
                plan.writes.push(PlannedWrite {
                    side: target,
                    operation: Operation::Create,
                    record_id: None,
                    payload: Payload {
                        version: PAYLOAD_VERSION,
                        fields,
                        source_id: Some(source.id.clone()),
                        soft_delete_of: None,
                    },
                });
            }
            PresenceOutcome::Delete { target, reason } => {
                let Presence::Present(record) = presence.get(target) else { return };
                report.stats.side_mut(target).deletes_planned += 1;
                report.push_line(line(Action::Delete, Some(target), &reason));
                plan.audit.push(self.audit(&key, None, AuditEvent::Deleted, reason));
                // What the record held when read: a delete cannot carry a condition, so
                // delivery reads the record again and refuses to delete one that changed.
                let fields = spec
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
                plan.writes.push(PlannedWrite {
                    side: target,
                    operation: Operation::Delete,
                    record_id: Some(record.id.clone()),
                    payload: Payload {
                        version: PAYLOAD_VERSION,
                        fields,
                        source_id: None,
                        soft_delete_of: None,
                    },
                });
            }
            PresenceOutcome::SoftDelete { target, reason } => {
                let (Some(id), DeletePolicy::Soft { paths, value }) =
                    (baseline.and_then(|baseline| baseline.id(target)).cloned(), &spec.deletes)
                else {
                    return;
                };
                report.stats.side_mut(target).deletes_planned += 1;
                report.push_line(line(Action::Delete, Some(target), &reason));
                plan.audit.push(self.audit(&key, None, AuditEvent::Deleted, reason));
                plan.writes.push(PlannedWrite {
                    side: target,
                    operation: Operation::Update,
                    record_id: Some(id),
                    payload: Payload {
                        version: PAYLOAD_VERSION,
                        fields: vec![PayloadField {
                            name: None,
                            path: paths.get(target).clone(),
                            value: None,
                            raw: value.clone(),
                            expected: None,
                            origin: None,
                            changed_at: None,
                        }],
                        source_id: None,
                        soft_delete_of: Some(target.other()),
                    },
                });
            }
            PresenceOutcome::Tombstone { deleted_on, reason } => {
                if let Some(baseline) = baseline {
                    let mut next = baseline.clone();
                    next.tombstone = Some(deleted_on);
                    plan.baseline = BaselineChange::Put(next);
                }
                report.push_line(line(Action::Tombstone, None, &reason));
                plan.audit.push(self.audit(&key, None, AuditEvent::Deleted, reason));
            }
            PresenceOutcome::Hold { reason } => {
                report.stats.reviews_open += 1;
                let unchanged_review = record_review.is_some_and(|review| review.decision.is_none());
                if !unchanged_review {
                    let marker = |side: Side| {
                        matches!(presence.get(side), Presence::Present(_))
                            .then(|| Value::from("(record present)"))
                    };
                    plan.reviews.push(ReviewChange::Put(NewReview {
                        key: key.clone(),
                        field: None,
                        kind: ReviewKind::Delete,
                        base: None,
                        left: marker(Side::Left),
                        right: marker(Side::Right),
                        reason: reason.clone(),
                    }));
                    plan.audit.push(self.audit(&key, None, AuditEvent::Review, reason.clone()));
                }
                report.push_line(line(Action::Review, None, &reason));
            }
        }
    }
}
