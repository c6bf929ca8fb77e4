//! What the history keeps of values: the digest that stands for a value under `hashed`
//! (`value_digest`, and `key_digest` for a record's key), an audit entry turned into what a
//! link's `audit.values` keeps (`AuditValues::keep`: its values and the sentences that quoted
//! them alike, whether it is being written or shown), and the one entry an erasure leaves
//! (`ErasedRecord::audit`).

use std::fmt::Write as _;

use fieldsync_model::{RecordKey, Value};

use crate::types::{AuditEntry, AuditEvent, AuditValues, ErasedRecord};

/// How a digest starts: what it was made with.
const DIGEST_PREFIX: &str = "sha256:";

/// The beginning of the reason of a field settled by a person's typed value.
const DECIDED_IN_REVIEW: &str = "decided in review: use ";

/// What a failure's reason says instead of the message, which may quote values.
const MESSAGE_KEPT: &str = "its message may quote values and is kept with the outbox entry only";

/// The digest that stands for `value` of the field `field` of `link` in a history that keeps
/// no values in clear: `sha256:` and the hex of the first 16 bytes of SHA-256 over the link's
/// name, a 0 byte, the field's name, a 0 byte and the value's canonical JSON (`null`, `true`,
/// `42`, `"text"`). Equal values of one link's field give equal digests, so a change and a
/// value that came back still show; a value cannot be read back from its digest, but a short
/// one (a yes/no, a birth year) can be found by trying every candidate.
pub fn value_digest(link: &str, field: &str, value: &Value) -> String {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    context.update(link.as_bytes());
    context.update(&[0]);
    context.update(field.as_bytes());
    context.update(&[0]);
    // A `Value` always serialises: it is null, a boolean, an integer or a string.
    context.update(serde_json::to_string(value).unwrap_or_default().as_bytes());
    let sum = context.finish();
    let mut digest = String::with_capacity(DIGEST_PREFIX.len() + 32);
    digest.push_str(DIGEST_PREFIX);
    for byte in &sum.as_ref()[..16] {
        let _ = write!(digest, "{byte:02x}");
    }
    digest
}

/// The digest of the record key `key` of `link`: `value_digest` of the key as a text, with an
/// empty field name. An erased record is named by it.
pub fn key_digest(link: &str, key: &RecordKey) -> String {
    value_digest(link, "", &Value::from(key.as_str()))
}

impl AuditValues {
    /// Turns `entry`, an audit entry of `link`, into what this policy keeps: under `hashed`
    /// each value becomes its digest (`value_digest`, with the entry's field name or, for a
    /// record, an empty one), under `none` no value is kept; a reason that quoted a value (a
    /// person's typed value, a value that cannot be read, a target's message about a failed
    /// write) is told without it. An entry that keeps less already is left as it is, so that
    /// a value is hashed once and gives the same digest whether it was hashed when written or
    /// when shown.
    pub fn keep(self, link: &str, entry: &mut AuditEntry) {
        let kept = match (entry.values, self) {
            (AuditValues::Full, AuditValues::Hashed) => AuditValues::Hashed,
            (AuditValues::Full | AuditValues::Hashed, AuditValues::None) => AuditValues::None,
            _ => return,
        };
        let field = entry.field.clone().unwrap_or_default();
        for slot in [&mut entry.base, &mut entry.left, &mut entry.right, &mut entry.value] {
            *slot = match (kept, slot.take()) {
                (AuditValues::Hashed, Some(value)) => {
                    Some(Value::from(value_digest(link, &field, &value).as_str()))
                }
                _ => None,
            };
        }
        if entry.values == AuditValues::Full {
            entry.reason = reason_without_values(entry, kept);
        }
        entry.values = kept;
    }

    /// `keep` for every entry of `entries`.
    pub fn keep_all(self, link: &str, entries: &mut [AuditEntry]) {
        if self != AuditValues::Full {
            for entry in entries {
                self.keep(link, entry);
            }
        }
    }
}

