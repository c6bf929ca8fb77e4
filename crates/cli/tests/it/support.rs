//! What the binary's tests share: the binary itself, run in a test's directory, and whether
//! the browser the browser connector drives is here.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, params};
use serde_json::{Value, json};

use fieldsync_connector::testkit::django::DjangoServer;
use fieldsync_test_support::Fieldsync;
use fieldsync_test_support::members::{member_fields_toml, sqlite_connector_toml};

/// The policies of a link to a web admin without an API, after its `link_toml`: no creates,
/// deletes ignored, a guard, and eight attempts per write, none waited for within a run.
pub const WEB_ADMIN_POLICIES: &str = r#"creates = "none"
deletes = "ignore"
guard = { max_delete = "10%", max_change = "100%" }
retry = { attempts = 8, initial = "1s", max = "1m", wait_in_run = "0s" }
"#;

/// The start of a configuration that keeps the club's SQLite table `table` (in `club.db`,
/// keyed by `key`, modified at `updated_at` in RFC 3339) in step, with the state store beside
/// it; a test adds the other side's connector, the link and its fields.
pub fn club_config_start(table: &str, key: &str) -> String {
    format!(
        "state = \"sqlite://state.db\"\n\n{}modified_format = \"rfc3339\"\n\n",
        sqlite_connector_toml("club", "club.db", table, key, "updated_at")
    )
}

/// The `[connectors.backend]` table of the players of a real Django REST Framework `site`,
/// reached with the token in `DRF_TOKEN`; a test adds its further settings on the lines after it.
pub fn django_backend_toml(site: &DjangoServer) -> String {
    format!(
        r#"[connectors.backend]
kind = "rest"
preset = "drf"
base_url = "{url}"
auth = {{ header = {{ name = "Authorization", value = "Token ${{DRF_TOKEN}}" }} }}
key_param = {{ name = "federation_id__in", path = "/federation_id", join = "," }}
version = "/version"
create = {{ unique = "/federation_id" }}
"#,
        url = site.players_url()
    )
}

/// The `fieldsync` binary of this build, run in `dir`.
pub fn fieldsync(dir: &Path) -> Fieldsync<'static> {
    Fieldsync::new(env!("CARGO_BIN_EXE_fieldsync"), dir)
}

/// Checks the report of a run in which a site refused one write: `conflicts` conflicts settled
/// and one write dead, whose entry (the only dead one) carries the site's answer, status 400 with
/// `refusal`, and never the `secret` the site is reached with. Returns that entry.
pub fn assert_one_write_refused(
    fieldsync: &Fieldsync<'_>,
    report: &Value,
    conflicts: u64,
    refusal: &str,
    secret: &str,
) -> Value {
    assert_eq!(report["stats"]["conflicts_resolved"], json!(conflicts), "{report:#}");
    assert_eq!(report["stats"]["writes_dead"], json!(1), "{report:#}");
    let dead = fieldsync.only_dead_entry();
    let message = dead["last_error"].as_str().unwrap_or_default();
    assert!(message.contains("400") && message.contains(refusal), "the site's message: {message}");
    assert!(!message.contains(secret), "the dead entry's message holds the secret");
    dead
}

/// Runs `fieldsync run` with no new edits, incrementally and then in full, and checks that
/// each run succeeds and writes nothing.
pub fn assert_quiet_runs(fieldsync: &Fieldsync<'_>) {
    for (step, args) in [("a run with no new edits", &[][..]), ("a full run with no new edits", &["--full"])]
    {
        let report = fieldsync.run_ending(step, args, 0).report();
        assert_eq!(report["stats"]["writes_done"], json!(0), "{step}: {report:#}");
    }
}

/// Whether Chromium and chromedriver are here; says so loudly when not (and fails in CI).
pub fn browser_available() -> bool {
    let found =
        ["/usr/bin/chromedriver", "/usr/lib/chromium/chromium"].iter().all(|path| Path::new(path).exists());
    if !found {
        fieldsync_connector::testkit::skip(
            "Chromium and chromedriver",
            "one of them is missing",
            "apt-get install chromium chromium-driver",
        );
    }
    found
}

