//! What the binary's tests share: the binary itself, run in a test's directory, and whether
//! the browser the browser connector drives is here.

use std::path::Path;

use fieldsync_test_support::Fieldsync;
use fieldsync_test_support::members::sqlite_connector_toml;

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

/// The `fieldsync` binary of this build, run in `dir`.
pub fn fieldsync(dir: &Path) -> Fieldsync<'static> {
    Fieldsync::new(env!("CARGO_BIN_EXE_fieldsync"), dir)
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