/// The reason of `entry` (whose values are already what `kept` keeps) without the values it
/// quoted. fieldsync's sentences quote a value in three places: a person's typed value (a field
/// settled by it, the decision itself), a value no rule of its type reads, and the message of a
/// write that failed for good (the target's own, or what was read back); every other reason is
/// made of names, sides, times and counts, and is kept as it is.
fn reason_without_values(entry: &AuditEntry, kept: AuditValues) -> String {
    let reason = entry.reason.as_str();
    if reason.starts_with(DECIDED_IN_REVIEW) {
        let given = match (&entry.value, kept) {
            (Some(Value::Text(digest)), AuditValues::Hashed) => digest.to_string(),
            _ => "a value a person gave".to_string(),
        };
        return format!("{DECIDED_IN_REVIEW}{given}");
    }
    match entry.event {
        AuditEvent::Decided => decided_without_value(reason, entry),
        AuditEvent::Invalid => unreadable_without_value(reason),
        AuditEvent::Failed => failure_without_message(reason),
        _ => reason.to_string(),
    }
}

/// A person's decision (`decided by …: {"value":…}`) with the value it gave as the entry now
/// keeps it (its digest, or null); a decision to keep a side names no value.
fn decided_without_value(reason: &str, entry: &AuditEntry) -> String {
    // The JSON is the first `: {"value":`: who decided is a quoted name, its quotes escaped.
    let Some(at) = reason.find(": {\"value\":") else { return reason.to_string() };
    let value = entry.value.as_ref().map_or(serde_json::Value::Null, Value::to_json);
    format!("{}: {}", &reason[..at], serde_json::json!({ "value": value }))
}

/// `left value "x" is not a valid email: …; the field is left as it is` without the value and
/// what was wrong with it: `left value is not a valid email; the field is left as it is`.
fn unreadable_without_value(reason: &str) -> String {
    const ENDINGS: [&str; 2] = ["; the field is left as it is", "; copied as it is written to the "];
    const NOT_VALID: &str = " is not a valid ";
    let parsed = || {
        let (side, rest) = reason.split_once(" value ")?;
        if side != "left" && side != "right" {
            return None;
        }
        let end = ENDINGS.iter().filter_map(|ending| rest.rfind(ending)).max()?;
        let (error, ending) = rest.split_at(end);
        let type_at = error.rfind(NOT_VALID)? + NOT_VALID.len();
        let field_type = error[type_at..].split(':').next()?;
        let plain =
            !field_type.is_empty() && field_type.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        plain.then(|| format!("{side} value is not a valid {field_type}{ending}"))
    };
    parsed().unwrap_or_else(|| "a value cannot be read; the sentence quoted it and is not kept".to_string())
}

/// The reason of a write that failed for good without its message: how many attempts it took
/// when it says so; a refusal that names only the record's id is kept as it is.
fn failure_without_message(reason: &str) -> String {
    let gave_up = reason
        .strip_prefix("gave up after ")
        .and_then(|rest| rest.split_once(" attempts: "))
        .filter(|(count, _)| count.parse::<u32>().is_ok());
    if let Some((count, _)) = gave_up {
        return format!("gave up after {count} attempts; {MESSAGE_KEPT}");
    }
    if refused_by_id(reason) {
        return reason.to_string();
    }
    format!("failed for good; {MESSAGE_KEPT}")
}

/// Whether `reason` is a write refused again and again as moved (`record ID changed since it
/// was read; refused the same way N times`), which names the record's id and nothing else.
fn refused_by_id(reason: &str) -> bool {
    const REFUSALS: [&str; 3] = [" changed since it was read; ", " does not exist; ", " already exists; "];
    let Some(rest) = reason.strip_prefix("record ") else { return false };
    let Some((_, tail)) = REFUSALS.iter().find_map(|refusal| rest.rsplit_once(refusal)) else { return false };
    tail.strip_prefix("refused the same way ")
        .and_then(|tail| tail.strip_suffix(" times"))
        .is_some_and(|count| count.parse::<u32>().is_ok())
}

impl ErasedRecord {
    /// The audit entry an erasure of the record `key` of `link` leaves, by `by` at `at`: named
    /// by the key's digest (`key_digest`), with no value, saying what was removed.
    pub fn audit(&self, link: &str, key: &RecordKey, by: &str, at: jiff::Timestamp) -> AuditEntry {
        AuditEntry {
            run_id: None,
            key: RecordKey::new(key_digest(link, key).as_str()),
            field: None,
            event: AuditEvent::Erased,
            side: None,
            base: None,
            left: None,
            right: None,
            value: None,
            reason: format!("record erased by {by}: {}", self.summary()),
            at,
            values: AuditValues::None,
        }
    }

