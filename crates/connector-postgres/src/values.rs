//! How values cross between fieldsync's raw JSON values and PostgreSQL's column types: each
//! column's `ColumnKind` (from the catalogue), the SQL that reads it as JSON, text or a
//! number, and `TextParam`, which sends a value in PostgreSQL's text format so that the
//! server parses it into whatever type the column has.
//!
//! | PostgreSQL | read as | written from |
//! |---|---|---|
//! | text, varchar, char, and types without a mapping below (uuid, enums, …) | their text | text; numbers and booleans as their text |
//! | smallint, integer, bigint | a number | a number or its text |
//! | numeric | text holding the exact decimal (`"12.50"`): a JSON number would round it | a number or text |
//! | real, double precision | a number (`"NaN"`, `"Infinity"` as text) | a number or text |
//! | boolean | `true`/`false` | a boolean, or text PostgreSQL reads as one (`"t"`, `"yes"`, `"1"`) |
//! | date | `"YYYY-MM-DD"` | ISO 8601 text |
//! | timestamp | `"YYYY-MM-DDTHH:MM:SS[.ffffff]"` | ISO 8601 text |
//! | timestamptz | RFC 3339 in UTC (`"2024-05-01T12:00:00Z"`) | ISO 8601 text, with an offset or in UTC |
//! | json, jsonb | the document | any JSON value (text is stored as a JSON string) |
//! | arrays | a JSON array (nested for several dimensions) | a JSON array, its JSON text, or an array literal |
//!
//! NULL is JSON `null` both ways.

use std::error::Error as StdError;

use bytes::BytesMut;
use fieldsync_postgres::quote_ident;
use fieldsync_postgres::tokio_postgres::types::{Format, IsNull, ToSql, Type};
use serde_json::Value as Json;

/// How the connector reads, writes and compares a column, by its type (a domain's by its base
/// type).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ColumnKind {
    /// A string type with a collation: text, varchar, char, citext.
    Text,
    /// smallint, integer, bigint.
    Integer,
    /// numeric, read as text so that no digit is lost.
    Numeric,
    /// real, double precision.
    Float,
    /// boolean.
    Boolean,
    /// date.
    Date,
    /// timestamp without time zone, taken as UTC.
    Timestamp,
    /// timestamp with time zone.
    TimestampTz,
    /// json, which has no equality of its own.
    Json,
    /// jsonb.
    Jsonb,
    /// Any array type.
    Array,
    /// Anything else (uuid, enums, intervals, …), read and compared as its text form.
    Other,
}

impl ColumnKind {
    /// The kind of a column whose base type is `type_name` in `category` (pg_type's
    /// `typname` and `typcategory`), `collatable` when the type has a collation.
    pub(crate) fn of(type_name: &str, category: &str, collatable: bool) -> ColumnKind {
        if category == "A" {
            return ColumnKind::Array;
        }
        match type_name {
            "int2" | "int4" | "int8" => ColumnKind::Integer,
            "numeric" => ColumnKind::Numeric,
            "float4" | "float8" => ColumnKind::Float,
            "bool" => ColumnKind::Boolean,
            "date" => ColumnKind::Date,
            "timestamp" => ColumnKind::Timestamp,
            "timestamptz" => ColumnKind::TimestampTz,
            "json" => ColumnKind::Json,
            "jsonb" => ColumnKind::Jsonb,
            _ if collatable && category == "S" => ColumnKind::Text,
            _ => ColumnKind::Other,
        }
    }

    /// Whether the column holds an instant the connector can take as a modification time.
    pub(crate) fn is_time(self) -> bool {
        matches!(self, ColumnKind::Timestamp | ColumnKind::TimestampTz)
    }
}

/// How a value selected by `read_expression` comes back from PostgreSQL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decode {
    /// As text.
    Text,
    /// As a `bigint`.
    Integer,
    /// As a boolean.
    Boolean,
    /// As `jsonb`.
    Json,
    /// As `jsonb` holding a `timestamptz`'s text, rewritten in UTC with a `Z`.
    Instant,
}

