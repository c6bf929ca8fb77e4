//! The conformance suite every connector passes: one `pub async fn` per property (read,
//! incremental read, lookup, idempotent and conditional apply, create, delete, verification,
//! error classification) and `run_all`, driven through a `Fixture` that makes fresh systems.
//!
//! A property that does not apply to a connector (by its `Capabilities`) reports `Skipped`.
//!
//! `django` starts a real Django club site for the tests; `skip` is how a test that needs a
//! program the machine lacks says so; `Either` runs a link between two kinds of connector.

pub mod couchdb;
pub mod django;
mod either;
pub mod postgres;
pub mod processes;
pub mod wordpress;

pub use either::Either;

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::OnceLock;

use fieldsync_model::RecordId;
use jiff::{SignedDuration, Timestamp};
use serde_json::Value as Json;

use crate::{
    Connector, ConnectorError, ConnectorRecord, FieldWrite, Lookup, Page, PageToken, ReadRequest, Sequence,
    Write, WriteOutcome, WriteResults,
};

/// Says loudly on stderr that the running test is skipped because it `needs` something and
/// `missing` says what is not there (`hint`: how to install it). Returns, so that the test can
/// end early.
///
/// # Panics
///
/// When `FIELDSYNC_REQUIRE_ALL` is set (CI sets it): then every test must run.
pub fn skip(needs: &str, missing: &str, hint: &str) {
    assert!(
        std::env::var_os("FIELDSYNC_REQUIRE_ALL").is_none(),
        "{needs} is needed but {missing}, and FIELDSYNC_REQUIRE_ALL is set ({hint})"
    );
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    eprintln!("SKIPPED: {test} needs {needs}, but {missing} ({hint})");
}

/// A fresh temporary directory for a test's server, `fieldsync-{name}-…`, and its path.
///
/// # Panics
///
/// When the directory cannot be made.
pub(crate) fn scratch_dir(name: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix(&format!("fieldsync-{name}-"))
        .tempdir()
        .expect("a temporary directory");
    let root = dir.path().to_path_buf();
    (dir, root)
}

/// What `found` found, or `None` after saying (`skip`) that the running test `needs` it and
/// what is missing.
pub(crate) fn found_or_skip<T>(found: Result<T, String>, needs: &str, hint: &str) -> Option<T> {
    found.map_err(|missing| skip(needs, &missing, hint)).ok()
}

/// The server of this test binary kept in `cell`, started by `start` for the first test that
/// asks and never dropped (its processes' watchdog stops it once the test binary has exited);
/// `None` each time when it cannot be started. The first test's `SKIPPED:` line comes from
/// `start`; every later test's says that it `needs` the server and `missing`.
pub(crate) fn shared_server<S: Send + Sync>(
    cell: &'static OnceLock<Option<S>>,
    start: impl FnOnce() -> Option<S>,
    needs: &str,
    missing: &str,
    hint: &str,
) -> Option<&'static S> {
    let mut started_now = false;
    let server = cell
        .get_or_init(|| {
            started_now = true;
            start()
        })
        .as_ref();
    if server.is_none() && !started_now {
        skip(needs, missing, hint);
    }
    server
}

/// Whether a fixture system takes `text` as an e-mail address, as web forms and APIs check
/// one: one `@` between a non-empty local part and a domain with a dot inside, no spaces.
pub fn plausible_email(text: &str) -> bool {
    let Some((local, domain)) = text.split_once('@') else { return false };
    !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !text.chars().any(char::is_whitespace)
}

/// Enough records that every connector pages them (the memory connector's pages hold 100; a
/// fixture configures its connector's batch below this).
pub const PAGED_RECORDS: usize = 250;

/// A record a fixture puts into a fresh system: three text fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestRecord {
    /// The link key, stored at `TestPaths::key`; in the systems of this suite it is also the
    /// connector's record id, but the suite does not rely on that.
    pub key: String,
    /// Stored at `TestPaths::name`.
    pub name: String,
    /// Stored at `TestPaths::email`.
    pub email: String,
}

impl TestRecord {
    /// The `number`th test record: key `m0001`, name `Member 1`, email `member1@example.org`.
    pub fn numbered(number: usize) -> Self {
        Self {
            key: format!("m{number:04}"),
            name: format!("Member {number}"),
            email: format!("member{number}@example.org"),
        }
    }

    /// Records `1..=count`, in key order.
    pub fn many(count: usize) -> Vec<Self> {
        (1..=count).map(Self::numbered).collect()
    }
}

/// The paths at which a system holds the three fields of a `TestRecord`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestPaths {
    /// The link key's path.
    pub key: String,
    /// The name's path.
    pub name: String,
    /// The email's path.
    pub email: String,
}

impl TestPaths {
    /// The three paths in `ReadRequest` order: key, name, email.
    pub fn all(&self) -> Vec<String> {
        vec![self.key.clone(), self.name.clone(), self.email.clone()]
    }
}

impl Default for TestPaths {
    /// The column names `key`, `name` and `email`.
    fn default() -> Self {
        Self { key: "key".into(), name: "name".into(), email: "email".into() }
    }
}

/// Where a system holds values that are not text, for the `typed_values` property: a whole
/// number that may be null, a boolean, and a list of texts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TypedPaths {
    /// A whole number, or null.
    pub number: String,
    /// A boolean.
    pub flag: String,
    /// A list of texts (a JSON array, or its JSON text in a system that stores text).
    pub list: String,
}

/// A value the system refuses for good at a path (a CHECK constraint, a validation rule).
#[derive(Clone, Debug, PartialEq)]
pub struct RejectedValue {
    /// Where the value is refused.
    pub path: String,
    /// The refused value.
    pub value: Json,
}