    /// What was removed, in words: `its baseline, 2 outbox entries, 1 review and 7 audit
    /// entries; struck from 1 webhook`, or that nothing was held.
    pub fn summary(&self) -> String {
        let count = |count: u64, one: &str, many: &str| match count {
            0 => None,
            1 => Some(format!("1 {one}")),
            count => Some(format!("{count} {many}")),
        };
        let removed: Vec<String> = [
            self.baseline.then(|| "its baseline".to_string()),
            count(self.outbox_entries, "outbox entry", "outbox entries"),
            count(self.reviews, "review", "reviews"),
            count(self.audit_entries, "audit entry", "audit entries"),
        ]
        .into_iter()
        .flatten()
        .collect();
        let struck: Vec<String> =
            [count(self.webhooks, "webhook", "webhooks"), count(self.messages, "message", "messages")]
                .into_iter()
                .flatten()
                .collect();
        let mut summary = match removed.split_last() {
            None => "the state store held no row of it".to_string(),
            Some((last, [])) => last.clone(),
            Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
        };
        if !struck.is_empty() {
            let _ = write!(summary, "; struck from {}", struck.join(" and "));
        }
        summary
    }
}

#[cfg(test)]
mod tests {
    use fieldsync_model::{RunId, Side};

    use super::*;

    fn entry(event: AuditEvent, reason: &str) -> AuditEntry {
        AuditEntry {
            run_id: Some(RunId(7)),
            key: RecordKey::new("M-1042"),
            field: Some("email".into()),
            event,
            side: Some(Side::Left),
            base: Some(Value::from("anna@example.nl")),
            left: Some(Value::from("anna.devries@example.nl")),
            right: None,
            value: Some(Value::from("anna.devries@example.nl")),
            reason: reason.into(),
            at: jiff::Timestamp::UNIX_EPOCH,
            values: AuditValues::Full,
        }
    }

    #[test]
    fn a_digest_is_sha256_over_link_field_and_canonical_json_cut_to_16_bytes() {
        let digest = value_digest("members", "email", &Value::from("anna@example.nl"));
        let mut expected = "sha256:".to_string();
        let sum = ring::digest::digest(&ring::digest::SHA256, b"members\0email\0\"anna@example.nl\"");
        for byte in &sum.as_ref()[..16] {
            expected.push_str(&format!("{byte:02x}"));
        }
        assert_eq!(digest, expected);
        assert_eq!(digest.len(), "sha256:".len() + 32);
        // Equal values of one field are equal digests; another field or link gives another.
        assert_eq!(digest, value_digest("members", "email", &Value::from("anna@example.nl")));
        assert_ne!(digest, value_digest("members", "mail", &Value::from("anna@example.nl")));
        assert_ne!(digest, value_digest("players", "email", &Value::from("anna@example.nl")));
        assert_ne!(value_digest("l", "f", &Value::Int(1)), value_digest("l", "f", &Value::from("1")));
        assert_eq!(
            key_digest("members", &RecordKey::new("M-1")),
            value_digest("members", "", &Value::from("M-1"))
        );
    }

    #[test]
    fn hashed_keeps_digests_and_none_keeps_nothing_and_each_is_applied_once() {
        let full = entry(AuditEvent::Resolved, "conflict: the left side is preferred");
        let mut hashed = full.clone();
        AuditValues::Hashed.keep("members", &mut hashed);
        let digest =
            |text: &str| Some(Value::from(value_digest("members", "email", &Value::from(text)).as_str()));
        assert_eq!(hashed.base, digest("anna@example.nl"));
        assert_eq!(hashed.left, digest("anna.devries@example.nl"));
        assert_eq!(hashed.value, hashed.left);
        assert_eq!(hashed.right, None, "absent stays absent");
        assert_eq!((hashed.values, hashed.reason.as_str()), (AuditValues::Hashed, full.reason.as_str()));
        let mut again = hashed.clone();
        AuditValues::Hashed.keep("members", &mut again);
        assert_eq!(again, hashed, "a digest is not hashed again");
        AuditValues::Full.keep("members", &mut again);
        assert_eq!(again, hashed, "a digest cannot become a value again");
        for mut none in [full.clone(), hashed] {
            AuditValues::None.keep("members", &mut none);
            assert_eq!((&none.base, &none.left, &none.right, &none.value), (&None, &None, &None, &None));
            assert_eq!(none.values, AuditValues::None);
            assert_eq!(
                (none.key.as_str(), none.field.as_deref(), none.side),
                ("M-1042", Some("email"), Some(Side::Left))
            );
        }
    }

