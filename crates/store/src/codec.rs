//! How the stores keep the contract's values as text and numbers: times as milliseconds,
//! values and sides as text, a baseline's fields as two JSON arrays. The SQLite and the
//! PostgreSQL store write the same forms, so one reads what the other would have written the
//! same way, and a change of form is made once.

use fieldsync_model::{RecordDigest, RecordKey, Side, Value};
use jiff::Timestamp;

use crate::{BaselineField, DigestEntry, LinkLayout, Origin, StoreError};

/// A time as the milliseconds since the epoch a store keeps.
pub fn millis(timestamp: Timestamp) -> i64 {
    timestamp.as_millisecond()
}

/// A time `millis` wrote.
pub fn from_millis(ms: i64) -> Timestamp {
    // Every stored time was written by `millis` from a valid timestamp.
    Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// A stored value that cannot be read back: `StoreError::Damaged`.
pub fn damaged(what: impl Into<String>, message: impl ToString) -> StoreError {
    StoreError::Damaged { what: what.into(), message: message.to_string() }
}

/// A value as the JSON text a review or an audit entry keeps.
pub fn value_text(value: &Option<Value>) -> Option<String> {
    value.as_ref().map(|value| serde_json::to_string(value).unwrap_or_else(|_| "null".into()))
}

/// A value `value_text` wrote; `what` names the row for the error.
///
/// # Errors
///
/// `StoreError::Damaged` when the text is not a value.
pub fn value_from(text: Option<String>, what: &str) -> Result<Option<Value>, StoreError> {
    text.map(|text| serde_json::from_str(&text).map_err(|error| damaged(what, error))).transpose()
}

/// A side as a store keeps it (`left`, `right`); `what` names the row for the error.
///
/// # Errors
///
/// `StoreError::Damaged` for any other text.
pub fn side_from(text: &str, what: &str) -> Result<Side, StoreError> {
    match text {
        "left" => Ok(Side::Left),
        "right" => Ok(Side::Right),
        other => Err(damaged(what, format!("unknown side {other:?}"))),
    }
}

/// A baseline's digest columns as a store reads them from its row.
#[derive(Clone, Copy, Debug)]
pub struct DigestColumns<'a> {
    /// The id of the layout the baseline was written with.
    pub layout: i64,
    /// Its digest, as stored.
    pub digest: &'a [u8],
    /// The record's id on each side, if it has one.
    pub ids: [Option<&'a str>; 2],
    /// The side a tombstone says the record was deleted on.
    pub tombstone: Option<&'a str>,
    /// Each side's raw digest, `None` when empty or damaged (only a missed shortcut).
    pub seen: [Option<RecordDigest>; 2],
}

impl DigestColumns<'_> {
    /// The digest entry of the baseline of `key`, with its digest only when it was written
    /// with `layout`.
    ///
    /// # Errors
    ///
    /// `StoreError::Damaged` when the digest has the wrong length or the tombstone names no
    /// side.
    pub fn entry(self, key: &RecordKey, layout: &LinkLayout) -> Result<DigestEntry, StoreError> {
        let digest = if self.layout == layout.id {
            Some(
                RecordDigest::from_bytes(self.digest)
                    .ok_or_else(|| damaged(format!("digest of {key}"), "wrong length"))?,
            )
        } else {
            None
        };
        let tombstone = self.tombstone.map(|side| side_from(side, "tombstone")).transpose()?;
        Ok(DigestEntry::new(key, digest, self.ids, tombstone, self.seen))
    }
}

