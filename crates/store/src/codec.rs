//! How the stores keep the contract's values as text and numbers: times as milliseconds,
//! values and sides as text, a baseline's fields as two JSON arrays. The SQLite and the
//! PostgreSQL store write the same forms, so one reads what the other would have written the
//! same way, and a change of form is made once.

use fieldsync_model::{RecordDigest, RecordKey, Side, Value};
use jiff::Timestamp;

use crate::{BaselineField, DigestEntry, LinkLayout, NamedRecords, Origin, StoreError};

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

/// A baseline's key and its digest entry (`DigestColumns::entry`), as a store reads them from
/// one row: the entry is an error where the row is damaged.
pub type DigestRow = (RecordKey, Result<DigestEntry, StoreError>);

/// Hands `each` the digests of a page of baselines, `rows` in key order as a store read them,
/// and returns the last key, where the next page starts. A damaged row has no usable digest:
/// it is left out, and its record is compared in full.
///
/// # Errors
///
/// The first row that could not be read; `StoreError::Damaged`, naming `what`, when the keys
/// are out of order (`KeyOrder`).
pub fn digest_page(
    rows: impl IntoIterator<Item = Result<DigestRow, StoreError>>,
    what: &str,
    mut each: impl FnMut(RecordKey, DigestEntry),
) -> Result<Option<RecordKey>, StoreError> {
    let mut order = KeyOrder::default();
    for row in rows {
        let (key, entry) = row?;
        order.next(&key, what)?;
        if let Ok(entry) = entry {
            each(key, entry);
        }
    }
    Ok(order.last())
}

/// The records the waiting webhooks of a link name (`StateStore::webhook_records`), from
/// `rows` as a store read them in order, at most `limit` + 1 of them: each webhook's id, side
/// (as stored) and the records it names. `None` when there are more than `limit` webhooks or
/// one of them names no record: then the side must be read in full.
///
/// # Errors
///
/// The first row that could not be read; a side that is not one, as `what` failing.
pub fn named_records(
    rows: impl IntoIterator<Item = Result<(i64, impl AsRef<str>, Vec<String>), StoreError>>,
    limit: usize,
    what: &str,
) -> Result<Option<NamedRecords>, StoreError> {
    let mut webhooks = Vec::new();
    let mut named = std::collections::BTreeSet::new();
    for row in rows {
        let (id, side, records) = row?;
        if webhooks.len() == limit || records.is_empty() {
            return Ok(None);
        }
        let side = side_from(side.as_ref(), what)?;
        webhooks.push(id);
        named.extend(records.into_iter().map(|record| (side, record)));
    }
    Ok(Some(NamedRecords { webhooks, records: named.into_iter().collect() }))
}

/// What an erasure strikes from the messages it does not remove (a run's error, a failed
/// write's message about another record): the record's key, its ids and its values, gathered
/// from its rows before they are removed. Texts shorter than four characters are left alone:
/// they would be struck from every number and word that holds them.
#[derive(Debug)]
pub struct Traces {
    key: String,
    /// The record's ids on the left and on the right side.
    ids: [std::collections::BTreeSet<String>; 2],
    /// Every text to strike, the key and ids among them.
    texts: std::collections::BTreeSet<String>,
}

/// What a struck text becomes.
const STRUCK: &str = "(erased)";

/// The tables whose rows of a record hold its values (as JSON text, `value_text`), with those
/// columns: an erasure reads them for the traces to strike before it removes the rows.
pub const VALUE_COLUMNS: [(&str, &str); 2] =
    [("reviews", "base, left_value, right_value"), ("audit", "base, left_value, right_value, value")];

/// The messages of a link that may quote a record of it (a run's error, a failed write's
/// message, the reason of a failed or invalid value's audit entry): the table, the column and
/// which of the link's rows hold one. An erasure strikes the record's traces from them.
pub const MESSAGE_COLUMNS: [(&str, &str, &str); 3] = [
    ("runs", "error", "error IS NOT NULL"),
    ("outbox", "last_error", "last_error IS NOT NULL"),
    ("audit", "reason", "event IN ('failed', 'invalid')"),
];