/// Makes fresh systems for the suite and edits them as their users would.
///
/// The methods return futures so that fixtures of networked systems can set them up
/// asynchronously; implementations may write them as `async fn`. A fixture panics when it
/// cannot set a system up: that is a failure of the test, not of the connector.
pub trait Fixture {
    /// The connector under test.
    type Connector: Connector;

    /// Makes a fresh, otherwise empty system holding `records` (each with its three fields
    /// as text at `paths()`) and returns a connector on it. Records made here are older than
    /// any later `edit`, where the system keeps modification times.
    fn open(&mut self, records: &[TestRecord]) -> impl Future<Output = Self::Connector>;

    /// Changes the value at `path` of the record whose key is `key` directly in the system
    /// opened last, as a user would. Where the system keeps modification times, the record's
    /// becomes "now", strictly later than every time the system held before.
    fn edit(&mut self, key: &str, path: &str, value: Json) -> impl Future<Output = ()>;

    /// Where the system holds the fields of a `TestRecord`.
    fn paths(&self) -> TestPaths {
        TestPaths::default()
    }

    /// Where the system holds a number, a boolean and a list, if it can; `None` skips the
    /// `typed_values` property.
    fn typed_paths(&self) -> Option<TypedPaths> {
        None
    }

    /// A value the system refuses for good, if it can refuse any; `None` skips the check
    /// that a rejected write is classified as `ConnectorError::Rejected`. The value must be
    /// one no other property of the suite writes (such as `not-an-email` at the email path).
    fn rejected_value(&self) -> Option<RejectedValue>;
}

/// How one property of the suite went; a failed property panics instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Checked {
    /// The connector has the property.
    Passed,
    /// The property does not apply to this connector or fixture.
    Skipped {
        /// Why.
        reason: &'static str,
    },
}

/// Runs each of the named properties against `$fixture`, one after the other: an array of
/// each property's name and how it went.
macro_rules! run_each {
    ($fixture:expr; $($property:ident),+ $(,)?) => {
        [$((stringify!($property), $property($fixture).await)),+]
    };
}

/// Runs every property of the suite against fresh systems from `fixture`, printing one line
/// per property to stderr (the skipped ones say why), and panics at the first failure.
///
/// `expected_skips` names the properties the connector is known not to have (by its
/// `Capabilities` or its fixture, such as `"conditional_update"`): any other property that
/// skips fails the suite, and so does an expected skip that passed — a connector that claims
/// less than it should (an incremental read lost from a preset) is found, not silently skipped.
///
/// # Panics
///
/// When a property fails, or the properties that skipped are not exactly `expected_skips`.
pub async fn run_all<F: Fixture>(fixture: &mut F, expected_skips: &[&str]) {
    let outcomes = run_each!(fixture;
        check, full_read, incremental_read, sequence_read, lookup_by_ids, lookup_by_key, idempotent_update,
        conditional_update, create, delete, verification, typed_values, rejected_write, missing_record
    );
    let known: Vec<&str> = outcomes.iter().map(|(property, _)| *property).collect();
    for expected in expected_skips {
        assert!(
            known.contains(expected),
            "expected skip {expected:?} is no property of the suite ({known:?})"
        );
    }
    let mut skipped = Vec::new();
    for (property, outcome) in outcomes {
        match outcome {
            Checked::Passed => eprintln!("conformance: {property}: passed"),
            Checked::Skipped { reason } => {
                let expected = if expected_skips.contains(&property) { "expected" } else { "NOT EXPECTED" };
                eprintln!("conformance: {property}: SKIPPED ({reason}; {expected})");
                skipped.push(property);
            }
        }
    }
    let unexpected: Vec<&str> =
        skipped.iter().copied().filter(|property| !expected_skips.contains(property)).collect();
    assert!(unexpected.is_empty(), "conformance properties skipped without being expected: {unexpected:?}");
    let passed: Vec<&str> =
        expected_skips.iter().copied().filter(|property| !skipped.contains(property)).collect();
    assert!(
        passed.is_empty(),
        "conformance properties expected to skip ran: {passed:?}; drop them from the expected skips"
    );
}

/// `check` succeeds on a fresh system and reports the connector's own capabilities and, if
/// it counts records, the right count.
pub async fn check<F: Fixture>(fixture: &mut F) -> Checked {
    let records = TestRecord::many(3);
    let mut connector = fixture.open(&records).await;
    let paths = fixture.paths().all();
    let probe = connector.check(&paths).await.unwrap_or_else(|error| panic!("check failed: {error}"));
    assert_eq!(probe.capabilities, connector.capabilities(), "check reports other capabilities");
    assert!(
        probe.records.is_none_or(|count| count == 3),
        "check counted {:?} records in a system of 3",
        probe.records
    );
    Checked::Passed
}

/// A full read returns every record exactly once, with its values, over several pages; a page
/// read again from the same token is the same page; a connector without incremental reads
/// ignores `since`.
pub async fn full_read<F: Fixture>(fixture: &mut F) -> Checked {
    let Opened { records, mut connector, paths } = open(fixture, PAGED_RECORDS).await;
    let request = ReadRequest { paths: paths.all(), since: None };
    let read = read_all(&mut connector, &request).await;
    assert_holds_exactly(&read, &records, "a full read");
    assert!(read.iter().all(|record| !record.deleted), "a full read of a fresh system has deleted records");

    let first = read_page(&mut connector, &request, None).await;
    if let Some(token) = &first.next {
        let again = read_page(&mut connector, &request, Some(token)).await;
        let once_more = read_page(&mut connector, &request, Some(token)).await;
        assert_eq!(again, once_more, "reading the same page token twice gave different pages");
        assert!(
            first.records.iter().all(|record| !again.records.iter().any(|later| later.id == record.id)),
            "the second page repeats records of the first"
        );
    }

    if !connector.capabilities().incremental {
        let future = Timestamp::now().checked_add(SignedDuration::from_hours(24)).unwrap_or(Timestamp::MAX);
        let request = ReadRequest { paths: paths.all(), since: Some(crate::Since::Time(future)) };
        let read = read_all(&mut connector, &request).await;
        assert_holds_exactly(&read, &records, "a read with `since` by a connector without incremental reads");
    }
    Checked::Passed
}

