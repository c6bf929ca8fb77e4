//! The state store on real SQLite files in temporary directories: the conformance suite of
//! `fieldsync_store::testkit`, then what is SQLite's own: migrations, WAL, the trigger-kept
//! baseline count and the per-link lock (including its release when the holding process is killed).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fieldsync_model::{Side, Value};
use fieldsync_store::testkit::{FileFixture, LINK, T0, commit_baselines, field, key, layout, put};
use fieldsync_store::{Baseline, BaselineField, BaselineWrite, Origin, StateStore, StoreError};
use fieldsync_store_sqlite::SqliteStore;

/// A state file in a temporary directory; every `open` is a new connection to it.
fn sqlite() -> FileFixture<SqliteStore> {
    FileFixture::new(|path| SqliteStore::open(path).expect("open the state file"))
}

fieldsync_store::conformance_tests!(sqlite());

/// A store in a fresh temporary directory; the directory lives as long as the value.
struct TempStore {
    store: SqliteStore,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

fn temp_store() -> TempStore {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("state.db");
    let store = SqliteStore::open(&path).expect("open a new store");
    TempStore { store, path, _dir: dir }
}

fn raw(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(path).expect("open the file with rusqlite")
}

// ---------------------------------------------------------------------------------------------
// Opening, migrations, WAL, integrity.

#[test]
fn opening_twice_migrates_once_and_keeps_data() {
    let TempStore { mut store, path, _dir } = temp_store();
    let fields = layout(&mut store, &["a"]);
    let baseline = Baseline {
        fields: vec![field(Some(Value::from("kept")), Some(T0), None, Some(Origin::Left))],
        ..Baseline::empty(key("k1"), 1)
    };
    put(&mut store, &fields, &[&baseline]);
    drop(store);

    let versions = |path: &Path| -> Vec<i64> {
        let connection = raw(path);
        let mut statement = connection.prepare("SELECT version FROM schema_version").unwrap();
        statement.query_map([], |row| row.get(0)).unwrap().collect::<Result<_, _>>().unwrap()
    };
    let first = versions(&path);
    assert_eq!(first.len(), 1, "one schema_version row: {first:?}");
    assert!(first[0] >= 1);

    // A second (and third) open must not re-run the migrations (they would fail on
    // `CREATE TABLE` of existing tables) nor lose anything.
    for _ in 0..2 {
        let mut store = SqliteStore::open(&path).expect("reopen");
        assert_eq!(versions(&path), first);
        let fields_again = layout(&mut store, &["a"]);
        assert_eq!(fields_again.id, fields.id, "the layout is remembered");
        let read = store.baselines(LINK, &fields_again, &[key("k1")]).unwrap();
        assert_eq!(read.get(&key("k1")), Some(&baseline));
        store.integrity_check().expect("integrity");
    }
}

#[test]
fn a_store_from_a_newer_fieldsync_is_refused() {
    let TempStore { store, path, _dir } = temp_store();
    drop(store);
    raw(&path).execute("UPDATE schema_version SET version = 9999", []).unwrap();

    match SqliteStore::open(&path) {
        Err(error @ StoreError::TooNew { found, known }) => {
            assert!(error.is_corrupt() && !error.is_retryable(), "{error:?}");
            assert_eq!(found, 9999);
            assert!((1..9999).contains(&known), "known = {known}");
        }
        other => panic!("expected TooNew, got {other:?}"),
    }
    // The refused open changed nothing.
    let version: i64 =
        raw(&path).query_row("SELECT max(version) FROM schema_version", [], |row| row.get(0)).unwrap();
    assert_eq!(version, 9999);
}

/// SQLite's failures are classified by their code, never by their text: a file that is not a
/// database is damage, not something to retry.
#[test]
fn sqlite_failures_are_classified() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    std::fs::write(&path, vec![b'x'; 4096]).unwrap();
    let error = SqliteStore::open(&path).unwrap_err();
    assert!(matches!(error, StoreError::Backend { .. }), "{error:?}");
    assert!(error.is_corrupt() && !error.is_retryable() && !error.is_conflict(), "{error:?}");
}

#[test]
fn the_file_is_in_wal_mode_and_passes_the_integrity_check() {
    let TempStore { mut store, path, _dir } = temp_store();
    let mode: String = raw(&path).query_row("PRAGMA journal_mode", [], |row| row.get(0)).unwrap();
    assert_eq!(mode.to_ascii_lowercase(), "wal");
    assert_eq!(store.path(), path.as_path());

    let fields = layout(&mut store, &["a", "b"]);
    let baseline = Baseline {
        fields: vec![field(Some(Value::Int(1)), None, None, None), BaselineField::default()],
        ..Baseline::empty(key("k"), 2)
    };
    put(&mut store, &fields, &[&baseline]);
    store.integrity_check().expect("integrity check passes");
}

