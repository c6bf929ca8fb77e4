//! What is particular to PostgreSQL: rejections of one record in a batch that goes on, unique
//! violations on create, conditional writes that lose to another session, a connection killed
//! in mid-batch, a view read while the table is written, incremental pages through equal
//! times under an ICU collation (every record once, in the server's order), every column type, privileges, and a password
//! that never shows.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use fieldsync_connector::testkit::postgres::PostgresServer;
use fieldsync_connector::testkit::{TestRecord, assert_rejected, read_all};
use fieldsync_connector::{
    Connector, ConnectorError, ConnectorRecord, FieldWrite, Lookup, ReadRequest, Write, WriteOutcome,
};
use fieldsync_connector_postgres::{PostgresConfig, PostgresConnector};
use fieldsync_model::RecordId;
use fieldsync_postgres::Client;
use jiff::Timestamp;
use serde_json::{Value as Json, json};

use crate::{DATABASE, KeyStyle, client, fresh_schema, insert_members, members_schema, server};

/// A members table in a schema of its own, with a connection to edit it as another session.
struct Club {
    server: &'static PostgresServer,
    client: Client,
    schema: String,
}

impl Club {
    /// A fresh members table keyed as `key` holding `records`; `None` without a server.
    async fn new(key: KeyStyle, records: &[TestRecord]) -> Option<Club> {
        let server = server()?;
        let client = client(server).await;
        let schema = fresh_schema("club");
        client.batch_execute(&members_schema(&schema, key)).await.expect("the members table");
        insert_members(&client, &schema, records).await;
        Some(Club { server, client, schema })
    }

    /// The connector's settings for this club's members table, keyed by `key`.
    fn config(&self, key: &str) -> PostgresConfig {
        let mut config = PostgresConfig::new(self.server.url(DATABASE), "members", key);
        config.schema = Some(self.schema.clone());
        config.modified = Some("updated_at".into());
        config
    }

    fn connector(&self, key: &str) -> PostgresConnector {
        PostgresConnector::open(self.config(key)).expect("a valid configuration")
    }

    /// Runs statements in this club's schema.
    async fn sql(&self, statements: &str) {
        let statements = format!("SET search_path TO \"{}\"; {statements}; RESET search_path", self.schema);
        self.client.batch_execute(&statements).await.expect("the statements run");
    }