/// Two member tables (different column names: `left.db` and `right.db`) holding the same
/// `count` members, and a configuration linking them with the given `conflicts` line (and any
/// further lines of the link a test puts after it).
pub fn setup(conflicts: &str, count: usize) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let left = dir.path().join("left.db");
    let right = dir.path().join("right.db");
    let left_db = Connection::open(&left).unwrap();
    left_db
        .execute_batch(
            "CREATE TABLE members (id TEXT PRIMARY KEY, email TEXT, mobile TEXT, updated_at TEXT NOT NULL);",
        )
        .unwrap();
    let right_db = Connection::open(&right).unwrap();
    right_db
        .execute_batch(
            "CREATE TABLE people (number TEXT PRIMARY KEY, mail TEXT CHECK (mail LIKE '%@%'), phone TEXT, modified TEXT NOT NULL);",
        )
        .unwrap();
    for number in 0..count {
        let id = format!("M{number:03}");
        let email = format!("member{number}@club.nl");
        let mobile = format!("+316{:08}", 20_000_000 + number);
        left_db
            .execute(
                "INSERT INTO members VALUES (?1, ?2, ?3, datetime('now', '-1 day'))",
                params![id, email, mobile],
            )
            .unwrap();
        right_db
            .execute(
                "INSERT INTO people VALUES (?1, ?2, ?3, datetime('now', '-1 day'))",
                params![id, email, format!("06{:08}", 20_000_000 + number)],
            )
            .unwrap();
    }
    let config = format!(
        r#"state = "state.db"

{register}
{website}
[links.members]
left = "register"
right = "website"
key = {{ left = "id", right = "number" }}
{conflicts}
deletes = "propagate"
guard = {{ max_delete = "10%", max_change = "50%" }}
{fields}"#,
        register = sqlite_connector_toml("register", "left.db", "members", "id", "updated_at"),
        website = sqlite_connector_toml("website", "right.db", "people", "number", "modified"),
        fields = member_fields_toml("members", &[("email", "email", "mail"), ("mobile", "mobile", "phone")])
    );
    std::fs::write(dir.path().join("fieldsync.toml"), config).unwrap();
    (dir, left, right)
}

/// The one text value `sql` selects from the SQLite file at `path`.
pub fn query(path: &Path, sql: &str) -> String {
    Connection::open(path).unwrap().query_row(sql, [], |row| row.get::<_, String>(0)).unwrap()
}

/// Runs `sql` on the SQLite file at `path`.
pub fn exec(path: &Path, sql: &str) {
    Connection::open(path).unwrap().execute_batch(sql).unwrap();
}

/// Adds `count` members to the left table of `setup` (`N00000`, `N00001`, …) that the right
/// one lacks, each with its own address and mobile number.
pub fn add_new_members(left: &Path, count: usize) {
    exec(
        left,
        &format!(
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {}) \
             INSERT INTO members SELECT printf('N%05d', i), printf('new%d@club.nl', i), \
             printf('+3161%07d', i), datetime('now', '-1 day') FROM n;",
            count - 1
        ),
    );
}

/// How many outbox entries the state store at `state` holds (0 while it does not exist yet).
pub fn outbox_entries(state: &Path) -> i64 {
    count_once_created(state, "SELECT count(*) FROM outbox")
}

/// A count on a state store the service may not have created yet, for a wait: 0 while the
/// file or its tables are not there (a wait that never ends fails with the service's log).
/// It opens the file read-only, so the test never creates it under the service.
pub fn count_once_created(path: &Path, sql: &str) -> i64 {
    Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .and_then(|store| {
            store.busy_timeout(Duration::from_secs(5))?;
            store.query_row(sql, [], |row| row.get(0))
        })
        .unwrap_or(0)
}