/// With `since = T`, an incremental read returns the records modified at or after `T`
/// (including one modified exactly at `T`) and none of the records left alone.
pub async fn incremental_read<F: Fixture>(fixture: &mut F) -> Checked {
    let Opened { records, mut connector, paths } =
        open_or_skip!(fixture, 150, incremental, "no incremental reads");
    let all = ReadRequest { paths: paths.all(), since: None };

    let before = read_all(&mut connector, &all).await;
    let latest_before = before
        .iter()
        .map(|record| record.modified.unwrap_or_else(|| panic!("record {} has no modified time", record.id)))
        .max()
        .unwrap_or(Timestamp::MIN);

    fixture.edit("m0003", &paths.name, Json::from("Edited Three")).await;
    let edited_first = modified_of(&read_all(&mut connector, &all).await, "m0003");
    assert!(
        edited_first > latest_before,
        "an edit did not move the record's modified time past every earlier one"
    );
    fixture.edit("m0120", &paths.email, Json::from("edited120@example.org")).await;
    let edited_second = modified_of(&read_all(&mut connector, &all).await, "m0120");
    assert!(edited_second > edited_first, "a later edit is not later");

    let since_first = ReadRequest { paths: paths.all(), since: Some(crate::Since::Time(edited_first)) };
    let read = read_all(&mut connector, &since_first).await;
    let mut expected = records.clone();
    expected[2].name = "Edited Three".into();
    expected[119].email = "edited120@example.org".into();
    let expected: Vec<TestRecord> = vec![expected[2].clone(), expected[119].clone()];
    assert_holds_exactly(&read, &expected, "an incremental read from the first edit's time");

    let since_second = ReadRequest { paths: paths.all(), since: Some(crate::Since::Time(edited_second)) };
    let read = read_all(&mut connector, &since_second).await;
    assert_holds_exactly(&read, &expected[1..], "an incremental read from the second edit's time");
    Checked::Passed
}

/// A connector with sequences gives every page of a full read a sequence; a read after it
/// returns exactly the records changed since (by the system's users or by the connector's own
/// writes), a deleted one as deleted under its id, and none left alone; a read after the
/// sequence that read reached returns nothing; and the feed is read past the connector's own
/// writes (`past_own_writes`).
pub async fn sequence_read<F: Fixture>(fixture: &mut F) -> Checked {
    let Opened { records, mut connector, paths } = open_or_skip!(fixture, 150, sequences, "no sequences");
    let all = ReadRequest { paths: paths.all(), since: None };
    let ids = ids_by_key(&mut connector, &paths).await;
    let (read, sequence) = read_with_sequence(&mut connector, &all).await;
    assert_holds_exactly(&read, &records, "a full read");

    fixture.edit("m0003", &paths.name, Json::from("Edited Three")).await;
    fixture.edit("m0120", &paths.email, Json::from("edited120@example.org")).await;
    apply_one(&mut connector, &Write::Delete { id: ids["m0050"].clone() })
        .await
        .unwrap_or_else(|error| panic!("a delete failed: {error}"));

    let since = ReadRequest { paths: paths.all(), since: Some(crate::Since::Sequence(sequence)) };
    let (read, reached) = read_with_sequence(&mut connector, &since).await;
    let (deleted, live): (Vec<_>, Vec<_>) = read.into_iter().partition(|record| record.deleted);
    let mut expected = vec![records[2].clone(), records[119].clone()];
    expected[0].name = "Edited Three".into();
    expected[1].email = "edited120@example.org".into();
    assert_holds_exactly(&live, &expected, "a read after a full read's sequence");
    let deleted: Vec<&RecordId> = deleted.iter().map(|record| &record.id).collect();
    assert_eq!(deleted, [&ids["m0050"]], "the deletes of a read after a full read's sequence");

    let quiet = ReadRequest { paths: paths.all(), since: Some(crate::Since::Sequence(reached.clone())) };
    let (read, _) = read_with_sequence(&mut connector, &quiet).await;
    assert!(read.is_empty(), "a read after the last sequence returned {} records", read.len());
    past_own_writes(fixture, &mut connector, &paths, &ids, reached).await;
    Checked::Passed
}

