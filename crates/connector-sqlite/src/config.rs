//! `SqliteConfig`: what a user writes to point the sqlite connector at a table, checked by
//! `SqliteConfig::check` (of `ConnectorSettings`) without touching the file.

use std::path::{Path, PathBuf};

use fieldsync_connector::{ConnectorError, ConnectorSettings, PathError, SettingError, check_table_columns};
use serde::Deserialize;

use crate::SqliteConnector;

/// How many records one page of a read holds unless `batch_size` says otherwise: large
/// enough that handing a page between threads costs little next to reading it (a full
/// scan of a million records takes a fifth less time than with pages of 500), small enough
/// that the pages in flight hold a few megabytes.
pub const DEFAULT_BATCH_SIZE: usize = 5_000;

/// How the `modified` column stores instants.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModifiedFormat {
    /// Text `YYYY-MM-DD HH:MM:SS[.SSS]` in UTC, as SQLite's `datetime('now')` writes it.
    #[default]
    Sqlite,
    /// RFC 3339 text with an offset (`2024-05-01T12:00:00Z`, `2024-05-01T14:00:00+02:00`).
    Rfc3339,
    /// Integer seconds since the Unix epoch.
    Unix,
    /// Integer milliseconds since the Unix epoch.
    UnixMs,
}

/// The sqlite connector's configuration: a table of an SQLite file whose key column is the
/// connector's record id, and whose other columns are the paths of the record's fields.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqliteConfig {
    /// The database file; it must exist (the connector never creates one).
    pub path: PathBuf,
    /// The table holding the records.
    pub table: String,
    /// The key column, whose value is the connector's record id.
    pub key: String,
    /// A column holding each record's modification time; it enables incremental reads, and
    /// every write sets it to the current time.
    pub modified: Option<String>,
    /// How `modified` stores instants; `sqlite` when not given.
    pub modified_format: Option<ModifiedFormat>,
    /// A soft-delete column: a record is deleted when it holds anything but NULL, 0 or ''.
    /// A delete then sets it to the current time instead of removing the record.
    pub deleted: Option<String>,
    /// The date formats of the table's date columns, for the app's normalisers; the
    /// connector itself only keeps them.
    pub date_formats: Option<Vec<String>>,
    /// How many records one page of a read holds; 500 when not given.
    pub batch_size: Option<usize>,
}

impl SqliteConfig {
    /// A configuration for `table` of the file at `path` keyed by the column `key`, with
    /// every optional setting left out.
    pub fn new(path: impl Into<PathBuf>, table: &str, key: &str) -> Self {
        Self {
            path: path.into(),
            table: table.to_string(),
            key: key.to_string(),
            modified: None,
            modified_format: None,
            deleted: None,
            date_formats: None,
            batch_size: None,
        }
    }

    /// Checks a field path, which for this connector is a column name.
    ///
    /// # Errors
    ///
    /// Says why `path` is not a plain identifier (letters, digits and underscores, not
    /// starting with a digit).
    pub fn validate_path(path: &str) -> Result<(), PathError> {
        check_identifier(path).map_err(|problem| PathError(format!("field path: {problem}")))
    }

    /// The format of the `modified` column, `sqlite` unless configured.
    pub fn modified_format(&self) -> ModifiedFormat {
        self.modified_format.unwrap_or_default()
    }

    /// The number of records per page, 500 unless configured.
    pub fn batch_size(&self) -> usize {
        self.batch_size.unwrap_or(DEFAULT_BATCH_SIZE)
    }
}

impl ConnectorSettings for SqliteConfig {
    const KIND: &'static str = "sqlite";
    type Connector = SqliteConnector;

