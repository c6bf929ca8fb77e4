//! Field types and their normalisers: the rules that make `" Jan@Club.NL "` and
//! `"jan@club.nl"` the same value, and `"06 12345678"` the same number as `"+31612345678"`.
//!
//! A `Normaliser` is built once per field and side (the date formats belong to a side's
//! connector, a value map to a side's spelling) and turns a raw JSON value read from a system
//! into a canonical `Value`, or into a `NormaliseError` that names what could not be read. It
//! never guesses: a value no rule reads is held, or copied verbatim where the field says so.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::Value;

/// The type of a tracked field, which chooses its normaliser.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    /// Text, trimmed.
    #[default]
    Text,
    /// An e-mail address, trimmed and lower-cased.
    Email,
    /// A phone number in E.164 (`+31612345678`), read with a default region.
    Phone,
    /// A calendar date in ISO 8601 (`2024-03-01`), read from the formats a connector declares.
    Date,
    /// A boolean, read from true/false, 1/0, yes/no, on/off, checked/unchecked.
    Bool,
    /// A whole number.
    Int,
    /// A decimal number (a fee, a weight), compared by its value: `12.50`, `12.5` and `12,50`
    /// are the same, kept as `12.5`, so that a column that writes its own scale (`numeric(6,2)`)
    /// reads back as what was written.
    Decimal,
    /// A JSON document, compared in compact form with sorted object keys.
    Json,
}

impl FieldType {
    /// Every field type, in the order the configuration reference lists them.
    pub const ALL: [FieldType; 8] = [
        FieldType::Text,
        FieldType::Email,
        FieldType::Phone,
        FieldType::Date,
        FieldType::Bool,
        FieldType::Int,
        FieldType::Decimal,
        FieldType::Json,
    ];

    /// The name used in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            FieldType::Text => "text",
            FieldType::Email => "email",
            FieldType::Phone => "phone",
            FieldType::Date => "date",
            FieldType::Bool => "bool",
            FieldType::Int => "int",
            FieldType::Decimal => "decimal",
            FieldType::Json => "json",
        }
    }
}

impl fmt::Display for FieldType {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// A raw value that its field's type cannot read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{raw} is not a valid {field_type}: {reason}")]
pub struct NormaliseError {
    /// The field's type.
    pub field_type: FieldType,
    /// The raw value as JSON text, for the report.
    pub raw: String,
    /// Why it could not be read.
    pub reason: String,
}

/// The version of the normalising code: bump it whenever any normaliser's output for some
/// input changes, so that raw digests taken by an older fieldsync (see `digest_raw`) are no
/// longer trusted.
pub const NORMALISER_VERSION: u32 = 1;

/// Turns raw values of one field on one side into canonical `Value`s and back.
#[derive(Clone, Debug)]
pub struct Normaliser {
    field_type: FieldType,
    region: Option<phonenumber::country::Id>,
    date_formats: Vec<String>,
    empty_is_null: bool,
    invalid: Invalid,
    /// The side's own spelling of some values, when it has one.
    spellings: Option<Box<Spellings>>,
}

/// What a field does with a value that no rule of its type reads (a phone number the
/// numbering plan does not know, a date in no declared format).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Invalid {
    /// Leave the field alone on both sides and report it, until someone corrects the value.
    #[default]
    Hold,
    /// Propagate the value as it is written, compared as trimmed text, with a warning.
    Copy,
}

/// A side's own spelling of values (`Ja`/`Nee` for a boolean, `M`/`V` for a gender): each
/// spelling is read as its canonical value, and that value is written in the spelling.
#[derive(Clone, Debug, PartialEq)]
struct Spellings {
    /// `(canonical value, the side's spelling)`, in the order declared.
    pairs: Vec<(Value, serde_json::Value)>,
}

/// How a raw value was read.
#[derive(Clone, Debug, PartialEq)]
pub enum Reading {
    /// Read by the field's rules.
    Valid(Value),
    /// No rule reads it; copied verbatim as trimmed text (`Invalid::Copy`), with why.
    Copied(Value, NormaliseError),
    /// No rule reads it, and the field holds it (`Invalid::Hold`).
    Invalid(NormaliseError),
}

