//! The sqlite connector against real SQLite files in temporary directories: the conformance
//! suite in every modified-column format, then what is particular to SQLite (identifiers,
//! integer keys, equal timestamps, a busy database, misconfiguration, raw values).

use std::path::{Path, PathBuf};
use std::time::Duration;

use fieldsync_connector::testkit::{self, Fixture, RejectedValue, TestRecord, TypedPaths, read_all};
use fieldsync_connector::{
    Connector, ConnectorError, ConnectorSettings, FieldWrite, Lookup, ReadRequest, Write,
};
use fieldsync_connector_sqlite::{ModifiedFormat, SqliteConfig, SqliteConnector};
use fieldsync_model::RecordId;
use jiff::tz::{self, TimeZone};
use jiff::{SignedDuration, Timestamp};
use rusqlite::Connection;
use rusqlite::types::Value as SqlValue;
use serde_json::{Value as Json, json};
use tempfile::TempDir;

/// Fresh SQLite files holding a `members` table, in one of the modified-column formats (or
/// without one), with or without a soft-delete column.
struct SqliteFixture {
    directory: TempDir,
    opened: usize,
    file: PathBuf,
    format: Option<ModifiedFormat>,
    soft_delete: bool,
    clock: Timestamp,
}

impl SqliteFixture {
    fn new(format: Option<ModifiedFormat>, soft_delete: bool) -> Self {
        Self {
            directory: TempDir::new().expect("a temporary directory"),
            opened: 0,
            file: PathBuf::new(),
            format,
            soft_delete,
            clock: Timestamp::from_second(1_704_067_200).expect("a valid instant"),
        }
    }

    /// The clock as the modified column stores it.
    fn stamp(&self) -> SqlValue {
        match self.format {
            None => SqlValue::Null,
            Some(ModifiedFormat::Sqlite) => {
                SqlValue::Text(self.clock.to_zoned(TimeZone::UTC).strftime("%Y-%m-%d %H:%M:%S").to_string())
            }
            // An offset other than UTC, so that comparisons go by the instant, not the text.
            Some(ModifiedFormat::Rfc3339) => SqlValue::Text(
                self.clock
                    .to_zoned(TimeZone::fixed(tz::offset(2)))
                    .strftime("%Y-%m-%dT%H:%M:%S%:z")
                    .to_string(),
            ),
            Some(ModifiedFormat::Unix) => SqlValue::Integer(self.clock.as_second()),
            Some(ModifiedFormat::UnixMs) => SqlValue::Integer(self.clock.as_millisecond()),
        }
    }
}

impl Fixture for SqliteFixture {
    type Connector = SqliteConnector;

    async fn open(&mut self, records: &[TestRecord]) -> SqliteConnector {
        self.opened += 1;
        self.file = self.directory.path().join(format!("members-{}.db", self.opened));
        let connection = Connection::open(&self.file).expect("a new database");
        let modified_type = match self.format {
            Some(ModifiedFormat::Unix | ModifiedFormat::UnixMs) => "INTEGER",
            _ => "TEXT",
        };
        connection
            .execute_batch(&format!(
                "CREATE TABLE members (
                    \"key\" TEXT PRIMARY KEY,
                    name TEXT,
                    email TEXT CHECK (email LIKE '%@%'),
                    changed_at {modified_type},
                    removed_at TEXT,
                    number INTEGER,
                    flag INTEGER,
                    list TEXT
                );
                CREATE INDEX members_changed_at ON members (changed_at);"
            ))
            .expect("the members table");
        let stamp = self.stamp();
        for record in records {
            connection
                .execute(
                    "INSERT INTO members (\"key\", name, email, changed_at) VALUES (?1, ?2, ?3, ?4)",
                    rusqlite::params![record.key, record.name, record.email, stamp],
                )
                .expect("a test record");
        }
        let mut config = SqliteConfig::new(&self.file, "members", "key");
        config.modified = self.format.map(|_| "changed_at".to_string());
        config.modified_format = self.format;
        config.deleted = self.soft_delete.then(|| "removed_at".to_string());
        config.batch_size = Some(100);
        SqliteConnector::open(config).expect("a valid configuration")
    }

    async fn edit(&mut self, key: &str, path: &str, value: Json) {
        self.clock += SignedDuration::from_secs(1);
        let connection = Connection::open(&self.file).expect("the test database");
        let value = value.as_str().expect("the suite edits text").to_string();
        let changed = connection
            .execute(
                &format!("UPDATE members SET \"{path}\" = ?1, changed_at = ?2 WHERE \"key\" = ?3"),
                rusqlite::params![value, self.stamp(), key],
            )
            .expect("an edit");
        assert_eq!(changed, 1, "the edited record {key} exists");
    }

    fn rejected_value(&self) -> Option<RejectedValue> {
        Some(RejectedValue { path: "email".into(), value: json!("not-an-email") })
    }

    fn typed_paths(&self) -> Option<TypedPaths> {
        Some(TypedPaths { number: "number".into(), flag: "flag".into(), list: "list".into() })
    }
}

