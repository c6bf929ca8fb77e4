//! The `fieldsync` binary with PostgreSQL on one side and as its state store, against a real
//! server (`testkit::postgres`, the system's own, one per test): the README's example as written;
//! a club's SQLite table and a platform's `members` table kept in step through a first sync,
//! edits on both sides, a soft delete and a row PostgreSQL's CHECK refuses, with the state in a
//! schema of PostgreSQL and the password only in `${NAME}`; a PostgreSQL table and a real Django
//! REST Framework site kept in step both ways; and `fieldsync check` naming a missing privilege
//! and a wrong table.

use std::collections::BTreeMap;
use std::process::Output;

use fieldsync_connector::testkit::django::{DjangoOptions, DjangoServer};
use fieldsync_connector::testkit::postgres::PostgresServer;
use fieldsync_test_support::members::{fields_toml, link_toml, member_fields_toml, sqlite_connector_toml};
use fieldsync_test_support::{Fieldsync, json, readme_blocks};
use rusqlite::{Connection, params};
use serde_json::{Map, Value, json};

use crate::support::{assert_quiet_runs, django_backend_toml, fieldsync as binary};

/// The password of the role fieldsync connects as. The test server trusts loopback
/// connections, so any password is accepted; it is passed through `${NAME}` all the same, as a
/// user passes it, and checked never to show.
const PASSWORD: &str = "Vlieland-Terschelling-1953";

/// The tracked fields of a member on both sides of the first test's link, with their types.
const MEMBER_FIELDS: [(&str, &str); 7] = [
    ("first_name", "text"),
    ("last_name", "text"),
    ("email", "email"),
    ("mobile", "phone"),
    ("birth_date", "date"),
    ("active", "bool"),
    ("teams", "json"),
];

/// Runs the command with `args` to its end and checks that the password shows neither in what
/// it printed nor in its logs.
fn output(fieldsync: &Fieldsync<'_>, args: &[&str]) -> Output {
    let output = fieldsync.output(args);
    assert_no_password(&output, &format!("fieldsync {args:?}"));
    output
}

/// `fieldsync` with `args`, ending with exit code `code`: what it printed on stdout and on
/// stderr.
fn ended(fieldsync: &Fieldsync<'_>, args: &[&str], code: i32) -> (String, String) {
    let output = output(fieldsync, args);
    let (stdout, stderr) = (stdout(&output), stderr(&output));
    assert_eq!(output.status.code(), Some(code), "fieldsync {args:?}: {stdout}{stderr}");
    (stdout, stderr)
}

/// `fieldsync run --json` and `args` for `step`, ending with exit code `code`: its report,
/// which must not show the password (its logs are checked by `Fieldsync::run`).
fn run(fieldsync: &Fieldsync<'_>, step: &str, args: &[&str], code: i32) -> Value {
    let run = fieldsync.run_ending(step, args, code);
    assert!(!run.json.to_string().contains(PASSWORD), "{step}: the password reached the report");
    run.report()
}

fn assert_no_password(output: &Output, what: &str) {
    for (stream, text) in [("output", &output.stdout), ("logs", &output.stderr)] {
        assert!(
            !String::from_utf8_lossy(text).contains(PASSWORD),
            "{what}: the password reached its {stream}"
        );
    }
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The rows `query` selects in `database`, each as a JSON object of its columns.
fn pg_rows(server: &PostgresServer, database: &str, query: &str) -> Vec<Map<String, Value>> {
    let text = server.sql(database, &format!("SELECT row_to_json(selected)::text FROM ({query}) selected"));
    text.lines()
        .filter(|line| !line.is_empty())
        .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("{line}: {error}")))
        .collect()
}

/// The one value `query` selects in `database`, as psql prints it.
fn pg_value(server: &PostgresServer, database: &str, query: &str) -> String {
    server.sql(database, query)
}

/// A field's value in one comparable form, whichever side holds it: text trimmed (`null` and
/// `""` the same), an e-mail address lower-cased, a phone number in E.164 (a national one is
/// Dutch), a date in ISO 8601 (`dd-mm-yyyy` read too), a boolean, a number or null, a JSON list
/// (`null` and `[]` the same, JSON text read).
fn comparable(field: &str, value: &Value) -> Value {
    let text = match value {
        Value::Null => String::new(),
        Value::String(text) => text.trim().to_string(),
        other => other.to_string(),
    };
    match field {
        "email" => json!(text.to_lowercase()),
        "mobile" => {
            let digits: String = text.chars().filter(char::is_ascii_digit).collect();
            if text.starts_with('+') {
                json!(format!("+{digits}"))
            } else if let Some(national) = digits.strip_prefix('0') {
                json!(format!("+31{national}"))
            } else {
                json!(text)
            }
        }
        "birth_date" => match text.split('-').collect::<Vec<_>>()[..] {
            [day, month, year] if year.len() == 4 => json!(format!("{year}-{month}-{day}")),
            _ => json!(text),
        },
        "active" => match value {
            Value::Bool(flag) => json!(flag),
            Value::Number(number) => json!(number.as_i64() != Some(0)),
            other => panic!("{other} is no boolean"),
        },
        "shirt_number" => value.clone(),
        "teams" | "tags" => match value {
            Value::Null => json!([]),
            Value::String(text) => {
                serde_json::from_str(text).unwrap_or_else(|error| panic!("{text}: {error}"))
            }
            other => other.clone(),
        },
        _ => json!(text),
    }
}

/// Records by their link key, each field in its comparable form.
type Records = BTreeMap<String, BTreeMap<String, Value>>;

fn records(rows: Vec<Map<String, Value>>, key: &str, fields: &[&str]) -> Records {
    rows.into_iter()
        .map(|row| {
            let values =
                fields.iter().map(|field| (field.to_string(), comparable(field, &row[*field]))).collect();
            (row[key].as_str().expect("a text key").to_string(), values)
        })
        .collect()
}

