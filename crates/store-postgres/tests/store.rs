//! The state store on a real PostgreSQL server (the system's own, started once for this test
//! binary, its default collation ICU `en`): the conformance suite of `fieldsync_store::testkit`,
//! each property in a fresh schema of one database, then what is PostgreSQL's own: workers
//! racing for a lease, a lease taken over by the database's clock and the fencing of its old
//! holder, a lease being taken elsewhere found busy without waiting, migrations applied once
//! when workers open a schema at once, schemas that do not see each other, and a newer schema
//! refused.

use std::path::Path;
use std::sync::Barrier;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use fieldsync_connector::testkit::postgres::{PostgresServer, SHARED_DATABASE};
use fieldsync_model::{Side, Value};
use fieldsync_store::testkit::{Fixture, LINK, T0, field, key, layout, put, ts};
use fieldsync_store::{
    AuditEntry, AuditEvent, AuditValues, Baseline, Lease, NewOutboxEntry, Operation, Origin, PlanChunk,
    RunEnd, RunStatus, StateStore, StoreError, StoreLocation,
};
use fieldsync_store_postgres::{PostgresLocation, PostgresStore};

/// The database every fixture's schema lives in.
const DATABASE: &str = SHARED_DATABASE;

/// How long the tests' leases last unless they expire on purpose.
const MINUTE: Duration = Duration::from_secs(60);

/// The server of this test binary (`PostgresServer::shared`), or `None` after saying loudly
/// that the running test is skipped.
fn server() -> Option<&'static PostgresServer> {
    PostgresServer::shared()
}

/// A fresh schema of the test database: every fixture has its own, which proves that the
/// `schema` setting keeps deployments apart.
struct PostgresFixture {
    server: &'static PostgresServer,
    location: PostgresLocation,
}

impl PostgresFixture {
    /// The fixture's schema, quoted, for statements run with `psql`.
    fn schema(&self) -> String {
        format!("\"{}\"", self.location.schema())
    }

    /// Runs `statements` in the test database with `psql`; what it printed.
    fn sql(&self, statements: &str) -> String {
        self.server.sql(DATABASE, statements)
    }
}

impl Fixture for PostgresFixture {
    type Store = PostgresStore;

    fn open(&self) -> PostgresStore {
        self.location.open().expect("open the state store")
    }
}

/// A fixture in a schema of its own, or `None` (said loudly) when there is no server.
fn postgres() -> Option<PostgresFixture> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let server = server()?;
    let schema = format!("t_{}", NEXT.fetch_add(1, Ordering::SeqCst));
    Some(PostgresFixture { server, location: location_of(server, &schema) })
}

/// The location of `schema` in the test database, as a configuration would write it (with
/// parameters for the connection besides).
fn location_of(server: &PostgresServer, schema: &str) -> PostgresLocation {
    let url = server.url(DATABASE);
    let rest = url.strip_prefix("postgres://").expect("a postgres:// URL");
    let state = format!("{rest}?sslmode=disable&schema={schema}&connect_timeout=10");
    PostgresLocation::parse(&state, Path::new("")).expect("a state location")
}

fieldsync_store::conformance_tests!(optional postgres());

/// A baseline of one field `n` agreed on both sides.
fn agreed(text: &str) -> Baseline {
    Baseline {
        fields: vec![field(Some(Value::from(text)), None, None, Some(Origin::Both))],
        ..Baseline::empty(key(text), 1)
    }
}

#[test]
fn workers_racing_for_a_new_link_lease_it_exactly_once() {
    let Some(fixture) = postgres() else { return };
    const WORKERS: usize = 6;
    for round in 0..5 {
        let link = format!("new-{round}");
        let mut stores: Vec<PostgresStore> = (0..WORKERS).map(|_| fixture.open()).collect();
        let barrier = Barrier::new(WORKERS);
        let results: Vec<Result<Lease, StoreError>> = std::thread::scope(|scope| {
            let workers: Vec<_> = stores
                .iter_mut()
                .enumerate()
                .map(|(index, store)| {
                    let (barrier, link) = (&barrier, &link);
                    scope.spawn(move || {
                        barrier.wait();
                        store.lease(link, &format!("worker-{index}"), MINUTE)
                    })
                })
                .collect();
            workers.into_iter().map(|worker| worker.join().expect("a worker")).collect()
        });
        let granted: Vec<&Lease> = results.iter().filter_map(|result| result.as_ref().ok()).collect();
        assert_eq!(granted.len(), 1, "round {round}: {results:?}");
        assert_eq!(granted[0].token, 1, "the first lease of a link");
        for refused in results.iter().filter_map(|result| result.as_ref().err()) {
            assert!(matches!(refused, StoreError::Locked { .. }), "{refused:?}");
        }
    }
}

