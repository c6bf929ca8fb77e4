//! A real Django club site on loopback for the tests: a Django REST Framework API of players at
//! `/api/players/` and Django's own admin at `/admin/club/player/`, from Debian's
//! `python3-django`, `python3-djangorestframework` and `python3-django-filters`, run by
//! `/usr/bin/python3`.
//!
//! [`DjangoServer::start`] copies the project in `crates/connector/testkit/django` into a fresh
//! temporary directory, migrates an SQLite file there, makes the superuser the test chose (with
//! an API token) and seeded players, and serves it with `manage.py runserver --noreload` on a
//! free port of 127.0.0.1. The test reads and changes the database directly
//! ([`DjangoServer::query`], [`DjangoServer::python`]) and counts what clients sent
//! ([`DjangoServer::requests`]). When Python or Django is missing it returns `None` after a
//! `SKIPPED:` line, or panics when `FIELDSYNC_REQUIRE_ALL` is set ([`super::skip`]).
//!
//! What the site does that a client must know:
//! - `GET /api/players/` pages by number (`page`, `page_size` up to 500, `next` as an absolute
//!   URL), in `updated_at` then `id` order, filtered by `updated_after` (at or after; a time
//!   without an offset is Amsterdam time) and `federation_id` (one or more, by commas).
//! - `updated_at` is written in Europe/Amsterdam time with its offset
//!   (`2026-12-06T12:27:39.945762+01:00`) and stored in UTC in the file.
//! - Text fields refuse null ("This field may not be null."); `email` refuses malformed
//!   addresses and any at `invalid.example` ("E-mail addresses at invalid.example are not
//!   accepted."), in the API (400) and in the admin's `errorlist`; `tags` must be a list of texts.
//! - Every save counts in `version`. An update that sends `version` other than the current one
//!   is refused with 409 ("This player was changed by someone else: …"); so is an admin form
//!   opened before another save ("This player was changed by someone else while you were
//!   editing."). No ETags. [`DjangoServer::edit_after_read`] makes a person's edit right after a
//!   read, for tests of that refusal.
//! - Auth: `Authorization: Token …`, HTTP basic, or the admin's session.

use std::fmt;
use std::fs;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::processes::{Processes, serve_on_free_port, tail, write_file};
use serde_json::{Map, Value as Json};

/// The interpreter whose packages the site runs on: Debian's, not one a user put on `PATH`.
pub const PYTHON: &str = "/usr/bin/python3";

/// What a machine without the packages is told to install.
const INSTALL_HINT: &str = "apt-get install --no-install-recommends python3-django python3-djangorestframework python3-django-filters";

/// How long migrating, seeding, a Python snippet or the server's start may take.
const TIMEOUT: Duration = Duration::from_secs(120);

/// The project's files, by their path inside it.
const PROJECT: &[(&str, &str)] = &[
    ("manage.py", include_str!("../../testkit/django/manage.py")),
    ("clubsite/__init__.py", include_str!("../../testkit/django/clubsite/__init__.py")),
    ("clubsite/settings.py", include_str!("../../testkit/django/clubsite/settings.py")),
    ("clubsite/urls.py", include_str!("../../testkit/django/clubsite/urls.py")),
    ("clubsite/wsgi.py", include_str!("../../testkit/django/clubsite/wsgi.py")),
    ("club/__init__.py", include_str!("../../testkit/django/club/__init__.py")),
    ("club/admin.py", include_str!("../../testkit/django/club/admin.py")),
    ("club/apps.py", include_str!("../../testkit/django/club/apps.py")),
    ("club/middleware.py", include_str!("../../testkit/django/club/middleware.py")),
    ("club/models.py", include_str!("../../testkit/django/club/models.py")),
    ("club/serializers.py", include_str!("../../testkit/django/club/serializers.py")),
    ("club/views.py", include_str!("../../testkit/django/club/views.py")),
    ("club/migrations/__init__.py", include_str!("../../testkit/django/club/migrations/__init__.py")),
    ("club/migrations/0001_initial.py", include_str!("../../testkit/django/club/migrations/0001_initial.py")),
    ("club/management/__init__.py", include_str!("../../testkit/django/club/management/__init__.py")),
    (
        "club/management/commands/__init__.py",
        include_str!("../../testkit/django/club/management/commands/__init__.py"),
    ),
    (
        "club/management/commands/seed.py",
        include_str!("../../testkit/django/club/management/commands/seed.py"),
    ),
];