/// Asserts that both sides hold the same records with the same values, field by field.
fn assert_same(left: &Records, right: &Records) {
    assert_eq!(
        left.keys().collect::<Vec<_>>(),
        right.keys().collect::<Vec<_>>(),
        "the sides hold other records"
    );
    for (key, values) in left {
        for (field, value) in values {
            assert_eq!(value, &right[key][field], "record {key}, field {field}: the sides differ");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The README's example
// ---------------------------------------------------------------------------------------------

/// The README's PostgreSQL example: its configuration, the platform's table and user, and the
/// state store's user, with the test server's address in place of the example's hosts.
fn readme_example(server: &PostgresServer) -> (String, String, String) {
    let config = readme_blocks("## PostgreSQL\n", "toml").remove(0);
    let address = format!("127.0.0.1:{}", server.port());
    for host in ["db.club.example", "db.platform.example"] {
        assert!(config.contains(host), "the example's address {host} changed");
    }
    let config = config.replace("db.club.example", &address).replace("db.platform.example", &address);
    let mut sql = readme_blocks("## PostgreSQL\n", "sql").into_iter();
    (config, sql.next().expect("the platform's SQL"), sql.next().expect("the state store's SQL"))
}

#[test]
fn the_readme_postgresql_example_runs_as_written() {
    let Some(server) = PostgresServer::start() else { return };
    let (config, platform_sql, state_sql) = readme_example(&server);
    server.create_database("platform");
    server.create_database("fieldsync");
    server.sql("platform", &platform_sql);
    server.sql("fieldsync", &state_sql);
    server.sql(
        "platform",
        "INSERT INTO members (knvb_id, email, mobile, birth_date, teams, updated_at)
         VALUES ('BBKX204', 'femke.meijer@example.nl', '+31628765432', '2010-06-21', '{MO15-1}', now() - interval '1 day')",
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("fieldsync.toml"), config).unwrap();
    let club = Connection::open(dir.path().join("club.db")).unwrap();
    club.execute_batch(
        "CREATE TABLE members (knvb_id TEXT PRIMARY KEY, email TEXT, mobile TEXT, birth_date TEXT, teams TEXT,
                               updated_at TEXT NOT NULL);
         INSERT INTO members VALUES
             ('BBKX101', 'anouk.devries@example.nl', '06-21234567', '14-03-2009', '[\"JO15-1\"]', datetime('now', '-1 day')),
             ('BBKX102', NULL, '+32 470 12 34 56', '02-11-1987', '[\"Veteranen\",\"Zaalvoetbal\"]', datetime('now', '-1 day')),
             ('BBKX103', 'noe.peeters@example.be', '06-29876543', NULL, '[]', datetime('now', '-1 day'));",
    )
    .unwrap();
    let state_password = "Utrecht-Lunetten-1921";
    let fieldsync = binary(dir.path())
        .secret("FIELDSYNC_DB_PASSWORD", state_password)
        .secret("PLATFORM_DB_PASSWORD", PASSWORD)
        .log(|| server.log_tail());
    ended(&fieldsync, &["check"], 0);
    let first = run(&fieldsync, "the README's example", &[], 0);
    assert_eq!(first["stats"]["writes_done"], json!(4), "{first:#}");
    assert_eq!(
        pg_value(
            &server,
            "platform",
            "SELECT mobile || ' ' || birth_date || ' ' || teams::text FROM members WHERE knvb_id = 'BBKX102'"
        ),
        "+32470123456 1987-11-02 {Veteranen,Zaalvoetbal}"
    );
    assert_eq!(club_value(&club, 204, "birth_date").as_deref(), Some("21-06-2010"));
    assert_eq!(club_value(&club, 204, "teams").as_deref(), Some("[\"MO15-1\"]"));
    assert_quiet_runs(&fieldsync);

    // The offline commands need the state store's password alone.
    let offline = binary(dir.path()).secret("FIELDSYNC_DB_PASSWORD", state_password);
    let status = json(&offline.output(&["status", "--json"]));
    assert_eq!((&status[0]["records"], &status[0]["in_step"]), (&json!(4), &json!(true)), "{status:#}");
    assert_eq!(
        pg_value(
            &server,
            "fieldsync",
            "SELECT count(*) || ' ' || min(pg_get_userbyid(relowner)) FROM pg_class WHERE relnamespace = 'club_utrecht'::regnamespace AND relname = 'runs'"
        ),
        "1 club_utrecht",
        "the state store's tables are in the deployment's schema, owned by its user"
    );
}

// ---------------------------------------------------------------------------------------------
// SQLite ↔ PostgreSQL, with the state store in PostgreSQL
// ---------------------------------------------------------------------------------------------

const FIRST_NAMES: [&str; 20] = [
    "Anouk", "Joëlle", "Daan", "Sem", "Lotte", "Fenna", "Maël", "Noé", "Thijs", "Saar", "Zoë", "Ruben",
    "Émile", "Inès", "Bram", "Femke", "Jeroen", "Sofie", "Wouter", "Léa",
];
const LAST_NAMES: [&str; 20] = [
    "de Vries",
    "Jansen",
    "van den Berg",
    "Bakker",
    "Peeters",
    "Maes",
    "Janssens",
    "Claes",
    "van Dijk",
    "Smit",
    "de Jong",
    "Visser",
    "Mertens",
    "Dubois",
    "Willems",
    "Van Damme",
    "De Backer",
    "Wouters",
    "Meijer",
    "Çelik",
];
const TEAMS: [&str; 6] = ["JO11-1", "JO13-2", "MO15-1", "JO17-1", "VR1", "Veteranen"];

/// How many members the club holds, and how many of them the platform holds already.
const CLUB_MEMBERS: usize = 300;
const SHARED_MEMBERS: usize = 200;
/// The members only the platform holds (its `knvb_id` numbers), and its member deleted before
/// fieldsync ever ran.
const PLATFORM_ONLY: std::ops::Range<usize> = 400..412;
const DELETED_ON_THE_PLATFORM: usize = 420;
/// Members whose first name the platform spells otherwise before the first sync (the club's
/// spelling wins), and one whose last name it holds with a trailing space (the same value).
const SPELLED_OTHERWISE: [usize; 5] = [3, 33, 63, 93, 123];

/// One member as the club registers it: national or Belgian mobile numbers, Dutch dates.
struct Member {
    knvb_id: String,
    first_name: String,
    last_name: String,
    /// `None` for every 25th member, who gave none.
    email: Option<String>,
    mobile: String,
    /// Day, month, year.
    birth_date: (u32, u32, u32),
    active: bool,
    teams: Vec<&'static str>,
}

fn knvb_id(number: usize) -> String {
    format!("BBKX{number:03}")
}

fn member(number: usize) -> Member {
    let first_name = FIRST_NAMES[number % FIRST_NAMES.len()];
    let last_name = LAST_NAMES[number * 7 % LAST_NAMES.len()];
    let plain: String = first_name
        .to_lowercase()
        .chars()
        .map(|letter| match letter {
            'ë' | 'é' => 'e',
            'ï' => 'i',
            _ => letter,
        })
        .collect();
    let email = (!number.is_multiple_of(25)).then(|| format!("{plain}.{number}@example.nl"));
    let mobile = if number % 10 == 7 {
        format!("+32 47{} {:02} {:02} {:02}", number % 10, number % 97, number % 89, number % 83)
    } else {
        format!("06-2{:07}", number * 7_919 % 10_000_000)
    };
    let teams = match number % 5 {
        0 => vec![],
        1 => vec![TEAMS[number % TEAMS.len()], "Zaalvoetbal"],
        _ => vec![TEAMS[number % TEAMS.len()]],
    };
    Member {
        knvb_id: knvb_id(number),
        first_name: first_name.to_string(),
        last_name: last_name.to_string(),
        email,
        mobile,
        birth_date: (1 + (number % 28) as u32, 1 + (number % 12) as u32, 1960 + (number % 50) as u32),
        active: !number.is_multiple_of(9),
        teams,
    }
}

impl Member {
    fn dutch_date(&self) -> String {
        let (day, month, year) = self.birth_date;
        format!("{day:02}-{month:02}-{year}")
    }

    fn iso_date(&self) -> String {
        let (day, month, year) = self.birth_date;
        format!("{year}-{month:02}-{day:02}")
    }

    fn e164(&self) -> String {
        comparable("mobile", &json!(self.mobile)).as_str().unwrap().to_string()
    }

    /// A literal, quoted for SQL.
    fn quoted(text: &str) -> String {
        format!("'{}'", text.replace('\'', "''"))
    }

    /// The row of the platform's `members` table, as the `VALUES` of an insert; the platform
    /// holds an empty e-mail address where the club holds none.
    fn platform_row(&self, deleted: bool) -> String {
        let teams: Vec<String> = self.teams.iter().map(|team| format!("\"{team}\"")).collect();
        format!(
            "({}, {}, {}, {}, {}, {}, {}, {}, now() - interval '1 day', {})",
            Self::quoted(&self.knvb_id),
            Self::quoted(&self.first_name),
            Self::quoted(&self.last_name),
            Self::quoted(self.email.as_deref().unwrap_or_default()),
            Self::quoted(&self.e164()),
            Self::quoted(&self.iso_date()),
            self.active,
            Self::quoted(&format!("{{{}}}", teams.join(","))),
            if deleted { "now() - interval '2 days'" } else { "NULL" },
        )
    }
}

/// A trigger that stamps `table`'s `updated_at` on every update that does not set it, as a
/// platform's own application does.
fn touch_updated_at(table: &str) -> String {
    format!(
        "CREATE FUNCTION touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at THEN
                 NEW.updated_at := now();
             END IF;
             RETURN NEW;
         END
         $$;
         CREATE TRIGGER {table}_touched BEFORE UPDATE ON {table} FOR EACH ROW EXECUTE FUNCTION touch_updated_at();"
    )
}

/// The platform's database: the table its own application keeps (a trigger stamps
/// `updated_at` unless a statement sets it, a CHECK keeps mobile numbers in E.164, teams are a
/// `text[]` and preferences a `jsonb` fieldsync does not track), the role `sync` fieldsync
/// connects as, and a database of fieldsync's own for the state store.
const PLATFORM_SCHEMA: &str = r#"
CREATE TABLE members (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    knvb_id text NOT NULL UNIQUE,
    first_name text NOT NULL,
    last_name text NOT NULL,
    email text,
    mobile text CONSTRAINT mobile_e164 CHECK (mobile ~ '^\+[1-9][0-9]{7,14}$'),
    birth_date date,
    active boolean NOT NULL DEFAULT true,
    teams text[] NOT NULL DEFAULT '{}',
    preferences jsonb NOT NULL DEFAULT '{"newsletter": true}',
    updated_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz
);
GRANT SELECT, INSERT, UPDATE ON members TO sync;
"#;

/// The configuration of the first test: the club's SQLite table (left) and the platform's
/// PostgreSQL table (right), the state in the schema `club_utrecht` of the database
/// `fieldsync`, both reached with the password in `SYNC_DB_PASSWORD`.
fn club_and_platform_config(server: &PostgresServer) -> String {
    let port = server.port();
    let fields: Vec<(&str, &str, &str, &str)> =
        MEMBER_FIELDS.iter().map(|(name, field_type)| (*name, *field_type, *name, *name)).collect();
    format!(
        r#"state = "postgres://sync:${{SYNC_DB_PASSWORD}}@127.0.0.1:{port}/fieldsync?schema=club_utrecht"

{club}date_formats = ["%d-%m-%Y"]

[connectors.platform]
kind = "postgres"
url = "postgres://sync:${{SYNC_DB_PASSWORD}}@127.0.0.1:{port}/platform"
table = "members"
key = "id"
modified = "updated_at"
deleted = "deleted_at"
batch_size = 100

{link}deletes = "propagate"
guard = {{ max_delete = "10%", max_change = "50%" }}
retry = {{ attempts = 3, initial = "1s", max = "1m", wait_in_run = "0s" }}
{fields}"#,
        club = sqlite_connector_toml("club", "club.db", "members", "knvb_id", "updated_at"),
        link = link_toml("members", "club", "platform", ("knvb_id", "knvb_id"), "club"),
        fields = fields_toml("members", &fields),
    )
}

/// The club's members, comparable.
fn club_members(club: &Connection) -> Records {
    let mut statement = club
        .prepare(
            "SELECT knvb_id, first_name, last_name, email, mobile, birth_date, active, teams FROM members",
        )
        .unwrap();
    let rows = statement
        .query_map([], |row| {
            let mut values = Map::new();
            for (index, name) in
                ["knvb_id", "first_name", "last_name", "email", "mobile", "birth_date", "active", "teams"]
                    .iter()
                    .enumerate()
            {
                let value = match row.get_ref(index)? {
                    rusqlite::types::ValueRef::Null => Value::Null,
                    rusqlite::types::ValueRef::Integer(number) => json!(number),
                    rusqlite::types::ValueRef::Text(text) => json!(String::from_utf8_lossy(text)),
                    other => panic!("{name}: {other:?}"),
                };
                values.insert(name.to_string(), value);
            }
            Ok(values)
        })
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let names: Vec<&str> = MEMBER_FIELDS.iter().map(|(name, _)| *name).collect();
    records(rows, "knvb_id", &names)
}

/// The platform's members that are not deleted, comparable.
fn platform_members(server: &PostgresServer) -> Records {
    let rows = pg_rows(server, "platform", "SELECT * FROM members WHERE deleted_at IS NULL");
    let names: Vec<&str> = MEMBER_FIELDS.iter().map(|(name, _)| *name).collect();
    records(rows, "knvb_id", &names)
}

/// One column of a platform member, as psql prints it (`quote_nullable`, so NULL and `''`
/// differ).
fn platform_value(server: &PostgresServer, number: usize, column: &str) -> String {
    pg_value(
        server,
        "platform",
        &format!("SELECT quote_nullable({column}) FROM members WHERE knvb_id = '{}'", knvb_id(number)),
    )
}

/// One column of a club member, `None` for NULL.
fn club_value(club: &Connection, number: usize, column: &str) -> Option<String> {
    club.query_row(&format!("SELECT {column} FROM members WHERE knvb_id = ?1"), [knvb_id(number)], |row| {
        row.get(0)
    })
    .unwrap()
}

#[test]
fn a_club_sqlite_table_and_a_platform_postgres_table_keep_300_members_in_step_with_the_state_in_postgres() {
    let Some(server) = PostgresServer::start() else { return };
    server.sql("postgres", &format!("CREATE ROLE sync LOGIN PASSWORD '{PASSWORD}'"));
    server.create_database("platform");
    // fieldsync's own database, which the state store's schema is made in at the first run.
    server.sql("postgres", "CREATE DATABASE fieldsync OWNER sync");
    server.sql("platform", PLATFORM_SCHEMA);
    server.sql("platform", &touch_updated_at("members"));
    let mut rows: Vec<String> = (0..SHARED_MEMBERS)
        .map(|number| {
            let mut member = member(number);
            if SPELLED_OTHERWISE.contains(&number) {
                member.first_name = member.first_name.to_uppercase();
            }
            if number == 5 {
                member.last_name.push(' ');
            }
            member.platform_row(false)
        })
        .collect();
    rows.extend(PLATFORM_ONLY.map(|number| member(number).platform_row(false)));
    rows.push(member(DELETED_ON_THE_PLATFORM).platform_row(true));
    server.sql(
        "platform",
        &format!(
            "INSERT INTO members (knvb_id, first_name, last_name, email, mobile, birth_date, active, teams, \
             updated_at, deleted_at) VALUES {}",
            rows.join(",\n")
        ),
    );

    let dir = tempfile::tempdir().unwrap();
    let club = Connection::open(dir.path().join("club.db")).unwrap();
    club.execute_batch(
        "CREATE TABLE members (knvb_id TEXT PRIMARY KEY, first_name TEXT NOT NULL, last_name TEXT NOT NULL,
                               email TEXT, mobile TEXT, birth_date TEXT, active INTEGER NOT NULL, teams TEXT,
                               updated_at TEXT NOT NULL);",
    )
    .unwrap();
    let register = club.unchecked_transaction().unwrap();
    for number in 0..CLUB_MEMBERS {
        let member = member(number);
        register
            .execute(
                "INSERT INTO members VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, datetime('now', '-1 day'))",
                params![
                    member.knvb_id,
                    member.first_name,
                    member.last_name,
                    member.email,
                    member.mobile,
                    member.dutch_date(),
                    i64::from(member.active),
                    serde_json::to_string(&member.teams).unwrap(),
                ],
            )
            .unwrap();
    }
    register.commit().unwrap();
    std::fs::write(dir.path().join("fieldsync.toml"), club_and_platform_config(&server)).unwrap();
    let fieldsync = binary(dir.path()).secret("SYNC_DB_PASSWORD", PASSWORD).log(|| server.log_tail());

    let (said, _) = ended(&fieldsync, &["check"], 0);
    assert!(said.contains("platform: postgres postgres://sync@127.0.0.1:"), "{said}");

    // The first sync: the club's 100 members the platform lacks are created there, the
    // platform's 12 the club lacks in the club, five first names the platform spells otherwise
    // take the club's spelling; a trailing space, an empty address against none, and a member
    // the platform deleted before are no difference.
    let first = run(&fieldsync, "first sync", &[], 0);
    assert_eq!(first["stats"]["right"]["creates_planned"], json!(CLUB_MEMBERS - SHARED_MEMBERS), "{first:#}");
    assert_eq!(first["stats"]["left"]["creates_planned"], json!(PLATFORM_ONLY.len()), "{first:#}");
    assert_eq!(first["stats"]["right"]["updates_planned"], json!(SPELLED_OTHERWISE.len()), "{first:#}");
    assert_eq!(
        first["stats"]["writes_done"],
        json!(CLUB_MEMBERS - SHARED_MEMBERS + PLATFORM_ONLY.len() + SPELLED_OTHERWISE.len()),
        "{first:#}"
    );
    let members = club_members(&club);
    assert_eq!(members.len(), CLUB_MEMBERS + PLATFORM_ONLY.len());
    assert!(!members.contains_key(&knvb_id(DELETED_ON_THE_PLATFORM)), "a deleted member was created");
    assert_same(&members, &platform_members(&server));
    assert_eq!(platform_value(&server, 25, "email"), "''", "the platform keeps its empty address");
    assert_eq!(platform_value(&server, 225, "email"), "NULL", "a created member without an address has NULL");
    assert_eq!(platform_value(&server, 205, "teams"), "'{}'", "no teams is an empty array");
    assert_eq!(platform_value(&server, 211, "teams"), "'{JO13-2,Zaalvoetbal}'");
    assert_eq!(platform_value(&server, 217, "mobile"), format!("'{}'", member(217).e164()));
    assert!(member(217).e164().starts_with("+3247"), "a Belgian mobile in E.164");
    assert_eq!(platform_value(&server, 5, "last_name"), format!("'{} '", member(5).last_name));
    assert_eq!(platform_value(&server, 33, "first_name"), format!("'{}'", member(33).first_name));
    assert_eq!(club_value(&club, 401, "birth_date").as_deref(), Some(member(401).dutch_date().as_str()));
    assert_eq!(club_value(&club, 401, "teams").as_deref(), Some("[\"Veteranen\",\"Zaalvoetbal\"]"));

    // Edits on both sides between two runs. The club: ten new e-mail addresses, one address
    // cleared to '', a new member, a mobile number the platform's CHECK refuses, and a last
    // name half a minute ago. A person on the platform: a mobile number, an address cleared to
    // '', teams, the same last name now (the later edit wins), and a soft delete.
    for number in 10..20 {
        club.execute(
            "UPDATE members SET email = ?2, updated_at = datetime('now') WHERE knvb_id = ?1",
            params![knvb_id(number), format!("Lid{number}@Voetbal-Utrecht.nl")],
        )
        .unwrap();
    }
    let club_edit = |number: usize, assignment: &str| {
        club.execute(&format!("UPDATE members SET {assignment} WHERE knvb_id = ?1"), [knvb_id(number)])
            .unwrap();
    };
    club_edit(20, "email = '', updated_at = datetime('now')");
    club_edit(60, "mobile = '06-1234', updated_at = datetime('now')");
    club_edit(40, "last_name = 'van Leeuwen', updated_at = datetime('now', '-30 seconds')");
    club.execute(
        "INSERT INTO members VALUES ('BBKX300', 'Maëlle', 'Dubois', 'maelle.dubois@example.be', '+32 475 98 76 54',
                                     '29-02-2012', 1, '[\"MO13-1\"]', datetime('now'))",
        [],
    )
    .unwrap();
    server.sql(
        "platform",
        "UPDATE members SET mobile = '+31687654321' WHERE knvb_id = 'BBKX030';
         UPDATE members SET email = '' WHERE knvb_id = 'BBKX031';
         UPDATE members SET teams = '{JO17-1,MO17-2}' WHERE knvb_id = 'BBKX032';
         UPDATE members SET last_name = 'Van Leeuwen-Bos' WHERE knvb_id = 'BBKX040';
         UPDATE members SET deleted_at = now() WHERE knvb_id = 'BBKX050';",
    );

    let plan = output(&fieldsync, &["plan", "--json"]);
    assert_eq!(plan.status.code(), Some(0), "{}", stderr(&plan));
    let planned = json(&plan)[0].clone();
    assert_eq!(planned["stats"]["right"]["updates_planned"], json!(12), "{planned:#}");
    assert_eq!(planned["stats"]["left"]["deletes_planned"], json!(1), "{planned:#}");

    let second = run(&fieldsync, "edits on both sides", &[], 1);
    assert_eq!(second["stats"]["writes_done"], json!(10 + 1 + 1 + 3 + 1 + 1), "{second:#}");
    assert_eq!(second["stats"]["writes_dead"], json!(1), "{second:#}");
    assert_eq!(second["stats"]["conflicts_resolved"], json!(1), "{second:#}");
    let dead = fieldsync.only_dead_entry();
    let message = dead["last_error"].as_str().unwrap_or_default();
    assert_eq!(dead["key"], json!(knvb_id(60)), "{dead:#}");
    assert!(
        message.contains("violates check constraint \"mobile_e164\""),
        "the dead entry carries PostgreSQL's message: {message}"
    );
    assert!(!message.contains(PASSWORD));
    assert_eq!(
        platform_value(&server, 60, "mobile"),
        format!("'{}'", member(60).e164()),
        "the refused value"
    );
    assert_eq!(platform_value(&server, 15, "email"), "'lid15@voetbal-utrecht.nl'");
    assert_eq!(platform_value(&server, 20, "email"), "NULL", "an address cleared to '' is cleared");
    assert_eq!(platform_value(&server, 300, "mobile"), "'+32475987654'");
    assert_eq!(platform_value(&server, 300, "birth_date"), "'2012-02-29'");
    assert_eq!(club_value(&club, 30, "mobile").as_deref(), Some("+31687654321"));
    assert_eq!(club_value(&club, 31, "email"), None, "an address the platform cleared to ''");
    assert_eq!(club_value(&club, 32, "teams").as_deref(), Some("[\"JO17-1\",\"MO17-2\"]"));
    assert_eq!(club_value(&club, 40, "last_name").as_deref(), Some("Van Leeuwen-Bos"), "the later edit wins");
    assert_eq!(platform_value(&server, 40, "last_name"), "'Van Leeuwen-Bos'");
    assert!(!club_members(&club).contains_key(&knvb_id(50)), "the platform's soft delete reached the club");
    let status = json(&output(&fieldsync, &["status", "--json"]));
    assert_eq!(
        (&status[0]["outbox"]["dead"], &status[0]["in_step"]),
        (&json!(1), &json!(false)),
        "{status:#}"
    );

    // The club corrects the refused number and removes a member for good (found by a full
    // scan, and soft-deleted on the platform); the dead entry is dropped.
    club_edit(60, "mobile = '06-24681357', updated_at = datetime('now')");
    club.execute("DELETE FROM members WHERE knvb_id = ?1", [knvb_id(51)]).unwrap();
    let dropped = output(&fieldsync, &["outbox", "drop", &dead["id"].to_string()]);
    assert_eq!(dropped.status.code(), Some(0), "{}", stderr(&dropped));
    let third = run(&fieldsync, "the correction and a full scan", &["--full"], 0);
    assert_eq!(third["stats"]["writes_done"], json!(2), "{third:#}");
    assert_eq!(platform_value(&server, 60, "mobile"), "'+31624681357'");
    assert_eq!(
        pg_value(&server, "platform", "SELECT deleted_at IS NOT NULL FROM members WHERE knvb_id = 'BBKX051'"),
        "t",
        "a delete on the platform sets deleted_at"
    );

    // Nothing is left to do: the plan is empty, runs write nothing, and both sides agree on
    // every field of every member.
    let plan = json(&output(&fieldsync, &["plan", "--json"]));
    assert_eq!(plan[0]["lines"], json!([]), "{plan:#}");
    assert_quiet_runs(&fieldsync);
    let members = club_members(&club);
    assert_eq!(members.len(), CLUB_MEMBERS + PLATFORM_ONLY.len() + 1 - 2);
    assert_same(&members, &platform_members(&server));
    let status = json(&output(&fieldsync, &["status", "--json"]));
    assert_eq!(status[0]["in_step"], json!(true), "{status:#}");
    assert_eq!(status[0]["records"], json!(members.len()), "{status:#}");

    // The state is in PostgreSQL's schema club_utrecht, which holds every run the history shows.
    assert!(!dir.path().join("state.db").exists() && !dir.path().join("fieldsync.db").exists());
    let history = json(&output(&fieldsync, &["history", "list", "--json"]));
    assert_eq!(history.as_array().map(Vec::len), Some(5), "{history:#}");
    assert_eq!(pg_value(&server, "fieldsync", "SELECT count(*) FROM club_utrecht.runs"), "5");
    assert_eq!(
        pg_value(&server, "fieldsync", "SELECT count(*) FROM club_utrecht.baselines WHERE tombstone IS NULL"),
        members.len().to_string()
    );

    // Not even the debug logs show the password.
    let debug = fieldsync.command(&["run", "--full"]).env("FIELDSYNC_LOG", "debug").output().unwrap();
    assert_eq!(debug.status.code(), Some(0), "{}", stderr(&debug));
    assert_no_password(&debug, "fieldsync run with debug logs");
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL ↔ Django REST Framework
// ---------------------------------------------------------------------------------------------

/// The players' fields both sides keep.
const PLAYER_FIELDS: [&str; 8] =
    ["first_name", "last_name", "email", "mobile", "birth_date", "active", "shirt_number", "tags"];

/// The federation's table of players, and the role `sync` fieldsync connects as.
const FEDERATION_SCHEMA: &str = r#"
CREATE TABLE players (
    federation_id text PRIMARY KEY,
    first_name text NOT NULL,
    last_name text NOT NULL,
    email text,
    mobile text,
    birth_date date,
    active boolean NOT NULL DEFAULT true,
    shirt_number smallint,
    tags jsonb,
    updated_at timestamptz NOT NULL DEFAULT now()
);
GRANT SELECT, INSERT, UPDATE, DELETE ON players TO sync;
INSERT INTO players VALUES
    ('CLB00001', 'Maarten', 'van der Heijden', 'maarten.vdheijden@example.nl', '+31612345678', '1994-05-17', true, 9, '["senioren"]', now() - interval '1 hour'),
    ('CLB00002', 'Eline', 'Bosman', '', NULL, NULL, true, NULL, '[]', now() - interval '1 hour'),
    ('CLB00003', 'Sven', 'Hoekstra', 'sven@example.org', '+31623456789', '2008-11-02', true, NULL, '["jeugd"]', now() - interval '1 hour'),
    ('CLB00004', 'Ilse', 'de Groot', NULL, '+31634567890', '1987-02-28', false, 4, '["vrijwilliger", "trainer"]', now() - interval '1 hour'),
    ('CLB00005', 'Jaïr', 'Çelik', 'jair.celik@example.com', '+32470123456', '2001-07-30', true, 23, '[]', now() - interval '1 hour'),
    ('CLB00006', 'Noël', 'Verbeek', 'noel@example.be', '+31645678901', '1979-12-31', true, 1, '["keeper"]', now() - interval '1 hour'),
    ('CLB00007', 'Aukje', 'Zijlstra', 'aukje.zijlstra@example.nl', '+31656789012', '2011-01-01', true, NULL, '["jeugd"]', now() - interval '1 hour'),
    ('CLB00008', 'Renée', 'van ''t Hof', 'renee@example.nl', '+31612121212', '1999-09-09', true, 77, '["senioren"]', now() - interval '1 hour');
"#;

const SITE_PLAYERS: usize = 20;
const FEDERATION_PLAYERS: usize = 8;

fn federation_players(server: &PostgresServer) -> Records {
    records(pg_rows(server, "federation", "SELECT * FROM players"), "federation_id", &PLAYER_FIELDS)
}

fn site_players(site: &DjangoServer) -> Records {
    records(site.players(), "federation_id", &PLAYER_FIELDS)
}

fn changing_requests(site: &DjangoServer) -> usize {
    site.requests().iter().filter(|request| request.changes()).count()
}

#[test]
fn a_postgres_table_and_a_real_django_api_keep_players_in_step_both_ways() {
    let Some(server) = PostgresServer::start() else { return };
    let Some(site) =
        DjangoServer::start(&DjangoOptions { players: SITE_PLAYERS, ..DjangoOptions::default() })
    else {
        return;
    };
    server.sql("postgres", &format!("CREATE ROLE sync LOGIN PASSWORD '{PASSWORD}'"));
    server.create_database("federation");
    server.sql("federation", FEDERATION_SCHEMA);
    server.sql("federation", &touch_updated_at("players"));
    let dir = tempfile::tempdir().unwrap();
    let paths: Vec<String> = PLAYER_FIELDS.iter().map(|name| format!("/{name}")).collect();
    let fields: Vec<(&str, &str, &str)> =
        PLAYER_FIELDS.iter().zip(&paths).map(|(name, path)| (*name, *name, path.as_str())).collect();
    let config = format!(
        r#"state = "sqlite://state.db"

[connectors.federation]
kind = "postgres"
url = "postgres://sync:${{FEDERATION_DB_PASSWORD}}@127.0.0.1:{port}/federation"
table = "players"
key = "federation_id"
modified = "updated_at"

{backend}
{link}deletes = "propagate"
guard = {{ max_delete = "20%", max_change = "100%" }}
{fields}"#,
        port = server.port(),
        backend = django_backend_toml(&site),
        link =
            link_toml("players", "federation", "backend", ("federation_id", "/federation_id"), "federation"),
        fields = member_fields_toml("players", &fields),
    );
    std::fs::write(dir.path().join("fieldsync.toml"), config).unwrap();
    let fieldsync = binary(dir.path())
        .secret("FEDERATION_DB_PASSWORD", PASSWORD)
        .secret("DRF_TOKEN", site.token())
        .log(|| format!("{}\n{}", site.log_tail(), server.log_tail()));

    ended(&fieldsync, &["check"], 0);

    // The first sync creates the site's players in the federation's table and the federation's
    // in the site.
    let first = run(&fieldsync, "first sync", &[], 0);
    assert_eq!(first["stats"]["writes_done"], json!(SITE_PLAYERS + FEDERATION_PLAYERS), "{first:#}");
    let players = federation_players(&server);
    assert_eq!(players.len(), SITE_PLAYERS + FEDERATION_PLAYERS);
    assert_same(&players, &site_players(&site));
    let eline = site.query(
        "SELECT last_name, email, mobile, birth_date FROM club_player WHERE federation_id = 'CLB00002'",
    );
    assert_eq!(eline[0]["email"], json!(""), "an empty address is written as Django's serializer wants it");
    assert_eq!(eline[0]["birth_date"], Value::Null);

    // One edit on each side and a conflict: a person on the federation's side changes an
    // address and, twenty seconds before the site's edit of the same player, a last name; the
    // club changes a shirt number and tags, and that last name (its later edit wins).
    server.sql(
        "federation",
        "UPDATE players SET email = 'J.Devries@Ziggo.nl' WHERE federation_id = 'FED00002';
         UPDATE players SET last_name = 'van Dam', updated_at = now() - interval '20 seconds'
             WHERE federation_id = 'FED00005';",
    );
    site.python(
        "p = Player.objects.get(federation_id='CLB00003'); p.shirt_number = 14; p.tags = ['jeugd', 'aanvoerder']; p.save()\n\
         p = Player.objects.get(federation_id='FED00005'); p.last_name = 'van Dam-Öztürk'; p.save()\n",
    );
    let second = run(&fieldsync, "an edit on each side and a conflict", &[], 0);
    assert_eq!(second["stats"]["writes_done"], json!(3), "{second:#}");
    assert_eq!(second["stats"]["conflicts_resolved"], json!(1), "{second:#}");
    let on_site = site.query("SELECT email, last_name FROM club_player WHERE federation_id IN ('FED00002', 'FED00005') ORDER BY federation_id");
    assert_eq!(on_site[0]["email"], json!("j.devries@ziggo.nl"));
    assert_eq!(on_site[1]["last_name"], json!("van Dam-Öztürk"), "the site's later edit stands");
    assert_eq!(
        pg_value(&server, "federation", "SELECT last_name FROM players WHERE federation_id = 'FED00005'"),
        "van Dam-Öztürk",
        "the later edit wins"
    );
    assert_eq!(
        pg_value(
            &server,
            "federation",
            "SELECT shirt_number || ' ' || tags::text FROM players WHERE federation_id = 'CLB00003'"
        ),
        "14 [\"jeugd\", \"aanvoerder\"]"
    );
    let run_id = second["run_id"].to_string();
    let shown = json(&output(&fieldsync, &["history", "show", &run_id, "--json"]));
    let resolved = shown["audit"]
        .as_array()
        .unwrap()
        .iter()
        .find(|entry| entry["key"] == "FED00005" && entry["event"] == "resolved")
        .unwrap_or_else(|| panic!("the conflict is audited: {shown:#}"))
        .clone();
    assert_eq!(
        (&resolved["left"], &resolved["right"]),
        (&json!("van Dam"), &json!("van Dam-Öztürk")),
        "{resolved:#}"
    );

    // Nothing more to do: quiet runs send the site nothing that changes anything and write
    // nothing in the federation's table.
    let site_writes = changing_requests(&site);
    let touched = "SELECT max(updated_at) FROM players";
    let federation_touched = pg_value(&server, "federation", touched);
    assert_quiet_runs(&fieldsync);
    assert_eq!(changing_requests(&site), site_writes, "a quiet run changed something on the site");
    assert_eq!(pg_value(&server, "federation", touched), federation_touched, "a quiet run wrote the table");
    assert_same(&federation_players(&server), &site_players(&site));
}

// ---------------------------------------------------------------------------------------------
// `fieldsync check`
// ---------------------------------------------------------------------------------------------

#[test]
fn check_names_a_missing_privilege_and_a_wrong_table_names_its_connector_before_any_write() {
    let Some(server) = PostgresServer::start() else { return };
    server.sql("postgres", &format!("CREATE ROLE sync LOGIN PASSWORD '{PASSWORD}'"));
    server.create_database("platform");
    server.sql(
        "platform",
        "CREATE TABLE members (knvb_id text PRIMARY KEY, email text, updated_at timestamptz NOT NULL DEFAULT now());
         INSERT INTO members VALUES ('BBKX001', 'sanne.visser@example.nl', now() - interval '1 day'),
                                    ('BBKX002', NULL, now() - interval '1 day');
         GRANT SELECT, INSERT, DELETE ON members TO sync;",
    );
    let dir = tempfile::tempdir().unwrap();
    let club = Connection::open(dir.path().join("club.db")).unwrap();
    club.execute_batch(
        "CREATE TABLE members (knvb_id TEXT PRIMARY KEY, email TEXT, updated_at TEXT NOT NULL);
         INSERT INTO members VALUES ('BBKX001', 'sanne@visser.example', datetime('now')),
                                    ('BBKX002', 'daan.peeters@example.be', datetime('now')),
                                    ('BBKX003', 'zoe.maes@example.be', datetime('now'));",
    )
    .unwrap();
    let config = |table: &str| {
        format!(
            r#"state = "sqlite://state.db"

{club}
[connectors.platform]
kind = "postgres"
url = "postgres://sync:${{SYNC_DB_PASSWORD}}@127.0.0.1:{port}/platform"
table = "{table}"
key = "knvb_id"
modified = "updated_at"

{link}{fields}"#,
            club = sqlite_connector_toml("club", "club.db", "members", "knvb_id", "updated_at"),
            port = server.port(),
            link = link_toml("members", "club", "platform", ("knvb_id", "knvb_id"), "club"),
            fields = member_fields_toml("members", &[("email", "email", "email")]),
        )
    };
    let config_path = dir.path().join("fieldsync.toml");
    let fieldsync = binary(dir.path()).secret("SYNC_DB_PASSWORD", PASSWORD);
    let platform_rows = || {
        pg_value(
            &server,
            "platform",
            "SELECT string_agg(knvb_id || '=' || coalesce(email, ''), ',' ORDER BY knvb_id) FROM members",
        )
    };
    let before = platform_rows();

    // The user may read, insert and delete but not update: check names what it lacks.
    std::fs::write(&config_path, config("members")).unwrap();
    let (said, _) = ended(&fieldsync, &["check"], 1);
    assert!(said.contains("platform: FAILED: the user sync lacks UPDATE on public.members"), "{said}");
    let report = json(&output(&fieldsync, &["check", "--json"]));
    assert_eq!(report["connectors"]["club"]["ok"], json!(true), "{report:#}");
    assert_eq!(report["connectors"]["platform"]["ok"], json!(false), "{report:#}");
    let error = report["connectors"]["platform"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("lacks UPDATE on public.members") && !error.contains("INSERT"), "{error}");
    server.sql("platform", "GRANT UPDATE ON members TO sync");
    ended(&fieldsync, &["check"], 0);

    // A table that is not there: check and run both name the connector and the table, and
    // the run writes nothing to either side.
    std::fs::write(&config_path, config("member")).unwrap();
    let (said, _) = ended(&fieldsync, &["check"], 1);
    assert!(said.contains("platform: FAILED: table or view public.member does not exist"), "{said}");
    let (_, said) = ended(&fieldsync, &["run"], 1);
    assert!(said.contains("(platform) failed: table or view public.member does not exist"), "{said}");
    assert_eq!(platform_rows(), before, "the platform's table was written");
    let emails: Vec<Option<String>> = club
        .prepare("SELECT email FROM members ORDER BY knvb_id")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        emails,
        [Some("sanne@visser.example"), Some("daan.peeters@example.be"), Some("zoe.maes@example.be")]
            .map(|email| email.map(str::to_string)),
        "the club's table was written"
    );
}