/// Commits about 2 MB of baselines of `link` (a long note each) in one commit: some 500
/// pages, past the 256 that wake the store's checkpointer and short of SQLite's 1,000.
fn notes(store: &mut SqliteStore, link: &str) -> fieldsync_store::LinkLayout {
    let fields = store.layout(link, &["note".to_string()]).expect("register the layout");
    let note = "Lid sinds 1987, trainer van de jeugd op dinsdag en donderdag. ".repeat(30);
    let writes = (0..1_000)
        .map(|number| {
            let value = Value::from(format!("{number}: {note}").as_str());
            BaselineWrite::Put(Baseline {
                fields: vec![field(Some(value), Some(T0), None, Some(Origin::Left))],
                ..Baseline::empty(key(&format!("M{number:05}")), 1)
            })
        })
        .collect();
    commit_baselines(store, link, &fields, writes);
    fields
}

/// The write-ahead log is copied into the file by the store's own thread while the store is
/// open and commits nothing more: SQLite on its own would copy it only when a commit takes it
/// past 1,000 pages, inside that commit. Closed, the store leaves no log behind.
#[test]
fn the_log_is_copied_into_the_file_off_the_committing_thread_and_gone_after_close() {
    let TempStore { mut store, path, _dir } = temp_store();
    let size = || std::fs::metadata(&path).expect("the store's file").len();
    let before = size();
    let fields = notes(&mut store, LINK);
    let patience = std::time::Instant::now() + Duration::from_secs(60);
    while size() < before + 1_000_000 {
        assert!(
            std::time::Instant::now() < patience,
            "the file is still {} bytes (was {before}): the log was not copied into it",
            size()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(store.digests(LINK, &fields, &[key("M00999")]).unwrap().len(), 1);

    drop(store);
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    assert!(!Path::new(&wal).exists(), "the log is removed when the store closes");
    let count: i64 = raw(&path).query_row("SELECT count(*) FROM baselines", [], |row| row.get(0)).unwrap();
    assert_eq!(count, 1_000);
}

/// The count of live baselines the guard compares with is kept by triggers: it follows
/// inserts, rewrites, tombstones set and cleared and deletes, per link, and always equals
/// counting the rows; a store made before the count existed is counted when migrated.
#[test]
fn live_baselines_are_counted_as_they_change() {
    let TempStore { mut store, path, _dir } = temp_store();
    let fields = layout(&mut store, &["email"]);
    let counted = |path: &Path, link: &str| -> u64 {
        raw(path)
            .query_row(
                "SELECT count(*) FROM baselines WHERE link = ?1 AND tombstone IS NULL",
                [link],
                |row| row.get::<_, i64>(0),
            )
            .unwrap() as u64
    };
    let put = |record: &str, tombstone: Option<Side>| {
        BaselineWrite::Put(Baseline { tombstone, ..Baseline::empty(key(record), 1) })
    };
    let forget = |record: &str| BaselineWrite::Forget(key(record));
    let steps = [
        ("three", LINK, vec![put("a", None), put("b", None), put("c", None)], 3),
        ("rewritten", LINK, vec![put("a", None)], 3),
        ("tombstoned", LINK, vec![put("b", Some(Side::Left))], 2),
        ("tombstoned again", LINK, vec![put("b", Some(Side::Right))], 2),
        ("a tombstone deleted", LINK, vec![forget("b")], 2),
        ("born a tombstone", LINK, vec![put("d", Some(Side::Left))], 2),
        ("restored", LINK, vec![put("d", None)], 3),
        ("a live one deleted", LINK, vec![forget("a")], 2),
        ("another link", "other", vec![put("a", None)], 2),
    ];
    for (what, link, writes, expected) in steps {
        commit_baselines(&mut store, link, &fields, writes);
        assert_eq!(store.baseline_count(LINK).unwrap(), expected, "{what}");
        assert_eq!(store.baseline_count(LINK).unwrap(), counted(&path, LINK), "{what}");
    }
    assert_eq!(store.baseline_count("other").unwrap(), 1);
    assert_eq!(store.baseline_count("nobody").unwrap(), 0);

    // A store from before the count: the migration counts what is there.
    drop(store);
    let connection = raw(&path);
    connection.execute_batch(
        "DROP TRIGGER baselines_count_insert; DROP TRIGGER baselines_count_delete; \
         DROP TRIGGER baselines_count_tombstone; DROP TABLE baseline_counts; ALTER TABLE runs DROP COLUMN plan; \
         DROP TABLE outbox_sends; DROP TABLE leases; ALTER TABLE outbox DROP COLUMN source_basis; \
         ALTER TABLE outbox DROP COLUMN source_raw; DROP TABLE webhooks; ALTER TABLE cursors DROP COLUMN sequence; \
         ALTER TABLE reviews DROP COLUMN left_changed_ms; ALTER TABLE reviews DROP COLUMN right_changed_ms; \
         ALTER TABLE audit DROP COLUMN kept; UPDATE schema_version SET version = 3;",
    ).unwrap();
    drop(connection);
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.baseline_count(LINK).unwrap(), 2);
    assert_eq!(store.baseline_count("other").unwrap(), 1);
}

// ---------------------------------------------------------------------------------------------
// Erasure.

/// Where `text` is found in the store's file and its write-ahead log, if anywhere.
fn found_in_files(path: &Path, text: &str) -> Vec<String> {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    [path.to_path_buf(), PathBuf::from(wal)]
        .iter()
        .filter_map(|file| {
            let bytes = std::fs::read(file).ok()?;
            let at = bytes.windows(text.len()).position(|window| window == text.as_bytes())?;
            Some(format!("{} at byte {at}", file.display()))
        })
        .collect()
}

/// After an erasure, the member's key and values are nowhere in the store's bytes: not in
/// the file (not in a deleted row's space, nor in an earlier version of a row that was
/// rewritten), not in its write-ahead log; another member's still are.
#[test]
fn an_erased_member_is_nowhere_in_the_files_bytes() {
    let TempStore { mut store, path, _dir } = temp_store();
    let history = fieldsync_store::testkit::a_member_history(&mut store);
    for text in history.erased.iter().chain(&history.kept) {
        assert!(!found_in_files(&path, text).is_empty(), "{text} is in the files before");
    }

    let erased =
        store.erase_record(LINK, &history.key, "a person", fieldsync_store::testkit::ts(T0 + 1_000)).unwrap();
    assert!(erased.wiped, "{erased:?}");
    assert!(erased.baseline && erased.outbox_entries == 1 && erased.reviews == 1, "{erased:?}");
    for text in &history.erased {
        assert_eq!(found_in_files(&path, text), Vec::<String>::new(), "{text} after the erasure");
    }
    for text in &history.kept {
        assert!(!found_in_files(&path, text).is_empty(), "{text} is kept");
    }
    // The store goes on: the file is sound, and the erasure is in the history.
    store.integrity_check().unwrap();
    let digest = key(&fieldsync_store::key_digest(LINK, &history.key));
    assert_eq!(store.audit_for_record(LINK, &digest).unwrap().len(), 1);
    let secure: i64 = raw(&path).query_row("PRAGMA secure_delete", [], |row| row.get(0)).unwrap();
    assert_eq!(secure, 0, "a new connection deletes as before");
}

/// An erasure in a store large enough that rewriting it wakes the store's checkpointer still
/// empties the log: its own checkpoint waits for the thread's (SQLite refuses one while
/// another connection makes one, and the erasure would say it did not wipe).
#[test]
fn an_erasure_wipes_while_the_checkpointer_is_at_work() {
    let TempStore { mut store, path, _dir } = temp_store();
    notes(&mut store, "notes");
    let history = fieldsync_store::testkit::a_member_history(&mut store);
    for round in 0..5 {
        let member = format!("M-{:04}", round * 10);
        let erased = store
            .erase_record(LINK, &key(&member), "a person", fieldsync_store::testkit::ts(T0 + 1_000))
            .unwrap();
        assert!(erased.wiped, "erasing {member}: {erased:?}");
        assert_eq!(found_in_files(&path, &member), Vec::<String>::new(), "{member} after the erasure");
    }
    let erased =
        store.erase_record(LINK, &history.key, "a person", fieldsync_store::testkit::ts(T0 + 1_000)).unwrap();
    assert!(erased.wiped, "{erased:?}");
}

// ---------------------------------------------------------------------------------------------
// The per-link lock.

/// Held while a test spawns a child process, and while a test drops a lock and takes it again.
/// A lock belongs to an open file description, and a child holds a copy of every descriptor
/// between its fork and its exec: a lock dropped in that window stays held until the exec.
static SPAWNING: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn spawning() -> std::sync::MutexGuard<'static, ()> {
    SPAWNING.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn lock_path(db: &Path, link: &str) -> PathBuf {
    db.with_file_name(format!("{}.{link}.lock", db.file_name().unwrap().to_string_lossy()))
}

#[test]
fn a_link_lock_excludes_a_second_run_until_dropped() {
    let TempStore { store, path, _dir } = temp_store();
    let first = store.lock_link(LINK).expect("the first lock");
    let expected_path = lock_path(&path, LINK);
    assert!(expected_path.exists(), "the lock file is {} beside the database", expected_path.display());
    assert_eq!(expected_path.parent(), path.parent());

    match store.lock_link(LINK) {
        Err(StoreError::Locked { link, holder: locked }) => {
            assert_eq!(link, LINK);
            assert_eq!(locked, format!("lock {}", expected_path.display()));
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    // Another store on the same file is excluded too.
    let second_store = SqliteStore::open(&path).unwrap();
    assert!(matches!(second_store.lock_link(LINK), Err(StoreError::Locked { .. })));

    // Another link is independent.
    let other = store.lock_link("other").expect("another link's lock");
    assert!(lock_path(&path, "other").exists());
    assert!(matches!(second_store.lock_link("other"), Err(StoreError::Locked { .. })));

    let not_spawning = spawning();
    drop(first);
    let again = second_store.lock_link(LINK).expect("free again after the first is dropped");
    assert!(matches!(store.lock_link(LINK), Err(StoreError::Locked { .. })));
    drop(again);
    drop(other);
    let _both = (store.lock_link(LINK).unwrap(), store.lock_link("other").unwrap());
    drop(not_spawning);
}

/// Set (to a database path) in the child process of `a_killed_lock_holder_releases_the_lock`.
const LOCK_HOLDER_ENV: &str = "FIELDSYNC_STORE_TEST_LOCK_HOLDER";
const LOCK_HELD: &str = "FIELDSYNC-LOCK-HELD";

/// Not a test by itself: when the parent test re-runs this binary with `LOCK_HOLDER_ENV` set,
/// it takes the lock, says so and sleeps until killed. Otherwise it does nothing.
#[test]
fn lock_holder_child() {
    let Some(path) = std::env::var_os(LOCK_HOLDER_ENV) else { return };
    let store = SqliteStore::open(Path::new(&path)).expect("child: open the store");
    let _lock = store.lock_link(LINK).expect("child: take the lock");
    println!("{LOCK_HELD}");
    std::thread::sleep(Duration::from_secs(120));
}

/// Kills the child if the test fails before it does.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_killed_lock_holder_releases_the_lock() {
    let TempStore { store, path, _dir } = temp_store();
    let not_spawning = spawning();
    let mut child = KillOnDrop(
        Command::new(std::env::current_exe().expect("this test binary"))
            .args(["--exact", "lock_holder_child", "--nocapture", "--test-threads", "1"])
            .env(LOCK_HOLDER_ENV, &path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the lock holder"),
    );
    drop(not_spawning);
    let stdout = child.0.stdout.take().expect("child stdout");
    let mut held = false;
    for line in BufReader::new(stdout).lines() {
        // libtest prints "test lock_holder_child ... " on the same line first.
        let line = line.expect("read the child's output");
        if line.contains(LOCK_HELD) {
            held = true;
            break;
        }
    }
    assert!(held, "the child never took the lock (status {:?})", child.0.try_wait());

    // Another process holds it: this one is refused.
    assert!(matches!(store.lock_link(LINK), Err(StoreError::Locked { .. })));
    // Another link is not affected.
    drop(store.lock_link("other").expect("another link"));

    // SIGKILL: no destructor runs in the child; the operating system releases the lock.
    child.0.kill().expect("kill the child");
    let status = child.0.wait().expect("wait for the child");
    assert!(!status.success(), "the child was killed: {status:?}");

    let _lock = store.lock_link(LINK).expect("a killed holder releases the lock");
    // The database is fine after the child's death.
    store.integrity_check().unwrap();
}

#[test]
fn a_lock_held_by_flock_1_is_respected_and_released_on_kill() {
    // flock(1) uses flock(2), as std's File::try_lock does on Linux; skip where it is absent.
    let not_spawning = spawning();
    let flock_available = Command::new("flock")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    drop(not_spawning);
    if !cfg!(target_os = "linux") || !flock_available {
        assert!(
            std::env::var_os("FIELDSYNC_REQUIRE_ALL").is_none(),
            "flock(1) is not available and FIELDSYNC_REQUIRE_ALL is set"
        );
        eprintln!(
            "SKIPPED a_lock_held_by_flock_1_is_respected_and_released_on_kill: flock(1) is not available"
        );
        return;
    }
    let TempStore { store, path, _dir } = temp_store();
    let lock = lock_path(&path, LINK);
    // The shell opens the lock file on descriptor 9, flock(1) locks that open file
    // description and exits, and the shell becomes `sleep`, still holding descriptor 9.
    let script = format!("exec 9>\"$1\" && flock -n 9 && echo {LOCK_HELD} && exec sleep 120");
    let not_spawning = spawning();
    let mut child = KillOnDrop(
        Command::new("sh")
            .args(["-c", &script, "sh"])
            .arg(&lock)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn sh"),
    );
    drop(not_spawning);
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), LOCK_HELD, "flock(1) took the lock");
    assert!(matches!(store.lock_link(LINK), Err(StoreError::Locked { .. })));

    child.0.kill().expect("kill the holder");
    child.0.wait().unwrap();
    let _lock = store.lock_link(LINK).expect("released when the holder is killed");
}