/// The connector's own writes, read back as the engine reads them, are passed over by
/// `feed_past_own_writes`: a read from where it says returns none of them. Anyone else's
/// change, and an own write of a record not among those named, are never passed over.
async fn past_own_writes<F: Fixture>(
    fixture: &mut F,
    connector: &mut F::Connector,
    paths: &TestPaths,
    ids: &BTreeMap<String, RecordId>,
    reached: Sequence,
) {
    let since = |sequence: &Sequence| ReadRequest {
        paths: paths.all(),
        since: Some(crate::Since::Sequence(sequence.clone())),
    };
    let new = TestRecord { key: "n0001".into(), name: "New Member".into(), email: "new@example.org".into() };
    let writes = [
        update(&ids["m0007"], &[(&paths.name, "Own Seven", None)]),
        Write::Create { fields: field_writes(paths, &new) },
        Write::Delete { id: ids["m0008"].clone() },
    ];
    let mut mine = HashSet::new();
    for write in &writes {
        let outcome =
            apply_one(connector, write).await.unwrap_or_else(|error| panic!("a write failed: {error}"));
        mine.insert(outcome.id);
    }
    lookup_records(connector, paths, &Lookup::Ids(mine.iter().cloned().collect())).await;
    let past = feed_past(connector, &reached, &mine).await.unwrap_or_else(|| {
        panic!("a feed holding only the connector's own writes, read back, was not passed over")
    });
    let (read, past) = read_with_sequence(connector, &since(&past)).await;
    assert!(read.is_empty(), "a read from past the connector's own writes returned {read:?}");

    // Someone else's edit between two own writes, and an own write not named.
    let mut named = HashSet::new();
    for key in ["m0009", "m0012"] {
        let write = update(&ids[key], &[(&paths.email, &format!("own.{key}@example.org"), None)]);
        named.insert(
            apply_one(connector, &write).await.unwrap_or_else(|error| panic!("an update failed: {error}")).id,
        );
        if key == "m0009" {
            fixture.edit("m0011", &paths.name, Json::from("Edited Eleven")).await;
        }
    }
    let unnamed = update(&ids["m0013"], &[(&paths.name, "Own Thirteen", None)]);
    apply_one(connector, &unnamed).await.unwrap_or_else(|error| panic!("an update failed: {error}"));
    let written: Vec<RecordId> = named.iter().cloned().chain([ids["m0013"].clone()]).collect();
    lookup_records(connector, paths, &Lookup::Ids(written)).await;
    let from = feed_past(connector, &past, &named).await.unwrap_or(past);
    let (read, reached) = read_with_sequence(connector, &since(&from)).await;
    let read_ids: Vec<&RecordId> = read.iter().map(|record| &record.id).collect();
    for key in ["m0011", "m0013"] {
        assert!(
            read_ids.contains(&&ids[key]),
            "{key}'s change was passed over as the connector's own named write: the read found {read_ids:?}"
        );
    }

    // A feed holding nothing but an own write of a record not named is not passed over either.
    let unnamed = update(&ids["m0014"], &[(&paths.name, "Own Fourteen", None)]);
    apply_one(connector, &unnamed).await.unwrap_or_else(|error| panic!("an update failed: {error}"));
    lookup_records(connector, paths, &Lookup::Ids(vec![ids["m0014"].clone()])).await;
    let from = feed_past(connector, &reached, &named).await.unwrap_or(reached);
    let (read, _) = read_with_sequence(connector, &since(&from)).await;
    assert!(
        read.iter().any(|record| record.id == ids["m0014"]),
        "m0014's change was passed over as the connector's own named write: the read found {read:?}"
    );
}

/// What `feed_past_own_writes` answers.
///
/// # Panics
///
/// When the feed cannot be read.
async fn feed_past<C: Connector>(
    connector: &mut C,
    since: &Sequence,
    mine: &HashSet<RecordId>,
) -> Option<Sequence> {
    connector
        .feed_past_own_writes(since, mine)
        .await
        .unwrap_or_else(|error| panic!("reading the feed past own writes failed: {error}"))
}

/// Every record of a listing, and the last sequence its pages gave.
///
/// # Panics
///
/// When a page fails, or no page gives a sequence.
pub async fn read_with_sequence<C: Connector>(
    connector: &mut C,
    request: &ReadRequest,
) -> (Vec<ConnectorRecord>, Sequence) {
    let mut records = Vec::new();
    let mut token: Option<PageToken> = None;
    let mut sequence = None;
    for _ in 0..MAX_PAGES {
        let page = read_page(connector, request, token.as_ref()).await;
        records.extend(page.records);
        sequence = page.sequence.or(sequence);
        token = page.next;
        if token.is_none() {
            let sequence = sequence.unwrap_or_else(|| panic!("no page of a listing gave a sequence"));
            return (records, sequence);
        }
    }
    panic!("a listing did not end within {MAX_PAGES} pages");
}

/// A lookup by ids returns the records asked for; ids that do not exist are absent, not
/// errors; no ids, no records.
pub async fn lookup_by_ids<F: Fixture>(fixture: &mut F) -> Checked {
    let Opened { records, mut connector, paths } = open(fixture, 20).await;
    let ids = ids_by_key(&mut connector, &paths).await;
    let lookup =
        Lookup::Ids(vec![ids["m0002"].clone(), RecordId::new("no-such-record"), ids["m0015"].clone()]);
    let found = lookup_records(&mut connector, &paths, &lookup).await;
    assert_holds_exactly(&found, &[records[1].clone(), records[14].clone()], "a lookup by ids");
    let found = lookup_records(&mut connector, &paths, &Lookup::Ids(Vec::new())).await;
    assert!(found.is_empty(), "a lookup of no ids found records");
    Checked::Passed
}

/// A lookup by the value at a path (the key, then another field) returns the matching
/// records with their own ids; values that match nothing are absent, not errors.
pub async fn lookup_by_key<F: Fixture>(fixture: &mut F) -> Checked {
    let Opened { records, mut connector, paths } =
        open_or_skip!(fixture, 20, lookup_by_key, "no lookup by key");
    let ids = ids_by_key(&mut connector, &paths).await;
    let lookup = Lookup::Key { path: paths.key.clone(), values: vec!["m0007".into(), "no-such-key".into()] };
    let found = lookup_records(&mut connector, &paths, &lookup).await;
    assert_holds_exactly(&found, &[records[6].clone()], "a lookup by key");
    assert_eq!(found[0].id, ids["m0007"], "a lookup by key gave another id than a read");
    let lookup = Lookup::Key { path: paths.name.clone(), values: vec!["Member 3".into()] };
    let found = lookup_records(&mut connector, &paths, &lookup).await;
    assert_holds_exactly(&found, &[records[2].clone()], "a lookup by name");
    Checked::Passed
}

