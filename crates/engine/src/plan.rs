//! Planning: turn each candidate record's merge into outbox writes, baseline changes,
//! reviews and audit entries — the whole of what a run will do, before it does any of it.

use fieldsync_model::{RecordDigest, RecordId, RecordKey, RunId, Side, Value, digest_raw, digest_values};
use fieldsync_store::{
    AuditEntry, AuditEvent, AuditValues, Baseline, NewReview, Operation, Origin, Review, ReviewId,
    SourceDigest,
};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::detect::{Presence, SideRecord};
use crate::report::{Action, ReportLine, RunReport};
use crate::spec::{LinkSpec, SidePair};

mod fields;
mod presence;

/// The version of `Payload` written into outbox entries. Version 1 wrote every part of every
/// field; version 2 leaves out a raw value equal to the field's value and an origin or edit
/// time equal to the payload's own. Both are read.
pub(crate) const PAYLOAD_VERSION: u32 = 2;

/// One value an outbox entry writes.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct PayloadField {
    /// The tracked field, or `None` for the link key and the soft-delete value.
    pub name: Option<String>,
    pub path: String,
    /// The normalised value, which becomes the baseline once verified.
    pub value: Option<Value>,
    pub raw: serde_json::Value,
    /// The raw value the target held when it was read.
    pub expected: Option<serde_json::Value>,
    pub origin: Option<Origin>,
    /// When the winning side made the edit, if known; becomes that side's change time.
    pub changed_at: Option<Timestamp>,
}

/// What an outbox entry does, as stored in its payload.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Payload {
    pub version: u32,
    pub fields: Vec<PayloadField>,
    /// For a create, the record's id on the side it came from.
    pub source_id: Option<RecordId>,
    /// For a soft delete, the side the record was deleted on.
    pub soft_delete_of: Option<Side>,
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

/// A payload as stored, in either version.
#[derive(Serialize, Deserialize)]
struct StoredPayload {
    version: u32,
    fields: Vec<StoredField>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    source_id: Option<RecordId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    soft_delete_of: Option<Side>,
    /// Version 2: the origin of every field with a value that does not name its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    origin: Option<Origin>,
    /// Version 2: the edit time of every field with a value that does not name its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    changed_at: Option<Timestamp>,
}

#[derive(Serialize, Deserialize)]
struct StoredField {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    path: String,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    value: Option<Value>,
    /// Version 2 leaves it out when it is the value's own JSON form.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    raw: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    expected: Option<serde_json::Value>,
    /// `Some(None)` is an explicit `null`, which version 1 writes and version 2 writes where
    /// the payload's origin would otherwise apply.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    origin: Option<Option<Origin>>,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    changed_at: Option<Option<Timestamp>>,
}

/// The value most fields with a value share (the first such on a tie), so that it is written
/// once for the payload rather than once per field.
fn shared<T: Copy + PartialEq>(
    fields: &[PayloadField],
    part: impl Fn(&PayloadField) -> Option<T>,
) -> Option<T> {
    let valued: Vec<Option<T>> = fields.iter().filter(|field| field.value.is_some()).map(part).collect();
    let count = |candidate: &Option<T>| valued.iter().filter(|other| *other == candidate).count();
    let mut best: Option<Option<T>> = None;
    for candidate in &valued {
        if best.as_ref().is_none_or(|best| count(candidate) > count(best)) {
            best = Some(*candidate);
        }
    }
    best.flatten()
}

impl Payload {
    /// Whether two payloads write the same values to the same places (expectations aside).
    pub fn same_write(&self, other: &Payload) -> bool {
        self.fields.len() == other.fields.len()
            && self.soft_delete_of == other.soft_delete_of
            && self.fields.iter().zip(&other.fields).all(|(a, b)| a.path == b.path && a.raw == b.raw)
    }

    /// Whether two payloads make the same write with the same expectations: the same write
    /// planned from the same reads.
    pub fn same_write_and_expectations(&self, other: &Payload) -> bool {
        self.same_write(other) && self.fields.iter().zip(&other.fields).all(|(a, b)| a.expected == b.expected)
    }

