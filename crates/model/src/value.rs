//! `Value`, the canonical form of one field after normalisation, and the record digest the
//! engine compares against the baseline to skip unchanged records quickly.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A normalised field value. Two values are the same value exactly when they are equal.
///
/// Dates, e-mail addresses, phone numbers and JSON documents are all held as their canonical
/// text (ISO 8601, lower case, E.164, compact JSON with sorted keys); the field's type says
/// how to write them back to a system.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Default)]
#[serde(untagged)]
pub enum Value {
    /// No value. The empty string normalises to this unless a field says otherwise.
    #[default]
    Null,
    /// A boolean.
    Bool(bool),
    /// A whole number.
    Int(i64),
    /// Canonical text.
    Text(Box<str>),
}

/// Reads the JSON form `Serialize` writes (`null`, a boolean, an integer or a string) directly:
/// an untagged derive would buffer each value and try every variant in turn, and baselines and
/// outbox payloads hold millions of values.
impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;

        impl serde::de::Visitor<'_> for Visitor {
            type Value = Value;

            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("null, a boolean, an integer or a string")
            }

            fn visit_unit<E: serde::de::Error>(self) -> Result<Value, E> {
                Ok(Value::Null)
            }

            fn visit_none<E: serde::de::Error>(self) -> Result<Value, E> {
                Ok(Value::Null)
            }

            fn visit_bool<E: serde::de::Error>(self, flag: bool) -> Result<Value, E> {
                Ok(Value::Bool(flag))
            }

            fn visit_i64<E: serde::de::Error>(self, number: i64) -> Result<Value, E> {
                Ok(Value::Int(number))
            }

            fn visit_u64<E: serde::de::Error>(self, number: u64) -> Result<Value, E> {
                i64::try_from(number)
                    .map(Value::Int)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Unsigned(number), &self))
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Value, E> {
                Ok(Value::Text(text.into()))
            }

            fn visit_string<E: serde::de::Error>(self, text: String) -> Result<Value, E> {
                Ok(Value::Text(text.into_boxed_str()))
            }
        }

        deserializer.deserialize_any(Visitor)
    }
}

impl Value {
    /// Whether this is `Value::Null`.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The value as a JSON value, the form connectors write.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Bool(flag) => serde_json::Value::Bool(*flag),
            Value::Int(number) => serde_json::Value::from(*number),
            Value::Text(text) => serde_json::Value::String(text.to_string()),
        }
    }

    /// Feeds a type-tagged, length-prefixed encoding of the value to `hasher`, so that no two
    /// different values (nor `Null` and `""`) can produce the same byte stream.
    fn feed(&self, hasher: &mut xxhash_rust::xxh3::Xxh3) {
        match self {
            Value::Null => hasher.update(&[0]),
            Value::Bool(flag) => hasher.update(&[1, u8::from(*flag)]),
            Value::Int(number) => {
                hasher.update(&[2]);
                hasher.update(&number.to_le_bytes());
            }
            Value::Text(text) => {
                hasher.update(&[3]);
                hasher.update(&(text.len() as u64).to_le_bytes());
                hasher.update(text.as_bytes());
            }
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => formatter.write_str("(empty)"),
            Value::Bool(flag) => write!(formatter, "{flag}"),
            Value::Int(number) => write!(formatter, "{number}"),
            Value::Text(text) => write!(formatter, "{text:?}"),
        }
    }
}

impl From<&str> for Value {
    fn from(text: &str) -> Self {
        Value::Text(text.into())
    }
}

/// A 128-bit digest of a record's tracked field values, in field order. Held as bytes, so that
/// it packs tightly: a full scan keeps three per baseline in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RecordDigest([u8; 16]);

impl RecordDigest {
    /// The digest of a 128-bit hash.
    pub fn new(hash: u128) -> Self {
        Self(hash.to_le_bytes())
    }

    /// The digest as 16 little-endian bytes, the form the state store keeps.
    pub fn to_bytes(self) -> [u8; 16] {
        self.0
    }

    /// Reads a digest from the bytes `to_bytes` wrote; `None` when the length is wrong.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Some(Self(bytes.try_into().ok()?))
    }
}

/// Digests a record's field values in order; `None` stands for a field with no known value
/// (a baseline field nobody has agreed on yet) and never digests like any `Value`. Stable
/// across builds and platforms: it is persisted in baselines.
pub fn digest_values<'a>(values: impl IntoIterator<Item = Option<&'a Value>>) -> RecordDigest {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    for value in values {
        match value {
            Some(value) => value.feed(&mut hasher),
            None => hasher.update(&[0xff]),
        }
    }
    RecordDigest::new(hasher.digest128())
}

