//! The configuration file end to end: the product brief's example parsed into a `LinkSpec`,
//! each kind of mistake reported at its file, line and column, and connectors opened from it.

use std::fmt::Write as _;
use std::path::Path;

use expect_test::{Expect, expect};
use fieldsync_app::config::{ConnectorKind, ReportWhen, Role};
use fieldsync_app::{AnyConnector, Config, ConfigError, StateLocation, open_connector, parse_with_env};
use fieldsync_connector::Connector;
use fieldsync_engine::{FieldSpec, Limit, LinkSpec};
use fieldsync_store_sqlite::SqliteLocation;
use fieldsync_test_support::readme_blocks;

/// The example of `product.md`, with the rest connector replaced by a second sqlite one.
const EXAMPLE: &str = r#"state = "sqlite://fieldsync.db"            # or "postgres://…" for several workers

[connectors.sportlink]
kind = "sqlite"                           # sqlite | postgres | rest | csv | browser
path = "sportlink.db"
table = "members"
key = "knvb_id"
modified = "updated_at"                   # optional: enables incremental reads

[connectors.rondo]
kind = "sqlite"
path = "${RONDO_DIR}/rondo.db"
table = "people"
key = "id"
date_formats = ["%d-%m-%Y"]
overlap = "2m"

[links.members]
left = "sportlink"
right = "rondo"
key = { left = "knvb_id", right = "knvb_id" }
conflicts = { strategy = "last_write_wins", grace = "5s", tie = "sportlink" }   # tie may also be "review"
first_sync = { strategy = "prefer", side = "sportlink" }  # same shapes; default { strategy = "review" }
creates = "left_to_right"                 # both | left_to_right | right_to_left | none
deletes = { soft = { field = "status", value = "inactive" } }  # or "propagate" | "ignore" | "review" (default)
guard = { max_delete = "10%", max_change = "50%" }
full_scan_every = "24h"                   # default; `fieldsync run --full` forces one
schedule = "*/15 * * * *"                 # used by `fieldsync serve`

[[links.members.fields]]
name = "email"
type = "email"                            # text | email | phone | date | bool | int | decimal | json
left = "email"
right = "contact_email"

[[links.members.fields]]
name = "mobile"
type = "phone"
region = "NL"                             # default region for numbers written without a country code
left = "mobile"
right = "mobile"

[[links.members.fields]]
name = "financial_block"
type = "bool"
left = "has_financial_block"
right = "financiele_blokkade"
direction = "right_to_left"
"#;

/// An environment holding only `RONDO_DIR`.
fn env(name: &str) -> Option<String> {
    (name == "RONDO_DIR").then(|| "/srv/rondo".to_string())
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    parse_with_env(text, Path::new("conf/fieldsync.toml"), &env)
}

/// Parses `text` expecting it to fail, and compares the error as an operator reads it.
fn check_error(text: &str, expect: Expect) {
    match parse(text) {
        Ok(config) => panic!("expected an error, got {config:#?}"),
        Err(error) => expect.assert_eq(&format!("{error}\n")),
    }
}

/// The example with `from` replaced by `to`, which must occur in it.
fn example_with(from: &str, to: &str) -> String {
    example_with_all(&[(from, to)])
}

/// The example with each `(from, to)` replaced in turn; every `from` must occur.
fn example_with_all(edits: &[(&str, &str)]) -> String {
    edits.iter().fold(EXAMPLE.to_string(), |text, (from, to)| {
        assert!(text.contains(from), "{from:?} is not in the example");
        text.replacen(from, to, 1)
    })
}