    /// The payload as stored in the outbox (always the current version).
    pub fn to_text(&self) -> String {
        let origin = shared(&self.fields, |field| field.origin);
        let changed_at = shared(&self.fields, |field| field.changed_at);
        let fields = self
            .fields
            .iter()
            .map(|field| {
                // A field with a value takes the payload's origin and time unless it names its own.
                let (default_origin, default_time) =
                    if field.value.is_some() { (origin, changed_at) } else { (None, None) };
                StoredField {
                    name: field.name.clone(),
                    path: field.path.clone(),
                    value: field.value.clone(),
                    raw: match &field.value {
                        Some(value) if value.to_json() == field.raw => None,
                        _ => Some(field.raw.clone()),
                    },
                    expected: field.expected.clone(),
                    origin: (field.origin != default_origin).then_some(field.origin),
                    changed_at: (field.changed_at != default_time).then_some(field.changed_at),
                }
            })
            .collect();
        let stored = StoredPayload {
            version: PAYLOAD_VERSION,
            fields,
            source_id: self.source_id.clone(),
            soft_delete_of: self.soft_delete_of,
            origin,
            changed_at,
        };
        // Every part is a string, a number, a JSON value or null: serialising cannot fail.
        serde_json::to_string(&stored).unwrap_or_default()
    }