/// Applying the same update twice succeeds both times and leaves the same state, touching no
/// other record.
pub async fn idempotent_update<F: Fixture>(fixture: &mut F) -> Checked {
    let Opened { records: mut expected, mut connector, paths } = open(fixture, 5).await;
    let ids = ids_by_key(&mut connector, &paths).await;
    let write = update(&ids["m0001"], &[(&paths.name, "Renamed One", None)]);
    expected[0].name = "Renamed One".into();
    for attempt in ["first", "second"] {
        let outcome = apply_one(&mut connector, &write).await;
        let outcome =
            outcome.unwrap_or_else(|error| panic!("the {attempt} identical update failed: {error}"));
        assert_eq!(outcome.id, ids["m0001"], "an update reported another id");
        let context = format!("a read after the {attempt} identical update");
        assert_full_read(&mut connector, &paths, &expected, &context).await;
    }
    Checked::Passed
}

/// A conditional update whose `expected` values hold is applied; one whose `expected` no
/// longer holds (after the connector's own write, or a user's edit) fails with `TargetMoved`
/// and changes nothing, not even its fields whose `expected` holds.
pub async fn conditional_update<F: Fixture>(fixture: &mut F) -> Checked {
    let Opened { records: mut expected, mut connector, paths } =
        open_or_skip!(fixture, 5, conditional_writes, "no conditional writes");
    let ids = ids_by_key(&mut connector, &paths).await;

    let first = update(&ids["m0001"], &[(&paths.name, "First", Some("Member 1"))]);
    apply_one(&mut connector, &first)
        .await
        .unwrap_or_else(|error| panic!("a conditional update whose expected value holds failed: {error}"));
    let second = update(&ids["m0001"], &[(&paths.name, "Second", Some("Member 1"))]);
    let result = apply_one(&mut connector, &second).await;
    assert_target_moved(result, &ids["m0001"], "a conditional update after the connector's own write");

    fixture.edit("m0002", &paths.email, Json::from("moved@example.org")).await;
    let moved = update(
        &ids["m0002"],
        &[
            (&paths.name, "Not Written", Some("Member 2")),
            (&paths.email, "not-written@example.org", Some("member2@example.org")),
        ],
    );
    let result = apply_one(&mut connector, &moved).await;
    assert_target_moved(result, &ids["m0002"], "a conditional update after a user's edit");

    expected[0].name = "First".into();
    expected[1].email = "moved@example.org".into();
    assert_full_read(&mut connector, &paths, &expected, "a read after refused conditional updates").await;
    Checked::Passed
}

/// A created record can be read and looked up with all its values and the id the create
/// reported; creating the same key again fails with `AlreadyExists` or leaves one record.
pub async fn create<F: Fixture>(fixture: &mut F) -> Checked {
    let Opened { records: mut expected, mut connector, paths } =
        open_or_skip!(fixture, 3, create, "no creates");
    let new = TestRecord { key: "n0001".into(), name: "New Member".into(), email: "new@example.org".into() };
    let write = Write::Create { fields: field_writes(&paths, &new) };
    let outcome =
        apply_one(&mut connector, &write).await.unwrap_or_else(|error| panic!("a create failed: {error}"));

    let found = lookup_records(&mut connector, &paths, &Lookup::Ids(vec![outcome.id.clone()])).await;
    assert_holds_exactly(&found, std::slice::from_ref(&new), "a lookup of the created record's id");
    if connector.capabilities().lookup_by_key {
        let lookup = Lookup::Key { path: paths.key.clone(), values: vec![new.key.clone()] };
        let found = lookup_records(&mut connector, &paths, &lookup).await;
        assert_holds_exactly(&found, std::slice::from_ref(&new), "a lookup of the created record's key");
        assert_eq!(found[0].id, outcome.id, "the created record has another id than the create reported");
    }
    expected.push(new.clone());
    assert_full_read(&mut connector, &paths, &expected, "a read after a create").await;

    match apply_one(&mut connector, &write).await {
        Ok(_) | Err(ConnectorError::AlreadyExists { .. }) => {}
        Err(error) => panic!("creating an existing key again failed with {error:?}, not AlreadyExists"),
    }
    assert_full_read(&mut connector, &paths, &expected, "a read after creating the same key twice").await;
    Checked::Passed
}

/// A deleted record is gone from reads and lookups, or returned with `deleted` set; the
/// other records stay; deleting a record that does not exist fails with `NotFound`.
pub async fn delete<F: Fixture>(fixture: &mut F) -> Checked {
    let Opened { records, mut connector, paths } = open_or_skip!(fixture, 3, delete, "no deletes");
    let ids = ids_by_key(&mut connector, &paths).await;
    let outcome = apply_one(&mut connector, &Write::Delete { id: ids["m0002"].clone() })
        .await
        .unwrap_or_else(|error| panic!("a delete failed: {error}"));
    assert_eq!(outcome.id, ids["m0002"], "a delete reported another id");

    let read = read_every_record(&mut connector, &paths).await;
    let (deleted, live): (Vec<_>, Vec<_>) = read.into_iter().partition(|record| record.deleted);
    assert_holds_exactly(
        &live,
        &[records[0].clone(), records[2].clone()],
        "the live records of a read after a delete",
    );
    assert!(
        deleted.iter().all(|record| record.id == ids["m0002"]),
        "a read after a delete marks other records deleted"
    );
    let found = lookup_records(&mut connector, &paths, &Lookup::Ids(vec![ids["m0002"].clone()])).await;
    assert!(found.iter().all(|record| record.deleted), "a lookup of a deleted record finds it live");

    let result = apply_one(&mut connector, &Write::Delete { id: RecordId::new("no-such-record") }).await;
    assert!(
        matches!(result, Err(ConnectorError::NotFound { .. })),
        "deleting a record that does not exist gave {result:?}, not NotFound"
    );
    Checked::Passed
}

