//! The csv connector against real files in temporary directories: the conformance suite,
//! then what is particular to CSV (the rewrite keeps the file's form and leaves no temporary
//! files, failed writes leave the file alone, missing columns and broken lines are named).

use std::fs;
use std::path::{Path, PathBuf};

use fieldsync_connector::testkit::{self, Fixture, RejectedValue, TestRecord};
use fieldsync_connector::{Connector, ConnectorError, FieldWrite, Lookup, ReadRequest, Write};
use fieldsync_connector_csv::{CsvConfig, CsvConnector};
use fieldsync_model::RecordId;
use serde_json::{Value as Json, json};
use tempfile::TempDir;

/// Fresh CSV files with the header `key,name,email` (and a column the suite never reads).
struct CsvFixture {
    directory: TempDir,
    opened: usize,
    file: PathBuf,
}

impl CsvFixture {
    fn new() -> Self {
        Self { directory: TempDir::new().expect("a temporary directory"), opened: 0, file: PathBuf::new() }
    }
}

impl Fixture for CsvFixture {
    type Connector = CsvConnector;

    async fn open(&mut self, records: &[TestRecord]) -> CsvConnector {
        self.opened += 1;
        self.file = self.directory.path().join(format!("members-{}.csv", self.opened));
        let mut writer = csv::Writer::from_path(&self.file).expect("a new CSV file");
        writer.write_record(["key", "name", "notes", "email"]).expect("the header");
        for record in records {
            writer.write_record([&record.key, &record.name, "", &record.email]).expect("a record");
        }
        writer.flush().expect("the file written");
        CsvConnector::open(CsvConfig::new(&self.file, "key")).expect("a valid configuration")
    }

    async fn edit(&mut self, key: &str, path: &str, value: Json) {
        let mut reader = csv::Reader::from_path(&self.file).expect("the test file");
        let header = reader.headers().expect("a header").clone();
        let column = header.iter().position(|name| name == path).expect("a known column");
        let mut records: Vec<Vec<String>> = reader
            .records()
            .map(|record| record.expect("a record").iter().map(str::to_string).collect())
            .collect();
        let record = records.iter_mut().find(|record| record[0] == key).expect("the edited record");
        record[column] = value.as_str().expect("the suite edits text").to_string();
        let mut writer = csv::Writer::from_path(&self.file).expect("the test file");
        writer.write_record(&header).expect("the header");
        for record in records {
            writer.write_record(record).expect("a record");
        }
        writer.flush().expect("the file written");
    }

    fn rejected_value(&self) -> Option<RejectedValue> {
        // A CSV file takes any text.
        None
    }
}

#[tokio::test]
async fn conformance() {
    testkit::run_all(
        &mut CsvFixture::new(),
        &["sequence_read", "incremental_read", "typed_values", "rejected_write"],
    )
    .await;
}

fn write_file(directory: &TempDir, name: &str, content: &str) -> PathBuf {
    let file = directory.path().join(name);
    fs::write(&file, content).expect("a test file");
    file
}

/// A fresh temporary directory holding `members.csv` with `content`, and the file's path (the
/// directory is removed when dropped).
fn members_file(content: &str) -> (TempDir, PathBuf) {
    let directory = TempDir::new().expect("a temporary directory");
    let file = write_file(&directory, "members.csv", content);
    (directory, file)
}

/// A connector keyed by `key` over `members.csv` holding `content`, in a fresh directory.
fn open_members(content: &str) -> (TempDir, PathBuf, CsvConnector) {
    let (directory, file) = members_file(content);
    let connector = CsvConnector::open(CsvConfig::new(&file, "key")).expect("a valid configuration");
    (directory, file, connector)
}

fn paths(names: &[&str]) -> Vec<String> {
    names.iter().map(|name| name.to_string()).collect()
}

fn update(id: &str, path: &str, value: Json, expected: Option<Json>) -> Write {
    Write::Update { id: RecordId::new(id), fields: vec![FieldWrite { path: path.into(), value, expected }] }
}