#[test]
fn a_lease_taken_over_once_expired_fences_its_old_holder_which_keeps_nothing() {
    let Some(fixture) = postgres() else { return };
    let (mut first, mut second) = (fixture.open(), fixture.open());
    let fields = layout(&mut first, &["n"]);
    let lease = first.lease(LINK, "first", Duration::from_secs(1)).unwrap();
    // The expiry is the database's: its clock, not this machine's.
    let stored = fixture.sql(&format!(
        "SELECT (extract(epoch FROM expires_at) * 1000000)::bigint FROM {}.leases WHERE link = '{LINK}'",
        fixture.schema()
    ));
    assert_eq!(stored, lease.expires_at.as_microsecond().to_string());
    let run = first.start_run(&lease, "full", false, ts(T0)).unwrap();
    assert!(second.lease(LINK, "second", MINUTE).unwrap_err().is_conflict(), "live, so not taken");

    // The first holder pauses past its lease; another takes it over.
    std::thread::sleep(Duration::from_millis(1_500));
    let taken = second.lease(LINK, "second", MINUTE).expect("an expired lease is taken over");
    assert_eq!(taken.token, lease.token + 1);

    // Resumed, the old holder's commits fail as lost and keep nothing.
    let entry = NewOutboxEntry {
        key: key("stale"),
        side: Side::Right,
        operation: Operation::Create,
        record_id: None,
        payload: "{}".into(),
        source: None,
    };
    let audit = AuditEntry {
        run_id: Some(run),
        key: key("stale"),
        field: None,
        event: AuditEvent::Detected,
        side: Some(Side::Left),
        base: None,
        left: None,
        right: None,
        value: None,
        reason: "found".into(),
        at: ts(T0),
        values: AuditValues::Full,
    };
    let chunk = PlanChunk {
        entries: vec![entry],
        baselines: vec![agreed("stale")],
        audit: vec![audit],
        ..PlanChunk::default()
    };
    let lost = first.commit_plan_chunk(&lease, run, &fields, chunk, ts(T0 + 1)).unwrap_err();
    assert!(matches!(lost, StoreError::LeaseLost { .. }) && lost.is_conflict(), "{lost:?}");
    let end = RunEnd {
        run,
        status: RunStatus::Done,
        mode: "full".into(),
        stats: serde_json::json!({}),
        error: None,
        at: ts(T0 + 2),
    };
    assert!(matches!(first.finish_run(&lease, end), Err(StoreError::LeaseLost { .. })));
    for store in [&first, &second] {
        assert!(store.baselines(LINK, &fields, &[key("stale")]).unwrap().is_empty());
        assert!(store.open_outbox_for(LINK, &[key("stale")]).unwrap().is_empty());
        assert!(store.audit_for_record(LINK, &key("stale")).unwrap().is_empty());
        assert_eq!(store.run(run).unwrap().status, RunStatus::Running);
    }

    // The new holder commits; the old one cannot give the lease up for it.
    let next = second.start_run(&taken, "full", true, ts(T0 + 3)).unwrap();
    assert!(next > run);
    first.release(lease).unwrap();
    assert!(first.lease(LINK, "first", MINUTE).unwrap_err().is_conflict());
    second.release(taken).unwrap();
    first.lease(LINK, "first", MINUTE).expect("free once released");
}

