//! A real WordPress on loopback for the integration tests.
//!
//! [`WordPress::start`] serves Debian's `wordpress` package with PHP's built-in server on a
//! free port of 127.0.0.1, over a MariaDB of its own (a fresh data directory and a unix socket
//! in a temporary directory, no TCP). The site has the `person` post type of
//! `crates/connector/testkit/wordpress/fieldsync-people.php` at `/wp-json/wp/v2/people`, pretty permalinks, and an
//! application password for the user `admin`, so that Basic auth works over plain HTTP.
//!
//! It skips (returns `None`, with a `SKIPPED:` line on stderr) when a program is missing,
//! unless `FIELDSYNC_REQUIRE_ALL` is set, when it panics instead. Dropping the [`WordPress`]
//! kills both servers and removes the directory; a watchdog does both when the test process
//! dies without dropping it.
//!
//! What WordPress 6.1 does that a client must know: a person made over REST without a
//! `status` is a draft, and a listing without one shows published people only; a wrong
//! password is a 401 on writes and on reads with `context=edit`, but a plain read with it is
//! answered as an anonymous one (200, published people).
//!
//! Nothing is written outside the temporary directory: the document root there holds copies
//! of WordPress's top-level files, our own `wp-config.php` and `wp-content`, and symlinks to
//! the package's `wp-includes` and `wp-admin` (PHP resolves `__FILE__` through symlinks, so
//! the files that find the configuration beside themselves must be copies).

use super::processes::{Processes, log_file, running_as_root, write_file};
use std::fmt;
use std::fs;
use std::future::Future;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// The must-use plugin with the `person` post type and its meta fields.
const PEOPLE_PLUGIN: &str = include_str!("../../testkit/wordpress/fieldsync-people.php");
/// The built-in server's router: existing files as they are, everything else to WordPress.
const ROUTER: &str = include_str!("../../testkit/wordpress/router.php");
/// Creates the database, installs WordPress and makes the application password.
const INSTALL: &str = include_str!("../../testkit/wordpress/install.php");
/// Runs PHP code inside the site, for test setup.
const RUN: &str = include_str!("../../testkit/wordpress/run.php");

/// What a machine without the programs is told to install.
const INSTALL_HINT: &str = "install wordpress php-cli php-mysql mariadb-server";
/// Where Debian's `wordpress` package puts WordPress.
const WORDPRESS_DIR: &str = "/usr/share/wordpress";
/// The database the site uses.
const DATABASE: &str = "wordpress";
/// The line of `install.php`'s output that carries the credentials.
const SETUP_MARKER: &str = "FIELDSYNC-SETUP ";
/// How long a server may take to accept connections, and a setup script to finish.
const TIMEOUT: Duration = Duration::from_secs(120);
/// How many requests PHP's built-in server serves at once.
const PHP_WORKERS: &str = "4";

/// MariaDB settings for a small, throwaway database: little memory, no waiting for the disk.
const MARIADB_OPTIONS: &[&str] = &[
    "--innodb-buffer-pool-size=32M",
    "--innodb-log-file-size=16M",
    "--innodb-flush-log-at-trx-commit=0",
    "--innodb-doublewrite=0",
    "--skip-name-resolve",
    "--character-set-server=utf8mb4",
    "--collation-server=utf8mb4_unicode_520_ci",
];

/// A running WordPress site with its own database; see the module's documentation.
pub struct WordPress {
    site_url: String,
    user: String,
    app_password: String,
    docroot: PathBuf,
    php: PathBuf,
    started_in: Duration,
    // Fields drop in order: the processes die before their directory is removed.
    processes: Processes,
    dir: tempfile::TempDir,
}

impl fmt::Debug for WordPress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WordPress")
            .field("site_url", &self.site_url)
            .field("user", &self.user)
            .field("app_password", &"<secret>")
            .field("dir", &self.dir.path())
            .finish()
    }
}

