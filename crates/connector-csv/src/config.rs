//! `CsvConfig`: what a user writes to point the csv connector at a file, checked by
//! `CsvConfig::check` (of `ConnectorSettings`) without touching the file.

use std::path::{Path, PathBuf};

use fieldsync_connector::{ConnectorError, ConnectorSettings, PathError, SettingError};
use serde::Deserialize;

use crate::CsvConnector;

/// The csv connector's configuration: a CSV file with a header row, one record per line,
/// whose key column is the connector's record id and whose header names are the paths.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvConfig {
    /// The CSV file; it must exist (the connector never creates one).
    pub path: PathBuf,
    /// The header name of the key column, whose value is the connector's record id.
    pub key: String,
    /// The field delimiter, one ASCII character; `,` when not given.
    pub delimiter: Option<char>,
    /// The date formats of the file's date columns, for the app's normalisers; the
    /// connector itself only keeps them.
    pub date_formats: Option<Vec<String>>,
}

impl CsvConfig {
    /// A configuration for the file at `path` keyed by the column `key`, with every optional
    /// setting left out.
    pub fn new(path: impl Into<PathBuf>, key: &str) -> Self {
        Self { path: path.into(), key: key.to_string(), delimiter: None, date_formats: None }
    }

    /// The delimiter as the byte the CSV reader and writer take.
    ///
    /// # Errors
    ///
    /// Says why the configured delimiter cannot be used.
    pub fn delimiter_byte(&self) -> Result<u8, SettingError> {
        let delimiter = self.delimiter.unwrap_or(',');
        match u8::try_from(delimiter) {
            Ok(byte) if byte.is_ascii() && !matches!(byte, b'"' | b'\n' | b'\r') => Ok(byte),
            _ => Err(SettingError::new(
                ["delimiter"],
                format!(
                    "{delimiter:?} is not usable (one ASCII character other than a quote or a line break)"
                ),
            )),
        }
    }
}

impl ConnectorSettings for CsvConfig {
    const KIND: &'static str = "csv";
    type Connector = CsvConnector;

    /// Checks the key column's name and the delimiter, without touching the file.
    ///
    /// # Errors
    ///
    /// Says what is wrong: an empty key column name, or a delimiter that is not a single
    /// ASCII character other than a quote or a line break.
    fn check(&self) -> Result<(), SettingError> {
        if self.key.is_empty() {
            return Err(SettingError::new(["key"], "an empty column name"));
        }
        self.delimiter_byte().map(|_| ())
    }

    /// A csv path is a header name: anything but empty.
    fn check_path(&self, path: &str) -> Result<(), PathError> {
        if path.trim().is_empty() {
            Err(PathError("a csv path is a header name and cannot be empty".to_string()))
        } else {
            Ok(())
        }
    }

    /// The configured date formats, none unless configured.
    fn date_formats(&self) -> &[String] {
        self.date_formats.as_deref().unwrap_or_default()
    }

    fn file(&self) -> Option<&Path> {
        Some(&self.path)
    }

    fn open(&self, base_dir: &Path) -> Result<CsvConnector, ConnectorError> {
        let mut config = self.clone();
        config.path = base_dir.join(&self.path);
        CsvConnector::open(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delimiters() {
        let mut config = CsvConfig::new("members.csv", "number");
        assert_eq!(config.delimiter_byte(), Ok(b','));
        config.delimiter = Some(';');
        assert_eq!(config.delimiter_byte(), Ok(b';'));
        config.delimiter = Some('\t');
        assert_eq!(config.check(), Ok(()));
        for bad in ['"', '\n', 'é', '→'] {
            config.delimiter = Some(bad);
            assert!(config.check().is_err(), "{bad:?}");
        }
        assert!(CsvConfig::new("members.csv", "").check().is_err());
    }

    #[test]
    fn deserialises() {
        let config: CsvConfig = serde_json::from_str(
            r#"{"path": "m.csv", "key": "number", "delimiter": ";", "date_formats": ["%d.%m.%Y"]}"#,
        )
        .expect("a valid config");
        assert_eq!(config.delimiter, Some(';'));
        assert_eq!(config.date_formats(), ["%d.%m.%Y".to_string()]);
        assert!(
            serde_json::from_str::<CsvConfig>(r#"{"path": "m.csv", "key": "n", "separator": ";"}"#).is_err()
        );
    }
}