/// A lookup right after a write returns exactly the values written (text with quotes,
/// separators and non-ASCII letters), and the untouched fields as they were.
pub async fn verification<F: Fixture>(fixture: &mut F) -> Checked {
    let Opened { records, mut connector, paths } = open(fixture, 3).await;
    let ids = ids_by_key(&mut connector, &paths).await;
    let name = "Zoë \"Jo\" O'Brien, Jr.; ünd\tmore";
    let email = "zoë.o'brien@example.org";
    let write = update(&ids["m0002"], &[(&paths.name, name, None), (&paths.email, email, None)]);
    apply_one(&mut connector, &write).await.unwrap_or_else(|error| panic!("an update failed: {error}"));
    let found = lookup_records(&mut connector, &paths, &Lookup::Ids(vec![ids["m0002"].clone()])).await;
    let expected = TestRecord { key: "m0002".into(), name: name.into(), email: email.into() };
    assert_holds_exactly(&found, &[expected], "a lookup right after an update");

    let write = update(&ids["m0003"], &[(&paths.name, "", None)]);
    apply_one(&mut connector, &write)
        .await
        .unwrap_or_else(|error| panic!("an update to empty text failed: {error}"));
    let found = lookup_records(&mut connector, &paths, &Lookup::Ids(vec![ids["m0003"].clone()])).await;
    let expected = TestRecord { name: String::new(), ..records[2].clone() };
    assert_holds_exactly(&found, &[expected], "a lookup right after an update to empty text");
    Checked::Passed
}

/// Numbers (and a null one), booleans and lists (and an empty one) written by updates and a
/// create come back as written from a full read and from a lookup by id. A system that stores
/// them as text or integers may answer `7` as `"7"`, `true` as `1` and a list as its JSON text.
pub async fn typed_values<F: Fixture>(fixture: &mut F) -> Checked {
    let Some(typed) = fixture.typed_paths() else {
        return Checked::Skipped { reason: "the fixture declares no number, boolean and list fields" };
    };
    let Opened { records: _, mut connector, paths } = open(fixture, 3).await;
    let ids = ids_by_key(&mut connector, &paths).await;
    let typed_writes = |number: Json, flag: Json, list: Json| {
        vec![
            FieldWrite { path: typed.number.clone(), value: number, expected: None },
            FieldWrite { path: typed.flag.clone(), value: flag, expected: None },
            FieldWrite { path: typed.list.clone(), value: list, expected: None },
        ]
    };
    let wanted = [
        ("m0001", serde_json::json!(7), Json::Bool(true), serde_json::json!(["a", "b"])),
        ("m0002", Json::Null, Json::Bool(false), serde_json::json!([])),
        ("n0001", serde_json::json!(42), Json::Bool(true), serde_json::json!(["x"])),
    ];
    let new = TestRecord { key: "n0001".into(), name: "New Member".into(), email: "new@example.org".into() };
    let mut create_fields = field_writes(&paths, &new);
    create_fields.extend(typed_writes(wanted[2].1.clone(), wanted[2].2.clone(), wanted[2].3.clone()));
    let writes = [
        Write::Update {
            id: ids["m0001"].clone(),
            fields: typed_writes(wanted[0].1.clone(), wanted[0].2.clone(), wanted[0].3.clone()),
        },
        Write::Update {
            id: ids["m0002"].clone(),
            fields: typed_writes(wanted[1].1.clone(), wanted[1].2.clone(), wanted[1].3.clone()),
        },
        Write::Create { fields: create_fields },
    ];
    let results = apply(&mut connector, &writes).await;
    let mut all_ids = vec![ids["m0001"].clone(), ids["m0002"].clone()];
    for result in &results {
        match result {
            Ok(outcome) => all_ids.push(outcome.id.clone()),
            Err(error) => panic!("a write of numbers, booleans and lists failed: {error}"),
        }
    }
    let read_paths = vec![paths.key.clone(), typed.number.clone(), typed.flag.clone(), typed.list.clone()];
    let read = read_all(&mut connector, &ReadRequest { paths: read_paths.clone(), since: None }).await;
    let found = connector
        .lookup(&read_paths, &Lookup::Ids(all_ids))
        .await
        .unwrap_or_else(|error| panic!("lookup failed: {error}"));
    for (context, records) in [("a full read", &read), ("a lookup by id", &found)] {
        for (key, number, flag, list) in &wanted {
            let record = records
                .iter()
                .find(|record| text(&record.values[0], &record.id) == *key)
                .unwrap_or_else(|| panic!("{context}: record {key} is missing"));
            let values = &record.values;
            assert!(
                same_number(&values[1], number),
                "{context}: record {key} holds number {}, not {number}",
                values[1]
            );
            assert!(
                same_flag(&values[2], flag),
                "{context}: record {key} holds boolean {}, not {flag}",
                values[2]
            );
            assert!(
                same_list(&values[3], list),
                "{context}: record {key} holds list {}, not {list}",
                values[3]
            );
        }
    }
    Checked::Passed
}

/// A number as written, or its text; null only for null.
fn same_number(got: &Json, want: &Json) -> bool {
    match (got, want.as_i64()) {
        (Json::Null, None) => true,
        (Json::Number(number), Some(want)) => number.as_i64() == Some(want),
        (Json::String(text), Some(want)) => text.trim().parse::<i64>().ok() == Some(want),
        _ => false,
    }
}

