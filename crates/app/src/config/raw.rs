//! The configuration file as written: serde structs that mirror the TOML, with the place of
//! every value a later check may need to point at (`Spanned`). Connector tables are not here:
//! their settings belong to each connector kind and are read from the parsed document.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use toml::Spanned;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    /// `sqlite://PATH`, a bare path, or (later) `postgres://…`.
    pub state: Option<Spanned<String>>,
    /// Read separately from the parsed document, per kind; here only so that the key is
    /// known and is a table.
    #[serde(default, rename = "connectors")]
    pub _connectors: BTreeMap<String, IgnoredAny>,
    /// `[links.NAME]`.
    #[serde(default)]
    pub links: BTreeMap<Spanned<String>, Spanned<RawLink>>,
    /// `[server]`, for `fieldsync serve`.
    pub server: Option<RawServer>,
    /// `[reports]`, for `fieldsync serve`.
    pub reports: Option<Spanned<RawReports>>,
    /// `[organisations]`: the list a link with `for_each` runs for.
    pub organisations: Option<Spanned<RawOrganisations>>,
}

/// `[organisations]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawOrganisations {
    /// A CSV file, `postgres://…` or `https://…`.
    pub from: Spanned<String>,
    /// The query, for `postgres://…`.
    pub query: Option<Spanned<String>>,
    /// A bearer token, for `https://…`.
    pub token: Option<Spanned<String>>,
    /// A JSON pointer to the array, for `https://…`.
    pub records: Option<Spanned<String>>,
    /// How often `fieldsync serve` reads the list again.
    pub every: Option<Spanned<String>>,
}

/// `[reports]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawReports {
    pub smtp: Spanned<String>,
    pub from: Spanned<String>,
    pub to: Spanned<Vec<String>>,
    pub when: Option<Spanned<String>>,
    pub history_url: Option<Spanned<String>>,
}

/// `[server]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawServer {
    pub listen: Option<Spanned<String>>,
    pub max_concurrent_runs: Option<Spanned<i64>>,
    pub lease_timeout: Option<Spanned<String>>,
    #[serde(default)]
    pub tokens: Vec<Spanned<RawToken>>,
}

/// `[[server.tokens]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawToken {
    pub name: Spanned<String>,
    pub token: Spanned<String>,
    pub role: Spanned<String>,
    /// The one organisation the token may see and act on.
    pub org: Option<Spanned<String>>,
}

/// `[links.NAME]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLink {
    pub left: Spanned<String>,
    pub right: Spanned<String>,
    pub key: Spanned<RawSidePaths>,
    pub conflicts: Option<Spanned<RawStrategy>>,
    pub first_sync: Option<Spanned<RawStrategy>>,
    pub creates: Option<Spanned<String>>,
    pub deletes: Option<Spanned<RawDeletes>>,
    pub guard: Option<RawGuard>,
    pub full_scan_every: Option<Spanned<String>>,
    pub schedule: Option<Spanned<String>>,
    pub schedule_tz: Option<Spanned<String>>,
    pub every: Option<Spanned<String>>,
    pub spread: Option<Spanned<String>>,
    pub for_each: Option<Spanned<String>>,
    pub retry: Option<RawRetry>,
    pub audit: Option<Spanned<RawAudit>>,
    #[serde(default)]
    pub fields: Vec<Spanned<RawField>>,
}

/// `audit = { values = "hashed", keep = "400d" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAudit {
    pub values: Option<Spanned<String>>,
    pub keep: Option<Spanned<String>>,
}

/// `{ left = "…", right = "…" }`: a path on each side.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSidePaths {
    pub left: Spanned<String>,
    pub right: Spanned<String>,
}

/// `conflicts` and `first_sync`: `{ strategy = "…", … }`. Which of the other keys belong
/// depends on the strategy, so they are all optional here and checked later.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStrategy {
    pub strategy: Spanned<String>,
    pub grace: Option<Spanned<String>>,
    pub tie: Option<Spanned<String>>,
    pub side: Option<Spanned<String>>,
}

