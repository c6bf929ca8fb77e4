//! The registry: the one list of connector kinds and the one list of state store kinds this
//! build can run. `connector_kinds!` makes `ConnectorKind`, `CONNECTOR_KINDS`, `AnyConnector`
//! and `open_connector`; `store_kinds!` makes `StateLocation`, `AnyStore` and `open_store`.
//! Adding a kind of either is its crate plus one line here.

use std::fmt;
use std::path::Path;

use fieldsync_connector::{ConnectorError, ConnectorSettings, PathError, SettingError};
use fieldsync_store::{LocationError, StoreError, StoreLocation};

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

            /// What opens the connector's feed of change notices, when its settings ask for one.
            pub fn change_feed(&self) -> Option<fieldsync_connector::FeedOpener> {
                match self {
                    $(ConnectorKind::$variant(settings) => settings.change_feed(),)+
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
    /// `kind = "postgres"`: a table of a PostgreSQL database.
    Postgres(fieldsync_connector_postgres::PostgresConfig),
    /// `kind = "csv"`: a CSV file.
    Csv(fieldsync_connector_csv::CsvConfig),
    /// `kind = "rest"`: a JSON API.
    Rest(fieldsync_connector_rest::RestConfig),
    /// `kind = "browser"`: a web admin, through headless Chromium.
    Browser(fieldsync_connector_browser::BrowserConfig),
    /// `kind = "couchdb"`: documents of one kind in a CouchDB database.
    Couchdb(fieldsync_connector_couchdb::CouchConfig),
}

/// Makes the store registry's types from the list of store kinds: `Variant(LocationType)`,
/// each with its doc line. The first kind is the default: a `state` written without a scheme
/// (a bare path) is one of it.
macro_rules! store_kinds {
    (
        $(#[doc = $default_doc:literal])* $default:ident($default_location:ty),
        $($(#[doc = $doc:literal])* $variant:ident($location:ty),)*
    ) => {
        /// Where the state store lives: its kind, with the kind's own location.
        #[derive(Clone, Debug, PartialEq)]
        pub enum StateLocation {
            $(#[doc = $default_doc])* $default($default_location),
            $($(#[doc = $doc])* $variant($location),)*
        }

        /// How to write the `state` of each kind this build has, in list order.
        const STORE_EXAMPLES: &[&str] = &[
            <$default_location as StoreLocation>::EXAMPLE,
            $(<$location as StoreLocation>::EXAMPLE,)*
        ];

        impl StateLocation {
            /// Reads `state` (after `${NAME}` substitution): `SCHEME://…` names a kind by its
            /// scheme, anything else is a location of the default kind. Relative paths are
            /// resolved against `base_dir`, the configuration file's directory.
            ///
            /// # Errors
            ///
            /// A scheme this build has no kind for (`unknown_store`), or what the kind finds
            /// wrong with its location.
            pub fn parse(state: &str, base_dir: &Path) -> Result<Self, LocationError> {
                let Some((scheme, rest)) = state.split_once("://") else {
                    return <$default_location as StoreLocation>::parse(state, base_dir).map(Self::$default);
                };
                if named(<$default_location as StoreLocation>::SCHEMES, scheme) {
                    return <$default_location as StoreLocation>::parse(rest, base_dir).map(Self::$default);
                }
                $(
                    if named(<$location as StoreLocation>::SCHEMES, scheme) {
                        return <$location as StoreLocation>::parse(rest, base_dir).map(Self::$variant);
                    }
                )*
                Err(unknown_store(scheme))
            }

            /// Checks only that `state`'s scheme, if it has one, names a kind of this build; for
            /// `state` before its `${NAME}` substitution, so that the secrets of a URL this build
            /// cannot use need not be set to learn it.
            ///
            /// # Errors
            ///
            /// `unknown_store` for a scheme of no kind.
            pub fn check_scheme(state: &str) -> Result<(), LocationError> {
                let Some((scheme, _)) = state.split_once("://") else { return Ok(()) };
                let known = named(<$default_location as StoreLocation>::SCHEMES, scheme)
                    $(|| named(<$location as StoreLocation>::SCHEMES, scheme))*;
                if known { Ok(()) } else { Err(unknown_store(scheme)) }
            }

            /// The default kind's store in `file`, next to the configuration when relative.
            ///
            /// # Errors
            ///
            /// What the default kind finds wrong with `file`.
            pub fn default_at(file: &str, base_dir: &Path) -> Result<Self, LocationError> {
                <$default_location as StoreLocation>::parse(file, base_dir).map(Self::$default)
            }
        }

        impl fmt::Display for StateLocation {
            fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    Self::$default(location) => location.fmt(formatter),
                    $(Self::$variant(location) => location.fmt(formatter),)*
                }
            }
        }

        /// Any state store this build can open.
        #[derive(Debug)]
        pub enum AnyStore {
            $(#[doc = $default_doc])* $default(<$default_location as StoreLocation>::Store),
            $($(#[doc = $doc])* $variant(<$location as StoreLocation>::Store),)*
        }

        fieldsync_store::dispatch_store!(AnyStore { $default, $($variant),* });

        /// Opens the state store at `location`, creating it or bringing its schema up to date.
        ///
        /// # Errors
        ///
        /// Fails as the kind's own `open` does: a file that cannot be written, a newer schema.
        pub fn open_store(location: &StateLocation) -> Result<AnyStore, StoreError> {
            match location {
                StateLocation::$default(location) => location.open().map(AnyStore::$default),
                $(StateLocation::$variant(location) => location.open().map(AnyStore::$variant),)*
            }
        }
    };
}

/// Whether `scheme` is one of `schemes`, whatever its case.
fn named(schemes: &[&str], scheme: &str) -> bool {
    schemes.iter().any(|known| known.eq_ignore_ascii_case(scheme))
}

/// The error of a `state` whose scheme names no store kind of this build.
fn unknown_store(scheme: &str) -> LocationError {
    let examples: Vec<String> = STORE_EXAMPLES.iter().map(|example| format!("\"{example}\"")).collect();
    LocationError(format!(
        "unknown state store \"{}://\"; write {} or a bare path",
        scheme.to_ascii_lowercase(),
        examples.join(" or ")
    ))
}

// The store kinds, one line each: the variant and the location type of the kind's crate. The
// first is the default.
store_kinds! {
    /// `state = "sqlite://PATH"`, or a bare path: one SQLite file.
    Sqlite(fieldsync_store_sqlite::SqliteLocation),
    /// `state = "postgres://USER:PASSWORD@HOST/DATABASE?schema=NAME"`: a schema (`fieldsync`
    /// unless named) of a PostgreSQL database, shared by workers on several machines.
    Postgres(fieldsync_store_postgres::PostgresLocation),
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use fieldsync_store::testkit::FileFixture;
    use fieldsync_store_sqlite::SqliteLocation;

    use super::{AnyStore, StateLocation, open_store};

    #[test]
    fn a_state_names_its_store_kind_by_scheme_and_a_bare_path_is_the_default_kind() {
        let base = Path::new("/etc/fieldsync");
        let sqlite = |path: &str| Ok(StateLocation::Sqlite(SqliteLocation::new(path)));
        assert_eq!(StateLocation::parse("sqlite://state.db", base), sqlite("/etc/fieldsync/state.db"));
        assert_eq!(StateLocation::parse("SQLite:///var/lib/state.db", base), sqlite("/var/lib/state.db"));
        assert_eq!(StateLocation::parse("state.db", base), sqlite("/etc/fieldsync/state.db"));
        assert_eq!(StateLocation::default_at("fieldsync.db", base), sqlite("/etc/fieldsync/fieldsync.db"));
        assert_eq!(
            StateLocation::parse("sqlite://state.db", base).unwrap().to_string(),
            "/etc/fieldsync/state.db"
        );

        let problem = |state: &str| StateLocation::parse(state, base).unwrap_err().0;
        assert_eq!(problem("sqlite://"), "state has no path; write \"sqlite://PATH\" or a bare path");
        assert_eq!(
            problem("MySQL://db"),
            "unknown state store \"mysql://\"; write \"sqlite://PATH\" or \"postgres://USER@HOST/DATABASE\" \
             or a bare path"
        );
        let postgres =
            StateLocation::parse("PostgreSQL://club:s3cret@db/members?schema=club_a", base).unwrap();
        assert!(matches!(postgres, StateLocation::Postgres(_)), "{postgres:?}");
        assert_eq!(postgres.to_string(), "postgres://club@db:5432/members?schema=club_a");
        // The scheme alone is checked before `${NAME}` is substituted.
        assert!(StateLocation::check_scheme("postgres://fieldsync:${DB_PASSWORD}@db/fieldsync").is_ok());
        assert!(StateLocation::check_scheme("mysql://${DB}").is_err());
        assert!(StateLocation::check_scheme("sqlite://${STATE_DIR}/state.db").is_ok());
        assert!(StateLocation::check_scheme("${STATE_DIR}/state.db").is_ok());
    }

    /// Stores opened through the registry, as the workspace opens them.
    fn sqlite() -> FileFixture<AnyStore> {
        FileFixture::new(|path| {
            let location = StateLocation::parse(&format!("sqlite://{}", path.display()), Path::new(""));
            open_store(&location.expect("a state location")).expect("open the state store")
        })
    }

    // `AnyStore` dispatches every call of the trait to the store it holds: the conformance
    // suite passes through it as it does on the store itself.
    fieldsync_store::conformance_tests!(sqlite());
}