/// Digests a record's raw values as one side stores them, bound to `basis` — the baseline
/// digest they were found to normalise to — and to `normalisers`, a fingerprint of the
/// normalisers that read them (see `Normaliser::fingerprint`). When the same raw values come
/// back under the same baseline and normalisers, they normalise to that baseline again, so a
/// run can skip normalising them: this is the scan's fast path. Any change of the baseline,
/// the configuration or the normalising code changes the digest, so a stale one never matches.
pub fn digest_raw(basis: RecordDigest, normalisers: u64, raw: &[serde_json::Value]) -> RecordDigest {
    // Encoded into one buffer and hashed at once: the same digest as feeding a streaming
    // hasher piece by piece, at a fraction of the cost for a few short values.
    thread_local! {
        static BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUFFER.with_borrow_mut(|buffer| {
        buffer.clear();
        buffer.extend_from_slice(&basis.to_bytes());
        buffer.extend_from_slice(&normalisers.to_le_bytes());
        for value in raw {
            encode_raw(value, buffer);
        }
        RecordDigest::new(xxhash_rust::xxh3::xxh3_128(buffer))
    })
}

/// A type-tagged, length-prefixed encoding of a raw JSON value.
fn encode_raw(value: &serde_json::Value, buffer: &mut Vec<u8>) {
    let text = |tag: u8, text: &[u8], buffer: &mut Vec<u8>| {
        buffer.push(tag);
        buffer.extend_from_slice(&(text.len() as u64).to_le_bytes());
        buffer.extend_from_slice(text);
    };
    match value {
        serde_json::Value::Null => buffer.push(0),
        serde_json::Value::Bool(flag) => buffer.extend_from_slice(&[1, u8::from(*flag)]),
        serde_json::Value::Number(number) => {
            // Formatted on the stack: a number's text never needs the heap.
            let mut digits = [0u8; 40];
            let mut cursor = std::io::Cursor::new(&mut digits[..]);
            let length = match std::io::Write::write_fmt(&mut cursor, format_args!("{number}")) {
                Ok(()) => usize::try_from(cursor.position()).unwrap_or(0),
                Err(_) => 0,
            };
            if length > 0 {
                text(2, &digits[..length], buffer);
            } else {
                text(2, number.to_string().as_bytes(), buffer);
            }
        }
        serde_json::Value::String(string) => text(3, string.as_bytes(), buffer),
        serde_json::Value::Array(items) => {
            buffer.push(4);
            buffer.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for item in items {
                encode_raw(item, buffer);
            }
        }
        serde_json::Value::Object(members) => {
            buffer.push(5);
            buffer.extend_from_slice(&(members.len() as u64).to_le_bytes());
            for (name, member) in members {
                buffer.extend_from_slice(&(name.len() as u64).to_le_bytes());
                buffer.extend_from_slice(name.as_bytes());
                encode_raw(member, buffer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_tells_null_from_empty_text_and_order_matters() {
        let digest = |values: &[Value]| digest_values(values.iter().map(Some));
        let null = digest(&[Value::Null]);
        let empty = digest(&[Value::Text("".into())]);
        assert_ne!(null, empty);
        assert_ne!(null, digest_values([None]));
        let ab = digest(&[Value::from("a"), Value::from("b")]);
        let ba = digest(&[Value::from("b"), Value::from("a")]);
        assert_ne!(ab, ba);
        // Concatenation must not collide: ["ab", ""] versus ["a", "b"].
        let joined = digest(&[Value::from("ab"), Value::from("")]);
        assert_ne!(ab, joined);
    }

    #[test]
    fn raw_digest_tells_values_basis_and_normalisers_apart() {
        let raw = [serde_json::json!("06-12345678"), serde_json::Value::Null, serde_json::json!(7)];
        let basis = digest_values([Some(&Value::from("+31612345678"))]);
        let digest = digest_raw(basis, 1, &raw);
        assert_eq!(digest, digest_raw(basis, 1, &raw));
        assert_ne!(digest, digest_raw(basis, 2, &raw));
        assert_ne!(digest, digest_raw(digest_values([None]), 1, &raw));
        let empty = [serde_json::json!("06-12345678"), serde_json::json!(""), serde_json::json!(7)];
        assert_ne!(digest, digest_raw(basis, 1, &empty));
        let text = [serde_json::json!("06-12345678"), serde_json::Value::Null, serde_json::json!("7")];
        assert_ne!(digest, digest_raw(basis, 1, &text));
    }

    #[test]
    fn digests_stay_what_stored_baselines_hold() {
        // Baselines persist both digests: a change of encoding or hash would turn every
        // stored one stale (a full normalising scan, and a rewrite of every raw digest).
        let values = [Value::Null, Value::Bool(true), Value::Int(-7), Value::from("Ann")];
        let basis = digest_values(values.iter().map(Some));
        assert_eq!(
            format!("{basis:?}"),
            "RecordDigest([175, 240, 21, 200, 197, 58, 159, 159, 50, 171, 199, 226, 104, 75, 227, 15])"
        );
        let raw = [
            serde_json::Value::Null,
            serde_json::json!(false),
            serde_json::json!(12.5),
            serde_json::json!("06-12345678"),
            serde_json::json!(["a", 1]),
            serde_json::json!({"type": "email", "value": "a@b.nl"}),
        ];
        assert_eq!(
            format!("{:?}", digest_raw(basis, 42, &raw)),
            "RecordDigest([181, 28, 36, 50, 118, 167, 115, 250, 14, 82, 41, 170, 216, 47, 13, 31])"
        );
    }

    #[test]
    fn digest_round_trips_through_bytes() {
        let digest = digest_values([Some(&Value::Int(7)), Some(&Value::Bool(true))]);
        assert_eq!(RecordDigest::from_bytes(&digest.to_bytes()), Some(digest));
        assert_eq!(RecordDigest::from_bytes(&[1, 2, 3]), None);
    }

    #[test]
    fn value_serialises_as_plain_json() {
        let values = vec![Value::Null, Value::Bool(false), Value::Int(3), Value::from("x")];
        let text = serde_json::to_string(&values).unwrap();
        assert_eq!(text, r#"[null,false,3,"x"]"#);
        let back: Vec<Value> = serde_json::from_str(&text).unwrap();
        assert_eq!(back, values);
    }
}
