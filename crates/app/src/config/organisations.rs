//! `[organisations]`: the organisations a link with `for_each = "organisations"` runs for, read
//! from a CSV file, a PostgreSQL query or a REST endpoint. Each row is an organisation: an `id`
//! (which names its instance of the link, `LINK/ID`, in commands, URLs and the state store), a
//! `name`, and any further columns as variables that the link's connectors use as
//! `${org.NAME}`. Reading the list is the only I/O of loading a configuration besides the file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use fieldsync_connector::Secret;
use serde_json::Value as Json;

/// How often `fieldsync serve` reads the list again when `[organisations]` does not say.
pub const DEFAULT_REREAD: Duration = Duration::from_secs(5 * 60);

/// The longest organisation id: it is part of link names, URLs and variable names.
const MAX_ID_LEN: usize = 64;

/// How long a PostgreSQL query or a REST endpoint has to answer with the list.
const LIST_TIMEOUT: Duration = Duration::from_secs(30);

/// One organisation of the list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Organisation {
    /// Its id (`id`): letters, digits, `_` and `-`, as in `members/ID`.
    pub id: String,
    /// Its name (`name`; its id when the list has none), for people.
    pub name: String,
    /// Every other column, by its name (`${org.NAME}`).
    pub variables: BTreeMap<String, String>,
}

impl Organisation {
    /// The value `${org.NAME}` stands for: `id`, `name`, or one of its variables.
    pub fn variable(&self, name: &str) -> Option<&str> {
        match name {
            "id" => Some(&self.id),
            "name" => Some(&self.name),
            other => self.variables.get(other).map(String::as_str),
        }
    }
}

/// Where the list comes from (`from`).
#[derive(Clone, Debug)]
pub enum OrganisationSource {
    /// A CSV file with a header row (`from = "clubs.csv"`, relative to the configuration file).
    Csv(PathBuf),
    /// The rows of `query` in a PostgreSQL database (`from = "postgres://…"`); the URL may
    /// hold a password.
    Postgres {
        /// The database.
        url: Secret,
        /// The query (`query`), whose columns are read as text.
        query: String,
    },
    /// A JSON array of objects at a URL (`from = "https://…"`), or at `records` in the
    /// object it answers, fetched with `token` as a bearer token when given.
    Rest {
        /// The endpoint.
        url: String,
        /// The bearer token (`token`), from the environment.
        token: Option<Secret>,
        /// A JSON pointer to the array in the answer (`records`).
        records: Option<String>,
    },
}

impl std::fmt::Display for OrganisationSource {
    /// The source as a person may see it: never a password or a token.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Csv(path) => write!(formatter, "{}", path.display()),
            Self::Postgres { url, .. } => {
                write!(formatter, "{}", fieldsync_postgres::DatabaseUrl::new(url.expose().to_string()))
            }
            Self::Rest { url, .. } => formatter.write_str(url),
        }
    }
}

/// The `[organisations]` table, with the list as it was read.
#[derive(Clone, Debug)]
pub struct Organisations {
    /// Where the list comes from.
    pub source: OrganisationSource,
    /// How often `fieldsync serve` reads it again (`every`, five minutes unless set).
    pub every: Duration,
    /// The organisations, in the list's order.
    pub list: Vec<Organisation>,
    /// The names of the links that run for each of them (`for_each`), as written: an
    /// organisation's instances are `NAME/ID`, also once it has left the list.
    pub for_each: BTreeSet<String>,
}

/// Reads the organisations from `source`. A relative CSV path is read against `base_dir`.
///
/// # Errors
///
/// What is wrong, naming the row (its line in a CSV file) and the column: a missing or
/// malformed `id`, an id listed twice, a source that cannot be read. Never a password.
pub(crate) fn read(source: &OrganisationSource, base_dir: &Path) -> Result<Vec<Organisation>, String> {
    let rows = match source {
        OrganisationSource::Csv(path) => csv_rows(&base_dir.join(path))?,
        OrganisationSource::Postgres { url, query } => postgres_rows(url, query)?,
        OrganisationSource::Rest { url, token, records } => {
            rest_rows(url, token.as_ref(), records.as_deref())?
        }
    };
    let mut seen = BTreeSet::new();
    let mut list = Vec::with_capacity(rows.len());
    for (place, mut row) in rows {
        let Some(id) = row.remove("id").filter(|id| !id.trim().is_empty()) else {
            return Err(format!("{place} has no `id`"));
        };
        let id = id.trim().to_string();
        let plain = |char: char| char.is_ascii_alphanumeric() || char == '_' || char == '-';
        if id.len() > MAX_ID_LEN || !id.chars().all(plain) {
            return Err(format!(
                "{place}: organisation id {id:?} may hold only letters, digits, `_` and `-`, at most {MAX_ID_LEN}"
            ));
        }
        if !seen.insert(id.clone()) {
            return Err(format!("{place}: organisation id {id:?} is listed twice"));
        }
        let name = row.remove("name").filter(|name| !name.trim().is_empty()).unwrap_or_else(|| id.clone());
        list.push(Organisation { id, name, variables: row });
    }
    Ok(list)
}

/// A row of the list: where it is (for errors) and its columns.
type Row = (String, BTreeMap<String, String>);

fn csv_rows(path: &Path) -> Result<Vec<Row>, String> {
    let shown = path.display();
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_path(path)
        .map_err(|error| format!("reading the organisations in {shown}: {error}"))?;
    let headers =
        reader.headers().map_err(|error| format!("reading the header of {shown}: {error}"))?.clone();
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|error| format!("reading {shown}: {error}"))?;
        let line = record.position().map_or(0, csv::Position::line);
        let columns =
            headers.iter().zip(record.iter()).map(|(name, value)| (name.to_string(), value.to_string()));
        rows.push((format!("{shown} line {line}"), columns.collect()));
    }
    Ok(rows)
}

