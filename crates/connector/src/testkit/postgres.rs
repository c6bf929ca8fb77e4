//! A real PostgreSQL server for the tests: the system's own `initdb` and `postgres` (Debian's
//! `postgresql` package, in `/usr/lib/postgresql/VERSION/bin`), started into a fresh temporary
//! directory on a free port of 127.0.0.1, and stopped and removed when the test drops it, panics
//! or dies.
//!
//! [`PostgresServer::start`] runs `initdb` with the superuser `fieldsync` (no password: trust
//! on loopback) and the ICU collation `en` as the default, so that text sorts as people read it
//! (`_z`, `a`, `b`, `B`), not byte by byte: code that needs key order must say so in its
//! queries. When the tests run as root, as CI does, both programs run as the `postgres` user
//! through `setpriv` (PostgreSQL refuses to run as root). Durability settings are off
//! (`fsync`): a test kills fieldsync's processes, never the server. When the programs are
//! missing it returns `None` after a `SKIPPED:` line, or panics when `FIELDSYNC_REQUIRE_ALL` is
//! set ([`super::skip`]).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::processes::{Processes, running_as_root, serve_on_free_port, tail};

/// What a test skipped on a machine without PostgreSQL needs.
const NEEDS: &str = "a PostgreSQL server";

/// What a machine without PostgreSQL is told to install.
const INSTALL_HINT: &str = "apt-get install --no-install-recommends postgresql";

/// How long `initdb`, the server's start or a statement may take.
const TIMEOUT: Duration = Duration::from_secs(60);

/// The database `PostgresServer::shared` makes.
pub const SHARED_DATABASE: &str = "fieldsync";

/// The superuser the tests connect as.
pub const SUPERUSER: &str = "fieldsync";

/// A running PostgreSQL server; see the module's documentation. Dropping it stops the server
/// (a fast shutdown, then a kill) and removes its directory.
#[derive(Debug)]
pub struct PostgresServer {
    bin: PathBuf,
    port: u16,
    /// The postmaster's index in `processes`.
    postmaster: usize,
    // Fields drop in order: the processes die before their directory is removed.
    processes: Processes,
    dir: tempfile::TempDir,
}

impl PostgresServer {
    /// Starts a fresh server, or returns `None` after a `SKIPPED:` line on stderr when the
    /// system has no PostgreSQL (it panics instead when `FIELDSYNC_REQUIRE_ALL` is set). Blocks
    /// for about a second while the cluster is made and the server starts.
    ///
    /// # Panics
    ///
    /// When PostgreSQL is there but the cluster cannot be made or the server does not come up
    /// in time, with the end of its log.
    pub fn start() -> Option<PostgresServer> {
        let bin = super::found_or_skip(find_bin(), NEEDS, INSTALL_HINT)?;
        let (dir, root) = super::scratch_dir("postgres");
        if running_as_root() {
            let owned = Command::new("chown").arg("postgres:").arg(&root).status();
            assert!(owned.is_ok_and(|status| status.success()), "chown postgres: {}", root.display());
        }
        let mut processes = Processes::start(&root);
        let data = root.join("data");
        let log = root.join("postgres.log");
        let mut initdb = as_server_user(&bin.join("initdb"));
        initdb
            .arg("--pgdata")
            .arg(&data)
            .args(["--username", SUPERUSER, "--auth", "trust", "--encoding", "UTF8"])
            .args(["--locale-provider", "icu", "--icu-locale", "en", "--locale", "C.UTF-8", "--no-sync"])
            .stdout(super::processes::log_file(&log))
            .stderr(super::processes::log_file(&log));
        let index = processes.spawn(&mut initdb, "initdb");
        let deadline = Instant::now() + TIMEOUT;
        let made = loop {
            if let Some(status) = processes.exited(index) {
                break status;
            }
            assert!(Instant::now() < deadline, "initdb did not finish in {TIMEOUT:?}:\n{}", tail(&log));
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(made.success(), "initdb failed ({made}):\n{}", tail(&log));
        let command = |port: u16| {
            let mut postgres = as_server_user(&bin.join("postgres"));
            postgres.arg("-D").arg(&data).args(["-p", &port.to_string(), "-k"]).arg(&root).args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "full_page_writes=off",
            ]);
            postgres
        };
        let ready = |port: u16| psql(&bin, port, "postgres", "SELECT 1").is_ok();
        let (port, postmaster) =
            serve_on_free_port(&mut processes, "postgres", &log, "could not bind", TIMEOUT, command, ready);
        Some(PostgresServer { bin, port, postmaster, processes, dir })
    }

    /// The server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of `database` on this server, as the superuser:
    /// `postgres://fieldsync@127.0.0.1:PORT/DATABASE`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{database}", self.port)
    }

    /// Makes the database `name` (owned by the superuser).
    ///
    /// # Panics
    ///
    /// When the server refuses, with its message.
    pub fn create_database(&self, name: &str) {
        self.sql("postgres", &format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\"")));
    }

    /// Runs `statements` in `database` with `psql`, as the superuser, stopping at the first
    /// error; returns what it printed, one row a line, columns separated by `|`.
    ///
    /// # Panics
    ///
    /// When a statement fails, with PostgreSQL's message.
    pub fn sql(&self, database: &str, statements: &str) -> String {
        psql(&self.bin, self.port, database, statements)
            .unwrap_or_else(|message| panic!("psql in {database} failed: {message}"))
    }

    /// The server of this test binary, started by the first test that asks, with the database
    /// `SHARED_DATABASE` made; `None` (each time, after a `SKIPPED:` line) when the system has
    /// no PostgreSQL. It is never dropped: its processes' watchdog stops it and removes its
    /// directory once the test binary has exited. Tests keep apart by schema.
    pub fn shared() -> Option<&'static PostgresServer> {
        static SERVER: std::sync::OnceLock<Option<PostgresServer>> = std::sync::OnceLock::new();
        let start = || {
            let server = PostgresServer::start()?;
            server.create_database(SHARED_DATABASE);
            Some(server)
        };
        super::shared_server(&SERVER, start, NEEDS, "none could be started", INSTALL_HINT)
    }

    /// The end of the server's log, for a test's failure message.
    pub fn log_tail(&self) -> String {
        tail(&self.dir.path().join("postgres.log"))
    }
}