fn entries(directory: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(directory)
        .expect("the directory")
        .map(|entry| entry.expect("an entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_rewrite_keeps_the_files_form_and_leaves_no_temporary_files() {
    let (directory, file) =
        members_file("\u{feff}nr;name;city\r\n1;Anna;Köln\r\n2;\"Ben; Jr.\";Bonn\r\n;;\r\n3;Cleo;\r\n");
    let mut config = CsvConfig::new(&file, "nr");
    config.delimiter = Some(';');
    let mut connector = CsvConnector::open(config).expect("a valid configuration");

    let read = connector
        .read_page(&ReadRequest { paths: paths(&["name", "city"]), since: None }, None)
        .await
        .expect("a read");
    let values: Vec<Vec<Json>> = read.records.iter().map(|record| record.values.clone()).collect();
    assert_eq!(
        values,
        vec![
            vec![json!("Anna"), json!("Köln")],
            vec![json!("Ben; Jr."), json!("Bonn")],
            vec![json!("Cleo"), json!("")]
        ]
    );
    assert_eq!(read.next, None);

    let writes = [
        update("1", "city", json!("Aachen"), Some(json!("Köln"))),
        update("3", "city", json!(52), Some(Json::Null)),
        Write::Create {
            fields: vec![
                FieldWrite { path: "nr".into(), value: json!(4), expected: None },
                FieldWrite { path: "name".into(), value: json!("Dana \"D\"\nSmith"), expected: None },
            ],
        },
        Write::Delete { id: RecordId::new("2") },
    ];
    let results = connector.apply(&writes).await.expect("the batch runs");
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(results[2].as_ref().expect("a create").id.as_str(), "4");
    assert_eq!(
        fs::read_to_string(&file).expect("the file"),
        "\u{feff}nr;name;city\r\n1;Anna;Aachen\r\n;;\r\n3;Cleo;52\r\n4;\"Dana \"\"D\"\"\nSmith\";\r\n"
    );
    assert_eq!(entries(directory.path()), vec!["members.csv"]);
}

#[tokio::test]
async fn failed_writes_leave_the_file_alone() {
    let content = "key,name\na,Anna\n";
    let (directory, file, mut connector) = open_members(content);
    let before = fs::metadata(&file).expect("the file").modified().expect("a modification time");
    let writes = [
        update("zz", "name", json!("Nobody"), None),
        update("a", "name", json!("Anne"), Some(json!("Someone else"))),
        update("a", "phone", json!("123"), None),
        Write::Create { fields: vec![FieldWrite { path: "key".into(), value: json!("a"), expected: None }] },
        Write::Create {
            fields: vec![FieldWrite { path: "phone".into(), value: json!("1"), expected: None }],
        },
        Write::Create {
            fields: vec![FieldWrite { path: "name".into(), value: json!("No Key"), expected: None }],
        },
        Write::Delete { id: RecordId::new("zz") },
    ];
    let results = connector.apply(&writes).await.expect("the batch runs");
    assert!(matches!(&results[0], Err(ConnectorError::NotFound { .. })), "{:?}", results[0]);
    assert!(matches!(&results[1], Err(ConnectorError::TargetMoved { .. })), "{:?}", results[1]);
    assert!(
        matches!(&results[2], Err(ConnectorError::Misconfigured { message }) if message.contains("phone")),
        "{:?}",
        results[2]
    );
    assert!(matches!(&results[3], Err(ConnectorError::AlreadyExists { .. })), "{:?}", results[3]);
    testkit::assert_rejected(&results[4], "phone");
    testkit::assert_rejected(&results[5], "key");
    assert!(matches!(&results[6], Err(ConnectorError::NotFound { .. })), "{:?}", results[6]);
    assert_eq!(fs::read_to_string(&file).expect("the file"), content);
    assert_eq!(fs::metadata(&file).expect("the file").modified().expect("a modification time"), before);
    assert_eq!(entries(directory.path()), vec!["members.csv"]);
}

#[cfg(unix)]
#[tokio::test]
async fn a_rewrite_keeps_the_files_permissions() {
    use std::os::unix::fs::PermissionsExt as _;
    let (_directory, file) = members_file("key,name\na,Anna\n");
    fs::set_permissions(&file, fs::Permissions::from_mode(0o640)).expect("permissions");
    let mut connector = CsvConnector::open(CsvConfig::new(&file, "key")).expect("a valid configuration");
    let results = connector.apply(&[update("a", "name", json!("Anne"), None)]).await.expect("the batch runs");
    assert!(results[0].is_ok());
    assert_eq!(fs::metadata(&file).expect("the file").permissions().mode() & 0o777, 0o640);
}

#[tokio::test]
async fn missing_columns_and_files_are_misconfigured() {
    let (directory, file, mut connector) = open_members("key,name\na,Anna\n");
    let error = connector
        .read_page(&ReadRequest { paths: paths(&["name", "email"]), since: None }, None)
        .await
        .expect_err("a missing column");
    assert!(
        matches!(&error, ConnectorError::Misconfigured { message } if message.contains("email") && message.contains("members.csv")),
        "{error:?}"
    );
    let probe = connector.check(&paths(&["name"])).await.expect("a good check");
    assert_eq!((probe.kind, probe.records), ("csv", Some(1)));
    assert!(!probe.capabilities.incremental);

    let mut connector = CsvConnector::open(CsvConfig::new(&file, "number")).expect("a valid configuration");
    let error = connector.check(&[]).await.expect_err("a missing key column");
    assert!(
        matches!(&error, ConnectorError::Misconfigured { message } if message.contains("number")),
        "{error:?}"
    );

    let missing = directory.path().join("missing.csv");
    let mut connector = CsvConnector::open(CsvConfig::new(&missing, "key")).expect("a valid configuration");
    let error = connector.lookup(&[], &Lookup::Ids(Vec::new())).await.expect_err("a missing file");
    assert!(
        matches!(&error, ConnectorError::Misconfigured { message } if message.contains("missing.csv")),
        "{error:?}"
    );
    let error = connector.apply(&[update("a", "name", json!("x"), None)]).await.expect_err("a missing file");
    assert!(!error.is_retryable(), "{error:?}");
    assert!(!missing.exists(), "the connector created the file");

    let mut config = CsvConfig::new(&file, "key");
    config.delimiter = Some('"');
    assert!(matches!(CsvConnector::open(config), Err(ConnectorError::Misconfigured { .. })));
}

#[tokio::test]
async fn broken_lines_are_malformed_with_file_and_line() {
    let directory = TempDir::new().expect("a temporary directory");
    let request = ReadRequest { paths: paths(&["name"]), since: None };
    for (name, content, line) in [
        ("fields.csv", "key,name\na,Anna\nb,Ben,extra\n", "line 3"),
        ("empty-key.csv", "key,name\na,Anna\n,Ben\n", "line 3"),
        ("repeated.csv", "key,name\na,Anna\nb,Ben\na,Again\n", "line 4"),
    ] {
        let file = write_file(&directory, name, content);
        let mut connector = CsvConnector::open(CsvConfig::new(&file, "key")).expect("a valid configuration");
        let error = connector.read_page(&request, None).await.expect_err("a broken file");
        assert!(
            matches!(&error, ConnectorError::Malformed { what, message } if what.contains(name) && what.contains(line) && !message.contains("Ben")),
            "{name}: {error:?}"
        );
    }
}

#[tokio::test]
async fn records_have_no_times_and_lookups_compare_text() {
    let (_directory, _file, mut connector) =
        open_members("key,name,city\n1,Anna,Köln\n2,Ben,Bonn\n3,Cleo,Köln\n");
    // The conformance suite checks that `since` is ignored; here the records carry no times.
    let read = connector
        .read_page(&ReadRequest { paths: paths(&["name"]), since: None }, None)
        .await
        .expect("a read");
    assert_eq!(read.records.len(), 3);
    assert!(read.records.iter().all(|record| record.modified.is_none() && !record.deleted));
    let found = connector
        .lookup(
            &paths(&["name"]),
            &Lookup::Key { path: "city".into(), values: vec!["Köln".into(), "Berlin".into()] },
        )
        .await
        .expect("a lookup");
    let ids: Vec<&str> = found.iter().map(|record| record.id.as_str()).collect();
    assert_eq!(ids, vec!["1", "3"]);
}