/// A boolean as written, or as `1`/`0`, `"true"`/`"false"`, `"1"`/`"0"`.
fn same_flag(got: &Json, want: &Json) -> bool {
    let want = want.as_bool();
    let got = match got {
        Json::Bool(flag) => Some(*flag),
        Json::Number(number) => number.as_i64().map(|number| number != 0),
        Json::String(text) => match text.as_str() {
            "true" | "1" => Some(true),
            "false" | "0" => Some(false),
            _ => None,
        },
        _ => None,
    };
    got.is_some() && got == want
}

/// A list as written, or its JSON text.
fn same_list(got: &Json, want: &Json) -> bool {
    match got {
        Json::Array(_) => got == want,
        Json::String(text) => serde_json::from_str::<Json>(text).is_ok_and(|parsed| parsed == *want),
        _ => false,
    }
}

/// A write the system refuses fails with `Rejected`, which is not retryable, while the other
/// writes of the same `apply` succeed.
pub async fn rejected_write<F: Fixture>(fixture: &mut F) -> Checked {
    let Some(rejected) = fixture.rejected_value() else {
        return Checked::Skipped { reason: "the fixture's system refuses no value" };
    };
    let Opened { records: mut expected, mut connector, paths } = open(fixture, 4).await;
    let ids = ids_by_key(&mut connector, &paths).await;
    let refused = Write::Update {
        id: ids["m0002"].clone(),
        fields: vec![FieldWrite {
            path: rejected.path.clone(),
            value: rejected.value.clone(),
            expected: None,
        }],
    };
    let writes = [
        update(&ids["m0001"], &[(&paths.name, "Batch One", None)]),
        refused,
        update(&ids["m0003"], &[(&paths.name, "Batch Three", None)]),
    ];
    let results = apply(&mut connector, &writes).await;
    assert!(results[0].is_ok(), "the write before a rejected one failed: {:?}", results[0]);
    match &results[1] {
        Err(error @ ConnectorError::Rejected { .. }) => {
            assert!(!error.is_retryable(), "a rejected write is classified retryable");
        }
        other => panic!("a refused write gave {other:?}, not Rejected"),
    }
    assert!(results[2].is_ok(), "the write after a rejected one failed: {:?}", results[2]);

    expected[0].name = "Batch One".into();
    expected[2].name = "Batch Three".into();
    assert_full_read(&mut connector, &paths, &expected, "a read after a batch with a rejected write").await;
    Checked::Passed
}

/// Updating a record that does not exist fails with `NotFound`, which is not retryable,
/// while the other writes of the same `apply` succeed.
pub async fn missing_record<F: Fixture>(fixture: &mut F) -> Checked {
    let Opened { records: mut expected, mut connector, paths } = open(fixture, 2).await;
    let ids = ids_by_key(&mut connector, &paths).await;
    let writes = [
        update(&RecordId::new("no-such-record"), &[(&paths.name, "Nobody", None)]),
        update(&ids["m0002"], &[(&paths.name, "Still Written", None)]),
    ];
    let results = apply(&mut connector, &writes).await;
    match &results[0] {
        Err(error @ ConnectorError::NotFound { id }) => {
            assert_eq!(id.as_str(), "no-such-record", "NotFound names another record");
            assert!(!error.is_retryable(), "NotFound is classified retryable");
        }
        other => panic!("updating a record that does not exist gave {other:?}, not NotFound"),
    }
    assert!(results[1].is_ok(), "the write after a missing record's failed: {:?}", results[1]);
    expected[1].name = "Still Written".into();
    assert_full_read(&mut connector, &paths, &expected, "a read after a batch with a missing record").await;
    Checked::Passed
}

/// Opens `$fixture` on a fresh system of `$count` test records, as [`open`] does, or ends the
/// property as skipped for `$reason` when the connector lacks the capability `$capability`
/// (a field of its `Capabilities`).
macro_rules! open_or_skip {
    ($fixture:expr, $count:expr, $capability:ident, $reason:literal) => {{
        let opened = open($fixture, $count).await;
        if !opened.connector.capabilities().$capability {
            return Checked::Skipped { reason: $reason };
        }
        opened
    }};
}
use open_or_skip;

/// A fresh system of test records, opened by a fixture.
struct Opened<C> {
    records: Vec<TestRecord>,
    connector: C,
    paths: TestPaths,
}

/// Opens `fixture` on a fresh system of `count` test records.
async fn open<F: Fixture>(fixture: &mut F, count: usize) -> Opened<F::Connector> {
    let records = TestRecord::many(count);
    let connector = fixture.open(&records).await;
    Opened { records, connector, paths: fixture.paths() }
}

/// Every record of a full read of every test path.
async fn read_every_record<C: Connector>(connector: &mut C, paths: &TestPaths) -> Vec<ConnectorRecord> {
    read_all(connector, &ReadRequest { paths: paths.all(), since: None }).await
}

/// Asserts that a full read of every test path holds exactly `expected` (see
/// [`assert_holds_exactly`]).
async fn assert_full_read<C: Connector>(
    connector: &mut C,
    paths: &TestPaths,
    expected: &[TestRecord],
    context: &str,
) {
    let read = read_every_record(connector, paths).await;
    assert_holds_exactly(&read, expected, context);
}

/// The most pages `read_all` follows before it decides the connector loops.
const MAX_PAGES: usize = 10_000;

async fn read_page<C: Connector>(
    connector: &mut C,
    request: &ReadRequest,
    token: Option<&PageToken>,
) -> Page {
    connector.read_page(request, token).await.unwrap_or_else(|error| panic!("read_page failed: {error}"))
}