/// One conformance test per modified-column format: its name, the format (`None` for no
/// modified column), whether deletes are soft, and the properties expected to skip.
macro_rules! conformance {
    ($($name:ident: $format:expr, $soft_delete:expr, $expected_skips:expr;)+) => {
        $(
            #[tokio::test]
            async fn $name() {
                testkit::run_all(&mut SqliteFixture::new($format, $soft_delete), &$expected_skips).await;
            }
        )+
    };
}

conformance! {
    conformance_with_sqlite_times_and_hard_deletes: Some(ModifiedFormat::Sqlite), false, ["sequence_read"];
    conformance_with_rfc3339_times_and_soft_deletes: Some(ModifiedFormat::Rfc3339), true, ["sequence_read"];
    conformance_with_unix_times_and_soft_deletes: Some(ModifiedFormat::Unix), true, ["sequence_read"];
    conformance_with_unix_ms_times: Some(ModifiedFormat::UnixMs), false, ["sequence_read"];
    conformance_without_modified_column: None, false, ["sequence_read", "incremental_read"];
}

/// A fresh temporary directory holding the database `test.db` made by `schema`, and the
/// database's path (the directory is removed when dropped).
fn database(schema: &str) -> (TempDir, PathBuf) {
    let directory = TempDir::new().expect("a temporary directory");
    let file = directory.path().join("test.db");
    Connection::open(&file).expect("a new database").execute_batch(schema).expect("the schema");
    (directory, file)
}

fn paths(names: &[&str]) -> Vec<String> {
    names.iter().map(|name| name.to_string()).collect()
}

#[test]
fn identifiers_that_are_not_plain_names_are_refused() {
    let config = SqliteConfig::new("members.db", "members; drop table x", "id");
    assert!(config.check().is_err());
    let error = SqliteConnector::open(config).expect_err("an unsafe table name");
    assert!(matches!(error, ConnectorError::Misconfigured { .. }), "{error:?}");
    assert!(!Path::new("members.db").exists(), "validation touched the file");
    let config = SqliteConfig::new("members.db", "members", "id\" OR 1=1 --");
    assert!(SqliteConnector::open(config).is_err());
}

#[tokio::test]
async fn unsafe_field_paths_are_refused_before_any_sql() {
    let (_directory, file) = database(
        "CREATE TABLE members (id TEXT PRIMARY KEY, name TEXT); INSERT INTO members VALUES ('a', 'A');",
    );
    let mut connector =
        SqliteConnector::open(SqliteConfig::new(&file, "members", "id")).expect("a valid configuration");
    let request = ReadRequest { paths: paths(&["name\" FROM members; DROP TABLE members; --"]), since: None };
    let error = connector.read_page(&request, None).await.expect_err("an unsafe path");
    assert!(matches!(error, ConnectorError::Misconfigured { .. }), "{error:?}");
    let write = Write::Update {
        id: RecordId::new("a"),
        fields: vec![FieldWrite { path: "name = 'x'; --".into(), value: json!("B"), expected: None }],
    };
    let results = connector.apply(&[write]).await.expect("the batch runs");
    assert!(matches!(results[0], Err(ConnectorError::Misconfigured { .. })), "{:?}", results[0]);
    let read = read_all(&mut connector, &ReadRequest { paths: paths(&["name"]), since: None }).await;
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].values, vec![json!("A")]);
}

