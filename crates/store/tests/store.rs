//! The state store on real SQLite files in temporary directories: migrations, WAL, baselines
//! and layouts, transactions, the outbox lifecycle, reviews, audit, runs, cursors and the
//! per-link lock (including its release when the holding process is killed).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fieldsync_model::{RecordId, RecordKey, RunId, Side, Value};
use fieldsync_store::{
    AuditEntry, AuditEvent, Baseline, BaselineField, CursorState, Decision, LinkLayout, NewOutboxEntry,
    NewReview, Operation, Origin, OutboxStatus, ReviewKind, ReviewStatus, RunStatus, StateStore, StoreError,
};
use jiff::Timestamp;
use serde_json::json;

const LINK: &str = "members";

/// A store in a fresh temporary directory; the directory lives as long as the value.
struct TempStore {
    store: StateStore,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

fn temp_store() -> TempStore {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("state.db");
    let store = StateStore::open(&path).expect("open a new store");
    TempStore { store, path, _dir: dir }
}

/// A timestamp with whole milliseconds (the store keeps milliseconds).
fn ts(ms: i64) -> Timestamp {
    Timestamp::from_millisecond(ms).expect("valid timestamp")
}

const T0: i64 = 1_700_000_000_000;

fn key(text: &str) -> RecordKey {
    RecordKey::new(text)
}

fn names(fields: &[&str]) -> Vec<String> {
    fields.iter().map(|name| name.to_string()).collect()
}

fn layout(store: &mut StateStore, fields: &[&str]) -> LinkLayout {
    store.layout(LINK, &names(fields)).expect("register layout")
}

fn field(
    value: Option<Value>,
    left: Option<i64>,
    right: Option<i64>,
    origin: Option<Origin>,
) -> BaselineField {
    BaselineField { value, left_changed: left.map(ts), right_changed: right.map(ts), origin }
}

fn put(store: &mut StateStore, layout: &LinkLayout, baselines: &[&Baseline]) {
    let transaction = store.transaction().expect("transaction");
    for baseline in baselines {
        transaction.put_baseline(LINK, layout, baseline).expect("put baseline");
    }
    transaction.commit().expect("commit");
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
        let mut store = StateStore::open(&path).expect("reopen");
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

    match StateStore::open(&path) {
        Err(StoreError::TooNew { found, known }) => {
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

// ---------------------------------------------------------------------------------------------
// Baselines and layouts.

fn rich_baseline() -> Baseline {
    Baseline {
        key: key("member-1"),
        left_id: Some(RecordId::new("L-17")),
        right_id: Some(RecordId::new("wp:42")),
        fields: vec![
            field(Some(Value::from("Ada \"Lovelace\" — ünïcode")), Some(T0 + 1), None, Some(Origin::Left)),
            field(Some(Value::Int(-42)), None, Some(T0 + 2), Some(Origin::Right)),
            field(Some(Value::Int(i64::MAX)), Some(T0 + 3), Some(T0 + 4), Some(Origin::Both)),
            field(Some(Value::Int(i64::MIN)), None, None, None),
            field(Some(Value::Bool(true)), None, None, Some(Origin::Person)),
            field(Some(Value::Bool(false)), Some(T0), Some(T0), Some(Origin::Both)),
            field(Some(Value::Null), Some(T0 + 5), None, Some(Origin::Both)),
            field(Some(Value::from("")), None, None, Some(Origin::Left)),
            // Text that looks like the store's marker for "no value", or like other types.
            field(Some(Value::from("{}")), None, None, None),
            field(Some(Value::from("null")), None, None, None),
            field(Some(Value::from("7")), None, None, None),
            // No agreed value, but known change times.
            field(None, Some(T0 + 6), Some(T0 + 7), None),
            BaselineField::default(),
        ],
        tombstone: None,
    }
}

const RICH_FIELDS: &[&str] =
    &["f0", "f1", "f2", "f3", "f4", "f5", "f6", "f7", "f8", "f9", "f10", "f11", "f12"];

#[test]
fn baselines_round_trip_exactly_with_their_digests() {
    let TempStore { mut store, _dir, .. } = temp_store();
    let fields = layout(&mut store, RICH_FIELDS);
    let rich = rich_baseline();
    assert_eq!(rich.fields.len(), RICH_FIELDS.len());
    // Its right id is its link key, which a digest entry does not keep twice.
    let tombstoned = Baseline {
        left_id: Some(RecordId::new("L-18")),
        right_id: Some(RecordId::new("member-2")),
        tombstone: Some(Side::Right),
        ..Baseline::empty(key("member-2"), RICH_FIELDS.len())
    };
    let mut left_tombstone = rich_baseline();
    left_tombstone.key = key("member-3");
    left_tombstone.left_id = None;
    left_tombstone.tombstone = Some(Side::Left);

    {
        // Read-your-writes inside the transaction.
        let transaction = store.transaction().unwrap();
        for baseline in [&rich, &tombstoned, &left_tombstone] {
            transaction.put_baseline(LINK, &fields, baseline).unwrap();
        }
        let inside = transaction.baselines(LINK, &fields, std::slice::from_ref(&rich.key)).unwrap();
        assert_eq!(inside.get(&rich.key), Some(&rich));
        transaction.commit().unwrap();
    }

    let keys = [rich.key.clone(), tombstoned.key.clone(), left_tombstone.key.clone(), key("absent")];
    let read = store.baselines(LINK, &fields, &keys).unwrap();
    assert_eq!(read.len(), 3, "absent keys have no baseline");
    assert_eq!(read[&rich.key], rich);
    assert_eq!(read[&tombstoned.key], tombstoned);
    assert_eq!(read[&left_tombstone.key], left_tombstone);

    let all = store.all_digests(LINK, &fields).unwrap();
    assert_eq!(all.len(), 3);
    for baseline in [&rich, &tombstoned, &left_tombstone] {
        let entry = &all[&baseline.key];
        assert_eq!(entry.digest, Some(baseline.digest()), "digest of {}", baseline.key);
        assert_eq!(entry.id(Side::Left, &baseline.key), baseline.left_id);
        assert_eq!(entry.id(Side::Right, &baseline.key), baseline.right_id);
        assert_eq!(entry.tombstone, baseline.tombstone);
    }
    let some = store.digests(LINK, &fields, &[rich.key.clone(), key("absent")]).unwrap();
    assert_eq!(some.len(), 1);
    assert_eq!(some[&rich.key], all[&rich.key]);

    // Tombstones are not counted; another link sees nothing.
    assert_eq!(store.baseline_count(LINK).unwrap(), 1);
    assert_eq!(store.baseline_count("other").unwrap(), 0);
    assert!(store.all_digests("other", &fields).unwrap().is_empty());
    assert!(store.baselines("other", &fields, &keys).unwrap().is_empty());

    // Replacing and deleting.
    let mut changed = rich.clone();
    changed.fields[0].value = Some(Value::from("Grace"));
    changed.right_id = None;
    {
        let transaction = store.transaction().unwrap();
        transaction.put_baseline(LINK, &fields, &changed).unwrap();
        transaction.delete_baseline(LINK, &tombstoned.key).unwrap();
        transaction.commit().unwrap();
    }
    let read = store.baselines(LINK, &fields, &keys).unwrap();
    assert_eq!(read.len(), 2);
    assert_eq!(read[&rich.key], changed);
    assert_ne!(changed.digest(), rich.digest());
    assert_eq!(
        store.digests(LINK, &fields, std::slice::from_ref(&rich.key)).unwrap()[&rich.key].digest,
        Some(changed.digest())
    );
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
    let baseline =
        |record: &str, tombstone: Option<Side>| Baseline { tombstone, ..Baseline::empty(key(record), 1) };
    type Step<'a> = Box<dyn Fn(&fieldsync_store::Transaction<'_>) + 'a>;
    let steps: Vec<(&str, Step<'_>, u64)> = vec![
        (
            "three",
            Box::new(|t| {
                for record in ["a", "b", "c"] {
                    t.put_baseline(LINK, &fields, &baseline(record, None)).unwrap()
                }
            }),
            3,
        ),
        ("rewritten", Box::new(|t| t.put_baseline(LINK, &fields, &baseline("a", None)).unwrap()), 3),
        (
            "tombstoned",
            Box::new(|t| t.put_baseline(LINK, &fields, &baseline("b", Some(Side::Left))).unwrap()),
            2,
        ),
        (
            "tombstoned again",
            Box::new(|t| t.put_baseline(LINK, &fields, &baseline("b", Some(Side::Right))).unwrap()),
            2,
        ),
        ("a tombstone deleted", Box::new(|t| t.delete_baseline(LINK, &key("b")).unwrap()), 2),
        (
            "born a tombstone",
            Box::new(|t| t.put_baseline(LINK, &fields, &baseline("d", Some(Side::Left))).unwrap()),
            2,
        ),
        ("restored", Box::new(|t| t.put_baseline(LINK, &fields, &baseline("d", None)).unwrap()), 3),
        ("a live one deleted", Box::new(|t| t.delete_baseline(LINK, &key("a")).unwrap()), 2),
        ("another link", Box::new(|t| t.put_baseline("other", &fields, &baseline("a", None)).unwrap()), 2),
    ];
    for (what, step, expected) in steps {
        let transaction = store.transaction().unwrap();
        step(&transaction);
        transaction.commit().unwrap();
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
         DROP TABLE outbox_sends; UPDATE schema_version SET version = 3;",
    ).unwrap();
    drop(connection);
    let store = StateStore::open(&path).unwrap();
    assert_eq!(store.baseline_count(LINK).unwrap(), 2);
    assert_eq!(store.baseline_count("other").unwrap(), 1);
}

#[test]
fn many_keys_are_read_across_chunks() {
    let TempStore { mut store, _dir, .. } = temp_store();
    let fields = layout(&mut store, &["n"]);
    let baselines: Vec<Baseline> = (0..1_234)
        .map(|index| Baseline {
            fields: vec![field(Some(Value::Int(index)), None, None, Some(Origin::Both))],
            ..Baseline::empty(key(&format!("k{index}")), 1)
        })
        .collect();
    put(&mut store, &fields, &baselines.iter().collect::<Vec<_>>());
    let keys: Vec<RecordKey> = baselines.iter().map(|baseline| baseline.key.clone()).collect();
    let read = store.baselines(LINK, &fields, &keys).unwrap();
    assert_eq!(read.len(), baselines.len());
    let digests = store.digests(LINK, &fields, &keys).unwrap();
    assert_eq!(digests.len(), baselines.len());
    for baseline in &baselines {
        assert_eq!(&read[&baseline.key], baseline);
        assert_eq!(digests[&baseline.key].digest, Some(baseline.digest()));
    }
}

#[test]
fn digests_are_paged_in_key_order() {
    let TempStore { mut store, _dir, .. } = temp_store();
    let fields = layout(&mut store, &["n"]);
    // Inserted out of order; "k10" sorts before "k9" byte by byte.
    let baselines: Vec<Baseline> = [9, 10, 1, 100, 2, 5]
        .into_iter()
        .map(|index| Baseline {
            fields: vec![field(Some(Value::Int(index)), None, None, Some(Origin::Both))],
            ..Baseline::empty(key(&format!("k{index}")), 1)
        })
        .collect();
    put(&mut store, &fields, &baselines.iter().collect::<Vec<_>>());
    let mut pages = Vec::new();
    let mut after = None;
    loop {
        let mut page = Vec::new();
        let last = store
            .digest_page(LINK, &fields, after.as_ref(), 4, |key, entry| {
                page.push((key.to_string(), entry.digest))
            })
            .unwrap();
        let Some(last) = last else { break };
        assert_eq!(Some(last.as_str()), page.last().map(|(key, _)| key.as_str()));
        pages.push(page);
        after = Some(last);
    }
    let keys: Vec<Vec<&str>> =
        pages.iter().map(|page| page.iter().map(|(key, _)| key.as_str()).collect()).collect();
    assert_eq!(keys, [vec!["k1", "k10", "k100", "k2"], vec!["k5", "k9"]]);
    for (key, digest) in pages.iter().flatten() {
        let baseline = baselines.iter().find(|baseline| baseline.key.as_str() == key).unwrap();
        assert_eq!(*digest, Some(baseline.digest()));
    }
    assert!(store.digest_page("other", &fields, None, 4, |_, _| panic!("another link's")).unwrap().is_none());
}

#[test]
fn a_baseline_is_read_onto_another_layout_by_field_name() {
    let TempStore { mut store, _dir, .. } = temp_store();
    let abc = layout(&mut store, &["a", "b", "c"]);
    let a = field(Some(Value::from("alpha")), Some(T0 + 1), None, Some(Origin::Left));
    let b = field(Some(Value::Int(2)), None, Some(T0 + 2), Some(Origin::Right));
    let c = field(Some(Value::Bool(true)), Some(T0 + 3), Some(T0 + 4), Some(Origin::Both));
    let old = Baseline {
        key: key("k1"),
        left_id: Some(RecordId::new("l1")),
        right_id: Some(RecordId::new("r1")),
        fields: vec![a.clone(), b, c.clone()],
        tombstone: Some(Side::Left),
    };
    put(&mut store, &abc, &[&old]);

    let cad = layout(&mut store, &["c", "a", "d"]);
    assert_ne!(cad.id, abc.id);
    assert_eq!(cad.fields, names(&["c", "a", "d"]));

    let read = store.baselines(LINK, &cad, &[key("k1")]).unwrap();
    let mapped = &read[&key("k1")];
    assert_eq!(mapped.fields, vec![c.clone(), a.clone(), BaselineField::default()]);
    assert_eq!(mapped.left_id, old.left_id);
    assert_eq!(mapped.right_id, old.right_id);
    assert_eq!(mapped.tombstone, old.tombstone);
    assert_eq!(mapped.fields[2].value, None, "the new field has no agreed value");

    // Written with another layout: no digest, so the engine compares the record in full;
    // ids and tombstone are still given.
    for digests in [store.digests(LINK, &cad, &[key("k1")]).unwrap(), store.all_digests(LINK, &cad).unwrap()]
    {
        let entry = &digests[&key("k1")];
        assert_eq!(entry.digest, None);
        assert_eq!(entry.id(Side::Left, &key("k1")), old.left_id);
        assert_eq!(entry.id(Side::Right, &key("k1")), old.right_id);
        assert_eq!(entry.tombstone, old.tombstone);
    }

    // Registering the old field list again gives the old layout back, and its digest.
    let abc_again = layout(&mut store, &["a", "b", "c"]);
    assert_eq!(abc_again.id, abc.id);
    assert_eq!(store.baselines(LINK, &abc_again, &[key("k1")]).unwrap()[&key("k1")], old);
    assert_eq!(store.digests(LINK, &abc_again, &[key("k1")]).unwrap()[&key("k1")].digest, Some(old.digest()));

    // Rewritten with the new layout, it has a digest there (and none under the old one).
    let mut new = mapped.clone();
    new.fields[2] = field(Some(Value::from("delta")), None, None, Some(Origin::Both));
    put(&mut store, &cad, &[&new]);
    assert_eq!(store.digests(LINK, &cad, &[key("k1")]).unwrap()[&key("k1")].digest, Some(new.digest()));
    assert_eq!(store.digests(LINK, &abc, &[key("k1")]).unwrap()[&key("k1")].digest, None);
    let back = &store.baselines(LINK, &abc, &[key("k1")]).unwrap()[&key("k1")];
    assert_eq!(back.fields, vec![a, BaselineField::default(), c]);

    // Layouts belong to their link.
    let other = store.layout("other", &names(&["a", "b", "c"])).unwrap();
    assert_ne!(other.id, abc.id);
}

#[test]
fn a_dropped_transaction_leaves_nothing() {
    let TempStore { mut store, path, _dir } = temp_store();
    let fields = layout(&mut store, &["a"]);
    let baseline = Baseline {
        fields: vec![field(Some(Value::Int(1)), None, None, None)],
        ..Baseline::empty(key("k1"), 1)
    };
    {
        let transaction = store.transaction().unwrap();
        let run = transaction.start_run(LINK, "full", ts(T0)).unwrap();
        transaction.put_baseline(LINK, &fields, &baseline).unwrap();
        transaction
            .set_cursor(LINK, Side::Left, CursorState { cursor: Some(ts(T0)), last_full_scan: None })
            .unwrap();
        let entry = NewOutboxEntry {
            key: key("k1"),
            side: Side::Right,
            operation: Operation::Create,
            record_id: None,
            payload: "{}".into(),
        };
        transaction.insert_outbox(LINK, run, &entry, ts(T0)).unwrap();
        transaction.put_review(LINK, Some(run), &review("k1", Some("a"), 1, 2), ts(T0)).unwrap();
        transaction.audit(LINK, &audit_entry(Some(run), "k1", AuditEvent::Detected, T0)).unwrap();
        // Dropped without commit.
    }
    let check = |store: &StateStore| {
        assert!(store.baselines(LINK, &fields, &[key("k1")]).unwrap().is_empty());
        assert!(store.all_digests(LINK, &fields).unwrap().is_empty());
        assert_eq!(store.cursor(LINK, Side::Left).unwrap(), CursorState::default());
        assert!(store.list_outbox(None, None, 100).unwrap().is_empty());
        assert!(store.list_reviews(None, None, 100).unwrap().is_empty());
        assert!(store.list_runs(None, 100).unwrap().is_empty());
        assert!(store.audit_for_record(LINK, &key("k1")).unwrap().is_empty());
    };
    check(&store);
    // The store is usable again (the write lock was released) and a reopen sees nothing.
    store.transaction().unwrap().commit().unwrap();
    drop(store);
    check(&StateStore::open(&path).unwrap());
}

// ---------------------------------------------------------------------------------------------
// Cursors.

#[test]
fn cursors_default_and_round_trip() {
    let TempStore { store, path, _dir } = temp_store();
    let mut store = store;
    assert_eq!(store.cursor(LINK, Side::Left).unwrap(), CursorState::default());
    assert_eq!(store.cursor(LINK, Side::Right).unwrap(), CursorState { cursor: None, last_full_scan: None });

    let left = CursorState { cursor: Some(ts(T0 + 123)), last_full_scan: Some(ts(T0 - 1_000)) };
    let right = CursorState { cursor: Some(ts(T0 + 7)), last_full_scan: None };
    {
        let transaction = store.transaction().unwrap();
        transaction.set_cursor(LINK, Side::Left, left).unwrap();
        transaction.set_cursor(LINK, Side::Right, right).unwrap();
        transaction.commit().unwrap();
    }
    assert_eq!(store.cursor(LINK, Side::Left).unwrap(), left);
    assert_eq!(store.cursor(LINK, Side::Right).unwrap(), right);
    assert_eq!(store.cursor("other", Side::Left).unwrap(), CursorState::default());

    // Overwritten, and kept across a reopen.
    let later = CursorState { cursor: Some(ts(T0 + 9_999)), last_full_scan: Some(ts(T0 + 9_000)) };
    {
        let transaction = store.transaction().unwrap();
        transaction.set_cursor(LINK, Side::Left, later).unwrap();
        transaction.commit().unwrap();
    }
    drop(store);
    let store = StateStore::open(&path).unwrap();
    assert_eq!(store.cursor(LINK, Side::Left).unwrap(), later);
    assert_eq!(store.cursor(LINK, Side::Right).unwrap(), right);
}

// ---------------------------------------------------------------------------------------------
// The outbox.

fn outbox_entry(record: &str, side: Side, operation: Operation) -> NewOutboxEntry {
    NewOutboxEntry {
        key: key(record),
        side,
        operation,
        record_id: (operation != Operation::Create).then(|| RecordId::new(format!("id-{record}"))),
        payload: json!({ "version": 1, "record": record }).to_string(),
    }
}

fn start_run(store: &mut StateStore, link: &str, at: i64) -> RunId {
    let transaction = store.transaction().unwrap();
    let run = transaction.start_run(link, "incremental", ts(at)).unwrap();
    transaction.commit().unwrap();
    run
}

fn ids(entries: &[fieldsync_store::OutboxEntry]) -> Vec<i64> {
    entries.iter().map(|entry| entry.id).collect()
}

#[test]
fn outbox_lifecycle() {
    let TempStore { mut store, path, _dir } = temp_store();
    let run = start_run(&mut store, LINK, T0);
    let new = outbox_entry("k1", Side::Right, Operation::Update);
    let id = {
        let transaction = store.transaction().unwrap();
        let id = transaction.insert_outbox(LINK, run, &new, ts(T0)).unwrap();
        transaction.commit().unwrap();
        id
    };

    // Stored as given, pending and due at once.
    let entry = store.outbox_entry(id).unwrap();
    assert_eq!(entry.id, id);
    assert_eq!(entry.link, LINK);
    assert_eq!(entry.key, new.key);
    assert_eq!(entry.side, new.side);
    assert_eq!(entry.run_id, run);
    assert_eq!(entry.operation, new.operation);
    assert_eq!(entry.record_id, new.record_id);
    assert_eq!(entry.payload, new.payload);
    assert_eq!(entry.status, OutboxStatus::Pending);
    assert_eq!(entry.attempts, 0);
    assert_eq!(entry.next_attempt_at, ts(T0));
    assert_eq!(entry.last_error, None);
    assert_eq!(entry.created_at, ts(T0));
    assert_eq!(entry.updated_at, ts(T0));

    assert_eq!(store.due_outbox(LINK, ts(T0), 0, 10).unwrap(), vec![entry.clone()]);
    assert!(store.due_outbox(LINK, ts(T0 - 1), 0, 10).unwrap().is_empty(), "not due before its next attempt");
    assert!(store.due_outbox("other", ts(T0), 0, 10).unwrap().is_empty());
    assert_eq!(store.next_due(LINK).unwrap(), Some(ts(T0)));

    // An attempt starts: counted, and a `sending` entry left by a crash is still due.
    {
        let transaction = store.transaction().unwrap();
        transaction.mark_sending(&[id], ts(T0 + 10)).unwrap();
        transaction.commit().unwrap();
    }
    drop(store);
    let mut store = StateStore::open(&path).unwrap();
    let due = store.due_outbox(LINK, ts(T0 + 10), 0, 10).unwrap();
    assert_eq!(ids(&due), vec![id]);
    assert_eq!(due[0].status, OutboxStatus::Sending);
    assert_eq!(due[0].attempts, 1);
    assert_eq!(due[0].updated_at, ts(T0 + 10));
    assert_eq!(store.next_due(LINK).unwrap(), Some(ts(T0)));

    // It fails and is put back for later: hidden from due_outbox until then.
    {
        let transaction = store.transaction().unwrap();
        transaction.mark_sending(&[id], ts(T0 + 20)).unwrap();
        transaction
            .set_outbox_status(id, OutboxStatus::Pending, Some(ts(T0 + 60_000)), Some("timeout"), ts(T0 + 21))
            .unwrap();
        transaction.commit().unwrap();
    }
    let entry = store.outbox_entry(id).unwrap();
    assert_eq!(entry.status, OutboxStatus::Pending);
    assert_eq!(entry.attempts, 2);
    assert_eq!(entry.last_error.as_deref(), Some("timeout"));
    assert_eq!(entry.next_attempt_at, ts(T0 + 60_000));
    assert_eq!(entry.updated_at, ts(T0 + 21));
    assert!(store.due_outbox(LINK, ts(T0 + 59_999), 0, 10).unwrap().is_empty());
    assert_eq!(ids(&store.due_outbox(LINK, ts(T0 + 60_000), 0, 10).unwrap()), vec![id]);
    assert_eq!(store.next_due(LINK).unwrap(), Some(ts(T0 + 60_000)));

    // It fails for good.
    {
        let transaction = store.transaction().unwrap();
        transaction
            .set_outbox_status(id, OutboxStatus::Dead, None, Some("rejected"), ts(T0 + 60_001))
            .unwrap();
        transaction.commit().unwrap();
    }
    let entry = store.outbox_entry(id).unwrap();
    assert_eq!(entry.status, OutboxStatus::Dead);
    assert_eq!(entry.next_attempt_at, ts(T0 + 60_000), "no next attempt given: unchanged");
    assert_eq!(entry.last_error.as_deref(), Some("rejected"));
    assert!(store.due_outbox(LINK, ts(T0 + 1_000_000), 0, 10).unwrap().is_empty());
    assert_eq!(store.next_due(LINK).unwrap(), None);
    assert_eq!(ids(&store.open_outbox_for(LINK, &[key("k1")]).unwrap()), vec![id], "dead is still open");

    // Dropping needs a dead entry; retrying puts it back in line, due now, attempts reset.
    {
        let transaction = store.transaction().unwrap();
        transaction.retry_dead(id, ts(T0 + 100_000)).unwrap();
        assert!(matches!(
            transaction.drop_dead(id, ts(T0 + 100_000)),
            Err(StoreError::NotFound { id: found, .. }) if found == id
        ));
        assert!(matches!(transaction.retry_dead(id, ts(T0 + 100_000)), Err(StoreError::NotFound { .. })));
        transaction.commit().unwrap();
    }
    let entry = store.outbox_entry(id).unwrap();
    assert_eq!(entry.status, OutboxStatus::Pending);
    assert_eq!(entry.attempts, 0);
    assert_eq!(entry.next_attempt_at, ts(T0 + 100_000));
    assert_eq!(ids(&store.due_outbox(LINK, ts(T0 + 100_000), 0, 10).unwrap()), vec![id]);
    assert!(store.due_outbox(LINK, ts(T0 + 99_999), 0, 10).unwrap().is_empty());

    // Dead again, then dropped for good.
    {
        let transaction = store.transaction().unwrap();
        transaction.set_outbox_status(id, OutboxStatus::Dead, None, None, ts(T0 + 100_001)).unwrap();
        transaction.drop_dead(id, ts(T0 + 100_002)).unwrap();
        assert!(matches!(transaction.drop_dead(id, ts(T0 + 100_003)), Err(StoreError::NotFound { .. })));
        assert!(matches!(transaction.retry_dead(id, ts(T0 + 100_003)), Err(StoreError::NotFound { .. })));
        assert!(matches!(
            transaction.drop_dead(424_242, ts(T0)),
            Err(StoreError::NotFound { id: 424_242, .. })
        ));
        transaction.commit().unwrap();
    }
    let entry = store.outbox_entry(id).unwrap();
    assert_eq!(entry.status, OutboxStatus::Dropped);
    assert_eq!(entry.last_error.as_deref(), Some("rejected"), "a missing error keeps the last one");
    assert!(store.open_outbox_for(LINK, &[key("k1")]).unwrap().is_empty());
    assert!(store.open_outbox_keys(LINK).unwrap().is_empty());
    assert!(store.due_outbox(LINK, ts(T0 + 1_000_000), 0, 10).unwrap().is_empty());
    assert!(matches!(store.outbox_entry(424_242), Err(StoreError::NotFound { id: 424_242, .. })));
}

/// A run writes its plan a chunk at a time and publishes it at the end. The writes, the
/// reviews it opened and the audit of a run that never published are discarded by the next
/// run of its link (not of another link); a published run's are kept, and so are reviews the
/// dead run only updated.
#[test]
fn an_unpublished_plan_is_discarded_by_the_next_run_of_its_link() {
    let TempStore { mut store, _dir, .. } = temp_store();
    let earlier = start_run(&mut store, LINK, T0);
    let kept_review = {
        let transaction = store.transaction().unwrap();
        transaction.publish_plan(earlier).unwrap();
        let id =
            transaction.put_review(LINK, Some(earlier), &review("k0", Some("email"), 1, 2), ts(T0)).unwrap();
        transaction.commit().unwrap();
        id
    };
    let published = {
        let transaction = store.transaction().unwrap();
        let id = transaction
            .insert_outbox(LINK, earlier, &outbox_entry("k0", Side::Right, Operation::Update), ts(T0))
            .unwrap();
        transaction.commit().unwrap();
        id
    };
    let dead = start_run(&mut store, LINK, T0 + 10);
    let other_link = start_run(&mut store, "others", T0 + 10);
    {
        let transaction = store.transaction().unwrap();
        for record in ["k1", "k2"] {
            transaction
                .insert_outbox(LINK, dead, &outbox_entry(record, Side::Left, Operation::Update), ts(T0 + 10))
                .unwrap();
        }
        transaction
            .insert_outbox(
                "others",
                other_link,
                &outbox_entry("k9", Side::Left, Operation::Update),
                ts(T0 + 10),
            )
            .unwrap();
        transaction.put_review(LINK, Some(dead), &review("k1", Some("email"), 3, 4), ts(T0 + 10)).unwrap();
        // Updating a review opened by a published run leaves it that run's.
        transaction.put_review(LINK, Some(dead), &review("k0", Some("email"), 5, 6), ts(T0 + 10)).unwrap();
        transaction.audit(LINK, &audit_entry(Some(dead), "k1", AuditEvent::Resolved, T0 + 10)).unwrap();
        transaction.commit().unwrap();
    }
    assert_eq!(store.due_outbox(LINK, ts(T0 + 20), 0, 10).unwrap().len(), 3);

    let next = start_run(&mut store, LINK, T0 + 20);
    assert_eq!(ids(&store.due_outbox(LINK, ts(T0 + 20), 0, 10).unwrap()), vec![published]);
    assert_eq!(
        store.due_outbox("others", ts(T0 + 20), 0, 10).unwrap().len(),
        1,
        "another link's run is its own"
    );
    let live = store.live_reviews_for(LINK, &[key("k0"), key("k1")]).unwrap();
    assert_eq!(ids_of(&live), vec![kept_review]);
    assert!(store.audit_for_run(dead).unwrap().is_empty());

    // A guarded run discards its own plan at once; then nothing is left to discard.
    {
        let transaction = store.transaction().unwrap();
        transaction
            .insert_outbox(LINK, next, &outbox_entry("k3", Side::Left, Operation::Delete), ts(T0 + 20))
            .unwrap();
        assert_eq!(transaction.discard_plan(LINK, next).unwrap(), 1);
        transaction.commit().unwrap();
    }
    assert_eq!(ids(&store.due_outbox(LINK, ts(T0 + 30), 0, 10).unwrap()), vec![published]);
    let last = start_run(&mut store, LINK, T0 + 30);
    {
        let transaction = store.transaction().unwrap();
        transaction.publish_plan(last).unwrap();
        transaction.commit().unwrap();
    }
    start_run(&mut store, LINK, T0 + 40);
    assert_eq!(ids(&store.due_outbox(LINK, ts(T0 + 40), 0, 10).unwrap()), vec![published]);
}

/// A batch being sent is marked by one row: readers see its entries `sending` with the attempt
/// counted; closing an attempt counts it on the entry; a send a crash left open is counted on
/// each of its entries by the link's next run, which then sees them `sending`.
#[test]
fn a_send_marks_its_entries_and_a_crashed_one_is_counted_by_the_next_run() {
    let TempStore { mut store, _dir, .. } = temp_store();
    let run = start_run(&mut store, LINK, T0);
    let (first, second) = {
        let transaction = store.transaction().unwrap();
        transaction.publish_plan(run).unwrap();
        let first = transaction
            .insert_outbox(LINK, run, &outbox_entry("k1", Side::Right, Operation::Update), ts(T0))
            .unwrap();
        let second = transaction
            .insert_outbox(LINK, run, &outbox_entry("k2", Side::Right, Operation::Update), ts(T0))
            .unwrap();
        transaction.commit().unwrap();
        (first, second)
    };
    let send = {
        let transaction = store.transaction().unwrap();
        let send = transaction.begin_send(LINK, &[first, second], ts(T0 + 1)).unwrap();
        transaction.commit().unwrap();
        send
    };
    for id in [first, second] {
        let entry = store.outbox_entry(id).unwrap();
        assert_eq!((entry.status, entry.attempts), (OutboxStatus::Sending, 1), "entry {id} while sent");
    }
    // The first attempt closes: counted once, the send gone.
    {
        let transaction = store.transaction().unwrap();
        transaction.end_send(send).unwrap();
        transaction.close_attempt(first, OutboxStatus::Done, None, None, ts(T0 + 2)).unwrap();
        transaction
            .close_attempt(second, OutboxStatus::Pending, Some(ts(T0 + 60)), Some("busy"), ts(T0 + 2))
            .unwrap();
        transaction.commit().unwrap();
    }
    let done = store.outbox_entry(first).unwrap();
    assert_eq!((done.status, done.attempts), (OutboxStatus::Done, 1));
    let waiting = store.outbox_entry(second).unwrap();
    assert_eq!(
        (waiting.status, waiting.attempts, waiting.last_error.as_deref()),
        (OutboxStatus::Pending, 1, Some("busy"))
    );

    // Sent again, and the process dies before the send is closed.
    {
        let transaction = store.transaction().unwrap();
        transaction.begin_send(LINK, &[second], ts(T0 + 61)).unwrap();
        transaction.commit().unwrap();
    }
    let crashed = store.outbox_entry(second).unwrap();
    assert_eq!(
        (crashed.status, crashed.attempts),
        (OutboxStatus::Sending, 2),
        "seen as sent before recovery"
    );
    start_run(&mut store, LINK, T0 + 100);
    let recovered = store.outbox_entry(second).unwrap();
    assert_eq!((recovered.status, recovered.attempts), (OutboxStatus::Sending, 2), "counted once, stored");
    start_run(&mut store, LINK, T0 + 200);
    assert_eq!(store.outbox_entry(second).unwrap().attempts, 2, "a recovered send is not counted again");
    assert_eq!(store.outbox_entry(first).unwrap().attempts, 1);
}

#[test]
fn due_outbox_is_oldest_first_and_limited() {
    let TempStore { mut store, _dir, .. } = temp_store();
    let run = start_run(&mut store, LINK, T0);
    let transaction = store.transaction().unwrap();
    let first = transaction
        .insert_outbox(LINK, run, &outbox_entry("k1", Side::Left, Operation::Update), ts(T0))
        .unwrap();
    let second = transaction
        .insert_outbox(LINK, run, &outbox_entry("k2", Side::Right, Operation::Create), ts(T0 + 1))
        .unwrap();
    let third = transaction
        .insert_outbox(LINK, run, &outbox_entry("k3", Side::Left, Operation::Delete), ts(T0 + 2))
        .unwrap();
    transaction.commit().unwrap();
    assert_eq!(ids(&store.due_outbox(LINK, ts(T0 + 2), 0, 10).unwrap()), vec![first, second, third]);
    assert_eq!(ids(&store.due_outbox(LINK, ts(T0 + 1), 0, 10).unwrap()), vec![first, second]);
    assert_eq!(ids(&store.due_outbox(LINK, ts(T0 + 2), 0, 2).unwrap()), vec![first, second]);
    assert_eq!(ids(&store.due_outbox(LINK, ts(T0 + 2), second, 2).unwrap()), vec![third]);
    assert_eq!(store.next_due(LINK).unwrap(), Some(ts(T0)));
    assert_eq!(store.outbox_entry(second).unwrap().record_id, None);
    assert_eq!(store.outbox_entry(third).unwrap().operation, Operation::Delete);
}

#[test]
fn open_outbox_and_counts_by_status() {
    let TempStore { mut store, _dir, .. } = temp_store();
    let run = start_run(&mut store, LINK, T0);
    let other_run = start_run(&mut store, "other", T0);
    let statuses = [
        ("pending", None),
        ("sending", Some(OutboxStatus::Sending)),
        ("dead", Some(OutboxStatus::Dead)),
        ("done", Some(OutboxStatus::Done)),
        ("superseded", Some(OutboxStatus::Superseded)),
    ];
    let mut by_key: HashMap<&str, i64> = HashMap::new();
    {
        let transaction = store.transaction().unwrap();
        for (record, status) in statuses {
            let id = transaction
                .insert_outbox(LINK, run, &outbox_entry(record, Side::Right, Operation::Update), ts(T0))
                .unwrap();
            match status {
                None => {}
                Some(OutboxStatus::Sending) => transaction.mark_sending(&[id], ts(T0 + 1)).unwrap(),
                Some(status) => transaction.set_outbox_status(id, status, None, None, ts(T0 + 1)).unwrap(),
            }
            by_key.insert(record, id);
        }
        // A second, pending entry for the dead record (the other side), and one of another link.
        let extra = transaction
            .insert_outbox(LINK, run, &outbox_entry("dead", Side::Left, Operation::Update), ts(T0))
            .unwrap();
        by_key.insert("dead-left", extra);
        transaction
            .insert_outbox(
                "other",
                other_run,
                &outbox_entry("pending", Side::Right, Operation::Update),
                ts(T0),
            )
            .unwrap();
        transaction.commit().unwrap();
    }

    let all_keys: Vec<RecordKey> =
        statuses.iter().map(|(record, _)| key(record)).chain([key("nothing")]).collect();
    let open = store.open_outbox_for(LINK, &all_keys).unwrap();
    let mut open_ids = ids(&open);
    open_ids.sort_unstable();
    let mut expected = vec![by_key["pending"], by_key["sending"], by_key["dead"], by_key["dead-left"]];
    expected.sort_unstable();
    assert_eq!(open_ids, expected);
    assert!(open.iter().all(|entry| entry.link == LINK));
    assert!(store.open_outbox_for(LINK, &[key("done"), key("superseded")]).unwrap().is_empty());

    let mut keys = store.open_outbox_keys(LINK).unwrap();
    keys.sort();
    assert_eq!(keys, vec![key("dead"), key("pending"), key("sending")], "distinct keys");
    assert_eq!(store.open_outbox_keys("other").unwrap(), vec![key("pending")]);

    let counts = store.outbox_counts(LINK).unwrap();
    let expected: HashMap<OutboxStatus, u64> = [
        (OutboxStatus::Pending, 2),
        (OutboxStatus::Sending, 1),
        (OutboxStatus::Dead, 1),
        (OutboxStatus::Done, 1),
        (OutboxStatus::Superseded, 1),
    ]
    .into();
    assert_eq!(counts, expected);
    assert_eq!(store.outbox_counts("other").unwrap(), [(OutboxStatus::Pending, 1)].into());
    assert!(store.outbox_counts("nobody").unwrap().is_empty());

    // list_outbox: newest first, filtered.
    let listed = store.list_outbox(Some(LINK), Some(OutboxStatus::Pending), 10).unwrap();
    assert_eq!(ids(&listed), vec![by_key["dead-left"], by_key["pending"]]);
    assert_eq!(store.list_outbox(None, None, 100).unwrap().len(), 7);
    assert_eq!(store.list_outbox(None, None, 3).unwrap().len(), 3);
}

// ---------------------------------------------------------------------------------------------
// Reviews.

fn review(record: &str, field: Option<&str>, left: i64, right: i64) -> NewReview {
    NewReview {
        key: key(record),
        field: field.map(str::to_string),
        kind: ReviewKind::Conflict,
        base: Some(Value::Int(0)),
        left: Some(Value::Int(left)),
        right: Some(Value::Int(right)),
        reason: format!("both sides changed {field:?}"),
    }
}

#[test]
fn review_lifecycle() {
    let TempStore { mut store, path, _dir } = temp_store();
    let run = start_run(&mut store, LINK, T0);
    let first = review("k1", Some("email"), 1, 2);

    let id = {
        let transaction = store.transaction().unwrap();
        let id = transaction.put_review(LINK, Some(run), &first, ts(T0)).unwrap();
        // The same values again: the same review.
        assert_eq!(transaction.put_review(LINK, Some(run), &first, ts(T0 + 1)).unwrap(), id);
        transaction.commit().unwrap();
        id
    };
    let stored = store.review(id).unwrap();
    assert_eq!(stored.id, id);
    assert_eq!(stored.link, LINK);
    assert_eq!(stored.review, first);
    assert_eq!(stored.status, ReviewStatus::Open);
    assert_eq!(stored.decision, None);
    assert_eq!(stored.run_id, Some(run));
    assert_eq!(stored.created_at, ts(T0));
    assert_eq!(store.list_reviews(Some(LINK), None, 100).unwrap().len(), 1, "one review, not two");

    // A person decides; the same values again keep the decision.
    {
        let transaction = store.transaction().unwrap();
        transaction.resolve_review(id, &Decision::Keep(Side::Left), ts(T0 + 2)).unwrap();
        assert_eq!(transaction.put_review(LINK, Some(run), &first, ts(T0 + 3)).unwrap(), id);
        transaction.commit().unwrap();
    }
    let stored = store.review(id).unwrap();
    assert_eq!(stored.status, ReviewStatus::Resolved);
    assert_eq!(stored.decision, Some(Decision::Keep(Side::Left)));
    assert_eq!(stored.updated_at, ts(T0 + 2));
    assert_eq!(ids_of(&store.live_reviews_for(LINK, &[key("k1")]).unwrap()), vec![id]);

    // New values: the same review, updated and reopened, its decision cleared.
    let mut changed = review("k1", Some("email"), 1, 3);
    changed.base = Some(Value::Null);
    changed.reason = "the right side changed again".into();
    {
        let transaction = store.transaction().unwrap();
        assert_eq!(transaction.put_review(LINK, Some(run), &changed, ts(T0 + 4)).unwrap(), id);
        transaction.commit().unwrap();
    }
    let stored = store.review(id).unwrap();
    assert_eq!(stored.review, changed);
    assert_eq!(stored.status, ReviewStatus::Open);
    assert_eq!(stored.decision, None);
    assert_eq!(stored.created_at, ts(T0));
    assert_eq!(stored.updated_at, ts(T0 + 4));
    assert_eq!(store.list_reviews(None, None, 100).unwrap().len(), 1);

    // Resolved with a value (Null, to check it is not lost), kept across a reopen, then closed.
    {
        let transaction = store.transaction().unwrap();
        transaction.resolve_review(id, &Decision::Value(Value::Null), ts(T0 + 5)).unwrap();
        transaction.commit().unwrap();
    }
    drop(store);
    let mut store = StateStore::open(&path).unwrap();
    let stored = store.review(id).unwrap();
    assert_eq!(stored.status, ReviewStatus::Resolved);
    assert_eq!(stored.decision, Some(Decision::Value(Value::Null)));
    {
        let transaction = store.transaction().unwrap();
        transaction.resolve_review(id, &Decision::Value(Value::from("chosen")), ts(T0 + 6)).unwrap();
        transaction.close_review(id, ts(T0 + 7)).unwrap();
        assert!(matches!(
            transaction.resolve_review(id, &Decision::Keep(Side::Right), ts(T0 + 8)),
            Err(StoreError::NotFound { id: found, .. }) if found == id
        ));
        transaction.commit().unwrap();
    }
    let stored = store.review(id).unwrap();
    assert_eq!(stored.status, ReviewStatus::Closed);
    assert_eq!(stored.decision, Some(Decision::Value(Value::from("chosen"))));
    assert!(store.live_reviews_for(LINK, &[key("k1")]).unwrap().is_empty());
    assert!(store.keys_with_live_reviews(LINK).unwrap().is_empty());

    // A closed review is not refreshed: a new conflict on the field opens a new review.
    let again = {
        let transaction = store.transaction().unwrap();
        let again = transaction.put_review(LINK, None, &changed, ts(T0 + 9)).unwrap();
        transaction.commit().unwrap();
        again
    };
    assert_ne!(again, id);
    let stored = store.review(again).unwrap();
    assert_eq!(stored.status, ReviewStatus::Open);
    assert_eq!(stored.run_id, None);
    assert_eq!(store.review(id).unwrap().status, ReviewStatus::Closed);
    assert!(matches!(store.review(987_654), Err(StoreError::NotFound { id: 987_654, .. })));
}

fn ids_of(reviews: &[fieldsync_store::Review]) -> Vec<i64> {
    reviews.iter().map(|review| review.id).collect()
}

#[test]
fn live_reviews_are_per_field_and_exclude_closed_ones() {
    let TempStore { mut store, _dir, .. } = temp_store();
    let delete = NewReview {
        key: key("k2"),
        field: None,
        kind: ReviewKind::Delete,
        base: None,
        left: None,
        right: Some(Value::Null),
        reason: "deleted on the left, edited on the right".into(),
    };
    let first_sync =
        NewReview { kind: ReviewKind::FirstSync, base: None, ..review("k1", Some("phone"), 5, 6) };
    let (email, phone, deleted, closed, other_link) = {
        let transaction = store.transaction().unwrap();
        let email = transaction.put_review(LINK, None, &review("k1", Some("email"), 1, 2), ts(T0)).unwrap();
        let phone = transaction.put_review(LINK, None, &first_sync, ts(T0)).unwrap();
        let deleted = transaction.put_review(LINK, None, &delete, ts(T0)).unwrap();
        // A whole-record review is refreshed like a field review (field IS NULL).
        assert_eq!(transaction.put_review(LINK, None, &delete, ts(T0 + 1)).unwrap(), deleted);
        let closed = transaction.put_review(LINK, None, &review("k3", Some("name"), 1, 2), ts(T0)).unwrap();
        transaction.close_review(closed, ts(T0 + 1)).unwrap();
        let other_link =
            transaction.put_review("other", None, &review("k1", Some("email"), 1, 2), ts(T0)).unwrap();
        transaction.commit().unwrap();
        (email, phone, deleted, closed, other_link)
    };
    assert_eq!(store.review(phone).unwrap().review, first_sync);
    assert_eq!(store.review(deleted).unwrap().review, delete);
    assert_ne!(other_link, email);

    let live = store.live_reviews_for(LINK, &[key("k1"), key("k2"), key("k3"), key("none")]).unwrap();
    assert_eq!(ids_of(&live), vec![email, phone, deleted]);
    assert!(live.iter().all(|review| review.link == LINK));
    let mut keys = store.keys_with_live_reviews(LINK).unwrap();
    keys.sort();
    assert_eq!(keys, vec![key("k1"), key("k2")]);
    assert_eq!(store.keys_with_live_reviews("other").unwrap(), vec![key("k1")]);

    let open = store.list_reviews(Some(LINK), Some(ReviewStatus::Open), 100).unwrap();
    assert_eq!(ids_of(&open), vec![deleted, phone, email], "newest first");
    assert_eq!(ids_of(&store.list_reviews(None, Some(ReviewStatus::Closed), 100).unwrap()), vec![closed]);
    assert_eq!(store.list_reviews(None, None, 100).unwrap().len(), 5);
}

// ---------------------------------------------------------------------------------------------
// Audit and runs.

fn audit_entry(run_id: Option<RunId>, record: &str, event: AuditEvent, at: i64) -> AuditEntry {
    AuditEntry {
        run_id,
        key: key(record),
        field: Some("email".into()),
        event,
        side: Some(Side::Left),
        base: Some(Value::Null),
        left: Some(Value::from("a@example.org")),
        right: Some(Value::Int(3)),
        value: Some(Value::Bool(false)),
        reason: format!("{event} at {at}"),
        at: ts(at),
    }
}

#[test]
fn audit_entries_round_trip_per_run_and_per_record() {
    let TempStore { mut store, _dir, .. } = temp_store();
    let first = start_run(&mut store, LINK, T0);
    let second = start_run(&mut store, LINK, T0 + 100);
    let bare = AuditEntry {
        run_id: None,
        key: key("k1"),
        field: None,
        event: AuditEvent::Decided,
        side: None,
        base: None,
        left: None,
        right: None,
        value: None,
        reason: "a person decided".into(),
        at: ts(T0 + 50),
    };
    let entries = [
        (LINK, audit_entry(Some(first), "k1", AuditEvent::Detected, T0 + 1)),
        (LINK, audit_entry(Some(first), "k2", AuditEvent::Written, T0 + 2)),
        (LINK, audit_entry(Some(first), "k1", AuditEvent::Resolved, T0 + 3)),
        (LINK, bare.clone()),
        (LINK, audit_entry(Some(second), "k1", AuditEvent::Failed, T0 + 101)),
        ("other", audit_entry(None, "k1", AuditEvent::Agreed, T0 + 102)),
        (
            LINK,
            AuditEntry {
                side: Some(Side::Right),
                ..audit_entry(Some(second), "k2", AuditEvent::Reverted, T0 + 102)
            },
        ),
    ];
    {
        let transaction = store.transaction().unwrap();
        for (link, entry) in &entries {
            transaction.audit(link, entry).unwrap();
        }
        transaction.commit().unwrap();
    }
    let pick = |indices: &[usize]| indices.iter().map(|&index| entries[index].1.clone()).collect::<Vec<_>>();
    assert_eq!(store.audit_for_run(first).unwrap(), pick(&[0, 1, 2]));
    assert_eq!(store.audit_for_run(second).unwrap(), pick(&[4, 6]));
    assert_eq!(store.audit_for_record(LINK, &key("k1")).unwrap(), pick(&[0, 2, 3, 4]));
    assert_eq!(store.audit_for_record(LINK, &key("k2")).unwrap(), pick(&[1, 6]));
    assert_eq!(store.audit_for_record("other", &key("k1")).unwrap(), pick(&[5]));
    assert!(store.audit_for_run(RunId(9_999)).unwrap().is_empty());
    assert_eq!(store.audit_for_record(LINK, &key("k1")).unwrap()[2], bare);
}

#[test]
fn runs_are_recorded_and_listed_newest_first() {
    let TempStore { mut store, _dir, .. } = temp_store();
    let (first, other, third) = {
        let transaction = store.transaction().unwrap();
        let first = transaction.start_run(LINK, "full", ts(T0)).unwrap();
        let other = transaction.start_run("other", "incremental", ts(T0 + 1)).unwrap();
        let third = transaction.start_run(LINK, "incremental", ts(T0 + 2)).unwrap();
        transaction.commit().unwrap();
        (first, other, third)
    };
    assert!(first < other && other < third);

    let running = store.run(other).unwrap();
    assert_eq!(running.id, other);
    assert_eq!(running.link, "other");
    assert_eq!(running.mode, "incremental");
    assert_eq!(running.status, RunStatus::Running);
    assert_eq!(running.started_at, ts(T0 + 1));
    assert_eq!(running.finished_at, None);
    assert_eq!(running.stats, serde_json::Value::Null);
    assert_eq!(running.error, None);

    let stats = json!({ "read": { "left": 10, "right": 12 }, "written": 3, "notes": ["a", null] });
    {
        let transaction = store.transaction().unwrap();
        transaction.finish_run(first, RunStatus::Done, "full", &stats, None, ts(T0 + 10)).unwrap();
        // The mode may change on the way (an incremental run that turned into a full one).
        transaction
            .finish_run(
                third,
                RunStatus::Failed,
                "full",
                &json!({}),
                Some("connector went away"),
                ts(T0 + 20),
            )
            .unwrap();
        transaction.commit().unwrap();
    }
    let done = store.run(first).unwrap();
    assert_eq!(done.status, RunStatus::Done);
    assert_eq!(done.mode, "full");
    assert_eq!(done.stats, stats);
    assert_eq!(done.started_at, ts(T0));
    assert_eq!(done.finished_at, Some(ts(T0 + 10)));
    assert_eq!(done.error, None);
    let failed = store.run(third).unwrap();
    assert_eq!(failed.status, RunStatus::Failed);
    assert_eq!(failed.mode, "full");
    assert_eq!(failed.error.as_deref(), Some("connector went away"));
    assert_eq!(failed.finished_at, Some(ts(T0 + 20)));

    let listed = |link: Option<&str>, limit: usize| -> Vec<RunId> {
        store.list_runs(link, limit).unwrap().into_iter().map(|run| run.id).collect()
    };
    assert_eq!(listed(Some(LINK), 10), vec![third, first]);
    assert_eq!(listed(None, 10), vec![third, other, first]);
    assert_eq!(listed(None, 1), vec![third]);
    assert_eq!(listed(Some("nobody"), 10), Vec::<RunId>::new());
    assert_eq!(store.list_runs(Some(LINK), 10).unwrap()[1], done);

    assert!(matches!(store.run(RunId(123_456)), Err(StoreError::NotFound { what: "run", id: 123_456 })));
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
        Err(StoreError::Locked { link, path: locked }) => {
            assert_eq!(link, LINK);
            assert_eq!(Path::new(&locked), expected_path);
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    // Another store on the same file is excluded too.
    let second_store = StateStore::open(&path).unwrap();
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
    let store = StateStore::open(Path::new(&path)).expect("child: open the store");
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