fn postgres_rows(url: &Secret, query: &str) -> Result<Vec<Row>, String> {
    use fieldsync_postgres::tokio_postgres::SimpleQueryMessage;

    let shown = fieldsync_postgres::DatabaseUrl::new(url.expose().to_string());
    let messages = fieldsync_postgres::block_on(async {
        let client = fieldsync_postgres::connect(url.expose()).await.map_err(|error| error.to_string())?;
        let query = client.simple_query(query);
        match tokio::time::timeout(LIST_TIMEOUT, query).await {
            Ok(answer) => {
                answer.map_err(|error| error.as_db_error().map_or(error.to_string(), ToString::to_string))
            }
            Err(_) => Err(format!("no answer in {LIST_TIMEOUT:?}")),
        }
    })
    .map_err(|error| format!("reading the organisations from {shown}: {error}"))?;
    let mut rows = Vec::new();
    for message in messages {
        if let SimpleQueryMessage::Row(row) = message {
            let columns = row
                .columns()
                .iter()
                .enumerate()
                .filter_map(|(at, column)| Some((column.name().to_string(), row.get(at)?.to_string())));
            rows.push((format!("row {} of the query", rows.len() + 1), columns.collect()));
        }
    }
    Ok(rows)
}

fn rest_rows(url: &str, token: Option<&Secret>, records: Option<&str>) -> Result<Vec<Row>, String> {
    let fetched = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|error| error.to_string())?;
                runtime.block_on(async {
                    let client = fieldsync_connector_rest::http_client(LIST_TIMEOUT)
                        .map_err(|error| error.to_string())?;
                    let mut request = client.get(url);
                    if let Some(token) = token {
                        request = request.bearer_auth(token.expose());
                    }
                    let response = request
                        .send()
                        .await
                        .map_err(|error| fieldsync_connector_rest::plain_error(&error))?;
                    let status = response.status();
                    let body = response
                        .text()
                        .await
                        .map_err(|error| fieldsync_connector_rest::plain_error(&error))?;
                    if !status.is_success() {
                        return Err(format!("status {status}: {}", fieldsync_connector_rest::excerpt(&body)));
                    }
                    serde_json::from_str::<Json>(&body)
                        .map_err(|error| format!("the answer is not JSON: {error}"))
                })
            })
            .join()
            .unwrap_or_else(|_| Err("the request stopped".to_string()))
    })
    .map_err(|error| format!("reading the organisations from {url}: {error}"))?;
    let array = match records {
        Some(pointer) => fetched.pointer(pointer),
        None => Some(&fetched),
    };
    let Some(Json::Array(items)) = array else {
        let at =
            records.map_or_else(|| "the answer".to_string(), |pointer| format!("{pointer:?} in the answer"));
        return Err(format!("reading the organisations from {url}: {at} is not an array"));
    };
    let mut rows = Vec::with_capacity(items.len());
    for (at, item) in items.iter().enumerate() {
        let place = format!("item {at} of {url}");
        let Json::Object(object) = item else { return Err(format!("{place} is not an object")) };
        let columns = object.iter().filter_map(|(name, value)| {
            let text = match value {
                Json::String(text) => text.clone(),
                Json::Number(number) => number.to_string(),
                Json::Bool(flag) => flag.to_string(),
                _ => return None,
            };
            Some((name.clone(), text))
        });
        rows.push((place, columns.collect()));
    }
    Ok(rows)
}

/// A stable number of `text`, the same in every process and every build (FNV-1a, 64 bits):
/// where in its schedule's window an organisation's runs fall.
pub(crate) fn stable_hash(text: &str) -> u64 {
    text.bytes()
        .fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csv(text: &str) -> Result<Vec<Organisation>, String> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("clubs.csv"), text).unwrap();
        read(&OrganisationSource::Csv("clubs.csv".into()), dir.path())
    }

    #[test]
    fn a_csv_list_gives_ids_names_and_variables() {
        let list = csv("id,name,database\nhcu,HC Utrecht,hcu.db\nzvv , ,zvv.db\n").unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].variable("id"), Some("hcu"));
        assert_eq!(list[0].variable("name"), Some("HC Utrecht"));
        assert_eq!(list[0].variable("database"), Some("hcu.db"));
        // Trimmed; an empty name is the id.
        assert_eq!(list[1].id, "zvv");
        assert_eq!(list[1].name, "zvv");
        assert_eq!(list[1].variable("colour"), None);
    }

    #[test]
    fn a_bad_list_names_the_row() {
        let error = csv("id,name\nhcu,HC Utrecht\nhcu,Again\n").unwrap_err();
        assert!(error.ends_with("clubs.csv line 3: organisation id \"hcu\" is listed twice"), "{error}");
        let error = csv("id,name\nhc utrecht,HC Utrecht\n").unwrap_err();
        assert!(error.contains("line 2: organisation id \"hc utrecht\" may hold only"), "{error}");
        let error = csv("name\nHC Utrecht\n").unwrap_err();
        assert!(error.ends_with("clubs.csv line 2 has no `id`"), "{error}");
        let error = csv("id,name\n,Nameless\n").unwrap_err();
        assert!(error.contains("has no `id`"), "{error}");
    }

    #[test]
    fn the_hash_is_stable() {
        // The same in every process and build: schedules spread by it agree across workers.
        assert_eq!(stable_hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(stable_hash("a"), 0xaf63_dc4c_8601_ec8c);
    }
}