impl WordPress {
    /// Starts a fresh site, or returns `None` after a `SKIPPED:` line on stderr when a
    /// program it needs is missing (it panics instead when `FIELDSYNC_REQUIRE_ALL` is set).
    /// Panics when the programs are there but the site does not come up, with the end of the
    /// servers' logs.
    pub async fn start() -> Option<WordPress> {
        let began = Instant::now();
        let programs = match Programs::find() {
            Ok(programs) => programs,
            Err(missing) => return skip(&missing),
        };
        let dir = tempfile::Builder::new()
            .prefix("fieldsync-wordpress-")
            .tempdir()
            .expect("a temporary directory for WordPress");
        let root = dir.path().to_path_buf();
        let docroot = root.join("site");
        build_docroot(&programs.wordpress, &docroot);
        for (name, text) in [("router.php", ROUTER), ("install.php", INSTALL), ("run.php", RUN)] {
            write_file(&root.join(name), text);
        }

        let mut processes = Processes::start(&root);
        let socket = start_mariadb(&programs, &mut processes, &root).await;
        let port = start_php(&programs.php, &mut processes, &root, &docroot, &socket).await;

        let install = php_command(&programs.php, &processes)
            .arg(root.join("install.php"))
            .arg(&docroot)
            .arg(&socket)
            .arg(DATABASE)
            .output();
        let output = finish("the WordPress installation", install, &root).await;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let setup: serde_json::Value = stdout
            .lines()
            .find_map(|line| line.strip_prefix(SETUP_MARKER))
            .and_then(|json| serde_json::from_str(json).ok())
            .unwrap_or_else(|| panic!("the WordPress installation printed no credentials{}", logs(&root)));
        let field = |name: &str| {
            setup[name]
                .as_str()
                .unwrap_or_else(|| panic!("no {name} in the installation's output"))
                .to_owned()
        };

        Some(WordPress {
            site_url: format!("http://127.0.0.1:{port}"),
            user: field("user"),
            app_password: field("app_password"),
            docroot,
            php: programs.php,
            started_in: began.elapsed(),
            processes,
            dir,
        })
    }

    /// The people endpoint, `http://127.0.0.1:PORT/wp-json/wp/v2/people`.
    pub fn base_url(&self) -> String {
        format!("{}/wp-json/wp/v2/people", self.site_url)
    }

    /// The site's address, `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn site_url(&self) -> &str {
        &self.site_url
    }

    /// The user the application password belongs to, an administrator.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The application password of [`WordPress::user`], for Basic auth. A secret: never print it.
    pub fn app_password(&self) -> &str {
        &self.app_password
    }

    /// How long [`WordPress::start`] took.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// The site's table prefix, for [`WordPress::sql`]: posts are in `wp_posts`, meta in
    /// `wp_postmeta`.
    pub fn table_prefix(&self) -> &'static str {
        "wp_"
    }

    /// Runs PHP code inside the site (WordPress loaded, as `admin`) and returns what it
    /// printed. Panics when the code fails.
    pub async fn php(&self, code: &str) -> String {
        self.php_with(code, &serde_json::Value::Null).await
    }

    /// Like [`WordPress::php`], with `$input` set to `input` (decoded into PHP arrays), so that
    /// values need no quoting in the code.
    pub async fn php_with(&self, code: &str, input: &serde_json::Value) -> String {
        let request = serde_json::json!({ "code": code, "input": input }).to_string();
        let mut command = php_command(&self.php, &self.processes);
        command.arg(self.dir.path().join("run.php")).arg(&self.docroot).stdin(Stdio::piped());
        let mut child = command.spawn().expect("php runs");
        let mut stdin = child.stdin.take().expect("php's stdin");
        let write = async move {
            use tokio::io::AsyncWriteExt as _;
            stdin.write_all(request.as_bytes()).await.expect("the code reaches php");
        };
        let run = async move { tokio::join!(child.wait_with_output(), write).0 };
        let output = finish("PHP code in the site", run, self.dir.path()).await;
        String::from_utf8(output.stdout).expect("php prints UTF-8")
    }

    /// Runs one SQL statement on the site's database and returns the rows it gives (an
    /// empty list for a statement that gives none), each a JSON object of strings and
    /// nulls. Panics when the statement fails. Changing rows behind WordPress's back is
    /// fine: the site keeps no cache between requests.
    pub async fn sql(&self, statement: &str) -> Vec<serde_json::Value> {
        let code = r#"
            global $wpdb;
            if ( false === $wpdb->query( $input ) ) {
                fwrite( STDERR, 'SQL failed: ' . $wpdb->last_error . "\n" );
                exit( 1 );
            }
            echo wp_json_encode( $wpdb->last_result );
        "#;
        let output = self.php_with(code, &serde_json::Value::from(statement)).await;
        serde_json::from_str(&output).unwrap_or_else(|error| panic!("SQL rows as JSON: {error}: {output}"))
    }

    /// The requests the site answered so far whose method may change something (`POST`, `PUT`,
    /// `PATCH`, `DELETE`; a `/batch/v1` call is one), as [`WordPress::requests`] logs them.
    pub fn changing_requests(&self) -> Vec<String> {
        self.requests()
            .into_iter()
            .filter(|request| {
                ["POST ", "PUT ", "PATCH ", "DELETE "].iter().any(|method| request.starts_with(method))
            })
            .collect()
    }

    /// Sets the site's time zone (`timezone_string`, as Settings → General does), such as
    /// `Europe/Amsterdam`: `date` and `modified` are then local times, `*_gmt` stay UTC.
    pub async fn set_time_zone(&self, zone: &str) {
        self.php_with("update_option( 'timezone_string', $input );", &serde_json::Value::from(zone)).await;
    }

    /// While `on`, storing a person's `contact_info` fails: the REST API answers 500 after it
    /// has inserted the post and stored the meta fields registered before it (`knvb_id` too).
    pub async fn fail_contact_info(&self, on: bool) {
        let code = if on {
            "update_option( 'fieldsync_fail_contact_info', 1 );"
        } else {
            "delete_option( 'fieldsync_fail_contact_info' );"
        };
        self.php(code).await;
    }

    /// Makes `n` published people straight in the database (no REST calls), numbered from 1:
    /// person `i` has the title `Person i`, `knvb_id` `FS{i:05}`, `first_name` `First{i}`,
    /// `last_name` `Last{i}` and `email` `person{i}@example.com`. Returns their ids in order.
    pub async fn create_people(&self, n: usize) -> Vec<u64> {
        let code = r#"
            $ids = array();
            for ( $i = 1; $i <= $input; $i++ ) {
                $id = wp_insert_post(
                    array(
                        'post_type'   => 'person',
                        'post_status' => 'publish',
                        'post_title'  => "Person $i",
                        'meta_input'  => array(
                            'knvb_id'    => sprintf( 'FS%05d', $i ),
                            'first_name' => "First$i",
                            'last_name'  => "Last$i",
                            'email'      => "person$i@example.com",
                        ),
                    ),
                    true
                );
                if ( is_wp_error( $id ) ) {
                    fwrite( STDERR, $id->get_error_message() . "\n" );
                    exit( 1 );
                }
                $ids[] = $id;
            }
            echo wp_json_encode( $ids );
        "#;
        let output = self.php_with(code, &serde_json::Value::from(n)).await;
        serde_json::from_str(&output)
            .unwrap_or_else(|error| panic!("the new people's ids: {error}: {output}"))
    }

    /// Every request WordPress answered so far, in order, as its router logged them: the
    /// method, the path with its query, and the status (`POST /wp-json/wp/v2/people 201`).
    pub fn requests(&self) -> Vec<String> {
        let log = fs::read_to_string(self.dir.path().join("requests.log")).unwrap_or_default();
        log.lines().map(str::to_owned).collect()
    }
}