/// The text by which a raw value is matched against a side's spellings and copied verbatim:
/// a string trimmed, anything else as its JSON text.
fn raw_text(raw: &serde_json::Value) -> String {
    match raw {
        serde_json::Value::String(text) => text.trim().to_string(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// An unknown phone region code in the configuration.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown phone region {0:?}; use a two-letter country code such as \"NL\"")]
pub struct UnknownRegion(pub String);

impl Normaliser {
    /// A fingerprint of these normalisers, in order, and of the normalising code's version:
    /// equal fingerprints normalise equal raw values to equal `Value`s.
    pub fn fingerprint<'a>(normalisers: impl IntoIterator<Item = &'a Normaliser>) -> u64 {
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        hasher.update(&NORMALISER_VERSION.to_le_bytes());
        for normaliser in normalisers {
            let described = format!("{normaliser:?}");
            hasher.update(&(described.len() as u64).to_le_bytes());
            hasher.update(described.as_bytes());
        }
        hasher.digest()
    }

    /// A normaliser for `field_type` with no region, ISO dates only and `null == ""`.
    pub fn new(field_type: FieldType) -> Self {
        Self {
            field_type,
            region: None,
            date_formats: Vec::new(),
            empty_is_null: true,
            invalid: Invalid::Hold,
            spellings: None,
        }
    }

    /// Sets what the field does with a value no rule of its type reads.
    pub fn with_invalid(mut self, invalid: Invalid) -> Self {
        self.invalid = invalid;
        self
    }

    /// Declares the side's own spelling of values: `(canonical, spelling)` pairs such as
    /// `("true", "Ja")`. Each canonical text is read by this field's type.
    ///
    /// # Errors
    ///
    /// Fails when a canonical text is not a value of the field's type, or when two canonical
    /// values share one spelling.
    pub fn with_spellings(
        mut self,
        pairs: impl IntoIterator<Item = (String, serde_json::Value)>,
    ) -> Result<Self, NormaliseError> {
        let mut read = Vec::new();
        for (canonical, spelling) in pairs {
            let value = self.normalise_by_type(&serde_json::Value::String(canonical.clone()))?;
            let text = raw_text(&spelling).to_lowercase();
            if read
                .iter()
                .any(|(_, known): &(Value, serde_json::Value)| raw_text(known).to_lowercase() == text)
            {
                return Err(self.error(&spelling, "this spelling is given to two values"));
            }
            read.push((value, spelling));
        }
        self.spellings = (!read.is_empty()).then(|| Box::new(Spellings { pairs: read }));
        Ok(self)
    }

    /// Sets the default region for phone numbers written without a country code.
    ///
    /// # Errors
    ///
    /// Fails when `region` is not a known two-letter country code.
    pub fn with_region(mut self, region: &str) -> Result<Self, NormaliseError> {
        let id =
            phonenumber::country::Id::from_str(&region.to_ascii_uppercase()).map_err(|_| NormaliseError {
                field_type: self.field_type,
                raw: format!("{region:?}"),
                reason: UnknownRegion(region.to_string()).to_string(),
            })?;
        self.region = Some(id);
        Ok(self)
    }

    /// Adds `strftime`-style date formats (`%d-%m-%Y`) that a side's connector stores; the
    /// first one is also the format written back to that side.
    pub fn with_date_formats(mut self, formats: impl IntoIterator<Item = String>) -> Self {
        self.date_formats.extend(formats);
        self
    }

    /// Whether the empty string is the same value as null (the default) or a value of its own.
    pub fn with_empty_is_null(mut self, empty_is_null: bool) -> Self {
        self.empty_is_null = empty_is_null;
        self
    }

    /// The field's type.
    pub fn field_type(&self) -> FieldType {
        self.field_type
    }

    /// Reads a raw value into its canonical form.
    ///
    /// # Errors
    ///
    /// Fails when the raw value is not of the field's type (`"abc"` for an int, a date in
    /// no declared format, a phone number that cannot be parsed).
    pub fn normalise(&self, raw: &serde_json::Value) -> Result<Value, NormaliseError> {
        match self.read(raw) {
            Reading::Valid(value) | Reading::Copied(value, _) => Ok(value),
            Reading::Invalid(error) => Err(error),
        }
    }

    /// Reads a raw value: through the side's spellings first, then the field's rules; a value
    /// no rule reads is copied verbatim or held, as the field says.
    pub fn read(&self, raw: &serde_json::Value) -> Reading {
        if let Some(spellings) = &self.spellings {
            let text = raw_text(raw);
            if let Some((value, _)) =
                spellings.pairs.iter().find(|(_, spelling)| raw_text(spelling).eq_ignore_ascii_case(&text))
            {
                return Reading::Valid(value.clone());
            }
        }
        match self.normalise_by_type(raw) {
            Ok(value) => Reading::Valid(value),
            Err(error) => match self.invalid {
                Invalid::Hold => Reading::Invalid(error),
                Invalid::Copy => Reading::Copied(Value::Text(raw_text(raw).into()), error),
            },
        }
    }

    fn normalise_by_type(&self, raw: &serde_json::Value) -> Result<Value, NormaliseError> {
        use serde_json::Value as Json;
        let text = match raw {
            Json::Null => return Ok(Value::Null),
            Json::String(text) => text.as_str(),
            Json::Bool(flag) => {
                return match self.field_type {
                    FieldType::Bool => Ok(Value::Bool(*flag)),
                    FieldType::Json => Ok(Value::Text(raw.to_string().into())),
                    FieldType::Int => Ok(Value::Int(i64::from(*flag))),
                    _ => Ok(Value::Text(flag.to_string().into())),
                };
            }
            Json::Number(number) => {
                return match self.field_type {
                    FieldType::Bool => match number.as_i64() {
                        Some(0) => Ok(Value::Bool(false)),
                        Some(1) => Ok(Value::Bool(true)),
                        _ => Err(self.error(raw, "only 0 and 1 are booleans")),
                    },
                    FieldType::Int => match number.as_i64() {
                        Some(whole) => Ok(Value::Int(whole)),
                        None => match number.as_f64() {
                            Some(float) if float.fract() == 0.0 && float.abs() < 9.0e15 => {
                                Ok(Value::Int(float as i64))
                            }
                            _ => Err(self.error(raw, "not a whole number")),
                        },
                    },
                    FieldType::Json => Ok(Value::Text(raw.to_string().into())),
                    _ => self.normalise_text(&number.to_string(), raw),
                };
            }
            Json::Array(_) | Json::Object(_) => {
                return match self.field_type {
                    FieldType::Json => Ok(Value::Text(canonical_json(raw).into())),
                    _ => Err(self.error(raw, "a list or object where a single value belongs")),
                };
            }
        };
        self.normalise_text(text, raw)
    }

    fn normalise_text(&self, text: &str, raw: &serde_json::Value) -> Result<Value, NormaliseError> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Ok(if self.empty_is_null { Value::Null } else { Value::Text("".into()) });
        }
        match self.field_type {
            FieldType::Text => Ok(Value::Text(trimmed.into())),
            FieldType::Email => Ok(Value::Text(trimmed.to_lowercase().into())),
            FieldType::Phone => self.normalise_phone(trimmed, raw),
            FieldType::Date => self.normalise_date(trimmed, raw),
            FieldType::Bool => match trimmed.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" | "checked" | "y" | "t" => Ok(Value::Bool(true)),
                "false" | "0" | "no" | "off" | "unchecked" | "n" | "f" => Ok(Value::Bool(false)),
                _ => Err(self.error(raw, "expected true/false, 1/0, yes/no, on/off or checked")),
            },
            FieldType::Int => {
                trimmed.parse::<i64>().map(Value::Int).map_err(|_| self.error(raw, "not a whole number"))
            }
            FieldType::Decimal => {
                canonical_decimal(trimmed).map(|decimal| Value::Text(decimal.into())).ok_or_else(|| {
                    self.error(raw, "not a decimal number (digits, one . or , and an optional sign)")
                })
            }
            FieldType::Json => match serde_json::from_str::<serde_json::Value>(trimmed) {
                Ok(document) => Ok(Value::Text(canonical_json(&document).into())),
                Err(error) => Err(self.error(raw, &format!("not JSON ({error})"))),
            },
        }
    }

    fn normalise_phone(&self, text: &str, raw: &serde_json::Value) -> Result<Value, NormaliseError> {
        // A leading "00" is the international prefix in most of Europe; the parser only knows
        // "+" without a region, so make it one.
        let candidate = match text.strip_prefix("00") {
            Some(rest) if self.region.is_none() || !text.starts_with("000") => format!("+{rest}"),
            _ => text.to_string(),
        };
        match crate::phone::fast_e164(self.region, &candidate) {
            Some(Ok(e164)) => return Ok(Value::Text(e164.into())),
            Some(Err(reason)) => return Err(self.error(raw, &reason)),
            None => {}
        }
        crate::phone::library_e164(self.region, &candidate).map(|e164| Value::Text(e164.into())).map_err(
            |reason| {
                let hint = if self.region.is_none() && !candidate.starts_with('+') {
                    " (no country code and no `region` configured for this field)"
                } else {
                    ""
                };
                self.error(raw, &format!("{reason}{hint}"))
            },
        )
    }

    fn normalise_date(&self, text: &str, raw: &serde_json::Value) -> Result<Value, NormaliseError> {
        if let Ok(date) = text.parse::<jiff::civil::Date>() {
            return Ok(Value::Text(date.to_string().into()));
        }
        // A full timestamp (`2024-03-01T00:00:00Z`) or civil date-time keeps only its date.
        if let Ok(datetime) = text.parse::<jiff::civil::DateTime>() {
            return Ok(Value::Text(datetime.date().to_string().into()));
        }
        for format in &self.date_formats {
            if let Ok(date) = jiff::civil::Date::strptime(format, text) {
                return Ok(Value::Text(date.to_string().into()));
            }
        }
        let declared = if self.date_formats.is_empty() {
            "ISO 8601 (the connector declares no other `date_formats`)".to_string()
        } else {
            format!("ISO 8601 or {}", self.date_formats.join(", "))
        };
        Err(self.error(raw, &format!("expected a date in {declared}")))
    }

    /// The raw form in which this side stores a canonical value: dates in the side's first
    /// declared format, JSON documents parsed, everything else as its JSON counterpart.
    pub fn to_raw(&self, value: &Value) -> serde_json::Value {
        if let Some((_, spelling)) = self
            .spellings
            .as_ref()
            .and_then(|spellings| spellings.pairs.iter().find(|(known, _)| known == value))
        {
            return spelling.clone();
        }
        match (self.field_type, value) {
            (FieldType::Date, Value::Text(text)) => {
                match (self.date_formats.first(), text.parse::<jiff::civil::Date>()) {
                    (Some(format), Ok(date)) => serde_json::Value::String(date.strftime(format).to_string()),
                    _ => value.to_json(),
                }
            }
            (FieldType::Json, Value::Text(text)) => {
                serde_json::from_str(text).unwrap_or_else(|_| value.to_json())
            }
            _ => value.to_json(),
        }
    }

    fn error(&self, raw: &serde_json::Value, reason: &str) -> NormaliseError {
        NormaliseError { field_type: self.field_type, raw: raw.to_string(), reason: reason.to_string() }
    }
}