impl Traces {
    /// The traces of the record `key`, before its rows are read.
    pub fn new(key: &RecordKey) -> Self {
        let mut traces =
            Self { key: key.as_str().to_string(), ids: Default::default(), texts: Default::default() };
        traces.text(key.as_str());
        traces
    }

    /// The record's id on `side`.
    pub fn id(&mut self, side: Side, id: &str) {
        self.ids[usize::from(side == Side::Right)].insert(id.to_string());
        self.text(id);
    }

    /// The record's baseline row: its `left_id` and `right_id`, and its values as stored
    /// (`encode_fields`).
    pub fn baseline(&mut self, [left_id, right_id]: [Option<&str>; 2], values: &str) {
        for (side, id) in [(Side::Left, left_id), (Side::Right, right_id)] {
            if let Some(id) = id {
                self.id(side, id);
            }
        }
        self.values(values);
    }

    /// One of the record's outbox entries: the target's id of the record on `side`, if the
    /// entry has one, and its payload (see `payload`).
    pub fn outbox_entry(&mut self, side: Side, record_id: Option<&str>, payload: &str) {
        if let Some(id) = record_id {
            self.id(side, id);
        }
        self.payload(payload);
    }

    /// Every string in `json`, the JSON text a store keeps values in (a baseline's values, a
    /// review's or an audit entry's value); text that is not JSON is taken whole.
    pub fn values(&mut self, json: &str) {
        match serde_json::from_str::<serde_json::Value>(json) {
            Ok(value) => self.strings(&value, &|_| true),
            Err(_) => self.text(json),
        }
    }

    /// The values an outbox entry's payload writes and expects, and the id it copies from (the
    /// engine's versioned JSON: `value`, `raw`, `expected`, `source_id`), not its paths.
    pub fn payload(&mut self, json: &str) {
        if let Ok(value) = serde_json::from_str::<serde_json::Value>(json) {
            self.strings(&value, &|name| matches!(name, "value" | "raw" | "expected" | "source_id"));
        }
    }

    /// Whether `id`, a record a webhook of `side` names, is this record.
    pub fn names(&self, side: Side, id: &str) -> bool {
        id == self.key || self.ids[usize::from(side == Side::Right)].contains(id)
    }

    /// What a webhook of `side` that names the records `named` names once this record is
    /// struck from it, or `None` when it does not name this record (the webhook stays as it
    /// is). An empty list: the webhook named nothing else and is removed.
    pub fn unnamed<'a>(&self, side: Side, named: &'a [String]) -> Option<Vec<&'a String>> {
        let kept: Vec<&String> = named.iter().filter(|record| !self.names(side, record)).collect();
        (kept.len() < named.len()).then_some(kept)
    }

    /// `message` with every trace struck, or `None` when it holds none.
    pub fn strike(&self, message: &str) -> Option<String> {
        let mut texts: Vec<&String> =
            self.texts.iter().filter(|text| message.contains(text.as_str())).collect();
        if texts.is_empty() {
            return None;
        }
        // The longest first, so that a text inside another is not struck from it half.
        texts.sort_by_key(|text| std::cmp::Reverse(text.len()));
        let mut struck = message.to_string();
        for text in texts {
            struck = struck.replace(text.as_str(), STRUCK);
        }
        Some(struck)
    }

    fn text(&mut self, text: &str) {
        let text = text.trim();
        if text.chars().count() >= 4 {
            self.texts.insert(text.to_string());
        }
    }

    /// The strings in `value` that are, or are inside, a member named as `wanted` says (every
    /// string of an array or at the top is taken).
    fn strings(&mut self, value: &serde_json::Value, wanted: &dyn Fn(&str) -> bool) {
        match value {
            serde_json::Value::String(text) => self.text(text),
            serde_json::Value::Number(number) => self.text(&number.to_string()),
            serde_json::Value::Array(items) => {
                for item in items {
                    self.strings(item, wanted);
                }
            }
            serde_json::Value::Object(members) => {
                for (name, member) in members {
                    if wanted(name) {
                        self.strings(member, &|_| true);
                    } else if member.is_object() || member.is_array() {
                        self.strings(member, wanted);
                    }
                }
            }
            serde_json::Value::Null | serde_json::Value::Bool(_) => {}
        }
    }
}