/// Returns `None` for a machine without the programs, or panics when `FIELDSYNC_REQUIRE_ALL`
/// says every test must run.
fn skip(missing: &str) -> Option<WordPress> {
    super::skip("a real WordPress", missing, INSTALL_HINT);
    None
}

/// The programs and files the site needs.
struct Programs {
    php: PathBuf,
    mariadbd: PathBuf,
    install_db: PathBuf,
    wordpress: PathBuf,
}

impl Programs {
    /// Finds everything, or says what is missing.
    fn find() -> Result<Programs, String> {
        let php = find_program(&["php"]).ok_or("php is not installed")?;
        let mariadbd = find_program(&["mariadbd", "mysqld"]).ok_or("mariadbd is not installed")?;
        let install_db = find_program(&["mariadb-install-db", "mysql_install_db"])
            .ok_or("mariadb-install-db is not installed")?;
        let wordpress = PathBuf::from(WORDPRESS_DIR);
        if !wordpress.join("wp-settings.php").is_file() {
            return Err(format!("WordPress is not in {WORDPRESS_DIR}"));
        }
        let mysqli = Command::new(&php)
            .args(["-r", "exit(extension_loaded('mysqli') ? 0 : 1);"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if !mysqli {
            return Err("PHP has no mysqli extension".to_owned());
        }
        Ok(Programs { php, mariadbd, install_db, wordpress })
    }
}

/// The first of `names` found as an executable file on `PATH` or in the `sbin` directories,
/// where the database server lives and which a user's `PATH` may lack.
fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    dirs.extend(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from));
    names.iter().find_map(|name| {
        dirs.iter().map(|dir| dir.join(name)).find(|candidate| {
            fs::metadata(candidate).is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        })
    })
}