/// What the test chooses about a new site.
#[derive(Clone, Debug)]
pub struct DjangoOptions {
    /// The superuser's name.
    pub user: String,
    /// The superuser's password (for the admin's login page and HTTP basic auth).
    pub password: String,
    /// How many seeded players the site starts with (`FED00001`, `FED00002`, …).
    pub players: usize,
    /// The seed of the players' made-up details: the same seed gives the same players.
    pub seed: u64,
}

impl Default for DjangoOptions {
    /// The superuser `admin` with a fresh random password, no players, seed 12.
    fn default() -> Self {
        Self { user: "admin".into(), password: random_text(24), players: 0, seed: 12 }
    }
}

/// One request the site answered, from its request log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedRequest {
    /// `GET`, `PATCH`, …
    pub method: String,
    /// The path with its query string.
    pub path: String,
    /// The answer's status code.
    pub status: u16,
}

impl LoggedRequest {
    /// Whether the method may change something (anything but `GET`, `HEAD` and `OPTIONS`).
    pub fn changes(&self) -> bool {
        !matches!(self.method.as_str(), "GET" | "HEAD" | "OPTIONS")
    }
}

/// A running club site; see the module's documentation. Dropping it kills the server (and
/// anything it started) and removes its directory.
pub struct DjangoServer {
    port: u16,
    user: String,
    password: String,
    token: String,
    // Fields drop in order: the processes die before their directory is removed.
    processes: Processes,
    dir: tempfile::TempDir,
}

impl fmt::Debug for DjangoServer {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("DjangoServer")
            .field("url", &self.url())
            .field("user", &self.user)
            .field("password", &"<secret>")
            .field("token", &"<secret>")
            .field("dir", &self.dir.path())
            .finish()
    }
}

impl DjangoServer {
    /// Starts a fresh site as `options` say, or returns `None` after a `SKIPPED:` line on
    /// stderr when Python or Django is missing (it panics instead when `FIELDSYNC_REQUIRE_ALL`
    /// is set). Blocks while the site is set up (a second or two); an async test may call it
    /// as it is, before it starts anything else.
    ///
    /// # Panics
    ///
    /// When the packages are there but the site does not come up in time, with the end of its
    /// log.
    pub fn start(options: &DjangoOptions) -> Option<DjangoServer> {
        super::found_or_skip(find_django(), "a real Django site", INSTALL_HINT)?;
        let (dir, root) = super::scratch_dir("django");
        for (path, text) in PROJECT {
            let target = root.join(path);
            fs::create_dir_all(target.parent().expect("a project file is in a directory"))
                .expect("the project's directories");
            write_file(&target, text);
        }
        let mut processes = Processes::start(&root);
        let token = random_text(40);
        run_manage(&mut processes, &root, &["migrate", "--no-input", "-v", "0"], &[]);
        let players = options.players.to_string();
        let seed = options.seed.to_string();
        run_manage(
            &mut processes,
            &root,
            &["seed", "--players", &players, "--seed", &seed],
            &[
                ("CLUBSITE_ADMIN_USER", options.user.as_str()),
                ("CLUBSITE_ADMIN_PASSWORD", options.password.as_str()),
                ("CLUBSITE_ADMIN_TOKEN", token.as_str()),
            ],
        );
        let port = start_server(&mut processes, &root);
        Some(DjangoServer {
            port,
            user: options.user.clone(),
            password: options.password.clone(),
            token,
            processes,
            dir,
        })
    }

