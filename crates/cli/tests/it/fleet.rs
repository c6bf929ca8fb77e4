//! Three `fieldsync serve` workers sharing one PostgreSQL state store, as on three machines:
//! 50 links on schedules of a few seconds all run, no two runs of one link ever overlap and no
//! more than `max_concurrent_runs` go on at once across the workers (both read from the
//! store's run records); a worker killed with SIGKILL in mid-run has its link taken over once
//! its lease expires, exactly once, and the link converges with nothing lost or written twice;
//! a worker stopped with SIGSTOP past its lease and then resumed commits nothing more.
#![cfg(unix)]

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fieldsync_connector::testkit::postgres::PostgresServer;
use fieldsync_test_support::members::{member_fields_toml, sqlite_connector_toml};
use fieldsync_test_support::readme_blocks;
use rusqlite::{Connection, params};

use crate::support::fieldsync;

/// How many small links the workers share, besides the big one.
const SMALL_LINKS: usize = 49;

/// Members of each small link.
const SMALL_MEMBERS: usize = 12;

/// Members of the big link: enough that its runs last seconds, so that a worker can be caught
/// in the middle of one.
const BIG_MEMBERS: usize = 20_000;

/// Runs at once across the workers.
const MAX_RUNNING: usize = 4;

/// How long a test waits for the workers to do what they must before failing.
const PATIENCE: Duration = Duration::from_secs(180);

/// The schema of the shared state store.
const SCHEMA: &str = "fleet";

/// A `fieldsync serve` worker, killed when dropped if it still runs.
pub(crate) struct Worker {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Worker {
    /// Starts `fieldsync serve` on the configuration in `dir`, its output collected.
    pub(crate) fn start(dir: &Path) -> Self {
        Self::spawn(fieldsync(dir).command(&["serve"]))
    }

    /// `start`, as on a machine of its own named `host`: in a UTS namespace of its own
    /// (`unshare`, when this runs as root, as CI does), so that the other workers cannot tell
    /// that its process died and wait for its leases to expire, as across machines.
    fn start_on(dir: &Path, host: &str) -> Self {
        let serve = fieldsync(dir).command(&["serve"]);
        let as_root = std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
            status.lines().any(|line| line.starts_with("Uid:") && line.split_whitespace().nth(1) == Some("0"))
        });
        if !as_root {
            eprintln!("the workers share this machine's name: a killed one's leases are taken at once");
            return Self::spawn(serve);
        }
        let mut command = std::process::Command::new("unshare");
        command.args(["--uts", "sh", "-c", "hostname \"$0\" && exec \"$@\"", host]);
        command.arg(serve.get_program()).args(serve.get_args());
        for (name, value) in serve.get_envs() {
            match value {
                Some(value) => command.env(name, value),
                None => command.env_remove(name),
            };
        }
        if let Some(dir) = serve.get_current_dir() {
            command.current_dir(dir);
        }
        Self::spawn(command)
    }

    fn spawn(mut command: std::process::Command) -> Self {
        let mut child = command
            .env("FIELDSYNC_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the fieldsync binary runs");
        let log = Arc::new(Mutex::new(String::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let mut log = log.lock().unwrap();
                    log.push_str(&line);
                    log.push('\n');
                }
            });
        }
        Worker { child, log }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What it printed and logged so far.
    pub(crate) fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn signal(&self, signal: &str) {
        let sent =
            std::process::Command::new("kill").args([signal, &self.pid().to_string()]).status().unwrap();
        assert!(sent.success(), "kill {signal} {}", self.pid());
    }

    /// SIGTERM, and the exit code once it exited.
    pub(crate) fn stop(mut self) -> Option<i32> {
        self.signal("-TERM");
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(started.elapsed() < PATIENCE, "a worker did not stop:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The shared state store, read with `psql`.
struct Store<'server> {
    server: &'server PostgresServer,
}

impl Store<'_> {
    /// Rows of `query` on the state store's schema, columns split.
    fn rows(&self, query: &str) -> Vec<Vec<String>> {
        let text = self.server.sql("fleet", &format!("SET search_path TO {SCHEMA}; {query}"));
        text.lines()
            .filter(|line| !line.is_empty() && *line != "SET")
            .map(|line| line.split('|').map(str::to_string).collect())
            .collect()
    }

    fn number(&self, query: &str) -> i64 {
        self.rows(query).first().and_then(|row| row.first()).map_or(0, |value| value.parse().unwrap_or(0))
    }

    /// The pid of the worker holding `link`'s live lease, if one does.
    fn holder(&self, link: &str) -> Option<u32> {
        let rows = self.rows(&format!(
            "SELECT owner FROM leases WHERE link = '{link}' AND expires_at > clock_timestamp()"
        ));
        let owner = rows.first()?.first()?.clone();
        owner.strip_prefix("fieldsync pid ")?.split(' ').next()?.parse().ok()
    }

    /// Every run: link, status, start and end (seconds since the epoch; none while running).
    fn runs(&self) -> Vec<(String, String, f64, Option<f64>, String)> {
        self.rows(
            "SELECT link, status, extract(epoch FROM started_at), coalesce(extract(epoch FROM finished_at)::text, ''), \
             coalesce(error, '') FROM runs ORDER BY id",
        )
        .into_iter()
        .map(|row| (row[0].clone(), row[1].clone(), row[2].parse().unwrap(), row[3].parse().ok(), row[4].clone()))
        .collect()
    }
}

