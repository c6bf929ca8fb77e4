//! `PostgresConfig`: what a user writes to point the postgres connector at a table (and
//! optionally a view to read from), checked by `PostgresConfig::check` (of
//! `ConnectorSettings`) without connecting.

use std::path::Path;

use fieldsync_connector::{ConnectorError, ConnectorSettings, PathError, SettingError, check_table_columns};
use fieldsync_postgres::{DatabaseUrl, is_plain_identifier};
use serde::Deserialize;

use crate::PostgresConnector;

/// How many records one page of a read holds unless `batch_size` says otherwise: the same
/// as the sqlite connector's, for the same reason (a page costs little to hand over next to
/// reading it, and the pages in flight hold a few megabytes).
pub const DEFAULT_BATCH_SIZE: usize = 5_000;

/// The schema the table lives in unless `schema` says otherwise.
pub const DEFAULT_SCHEMA: &str = "public";

/// The postgres connector's configuration: a table of a PostgreSQL database whose key column
/// is the connector's record id and whose other columns are the paths of the record's fields.
/// Names are matched exactly as written (they are always quoted, so `Members` is not
/// `members`).
///
/// ```toml
/// [connectors.platform]
/// kind = "postgres"
/// url = "postgres://sync:${PLATFORM_DB_PASSWORD}@platform.example/club"
/// schema = "public"          # default "public"
/// table = "members"          # the table written to
/// view = "members_export"    # optional: read from this view (or table) instead
/// key = "id"
/// modified = "updated_at"    # optional: timestamptz, or timestamp read as UTC
/// deleted = "deleted_at"     # optional soft-delete column
/// batch_size = 500           # optional, 5000 unless set
/// notify = "members_changed" # optional LISTEN channel, for the service
/// ```
///
/// The user needs SELECT on what is read, and INSERT, UPDATE and (without `deleted`) DELETE on
/// the table; `check` names what is missing.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// The database to connect to; `${NAME}` in it comes from the environment.
    pub url: DatabaseUrl,
    /// The schema of `table` and `view`; `public` when not given.
    pub schema: Option<String>,
    /// The table written to (and read, without a `view`).
    pub table: String,
    /// A view (or another table) read instead of `table`: listings and lookups read it, writes
    /// go to `table`. It must have the key column and the `modified` and `deleted` columns.
    pub view: Option<String>,
    /// The key column, whose value (as text) is the connector's record id; it must be unique.
    pub key: String,
    /// A `timestamptz` or `timestamp` (read as UTC) column holding each record's modification
    /// time; it enables incremental reads, and every write sets it to the current time.
    pub modified: Option<String>,
    /// A soft-delete column: a record is deleted when it holds anything but NULL (and, by its
    /// type, false, 0, '' or '0'). A delete then sets it (to the current time, true or 1)
    /// instead of removing the record.
    pub deleted: Option<String>,
    /// How many records one page of a read holds; 5,000 when not given.
    pub batch_size: Option<usize>,
    /// A channel the database announces changes on with `NOTIFY`; checked here, listened to
    /// by the service.
    pub notify: Option<String>,
}

impl PostgresConfig {
    /// A configuration for `table` of the database at `url` keyed by the column `key`, with
    /// every optional setting left out.
    pub fn new(url: impl Into<String>, table: &str, key: &str) -> Self {
        Self {
            url: DatabaseUrl::new(url),
            schema: None,
            table: table.to_string(),
            view: None,
            key: key.to_string(),
            modified: None,
            deleted: None,
            batch_size: None,
            notify: None,
        }
    }

    /// Checks a field path, which for this connector is a column name.
    ///
    /// # Errors
    ///
    /// Says why `path` is not a plain identifier.
    pub fn validate_path(path: &str) -> Result<(), PathError> {
        check_identifier(path).map_err(|problem| PathError(format!("field path: {problem}")))
    }

    /// The schema of the table and the view, `public` unless configured.
    pub fn schema(&self) -> &str {
        self.schema.as_deref().unwrap_or(DEFAULT_SCHEMA)
    }

    /// The relation listings and lookups read: the view when there is one, else the table.
    pub fn read_from(&self) -> &str {
        self.view.as_deref().unwrap_or(&self.table)
    }

    /// The number of records per page, 5,000 unless configured.
    pub fn batch_size(&self) -> usize {
        self.batch_size.unwrap_or(DEFAULT_BATCH_SIZE)
    }

    /// The `NOTIFY` channel the database announces changes on, if configured.
    pub fn notify(&self) -> Option<&str> {
        self.notify.as_deref()
    }

    /// `table` (of `schema`), as messages name it.
    pub(crate) fn table_name(&self) -> String {
        format!("{}.{}", self.schema(), self.table)
    }
}

impl ConnectorSettings for PostgresConfig {
    const KIND: &'static str = "postgres";
    type Connector = PostgresConnector;

    /// With `notify`, a listener on that channel.
    fn change_feed(&self) -> Option<fieldsync_connector::FeedOpener> {
        self.notify().map(|channel| crate::feed::opener(self, channel))
    }