#[tokio::test]
async fn integer_keys_page_in_numeric_order() {
    let (_directory, file) = database("CREATE TABLE numbers (id INTEGER PRIMARY KEY, name TEXT);");
    let connection = Connection::open(&file).expect("the database");
    for id in 1..=25 {
        connection
            .execute("INSERT INTO numbers VALUES (?1, ?2)", rusqlite::params![id, format!("n{id}")])
            .expect("a record");
    }
    let mut config = SqliteConfig::new(&file, "numbers", "id");
    config.batch_size = Some(4);
    let mut connector = SqliteConnector::open(config).expect("a valid configuration");
    let read = read_all(&mut connector, &ReadRequest { paths: paths(&["id", "name"]), since: None }).await;
    let ids: Vec<String> = read.iter().map(|record| record.id.to_string()).collect();
    let expected: Vec<String> = (1..=25).map(|id: i32| id.to_string()).collect();
    assert_eq!(ids, expected);
    assert_eq!(read[9].values, vec![json!(10), json!("n10")]);

    let found = connector
        .lookup(&paths(&["name"]), &Lookup::Ids(vec![RecordId::new("12"), RecordId::new("99")]))
        .await
        .expect("a lookup");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].values, vec![json!("n12")]);
    let found = connector
        .lookup(&paths(&["name"]), &Lookup::Key { path: "id".into(), values: vec!["7".into()] })
        .await
        .expect("a lookup by key");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].id.as_str(), "7");
}

#[tokio::test]
async fn mixed_keys_in_an_untyped_column_page_and_match() {
    let (_directory, file) = database("CREATE TABLE things (id, name TEXT);
         INSERT INTO things VALUES (10, 'ten'), (9, 'nine'), ('b', 'bee'), (2, 'two'), ('a', 'ay'), ('10', 'text ten');",
    );
    let mut config = SqliteConfig::new(&file, "things", "id");
    config.batch_size = Some(2);
    let mut connector = SqliteConnector::open(config).expect("a valid configuration");
    let read = read_all(&mut connector, &ReadRequest { paths: paths(&["name"]), since: None }).await;
    let names: Vec<&Json> = read.iter().map(|record| &record.values[0]).collect();
    // SQLite's order: integers first, then text.
    assert_eq!(names, vec!["two", "nine", "ten", "text ten", "ay", "bee"]);

    let write = Write::Update {
        id: RecordId::new("9"),
        fields: vec![FieldWrite { path: "name".into(), value: json!("NINE"), expected: Some(json!("nine")) }],
    };
    let results = connector.apply(&[write]).await.expect("the batch runs");
    assert!(results[0].is_ok(), "{:?}", results[0]);
    let found =
        connector.lookup(&paths(&["name"]), &Lookup::Ids(vec![RecordId::new("9")])).await.expect("a lookup");
    assert_eq!(found[0].values, vec![json!("NINE")]);
}

#[tokio::test]
async fn records_with_equal_modified_times_are_all_returned() {
    let (_directory, file) = database(
        "CREATE TABLE members (id TEXT PRIMARY KEY, changed TEXT);
         INSERT INTO members VALUES
           ('a', '2024-05-01 10:00:00'), ('b', '2024-05-01 10:00:00'), ('c', '2024-05-01 10:00:00.000'),
           ('d', '2024-05-01 09:59:59.999'), ('e', '2024-05-01 10:00:00.001'), ('f', NULL);",
    );
    let mut config = SqliteConfig::new(&file, "members", "id");
    config.modified = Some("changed".into());
    let mut connector = SqliteConnector::open(config).expect("a valid configuration");
    let at = |text: &str| {
        text.parse::<jiff::civil::DateTime>()
            .expect("a time")
            .to_zoned(TimeZone::UTC)
            .expect("UTC")
            .timestamp()
    };
    let since =
        |instant| ReadRequest { paths: Vec::new(), since: Some(fieldsync_connector::Since::Time(instant)) };
    // An incremental listing comes in order of modification (by the column's index), so the
    // ids are compared as a set.
    let ids = |records: Vec<fieldsync_connector::ConnectorRecord>| -> Vec<String> {
        let mut ids: Vec<String> = records.iter().map(|record| record.id.to_string()).collect();
        ids.sort();
        ids
    };

    let read = read_all(&mut connector, &since(at("2024-05-01T10:00:00"))).await;
    assert_eq!(ids(read), vec!["a", "b", "c", "e"]);
    let read = read_all(&mut connector, &since(at("2024-05-01T10:00:00.001"))).await;
    assert_eq!(ids(read), vec!["e"]);
    let read = read_all(&mut connector, &since(at("2024-05-01T09:59:59.999"))).await;
    assert_eq!(ids(read), vec!["a", "b", "c", "d", "e"]);

    let read = read_all(&mut connector, &ReadRequest { paths: Vec::new(), since: None }).await;
    assert_eq!(read[0].modified, Some(at("2024-05-01T10:00:00")));
    assert_eq!(read[5].modified, None);
}