/// Lays out the document root: WordPress's top-level files copied, its `wp-admin` and
/// `wp-includes` (and any other directory) linked, our own `wp-content` with the plugin and
/// the package's themes linked. `wp-config.php` is written by [`write_config`].
fn build_docroot(wordpress: &Path, docroot: &Path) {
    let content = docroot.join("wp-content");
    for sub in ["mu-plugins", "plugins", "uploads"] {
        fs::create_dir_all(content.join(sub)).expect("the document root's directories");
    }
    write_file(&content.join("mu-plugins/fieldsync-people.php"), PEOPLE_PLUGIN);
    let themes = wordpress.join("wp-content/themes");
    if let Ok(themes) = themes.canonicalize() {
        symlink(themes, content.join("themes")).expect("a link to the themes");
    }

    let entries = fs::read_dir(wordpress).unwrap_or_else(|error| panic!("{}: {error}", wordpress.display()));
    for entry in entries {
        let entry = entry.expect("a WordPress directory entry");
        let name = entry.file_name();
        if name == "wp-config.php" || name == "wp-content" {
            continue;
        }
        let source = entry.path();
        let target = docroot.join(&name);
        if source.is_dir() {
            symlink(source.canonicalize().expect("a WordPress directory"), target)
                .expect("a link to a WordPress directory");
        } else if source.is_file() {
            fs::copy(&source, &target)
                .unwrap_or_else(|error| panic!("copying {}: {error}", source.display()));
        }
    }
}

/// Writes the site's `wp-config.php`: the database through its socket, the address with
/// `port`, the `local` environment (which allows application passwords over plain HTTP), no
/// cron, no outgoing HTTP and no updates.
fn write_config(docroot: &Path, socket: &Path, port: u16) {
    let host = php_string(&format!("localhost:{}", socket.display()));
    let site = php_string(&format!("http://127.0.0.1:{port}"));
    let content_dir = php_string(&docroot.join("wp-content").display().to_string());
    let content_url = php_string(&format!("http://127.0.0.1:{port}/wp-content"));
    let config = format!(
        "<?php
// The fieldsync test site's configuration, written by its test harness.
define( 'DB_NAME', '{DATABASE}' );
define( 'DB_USER', 'root' );
define( 'DB_PASSWORD', '' );
define( 'DB_HOST', {host} );
define( 'DB_CHARSET', 'utf8mb4' );
define( 'DB_COLLATE', '' );
$table_prefix = 'wp_';
define( 'WP_HOME', {site} );
define( 'WP_SITEURL', {site} );
define( 'WP_CONTENT_DIR', {content_dir} );
define( 'WP_CONTENT_URL', {content_url} );
define( 'WP_ENVIRONMENT_TYPE', 'local' );
define( 'DISABLE_WP_CRON', true );
define( 'WP_HTTP_BLOCK_EXTERNAL', true );
define( 'AUTOMATIC_UPDATER_DISABLED', true );
define( 'WP_AUTO_UPDATE_CORE', false );
define( 'WP_DEBUG', false );
if ( ! defined( 'ABSPATH' ) ) {{
	define( 'ABSPATH', __DIR__ . '/' );
}}
require_once ABSPATH . 'wp-settings.php';
"
    );
    write_file(&docroot.join("wp-config.php"), &config);
}