/// Waits until `done` holds, failing with `what` and the workers' logs past `PATIENCE`.
pub(crate) fn wait_until(workers: &[&Worker], what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        if started.elapsed() > PATIENCE {
            let logs: Vec<String> = workers.iter().map(|worker| worker.log()).collect();
            panic!("{what} did not happen; the workers' logs:\n{}", logs.join("\n-----\n"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A club's member table (`members`: id, email, mobile, updated_at) holding `count` members
/// numbered from `first`, in WAL mode so that reading it never holds up a writer.
fn club_table(path: &Path, prefix: &str, count: usize) {
    let club = Connection::open(path).unwrap();
    club.execute_batch(
        "PRAGMA journal_mode = WAL; \
         CREATE TABLE members (id TEXT PRIMARY KEY, email TEXT, mobile TEXT, updated_at TEXT NOT NULL);",
    )
    .unwrap();
    club.execute(
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ?2) \
         INSERT INTO members SELECT printf('%s%05d', ?1, i), printf('lid%d.%s@vereniging.nl', i, lower(?1)), \
         printf('+3161%07d', i), strftime('%Y-%m-%dT%H:%M:%SZ', 'now', '-1 day') FROM n",
        params![prefix, count as i64 - 1],
    )
    .unwrap();
}

/// A website's empty table of people (`people`: number, mail, phone, modified).
fn site_table(path: &Path) {
    let site = Connection::open(path).unwrap();
    site.execute_batch(
        "PRAGMA journal_mode = WAL; \
         CREATE TABLE people (number TEXT PRIMARY KEY, mail TEXT, phone TEXT, modified TEXT NOT NULL);",
    )
    .unwrap();
}

/// A club's members (`club.db`) and a platform's (the table `members` of the database
/// `platform` on `server`, with `platform_settings` added to its connector), linked as `link`
/// by their ids with `link_settings` (its schedule), their e-mail and mobile fields kept in step.
fn club_to_platform(
    server: &PostgresServer,
    link: &str,
    platform_settings: &str,
    link_settings: &str,
) -> String {
    format!(
        r#"{club}modified_format = "rfc3339"

[connectors.platform]
kind = "postgres"
url = "{platform}"
table = "members"
key = "id"
modified = "updated_at"
{platform_settings}
[links.{link}]
left = "club"
right = "platform"
key = {{ left = "id", right = "id" }}
conflicts = {{ strategy = "last_write_wins", grace = "1s", tie = "club" }}
first_sync = {{ strategy = "prefer", side = "club" }}
{link_settings}{fields}"#,
        club = sqlite_connector_toml("club", "club.db", "members", "id", "updated_at"),
        platform = server.url("platform"),
        fields = member_fields_toml(link, &[("email", "email", "email"), ("mobile", "mobile", "mobile")]),
    )
}

/// The configuration: the state in PostgreSQL, leases of four seconds, the big link from a
/// club's SQLite table to a platform's PostgreSQL table every two seconds, and the small links
/// between SQLite tables every three.
fn config(server: &PostgresServer, dir: &Path) -> String {
    let mut text = format!(
        r#"state = "{state}?schema={SCHEMA}"

[server]
listen = "127.0.0.1:0"
max_concurrent_runs = {MAX_RUNNING}
lease_timeout = "4s"

{big}"#,
        state = server.url("fleet"),
        big = club_to_platform(
            server,
            "big",
            "",
            "guard = { max_delete = \"10%\", max_change = \"100%\" }\nevery = \"2s\"\n"
        ),
    );
    for link in 0..SMALL_LINKS {
        club_table(&dir.join(format!("club{link}.db")), &format!("C{link}X"), SMALL_MEMBERS);
        site_table(&dir.join(format!("site{link}.db")));
        text.push_str(&format!(
            "\n{club}modified_format = \"rfc3339\"\n{site}\n[links.small{link}]\nleft = \"club{link}\"\nright = \"site{link}\"\n\
             key = {{ left = \"id\", right = \"number\" }}\nconflicts = {{ strategy = \"last_write_wins\", grace = \"1s\", tie = \"club{link}\" }}\n\
             every = \"3s\"\n{fields}",
            club = sqlite_connector_toml(&format!("club{link}"), &format!("club{link}.db"), "members", "id", "updated_at"),
            site = sqlite_connector_toml(&format!("site{link}"), &format!("site{link}.db"), "people", "number", "modified"),
            fields = member_fields_toml(&format!("small{link}"), &[("email", "email", "mail"), ("mobile", "mobile", "phone")]),
        ));
    }
    text
}

#[test]
fn three_workers_share_fifty_links_and_a_killed_or_stopped_one_loses_nothing_and_commits_nothing() {
    let Some(server) = PostgresServer::start() else { return };
    server.create_database("fleet");
    server.create_database("platform");
    server.sql(
        "platform",
        "CREATE TABLE members (id text PRIMARY KEY, email text, mobile text, \
         updated_at timestamptz NOT NULL DEFAULT now())",
    );
    let store = Store { server: &server };
    let platform = |query: &str| -> i64 { server.sql("platform", query).trim().parse().unwrap_or(0) };
    let dir = tempfile::tempdir().unwrap();
    club_table(&dir.path().join("club.db"), "B", BIG_MEMBERS);
    std::fs::write(dir.path().join("fieldsync.toml"), config(&server, dir.path())).unwrap();

    let mut workers: Vec<Option<Worker>> =
        (1..=3).map(|number| Some(Worker::start_on(dir.path(), &format!("sync{number}")))).collect();
    let index_of = |workers: &[Option<Worker>], pid: u32| {
        workers.iter().position(|worker| worker.as_ref().is_some_and(|worker| worker.pid() == pid))
    };
    let wait = |workers: &[Option<Worker>], what: &str, done: &mut dyn FnMut() -> bool| {
        let refs: Vec<&Worker> = workers.iter().flatten().collect();
        wait_until(&refs, what, done);
    };

    // SIGKILL: the worker running the big link's first sync, caught while it delivers.
    let mut killed_pid = 0;
    wait(&workers, "a worker delivering the big link's first sync", &mut || {
        let created = platform("SELECT count(*) FROM members");
        if created == 0 || created >= BIG_MEMBERS as i64 {
            return false;
        }
        match store.holder("big").and_then(|pid| index_of(&workers, pid).map(|index| (pid, index))) {
            Some((pid, _)) => {
                killed_pid = pid;
                true
            }
            None => false,
        }
    });
    let killed = index_of(&workers, killed_pid).unwrap();
    workers[killed].as_ref().unwrap().signal("-KILL");
    let created_at_kill = platform("SELECT count(*) FROM members");
    assert!(created_at_kill < BIG_MEMBERS as i64, "the worker was killed in mid-run");
    workers[killed] = None;
    wait(&workers, "the big link's first sync, taken over", &mut || {
        platform("SELECT count(*) FROM members") == BIG_MEMBERS as i64
            && store.number("SELECT count(*) FROM runs WHERE link = 'big' AND status = 'done'") > 0
    });
    assert_eq!(
        platform("SELECT count(DISTINCT id) FROM members"),
        BIG_MEMBERS as i64,
        "nothing written twice"
    );
    assert_eq!(
        platform("SELECT count(*) FROM members WHERE email LIKE 'lid%.b@vereniging.nl'"),
        BIG_MEMBERS as i64,
        "every member as the club has them"
    );
    let abandoned = store.number("SELECT count(*) FROM runs WHERE link = 'big' AND error LIKE 'abandoned:%'");
    assert_eq!(abandoned, 1, "the killed worker's run was taken over exactly once");

    // SIGSTOP: every club member's address changes; the worker delivering the change is stopped
    // past its lease, another takes the link over, and the stopped one, resumed, commits nothing.
    let club = Connection::open(dir.path().join("club.db")).unwrap();
    club.execute(
        "UPDATE members SET email = replace(email, '@vereniging.nl', '@club.example'), \
         updated_at = strftime('%Y-%m-%dT%H:%M:%SZ', 'now')",
        [],
    )
    .unwrap();
    let moved = || platform("SELECT count(*) FROM members WHERE email LIKE '%@club.example'");
    let mut stopped_pid = 0;
    wait(&workers, "a worker delivering the change of address", &mut || {
        let done = moved();
        if done == 0 || done >= BIG_MEMBERS as i64 {
            return false;
        }
        match store.holder("big").filter(|pid| index_of(&workers, *pid).is_some()) {
            Some(pid) => {
                stopped_pid = pid;
                true
            }
            None => false,
        }
    });
    let stopped = index_of(&workers, stopped_pid).unwrap();
    workers[stopped].as_ref().unwrap().signal("-STOP");
    let stopped_run = store.number("SELECT max(id) FROM runs WHERE link = 'big' AND status = 'running'");
    wait(&workers, "the change of address, taken over from the stopped worker", &mut || {
        moved() == BIG_MEMBERS as i64
            && store.number(&format!(
                "SELECT count(*) FROM runs WHERE link = 'big' AND id > {stopped_run} AND status = 'done'"
            )) > 0
    });
    let trail = |run: i64| {
        (
            store.number(&format!("SELECT count(*) FROM audit WHERE run_id = {run}")),
            store.rows(&format!("SELECT status, coalesce(error, '') FROM runs WHERE id = {run}")),
            store.rows("SELECT key, digest FROM baselines WHERE link = 'big' ORDER BY key LIMIT 50"),
        )
    };
    let before = trail(stopped_run);
    assert_eq!(before.1[0][0], "failed", "the stopped worker's run was taken over: {:?}", before.1);
    workers[stopped].as_ref().unwrap().signal("-CONT");
    let resumed = workers[stopped].as_ref().unwrap();
    let started = Instant::now();
    while !resumed.log().contains("taken over") {
        assert!(
            started.elapsed() < PATIENCE,
            "the resumed worker never met its lost lease:\n{}",
            resumed.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(trail(stopped_run), before, "the resumed worker committed nothing more");
    assert_eq!(moved(), BIG_MEMBERS as i64);

    // Every link ran (twice at least), never two runs of one link at once, never more than
    // MAX_RUNNING at once across the workers.
    wait(&workers, "every link's second run", &mut || {
        let runs = store.runs();
        (0..SMALL_LINKS).all(|link| {
            runs.iter().filter(|run| run.0 == format!("small{link}") && run.1 == "done").count() >= 2
        })
    });
    for worker in workers.iter_mut() {
        if let Some(worker) = worker.take() {
            let log = worker.log();
            assert_eq!(worker.stop(), Some(0), "SIGTERM ends a worker with 0:\n{log}");
        }
    }
    let runs = store.runs();
    // A run taken over ends, in the history, when the next one started; its lease ran out
    // earlier, at a time the history does not keep, so it is left out of the count at once.
    let mut by_link: BTreeMap<&str, Vec<(f64, f64, bool)>> = BTreeMap::new();
    for (link, status, start, end, error) in &runs {
        let end = end.unwrap_or_else(|| panic!("a run of {link} never ended ({status}): {runs:?}"));
        by_link.entry(link).or_default().push((*start, end, error.starts_with("abandoned:")));
    }
    for (link, intervals) in &by_link {
        for pair in intervals.windows(2) {
            assert!(pair[0].1 <= pair[1].0, "two runs of {link} overlapped: {pair:?}");
        }
    }
    let mut edges: Vec<(f64, i32)> = by_link
        .values()
        .flatten()
        .filter(|(_, _, abandoned)| !abandoned)
        .flat_map(|(start, end, _)| [(*start, 1), (*end, -1)])
        .collect();
    edges.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let (mut running, mut most) = (0, 0);
    for (_, change) in edges {
        running += change;
        most = most.max(running);
    }
    assert!(most <= MAX_RUNNING as i32, "{most} runs at once, more than {MAX_RUNNING}");
    assert_eq!(by_link.len(), SMALL_LINKS + 1, "every link ran");
    for link in 0..SMALL_LINKS {
        let site = Connection::open(dir.path().join(format!("site{link}.db"))).unwrap();
        let synced: i64 = site.query_row("SELECT count(*) FROM people", [], |row| row.get(0)).unwrap();
        assert_eq!(synced, SMALL_MEMBERS as i64, "small{link} converged");
    }
}

/// The README's notification trigger: the last `sql` block of its PostgreSQL section.
fn readme_trigger() -> String {
    readme_blocks("## PostgreSQL\n", "sql").pop().expect("the README's PostgreSQL section has SQL")
}

#[test]
fn a_notification_from_the_platform_runs_the_link_for_the_member_it_names_and_a_dropped_listener_listens_again()
 {
    let Some(server) = PostgresServer::start() else { return };
    server.create_database("platform");
    server.sql(
        "platform",
        "CREATE TABLE members (id text PRIMARY KEY, email text, mobile text, \
         updated_at timestamptz NOT NULL DEFAULT now())",
    );
    server.sql("platform", &readme_trigger());
    let dir = tempfile::tempdir().unwrap();
    club_table(&dir.path().join("club.db"), "P", SMALL_MEMBERS);
    std::fs::write(
        dir.path().join("fieldsync.toml"),
        format!(
            r#"state = "state.db"

[server]
listen = "127.0.0.1:0"

{club_to_platform}"#,
            club_to_platform =
                club_to_platform(&server, "members", "notify = \"members_changed\"\n", "every = \"1h\"\n"),
        ),
    )
    .unwrap();
    let platform = |query: &str| server.sql("platform", query).trim().to_string();
    let club = Connection::open(dir.path().join("club.db")).unwrap();
    let club_email = |id: &str| -> String {
        club.query_row("SELECT email FROM members WHERE id = ?1", [id], |row| row.get(0)).unwrap()
    };
    let state = dir.path().join("state.db");
    // The run that wrote P00007's new e-mail, as "mode status"; empty until one has. The club's
    // table holds the write before that run is recorded as ended.
    let run_of_the_edit = || -> String {
        crate::support::query(
            &state,
            "SELECT coalesce((SELECT runs.mode || ' ' || runs.status FROM audit JOIN runs ON runs.id = audit.run_id \
             WHERE audit.key = 'P00007' AND audit.field = 'email' ORDER BY audit.id DESC LIMIT 1), '')",
        )
    };

    let worker = Worker::start(dir.path());
    wait_until(&[&worker], "the first sync", || {
        platform("SELECT count(*) FROM members") == SMALL_MEMBERS.to_string()
    });
    assert_eq!(
        platform("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN%'"),
        "1",
        "one listener"
    );

    // A person edits a member on the platform: the trigger names it, the service runs for it.
    platform("UPDATE members SET email = 'nieuw.adres@platform.example' WHERE id = 'P00007'");
    wait_until(&[&worker], "the edit, notified", || club_email("P00007") == "nieuw.adres@platform.example");
    wait_until(&[&worker], "the run of the edit, ended", || {
        let run = run_of_the_edit();
        !run.is_empty() && !run.ends_with(" running")
    });
    assert_eq!(run_of_the_edit(), "targeted done", "a run of the member the notification named");
    let runs = || crate::support::count_once_created(&state, "SELECT count(*) FROM runs");
    let runs_before = runs();

    // A club edit, which no notification tells of; then the listener's session ends: fieldsync
    // listens again and runs the link for what it may have missed, and the next notification
    // is heard.
    club.execute(
        "UPDATE members SET email = 'van.club@vereniging.nl', \
         updated_at = strftime('%Y-%m-%dT%H:%M:%SZ', 'now') WHERE id = 'P00003'",
        [],
    )
    .unwrap();
    platform(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'LISTEN%' AND pid <> pg_backend_pid()",
    );
    wait_until(&[&worker], "listening again", || {
        worker.log().matches("listening to its change notices").count() >= 2
    });
    wait_until(&[&worker], "the run for what was missed", || {
        platform("SELECT email FROM members WHERE id = 'P00003'") == "van.club@vereniging.nl"
    });
    assert!(runs() > runs_before);
    platform("UPDATE members SET mobile = '+31687654321' WHERE id = 'P00009'");
    wait_until(&[&worker], "the second edit, notified", || {
        club.query_row("SELECT mobile FROM members WHERE id = 'P00009'", [], |row| row.get::<_, String>(0))
            .unwrap()
            == "+31687654321"
    });
    let log = worker.log();
    assert_eq!(worker.stop(), Some(0), "{log}");
}