#[tokio::test]
async fn a_busy_database_is_unavailable_and_retryable() {
    let (_directory, file) = database(
        "CREATE TABLE members (id TEXT PRIMARY KEY, name TEXT); INSERT INTO members VALUES ('a', 'A');",
    );
    let blocker = Connection::open(&file).expect("a second connection");
    let mut connector = SqliteConnector::open(SqliteConfig::new(&file, "members", "id"))
        .expect("a valid configuration")
        .with_busy_timeout(Duration::from_millis(100));
    let request = ReadRequest { paths: paths(&["name"]), since: None };
    connector.read_page(&request, None).await.expect("a read before the lock");

    blocker.execute_batch("BEGIN EXCLUSIVE").expect("an exclusive lock");
    let error = connector.read_page(&request, None).await.expect_err("a read of a locked database");
    assert!(matches!(error, ConnectorError::Unavailable { .. }), "{error:?}");
    assert!(error.is_retryable());
    let write = Write::Update {
        id: RecordId::new("a"),
        fields: vec![FieldWrite { path: "name".into(), value: json!("B"), expected: None }],
    };
    let error =
        connector.apply(std::slice::from_ref(&write)).await.expect_err("a write to a locked database");
    assert!(matches!(error, ConnectorError::Unavailable { .. }), "{error:?}");
    assert!(error.is_retryable());

    blocker.execute_batch("COMMIT").expect("the lock released");
    let results = connector.apply(&[write]).await.expect("a write after the lock");
    assert!(results[0].is_ok());
}

#[tokio::test]
async fn misconfiguration_names_the_file_table_and_column() {
    let (directory, file) = database("CREATE TABLE members (id TEXT PRIMARY KEY, name TEXT);");
    let missing = directory.path().join("missing.db");
    let mut connector =
        SqliteConnector::open(SqliteConfig::new(&missing, "members", "id")).expect("a valid configuration");
    let error = connector.check(&[]).await.expect_err("a missing file");
    assert!(
        matches!(&error, ConnectorError::Misconfigured { message } if message.contains("missing.db")),
        "{error:?}"
    );
    assert!(!missing.exists(), "the connector created the file");

    let mut connector =
        SqliteConnector::open(SqliteConfig::new(&file, "people", "id")).expect("a valid configuration");
    let error = connector.check(&[]).await.expect_err("a missing table");
    assert!(
        matches!(&error, ConnectorError::Misconfigured { message } if message.contains("people") && message.contains("test.db")),
        "{error:?}"
    );

    let mut connector =
        SqliteConnector::open(SqliteConfig::new(&file, "members", "id")).expect("a valid configuration");
    let error = connector.check(&paths(&["name", "phone"])).await.expect_err("a missing column");
    assert!(
        matches!(&error, ConnectorError::Misconfigured { message } if message.contains("phone") && message.contains("test.db")),
        "{error:?}"
    );
    assert!(!error.is_retryable());
    let probe = connector.check(&paths(&["name"])).await.expect("a good check");
    assert_eq!(probe.kind, "sqlite");
    assert_eq!(probe.records, Some(0));
    assert!(!probe.capabilities.incremental);
}