    /// The site's address, `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The players collection, `http://127.0.0.1:PORT/api/players/`.
    pub fn players_url(&self) -> String {
        format!("{}/api/players/", self.url())
    }

    /// The admin's start page, `http://127.0.0.1:PORT/admin/` (its login page is
    /// `/admin/login/`, the players' change list `/admin/club/player/`).
    pub fn admin_url(&self) -> String {
        format!("{}/admin/", self.url())
    }

    /// The superuser's name.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The superuser's password. A secret: never print it.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The superuser's API token, for `Authorization: Token …`. A secret: never print it.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The site's SQLite file (players in `club_player`, times in UTC).
    pub fn database(&self) -> PathBuf {
        self.dir.path().join("club.sqlite3")
    }

    /// Runs one SQL statement on the site's database, straight on the file, and returns its
    /// rows as JSON objects (integers, reals, text and nulls as they are). Changing rows behind
    /// the site's back is fine: it keeps no cache.
    ///
    /// # Panics
    ///
    /// When the statement fails or gives a blob.
    pub fn query(&self, statement: &str) -> Vec<Map<String, Json>> {
        let connection = rusqlite::Connection::open(self.database()).expect("the site's database opens");
        connection.busy_timeout(TIMEOUT).expect("a busy timeout");
        let mut prepared = connection
            .prepare(statement)
            .unwrap_or_else(|error| panic!("SQL {statement:?} does not prepare: {error}"));
        let names: Vec<String> = prepared.column_names().map(str::to_owned).collect();
        let mut rows = prepared.query([]).unwrap_or_else(|error| panic!("SQL {statement:?} fails: {error}"));
        let mut out = Vec::new();
        while let Some(row) = rows.next().unwrap_or_else(|error| panic!("SQL {statement:?} fails: {error}")) {
            let mut object = Map::new();
            for (index, name) in names.iter().enumerate() {
                let value = match row.get_ref(index).expect("a column of the row") {
                    rusqlite::types::ValueRef::Null => Json::Null,
                    rusqlite::types::ValueRef::Integer(number) => Json::from(number),
                    rusqlite::types::ValueRef::Real(number) => Json::from(number),
                    rusqlite::types::ValueRef::Text(text) => Json::from(String::from_utf8_lossy(text)),
                    rusqlite::types::ValueRef::Blob(_) => panic!("SQL {statement:?} gave a blob in {name}"),
                };
                object.insert(name.clone(), value);
            }
            out.push(object);
        }
        out
    }

    /// Every player as the database holds it, by `federation_id`: `active` as a boolean,
    /// `tags` as JSON, `updated_at` as stored (UTC text), everything else as stored.
    pub fn players(&self) -> Vec<Map<String, Json>> {
        let mut players = self.query("SELECT * FROM club_player ORDER BY federation_id");
        for player in &mut players {
            if let Some(active) = player.get_mut("active") {
                *active = Json::Bool(active.as_i64().is_some_and(|number| number != 0));
            }
            if let Some(tags) = player.get_mut("tags")
                && let Some(text) = tags.as_str()
            {
                *tags = serde_json::from_str(text).unwrap_or_else(|error| panic!("tags {text:?}: {error}"));
            }
        }
        players
    }