/// The SQL that reads `column` of this kind, and how its value comes back.
pub(crate) fn read_expression(column: &str, kind: ColumnKind) -> (String, Decode) {
    let quoted = quote_ident(column);
    match kind {
        ColumnKind::Text | ColumnKind::Numeric | ColumnKind::Other => {
            (format!("{quoted}::text"), Decode::Text)
        }
        ColumnKind::Integer => (format!("{quoted}::int8"), Decode::Integer),
        ColumnKind::Boolean => (format!("{quoted}::bool"), Decode::Boolean),
        ColumnKind::TimestampTz => (format!("to_jsonb({quoted})"), Decode::Instant),
        ColumnKind::Float
        | ColumnKind::Date
        | ColumnKind::Timestamp
        | ColumnKind::Json
        | ColumnKind::Jsonb
        | ColumnKind::Array => (format!("to_jsonb({quoted})"), Decode::Json),
    }
}

/// `"column" IS NOT DISTINCT FROM $n`, in the column's own type where it has an equality,
/// else (json and the types read as text) as what a read returns.
pub(crate) fn same_as_expected(column: &str, kind: ColumnKind, parameter: usize) -> String {
    let quoted = quote_ident(column);
    match kind {
        ColumnKind::Json => format!("{quoted}::jsonb IS NOT DISTINCT FROM ${parameter}::jsonb"),
        ColumnKind::Other => format!("{quoted}::text IS NOT DISTINCT FROM ${parameter}::text"),
        _ => format!("{quoted} IS NOT DISTINCT FROM ${parameter}"),
    }
}

/// A `timestamptz`'s JSON text (`2024-05-01T14:00:00+02:00`) as RFC 3339 in UTC
/// (`2024-05-01T12:00:00Z`); text that is no instant (`infinity`) stays as it is.
pub(crate) fn instant_in_utc(value: Json) -> Json {
    match &value {
        Json::String(text) => match text.parse::<jiff::Timestamp>() {
            Ok(instant) => Json::String(instant.to_string()),
            Err(_) => value,
        },
        _ => value,
    }
}

/// The text PostgreSQL parses into a column of `kind` for `value`; `None` for NULL.
pub(crate) fn text_for(value: &Json, kind: ColumnKind) -> Option<String> {
    match (value, kind) {
        (Json::Null, _) => None,
        (_, ColumnKind::Json | ColumnKind::Jsonb) => Some(value.to_string()),
        (Json::Array(items), ColumnKind::Array) => Some(array_literal(items)),
        (Json::String(text), ColumnKind::Array) => match serde_json::from_str::<Json>(text) {
            Ok(Json::Array(items)) => Some(array_literal(&items)),
            // Not JSON: taken as PostgreSQL's own array literal (`{a,b}`).
            _ => Some(text.clone()),
        },
        (Json::String(text), _) => Some(text.clone()),
        (Json::Bool(flag), _) => Some(flag.to_string()),
        (Json::Number(number), _) => Some(number.to_string()),
        (Json::Array(_) | Json::Object(_), _) => Some(value.to_string()),
    }
}

/// A JSON array as PostgreSQL's array literal: `{"a","b",NULL}`, nested arrays as further
/// dimensions, every element quoted (PostgreSQL reads a quoted `"7"` into an integer array
/// too) with `"` and `\` escaped.
fn array_literal(items: &[Json]) -> String {
    let mut literal = String::from("{");
    for (index, item) in items.iter().enumerate() {
        if index > 0 {
            literal.push(',');
        }
        match item {
            Json::Null => literal.push_str("NULL"),
            Json::Array(inner) => literal.push_str(&array_literal(inner)),
            Json::String(text) => push_quoted(&mut literal, text),
            other => push_quoted(&mut literal, &other.to_string()),
        }
    }
    literal.push('}');
    literal
}