    /// The text of `column` of the member `member_no`, as PostgreSQL writes it; `None` for
    /// NULL or no such member.
    async fn value(&self, member_no: &str, column: &str) -> Option<String> {
        let sql = format!(r#"SELECT "{column}"::text FROM "{}".members WHERE member_no = $1"#, self.schema);
        let row = self.client.query_opt(&sql, &[&member_no]).await.expect("a member's value");
        row.and_then(|row| row.get(0))
    }
}

fn paths(names: &[&str]) -> Vec<String> {
    names.iter().map(|name| name.to_string()).collect()
}

fn field(path: &str, value: Json) -> FieldWrite {
    FieldWrite { path: path.into(), value, expected: None }
}

fn expecting(path: &str, value: Json, expected: Json) -> FieldWrite {
    FieldWrite { path: path.into(), value, expected: Some(expected) }
}

/// Every record by its member number, from a full read of `names` (the first must be
/// `member_no`).
async fn by_member_no(
    connector: &mut PostgresConnector,
    names: &[&str],
) -> BTreeMap<String, ConnectorRecord> {
    let read = read_all(connector, &ReadRequest { paths: paths(names), since: None }).await;
    read.into_iter()
        .map(|record| (record.values[0].as_str().expect("a member number").to_string(), record))
        .collect()
}

async fn apply(
    connector: &mut PostgresConnector,
    writes: &[Write],
) -> Vec<Result<WriteOutcome, ConnectorError>> {
    let results = connector.apply(writes).await.expect("the batch runs");
    assert_eq!(results.len(), writes.len());
    results
}

#[tokio::test]
async fn a_check_or_not_null_violation_rejects_only_its_record_while_the_rest_of_the_batch_is_written() {
    let Some(club) = Club::new(KeyStyle::Serial, &TestRecord::many(4)).await else { return };
    let mut connector = club.connector("id");
    let ids = by_member_no(&mut connector, &["member_no"]).await;
    let id = |member_no: &str| ids[member_no].id.clone();
    let new = |member_no: &str, first_name: Json, mobile: &str| Write::Create {
        fields: vec![
            field("member_no", json!(member_no)),
            field("first_name", first_name),
            field("email", json!(format!("{member_no}@example.org"))),
            field("mobile", json!(mobile)),
        ],
    };
    let writes = [
        Write::Update { id: id("m0001"), fields: vec![field("first_name", json!("Anaïs"))] },
        Write::Update { id: id("m0002"), fields: vec![field("mobile", json!("+44 20 7946 0958"))] },
        new("n0001", json!("Émile"), "+32470123456"),
        new("n0002", Json::Null, "+31612345678"),
        new("n0003", json!("Fenna"), "+31687654321"),
        Write::Update { id: id("m0003"), fields: vec![field("mobile", json!("+31611223344"))] },
    ];
    let results = apply(&mut connector, &writes).await;
    assert!(results[0].is_ok(), "{:?}", results[0]);
    assert_rejected(&results[1], "members_mobile_check");
    assert!(results[2].is_ok(), "{:?}", results[2]);
    assert_rejected(&results[3], "first_name");
    assert!(results[4].is_ok(), "{:?}", results[4]);
    assert!(results[5].is_ok(), "{:?}", results[5]);
    assert!(results.iter().flatten().all(|outcome| !outcome.id.as_str().is_empty()));
    assert!(!results[1].as_ref().unwrap_err().is_retryable(), "a rejection is not retryable");

    assert_eq!(club.value("m0001", "first_name").await.as_deref(), Some("Anaïs"));
    assert_ne!(club.value("m0002", "mobile").await.as_deref(), Some("+44 20 7946 0958"));
    assert_eq!(club.value("n0001", "first_name").await.as_deref(), Some("Émile"));
    assert_eq!(club.value("n0002", "first_name").await, None, "the rejected create made no record");
    assert_eq!(club.value("n0003", "mobile").await.as_deref(), Some("+31687654321"));
    assert_eq!(club.value("m0003", "mobile").await.as_deref(), Some("+31611223344"));
    // The ids the creates reported are the records' own.
    let found = connector
        .lookup(&paths(&["member_no"]), &Lookup::Ids(vec![results[4].as_ref().unwrap().id.clone()]))
        .await
        .expect("a lookup");
    assert_eq!(found[0].values, vec![json!("n0003")]);
}

#[tokio::test]
async fn a_duplicate_key_on_create_is_already_exists_with_the_existing_records_id() {
    let Some(club) = Club::new(KeyStyle::Serial, &TestRecord::many(3)).await else { return };
    let mut connector = club.connector("id");
    let ids = by_member_no(&mut connector, &["member_no"]).await;
    let create = |member_no: &str| Write::Create {
        fields: vec![field("member_no", json!(member_no)), field("first_name", json!("Sanne"))],
    };
    let results = apply(&mut connector, &[create("n0001"), create("m0002"), create("n0002")]).await;
    assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
    match &results[1] {
        Err(ConnectorError::AlreadyExists { id }) => assert_eq!(*id, ids["m0002"].id),
        other => panic!("a duplicate member number gave {other:?}"),
    }
    // A unique violation by an update is the table refusing the values, not a record there.
    let update =
        Write::Update { id: ids["m0001"].id.clone(), fields: vec![field("member_no", json!("m0003"))] };
    assert_rejected(&apply(&mut connector, &[update]).await[0], "members_member_no_key");

    let Some(club) = Club::new(KeyStyle::Text, &TestRecord::many(2)).await else { return };
    let mut connector = club.connector("member_no");
    match &apply(&mut connector, &[create("m0001")]).await[0] {
        Err(ConnectorError::AlreadyExists { id }) => assert_eq!(id.as_str(), "m0001"),
        other => panic!("a duplicate primary key gave {other:?}"),
    }
    assert_eq!(club.value("m0001", "first_name").await.as_deref(), Some("Member 1"));
}

#[tokio::test]
async fn a_conditional_update_that_lost_to_a_concurrent_edit_writes_nothing() {
    let Some(club) = Club::new(KeyStyle::Serial, &TestRecord::many(3)).await else { return };
    let mut connector = club.connector("id");
    let columns = ["member_no", "first_name", "email", "teams", "preferences", "birth_date", "contribution"];
    let read = by_member_no(&mut connector, &columns).await;
    let before = &read["m0001"];

    // Another session edits the record between the read and the write.
    club.sql("UPDATE members SET first_name = 'Marloes' WHERE member_no = 'm0001'").await;
    let lost = Write::Update {
        id: before.id.clone(),
        fields: vec![
            expecting("first_name", json!("Marleen"), before.values[1].clone()),
            expecting("email", json!("marleen@example.org"), before.values[2].clone()),
        ],
    };
    match &apply(&mut connector, &[lost]).await[0] {
        Err(ConnectorError::TargetMoved { id }) => assert_eq!(*id, before.id),
        other => panic!("a write that lost to another session gave {other:?}"),
    }
    assert_eq!(club.value("m0001", "first_name").await.as_deref(), Some("Marloes"));
    assert_eq!(club.value("m0001", "email").await.as_deref(), Some("member1@example.org"));

    // Expected values of every type, as a read gave them, still hold on the other record.
    let other = &read["m0002"];
    let fields = (1..columns.len())
        .map(|index| {
            let value =
                if columns[index] == "first_name" { json!("Mirthe") } else { other.values[index].clone() };
            expecting(columns[index], value, other.values[index].clone())
        })
        .collect();
    let results = apply(&mut connector, &[Write::Update { id: other.id.clone(), fields }]).await;
    assert!(results[0].is_ok(), "expected values as read did not hold: {:?}", results[0]);
    assert_eq!(club.value("m0002", "first_name").await.as_deref(), Some("Mirthe"));
}

#[tokio::test]
async fn a_connection_killed_in_mid_batch_is_retryable_and_keeps_nothing_of_the_batch() {
    let Some(club) = Club::new(KeyStyle::Text, &TestRecord::many(4)).await else { return };
    // The third write of the batch waits in a trigger, long enough to be killed there.
    club.sql(
        "CREATE FUNCTION pause() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN PERFORM pg_sleep(30); RETURN NEW; END $$; \
         CREATE TRIGGER members_pause BEFORE UPDATE ON members FOR EACH ROW \
         WHEN (NEW.member_no = 'm0003') EXECUTE FUNCTION pause()",
    )
    .await;
    let mut config = club.config("member_no");
    config.url = fieldsync_connector_postgres::DatabaseUrl::new(format!(
        "{}?application_name={}",
        club.server.url(DATABASE),
        club.schema
    ));
    let mut connector = PostgresConnector::open(config).expect("a valid configuration");
    let writes: Vec<Write> = ["m0001", "m0002", "m0003", "m0004"]
        .into_iter()
        .map(|id| Write::Update { id: RecordId::new(id), fields: vec![field("first_name", json!("Noor"))] })
        .collect();
    let batch = writes.clone();
    let applying = tokio::spawn(async move {
        let result = connector.apply(&batch).await;
        (connector, result)
    });

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let killed = club
            .client
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE application_name = $1 AND wait_event = 'PgSleep'",
                &[&club.schema],
            )
            .await
            .expect("a look at the server's sessions");
        if !killed.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "the batch never reached its third write");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (mut connector, result) = applying.await.expect("the batch's task");
    match result {
        Err(error) => assert!(error.is_retryable(), "a killed connection gave {error:?}, not retryable"),
        Ok(results) => panic!("a batch whose connection was killed reported {results:?}"),
    }
    assert_eq!(
        club.value("m0001", "first_name").await.as_deref(),
        Some("Member 1"),
        "the batch was kept in part"
    );

    // The next call connects again, and the same batch goes through.
    club.sql("DROP TRIGGER members_pause ON members").await;
    let results = apply(&mut connector, &writes).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    for member_no in ["m0001", "m0004"] {
        assert_eq!(club.value(member_no, "first_name").await.as_deref(), Some("Noor"));
    }
}