#[test]
fn a_fee_in_a_numeric_column_converges_as_a_decimal_field() {
    let Some(server) = PostgresServer::start() else { return };
    server.create_database("platform");
    server.sql(
        "platform",
        "CREATE TABLE members (id text PRIMARY KEY, fee numeric(6,2), updated_at timestamptz NOT NULL DEFAULT now()); \
         INSERT INTO members (id, fee) VALUES ('BBKX001', 190.00), ('BBKX002', NULL);",
    );
    let dir = tempfile::tempdir().unwrap();
    let club = Connection::open(dir.path().join("club.db")).unwrap();
    club.execute_batch(
        "CREATE TABLE members (id TEXT PRIMARY KEY, fee TEXT, updated_at TEXT NOT NULL); \
         INSERT INTO members VALUES ('BBKX001', '190', '2026-01-05T10:00:00Z'), \
         ('BBKX002', '12,5', '2026-01-05T10:00:00Z'), ('BBKX003', '87.25', '2026-01-05T10:00:00Z');",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("fieldsync.toml"),
        format!(
            "state = \"state.db\"\n\n{club}modified_format = \"rfc3339\"\n\n[connectors.platform]\nkind = \"postgres\"\n\
             url = \"{url}\"\ntable = \"members\"\nkey = \"id\"\nmodified = \"updated_at\"\n\n{link}{fields}",
            club = sqlite_connector_toml("club", "club.db", "members", "id", "updated_at"),
            url = server.url("platform"),
            link = link_toml("members", "club", "platform", ("id", "id"), "club"),
            fields = fields_toml("members", &[("fee", "decimal", "fee", "fee")]),
        ),
    )
    .unwrap();
    let fieldsync = binary(dir.path());
    let report = fieldsync.run_ending("the first sync", &[], 0).report();
    assert_eq!(report["stats"]["writes_dead"], json!(0), "{report:#}");
    assert_eq!(
        pg_value(
            &server,
            "platform",
            "SELECT string_agg(id || '=' || coalesce(fee::text, 'null'), ' ' ORDER BY id) FROM members"
        ),
        "BBKX001=190.00 BBKX002=12.50 BBKX003=87.25",
        "190 and 190.00 are one fee; the club's decimal comma is read"
    );
    assert_quiet_runs(&fieldsync);
}