/// `text` as a single-quoted PHP string literal.
fn php_string(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Makes a fresh MariaDB data directory in `root`, starts `mariadbd` on it with a socket in
/// `root` and no networking, waits until it accepts connections, and returns the socket.
async fn start_mariadb(programs: &Programs, processes: &mut Processes, root: &Path) -> PathBuf {
    let data = root.join("mysql");
    let tmp = root.join("mysql-tmp");
    fs::create_dir_all(&tmp).expect("MariaDB's temporary directory");
    let socket = root.join("mysql.sock");
    // mariadbd refuses to run as root unless told to.
    let as_root = running_as_root();
    let user: &[&str] = if as_root { &["--user=root"] } else { &[] };

    let mut install = tokio::process::Command::new(&programs.install_db);
    install
        .arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        // Its own temporary directory: sites set up at once collided in /tmp's temporary tables.
        .arg(format!("--tmpdir={}", tmp.display()))
        .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
        .args(user)
        .args(MARIADB_OPTIONS)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .process_group(processes.group);
    finish("mariadb-install-db", install.output(), root).await;

    let log = root.join("mariadb.log");
    let mut server = Command::new(&programs.mariadbd);
    server
        .arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--socket={}", socket.display()))
        .arg(format!("--pid-file={}", root.join("mariadb.pid").display()))
        .arg(format!("--log-error={}", log.display()))
        .arg(format!("--tmpdir={}", tmp.display()))
        .arg("--skip-networking")
        .args(user)
        .args(MARIADB_OPTIONS)
        .stdout(log_file(&root.join("mariadb.out")))
        .stderr(log_file(&root.join("mariadb.out")));
    let index = processes.spawn(&mut server, "mariadbd");

    let accepting = || async { tokio::net::UnixStream::connect(&socket).await.is_ok() };
    let poll = Duration::from_millis(25);
    if let Some(status) = wait_until_accepting(processes, index, "mariadbd", root, poll, accepting).await {
        panic!("mariadbd exited ({status}) before accepting connections{}", logs(root));
    }
    socket
}

/// Waits until `accepting` (tried every `poll`) says the server `what`, which `processes`
/// started as `index`, accepts connections; returns how it exited when it exited first.
///
/// Panics when it does neither within [`TIMEOUT`], with the logs under `root`.
async fn wait_until_accepting<F: Future<Output = bool>>(
    processes: &mut Processes,
    index: usize,
    what: &str,
    root: &Path,
    poll: Duration,
    accepting: impl Fn() -> F,
) -> Option<ExitStatus> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if accepting().await {
            return None;
        }
        if let Some(status) = processes.exited(index) {
            return Some(status);
        }
        assert!(Instant::now() < deadline, "{what} did not accept connections in {TIMEOUT:?}{}", logs(root));
        tokio::time::sleep(poll).await;
    }
}

/// Writes the configuration and starts PHP's built-in server on a free port of 127.0.0.1,
/// trying other ports when another process takes the chosen one first; returns the port once
/// the server accepts connections.
async fn start_php(php: &Path, processes: &mut Processes, root: &Path, docroot: &Path, socket: &Path) -> u16 {
    for _attempt in 0..5 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port on 127.0.0.1")
            .port();
        write_config(docroot, socket, port);
        let log = root.join("php-server.log");
        let mut server = Command::new(php);
        server
            .env("PHP_CLI_SERVER_WORKERS", PHP_WORKERS)
            .args(PHP_SETTINGS)
            .arg("-d")
            .arg("display_errors=0")
            .arg("-d")
            .arg(format!("error_log={}", root.join("php-errors.log").display()))
            .arg("-S")
            .arg(format!("127.0.0.1:{port}"))
            .arg("-t")
            .arg(docroot)
            .arg(root.join("router.php"))
            .current_dir(docroot)
            .stdout(log_file(&log))
            .stderr(log_file(&log));
        let index = processes.spawn(&mut server, "php -S");

        let accepting = || async move { tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() };
        let poll = Duration::from_millis(10);
        let Some(status) = wait_until_accepting(processes, index, "php -S", root, poll, accepting).await
        else {
            return port;
        };
        let text = fs::read_to_string(&log).unwrap_or_default();
        if !text.contains("Address already in use") {
            panic!("php -S exited ({status}) before accepting connections{}", logs(root));
        }
    }
    panic!("php -S found no free port in 5 tries{}", logs(root))
}

/// PHP settings for every PHP process of the site.
const PHP_SETTINGS: &[&str] =
    &["-d", "memory_limit=256M", "-d", "opcache.enable=1", "-d", "opcache.enable_cli=0"];

/// A PHP command-line script run in the site's process group, its errors on stderr.
fn php_command(php: &Path, processes: &Processes) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(php);
    command
        .args(PHP_SETTINGS)
        .args(["-d", "display_errors=stderr"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(processes.group);
    command
}

/// Waits for a command that runs to its end, and panics unless it succeeds in time. The
/// panic shows its stderr and the servers' logs, not its stdout, which may hold a secret.
async fn finish(what: &str, output: impl Future<Output = std::io::Result<Output>>, root: &Path) -> Output {
    let output = tokio::time::timeout(TIMEOUT, output)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish in {TIMEOUT:?}{}", logs(root)))
        .unwrap_or_else(|error| panic!("{what} could not run: {error}"));
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr),
        logs(root)
    );
    output
}

/// The ends of the servers' logs, for a panic message.
fn logs(root: &Path) -> String {
    let mut text = String::new();
    for name in ["mariadb.log", "mariadb.out", "php-server.log", "php-errors.log"] {
        let Ok(log) = fs::read_to_string(root.join(name)) else { continue };
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(30)..].join("\n");
        text.push_str(&format!("\n--- end of {name} ---\n{tail}"));
    }
    text
}
