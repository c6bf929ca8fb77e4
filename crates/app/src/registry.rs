//! The connector registry: the one list of connector kinds this build can run. From it
//! `connector_kinds!` makes `ConnectorKind` (a kind with its settings), `CONNECTOR_KINDS`,
//! `AnyConnector` (dispatched by `match`, without boxing) and `open_connector`.
//! Adding a kind is its crate, whose settings implement `ConnectorSettings`, plus one line here.

use std::path::Path;

use fieldsync_connector::{ConnectorError, ConnectorSettings, PathError, SettingError};

use crate::config::ConnectorConfig;

/// Makes the registry's types from the list of kinds: `Variant(SettingsType)`, each with its
/// doc line. Every item below is generated once per kind, so no other code names a kind.
macro_rules! connector_kinds {
    ($($(#[doc = $doc:literal])* $variant:ident($settings:ty),)+) => {
        /// A connector kind with its own settings. The settings are boxed: they differ
        /// widely in size and a configuration holds few of them.
        #[derive(Clone, Debug, PartialEq)]
        pub enum ConnectorKind {
            $($(#[doc = $doc])* $variant(Box<$settings>),)+
        }

        /// The connector kinds this build can run, in the order errors list them.
        pub const CONNECTOR_KINDS: &[&str] = &[$(<$settings as ConnectorSettings>::KIND,)+];

        impl ConnectorKind {
            /// The kind's name as written in `kind`.
            pub fn name(&self) -> &'static str {
                match self {
                    $(ConnectorKind::$variant(_) => <$settings as ConnectorSettings>::KIND,)+
                }
            }

            /// Reads the settings of the kind named `kind` from `settings`; `None` when this
            /// build has no such kind.
            pub(crate) fn deserialize<'de, D: serde::Deserializer<'de>>(
                kind: &str,
                settings: D,
            ) -> Option<Result<Self, D::Error>> {
                $(
                    if kind == <$settings as ConnectorSettings>::KIND {
                        let settings = <$settings as serde::Deserialize>::deserialize(settings);
                        return Some(settings.map(|settings| ConnectorKind::$variant(Box::new(settings))));
                    }
                )+
                None
            }

            /// The date formats the connector declares, for the date fields' normalisers.
            pub fn date_formats(&self) -> &[String] {
                match self {
                    $(ConnectorKind::$variant(settings) => settings.date_formats(),)+
                }
            }

            /// The file the connector reads, as configured; none for an API.
            pub fn file(&self) -> Option<&Path> {
                match self {
                    $(ConnectorKind::$variant(settings) => settings.file(),)+
                }
            }

            /// Checks a path (a column, a header name) for this kind of connector.
            ///
            /// # Errors
            ///
            /// Says why `path` cannot name a value of this kind of connector.
            pub fn validate_path(&self, path: &str) -> Result<(), PathError> {
                match self {
                    $(ConnectorKind::$variant(settings) => settings.check_path(path),)+
                }
            }

            /// Checks the kind's own settings, without touching any file.
            ///
            /// # Errors
            ///
            /// The first setting that is wrong, with its key path.
            pub fn validate(&self) -> Result<(), SettingError> {
                match self {
                    $(ConnectorKind::$variant(settings) => settings.check(),)+
                }
            }
        }

        /// Any connector this build can run.
        // A run holds two connectors, so their size does not matter; the architecture asks
        // for dispatch without boxing.
        #[allow(clippy::large_enum_variant)]
        #[derive(Debug)]
        pub enum AnyConnector {
            $($(#[doc = $doc])* $variant(<$settings as ConnectorSettings>::Connector),)+
        }

        fieldsync_connector::dispatch_connector!(impl[] Connector for AnyConnector { $($variant),+ });

        /// Opens the connector `config` describes, with relative file paths resolved against
        /// `base_dir` (the configuration file's directory, `Config::base_dir`).
        ///
        /// # Errors
        ///
        /// Fails as the connector's own `open` does: a missing file, a file that cannot be read.
        pub fn open_connector(
            config: &ConnectorConfig,
            base_dir: &Path,
        ) -> Result<AnyConnector, ConnectorError> {
            match &config.kind {
                $(ConnectorKind::$variant(settings) => settings.open(base_dir).map(AnyConnector::$variant),)+
            }
        }
    };
}

// The kinds, one line each: the variant and the settings type of the kind's crate.
connector_kinds! {
    /// `kind = "sqlite"`: a table of an SQLite file.
    Sqlite(fieldsync_connector_sqlite::SqliteConfig),
    /// `kind = "csv"`: a CSV file.
    Csv(fieldsync_connector_csv::CsvConfig),
    /// `kind = "rest"`: a JSON API.
    Rest(fieldsync_connector_rest::RestConfig),
    /// `kind = "browser"`: a web admin, through headless Chromium.
    Browser(fieldsync_connector_browser::BrowserConfig),
}