/// A decimal number in its shortest form: an optional `-`, the whole part without leading
/// zeros, and the fraction without trailing zeros (`+012,500` is `12.5`, `-0.00` is `0`). A
/// comma is read as the decimal point when there is no point. `None` when `text` is not a
/// decimal number (an exponent, a thousands separator, letters).
fn canonical_decimal(text: &str) -> Option<String> {
    let (negative, unsigned) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let point = if unsigned.contains('.') { '.' } else { ',' };
    let (whole, fraction) = unsigned.split_once(point).unwrap_or((unsigned, ""));
    let digits = |part: &str| part.bytes().all(|byte| byte.is_ascii_digit());
    if (whole.is_empty() && fraction.is_empty()) || !digits(whole) || !digits(fraction) {
        return None;
    }
    let whole = match whole.trim_start_matches('0') {
        "" => "0",
        whole => whole,
    };
    let fraction = fraction.trim_end_matches('0');
    let zero = whole == "0" && fraction.is_empty();
    let mut decimal = String::with_capacity(whole.len() + fraction.len() + 2);
    if negative && !zero {
        decimal.push('-');
    }
    decimal.push_str(whole);
    if !fraction.is_empty() {
        decimal.push('.');
        decimal.push_str(fraction);
    }
    Some(decimal)
}

