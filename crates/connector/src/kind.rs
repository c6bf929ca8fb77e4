//! `ConnectorSettings`: how a connector kind declares itself to the configuration — its
//! `kind` name, its settings (deserialised, then checked with `SettingError`s that carry
//! their key path), the field paths it can hold, its date formats, and how it is opened.
//! The app wires each kind with one line; nothing outside a connector's crate names its settings.

use std::fmt;
use std::path::Path;

use serde::de::DeserializeOwned;

use crate::{Connector, ConnectorError, SettingError};

/// The settings of one connector kind, as the user writes them in a `[connectors.NAME]`
/// table (everything but `kind` and `overlap`, which the app reads for every kind).
pub trait ConnectorSettings: DeserializeOwned + Clone + fmt::Debug + PartialEq {
    /// The kind's name as written in `kind = "…"`.
    const KIND: &'static str;

    /// The connector these settings open.
    type Connector: Connector;

    /// Checks every setting without touching any file or system.
    ///
    /// # Errors
    ///
    /// The first setting that is wrong, with its key path.
    fn check(&self) -> Result<(), SettingError>;

    /// Checks a field path (a column, a header name, a JSON path) for these settings.
    ///
    /// # Errors
    ///
    /// Says why `path` cannot name a value of this connector.
    fn check_path(&self, path: &str) -> Result<(), PathError>;

    /// The date formats the connector declares, for the date fields' normalisers.
    fn date_formats(&self) -> &[String];

    /// The file the connector reads, as configured; none (the default) for a system
    /// reached over the network.
    fn file(&self) -> Option<&Path> {
        None
    }

    /// What opens the feed of change notices this connector's system sends, when its
    /// settings ask for one (none by default): `fieldsync serve` listens to it.
    fn change_feed(&self) -> Option<crate::FeedOpener> {
        None
    }

    /// Opens the connector, with relative file paths resolved against `base_dir` (the
    /// configuration file's directory).
    ///
    /// # Errors
    ///
    /// Fails as the connector's own `open` does: settings that are wrong, a missing file.
    fn open(&self, base_dir: &Path) -> Result<Self::Connector, ConnectorError>;
}

/// A field path that names nothing a connector can hold.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PathError(pub String);