#[test]
fn the_product_example_parses_into_a_link_spec() {
    let config = parse(EXAMPLE).expect("the example is valid");
    assert_eq!(config.state, StateLocation::Sqlite(SqliteLocation::new("conf/fieldsync.db")));
    assert_eq!(config.base_dir(), Path::new("conf"));
    let rondo = &config.connectors["rondo"];
    assert_eq!(rondo.kind.file(), Some(Path::new("/srv/rondo/rondo.db")));
    assert_eq!(rondo.overlap, std::time::Duration::from_secs(120));
    assert_eq!(config.connectors["sportlink"].overlap, std::time::Duration::from_secs(60));
    let link = &config.links["members"];
    assert_eq!(serde_json::to_value(&link.schedule).unwrap(), "*/15 * * * * (UTC)");
    assert_eq!(config.server.listen.to_string(), "127.0.0.1:8470", "the default: loopback only");
    assert_eq!(config.server.max_concurrent_runs, 5);
    assert_eq!(config.server.lease_timeout, std::time::Duration::from_secs(30 * 60));
    assert!(config.server.tokens.is_empty());
    assert_eq!((link.connectors.left.as_str(), link.connectors.right.as_str()), ("sportlink", "rondo"));
    // The fields one line per side, then the rest of the spec.
    let mut dump = String::new();
    for field in &link.spec.fields {
        let FieldSpec { name, paths, normalisers, direction } = field;
        writeln!(dump, "{name} ({} <-> {}, {direction:?})", paths.left, paths.right).unwrap();
        writeln!(dump, "    left:  {:?}", normalisers.left).unwrap();
        writeln!(dump, "    right: {:?}", normalisers.right).unwrap();
    }
    writeln!(dump, "{:#?}", LinkSpec { fields: Vec::new(), ..link.spec.clone() }).unwrap();
    expect![[r#"
        email (email <-> contact_email, Both)
            left:  Normaliser { field_type: Email, region: None, date_formats: [], empty_is_null: true, invalid: Copy, spellings: None }
            right: Normaliser { field_type: Email, region: None, date_formats: ["%d-%m-%Y"], empty_is_null: true, invalid: Copy, spellings: None }
        mobile (mobile <-> mobile, Both)
            left:  Normaliser { field_type: Phone, region: Some(NL), date_formats: [], empty_is_null: true, invalid: Copy, spellings: None }
            right: Normaliser { field_type: Phone, region: Some(NL), date_formats: ["%d-%m-%Y"], empty_is_null: true, invalid: Copy, spellings: None }
        financial_block (has_financial_block <-> financiele_blokkade, RightToLeft)
            left:  Normaliser { field_type: Bool, region: None, date_formats: [], empty_is_null: true, invalid: Copy, spellings: None }
            right: Normaliser { field_type: Bool, region: None, date_formats: ["%d-%m-%Y"], empty_is_null: true, invalid: Copy, spellings: None }
        LinkSpec {
            name: LinkName(
                "members",
            ),
            key: SidePair {
                left: "knvb_id",
                right: "knvb_id",
            },
            fields: [],
            conflicts: LastWriteWins {
                grace: 5s,
                tie: Side(
                    Left,
                ),
            },
            first_sync: Prefer(
                Left,
            ),
            creates: LeftToRight,
            deletes: Soft {
                paths: SidePair {
                    left: "status",
                    right: "status",
                },
                value: String("inactive"),
            },
            guard: Guard {
                max_delete: Share(
                    0.1,
                ),
                max_change: Share(
                    0.5,
                ),
            },
            full_scan_every: 86400s,
            overlap: SidePair {
                left: 60s,
                right: 120s,
            },
            retry: RetryPolicy {
                attempts: 8,
                initial: 1s,
                max: 3600s,
                wait_in_run: 10s,
            },
            audit: Full,
        }
    "#]]
    .assert_eq(&dump);
}

#[test]
fn a_mistyped_field_type_is_reported_at_its_value() {
    let text = example_with("type = \"email\" ", "type = \"emial\" ");
    let line = text.lines().position(|line| line.starts_with("type = \"emial\"")).expect("the typo") + 1;
    let error = parse(&text).expect_err("a typo");
    assert_eq!(
        error.to_string(),
        format!(
            "conf/fieldsync.toml:{line}:8: unknown field type \"emial\"; \
             expected one of text, email, phone, date, bool, int, decimal, json"
        )
    );
    let problems = error.problems();
    assert_eq!((problems.len(), problems[0].location.line, problems[0].location.column), (1, line, 8));
}

#[test]
fn an_unknown_top_level_key_is_reported_at_its_line() {
    check_error(
        &format!("stat = \"x\"\n{EXAMPLE}"),
        expect![[r#"
            conf/fieldsync.toml:1:1: unknown field `stat`, expected one of `state`, `connectors`, `links`, `server`, `reports`, `organisations`
              |
            1 | stat = "x"
              | ^^^^
        "#]],
    );
}

#[test]
fn an_unknown_connector_is_reported_at_the_links_left_value() {
    check_error(
        &example_with("left = \"sportlink\"", "left = \"sportlnk\""),
        expect![[r#"
            conf/fieldsync.toml:19:8: unknown connector "sportlnk" as left; declared connectors: rondo, sportlink
        "#]],
    );
}

#[test]
fn a_missing_environment_variable_is_named_with_where_it_is_used() {
    let error =
        parse_with_env(EXAMPLE, Path::new("fieldsync.toml"), &|_| None).expect_err("RONDO_DIR is missing");
    expect![[r#"
        fieldsync.toml:12:8: environment variable RONDO_DIR is not set (used in connectors.rondo.path)
    "#]]
    .assert_eq(&format!("{error}\n"));
}

#[test]
fn a_toml_syntax_error_leads_with_the_file_name() {
    check_error(
        "state = \"x.db\"\n[links.members\nleft = 1\n",
        expect![[r#"
            conf/fieldsync.toml:2:15: unclosed table, expected `]`
              |
            2 | [links.members
              |               ^
        "#]],
    );
}

#[test]
fn many_problems_are_reported_together_in_file_order() {
    let text = example_with_all(&[
        ("tie = \"sportlink\"", "tie = \"sportlnk\""),
        ("creates = \"left_to_right\"", "creates = \"leftwards\""),
        ("max_delete = \"10%\"", "max_delete = \"110%\""),
        ("full_scan_every = \"24h\"", "full_scan_every = \"daily\""),
        ("schedule = \"*/15 * * * *\"", "schedule = \"*/15 * * *\""),
        ("region = \"NL\"", "region = \"XX\""),
        ("direction = \"right_to_left\"", "direction = \"sideways\""),
        ("right = \"contact_email\"", "right = \"contact-email\""),
        ("kind = \"sqlite\"\npath = \"${RONDO_DIR}", "kind = \"mysql\"\npath = \"${RONDO_DIR}"),
    ]);
    check_error(
        &text,
        expect![[r#"
            conf/fieldsync.toml:11:8: unknown connector kind "mysql"; expected one of sqlite, postgres, csv, rest, browser, couchdb
            conf/fieldsync.toml:24:11: unknown creates policy "leftwards"; expected one of both, left_to_right, right_to_left, none
            conf/fieldsync.toml:26:24: max_delete is a share such as "10%" (0% to 100%) or a number of records such as 25, not "110%"
            conf/fieldsync.toml:27:19: full_scan_every: "daily" is not a duration; write it like "500ms", "5s", "1m", "24h" or "1h30m"
            conf/fieldsync.toml:28:12: schedule "*/15 * * *" is not a cron expression of five fields (minute hour day-of-month month day-of-week): it has 4 fields
            conf/fieldsync.toml:39:10: unknown phone region "XX"; use a two-letter country code such as "NL"
            conf/fieldsync.toml:48:13: unknown direction "sideways"; expected one of both, left_to_right, right_to_left
        "#]],
    );
}

#[test]
fn connector_kinds_and_settings_are_checked() {
    check_error(
        &example_with("kind = \"sqlite\"                           #", "kind = \"mysql\" #"),
        expect![[r#"
            conf/fieldsync.toml:4:8: unknown connector kind "mysql"; expected one of sqlite, postgres, csv, rest, browser, couchdb
        "#]],
    );
    check_error(
        &example_with("table = \"members\"", "tabel = \"members\""),
        expect![[r#"
        conf/fieldsync.toml:6:1: connector sportlink: unknown field `tabel`, expected one of `path`, `table`, `key`, `modified`, `modified_format`, `deleted`, `date_formats`, `batch_size`
    "#]],
    );
    check_error(
        &example_with("table = \"members\"", "table = \"mem bers\""),
        expect![[r#"
        conf/fieldsync.toml:6:9: connector sportlink: `table`: `mem bers` is not a plain name (letters, digits and underscores only)
    "#]],
    );
    check_error(
        &example_with("modified = \"updated_at\"", "overlap = 5"),
        expect![[r#"
        conf/fieldsync.toml:8:11: overlap must be a duration such as "1m"
    "#]],
    );
}

/// A connector's setting error carries its key path, so the problem points at the nested
/// value itself (`max` inside `key_param`), not at the connector's name or the whole table.
#[test]
fn a_nested_setting_is_placed_by_its_key_path() {
    let rest = "[connectors.rondo]\nkind = \"rest\"\nbase_url = \"http://127.0.0.1:8080/api/people\"\n";
    let sqlite = "[connectors.rondo]\nkind = \"sqlite\"\npath = \"${RONDO_DIR}/rondo.db\"\ntable = \"people\"\nkey = \"id\"\n";
    check_error(
        &example_with(sqlite, &format!("{rest}key_param = {{ name = \"id\", join = \",\", max = 0 }}\n")),
        expect![[r#"
            conf/fieldsync.toml:13:46: connector rondo: `key_param.max`: must be at least 1
        "#]],
    );
    check_error(
        &example_with(sqlite, &format!("{rest}batch = {{ url = \"/api/bulk\" }}\n")),
        expect![[r#"
            conf/fieldsync.toml:13:17: connector rondo: `batch.url`: "/api/bulk" is not a WordPress batch endpoint (`…/wp-json/batch/v1`)
        "#]],
    );
    check_error(
        &example_with(
            sqlite,
            &format!("{rest}modified = {{ path = \"/modified\", zone = \"Europe/Nowhere\" }}\n"),
        ),
        expect![[r#"
            conf/fieldsync.toml:13:41: connector rondo: `modified.zone`: unknown time zone "Europe/Nowhere": failed to find time zone `Europe/Nowhere` in time zone database
        "#]],
    );
    check_error(
        &example_with(sqlite, &format!("{rest}since = {{ param = \"after\" }}\n")),
        expect![[r#"
            conf/fieldsync.toml:13:9: connector rondo: `since`: needs `modified`: where a record keeps its modification time
        "#]],
    );
}

#[test]
fn connectors_and_links_are_checked() {
    check_error(
        &example_with("table = \"members\"\n", ""),
        expect![[r#"
        conf/fieldsync.toml:3:1: connector sportlink: missing field `table`
    "#]],
    );
    check_error(
        &example_with("kind = \"sqlite\"                           #", "#"),
        expect![[r#"
            conf/fieldsync.toml:3:13: connector sportlink has no `kind`; expected one of sqlite, postgres, csv, rest, browser, couchdb
        "#]],
    );
    check_error(
        &example_with("[connectors.rondo]", "[connectors.\"ron do\"]")
            .replace("right = \"rondo\"", "right = \"ron do\""),
        expect![[r#"
            conf/fieldsync.toml:10:13: connector name "ron do" may hold only letters, digits, `_` and `-` (A-Z, a-z, 0-9, _, -)
        "#]],
    );
    check_error(
        &EXAMPLE[..EXAMPLE.find("[[links.members.fields]]").expect("fields")],
        expect![[r#"
            conf/fieldsync.toml:18:1: link members has no fields; add [[links.members.fields]] tables
        "#]],
    );
    check_error(
        &example_with("right = \"rondo\"", "right = \"sportlink\""),
        expect![[r#"
        conf/fieldsync.toml:20:9: left and right are the same connector "sportlink"; a link joins two different connectors
    "#]],
    );
    check_error(
        &example_with("right = \"contact_email\"", "right = \"contact-email\""),
        expect![[r#"
        conf/fieldsync.toml:34:9: field email: right path "contact-email" is not valid for sqlite connector rondo: field path: `contact-email` is not a plain name (letters, digits and underscores only)
    "#]],
    );
    check_error(
        &example_with("name = \"mobile\"", "name = \"email\""),
        expect![[r#"
        conf/fieldsync.toml:37:8: field email is declared twice; the first is at line 31
    "#]],
    );
    check_error(
        &example_with("left = \"mobile\"", "left = \"email\""),
        expect![[r#"
        conf/fieldsync.toml:40:8: field mobile: left path "email" is already the path of field email
    "#]],
    );
    check_error(
        &example_with("left = \"sportlink\"", "left = 1"),
        expect![[r#"
        conf/fieldsync.toml:19:8: invalid type: integer `1`, expected a string
           |
        19 | left = 1
           |        ^
    "#]],
    );
    check_error(
        &example_with("type = \"bool\"", "type = \"bool\"\nregion = \"NL\""),
        expect![[r#"
        conf/fieldsync.toml:46:10: region applies to phone fields only; field financial_block is bool
    "#]],
    );
    check_error(
        &example_with("value = \"inactive\"", "value = [1]"),
        expect![[r#"
        conf/fieldsync.toml:25:48: a soft-delete value must be a string, a number or a boolean
    "#]],
    );
    check_error(
        &example_with("field = \"status\"", "field = \"financial_block\""),
        expect![[r#"
        conf/fieldsync.toml:25:57: soft-delete value for field financial_block: "inactive" is not a valid bool: expected true/false, 1/0, yes/no, on/off or checked
    "#]],
    );
    check_error(
        &example_with(
            "deletes = { soft = { field = \"status\", value = \"inactive\" } }",
            "deletes = \"soft\"",
        ),
        expect![[r#"
        conf/fieldsync.toml:25:11: soft deletes need a field and a value: deletes = { soft = { field = "status", value = "inactive" } }
    "#]],
    );
    check_error(
        &example_with("max_change = \"50%\"", "max_change = 0.5"),
        expect![[r#"
        conf/fieldsync.toml:26:44: max_change is a share such as "10%" (0% to 100%) or a number of records such as 25, not 0.5
    "#]],
    );
    check_error(
        &example_with(
            "full_scan_every = \"24h\"",
            "retry = { attempts = 0, initial = \"1m\", max = \"1s\" }",
        ),
        expect![[r#"
        conf/fieldsync.toml:27:22: retry attempts must be at least 1, not 0
        conf/fieldsync.toml:27:47: retry max must be at least retry initial
    "#]],
    );
    check_error(
        &example_with("state = \"sqlite://fieldsync.db\"", "state = \"mysql://db\""),
        expect![[r#"
        conf/fieldsync.toml:1:9: unknown state store "mysql://"; write "sqlite://PATH" or "postgres://USER@HOST/DATABASE" or a bare path
    "#]],
    );
}

#[test]
fn the_service_settings_are_read_and_checked() {
    let env = |name: &str| match name {
        "OPS_TOKEN" => Some("k3Jq9-ops-0123456789".to_string()),
        "SHORT_TOKEN" => Some("abc".to_string()),
        other => env(other),
    };
    let server = "\n[server]\nlisten = \"127.0.0.1:0\"\nmax_concurrent_runs = 2\nlease_timeout = \"90s\"\n\n\
                  [[server.tokens]]\nname = \"ops\"\ntoken = \"${OPS_TOKEN}\"\nrole = \"operate\"\n";
    let text = example_with("schedule = \"*/15 * * * *\"", "every = \"90s\"") + server;
    let config = parse_with_env(&text, Path::new("conf/fieldsync.toml"), &env).expect("valid");
    assert_eq!(serde_json::to_value(&config.links["members"].schedule).unwrap(), "every 1m 30s");
    assert_eq!((config.server.listen.port(), config.server.max_concurrent_runs), (0, 2));
    assert_eq!(config.server.lease_timeout, std::time::Duration::from_secs(90));
    let token = &config.server.tokens[0];
    assert_eq!(
        (token.name.as_str(), token.token.expose(), token.role),
        ("ops", "k3Jq9-ops-0123456789", Role::Operate)
    );
    assert!(!format!("{config:?}").contains("k3Jq9"), "the token never shows");

    let zoned = example_with(
        "schedule = \"*/15 * * * *\"",
        "schedule = \"0 2 * * *\"\nschedule_tz = \"Europe/Amsterdam\"",
    );
    let schedule = serde_json::to_value(&parse(&zoned).expect("valid").links["members"].schedule).unwrap();
    assert_eq!(schedule, "0 2 * * * (Europe/Amsterdam)");

    let wrong = example_with(
        "schedule = \"*/15 * * * *\"",
        "schedule = \"*/15 * * * *\"\nevery = \"15m\"\nschedule_tz = \"Europe/Amstredam\"",
    );
    check_error(
        &wrong,
        expect![[r#"
            conf/fieldsync.toml:29:9: a link runs on a `schedule` or `every` interval, not both
        "#]],
    );
    check_error(
        &example_with(
            "schedule = \"*/15 * * * *\"",
            "schedule = \"61 * * * *\"\nschedule_tz = \"Europe/Amstredam\"",
        ),
        expect![[r#"
            conf/fieldsync.toml:28:12: schedule "61 * * * *" is not a cron expression of five fields (minute hour day-of-month month day-of-week): Component error: Number out of bounds.
            conf/fieldsync.toml:29:15: schedule_tz "Europe/Amstredam" is not a time zone this machine knows (an IANA name, such as "Europe/Amsterdam")
        "#]],
    );
    check_error(
        &example_with("schedule = \"*/15 * * * *\"", "every = \"0s\"\nschedule_tz = \"UTC\""),
        expect![[r#"
            conf/fieldsync.toml:29:15: schedule_tz is the time zone of a `schedule`, and this link has none
        "#]],
    );
    let reports = format!(
        "{EXAMPLE}\n[reports]\nsmtp = \"smtp://${{SMTP_AUTH}}@mail.club.example:587\"\nfrom = \"fieldsync@club.example\"\n\
         to = [\"leden@club.example\"]\n"
    );
    let with_auth =
        |name: &str| if name == "SMTP_AUTH" { Some("sync:p4ss-w0rd".to_string()) } else { env(name) };
    let config = parse_with_env(&reports, Path::new("conf/fieldsync.toml"), &with_auth).expect("valid");
    let reports_config = config.reports.as_ref().expect("reports");
    assert_eq!(reports_config.smtp.expose(), "smtp://sync:p4ss-w0rd@mail.club.example:587");
    assert_eq!(reports_config.when, ReportWhen::Changes, "the default");
    assert!(!format!("{config:?}").contains("p4ss-w0rd"), "the password never shows");
    let bad_reports = format!(
        "{EXAMPLE}\n[reports]\nsmtp = \"mail.club.example\"\nfrom = \"fieldsync\"\nto = []\nwhen = \"sometimes\"\n"
    );
    check_error(
        &bad_reports,
        expect![[r#"
            conf/fieldsync.toml:51:8: smtp must be smtp://[user:password@]host[:port] (STARTTLS) or smtps://… (TLS)
            conf/fieldsync.toml:52:8: from "fieldsync" is not an e-mail address
            conf/fieldsync.toml:53:6: to names no recipient
            conf/fieldsync.toml:54:8: unknown report moment "sometimes"; expected one of always, changes, failures
        "#]],
    );
    let bad_server = format!(
        "{EXAMPLE}\n[server]\nlisten = \"localhost\"\nmax_concurrent_runs = 0\nlease_timeout = \"500ms\"\n\n\
         [[server.tokens]]\nname = \"ops\"\ntoken = \"${{SHORT_TOKEN}}\"\nrole = \"admin\"\n"
    );
    match parse_with_env(&bad_server, Path::new("conf/fieldsync.toml"), &env) {
        Ok(_) => panic!("expected errors"),
        Err(error) => expect![[r#"
            conf/fieldsync.toml:51:10: listen "localhost" is not an address and port, such as "127.0.0.1:8470"
            conf/fieldsync.toml:52:23: max_concurrent_runs must be a whole number of at least 1
            conf/fieldsync.toml:53:17: lease_timeout must be at least a second
            conf/fieldsync.toml:57:9: the token "ops" is shorter than 16 characters: use a long random value
            conf/fieldsync.toml:58:8: unknown role "admin"; expected one of read, operate
        "#]]
        .assert_eq(&format!("{error}\n")),
    }
}

#[test]
fn a_postgres_state_names_its_schema_and_never_shows_its_password() {
    let text = example_with(
        "state = \"sqlite://fieldsync.db\"",
        "state = \"postgres://fieldsync:${DB_PASSWORD}@db/fieldsync?schema=club_a\"",
    );
    let env = |name: &str| match name {
        "DB_PASSWORD" => Some("s3cret-pw".to_string()),
        other => env(other),
    };
    let config =
        parse_with_env(&text, Path::new("conf/fieldsync.toml"), &env).expect("a valid configuration");
    assert!(matches!(config.state, StateLocation::Postgres(_)), "{:?}", config.state);
    assert_eq!(config.state.to_string(), "postgres://fieldsync@db:5432/fieldsync?schema=club_a");
    assert!(!format!("{:?}", config.state).contains("s3cret-pw"));
    check_error(
        &example_with(
            "state = \"sqlite://fieldsync.db\"",
            "state = \"postgres://fieldsync@db/fieldsync?schema=a-b\"",
        ),
        expect![[r#"
            conf/fieldsync.toml:1:9: state's schema "a-b" is not a plain name (letters, digits and _, up to 63 bytes, not starting with a digit)
        "#]],
    );
}

#[test]
fn strategies_take_only_their_own_settings() {
    check_error(
        &example_with(
            "conflicts = { strategy = \"last_write_wins\", grace = \"5s\", tie = \"sportlink\" }",
            "conflicts = { strategy = \"prefer\", grace = \"5s\" }",
        ),
        expect![[r#"
            conf/fieldsync.toml:22:26: strategy "prefer" needs a `side`: sportlink, rondo, left or right
            conf/fieldsync.toml:22:44: `grace` does not belong to strategy "prefer", which takes only side
        "#]],
    );
    check_error(
        &example_with(
            "first_sync = { strategy = \"prefer\", side = \"sportlink\" }",
            "first_sync = { strategy = \"last_write_wins\" }",
        ),
        expect![[r#"
            conf/fieldsync.toml:23:27: a first sync has no baseline to tell which edit is newer; use strategy "prefer" or "review"
        "#]],
    );
}

#[test]
fn policies_have_defaults_and_take_side_names() {
    let text = example_with_all(&[
        ("conflicts = { strategy = \"last_write_wins\", grace = \"5s\", tie = \"sportlink\" }", ""),
        ("first_sync = { strategy = \"prefer\", side = \"sportlink\" }", ""),
        ("creates = \"left_to_right\"", ""),
        ("deletes = { soft = { field = \"status\", value = \"inactive\" } }", ""),
        ("guard = { max_delete = \"10%\", max_change = \"50%\" }", "guard = { max_change = 25 }"),
        ("full_scan_every = \"24h\"", "retry = { attempts = 3, initial = \"500ms\", max = \"1m\" }"),
    ]);
    let spec = parse(&text).expect("valid").links["members"].spec.clone();
    expect![[r#"
        LastWriteWins { grace: 5s, tie: Review }
        Review
        Both
        Review
        Guard { max_delete: Share(0.1), max_change: Count(25) }
        86400s
        RetryPolicy { attempts: 3, initial: 500ms, max: 60s, wait_in_run: 10s }
    "#]]
    .assert_eq(&format!(
        "{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n",
        spec.conflicts,
        spec.first_sync,
        spec.creates,
        spec.deletes,
        spec.guard,
        spec.full_scan_every,
        spec.retry
    ));

    let text = example_with_all(&[
        (
            "conflicts = { strategy = \"last_write_wins\", grace = \"5s\", tie = \"sportlink\" }",
            "conflicts = { strategy = \"prefer\", side = \"right\" }",
        ),
        (
            "deletes = { soft = { field = \"status\", value = \"inactive\" } }",
            "deletes = { soft = { field = \"financial_block\", value = true } }",
        ),
    ]);
    let spec = parse(&text).expect("valid").links["members"].spec.clone();
    expect![[r#"
        Prefer(Right)
        Soft { paths: SidePair { left: "has_financial_block", right: "financiele_blokkade" }, value: Bool(true) }
    "#]]
    .assert_eq(&format!("{:?}\n{:?}\n", spec.conflicts, spec.deletes));
}

#[test]
fn guard_shares_are_fractions() {
    let config = parse(EXAMPLE).expect("valid");
    assert_eq!(config.links["members"].spec.guard.max_delete, Limit::Share(0.1));
}

#[test]
fn relative_paths_are_resolved_against_the_configuration_directory() {
    let config = parse_with_env(EXAMPLE, Path::new("/etc/fieldsync/fieldsync.toml"), &env).expect("valid");
    assert_eq!(config.state, StateLocation::Sqlite(SqliteLocation::new("/etc/fieldsync/fieldsync.db")));
    let sportlink = &config.connectors["sportlink"];
    assert_eq!(sportlink.kind.file(), Some(Path::new("sportlink.db")), "kept as written");
    match open_connector(sportlink, config.base_dir()).expect("opens") {
        AnyConnector::Sqlite(connector) => {
            assert_eq!(connector.config().path, Path::new("/etc/fieldsync/sportlink.db"));
        }
        other => panic!("expected a sqlite connector, got {other:?}"),
    }
    // An absolute path stays as it is.
    match open_connector(&config.connectors["rondo"], config.base_dir()).expect("opens") {
        AnyConnector::Sqlite(connector) => {
            assert_eq!(connector.config().path, Path::new("/srv/rondo/rondo.db"))
        }
        other => panic!("expected a sqlite connector, got {other:?}"),
    }
}

#[tokio::test]
async fn a_csv_connector_opens_from_the_configuration() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    std::fs::write(directory.path().join("members.csv"), "number,email\n1,jan@club.nl\n").expect("written");
    let text = r#"
        [connectors.export]
        kind = "csv"
        path = "members.csv"
        key = "number"

        [connectors.site]
        kind = "sqlite"
        path = "site.db"
        table = "people"
        key = "id"

        [links.members]
        left = "export"
        right = "site"
        key = { left = "number", right = "number" }

        [[links.members.fields]]
        name = "email"
        left = "email"
        right = "email"
    "#;
    let config_path = directory.path().join("fieldsync.toml");
    std::fs::write(&config_path, text).expect("written");
    let config = fieldsync_app::load(&config_path).expect("valid");
    assert!(matches!(config.connectors["export"].kind, ConnectorKind::Csv(_)));
    let mut connector = open_connector(&config.connectors["export"], config.base_dir()).expect("opens");
    let probe = connector.check(&["number".to_string(), "email".to_string()]).await.expect("reads the file");
    assert_eq!((probe.kind, probe.records), ("csv", Some(1)));
}

#[test]
fn a_rest_connector_takes_its_preset_and_its_secrets_from_the_environment() {
    let text = example_with(
        "[connectors.rondo]\nkind = \"sqlite\"\npath = \"${RONDO_DIR}/rondo.db\"\ntable = \"people\"\nkey = \"id\"\n",
        "[connectors.rondo]\nkind = \"rest\"\npreset = \"wordpress\"\n\
         base_url = \"http://127.0.0.1:8080/wp-json/wp/v2/people\"\n\
         auth = { basic = { user = \"${RONDO_USER}\", password = \"${RONDO_PASSWORD}\" } }\n\
         headers = { \"X-Club\" = \"${RONDO_DIR}\" }\nrate = \"10/s\"\npace = \"1s..2s\"\n",
    );
    let env = |name: &str| match name {
        "RONDO_USER" => Some("admin".to_string()),
        "RONDO_PASSWORD" => Some("abcd efgh ijkl".to_string()),
        "RONDO_DIR" => Some("club-7".to_string()),
        _ => None,
    };
    let config = parse_with_env(&text, Path::new("conf/fieldsync.toml"), &env).expect("valid");
    let ConnectorKind::Rest(rest) = &config.connectors["rondo"].kind else { panic!("a rest connector") };
    let auth = format!("{:?}", rest.auth);
    assert!(auth.contains("admin") && !auth.contains("abcd"), "the password is not shown: {auth}");
    assert_eq!(rest.headers["X-Club"].expose(), "club-7");
    assert_eq!(rest.rate.as_deref(), Some("10/s"));
    assert!(!format!("{config:?}").contains("abcd efgh"), "no secret in the configuration's debug output");
    assert!(matches!(
        open_connector(&config.connectors["rondo"], config.base_dir()),
        Ok(AnyConnector::Rest(_))
    ));

    let missing = parse_with_env(&text, Path::new("conf/fieldsync.toml"), &|name| {
        (name != "RONDO_PASSWORD").then(|| "x".to_string())
    })
    .unwrap_err()
    .to_string();
    assert!(missing.contains("RONDO_PASSWORD") && missing.contains("connectors.rondo.auth"), "{missing}");

    let bad = text.replace("rate = \"10/s\"", "rate = \"lots\"");
    let error = parse_with_env(&bad, Path::new("conf/fieldsync.toml"), &env).unwrap_err().to_string();
    assert!(error.contains("connector rondo: `rate`"), "{error}");
}

#[test]
fn the_readme_browser_connector_parses_with_its_password_from_the_environment() {
    let block = readme_blocks("## Web admins without an API", "toml").remove(0);
    let text = format!(
        "{block}\n[connectors.club]\nkind = \"sqlite\"\npath = \"club.db\"\ntable = \"members\"\nkey = \"relation_code\"\n\n\
         [links.members]\nleft = \"club\"\nright = \"federation\"\nkey = {{ left = \"relation_code\", right = \"relation_code\" }}\n\n\
         [[links.members.fields]]\nname = \"email\"\ntype = \"email\"\nleft = \"email\"\nright = \"email\"\n\n\
         [[links.members.fields]]\nname = \"financial_block\"\ntype = \"bool\"\nleft = \"financial_block\"\nright = \"financial_block\"\n"
    );
    let env = |name: &str| match name {
        "FED_USER" => Some("club-admin".to_string()),
        "FED_PASSWORD" => Some("s3cret-pass".to_string()),
        _ => None,
    };
    let config =
        parse_with_env(&text, Path::new("conf/fieldsync.toml"), &env).expect("the README's example is valid");
    let ConnectorKind::Browser(browser) = &config.connectors["federation"].kind else {
        panic!("a browser connector")
    };
    assert_eq!(browser.pages.len(), 2);
    assert_eq!(browser.login.username, "club-admin");
    assert_eq!(browser.login.password.expose(), "s3cret-pass");
    assert!(!format!("{config:?}").contains("s3cret-pass"), "the password never shows");
}

#[test]
fn the_readme_rest_connectors_parse_with_their_secrets_from_the_environment() {
    let blocks = readme_blocks("## REST APIs", "toml");
    assert_eq!(blocks.len(), 3, "the wordpress, the drf and the change feed examples");
    let env = |name: &str| match name {
        "WP_USER" => Some("admin".to_string()),
        "WP_APP_PASSWORD" => Some("abcd efgh".to_string()),
        "DRF_TOKEN" => Some("t0ken".to_string()),
        "CLUBAPP_TOKEN" => Some("cl0bapp".to_string()),
        _ => None,
    };
    let wordpress =
        parse_with_env(&blocks[0], Path::new("conf/fieldsync.toml"), &env).expect("the wordpress example");
    let ConnectorKind::Rest(site) = &wordpress.connectors["site"].kind else { panic!("a rest connector") };
    assert_eq!(site.preset, Some(fieldsync_connector_rest::Preset::Wordpress));
    assert!(open_connector(&wordpress.connectors["site"], wordpress.base_dir()).is_ok());
    let drf = parse_with_env(&blocks[1], Path::new("conf/fieldsync.toml"), &env).expect("the drf example");
    let ConnectorKind::Rest(backend) = &drf.connectors["backend"].kind else { panic!("a rest connector") };
    assert_eq!(backend.headers.len(), 0);
    assert!(format!("{:?}", backend.auth).contains("Authorization") && !format!("{drf:?}").contains("t0ken"));
    let feed =
        parse_with_env(&blocks[2], Path::new("conf/fieldsync.toml"), &env).expect("the change feed example");
    let app = &feed.connectors["app"];
    assert!(
        matches!(&app.kind, ConnectorKind::Rest(app) if app.feed.is_some() && app.whole_document == Some(true))
    );
    assert!(open_connector(app, feed.base_dir()).is_ok_and(|app| app.capabilities().sequences));
}

#[test]
fn the_readme_couchdb_connector_parses_with_its_password_from_the_environment() {
    let block = readme_blocks("## CouchDB", "toml").remove(0);
    let env = |name: &str| (name == "COUCH_PASSWORD").then(|| "g3heim-wachtwoord".to_string());
    let config = parse_with_env(&block, Path::new("conf/fieldsync.toml"), &env)
        .expect("the README's example is valid");
    let ConnectorKind::Couchdb(app) = &config.connectors["app"].kind else { panic!("a couchdb connector") };
    assert_eq!((app.database.as_str(), app.id.as_deref()), ("club", Some("member:{/knvb_id}")));
    assert!(!format!("{config:?}").contains("g3heim"), "the password never shows");
    assert!(open_connector(&config.connectors["app"], config.base_dir()).is_ok());
    let wrong = block.replace("type_value = \"member\"", "");
    let error = parse_with_env(&wrong, Path::new("conf/fieldsync.toml"), &env).unwrap_err().to_string();
    assert!(error.contains("connector app: `type_field`: needs `type_value`"), "{error}");
}

/// A field's `values` (a side's own spelling) and `invalid` reach its normalisers; a spelling
/// of a value the type cannot hold, one spelling for two values, and an unknown `invalid` are
/// reported at their place.
#[test]
fn a_fields_spellings_and_invalid_choice_reach_its_normalisers() {
    let spelled = example_with(
        "direction = \"right_to_left\"",
        "direction = \"right_to_left\"\nvalues = { right = { true = \"Ja\", false = \"Nee\" } }\ninvalid = \"hold\"",
    );
    let config = parse(&spelled).expect("valid");
    let field = &config.links["members"].spec.fields[2];
    let read =
        |side: fieldsync_model::Side, raw: serde_json::Value| field.normalisers.get(side).normalise(&raw);
    use fieldsync_model::{Side, Value};
    assert_eq!(read(Side::Right, serde_json::json!("Ja")), Ok(Value::Bool(true)));
    assert_eq!(field.normalisers.right.to_raw(&Value::Bool(false)), serde_json::json!("Nee"));
    assert!(read(Side::Left, serde_json::json!("Ja")).is_err(), "the left side has no spelling");
    assert!(read(Side::Right, serde_json::json!("Misschien")).is_err(), "invalid = hold");
    // By default a value no rule reads is copied as trimmed text.
    let config = parse(EXAMPLE).expect("valid");
    let mobile = &config.links["members"].spec.fields[1];
    assert_eq!(mobile.normalisers.left.normalise(&serde_json::json!(" 12 ")), Ok(Value::from("12")));

    let line = |text: &str, start: &str| text.lines().position(|line| line.starts_with(start)).unwrap() + 1;
    let text = example_with(
        "direction = \"right_to_left\"",
        "direction = \"right_to_left\"\nvalues = { right = { wel = \"Ja\" } }",
    );
    let error = parse(&text).expect_err("not a bool");
    assert_eq!(
        error.to_string(),
        format!(
            "conf/fieldsync.toml:{}:10: values.right of field financial_block: \"wel\" (expected true/false, \
             1/0, yes/no, on/off or checked)",
            line(&text, "values")
        )
    );
    let text = example_with(
        "direction = \"right_to_left\"",
        "direction = \"right_to_left\"\nvalues = { right = { true = \"J\", false = \"j\" } }",
    );
    assert!(parse(&text).expect_err("twice").to_string().contains("given to two values"));
    let text =
        example_with("direction = \"right_to_left\"", "direction = \"right_to_left\"\ninvalid = \"drop\"");
    assert_eq!(
        parse(&text).expect_err("unknown").to_string(),
        format!(
            "conf/fieldsync.toml:{}:11: unknown invalid \"drop\"; expected one of hold, copy",
            line(&text, "invalid")
        )
    );
}

/// A federation's link for each club of `clubs.csv`: each club's own SQLite file, the
/// federation's shared one, and a webhook secret per club.
const FOR_EACH: &str = r#"
[organisations]
from = "clubs.csv"
every = "10m"

[connectors.club]
kind = "sqlite"
path = "clubs/${org.id}.db"
table = "members"
key = "relatienummer"
webhook = { secret = "${CLUB_${org.id}_SECRET}", signature = { header = "X-Club-Signature", encoding = "hex" } }

[connectors.federation]
kind = "sqlite"
path = "federation.db"
table = "members"
key = "relatienummer"

[links.members]
for_each = "organisations"
left = "club"
right = "federation"
key = { left = "relatienummer", right = "relatienummer" }
schedule = "0 2 * * *"
spread = "3h"

[[links.members.fields]]
name = "email"
type = "email"
left = "email"
right = "email"
"#;

/// `text` parsed as `fieldsync.toml` in a directory holding `clubs.csv` with `clubs`.
fn parse_for_each(
    text: &str,
    clubs: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("clubs.csv"), clubs).unwrap();
    let parsed = parse_with_env(text, &dir.path().join("fieldsync.toml"), env);
    // Errors name the file by its path; the directory is gone once read.
    parsed.map_err(|error| {
        let shown = error.to_string().replace(&dir.path().display().to_string(), "DIR");
        ConfigError::Read { path: shown.into(), source: std::io::Error::other("") }
    })
}

fn club_secrets(name: &str) -> Option<String> {
    name.strip_prefix("CLUB_")
        .and_then(|rest| rest.strip_suffix("_SECRET"))
        .map(|club| format!("{club}-signs-with-this-secret"))
}

#[test]
fn a_link_for_each_organisation_runs_once_per_organisation_with_its_own_settings() {
    let clubs = "id,name,contact\nhcu,HC Utrecht,secretaris@hcu.example\nzvv,ZVV De Zwaluw,\n";
    let config = parse_for_each(FOR_EACH, clubs, &club_secrets).unwrap();
    let links: Vec<&str> = config.links.keys().map(String::as_str).collect();
    assert_eq!(links, ["members/hcu", "members/zvv"]);
    let hcu = &config.links["members/hcu"];
    assert_eq!(hcu.spec.name.as_str(), "members/hcu");
    assert_eq!((hcu.connectors.left.as_str(), hcu.connectors.right.as_str()), ("club/hcu", "federation"));
    assert_eq!(hcu.organisation.as_ref().unwrap().variable("contact"), Some("secretaris@hcu.example"));
    assert!(config.connectors["club/hcu"].kind.file().unwrap().ends_with("clubs/hcu.db"));
    assert!(config.connectors["club/zvv"].kind.file().unwrap().ends_with("clubs/zvv.db"));
    assert!(!config.connectors.contains_key("club"), "the definition is no connector of its own");
    // Each club's webhook route has its own secret.
    let (_, connector, webhook) = config.webhook_of("members/zvv", "club").unwrap();
    assert_eq!((connector, webhook.secret.expose()), ("club/zvv", "zvv-signs-with-this-secret"));
    // Slots spread over the three hours, each club at its own place, the same on every load.
    let offsets: Vec<_> = ["members/hcu", "members/zvv"].map(|link| config.links[link].slot_offset).into();
    assert!(offsets.iter().all(|offset| *offset < std::time::Duration::from_secs(3 * 3600)));
    assert_ne!(offsets[0], offsets[1]);
    let again = parse_for_each(FOR_EACH, clubs, &club_secrets).unwrap();
    assert_eq!(again.links["members/hcu"].slot_offset, offsets[0]);
    let organisations = config.organisations.as_ref().unwrap();
    let for_each = &organisations.for_each;
    assert_eq!(organisations.every, std::time::Duration::from_secs(600));
    assert_eq!(organisations.list.len(), 2);
    assert!(for_each.contains("members"));
}

#[test]
fn a_mistake_of_one_organisation_names_it_and_one_of_the_link_is_said_once() {
    let clubs = "id,name\nhcu,HC Utrecht\nzvv,ZVV De Zwaluw\nmhc,MHC Amersfoort\n";
    let only_hcu = |name: &str| (name == "CLUB_hcu_SECRET").then(|| "hcu-signs-with-this-secret".to_string());
    let error = parse_for_each(FOR_EACH, clubs, &only_hcu).unwrap_err().to_string();
    assert!(
        error.contains("organisation zvv: environment variable CLUB_zvv_SECRET is not set (used in connectors.club.webhook)"),
        "{error}"
    );
    assert!(error.contains("organisation mhc: environment variable CLUB_mhc_SECRET"), "{error}");
    assert!(!error.contains("hcu-signs-with"), "{error}");

    let wrong_field = FOR_EACH.replace("type = \"email\"", "type = \"mail\"");
    let error = parse_for_each(&wrong_field, clubs, &club_secrets).unwrap_err().to_string();
    assert_eq!(error.matches("unknown field type").count(), 1, "{error}");
    assert!(error.contains("organisation hcu and 2 more: "), "{error}");

    let error = parse_for_each(FOR_EACH, "id\nhcu\nhcu\n", &club_secrets).unwrap_err().to_string();
    assert!(
        error.contains("organisations: DIR/clubs.csv line 3: organisation id \"hcu\" is listed twice"),
        "{error}"
    );

    let without_list = FOR_EACH.replace("[organisations]\nfrom = \"clubs.csv\"\nevery = \"10m\"\n", "");
    let error = parse_for_each(&without_list, clubs, &club_secrets).unwrap_err().to_string();
    assert!(error.contains(":5:8: `${org.id}` is an organisation's variable"), "{error}");
    assert!(error.contains("for_each = \"organisations\" needs an [organisations] table"), "{error}");

    let not_for_each = FOR_EACH.replace("for_each = \"organisations\"\n", "");
    let error = parse_for_each(&not_for_each, clubs, &club_secrets).unwrap_err().to_string();
    assert!(error.contains("connector club uses `${org.…}`, known only in a link with for_each"), "{error}");

    let long_spread = FOR_EACH.replace("spread = \"3h\"", "spread = \"25h\"");
    let error = parse_for_each(&long_spread, clubs, &club_secrets).unwrap_err().to_string();
    assert!(
        error.contains("spread must be shorter than the time between two slots of the schedule (24h)"),
        "{error}"
    );
}

#[test]
fn the_readme_example_of_many_organisations_is_valid() {
    let block = readme_blocks("## Many organisations", "toml").remove(0);
    let secrets = |name: &str| match name {
        "FIELDSYNC_DB_PASSWORD" | "BOND_DB_PASSWORD" | "HCU_TOKEN" => {
            Some("a-secret-of-sixteen-or-more".to_string())
        }
        other => club_secrets(&other.replace("_HOOK_SECRET", "_SECRET")),
    };
    let config = parse_for_each(&block, "id,name\nhcu,HC Utrecht\nzvv,ZVV De Zwaluw\n", &secrets).unwrap();
    assert_eq!(config.links.keys().collect::<Vec<_>>(), ["members/hcu", "members/zvv"]);
    assert_eq!(config.server.tokens[0].organisation.as_deref(), Some("hcu"));
    let connector = &config.connectors["federation/zvv"];
    assert!(format!("{:?}", connector.kind).contains("club_zvv"), "each club's own schema");
}

#[test]
fn reports_go_to_each_organisations_own_address_and_the_fixed_ones() {
    let with_reports = format!(
        "{FOR_EACH}\n[reports]\nsmtp = \"smtp://mail.bond.example:587\"\nfrom = \"fieldsync@bond.example\"\n\
         to = [\"${{org.contact}}\", \"ledenadministratie@bond.example\"]\n"
    );
    let clubs = "id,name,contact\nhcu,HC Utrecht,secretaris@hcu.example\nzvv,ZVV De Zwaluw,\n";
    let config = parse_for_each(&with_reports, clubs, &club_secrets).unwrap();
    assert_eq!(
        config.links["members/hcu"].report_to,
        ["secretaris@hcu.example", "ledenadministratie@bond.example"]
    );
    assert_eq!(
        config.links["members/zvv"].report_to,
        ["ledenadministratie@bond.example"],
        "no address of its own"
    );

    let error =
        parse_for_each(&with_reports, "id,name,contact\nhcu,HC Utrecht,secretaris at hcu\n", &club_secrets)
            .unwrap_err()
            .to_string();
    assert!(
        error.contains("organisation hcu: reports.to: \"secretaris at hcu\" is not an e-mail address"),
        "{error}"
    );
}

/// A link's `audit` says what its history keeps of values (`full` unless said) and for how long
/// (for ever unless said), in the one grammar of durations; a wrong one is named at its value.
#[test]
fn a_links_audit_says_what_its_history_keeps_and_how_long() {
    use fieldsync_store::AuditValues;
    let link = parse(EXAMPLE).expect("valid").links["members"].clone();
    assert_eq!((link.spec.audit, link.keep), (AuditValues::Full, None));
    let with =
        |audit: &str| example_with("schedule = \"*/15", &format!("audit = {audit}\nschedule = \"*/15"));
    for (audit, values, keep) in [
        ("{ values = \"hashed\", keep = \"400d\" }", AuditValues::Hashed, Some(400 * 86_400)),
        ("{ values = \"none\" }", AuditValues::None, None),
        ("{ keep = \"2 weeks\" }", AuditValues::Full, Some(14 * 86_400)),
        ("{ values = \"full\", keep = \"P30D\" }", AuditValues::Full, Some(30 * 86_400)),
    ] {
        let link =
            parse(&with(audit)).unwrap_or_else(|error| panic!("{audit}: {error}")).links["members"].clone();
        let keep = keep.map(std::time::Duration::from_secs);
        assert_eq!((link.spec.audit, link.keep), (values, keep), "{audit}");
    }
    check_error(
        &with("{ values = \"hashes\", keep = \"forever\" }"),
        expect![[r#"
            conf/fieldsync.toml:28:20: unknown audit values "hashes"; expected one of full, hashed, none
            conf/fieldsync.toml:28:37: audit keep: "forever" is not a duration; write it like "500ms", "5s", "1m", "24h" or "1h30m"
        "#]],
    );
    check_error(
        &with("{ keep = \"0s\" }"),
        expect![[r#"
            conf/fieldsync.toml:28:18: audit keep must be longer than zero; leave it out to keep the history for ever
        "#]],
    );
    check_error(
        &with("{ value = \"none\" }"),
        expect![[r#"
            conf/fieldsync.toml:28:11: unknown field `value`, expected `values` or `keep`
               |
            28 | audit = { value = "none" }
               |           ^^^^^
        "#]],
    );
}

/// Serves `body` to every request on 127.0.0.1 that bears `Authorization:
/// Bearer token`, and 401 to any other; returns its base URL.
fn serve_list(token: &'static str, body: &'static str) -> String {
    use std::io::{BufRead as _, BufReader, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut authorised = false;
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|read| read > 2) {
                authorised |= line.trim_end().eq_ignore_ascii_case(&format!("authorization: Bearer {token}"));
                line.clear();
            }
            let (status, body) = if authorised { ("200 OK", body) } else { ("401 Unauthorized", "{}") };
            let answer = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    format!("http://{address}")
}

#[test]
fn the_organisations_come_from_an_api_with_its_token() {
    let body = r#"{"count": 2, "results": [{"id": "hcu", "name": "HC Utrecht", "contact": "secretaris@hcu.example", "members": 412},
                   {"id": "zvv", "name": "ZVV De Zwaluw", "contact": null}]}"#;
    let base = serve_list("bond-7c1f9e2a", body);
    let from_api = FOR_EACH.replace(
        "from = \"clubs.csv\"",
        &format!("from = \"{base}/api/clubs\"\ntoken = \"${{BOND_TOKEN}}\"\nrecords = \"/results\""),
    );
    let env = |name: &str| {
        if name == "BOND_TOKEN" { Some("bond-7c1f9e2a".to_string()) } else { club_secrets(name) }
    };
    let config = parse_for_each(&from_api, "", &env).unwrap();
    assert_eq!(config.links.keys().collect::<Vec<_>>(), ["members/hcu", "members/zvv"]);
    let hcu = config.links["members/hcu"].organisation.clone().unwrap();
    assert_eq!(
        (hcu.variable("contact"), hcu.variable("members")),
        (Some("secretaris@hcu.example"), Some("412"))
    );
    assert_eq!(config.links["members/zvv"].organisation.as_ref().unwrap().variable("contact"), None);

    let wrong =
        |name: &str| if name == "BOND_TOKEN" { Some("guessed".to_string()) } else { club_secrets(name) };
    let error = parse_for_each(&from_api, "", &wrong).unwrap_err().to_string();
    assert!(
        error
            .contains(&format!("organisations: reading the organisations from {base}/api/clubs: status 401")),
        "{error}"
    );
    assert!(!error.contains("guessed"), "{error}");
}