#[tokio::test]
async fn raw_values_keep_their_sqlite_types() {
    let (_directory, file) = database(
        "CREATE TABLE members (id TEXT PRIMARY KEY, age INTEGER, fee REAL, note TEXT, photo BLOB);
         INSERT INTO members VALUES ('a', 42, 12.5, NULL, NULL), ('b', NULL, NULL, 'x', x'00ff');",
    );
    let mut connector =
        SqliteConnector::open(SqliteConfig::new(&file, "members", "id")).expect("a valid configuration");
    let found = connector
        .lookup(&paths(&["age", "fee", "note"]), &Lookup::Ids(vec![RecordId::new("a")]))
        .await
        .expect("a lookup");
    assert_eq!(found[0].values, vec![json!(42), json!(12.5), Json::Null]);
    let error = connector
        .lookup(&paths(&["photo"]), &Lookup::Ids(vec![RecordId::new("b")]))
        .await
        .expect_err("a blob");
    assert!(
        matches!(&error, ConnectorError::Malformed { message, .. } if message.contains("photo")),
        "{error:?}"
    );

    let write = Write::Update {
        id: RecordId::new("a"),
        fields: vec![
            FieldWrite { path: "age".into(), value: json!(true), expected: Some(json!(42)) },
            FieldWrite { path: "note".into(), value: json!(["x", 1]), expected: Some(Json::Null) },
            FieldWrite { path: "fee".into(), value: Json::Null, expected: Some(json!(12.5)) },
        ],
    };
    let results = connector.apply(&[write]).await.expect("the batch runs");
    assert!(results[0].is_ok(), "{:?}", results[0]);
    let found = connector
        .lookup(&paths(&["age", "fee", "note"]), &Lookup::Ids(vec![RecordId::new("a")]))
        .await
        .expect("a lookup");
    assert_eq!(found[0].values, vec![json!(1), Json::Null, json!("[\"x\",1]")]);
}

#[tokio::test]
async fn an_unreadable_modified_time_is_malformed_naming_record_and_column() {
    let (_directory, file) = database(
        "CREATE TABLE members (id TEXT PRIMARY KEY, changed TEXT); INSERT INTO members VALUES ('m7', 'last tuesday');",
    );
    let mut config = SqliteConfig::new(&file, "members", "id");
    config.modified = Some("changed".into());
    let mut connector = SqliteConnector::open(config).expect("a valid configuration");
    let error = connector
        .read_page(&ReadRequest { paths: Vec::new(), since: None }, None)
        .await
        .expect_err("a bad time");
    assert!(
        matches!(&error, ConnectorError::Malformed { message, .. } if message.contains("m7") && message.contains("changed") && !message.contains("tuesday")),
        "{error:?}"
    );
}

#[tokio::test]
async fn writes_stamp_the_modified_column_and_keep_the_journal_mode() {
    let (_directory, file) = database("PRAGMA journal_mode = WAL;
         CREATE TABLE members (id INTEGER PRIMARY KEY, name TEXT, changed TEXT, gone INTEGER);
         INSERT INTO members VALUES (1, 'A', '2020-01-01 00:00:00', NULL), (2, 'B', '2020-01-01 00:00:00', 0);",
    );
    let mut config = SqliteConfig::new(&file, "members", "id");
    config.modified = Some("changed".into());
    config.deleted = Some("gone".into());
    let mut connector = SqliteConnector::open(config).expect("a valid configuration");
    let before = Timestamp::now() - SignedDuration::from_secs(1);
    let writes = [
        Write::Update {
            id: RecordId::new("1"),
            fields: vec![FieldWrite { path: "name".into(), value: json!("AA"), expected: None }],
        },
        Write::Create { fields: vec![FieldWrite { path: "name".into(), value: json!("C"), expected: None }] },
        Write::Delete { id: RecordId::new("2") },
    ];
    let results = connector.apply(&writes).await.expect("the batch runs");
    let created = results[1].as_ref().expect("a create").id.clone();
    assert_eq!(created.as_str(), "3", "the id SQLite gave the new record");
    assert!(results.iter().all(Result::is_ok), "{results:?}");

    let read = read_all(
        &mut connector,
        &ReadRequest { paths: paths(&["name"]), since: Some(fieldsync_connector::Since::Time(before)) },
    )
    .await;
    let summary: Vec<(String, bool)> =
        read.iter().map(|record| (record.id.to_string(), record.deleted)).collect();
    assert_eq!(summary, vec![("1".into(), false), ("2".into(), true), ("3".into(), false)]);
    assert!(read.iter().all(|record| record.modified.is_some_and(|modified| modified >= before)));

    let connection = Connection::open(&file).expect("the database");
    let mode: String =
        connection.query_row("PRAGMA journal_mode", [], |row| row.get(0)).expect("the journal mode");
    assert_eq!(mode, "wal");
    let gone: String =
        connection.query_row("SELECT gone FROM members WHERE id = 2", [], |row| row.get(0)).expect("a stamp");
    assert!(
        gone.starts_with(&Timestamp::now().to_zoned(TimeZone::UTC).strftime("%Y-%m-%d").to_string()),
        "{gone}"
    );
}