impl Drop for PostgresServer {
    /// Asks the server for a fast shutdown (so that it releases its shared memory) and waits
    /// for it a while; whatever is left is killed with the process group.
    fn drop(&mut self) {
        let pid = self.processes.children[self.postmaster].id().to_string();
        let _ = Command::new("kill").args(["-INT", &pid]).stderr(Stdio::null()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.processes.exited(self.postmaster).is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The directory of the newest installed PostgreSQL's programs, or what is missing.
fn find_bin() -> Result<PathBuf, String> {
    let versions = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| "/usr/lib/postgresql does not exist".to_string())?
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok());
    let bin = |version: u32| PathBuf::from(format!("/usr/lib/postgresql/{version}/bin"));
    versions
        .filter(|version| bin(*version).join("initdb").is_file() && bin(*version).join("postgres").is_file())
        .max()
        .map(bin)
        .ok_or_else(|| "no initdb and postgres in /usr/lib/postgresql/*/bin".to_string())
}

/// `program`, run as the `postgres` user when this process is root.
fn as_server_user(program: &Path) -> Command {
    if running_as_root() {
        let mut command = Command::new("setpriv");
        command.args(["--reuid=postgres", "--regid=postgres", "--init-groups", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

/// Runs `statements` in `database` on the server at `port` with `psql`: what it printed, or
/// its error output.
fn psql(bin: &Path, port: u16, database: &str, statements: &str) -> Result<String, String> {
    let output = Command::new(bin.join("psql"))
        .args(["--no-psqlrc", "--quiet", "--no-align", "--tuples-only", "-v", "ON_ERROR_STOP=1"])
        .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--username", SUPERUSER])
        .args(["--dbname", database, "--command", statements])
        .env("PGCONNECT_TIMEOUT", "5")
        .stdin(Stdio::null())
        .output()
        .map_err(|error| format!("psql could not run: {error}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim_end().to_string())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim_end().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_starts_answers_sorts_as_people_read_and_is_gone_once_dropped() {
        let Some(server) = PostgresServer::start() else { return };
        server.create_database("club");
        server.sql("club", "CREATE TABLE members (id text PRIMARY KEY); INSERT INTO members VALUES ('b'), ('B'), ('a'), ('_z')");
        assert_eq!(server.sql("club", "SELECT string_agg(id, ',' ORDER BY id) FROM members"), "_z,a,b,B");
        assert_eq!(
            server.sql("club", "SELECT string_agg(id, ',' ORDER BY id COLLATE \"C\") FROM members"),
            "B,_z,a,b"
        );
        assert!(server.url("club").starts_with("postgres://fieldsync@127.0.0.1:"));
        let refused = psql(&server.bin, server.port, "club", "SELECT * FROM nowhere").unwrap_err();
        assert!(refused.contains("relation \"nowhere\" does not exist"), "{refused}");

        let (port, dir) = (server.port(), server.dir.path().to_path_buf());
        drop(server);
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "the server stopped");
        assert!(!dir.exists(), "its directory is gone");
    }

    #[test]
    fn a_test_that_panics_leaves_no_server_behind() {
        let Some(server) = PostgresServer::start() else { return };
        let (port, dir) = (server.port(), server.dir.path().to_path_buf());
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _held = server;
            panic!("a failing test");
        }));
        assert!(outcome.is_err());
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "the server stopped");
        assert!(!dir.exists(), "its directory is gone");
    }
}
