//! `PostgresLocation`: the database and schema of a PostgreSQL state store, as
//! `state = "postgres://USER:PASSWORD@HOST:PORT/DATABASE?schema=NAME"` names them. The `schema`
//! parameter (default `fieldsync`) is fieldsync's own; every other parameter goes to the
//! connection. Its `Display` and `Debug` never show the password.

use std::fmt;
use std::path::Path;

use fieldsync_postgres::DatabaseUrl;
use fieldsync_store::{LocationError, StoreError, StoreLocation};

use crate::PostgresStore;

/// The schema fieldsync's tables live in when `state` names none.
pub const DEFAULT_SCHEMA: &str = "fieldsync";

/// A PostgreSQL state store: the server and database to connect to, and the schema that holds
/// fieldsync's tables.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresLocation {
    /// The connection URL without `schema`.
    url: DatabaseUrl,
    /// The schema's name, a plain identifier.
    schema: String,
    /// How messages name the store: the URL without its password.
    shown: String,
}

impl PostgresLocation {
    /// The schema that holds fieldsync's tables.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// The URL the connection is made with (without `schema`); it holds the password, if
    /// there is one, so it is never for messages.
    pub(crate) fn connection_url(&self) -> &str {
        self.url.expose()
    }
}

impl fmt::Display for PostgresLocation {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.shown)
    }
}

impl fmt::Debug for PostgresLocation {
    /// As `Display`: a debug print must not show the password either.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_tuple("PostgresLocation").field(&self.shown).finish()
    }
}

impl StoreLocation for PostgresLocation {
    const SCHEMES: &'static [&'static str] = &["postgres", "postgresql"];
    const EXAMPLE: &'static str = "postgres://USER@HOST/DATABASE";
    type Store = PostgresStore;

    fn parse(rest: &str, _base_dir: &Path) -> Result<Self, LocationError> {
        if rest.is_empty() {
            return Err(LocationError(format!("state names no server; write \"{}\"", Self::EXAMPLE)));
        }
        // Parameters start at the first `?` after the credentials, as tokio-postgres reads a URL.
        let credentials_end = rest.find('@').map_or(0, |at| at + 1);
        let (base, query) = match rest[credentials_end..].find('?') {
            Some(index) => (&rest[..credentials_end + index], &rest[credentials_end + index + 1..]),
            None => (rest, ""),
        };
        let mut schema = None;
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            match pair.split_once('=') {
                Some(("schema", value)) if schema.is_none() => schema = Some(value),
                Some(("schema", _)) => {
                    return Err(LocationError("state names its schema twice".into()));
                }
                _ => kept.push(pair),
            }
        }
        let schema = schema.unwrap_or(DEFAULT_SCHEMA);
        if !fieldsync_postgres::is_plain_identifier(schema) {
            return Err(LocationError(format!(
                "state's schema {schema:?} is not a plain name (letters, digits and _, up to 63 bytes, \
                 not starting with a digit)"
            )));
        }
        let url = if kept.is_empty() {
            format!("postgres://{base}")
        } else {
            format!("postgres://{base}?{}", kept.join("&"))
        };
        let url = DatabaseUrl::new(url);
        // tokio-postgres's messages name the option, never its value, so no password shows.
        url.parse().map_err(|error| {
            LocationError(format!("state is not a PostgreSQL URL ({error}); write \"{}\"", Self::EXAMPLE))
        })?;
        let shown = format!("{url}?schema={schema}");
        Ok(Self { url, schema: schema.to_string(), shown })
    }

    fn open(&self) -> Result<PostgresStore, StoreError> {
        PostgresStore::open(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(rest: &str) -> Result<PostgresLocation, LocationError> {
        PostgresLocation::parse(rest, Path::new("/etc/fieldsync"))
    }

    #[test]
    fn the_schema_is_read_from_the_url_and_defaults_to_fieldsync() {
        let location = parse("club:s3cret@db.example.org:5433/members?schema=club_a").unwrap();
        assert_eq!(location.schema(), "club_a");
        assert_eq!(location.connection_url(), "postgres://club:s3cret@db.example.org:5433/members");
        assert_eq!(location.to_string(), "postgres://club@db.example.org:5433/members?schema=club_a");

        let location = parse("club@db/members").unwrap();
        assert_eq!(location.schema(), DEFAULT_SCHEMA);
        assert_eq!(location.to_string(), "postgres://club@db:5432/members?schema=fieldsync");
    }

    #[test]
    fn other_parameters_go_to_the_connection() {
        let location = parse("club:pw@db/members?sslmode=require&schema=Club_B&connect_timeout=5").unwrap();
        assert_eq!(location.schema(), "Club_B");
        assert_eq!(
            location.connection_url(),
            "postgres://club:pw@db/members?sslmode=require&connect_timeout=5"
        );
        let problem = parse("club@db/members?schema=a&colour=blue").unwrap_err().0;
        assert!(problem.starts_with("state is not a PostgreSQL URL"), "{problem}");
    }

    #[test]
    fn the_password_is_never_shown() {
        let location = parse("club:hunter2@db:5432/members?schema=a&sslmode=disable").unwrap();
        for shown in [location.to_string(), format!("{location:?}")] {
            assert!(!shown.contains("hunter2"), "{shown}");
        }
        // Nor in what is wrong with a URL.
        let problem = parse("club:hunter2@db:notaport/members").unwrap_err().0;
        assert!(!problem.contains("hunter2"), "{problem}");
    }

    #[test]
    fn a_schema_that_is_not_a_plain_name_is_refused() {
        for schema in ["", "1club", "a;drop", "a\"b", "a.b", "a%20b"] {
            let problem = parse(&format!("club@db/members?schema={schema}")).unwrap_err().0;
            assert!(problem.contains("not a plain name"), "{schema}: {problem}");
        }
        assert_eq!(parse("club@db/members?schema=a&schema=b").unwrap_err().0, "state names its schema twice");
        assert!(parse("").unwrap_err().0.contains("postgres://USER@HOST/DATABASE"));
    }
}
