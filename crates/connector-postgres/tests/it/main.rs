//! The postgres connector against a real PostgreSQL (`testkit::postgres::PostgresServer`, one
//! per test binary): the conformance suite in `connector.rs`, what is particular to
//! PostgreSQL in `postgres.rs`. Every fixture makes its tables in a schema of its own, so the
//! tests share the server and run side by side.

mod connector;
mod postgres;

use std::sync::atomic::{AtomicUsize, Ordering};

use fieldsync_connector::testkit::postgres::{PostgresServer, SHARED_DATABASE};
use fieldsync_connector::testkit::{Fixture, RejectedValue, TestPaths, TestRecord, TypedPaths};
use fieldsync_connector_postgres::{PostgresConfig, PostgresConnector};
use fieldsync_postgres::Client;
use serde_json::{Value as Json, json};

/// The database every test makes its schemas in.
const DATABASE: &str = SHARED_DATABASE;

/// The server of this test binary (`PostgresServer::shared`); `None` (after a `SKIPPED:` line)
/// when the machine has no PostgreSQL.
fn server() -> Option<&'static PostgresServer> {
    PostgresServer::shared()
}

/// A schema name no other test of this binary uses.
fn fresh_schema(purpose: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(1);
    format!("{purpose}_{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A connection to the test database, as the platform's own application would make one.
async fn client(server: &PostgresServer) -> Client {
    fieldsync_postgres::connect(&server.url(DATABASE)).await.expect("a connection to the test server")
}

/// How a fixture's members table is keyed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyStyle {
    /// `id serial`, the connector's key; the link key is `member_no`, unique.
    Serial,
    /// `member_no text`, both the connector's key and the link key.
    Text,
}

/// The members table of a club platform, in `schema`: a serial or text key, names with
/// accents, e-mail and a Dutch or Belgian mobile number (each under a CHECK), a birth date, a
/// boolean, jsonb, text[], a numeric contribution, `updated_at` kept by a trigger and a
/// `deleted_at`; NOT NULL names with empty defaults. The view `members_export` shows the
/// members with a computed `full_name`.
fn members_schema(schema: &str, key: KeyStyle) -> String {
    let key_columns = match key {
        KeyStyle::Serial => "id serial PRIMARY KEY, member_no text NOT NULL UNIQUE",
        KeyStyle::Text => "member_no text PRIMARY KEY",
    };
    format!(
        r#"CREATE SCHEMA "{schema}";
        SET search_path TO "{schema}";
        CREATE TABLE members (
            {key_columns},
            first_name text NOT NULL DEFAULT '',
            last_name text NOT NULL DEFAULT '',
            email text CONSTRAINT members_email_check CHECK (email ~ '^[^@[:space:]]+@[^@[:space:]]+\.[^@[:space:]]+$'),
            mobile text CONSTRAINT members_mobile_check CHECK (mobile ~ '^\+3[12][0-9]{{9}}$'),
            birth_date date,
            shirt_number integer,
            newsletter boolean NOT NULL DEFAULT false,
            teams text[] NOT NULL DEFAULT '{{}}',
            preferences jsonb NOT NULL DEFAULT '{{}}',
            contribution numeric(8, 2),
            updated_at timestamptz NOT NULL DEFAULT now(),
            deleted_at timestamptz
        );
        CREATE INDEX members_updated_at ON members (updated_at);
        CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            NEW.updated_at := clock_timestamp();
            RETURN NEW;
        END $$;
        CREATE TRIGGER members_touch BEFORE UPDATE ON members FOR EACH ROW EXECUTE FUNCTION touch();
        CREATE VIEW members_export AS
            SELECT *, trim(first_name || ' ' || last_name) AS full_name FROM members;
        RESET search_path;"#
    )
}

/// Inserts `records` into `schema`'s members table in one statement, in one transaction (so
/// they share one `updated_at`), with the rest of each member made up from its number: last
/// names with accents, mobile numbers from both numbering plans or none, birth dates, teams.
async fn insert_members(client: &Client, schema: &str, records: &[TestRecord]) {
    let keys: Vec<&str> = records.iter().map(|record| record.key.as_str()).collect();
    let names: Vec<&str> = records.iter().map(|record| record.name.as_str()).collect();
    let emails: Vec<&str> = records.iter().map(|record| record.email.as_str()).collect();
    let sql = format!(
        r#"INSERT INTO "{schema}".members
            (member_no, first_name, email, last_name, mobile, birth_date, newsletter, teams, preferences, contribution)
        SELECT k, n, e,
            (ARRAY['de Vries', 'Müller', 'Dupré', 'Çelik', 'Janssens', 'van den Berg', ''])[1 + i % 7],
            CASE i % 3 WHEN 0 THEN NULL
                WHEN 1 THEN '+316' || lpad((12345000 + i)::text, 8, '0')
                ELSE '+3247' || lpad((1234000 + i)::text, 7, '0') END,
            date '2008-01-01' + (i * 37 % 4000)::int,
            i % 2 = 0,
            CASE WHEN i % 4 = 0 THEN '{{}}'::text[] ELSE ARRAY['JO' || (9 + i % 8)::text || '-1'] END,
            jsonb_build_object('kledingmaat', (ARRAY['S', 'M', 'L'])[1 + i % 3]),
            CASE WHEN i % 5 = 0 THEN NULL ELSE 187.50 END
        FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS r(k, n, e, i)"#
    );
    client.execute(&sql, &[&keys, &names, &emails]).await.expect("the test members");
}

/// Fresh members tables for the conformance suite, keyed one way or the other, with or
/// without a soft-delete column, a modified column and a view to read from.
struct ClubFixture {
    client: Option<Client>,
    schema: String,
    key: KeyStyle,
    soft_delete: bool,
    modified: bool,
    view: bool,
}

impl ClubFixture {
    fn new(key: KeyStyle) -> Self {
        Self { client: None, schema: String::new(), key, soft_delete: false, modified: true, view: false }
    }
}

impl Fixture for ClubFixture {
    type Connector = PostgresConnector;

    async fn open(&mut self, records: &[TestRecord]) -> PostgresConnector {
        let server = server().expect("the conformance tests start only with a server");
        if self.client.is_none() {
            self.client = Some(client(server).await);
        }
        let client = self.client.as_ref().expect("connected above");
        self.schema = fresh_schema("conformance");
        client.batch_execute(&members_schema(&self.schema, self.key)).await.expect("the members table");
        insert_members(client, &self.schema, records).await;
        let key = match self.key {
            KeyStyle::Serial => "id",
            KeyStyle::Text => "member_no",
        };
        let mut config = PostgresConfig::new(server.url(DATABASE), "members", key);
        config.schema = Some(self.schema.clone());
        config.view = self.view.then(|| "members_export".to_string());
        config.modified = self.modified.then(|| "updated_at".to_string());
        config.deleted = self.soft_delete.then(|| "deleted_at".to_string());
        config.batch_size = Some(100);
        PostgresConnector::open(config).expect("a valid configuration")
    }

    async fn edit(&mut self, key: &str, path: &str, value: Json) {
        let client = self.client.as_ref().expect("a fixture is opened before it is edited");
        let value = value.as_str().expect("the suite edits text").to_string();
        let sql = format!(r#"UPDATE "{}".members SET "{path}" = $1 WHERE member_no = $2"#, self.schema);
        let changed = client.execute(&sql, &[&value, &key]).await.expect("an edit");
        assert_eq!(changed, 1, "the edited record {key} exists");
    }

    fn paths(&self) -> TestPaths {
        TestPaths { key: "member_no".into(), name: "first_name".into(), email: "email".into() }
    }

    fn typed_paths(&self) -> Option<TypedPaths> {
        Some(TypedPaths { number: "shirt_number".into(), flag: "newsletter".into(), list: "teams".into() })
    }

    fn rejected_value(&self) -> Option<RejectedValue> {
        Some(RejectedValue { path: "email".into(), value: json!("not-an-email") })
    }
}