    /// Checks the URL's form and every name, without connecting.
    ///
    /// # Errors
    ///
    /// A URL tokio-postgres cannot read; the first name that is not a plain identifier (1 to
    /// 63 letters, digits, `_` or `$`, not starting with a digit or `$`); a soft-delete column
    /// that is also the key or modified column; a zero batch size.
    fn check(&self) -> Result<(), SettingError> {
        if let Err(error) = self.url.parse() {
            // tokio-postgres names the option it could not read, never its value.
            return Err(SettingError::new(
                ["url"],
                format!("not a PostgreSQL URL (postgres://USER:PASSWORD@HOST:PORT/DATABASE): {error}"),
            ));
        }
        let mut names = vec![("table", &self.table), ("key", &self.key)];
        names.extend(self.schema.iter().map(|name| ("schema", name)));
        names.extend(self.view.iter().map(|name| ("view", name)));
        names.extend(self.modified.iter().map(|name| ("modified", name)));
        names.extend(self.deleted.iter().map(|name| ("deleted", name)));
        names.extend(self.notify.iter().map(|name| ("notify", name)));
        for (setting, name) in names {
            check_identifier(name).map_err(|problem| SettingError::new([setting], problem))?;
        }
        // Quoted names are compared as written.
        check_table_columns(
            &self.key,
            self.modified.as_deref(),
            self.deleted.as_deref(),
            self.batch_size,
            |a, b| a == b,
        )
    }

    fn check_path(&self, path: &str) -> Result<(), PathError> {
        Self::validate_path(path)
    }

    /// None: PostgreSQL's `date` columns read as ISO 8601, the normalisers' own form.
    fn date_formats(&self) -> &[String] {
        &[]
    }

    /// Opens the connector; nothing is connected until its first call.
    fn open(&self, _base_dir: &Path) -> Result<PostgresConnector, ConnectorError> {
        PostgresConnector::open(self.clone())
    }
}

/// Accepts the names `fieldsync_postgres::is_plain_identifier` accepts. Together with quoting
/// in every statement this keeps names from ever being read as SQL.
fn check_identifier(name: &str) -> Result<(), String> {
    if is_plain_identifier(name) {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a plain name (1 to 63 letters, digits, `_` or `$`, not starting with a digit or `$`)",
            name.escape_debug()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_deserialise_with_their_defaults_and_refuse_unknown_keys() {
        let config: PostgresConfig = serde_json::from_str(
            r#"{"url": "postgres://sync:hunter2@platform.example/club", "table": "members", "key": "id"}"#,
        )
        .expect("valid settings");
        assert_eq!(
            config,
            PostgresConfig::new("postgres://sync:hunter2@platform.example/club", "members", "id")
        );
        assert_eq!(config.schema(), "public");
        assert_eq!(config.read_from(), "members");
        assert_eq!(config.batch_size(), DEFAULT_BATCH_SIZE);
        assert_eq!(config.notify(), None);
        let unknown = serde_json::from_str::<PostgresConfig>(
            r#"{"url": "postgres://h/db", "table": "t", "key": "id", "tabel": "x"}"#,
        );
        assert!(unknown.is_err());
    }

    #[test]
    fn every_name_is_checked_and_a_wrong_one_is_named_by_its_key() {
        let mut config = PostgresConfig::new("postgres://sync@platform.example/club", "members", "id");
        assert_eq!(config.check(), Ok(()));
        config.view = Some("members_export".into());
        config.modified = Some("updated_at".into());
        config.deleted = Some("deleted_at".into());
        config.notify = Some("members_changed".into());
        config.schema = Some("club".into());
        assert_eq!(config.check(), Ok(()));
        for (setting, bad) in [
            ("table", "members; drop table x"),
            ("key", "id\" OR 1=1 --"),
            ("schema", "a.b"),
            ("view", "2members"),
            ("modified", "updated at"),
            ("deleted", ""),
            ("notify", "members-changed"),
        ] {
            let mut wrong = config.clone();
            match setting {
                "table" => wrong.table = bad.into(),
                "key" => wrong.key = bad.into(),
                "schema" => wrong.schema = Some(bad.into()),
                "view" => wrong.view = Some(bad.into()),
                "modified" => wrong.modified = Some(bad.into()),
                "deleted" => wrong.deleted = Some(bad.into()),
                _ => wrong.notify = Some(bad.into()),
            }
            let error = wrong.check().expect_err(bad);
            assert_eq!(error.key(), [setting], "{bad}");
        }
        let mut wrong = config.clone();
        wrong.deleted = Some("id".into());
        assert_eq!(wrong.check().unwrap_err().key(), ["deleted"]);
        let mut wrong = config.clone();
        wrong.batch_size = Some(0);
        assert_eq!(wrong.check().unwrap_err().key(), ["batch_size"]);
        let mut wrong = config;
        wrong.url = DatabaseUrl::new("postgres://sync:hunter2@platform.example:port/club");
        let error = wrong.check().unwrap_err();
        assert_eq!(error.key(), ["url"]);
        assert!(!error.to_string().contains("hunter2"), "{error}");
        assert!(PostgresConfig::validate_path("email").is_ok());
        assert!(PostgresConfig::validate_path("email\"; --").is_err());
    }

    #[test]
    fn the_password_never_shows_in_debug_or_display() {
        for url in [
            "postgres://sync:hunter2@platform.example/club",
            "postgresql://sync:hunter2@platform.example:5433,backup.example:5434/club?sslmode=require",
            "host=platform.example user=sync password=hunter2 dbname=club",
        ] {
            let config = PostgresConfig::new(url, "members", "id");
            let shown = format!("{config:?} {} {:?}", config.url, config.url);
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains("sync@platform.example"), "{shown}");
            assert_eq!(config.url.expose(), url);
        }
        let url = DatabaseUrl::new("postgres://sync:hunter2@platform.example:5433,backup.example:5434/club");
        assert_eq!(url.to_string(), "postgres://sync@platform.example:5433,backup.example:5434/club");
        assert_eq!(
            DatabaseUrl::new("postgres://sync:hunter2@h:x/db").to_string(),
            "an unreadable PostgreSQL URL"
        );
    }
}