/// `text` as a quoted element of an array literal.
fn push_quoted(literal: &mut String, text: &str) {
    literal.push('"');
    for char in text.chars() {
        if matches!(char, '"' | '\\') {
            literal.push('\\');
        }
        literal.push(char);
    }
    literal.push('"');
}

/// A parameter sent in PostgreSQL's text format, whatever the type PostgreSQL expects there:
/// the server parses it as it would a literal, so one form serves every column type (and a
/// value the type refuses is refused by the server, as a user's would be).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TextParam(pub(crate) Option<String>);

impl ToSql for TextParam {
    fn to_sql(&self, _type: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        match &self.0 {
            Some(text) => {
                out.extend_from_slice(text.as_bytes());
                Ok(IsNull::No)
            }
            None => Ok(IsNull::Yes),
        }
    }

    fn accepts(_type: &Type) -> bool {
        true
    }

    fn to_sql_checked(
        &self,
        type_: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        // Every type accepts text, so there is nothing to check.
        self.to_sql(type_, out)
    }

    fn encode_format(&self, _type: &Type) -> Format {
        Format::Text
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn kinds_follow_the_base_type() {
        assert_eq!(ColumnKind::of("int4", "N", false), ColumnKind::Integer);
        assert_eq!(ColumnKind::of("numeric", "N", false), ColumnKind::Numeric);
        assert_eq!(ColumnKind::of("varchar", "S", true), ColumnKind::Text);
        assert_eq!(ColumnKind::of("_text", "A", false), ColumnKind::Array);
        assert_eq!(ColumnKind::of("uuid", "U", false), ColumnKind::Other);
        assert_eq!(ColumnKind::of("timestamptz", "D", false), ColumnKind::TimestampTz);
        assert!(ColumnKind::Timestamp.is_time() && !ColumnKind::Date.is_time());
    }

    #[test]
    fn values_become_the_text_postgresql_parses() {
        assert_eq!(text_for(&Json::Null, ColumnKind::Text), None);
        assert_eq!(text_for(&json!("Zoë"), ColumnKind::Text).as_deref(), Some("Zoë"));
        assert_eq!(text_for(&json!(7), ColumnKind::Integer).as_deref(), Some("7"));
        assert_eq!(text_for(&json!(true), ColumnKind::Boolean).as_deref(), Some("true"));
        assert_eq!(text_for(&json!("12.50"), ColumnKind::Numeric).as_deref(), Some("12.50"));
        assert_eq!(text_for(&json!({"b": 1}), ColumnKind::Jsonb).as_deref(), Some(r#"{"b":1}"#));
        assert_eq!(text_for(&json!("text"), ColumnKind::Jsonb).as_deref(), Some(r#""text""#));
        assert_eq!(text_for(&json!([]), ColumnKind::Array).as_deref(), Some("{}"));
        assert_eq!(
            text_for(&json!(["a \"b\"", "c\\d", null, 7, ["x"]]), ColumnKind::Array).as_deref(),
            Some(r#"{"a \"b\"","c\\d",NULL,"7",{"x"}}"#)
        );
        assert_eq!(
            text_for(&json!(r#"["U11","JO13"]"#), ColumnKind::Array).as_deref(),
            Some(r#"{"U11","JO13"}"#)
        );
        assert_eq!(text_for(&json!("{U11,JO13}"), ColumnKind::Array).as_deref(), Some("{U11,JO13}"));
    }

    #[test]
    fn instants_read_in_utc() {
        assert_eq!(instant_in_utc(json!("2024-05-01T14:00:00+02:00")), json!("2024-05-01T12:00:00Z"));
        assert_eq!(instant_in_utc(json!("2024-05-01T12:00:00.25+00:00")), json!("2024-05-01T12:00:00.25Z"));
        assert_eq!(instant_in_utc(json!("infinity")), json!("infinity"));
        assert_eq!(instant_in_utc(Json::Null), Json::Null);
    }
}