#[tokio::test]
async fn a_view_is_read_while_the_table_is_written() {
    let Some(club) = Club::new(KeyStyle::Serial, &TestRecord::many(3)).await else { return };
    let mut config = club.config("id");
    config.view = Some("members_export".into());
    config.deleted = Some("deleted_at".into());
    let mut connector = PostgresConnector::open(config).expect("a valid configuration");
    let names = ["member_no", "first_name", "full_name"];
    let read = by_member_no(&mut connector, &names).await;
    let id = read["m0002"].id.clone();
    let write = Write::Update { id: id.clone(), fields: vec![field("first_name", json!("Léa"))] };
    assert!(apply(&mut connector, &[write]).await[0].is_ok());
    let found = connector.lookup(&paths(&names), &Lookup::Ids(vec![id.clone()])).await.expect("a lookup");
    let last_name = club.value("m0002", "last_name").await.unwrap_or_default();
    assert_eq!(found[0].values[2], json!(format!("Léa {last_name}").trim()), "the view shows the write");

    // A column only the view has cannot be written, and says so; the batch goes on.
    let writes = [
        Write::Update { id: id.clone(), fields: vec![field("full_name", json!("Someone Else"))] },
        Write::Delete { id: id.clone() },
    ];
    let results = apply(&mut connector, &writes).await;
    assert!(
        matches!(&results[0], Err(ConnectorError::Misconfigured { message }) if message.contains("full_name"))
    );
    assert!(results[1].is_ok(), "{:?}", results[1]);
    let found = connector.lookup(&paths(&names), &Lookup::Ids(vec![id])).await.expect("a lookup");
    assert!(found[0].deleted, "the soft delete shows through the view");
}