#[tokio::test]
async fn a_unique_column_other_than_the_key_rejects_rather_than_exists() {
    let (_directory, file) = database(
        "CREATE TABLE members (id TEXT PRIMARY KEY, email TEXT UNIQUE NOT NULL);
         INSERT INTO members VALUES ('a', 'a@example.org');",
    );
    let mut connector =
        SqliteConnector::open(SqliteConfig::new(&file, "members", "id")).expect("a valid configuration");
    let create = |id: &str, email: Json| Write::Create {
        fields: vec![
            FieldWrite { path: "id".into(), value: json!(id), expected: None },
            FieldWrite { path: "email".into(), value: email, expected: None },
        ],
    };
    let results = connector
        .apply(&[
            create("a", json!("new@example.org")),
            create("b", json!("a@example.org")),
            create("c", Json::Null),
        ])
        .await
        .expect("the batch runs");
    assert!(
        matches!(&results[0], Err(ConnectorError::AlreadyExists { id }) if id.as_str() == "a"),
        "{:?}",
        results[0]
    );
    testkit::assert_rejected(&results[1], "UNIQUE");
    testkit::assert_rejected(&results[2], "NOT NULL");
}

/// An incremental listing pages by modification time and then rowid (or key), through many
/// equal times, in tables with and without rowids, and a record changed while it is being
/// listed comes again later with its new time rather than being lost.
#[tokio::test]
async fn incremental_reads_page_by_modified_time_through_equal_times() {
    for table in [
        "CREATE TABLE members (id TEXT PRIMARY KEY, name TEXT, changed INTEGER)",
        "CREATE TABLE members (id TEXT PRIMARY KEY, name TEXT, changed INTEGER) WITHOUT ROWID",
    ] {
        let (_directory, file) =
            database(&format!("{table}; CREATE INDEX members_changed ON members (changed);"));
        let connection = Connection::open(&file).expect("the database");
        // Seven records at time 100, in an id order unlike their insertion order, and older ones.
        for (n, id) in ["g", "c", "a", "f", "b", "e", "d"].iter().enumerate() {
            connection
                .execute("INSERT INTO members VALUES (?1, ?2, 100)", rusqlite::params![id, format!("n{n}")])
                .expect("a record");
        }
        connection.execute("INSERT INTO members VALUES ('old', 'x', 50)", []).expect("a record");
        let mut config = SqliteConfig::new(&file, "members", "id");
        config.modified = Some("changed".into());
        config.modified_format = Some(fieldsync_connector_sqlite::ModifiedFormat::UnixMs);
        config.batch_size = Some(2);
        let mut connector = SqliteConnector::open(config).expect("a valid configuration");
        let request = ReadRequest {
            paths: paths(&["name"]),
            since: Some(fieldsync_connector::Since::Time(
                jiff::Timestamp::from_millisecond(100).expect("a time"),
            )),
        };
        let mut ids: Vec<String> =
            read_all(&mut connector, &request).await.iter().map(|r| r.id.to_string()).collect();
        ids.sort();
        assert_eq!(ids, ["a", "b", "c", "d", "e", "f", "g"], "{table}");

        // Change the first record listed after the first page has been read.
        let first = connector.read_page(&request, None).await.expect("a page");
        let listed: Vec<String> = first.records.iter().map(|record| record.id.to_string()).collect();
        let rest = first.next.expect("more pages");
        connection
            .execute("UPDATE members SET name = 'new', changed = 200 WHERE id = ?1", [&listed[0]])
            .expect("an edit");
        let mut token = Some(rest);
        let mut later = Vec::new();
        while let Some(next) = token {
            let page = connector.read_page(&request, Some(&next)).await.expect("a page");
            later.extend(page.records);
            token = page.next;
        }
        let again =
            later.iter().find(|record| record.id.as_str() == listed[0]).expect("the changed record again");
        assert_eq!(again.values, vec![json!("new")], "{table}");
        assert_eq!(
            later.len(),
            6,
            "five unchanged records after the first page, and the changed one: {table}"
        );
    }
}