    #[test]
    fn reasons_that_quote_values_are_told_without_them() {
        let cases = [
            (
                AuditEvent::Resolved,
                "decided in review: use \"anna.devries@example.nl\"",
                "decided in review: use sha256:",
                "decided in review: use a value a person gave",
            ),
            (
                AuditEvent::Decided,
                "decided by token \"ops\": {\"value\":\"anna.devries@example.nl\"}",
                "decided by token \"ops\": {\"value\":\"sha256:",
                "decided by token \"ops\": {\"value\":null}",
            ),
            (
                AuditEvent::Decided,
                "decided by a person: {\"keep\":\"left\"}",
                "decided by a person: {\"keep\":\"left\"}",
                "decided by a person: {\"keep\":\"left\"}",
            ),
            (
                AuditEvent::Invalid,
                "left value \"anna@@example\" is not a valid email: two @; the field is left as it is",
                "left value is not a valid email; the field is left as it is",
                "left value is not a valid email; the field is left as it is",
            ),
            (
                AuditEvent::Invalid,
                "right value \"0612\" is not a valid phone: too short; copied as it is written to the left side (invalid = \"copy\")",
                "right value is not a valid phone; copied as it is written to the left side (invalid = \"copy\")",
                "right value is not a valid phone; copied as it is written to the left side (invalid = \"copy\")",
            ),
            (
                AuditEvent::Invalid,
                "something else about \"anna.devries@example.nl\"",
                "a value cannot be read; the sentence quoted it and is not kept",
                "a value cannot be read; the sentence quoted it and is not kept",
            ),
            (
                AuditEvent::Failed,
                "gave up after 8 attempts: rejected: anna.devries@example.nl is taken",
                "gave up after 8 attempts; its message may quote values",
                "gave up after 8 attempts; its message may quote values",
            ),
            (
                AuditEvent::Failed,
                "wrote \"+31612345678\" at mobile, read back \"0612345678\"",
                "failed for good; its message may quote values",
                "failed for good; its message may quote values",
            ),
            (
                AuditEvent::Failed,
                "record 17 does not exist; refused the same way 8 times",
                "record 17 does not exist; refused the same way 8 times",
                "record 17 does not exist; refused the same way 8 times",
            ),
            (
                AuditEvent::Agreed,
                "both sides changed it to the same value",
                "both sides changed it to the same value",
                "both sides changed it to the same value",
            ),
        ];
        for (event, full, hashed, none) in cases {
            for (policy, expected) in [(AuditValues::Hashed, hashed), (AuditValues::None, none)] {
                let mut kept = entry(event, full);
                policy.keep("members", &mut kept);
                assert!(kept.reason.starts_with(expected), "{policy}: {full:?} became {:?}", kept.reason);
                for value in ["anna.devries@example.nl", "anna@@example", "0612", "+31612345678"] {
                    assert!(!kept.reason.contains(value), "{policy}: {:?} holds {value}", kept.reason);
                }
            }
        }
    }

    #[test]
    fn an_erasure_is_audited_by_the_key_digest_with_what_was_removed() {
        let key = RecordKey::new("M-1042");
        let erased = ErasedRecord {
            baseline: true,
            outbox_entries: 2,
            reviews: 1,
            audit_entries: 7,
            webhooks: 1,
            messages: 0,
            wiped: true,
        };
        let audit = erased.audit("members", &key, "a person", jiff::Timestamp::UNIX_EPOCH);
        assert_eq!(audit.key.as_str(), key_digest("members", &key));
        assert_eq!((audit.event, audit.values), (AuditEvent::Erased, AuditValues::None));
        assert_eq!(
            audit.reason,
            "record erased by a person: its baseline, 2 outbox entries, 1 review and 7 audit entries; struck from 1 webhook"
        );
        assert!(!audit.reason.contains("M-1042"));
        let nothing = ErasedRecord {
            baseline: false,
            outbox_entries: 0,
            reviews: 0,
            audit_entries: 0,
            webhooks: 0,
            messages: 0,
            wiped: true,
        };
        assert_eq!(nothing.summary(), "the state store held no row of it");
    }
}