/// A baseline's field values and their meta as the two JSON arrays stored in its row:
/// `[value, …]`, with `{}` for a field never agreed (never a `Value`, so never mistaken for
/// one), and `[[left_changed_ms, right_changed_ms, origin], …]`.
pub fn encode_fields(fields: &[BaselineField]) -> (String, String) {
    use std::fmt::Write as _;
    let mut values = String::with_capacity(16 * fields.len() + 2);
    let mut meta = String::with_capacity(40 * fields.len() + 2);
    values.push('[');
    meta.push('[');
    for (index, field) in fields.iter().enumerate() {
        if index > 0 {
            values.push(',');
            meta.push(',');
        }
        match &field.value {
            // A `Value` always serialises: it is null, a boolean, an integer or a string.
            Some(value) => values.push_str(&serde_json::to_string(value).unwrap_or_else(|_| "null".into())),
            None => values.push_str("{}"),
        }
        let time = |time: Option<Timestamp>| {
            time.map_or_else(|| "null".to_string(), |time| millis(time).to_string())
        };
        let origin =
            field.origin.map_or_else(|| "null".to_string(), |origin| format!("\"{}\"", origin.as_str()));
        let _ = write!(meta, "[{},{},{origin}]", time(field.left_changed), time(field.right_changed));
    }
    values.push(']');
    meta.push(']');
    (values, meta)
}

/// Decodes stored field values and meta written with `stored` field names onto the
/// `current` field names; fields unknown to the stored layout have no agreed value. Values
/// that do not hash to the row's digest are damaged (well-formed, but not what was agreed).
///
/// # Errors
///
/// What is wrong: not JSON, a count that does not match the layout, values that do not match
/// the digest.
pub fn decode_fields(
    values: &str,
    meta: &str,
    digest: &[u8],
    stored: &[String],
    current: &[String],
) -> Result<Vec<BaselineField>, String> {
    let values: Vec<serde_json::Value> = serde_json::from_str(values).map_err(|error| error.to_string())?;
    let meta: Vec<serde_json::Value> = serde_json::from_str(meta).map_err(|error| error.to_string())?;
    if values.len() != stored.len() || meta.len() != stored.len() {
        return Err("field count does not match its layout".into());
    }
    let decoded: Vec<BaselineField> = values
        .into_iter()
        .zip(meta)
        .map(|(value, meta)| {
            let value = match value {
                serde_json::Value::Object(_) => None,
                other => Some(serde_json::from_value::<Value>(other).map_err(|error| error.to_string())?),
            };
            let time = |index: usize| meta.get(index).and_then(serde_json::Value::as_i64).map(from_millis);
            Ok(BaselineField {
                value,
                left_changed: time(0),
                right_changed: time(1),
                origin: meta.get(2).and_then(serde_json::Value::as_str).and_then(Origin::parse),
            })
        })
        .collect::<Result<_, String>>()?;
    let agreed = fieldsync_model::digest_values(decoded.iter().map(|field| field.value.as_ref()));
    if RecordDigest::from_bytes(digest) != Some(agreed) {
        return Err("the values do not match the digest".into());
    }
    Ok(current
        .iter()
        .map(|name| {
            stored
                .iter()
                .position(|stored| stored == name)
                .map(|index| decoded[index].clone())
                .unwrap_or_default()
        })
        .collect())
}

/// Checks that the keys a listing hands out come in key order (byte order, the collation
/// contract), as detection relies on: a reader searches what it was handed, so the order is
/// checked, not assumed. It keeps the last key in one buffer rather than a copy per row.
#[derive(Debug, Default)]
pub struct KeyOrder {
    last: Option<String>,
}

impl KeyOrder {
    /// Takes `key`, the next key of the listing.
    ///
    /// # Errors
    ///
    /// `StoreError::Damaged`, naming `what`, when `key` is not after the last one.
    pub fn next(&mut self, key: &fieldsync_model::RecordKey, what: &str) -> Result<(), StoreError> {
        if self.last.as_deref().is_some_and(|last| key.as_str() <= last) {
            return Err(damaged(what, format!("baseline {key} out of key order")));
        }
        let buffer = self.last.get_or_insert_default();
        buffer.clear();
        buffer.push_str(key.as_str());
        Ok(())
    }

    /// The last key taken, if any: where the next page starts.
    pub fn last(self) -> Option<fieldsync_model::RecordKey> {
        self.last.map(fieldsync_model::RecordKey::new)
    }
}