/// `deletes`: a policy name, or `{ soft = { field = "…", value = … } }`.
#[derive(Debug)]
pub(crate) enum RawDeletes {
    Policy(String),
    Soft(RawSoftDelete),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDeletesTable {
    soft: RawSoftDelete,
}

/// `soft = { field = "status", value = "inactive" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSoftDelete {
    pub field: Spanned<String>,
    pub value: Spanned<serde_json::Value>,
}

impl<'de> Deserialize<'de> for RawDeletes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DeletesVisitor;

        impl<'de> Visitor<'de> for DeletesVisitor {
            type Value = RawDeletes;

            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str(
                    "\"propagate\", \"ignore\", \"review\" or { soft = { field = \"…\", value = \"…\" } }",
                )
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<RawDeletes, E> {
                Ok(RawDeletes::Policy(value.to_string()))
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawDeletes, A::Error> {
                let table = RawDeletesTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(RawDeletes::Soft(table.soft))
            }
        }

        deserializer.deserialize_any(DeletesVisitor)
    }
}

/// `guard = { max_delete = "10%", max_change = 500 }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGuard {
    pub max_delete: Option<Spanned<RawLimit>>,
    pub max_change: Option<Spanned<RawLimit>>,
}

/// A guard limit as written: `"10%"`, `25`, or something wrong (`0.1`) to be named later.
#[derive(Debug)]
pub(crate) enum RawLimit {
    Text(String),
    Integer(i64),
    Float(f64),
}

impl<'de> Deserialize<'de> for RawLimit {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct LimitVisitor;

        impl Visitor<'_> for LimitVisitor {
            type Value = RawLimit;

            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a share such as \"10%\" or a number of records such as 25")
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<RawLimit, E> {
                Ok(RawLimit::Text(value.to_string()))
            }

            fn visit_i64<E: de::Error>(self, value: i64) -> Result<RawLimit, E> {
                Ok(RawLimit::Integer(value))
            }

            fn visit_u64<E: de::Error>(self, value: u64) -> Result<RawLimit, E> {
                Ok(RawLimit::Integer(i64::try_from(value).unwrap_or(i64::MAX)))
            }

            fn visit_f64<E: de::Error>(self, value: f64) -> Result<RawLimit, E> {
                Ok(RawLimit::Float(value))
            }
        }

        deserializer.deserialize_any(LimitVisitor)
    }
}

/// `retry = { attempts = 8, initial = "1s", max = "1h", wait_in_run = "10s" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRetry {
    pub attempts: Option<Spanned<i64>>,
    pub initial: Option<Spanned<String>>,
    pub max: Option<Spanned<String>>,
    pub wait_in_run: Option<Spanned<String>>,
}

/// `[[links.NAME.fields]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawField {
    pub name: Spanned<String>,
    #[serde(rename = "type")]
    pub field_type: Option<Spanned<String>>,
    pub left: Spanned<String>,
    pub right: Spanned<String>,
    pub direction: Option<Spanned<String>>,
    pub region: Option<Spanned<String>>,
    pub empty_is_null: Option<bool>,
    /// `values = { right = { true = "Ja", false = "Nee" } }`: a side's own spelling of values.
    pub values: Option<Spanned<RawSpellings>>,
    /// `invalid = "hold" | "copy"`.
    pub invalid: Option<Spanned<String>>,
}

/// A field's `values`: per side, canonical value → that side's spelling.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSpellings {
    pub left: Option<std::collections::BTreeMap<String, serde_json::Value>>,
    pub right: Option<std::collections::BTreeMap<String, serde_json::Value>>,
}

/// A connector's `webhook = { … }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWebhook {
    pub secret: Spanned<String>,
    pub signature: Spanned<RawSignature>,
    pub tolerance: Option<Spanned<String>>,
    pub rate: Option<Spanned<String>>,
    pub records: Option<Spanned<String>>,
    pub max_body: Option<Spanned<i64>>,
}

/// `signature = "standard"` or `{ header = "…", prefix = "…", encoding = "hex", timestamp = "…" }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawSignature {
    Scheme(String),
    Header(RawHeaderSignature),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHeaderSignature {
    pub header: String,
    #[serde(default)]
    pub prefix: String,
    pub encoding: Option<String>,
    pub timestamp: Option<String>,
}