    /// Reads a stored payload of a version this fieldsync knows.
    ///
    /// # Errors
    ///
    /// Why it cannot be read: an unknown version (a newer fieldsync wrote it) or damage.
    pub fn from_text(text: &str) -> Result<Payload, String> {
        let stored: StoredPayload =
            serde_json::from_str(text).map_err(|error| format!("payload cannot be read: {error}"))?;
        if !(1..=PAYLOAD_VERSION).contains(&stored.version) {
            return Err(format!("payload version {} is unknown", stored.version));
        }
        let fields = stored
            .fields
            .into_iter()
            .map(|field| {
                let (default_origin, default_time) =
                    if field.value.is_some() { (stored.origin, stored.changed_at) } else { (None, None) };
                let raw = match (field.raw, &field.value) {
                    (Some(raw), _) => raw,
                    (None, Some(value)) => value.to_json(),
                    (None, None) => {
                        return Err(format!("payload field {} has no value to write", field.path));
                    }
                };
                Ok(PayloadField {
                    name: field.name,
                    path: field.path,
                    value: field.value,
                    raw,
                    expected: field.expected,
                    origin: field.origin.unwrap_or(default_origin),
                    changed_at: field.changed_at.unwrap_or(default_time),
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(Payload {
            version: stored.version,
            fields,
            source_id: stored.source_id,
            soft_delete_of: stored.soft_delete_of,
        })
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
    /// What each side holds, for the writes copied from it: once a write is verified, its
    /// source's raw digest is known too (`SourceDigest`). Only for sides the plan copies from.
    pub sources: SidePair<Option<SourceDigest>>,
}

/// The context every record's plan shares.
pub(crate) struct Planner<'a> {
    pub spec: &'a LinkSpec,
    pub run_id: Option<RunId>,
    pub now: Timestamp,
    /// `LinkSpec::fingerprint` of each side.
    pub fingerprints: SidePair<u64>,
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
            values: AuditValues::Full,
        }
    }

    /// Warns, in the report and the audit, when the value written to `target` is one its source
    /// copies verbatim because no rule of its type reads it (`invalid = "copy"`).
    #[allow(clippy::too_many_arguments)]
    fn warn_if_copied(
        &self,
        source: &SideRecord,
        index: usize,
        key: &RecordKey,
        field: &crate::spec::FieldSpec,
        target: Side,
        plan: &mut RecordPlan,
        report: &mut RunReport,
    ) {
        let Some((_, error)) = source.copied.iter().find(|(copied, _)| *copied == index) else { return };
        report.stats.copied_values += 1;
        let reason = format!(
            "{} value {error}; copied as it is written to the {target} side (invalid = \"copy\")",
            target.other()
        );
        plan.audit.push(self.audit(key, Some(&field.name), AuditEvent::Invalid, reason.clone()));
        report
            .push_line(|| ReportLine::about(key, Some(&field.name), Action::Copied, reason).to(Some(target)));
    }

    /// Plans one record from its baseline, both sides' state and its live reviews.
    /// `created_from` names the side an unfinished create of ours copied the record from, when
    /// the other side now holds it: the target made it (perhaps only in part) and then failed,
    /// and its first sync takes the source's values, so the create is completed rather than
    /// held for review or left half-made.
    pub fn plan_record(
        &self,
        key: RecordKey,
        presence: SidePair<Presence>,
        baseline: Option<&Baseline>,
        reviews: &[Review],
        created_from: Option<Side>,
        report: &mut RunReport,
    ) -> RecordPlan {
        let mut plan = RecordPlan {
            key,
            writes: Vec::new(),
            baseline: BaselineChange::Keep,
            reviews: Vec::new(),
            audit: Vec::new(),
            seen: Vec::new(),
            sources: SidePair::new(None, None),
        };
        match (&presence.left, &presence.right) {
            (Presence::Present(left), Presence::Present(right)) => {
                self.plan_fields(&mut plan, left, right, baseline, reviews, created_from, report);
            }
            (Presence::Unknown, _) | (_, Presence::Unknown) => {
                let reason = "waiting for a full scan: the other side cannot look the record up by key";
                report.push_line(|| ReportLine::about(&plan.key, None, Action::Skipped, reason));
            }
            _ => self.plan_presence(&mut plan, &presence, baseline, reviews, report),
        }
        self.remember_raw_digests(&mut plan, &presence);
        plan
    }

    /// The raw digests a plan leaves known, each side's computed once and only when needed:
    /// when the plan moves the baseline, those of the sides whose records already hold it (the
    /// next scan skips them without normalising); for each side a write is copied from, what it
    /// holds (`SourceDigest`), remembered once the write is verified.
    fn remember_raw_digests(&self, plan: &mut RecordPlan, presence: &SidePair<Presence>) {
        let next = match &plan.baseline {
            BaselineChange::Put(next) => Some(next.digest()),
            _ => None,
        };
        for side in Side::BOTH {
            let copied_from = plan.writes.iter().any(|write| write.side == side.other());
            if next.is_none() && !copied_from {
                continue;
            }
            let Presence::Present(record) = presence.get(side) else { continue };
            let Some(values) = record.valid_values() else { continue };
            let basis = digest_values(values.into_iter().map(Some));
            let holds_next = next == Some(basis);
            if !holds_next && !copied_from {
                continue;
            }
            let raw = digest_raw(basis, *self.fingerprints.get(side), &record.raw);
            if holds_next {
                plan.seen.push((side, raw));
            }
            if copied_from {
                *plan.sources.get_mut(side) = Some(SourceDigest { basis, raw });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn field(name: Option<&str>, value: Option<Value>, raw: serde_json::Value) -> PayloadField {
        PayloadField {
            name: name.map(str::to_string),
            path: format!("column_{}", name.unwrap_or("key")),
            value,
            raw,
            expected: None,
            origin: None,
            changed_at: None,
        }
    }

    #[test]
    fn payloads_round_trip_in_the_current_version() {
        let time: Timestamp = "2025-01-01T00:00:00Z".parse().unwrap();
        let later: Timestamp = "2025-01-02T00:00:00Z".parse().unwrap();
        let tracked = |name: &str, value: Value, raw: serde_json::Value| PayloadField {
            origin: Some(Origin::Left),
            changed_at: Some(time),
            ..field(Some(name), Some(value), raw)
        };
        let mut differing = tracked("mobile", Value::from("+31612345678"), json!("+31612345678"));
        differing.origin = Some(Origin::Right);
        differing.changed_at = None;
        differing.expected = Some(json!(null));
        let mut decided = tracked("note", Value::Null, json!(null));
        decided.origin = Some(Origin::Person);
        decided.changed_at = Some(later);
        let deleted =
            PayloadField { expected: Some(json!("Anna")), ..field(Some("first_name"), None, json!("Anna")) };
        let cases = [
            Payload {
                version: PAYLOAD_VERSION,
                fields: vec![
                    field(None, None, json!("M1")),
                    tracked("first_name", Value::from("Anna"), json!("Anna")),
                    tracked("birth_date", Value::from("1964-08-09"), json!("09-08-1964")),
                    tracked("active", Value::Bool(true), json!(1)),
                ],
                source_id: Some(RecordId::new("M1")),
                soft_delete_of: None,
            },
            Payload {
                version: PAYLOAD_VERSION,
                fields: vec![tracked("email", Value::from("a@b.nl"), json!("a@b.nl")), differing, decided],
                source_id: None,
                soft_delete_of: None,
            },
            Payload {
                version: PAYLOAD_VERSION,
                fields: vec![deleted],
                source_id: None,
                soft_delete_of: None,
            },
            Payload {
                version: PAYLOAD_VERSION,
                fields: vec![field(Some("status"), None, json!("inactive"))],
                source_id: None,
                soft_delete_of: Some(Side::Left),
            },
        ];
        for payload in cases {
            let text = payload.to_text();
            assert_eq!(Payload::from_text(&text), Ok(payload), "{text}");
        }
    }

    #[test]
    fn version_1_payloads_are_read_and_version_2_is_smaller() {
        let v1 = r#"{"version":1,"fields":[{"name":null,"path":"federation_id","raw":"M00000000","origin":null},{"name":"first_name","path":"given","value":"Sem","raw":"Sem","origin":"left","changed_at":"2025-01-01T00:00:00Z"},{"name":"birth_date","path":"born","value":"1964-08-09","raw":"09-08-1964","origin":"left","changed_at":"2025-01-01T00:00:00Z"},{"name":"email","path":"mail","value":null,"raw":null,"expected":null,"origin":"right"},{"name":"last_name","path":"family","value":"Mulder","raw":"Mulder","origin":"left","changed_at":"2025-01-01T00:00:00Z"},{"name":"phone","path":"tel","value":"+31507911141","raw":"+31507911141","origin":"left","changed_at":"2025-01-01T00:00:00Z"},{"name":"mobile","path":"gsm","value":"+31626698674","raw":"+31626698674","origin":"left","changed_at":"2025-01-01T00:00:00Z"},{"name":"active","path":"is_active","value":true,"raw":true,"origin":"left","changed_at":"2025-01-01T00:00:00Z"}],"source_id":"M00000000","soft_delete_of":null}"#;
        let payload = Payload::from_text(v1).unwrap();
        let time: Timestamp = "2025-01-01T00:00:00Z".parse().unwrap();
        assert_eq!(payload.version, 1);
        assert_eq!(payload.source_id, Some(RecordId::new("M00000000")));
        assert_eq!(payload.fields[0], field(None, None, json!("M00000000")).with_path("federation_id"));
        assert_eq!(payload.fields[1].value, Some(Value::from("Sem")));
        assert_eq!(
            (payload.fields[1].origin, payload.fields[1].changed_at),
            (Some(Origin::Left), Some(time))
        );
        assert_eq!(payload.fields[2].raw, json!("09-08-1964"));
        // An explicit null value and expectation stay `Some`; no time stays `None`.
        assert_eq!(payload.fields[3].value, Some(Value::Null));
        assert_eq!(payload.fields[3].expected, Some(json!(null)));
        assert_eq!((payload.fields[3].origin, payload.fields[3].changed_at), (Some(Origin::Right), None));
        let v2 = payload.to_text();
        assert!(v2.len() * 3 < v1.len() * 2, "{} bytes, version 1 took {}: {v2}", v2.len(), v1.len());
        let again = Payload::from_text(&v2).unwrap();
        assert_eq!(again.fields, payload.fields);
        assert_eq!(again.version, PAYLOAD_VERSION);
        assert_eq!(
            Payload::from_text(r#"{"version":3,"fields":[]}"#),
            Err("payload version 3 is unknown".into())
        );
        assert!(Payload::from_text("{").unwrap_err().starts_with("payload cannot be read"));
        assert!(Payload::from_text(r#"{"version":2,"fields":[{"path":"x"}]}"#).is_err());
    }

    /// The payload names once the origin and edit time most of its valued fields share (the
    /// first such on a tie); a field that differs names its own.
    #[test]
    fn a_payload_shares_the_origin_and_time_most_of_its_fields_have() {
        let time: Timestamp = "2025-01-01T00:00:00Z".parse().unwrap();
        let with = |name: &str, origin: Origin, changed_at: Option<Timestamp>| PayloadField {
            origin: Some(origin),
            changed_at,
            ..field(Some(name), Some(Value::from(name)), json!(name))
        };
        let stored = |fields: Vec<PayloadField>| {
            let payload = Payload { version: PAYLOAD_VERSION, fields, source_id: None, soft_delete_of: None };
            let text = payload.to_text();
            assert_eq!(Payload::from_text(&text).as_ref(), Ok(&payload), "{text}");
            serde_json::from_str::<serde_json::Value>(&text).unwrap()
        };
        let most = stored(vec![
            with("a", Origin::Right, None),
            with("b", Origin::Left, Some(time)),
            with("c", Origin::Left, Some(time)),
        ]);
        assert_eq!((&most["origin"], &most["changed_at"]), (&json!("left"), &json!("2025-01-01T00:00:00Z")));
        assert_eq!(
            (&most["fields"][0]["origin"], &most["fields"][0]["changed_at"]),
            (&json!("right"), &json!(null))
        );
        assert_eq!(most["fields"][1].get("origin"), None);
        let tie = stored(vec![with("a", Origin::Right, Some(time)), with("b", Origin::Left, None)]);
        assert_eq!((&tie["origin"], &tie["changed_at"]), (&json!("right"), &json!("2025-01-01T00:00:00Z")));
    }

    impl PayloadField {
        fn with_path(mut self, path: &str) -> Self {
            self.path = path.to_string();
            self
        }
    }
}