#[tokio::test]
async fn incremental_reads_page_by_time_then_key_through_many_equal_times_whatever_the_collation() {
    // Keys whose byte order differs from the server's collation (ICU `en`): pages follow the
    // server's order, which its index serves, and every record comes exactly once.
    let prefixes = ["a", "B", "_", "b", "A", "z", "Z", "é", "0"];
    let records: Vec<TestRecord> = (0..45)
        .map(|number| TestRecord {
            key: format!("{}{number:02}", prefixes[number % prefixes.len()]),
            name: format!("Lid {number}"),
            email: format!("lid{number}@example.org"),
        })
        .collect();
    let Some(club) = Club::new(KeyStyle::Text, &records).await else { return };
    let mut config = club.config("member_no");
    config.batch_size = Some(7);
    let mut connector = PostgresConnector::open(config).expect("a valid configuration");
    let mut every_key: Vec<String> = records.iter().map(|record| record.key.clone()).collect();
    every_key.sort();

    let every = ReadRequest { paths: paths(&["member_no"]), since: None };
    let full = read_all(&mut connector, &every).await;
    let keys = |records: &[ConnectorRecord]| -> Vec<String> {
        let mut keys: Vec<String> = records.iter().map(|record| record.id.as_str().to_string()).collect();
        keys.sort();
        keys
    };
    assert_eq!(keys(&full), every_key, "a full read lists every record once");
    assert_eq!(full.len(), records.len());
    let shared = full[0].modified.expect("a modified time");
    assert!(full.iter().all(|record| record.modified == Some(shared)), "one insert, one time");

    let since =
        ReadRequest { paths: paths(&["member_no"]), since: Some(fieldsync_connector::Since::Time(shared)) };
    let again = read_all(&mut connector, &since).await;
    assert_eq!((keys(&again), again.len()), (every_key.clone(), records.len()), "every record once");

    // Three records edited later (the trigger gives each its own time); only they come back.
    club.sql("UPDATE members SET first_name = 'Bewerkt' WHERE member_no IN ('B01', '_02', 'é07')").await;
    let edited = read_all(&mut connector, &every).await;
    let times: Vec<Timestamp> =
        edited.iter().filter_map(|record| record.modified).filter(|modified| *modified > shared).collect();
    assert_eq!(times.len(), 3, "three records were edited");
    let earliest = times.iter().min().copied();
    let since =
        ReadRequest { paths: paths(&["member_no"]), since: earliest.map(fieldsync_connector::Since::Time) };
    let mut found = keys(&read_all(&mut connector, &since).await);
    found.sort();
    assert_eq!(found, ["B01", "_02", "é07"]);
    let later = times.iter().max().copied().expect("three times");
    let after = ReadRequest {
        paths: paths(&["member_no"]),
        since: Some(fieldsync_connector::Since::Time(
            later.checked_add(jiff::SignedDuration::from_micros(1)).expect("in range"),
        )),
    };
    assert!(read_all(&mut connector, &after).await.is_empty());
}

