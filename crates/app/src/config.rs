//! The configuration: one TOML file read into raw serde structs (`raw`), then checked and
//! resolved (`validate`) into a `Config` whose links are the engine's `LinkSpec`s. Every
//! problem is a `ConfigError` naming file, line and column; nothing but the file is touched.

mod duration;
mod env;
mod error;
mod raw;
mod validate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fieldsync_connector_browser::BrowserConfig;
use fieldsync_connector_csv::CsvConfig;
use fieldsync_connector_rest::RestConfig;
use fieldsync_connector_sqlite::SqliteConfig;
use fieldsync_engine::{LinkSpec, SidePair};

pub use error::{ConfigError, Location, Problem};

/// The overlap of a connector's incremental reads when its table does not say.
pub const DEFAULT_OVERLAP: Duration = Duration::from_secs(60);

/// The file name of the state store when the configuration has no `state`, next to the
/// configuration file.
pub const DEFAULT_STATE_FILE: &str = "fieldsync.db";

/// The connector kinds this build can run, in the order errors list them.
pub const CONNECTOR_KINDS: [&str; 4] = ["sqlite", "csv", "rest", "browser"];

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// The configuration file, as given.
    pub path: PathBuf,
    /// Where the state store lives.
    pub state: StatePath,
    /// The connectors by name.
    pub connectors: BTreeMap<String, ConnectorConfig>,
    /// The links by name.
    pub links: BTreeMap<String, LinkConfig>,
}

impl Config {
    /// The directory of the configuration file, against which relative paths are resolved
    /// (empty when the file was given without a directory: the current one).
    pub fn base_dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new(""))
    }
}

/// Where the state store lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StatePath {
    /// An SQLite file, already resolved against the configuration file's directory.
    Sqlite(PathBuf),
}

/// One `[connectors.NAME]` table.
#[derive(Clone, Debug, PartialEq)]
pub struct ConnectorConfig {
    /// Its name in the configuration.
    pub name: String,
    /// How far before the cursor its incremental reads start (`overlap`, one minute unless
    /// configured).
    pub overlap: Duration,
    /// The kind and its own settings. File paths in them are as written (after `${NAME}`
    /// substitution); `open_connector` resolves relative ones.
    pub kind: ConnectorKind,
}

/// A connector kind with its own settings.
#[derive(Clone, Debug, PartialEq)]
pub enum ConnectorKind {
    /// `kind = "sqlite"`.
    Sqlite(SqliteConfig),
    /// `kind = "csv"`.
    Csv(CsvConfig),
    /// `kind = "rest"`.
    Rest(Box<RestConfig>),
    /// `kind = "browser"`.
    Browser(Box<BrowserConfig>),
}

impl ConnectorKind {
    /// The kind's name as written in `kind`.
    pub fn name(&self) -> &'static str {
        match self {
            ConnectorKind::Sqlite(_) => "sqlite",
            ConnectorKind::Csv(_) => "csv",
            ConnectorKind::Rest(_) => "rest",
            ConnectorKind::Browser(_) => "browser",
        }
    }

    /// The date formats the connector declares, for the date fields' normalisers.
    pub fn date_formats(&self) -> &[String] {
        match self {
            ConnectorKind::Sqlite(config) => config.date_formats(),
            ConnectorKind::Csv(config) => config.date_formats(),
            ConnectorKind::Rest(config) => config.date_formats(),
            ConnectorKind::Browser(config) => config.date_formats(),
        }
    }

    /// The file the connector reads, as configured; none for an API.
    pub fn file(&self) -> Option<&Path> {
        match self {
            ConnectorKind::Sqlite(config) => Some(&config.path),
            ConnectorKind::Csv(config) => Some(&config.path),
            ConnectorKind::Rest(_) | ConnectorKind::Browser(_) => None,
        }
    }

    /// Checks a path (a column, a header name) for this kind of connector.
    ///
    /// # Errors
    ///
    /// Says why `path` cannot name a value of this kind of connector.
    pub fn validate_path(&self, path: &str) -> Result<(), String> {
        match self {
            ConnectorKind::Sqlite(_) => SqliteConfig::validate_path(path),
            ConnectorKind::Rest(_) => RestConfig::validate_path(path),
            ConnectorKind::Browser(config) => config.validate_path(path),
            ConnectorKind::Csv(_) => {
                if path.trim().is_empty() {
                    Err("a csv path is a header name and cannot be empty".to_string())
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Checks the kind's own settings, without touching any file.
    ///
    /// # Errors
    ///
    /// Says which setting is wrong.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            ConnectorKind::Sqlite(config) => config.validate(),
            ConnectorKind::Csv(config) => config.validate(),
            ConnectorKind::Rest(config) => config.settings().map(|_| ()),
            ConnectorKind::Browser(config) => config.validate(),
        }
    }
}

/// One `[links.NAME]` table, resolved.
#[derive(Clone, Debug)]
pub struct LinkConfig {
    /// The link as the engine runs it.
    pub spec: LinkSpec,
    /// The names of its left and right connectors.
    pub connectors: SidePair<String>,
    /// When `fieldsync serve` runs it: a cron expression of five fields, if any.
    pub schedule: Option<String>,
}

/// Reads and validates the configuration file at `path`. Reading the file is the only I/O;
/// `${NAME}` values come from the process environment.
///
/// # Errors
///
/// Fails when the file cannot be read, is not TOML, or holds invalid settings; the error
/// names file, line and column of each problem.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
    parse(&text, path)
}

/// Reads and validates the configuration file at `path` for a command that opens no
/// connector (status, history, reviews, the outbox): a connector whose settings name an
/// environment variable that is not set is left out of `Config::connectors` instead of being
/// an error, so reading the state store needs no secrets. Everything else is checked as by
/// `load`.
///
/// # Errors
///
/// As `load`, except for unset variables in connector settings.
pub fn load_offline(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
    validate::validate(&text, path, &|name| std::env::var(name).ok(), true)
}

/// Validates a configuration held in `text`, as if read from `path` (which names it in
/// errors and anchors relative paths); `${NAME}` values come from the process environment.
///
/// # Errors
///
/// Fails when `text` is not TOML or holds invalid settings; the error names file, line and
/// column of each problem.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    parse_with_env(text, path, &|name| std::env::var(name).ok())
}

/// Like `parse`, with `${NAME}` values from `env` instead of the process environment.
///
/// # Errors
///
/// As `parse`; a variable that `env` does not know is an error naming it and where it is
/// used, never its value.
pub fn parse_with_env(
    text: &str,
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    validate::validate(text, path, env, false)
}