    /// Runs Python code in the site (`manage.py shell -c`, with `Player` imported), as a person
    /// working in the site would: a save through the model moves `updated_at` and `version`.
    /// Returns what it printed.
    ///
    /// # Panics
    ///
    /// When the code fails, with its error output.
    pub fn python(&self, code: &str) -> String {
        let code = format!("from club.models import Player\n{code}");
        let output = manage(self.dir.path(), &["shell", "-c", &code], &[])
            .process_group(self.processes.group)
            .output()
            .unwrap_or_else(|error| panic!("{PYTHON} could not run: {error}"));
        assert!(
            output.status.success(),
            "Python code in the site failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("Python prints UTF-8")
    }

    /// Makes a person's edit of player `id` (`changes`: field names and values, saved through
    /// the model) right after the API next answers a read of that player alone, once: the
    /// client's write that follows finds the player changed since it was read.
    pub fn edit_after_read(&self, id: i64, changes: &Json) {
        let planned = serde_json::json!({ "id": id, "changes": changes });
        write_file(&self.dir.path().join("edit-after-read.json"), &planned.to_string());
    }

    /// Whether the edit planned with [`DjangoServer::edit_after_read`] was made.
    pub fn edited_after_read(&self) -> bool {
        !self.dir.path().join("edit-after-read.json").exists()
    }

    /// Every request the site answered so far, in order.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        let text = fs::read_to_string(self.dir.path().join("requests.log")).unwrap_or_default();
        text.lines()
            .filter_map(|line| {
                let (method, rest) = line.split_once(' ')?;
                let (path, status) = rest.rsplit_once(' ')?;
                Some(LoggedRequest { method: method.into(), path: path.into(), status: status.parse().ok()? })
            })
            .collect()
    }

    /// The end of the server's own log, for a failing test's message.
    pub fn log_tail(&self) -> String {
        tail(&self.dir.path().join("server.log"))
    }
}

/// Whether `/usr/bin/python3` has Django, Django REST Framework and django-filter; what is
/// missing if not.
fn find_django() -> Result<(), String> {
    if !Path::new(PYTHON).is_file() {
        return Err(format!("{PYTHON} is not installed"));
    }
    let output = Command::new(PYTHON)
        .args(["-c", "import django, rest_framework, django_filters; print(django.get_version())"])
        .stdin(Stdio::null())
        .output()
        .map_err(|error| format!("{PYTHON} does not run: {error}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!("{PYTHON} has no Django, Django REST Framework or django-filter"))
    }
}

/// `python3 manage.py ARGS` in the project, quiet and without bytecode files.
fn manage(root: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(PYTHON);
    command
        .arg("manage.py")
        .args(args)
        .current_dir(root)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1")
        .env_remove("DJANGO_SETTINGS_MODULE")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Runs a management command to its end in the site's process group, and panics unless it
/// succeeds in time. The panic shows its stderr, not its stdout.
fn run_manage(processes: &mut Processes, root: &Path, args: &[&str], env: &[(&str, &str)]) {
    let mut command = manage(root, args, env);
    let index = processes.spawn(&mut command, "manage.py");
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(status) = processes.exited(index) {
            let mut stderr = String::new();
            if let Some(mut pipe) = processes.children[index].stderr.take() {
                use std::io::Read as _;
                let _ = pipe.read_to_string(&mut stderr);
            }
            assert!(status.success(), "manage.py {} failed ({status}):\n{stderr}", args[0]);
            return;
        }
        assert!(Instant::now() < deadline, "manage.py {} did not finish in {TIMEOUT:?}", args[0]);
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts `runserver` on a free port of 127.0.0.1, trying another port when something else
/// takes the chosen one first; returns the port once the server accepts connections.
fn start_server(processes: &mut Processes, root: &Path) -> u16 {
    // `--insecure` serves the admin's style sheets with DEBUG off, as a deployed site has.
    let command = |port: u16| {
        let address = format!("127.0.0.1:{port}");
        manage(root, &["runserver", &address, "--noreload", "--insecure"], &[])
    };
    let log = root.join("server.log");
    serve_on_free_port(processes, "manage.py runserver", &log, "already in use", TIMEOUT, command, |_| true).0
}

/// Letters and digits drawn at random, for a password or a token.
fn random_text(length: usize) -> String {
    std::iter::repeat_with(fastrand::alphanumeric).take(length).collect()
}