    /// Checks the table and column names and the batch size, without touching the file.
    ///
    /// # Errors
    ///
    /// Names the first setting that is not a plain identifier (letters, digits and
    /// underscores, not starting with a digit), a `modified_format` without a `modified`
    /// column, a soft-delete column that is also the key or modified column, or a zero
    /// batch size.
    fn check(&self) -> Result<(), SettingError> {
        let mut names = vec![("table", &self.table), ("key", &self.key)];
        names.extend(self.modified.iter().map(|column| ("modified", column)));
        names.extend(self.deleted.iter().map(|column| ("deleted", column)));
        for (setting, name) in names {
            check_identifier(name).map_err(|problem| SettingError::new([setting], problem))?;
        }
        if self.modified.is_none() && self.modified_format.is_some() {
            return Err(SettingError::new(["modified_format"], "is set but there is no `modified` column"));
        }
        // SQLite's names are the same column in any case.
        check_table_columns(
            &self.key,
            self.modified.as_deref(),
            self.deleted.as_deref(),
            self.batch_size,
            |a, b| a.eq_ignore_ascii_case(b),
        )
    }

    fn check_path(&self, path: &str) -> Result<(), PathError> {
        Self::validate_path(path)
    }

    /// The configured date formats, none unless configured.
    fn date_formats(&self) -> &[String] {
        self.date_formats.as_deref().unwrap_or_default()
    }

    fn file(&self) -> Option<&Path> {
        Some(&self.path)
    }

    fn open(&self, base_dir: &Path) -> Result<SqliteConnector, ConnectorError> {
        let mut config = self.clone();
        config.path = base_dir.join(&self.path);
        SqliteConnector::open(config)
    }
}

/// Accepts letters, digits and underscores, not starting with a digit. Together with double
/// quoting in every statement this keeps names from ever being read as SQL.
fn check_identifier(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return Err("an empty name".into());
    };
    if first.is_ascii_digit() {
        return Err(format!("`{}` starts with a digit", name.escape_debug()));
    }
    let plain = |char: char| char == '_' || char.is_alphabetic() || char.is_ascii_digit();
    if !plain(first) || !chars.all(plain) {
        return Err(format!(
            "`{}` is not a plain name (letters, digits and underscores only)",
            name.escape_debug()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers() {
        for good in ["members", "_x", "Mitglied_Nr2", "straße"] {
            assert_eq!(check_identifier(good), Ok(()), "{good}");
        }
        for bad in ["", "2members", "members; drop table x", "a\"b", "a b", "a-b", "a.b", "ab\0"] {
            assert!(check_identifier(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn deserialises_with_defaults() {
        let config: SqliteConfig =
            serde_json::from_str(r#"{"path": "m.db", "table": "members", "key": "id"}"#)
                .expect("valid config");
        assert_eq!(config, SqliteConfig::new("m.db", "members", "id"));
        assert_eq!(config.batch_size(), DEFAULT_BATCH_SIZE);
        assert_eq!(config.modified_format(), ModifiedFormat::Sqlite);
        let config: SqliteConfig = serde_json::from_str(
            r#"{"path": "m.db", "table": "t", "key": "id", "modified": "m", "modified_format": "unix_ms"}"#,
        )
        .expect("valid config");
        assert_eq!(config.modified_format(), ModifiedFormat::UnixMs);
        let unknown = serde_json::from_str::<SqliteConfig>(
            r#"{"path": "m.db", "table": "t", "key": "id", "tabel": "x"}"#,
        );
        assert!(unknown.is_err());
    }

    #[test]
    fn validation() {
        let mut config = SqliteConfig::new("m.db", "members; drop table x", "id");
        assert!(config.check().is_err());
        config.table = "members".into();
        assert_eq!(config.check(), Ok(()));
        config.modified_format = Some(ModifiedFormat::Unix);
        assert!(config.check().is_err());
        config.modified = Some("changed_at".into());
        assert_eq!(config.check(), Ok(()));
        config.deleted = Some("ID".into());
        assert!(config.check().is_err());
        config.deleted = None;
        config.batch_size = Some(0);
        assert!(config.check().is_err());
        assert!(SqliteConfig::validate_path("email").is_ok());
        assert!(SqliteConfig::validate_path("email\"; --").is_err());
    }
}