/// Compact JSON with object keys sorted, so that two documents that differ only in key order
/// or whitespace are the same value.
fn canonical_json(document: &serde_json::Value) -> String {
    // serde_json's map is ordered by key unless `preserve_order` is on, which this workspace
    // never enables; a round trip through `Value` therefore sorts keys.
    let sorted: serde_json::Value = document.clone();
    sorted.to_string()
}

#[cfg(test)]
mod tests {
    use expect_test::{Expect, expect};
    use serde_json::json;

    use super::*;

    /// Normalises each raw value and renders `raw => value` or `raw => error`, one per line.
    fn check(normaliser: &Normaliser, raws: &[serde_json::Value], expect: Expect) {
        let rendered: Vec<String> = raws
            .iter()
            .map(|raw| match normaliser.normalise(raw) {
                Ok(value) => format!("{raw} => {value:?}"),
                Err(error) => format!("{raw} => error: {error}"),
            })
            .collect();
        expect.assert_eq(&(rendered.join("\n") + "\n"));
    }

    #[test]
    fn a_sides_spellings_read_as_their_values_and_are_written_back() {
        let yes_no = Normaliser::new(FieldType::Bool)
            .with_spellings([("true".to_string(), json!("Ja")), ("false".to_string(), json!("Nee"))])
            .unwrap();
        check(
            &yes_no,
            &[
                json!("Ja"),
                json!(" nee "),
                json!("JA"),
                json!(true),
                json!("0"),
                json!("Misschien"),
                json!(null),
            ],
            expect![[r#"
                "Ja" => Bool(true)
                " nee " => Bool(false)
                "JA" => Bool(true)
                true => Bool(true)
                "0" => Bool(false)
                "Misschien" => error: "Misschien" is not a valid bool: expected true/false, 1/0, yes/no, on/off or checked
                null => Null
            "#]],
        );
        assert_eq!(yes_no.to_raw(&Value::Bool(true)), json!("Ja"));
        assert_eq!(yes_no.to_raw(&Value::Bool(false)), json!("Nee"));
        assert_eq!(yes_no.to_raw(&Value::Null), json!(null));
        // A select's option values against the labels another side shows.
        let gender = Normaliser::new(FieldType::Text)
            .with_spellings([("M".to_string(), json!(1)), ("V".to_string(), json!(2))])
            .unwrap();
        check(
            &gender,
            &[json!(1), json!("2"), json!("X")],
            expect![[r#"
            1 => Text("M")
            "2" => Text("V")
            "X" => Text("X")
        "#]],
        );
        assert_eq!(gender.to_raw(&Value::from("V")), json!(2));
        // A canonical value the type cannot read, or one spelling for two values, is refused.
        let error =
            Normaliser::new(FieldType::Bool).with_spellings([("wel".to_string(), json!("Ja"))]).unwrap_err();
        assert!(error.to_string().contains("not a valid bool"), "{error}");
        let error = Normaliser::new(FieldType::Bool)
            .with_spellings([("true".to_string(), json!("J")), ("false".to_string(), json!("j"))])
            .unwrap_err();
        assert!(error.to_string().contains("given to two values"), "{error}");
    }

    #[test]
    fn an_unreadable_value_is_held_or_copied_as_trimmed_text() {
        let held = Normaliser::new(FieldType::Phone).with_region("NL").unwrap();
        let copied = held.clone().with_invalid(Invalid::Copy);
        for raw in [json!(" 06-1234 "), json!("+31 6 1234 5678")] {
            let reading = (held.read(&raw), copied.read(&raw));
            match reading {
                (Reading::Valid(held), Reading::Valid(copied)) => assert_eq!(held, copied),
                (Reading::Invalid(held), Reading::Copied(value, copied)) => {
                    assert_eq!(held, copied);
                    assert_eq!(value, Value::from("06-1234"));
                    assert_eq!(copied.raw, "\" 06-1234 \"");
                }
                other => panic!("{raw}: {other:?}"),
            }
        }
        assert_eq!(copied.normalise(&json!("06-1234 ")), Ok(Value::from("06-1234")));
        assert_eq!(copied.to_raw(&Value::from("06-1234")), json!("06-1234"));
        let date = Normaliser::new(FieldType::Date)
            .with_date_formats(["%d-%m-%Y".to_string()])
            .with_invalid(Invalid::Copy);
        assert_eq!(date.normalise(&json!("volgende week")), Ok(Value::from("volgende week")));
        assert_eq!(date.to_raw(&Value::from("volgende week")), json!("volgende week"));
        assert_eq!(date.to_raw(&Value::from("2026-01-06")), json!("06-01-2026"));
    }

    #[test]
    fn text_trims_and_empty_is_null() {
        check(
            &Normaliser::new(FieldType::Text),
            &[json!("  Jan "), json!(""), json!("   "), json!(null), json!(42), json!(true)],
            expect![[r#"
                "  Jan " => Text("Jan")
                "" => Null
                "   " => Null
                null => Null
                42 => Text("42")
                true => Text("true")
            "#]],
        );
        check(
            &Normaliser::new(FieldType::Text).with_empty_is_null(false),
            &[json!(""), json!(null)],
            expect![[r#"
                "" => Text("")
                null => Null
            "#]],
        );
    }

    #[test]
    fn email_lower_cases() {
        check(
            &Normaliser::new(FieldType::Email),
            &[json!(" Jan.Jansen@Club.NL "), json!("not-an-address")],
            expect![[r#"
                " Jan.Jansen@Club.NL " => Text("jan.jansen@club.nl")
                "not-an-address" => Text("not-an-address")
            "#]],
        );
    }

    #[test]
    fn phone_becomes_e164_with_default_region() {
        let dutch = Normaliser::new(FieldType::Phone).with_region("nl").unwrap();
        check(
            &dutch,
            &[
                json!("06 12345678"),
                json!("+31 6 1234 5678"),
                json!("0031612345678"),
                json!("020-1234567"),
                json!("+44 20 7946 0958"),
                json!("12"),
                json!("call me"),
            ],
            expect![[r#"
                "06 12345678" => Text("+31612345678")
                "+31 6 1234 5678" => Text("+31612345678")
                "0031612345678" => Text("+31612345678")
                "020-1234567" => Text("+31201234567")
                "+44 20 7946 0958" => Text("+442079460958")
                "12" => error: "12" is not a valid phone: not a valid number for its country
                "call me" => error: "call me" is not a valid phone: not a number
            "#]],
        );
        check(
            &Normaliser::new(FieldType::Phone),
            &[json!("06 12345678")],
            expect![[r#"
                "06 12345678" => error: "06 12345678" is not a valid phone: invalid country code (no country code and no `region` configured for this field)
            "#]],
        );
        assert!(Normaliser::new(FieldType::Phone).with_region("XX").is_err());
    }

    #[test]
    fn date_reads_declared_formats_and_writes_the_first() {
        let normaliser = Normaliser::new(FieldType::Date)
            .with_date_formats(["%d-%m-%Y".to_string(), "%d/%m/%Y".to_string()]);
        check(
            &normaliser,
            &[
                json!("2024-03-01"),
                json!("01-03-2024"),
                json!("1/3/2024"),
                json!("2024-03-01T10:00:00"),
                json!("March 1st"),
                json!("2024-02-30"),
            ],
            expect![[r#"
                "2024-03-01" => Text("2024-03-01")
                "01-03-2024" => Text("2024-03-01")
                "1/3/2024" => Text("2024-03-01")
                "2024-03-01T10:00:00" => Text("2024-03-01")
                "March 1st" => error: "March 1st" is not a valid date: expected a date in ISO 8601 or %d-%m-%Y, %d/%m/%Y
                "2024-02-30" => error: "2024-02-30" is not a valid date: expected a date in ISO 8601 or %d-%m-%Y, %d/%m/%Y
            "#]],
        );
        assert_eq!(normaliser.to_raw(&Value::from("2024-03-01")), json!("01-03-2024"));
        assert_eq!(Normaliser::new(FieldType::Date).to_raw(&Value::from("2024-03-01")), json!("2024-03-01"));
    }

    #[test]
    fn bool_reads_every_spelling() {
        check(
            &Normaliser::new(FieldType::Bool),
            &[
                json!(true),
                json!("Yes"),
                json!("on"),
                json!("checked"),
                json!(1),
                json!("0"),
                json!("no"),
                json!("OFF"),
                json!(""),
                json!(2),
                json!("maybe"),
            ],
            expect![[r#"
                true => Bool(true)
                "Yes" => Bool(true)
                "on" => Bool(true)
                "checked" => Bool(true)
                1 => Bool(true)
                "0" => Bool(false)
                "no" => Bool(false)
                "OFF" => Bool(false)
                "" => Null
                2 => error: 2 is not a valid bool: only 0 and 1 are booleans
                "maybe" => error: "maybe" is not a valid bool: expected true/false, 1/0, yes/no, on/off or checked
            "#]],
        );
    }

    #[test]
    fn decimals_compare_by_value_whatever_their_scale_or_decimal_comma() {
        check(
            &Normaliser::new(FieldType::Decimal),
            &[
                json!("190.00"),
                json!("190"),
                json!(" 12,50 "),
                json!(12.5),
                json!("+007.250"),
                json!("-0.00"),
                json!(".5"),
                json!("-3"),
                json!("1.234,56"),
                json!("1e3"),
                json!("€ 12"),
            ],
            expect![[r#"
                "190.00" => Text("190")
                "190" => Text("190")
                " 12,50 " => Text("12.5")
                12.5 => Text("12.5")
                "+007.250" => Text("7.25")
                "-0.00" => Text("0")
                ".5" => Text("0.5")
                "-3" => Text("-3")
                "1.234,56" => error: "1.234,56" is not a valid decimal: not a decimal number (digits, one . or , and an optional sign)
                "1e3" => error: "1e3" is not a valid decimal: not a decimal number (digits, one . or , and an optional sign)
                "€ 12" => error: "€ 12" is not a valid decimal: not a decimal number (digits, one . or , and an optional sign)
            "#]],
        );
    }

    #[test]
    fn int_and_json() {
        check(
            &Normaliser::new(FieldType::Int),
            &[json!(" 42 "), json!(42), json!(42.0), json!(4.5), json!("4x")],
            expect![[r#"
                " 42 " => Int(42)
                42 => Int(42)
                42.0 => Int(42)
                4.5 => error: 4.5 is not a valid int: not a whole number
                "4x" => error: "4x" is not a valid int: not a whole number
            "#]],
        );
        check(
            &Normaliser::new(FieldType::Json),
            &[json!({"b": 1, "a": [1, 2]}), json!("{ \"b\":1, \"a\":[1,2] }"), json!("{oops")],
            expect![[r#"
                {"a":[1,2],"b":1} => Text("{\"a\":[1,2],\"b\":1}")
                "{ \"b\":1, \"a\":[1,2] }" => Text("{\"a\":[1,2],\"b\":1}")
                "{oops" => error: "{oops" is not a valid json: not JSON (key must be a string at line 1 column 2)
            "#]],
        );
    }
}
