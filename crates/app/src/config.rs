//! The configuration: one TOML file read into raw serde structs (`raw`), then checked and
//! resolved (`validate`) into a `Config` whose links are the engine's `LinkSpec`s. Every
//! problem is a `ConfigError` naming file, line and column; nothing but the file is touched.

mod env;
mod error;
mod organisations;
mod raw;
mod service;
mod validate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fieldsync_engine::{LinkSpec, SidePair};
use fieldsync_model::Side;

pub use crate::registry::{CONNECTOR_KINDS, ConnectorKind, StateLocation};
pub use error::{ConfigError, Location, Problem};
pub use fieldsync_connector::Secret;
pub use organisations::{DEFAULT_REREAD, Organisation, OrganisationSource, Organisations};
pub use service::{
    ApiToken, DEFAULT_LISTEN, DEFAULT_MAX_CONCURRENT_RUNS, Rate, ReportWhen, ReportsConfig, Role, Schedule,
    ServerConfig, Signature, SignatureEncoding, WebhookConfig,
};
pub(crate) use validate::instance_name;

/// The overlap of a connector's incremental reads when its table does not say.
pub const DEFAULT_OVERLAP: Duration = Duration::from_secs(60);

/// The file name of the state store when the configuration has no `state`, next to the
/// configuration file.
pub const DEFAULT_STATE_FILE: &str = "fieldsync.db";

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// The configuration file, as given.
    pub path: PathBuf,
    /// Where the state store lives.
    pub state: StateLocation,
    /// The connectors by name.
    pub connectors: BTreeMap<String, ConnectorConfig>,
    /// The links by name.
    pub links: BTreeMap<String, LinkConfig>,
    /// The `[server]` table of `fieldsync serve`, with its defaults when there is none.
    pub server: ServerConfig,
    /// The `[reports]` table: an e-mail after runs of `fieldsync serve`, if any.
    pub reports: Option<ReportsConfig>,
    /// The `[organisations]` table with the list as read, if there is one.
    pub organisations: Option<Organisations>,
}

impl Config {
    /// The side of `link` that `side` names (`left`, `right`, or the connector's name), the
    /// connector's name and its webhook settings, when the link has that side and it takes
    /// webhooks (`POST /hooks/{link}/{side}`).
    pub fn webhook_of(&self, link: &str, side: &str) -> Option<(Side, &str, &WebhookConfig)> {
        let names = &self.links.get(link)?.connectors;
        let side = side_named(names, side)?;
        let connector = names.get(side);
        let webhook = self.connectors.get(connector)?.webhook.as_ref()?;
        Some((side, connector, webhook))
    }

    /// The directory of the configuration file, against which relative paths are resolved
    /// (empty when the file was given without a directory: the current one).
    pub fn base_dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new(""))
    }
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
    /// How `fieldsync serve` takes this system's webhooks, if it does (`webhook`).
    pub webhook: Option<WebhookConfig>,
}

/// One `[links.NAME]` table, resolved.
#[derive(Clone, Debug)]
pub struct LinkConfig {
    /// The link as the engine runs it.
    pub spec: LinkSpec,
    /// The names of its left and right connectors.
    pub connectors: SidePair<String>,
    /// When `fieldsync serve` runs it (`schedule` or `every`); `None`: only when asked.
    pub schedule: Option<Schedule>,
    /// Its place in the window of `spread` (zero without one), the same in every process: its
    /// slots fall this long after the schedule's, so that links on one schedule (and an
    /// organisation's instances of one link) do not all start at once.
    pub slot_offset: Duration,
    /// The organisation this instance of a `for_each` link runs for (its name in the
    /// configuration is `LINK/ID`), if it is one.
    pub organisation: Option<Organisation>,
    /// Where `[reports]` sends the reports of its runs: `to` with an organisation's own
    /// addresses (`${org.NAME}`) read for it; empty without `[reports]`.
    pub report_to: Vec<String>,
    /// How long its history is kept (`audit.keep`): older audit entries, runs, finished outbox
    /// entries and closed reviews are deleted by `fieldsync purge` and, once a day, by
    /// `fieldsync serve`. `None`: kept for ever.
    pub keep: Option<Duration>,
}

/// The side of a link between the connectors `names` that `text` names: `left`, `right`, or
/// one of the connectors' names.
pub(crate) fn side_named(names: &SidePair<String>, text: &str) -> Option<Side> {
    match text {
        "left" => Some(Side::Left),
        "right" => Some(Side::Right),
        name if name == names.left || Some(name) == definition(&names.left) => Some(Side::Left),
        name if name == names.right || Some(name) == definition(&names.right) => Some(Side::Right),
        _ => None,
    }
}

impl LinkConfig {
    /// Whether this link is organisation `id`'s instance of a `for_each` link.
    pub fn is_of(&self, id: &str) -> bool {
        self.organisation.as_ref().is_some_and(|organisation| organisation.id == id)
    }
}

/// The name of the connector or link an organisation's instance `NAME/ID` was made from.
pub(crate) fn definition(instance: &str) -> Option<&str> {
    instance.split_once('/').map(|(name, _)| name)
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