#[test]
fn a_lease_being_taken_elsewhere_at_this_moment_is_busy_without_waiting() {
    let Some(fixture) = postgres() else { return };
    let mut store = fixture.open();
    let lease = store.lease(LINK, "first", MINUTE).unwrap();
    store.release(lease).unwrap();

    // Another worker holds the link's row locked, as while it takes the lease or commits.
    let url = fixture.server.url(DATABASE);
    let holder = fieldsync_postgres::block_on(fieldsync_postgres::connect(&url)).expect("connect");
    let lock = format!("BEGIN; SELECT * FROM {}.leases WHERE link = '{LINK}' FOR UPDATE", fixture.schema());
    fieldsync_postgres::block_on(holder.batch_execute(&lock)).expect("lock the lease's row");

    let (answer, answered) = std::sync::mpsc::channel();
    let started = Instant::now();
    std::thread::spawn(move || {
        let _ = answer.send(
            store.lease(LINK, "second", MINUTE).map(|lease| lease.token).map_err(|error| (error, store)),
        );
    });
    let refused =
        answered.recv_timeout(Duration::from_secs(10)).expect("an answer without waiting for the lock");
    let Err((error, mut store)) = refused else { panic!("leased while another worker held the row") };
    assert!(matches!(error, StoreError::Locked { .. }), "{error:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "answered in {:?}", started.elapsed());

    fieldsync_postgres::block_on(holder.batch_execute("ROLLBACK")).expect("unlock");
    let lease = store.lease(LINK, "second", MINUTE).expect("free once the other worker is done");
    assert_eq!(lease.token, 2);
}

#[test]
fn workers_opening_a_new_schema_at_once_migrate_it_once() {
    let Some(fixture) = postgres() else { return };
    const WORKERS: usize = 6;
    let barrier = Barrier::new(WORKERS);
    std::thread::scope(|scope| {
        for _ in 0..WORKERS {
            scope.spawn(|| {
                barrier.wait();
                fixture.location.open().expect("every worker opens the store")
            });
        }
    });
    let versions =
        || fixture.sql(&format!("SELECT count(*), max(version) FROM {}.schema_version", fixture.schema()));
    let migrated = versions();
    let (rows, version) = migrated.split_once('|').expect("count|version");
    assert_eq!(rows, "1", "one version row: {migrated}");
    assert!(version.parse::<u32>().is_ok_and(|version| version > 0), "{migrated}");
    // Opened again, nothing is migrated again and the data stays.
    let mut store = fixture.open();
    let fields = layout(&mut store, &["n"]);
    put(&mut store, &fields, &[&agreed("kept")]);
    let mut again = fixture.open();
    assert_eq!(layout(&mut again, &["n"]).id, fields.id);
    assert_eq!(again.baseline_count(LINK).unwrap(), 1);
    assert_eq!(versions(), migrated, "nothing migrated again");
}

#[test]
fn two_schemas_in_one_database_do_not_see_each_others_data() {
    let (Some(club_a), Some(club_b)) = (postgres(), postgres()) else { return };
    let (mut a, mut b) = (club_a.open(), club_b.open());
    let a_fields = layout(&mut a, &["n"]);
    put(&mut a, &a_fields, &[&agreed("only-in-a")]);
    let b_fields = layout(&mut b, &["n"]);
    assert_eq!(a.baseline_count(LINK).unwrap(), 1);
    assert_eq!(b.baseline_count(LINK).unwrap(), 0);
    assert!(b.baselines(LINK, &b_fields, &[key("only-in-a")]).unwrap().is_empty());
    // Each schema has its own leases: the same link is leased in both at once.
    let a_lease = a.lease(LINK, "a", MINUTE).unwrap();
    let b_lease = b.lease(LINK, "b", MINUTE).unwrap();
    assert_eq!((a_lease.token, b_lease.token), (2, 1), "a's link was leased once to write its baseline");
    for (fixture, store) in [(&club_a, &a), (&club_b, &b)] {
        assert_eq!(store.schema(), fixture.location.schema());
        let tables = fixture.sql(&format!("SELECT count(*) FROM {}.baselines", fixture.schema()));
        assert_eq!(tables, if store.schema() == club_a.location.schema() { "1" } else { "0" });
    }
}

#[test]
fn a_schema_from_a_newer_fieldsync_is_refused_and_left_as_it_is() {
    let Some(fixture) = postgres() else { return };
    drop(fixture.open());
    fixture.sql(&format!("UPDATE {}.schema_version SET version = 9999", fixture.schema()));
    match fixture.location.open() {
        Err(error @ StoreError::TooNew { found, known }) => {
            assert!(error.is_corrupt() && !error.is_retryable(), "{error:?}");
            assert_eq!(found, 9999);
            assert!((1..9999).contains(&known), "known = {known}");
        }
        other => panic!("expected TooNew, got {other:?}"),
    }
    let version = fixture.sql(&format!("SELECT max(version) FROM {}.schema_version", fixture.schema()));
    assert_eq!(version, "9999");
}

/// The files of every table of `fixture`'s schema, with their indexes and the tables that keep
/// their long values (TOAST) and those tables' indexes, as they are on disk after a checkpoint.
fn schema_files(fixture: &PostgresFixture) -> Vec<std::path::PathBuf> {
    let listed = fixture.sql(&format!(
        "CHECKPOINT; \
         WITH ours AS (SELECT c.oid, c.reltoastrelid FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = '{schema}'), \
         relations AS ( \
             SELECT oid FROM ours \
             UNION SELECT reltoastrelid FROM ours WHERE reltoastrelid <> 0 \
             UNION SELECT i.indexrelid FROM pg_index i JOIN ours ON i.indrelid = ours.reltoastrelid) \
         SELECT current_setting('data_directory') || '/' || pg_relation_filepath(oid) FROM relations \
         WHERE pg_relation_filepath(oid) IS NOT NULL",
        schema = fixture.location.schema()
    ));
    let mut files = Vec::new();
    for path in listed.lines().filter(|line| !line.is_empty() && *line != "CHECKPOINT") {
        // A relation over a gigabyte goes on in `PATH.1`, `PATH.2`, …
        files.push(std::path::PathBuf::from(path));
        files.extend(
            (1..)
                .map(|segment| std::path::PathBuf::from(format!("{path}.{segment}")))
                .take_while(|file| file.exists()),
        );
    }
    assert!(files.len() > 10, "the schema's tables and indexes: {listed}");
    files
}

/// The files of `files` that hold `text`.
fn holding(files: &[std::path::PathBuf], text: &str) -> Vec<String> {
    files
        .iter()
        .filter(|file| {
            let bytes =
                std::fs::read(file).unwrap_or_else(|error| panic!("reading {}: {error}", file.display()));
            bytes.windows(text.len()).any(|window| window == text.as_bytes())
        })
        .map(|file| file.display().to_string())
        .collect()
}

/// After an erasure, the member's key and values are in none of the files of the schema's
/// tables, indexes and TOAST tables: not in a deleted row's space, nor in an earlier version of
/// a row; another member's still are. (PostgreSQL's write-ahead log keeps them until its
/// segments are recycled: that is the server's, and its backups', to keep or not.)
#[test]
fn an_erased_member_is_in_no_file_of_the_schemas_tables() {
    let Some(fixture) = postgres() else { return };
    let mut store = fixture.open();
    let history = fieldsync_store::testkit::a_member_history(&mut store);
    let before = schema_files(&fixture);
    for text in history.erased.iter().chain(&history.kept) {
        assert!(!holding(&before, text).is_empty(), "{text} is in the files before");
    }

    let erased = store.erase_record(LINK, &history.key, "a person", ts(T0 + 1_000)).unwrap();
    assert!(erased.wiped, "{erased:?}");
    let after = schema_files(&fixture);
    for text in &history.erased {
        assert_eq!(holding(&after, text), Vec::<String>::new(), "{text} after the erasure");
    }
    for text in &history.kept {
        assert!(!holding(&after, text).is_empty(), "{text} is kept");
    }
    let digest = key(&fieldsync_store::key_digest(LINK, &history.key));
    assert_eq!(store.audit_for_record(LINK, &digest).unwrap().len(), 1);
    assert_eq!(store.baseline_count(LINK).unwrap(), 201);
}

/// An erasure waits for a transaction another session began before it and has not ended,
/// even between two of its statements (when the session holds no snapshot): the server keeps
/// what that transaction may yet see, and a rewrite made meanwhile would copy the erased
/// member into the new files.
#[test]
fn an_erasure_waits_for_an_older_transaction_between_its_statements() {
    let Some(fixture) = postgres() else { return };
    let mut store = fixture.open();
    let history = fieldsync_store::testkit::a_member_history(&mut store);
    // Another worker's transaction: begun, given a transaction id, and idle between statements.
    let other = fieldsync_postgres::block_on(fieldsync_postgres::connect(&fixture.server.url(DATABASE)))
        .expect("a second session");
    fieldsync_postgres::block_on(other.batch_execute("BEGIN; SELECT txid_current();")).unwrap();
    let idle = fixture.sql(
        "SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction' \
         AND backend_xid IS NOT NULL AND backend_xmin IS NULL",
    );
    assert_ne!(idle.trim(), "0", "the other session holds a transaction id and no snapshot");
    let ending = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(2));
        fieldsync_postgres::block_on(other.batch_execute("COMMIT")).unwrap();
    });

    let erased = store.erase_record(LINK, &history.key, "a person", ts(T0 + 1_000)).unwrap();
    ending.join().unwrap();
    assert!(erased.wiped, "{erased:?}");
    let after = schema_files(&fixture);
    for text in &history.erased {
        assert_eq!(holding(&after, text), Vec::<String>::new(), "{text} after the erasure");
    }
}