/// Every record of a listing, following page tokens to the end.
///
/// # Panics
///
/// When a page fails, a record holds other than one value per path, a page hands back the
/// token it was given, or the listing goes on for more than 10,000 pages.
pub async fn read_all<C: Connector>(connector: &mut C, request: &ReadRequest) -> Vec<ConnectorRecord> {
    let mut records = Vec::new();
    let mut token: Option<PageToken> = None;
    for _ in 0..MAX_PAGES {
        let page = read_page(connector, request, token.as_ref()).await;
        for record in &page.records {
            assert_eq!(
                record.values.len(),
                request.paths.len(),
                "record {} has {} values for {} paths",
                record.id,
                record.values.len(),
                request.paths.len()
            );
        }
        records.extend(page.records);
        match page.next {
            None => return records,
            Some(next) => {
                assert!(token.as_ref() != Some(&next), "read_page handed back the token it was given");
                token = Some(next);
            }
        }
    }
    panic!("read_page did not finish within {MAX_PAGES} pages")
}

async fn lookup_records<C: Connector>(
    connector: &mut C,
    paths: &TestPaths,
    lookup: &Lookup,
) -> Vec<ConnectorRecord> {
    let records =
        connector.lookup(&paths.all(), lookup).await.unwrap_or_else(|error| panic!("lookup failed: {error}"));
    for record in &records {
        assert_eq!(
            record.values.len(),
            3,
            "lookup gave record {} {} values for 3 paths",
            record.id,
            record.values.len()
        );
    }
    records
}

async fn apply<C: Connector>(connector: &mut C, writes: &[Write]) -> WriteResults {
    let results =
        connector.apply(writes).await.unwrap_or_else(|error| panic!("apply failed as a whole: {error}"));
    assert_eq!(
        results.len(),
        writes.len(),
        "apply gave {} results for {} writes",
        results.len(),
        writes.len()
    );
    results
}

async fn apply_one<C: Connector>(connector: &mut C, write: &Write) -> Result<WriteOutcome, ConnectorError> {
    let mut results = apply(connector, std::slice::from_ref(write)).await;
    results.remove(0)
}

/// The id of every record by its key, from a full read.
async fn ids_by_key<C: Connector>(connector: &mut C, paths: &TestPaths) -> BTreeMap<String, RecordId> {
    let read = read_all(connector, &ReadRequest { paths: paths.all(), since: None }).await;
    read.into_iter().map(|record| (text(&record.values[0], &record.id), record.id)).collect()
}

fn update(id: &RecordId, fields: &[(&String, &str, Option<&str>)]) -> Write {
    Write::Update {
        id: id.clone(),
        fields: fields
            .iter()
            .map(|(path, value, expected)| FieldWrite {
                path: (*path).clone(),
                value: Json::from(*value),
                expected: expected.map(Json::from),
            })
            .collect(),
    }
}

fn field_writes(paths: &TestPaths, record: &TestRecord) -> Vec<FieldWrite> {
    [(&paths.key, &record.key), (&paths.name, &record.name), (&paths.email, &record.email)]
        .into_iter()
        .map(|(path, value)| FieldWrite {
            path: path.clone(),
            value: Json::from(value.as_str()),
            expected: None,
        })
        .collect()
}

/// A value as text; `null` is the empty text, as fieldsync holds them for the same.
fn text(value: &Json, id: &RecordId) -> String {
    match value {
        Json::String(text) => text.clone(),
        Json::Null => String::new(),
        other => panic!("record {id} holds {other}, not text"),
    }
}

fn modified_of(records: &[ConnectorRecord], key: &str) -> Timestamp {
    let record = records
        .iter()
        .find(|record| text(&record.values[0], &record.id) == key)
        .unwrap_or_else(|| panic!("record {key} is missing from a full read"));
    record.modified.unwrap_or_else(|| panic!("record {key} has no modified time"))
}

/// Asserts that a write was refused as `Rejected`, with a message that mentions `mentioning`
/// (a column, a constraint).
///
/// # Panics
///
/// When the write did anything else, or its message does not mention `mentioning`.
pub fn assert_rejected(result: &Result<WriteOutcome, ConnectorError>, mentioning: &str) {
    assert!(
        matches!(result, Err(ConnectorError::Rejected { message }) if message.contains(mentioning)),
        "{result:?}, not Rejected mentioning {mentioning:?}"
    );
}

fn assert_target_moved(result: Result<WriteOutcome, ConnectorError>, id: &RecordId, context: &str) {
    match result {
        Err(ConnectorError::TargetMoved { id: moved }) => {
            assert_eq!(&moved, id, "{context}: TargetMoved names another record")
        }
        other => panic!("{context} gave {other:?}, not TargetMoved"),
    }
}

/// Asserts that `records` are exactly `expected`: each key once, with its values as text, in
/// any order.
fn assert_holds_exactly(records: &[ConnectorRecord], expected: &[TestRecord], context: &str) {
    let mut by_key: BTreeMap<String, &ConnectorRecord> = BTreeMap::new();
    for record in records {
        let key = text(&record.values[0], &record.id);
        if by_key.insert(key.clone(), record).is_some() {
            panic!("{context}: record {key} came back more than once");
        }
    }
    let mut missing = Vec::new();
    for want in expected {
        let Some(record) = by_key.remove(&want.key) else {
            missing.push(want.key.clone());
            continue;
        };
        let got: Vec<String> = record.values.iter().map(|value| text(value, &record.id)).collect();
        assert_eq!(
            got,
            vec![want.key.clone(), want.name.clone(), want.email.clone()],
            "{context}: record {} has other values",
            want.key
        );
    }
    assert!(missing.is_empty(), "{context}: records {missing:?} are missing");
    let extra: Vec<&String> = by_key.keys().collect();
    assert!(extra.is_empty(), "{context}: records {extra:?} came back unexpectedly");
}