#[tokio::test]
async fn values_of_every_column_type_are_read_and_written_as_documented() {
    let Some(server) = server() else { return };
    let client = client(server).await;
    let schema = fresh_schema("types");
    client
        .batch_execute(&format!(
            r#"CREATE SCHEMA "{schema}";
            SET search_path TO "{schema}";
            CREATE TYPE status AS ENUM ('actief', 'opgezegd');
            CREATE DOMAIN postcode AS text CHECK (VALUE ~ '^[0-9]{{4}} ?[A-Z]{{2}}$');
            CREATE TABLE members (
                member_no varchar(10) PRIMARY KEY,
                note text, amount numeric(8, 2), born date, seen timestamptz, local_time timestamp,
                doc jsonb, raw json, tags text[], numbers int[], flag boolean, ref uuid,
                ratio double precision, status status, code postcode, changed timestamp
            );
            INSERT INTO members VALUES
                ('r1', '', 187.50, '2011-04-30', '2024-05-01 14:00:00+02', '2024-05-01 12:00:00.25',
                 '{{"kledingmaat": "M", "ouders": ["Els"]}}', '{{"b": 1}}', ARRAY['JO13-1', 'Meiden "A"'],
                 ARRAY[7, NULL], true, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 0.5, 'actief', '1234 AB',
                 '2024-05-01 12:00:00'),
                ('r2', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                 '2024-05-01 12:00:01');
            RESET search_path;"#
        ))
        .await
        .expect("the table of every type");
    let columns = [
        "member_no",
        "note",
        "amount",
        "born",
        "seen",
        "local_time",
        "doc",
        "raw",
        "tags",
        "numbers",
        "flag",
        "ref",
        "ratio",
        "status",
        "code",
    ];
    let mut config = PostgresConfig::new(server.url(DATABASE), "members", "member_no");
    config.schema = Some(schema.clone());
    // A `timestamp` column holds UTC.
    config.modified = Some("changed".into());
    let mut connector = PostgresConnector::open(config).expect("a valid configuration");
    let read = by_member_no(&mut connector, &columns).await;
    let first = json!([
        "r1", "", "187.50", "2011-04-30", "2024-05-01T12:00:00Z", "2024-05-01T12:00:00.25",
        {"kledingmaat": "M", "ouders": ["Els"]}, {"b": 1}, ["JO13-1", "Meiden \"A\""], [7, null], true,
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", 0.5, "actief", "1234 AB"
    ]);
    assert_eq!(Json::from(read["r1"].values.clone()), first);
    let mut nulls = vec![json!("r2")];
    nulls.resize(columns.len(), Json::Null);
    assert_eq!(read["r2"].values, nulls, "NULL is null, and not the empty text of r1");
    assert_eq!(read["r1"].modified, Some("2024-05-01T12:00:00Z".parse::<Timestamp>().unwrap()));

    // What a read gives, written to the other record, reads back the same.
    let copy = Write::Update {
        id: RecordId::new("r2"),
        fields: (1..columns.len())
            .map(|index| field(columns[index], read["r1"].values[index].clone()))
            .collect(),
    };
    assert!(apply(&mut connector, &[copy]).await[0].is_ok());
    let again = by_member_no(&mut connector, &columns).await;
    assert_eq!(again["r2"].values[1..], read["r1"].values[1..]);

    // Other spellings PostgreSQL reads into the column's type.
    let spelled = Write::Update {
        id: RecordId::new("r2"),
        fields: vec![
            field("amount", json!(12.5)),
            field("flag", json!("no")),
            field("tags", json!("[\"JO9-2\"]")),
            field("seen", json!("2024-06-01T08:30:00+02:00")),
            field("doc", json!("tekst")),
        ],
    };
    assert!(apply(&mut connector, &[spelled]).await[0].is_ok());
    let again = by_member_no(&mut connector, &["member_no", "amount", "flag", "tags", "seen", "doc"]).await;
    assert_eq!(
        again["r2"].values,
        [
            json!("r2"),
            json!("12.50"),
            json!(false),
            json!(["JO9-2"]),
            json!("2024-06-01T06:30:00Z"),
            json!("tekst")
        ]
    );
    // A value the type or domain refuses is the system's rejection of that record.
    for (column, refused) in [("code", "12345"), ("status", "geschorst"), ("born", "31-02-2011")] {
        let write = Write::Update { id: RecordId::new("r1"), fields: vec![field(column, json!(refused))] };
        let result = &apply(&mut connector, &[write]).await[0];
        assert!(matches!(result, Err(ConnectorError::Rejected { .. })), "{column}: {result:?}");
    }

    // The modified column, without a time zone, is compared as UTC.
    let instant: Timestamp = "2024-05-01T12:00:01Z".parse().unwrap();
    let since =
        ReadRequest { paths: paths(&["member_no"]), since: Some(fieldsync_connector::Since::Time(instant)) };
    let found = read_all(&mut connector, &since).await;
    assert!(
        found.iter().any(|record| record.id.as_str() == "r2")
            && found.iter().all(|record| record.id.as_str() != "r1")
    );
}