#[test]
fn a_server_that_is_not_there_is_a_retryable_failure() {
    // A port nothing listens on: bind one, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let state = format!("fieldsync:s3cret@127.0.0.1:{port}/fieldsync?sslmode=disable&connect_timeout=5");
    let location = PostgresLocation::parse(&state, Path::new("")).unwrap();
    let error = location.open().unwrap_err();
    assert!(error.is_retryable(), "{error:?}");
    assert!(!format!("{error} {error:?}").contains("s3cret"), "{error:?}");
}

#[test]
fn a_lost_connection_fails_retryably_and_the_next_commit_connects_again() {
    let Some(fixture) = postgres() else { return };
    let name = format!("fieldsync_{}", fixture.location.schema());
    let url = fixture.server.url(DATABASE);
    let rest = url.strip_prefix("postgres://").expect("a postgres:// URL");
    let state = format!("{rest}?application_name={name}&schema={}", fixture.location.schema());
    let location = PostgresLocation::parse(&state, Path::new("")).unwrap();
    let mut store = location.open().unwrap();
    let fields = layout(&mut store, &["n"]);
    put(&mut store, &fields, &[&agreed("kept")]);

    // The server ends the connection (a restart, an administrator).
    let ended = fixture.sql(&format!(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = '{name}'"
    ));
    assert_eq!(ended, "1");
    let deadline = Instant::now() + Duration::from_secs(10);
    let failed = loop {
        match store.baseline_count(LINK) {
            Err(error) => break error,
            Ok(_) => assert!(Instant::now() < deadline, "the connection was never found lost"),
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(failed.is_retryable(), "{failed:?}");

    // The next commit connects again, with the schema and its statements.
    let lease = store.lease(LINK, "after", MINUTE).expect("leased on a new connection");
    store.release(lease).unwrap();
    assert_eq!(store.baseline_count(LINK).unwrap(), 1);
    put(&mut store, &fields, &[&agreed("after")]);
    assert_eq!(store.baseline_count(LINK).unwrap(), 2);
}

#[test]
fn a_live_lease_of_a_process_of_this_machine_that_died_is_taken_at_once() {
    let Some(fixture) = postgres() else { return };
    let (mut dead, mut next) = (fixture.open(), fixture.open());
    // A holder on this machine, as `lease_owner` names it, whose process has exited.
    let mut child = std::process::Command::new("true").spawn().expect("a child process");
    let pid = child.id();
    child.wait().expect("it exits");
    let owner = fieldsync_store::lease_owner().replacen(&std::process::id().to_string(), &pid.to_string(), 1);
    let held = dead.lease(LINK, &owner, MINUTE).expect("the holder's lease");
    let taken = next.lease(LINK, &fieldsync_store::lease_owner(), MINUTE).expect("taken at once");
    assert_ne!(taken.token, held.token);
    // A live holder of this machine (this process), or one of another machine, keeps its lease.
    for owner in [fieldsync_store::lease_owner(), format!("fieldsync pid {pid} on another-machine.example")] {
        let mut store = fixture.open();
        let link = format!("held by {owner}");
        let _held = store.lease(&link, &owner, MINUTE).expect("a lease");
        let refused = next.lease(&link, "fieldsync pid 1 on elsewhere", MINUTE).unwrap_err();
        assert!(refused.is_conflict(), "{owner}: {refused:?}");
    }
}