#[tokio::test]
async fn check_reports_the_records_and_names_what_is_missing() {
    let Some(club) = Club::new(KeyStyle::Serial, &TestRecord::many(3)).await else { return };
    let mut connector = club.connector("id");
    let probe = connector.check(&paths(&["member_no", "email", "teams"])).await.expect("a working table");
    assert_eq!((probe.kind, probe.records), ("postgres", Some(3)));
    assert!(probe.target.contains(&format!("{}.members", club.schema)), "{}", probe.target);

    let error = connector.check(&paths(&["member_no", "e_mail"])).await.expect_err("a missing column");
    assert!(
        matches!(&error, ConnectorError::Misconfigured { message } if message.contains("e_mail")),
        "{error:?}"
    );
    let mut config = club.config("id");
    config.table = "leden".into();
    let error = PostgresConnector::open(config).unwrap().check(&[]).await.expect_err("a missing table");
    assert!(
        matches!(&error, ConnectorError::Misconfigured { message } if message.contains("leden")),
        "{error:?}"
    );
    let mut config = club.config("id");
    config.modified = Some("birth_date".into());
    let error = PostgresConnector::open(config).unwrap().check(&[]).await.expect_err("a date as modified");
    assert!(
        matches!(&error, ConnectorError::Misconfigured { message } if message.contains("birth_date")),
        "{error:?}"
    );

    // A user who may only read the table is told what it lacks.
    let role = format!("viewer_{}", club.schema);
    club.sql(&format!(
        "CREATE ROLE {role} LOGIN; GRANT USAGE ON SCHEMA \"{schema}\" TO {role}; \
         GRANT SELECT ON members TO {role}",
        schema = club.schema
    ))
    .await;
    let mut config = club.config("id");
    config.url = fieldsync_connector_postgres::DatabaseUrl::new(format!(
        "postgres://{role}@127.0.0.1:{}/{DATABASE}",
        club.server.port()
    ));
    let error = PostgresConnector::open(config).unwrap().check(&[]).await.expect_err("a reader only");
    match &error {
        ConnectorError::Misconfigured { message } => {
            for privilege in ["INSERT", "UPDATE", "DELETE"] {
                assert!(message.contains(privilege), "{message}");
            }
            assert!(!message.contains("SELECT"), "{message}");
        }
        other => panic!("a user without write privileges gave {other:?}"),
    }
}

#[tokio::test]
async fn the_password_never_appears_in_errors_or_debug_output() {
    const PASSWORD: &str = "Wachtw00rd-Geheim";
    // A port nothing listens on: bind one, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("postgres://sync:{PASSWORD}@127.0.0.1:{port}/club?connect_timeout=2");
    let mut connector = PostgresConnector::open(PostgresConfig::new(url, "members", "id")).unwrap();
    let error =
        connector.read_page(&ReadRequest { paths: paths(&["email"]), since: None }, None).await.unwrap_err();
    assert!(error.is_retryable(), "{error:?}");
    for shown in [error.to_string(), format!("{error:?}"), format!("{connector:?}")] {
        assert!(!shown.contains(PASSWORD), "{shown}");
        assert!(shown.contains("sync@127.0.0.1"), "{shown}");
    }

    let Some(club) = Club::new(KeyStyle::Serial, &TestRecord::many(1)).await else { return };
    // The test server trusts loopback, so the password is accepted and goes unchecked.
    let url = format!(
        "postgres://{}:{PASSWORD}@127.0.0.1:{}/{DATABASE}",
        fieldsync_connector::testkit::postgres::SUPERUSER,
        club.server.port()
    );
    let mut config = club.config("id");
    config.url = fieldsync_connector_postgres::DatabaseUrl::new(url);
    let mut connector = PostgresConnector::open(config.clone()).unwrap();
    let probe = connector.check(&[]).await.expect("a working table");
    let mut missing = config;
    missing.table = "leden".into();
    let error = PostgresConnector::open(missing).unwrap().check(&[]).await.unwrap_err();
    let rejected = &apply(
        &mut connector,
        &[Write::Create { fields: vec![field("member_no", json!("n1")), field("email", json!(PASSWORD))] }],
    )
    .await[0];
    let rejected = rejected.as_ref().unwrap_err();
    for shown in [
        probe.target.clone(),
        error.to_string(),
        format!("{error:?}"),
        format!("{connector:?}"),
        rejected.to_string(),
    ] {
        assert!(!shown.contains(PASSWORD), "{shown}");
    }
}
