//! Runs the conformance suite (`testkit`) against `MemoryConnector`, the reference every
//! other connector's behaviour is compared with.

#![cfg(feature = "testkit")]

use fieldsync_connector::testkit::{self, Fixture, RejectedValue, TestPaths, TestRecord, TypedPaths};
use fieldsync_connector::{MemoryConnector, MemoryFault, MemorySystem};
use jiff::{SignedDuration, Timestamp};

/// Fresh `MemorySystem`s whose clock ticks one second per user edit.
struct MemoryFixture {
    system: MemorySystem,
    /// Whether its systems read as change feeds.
    feed: bool,
}

impl MemoryFixture {
    fn new() -> Self {
        Self { system: MemorySystem::new("key"), feed: false }
    }
}

fn rejected() -> serde_json::Value {
    serde_json::Value::from("not-an-email")
}

impl Fixture for MemoryFixture {
    type Connector = MemoryConnector;

    async fn open(&mut self, records: &[TestRecord]) -> MemoryConnector {
        self.system = MemorySystem::new("key");
        if self.feed {
            self.system.read_as_feed();
        }
        self.system.set_now(Timestamp::from_second(1_700_000_000).expect("a valid instant"));
        let paths = TestPaths::default();
        for record in records {
            self.system.edit(&record.key, &paths.name, record.name.as_str().into());
            self.system.edit(&record.key, &paths.email, record.email.as_str().into());
        }
        self.system.inject(MemoryFault::RejectValue(rejected()));
        self.system.connector()
    }

    async fn edit(&mut self, key: &str, path: &str, value: serde_json::Value) {
        self.system.set_now(self.system.now() + SignedDuration::from_secs(1));
        self.system.edit(key, path, value);
    }

    fn rejected_value(&self) -> Option<RejectedValue> {
        Some(RejectedValue { path: "email".into(), value: rejected() })
    }

    fn typed_paths(&self) -> Option<TypedPaths> {
        Some(TypedPaths { number: "number".into(), flag: "flag".into(), list: "list".into() })
    }
}

#[tokio::test]
async fn memory_connector_passes_the_conformance_suite() {
    testkit::run_all(&mut MemoryFixture::new(), &["sequence_read"]).await;
}

#[tokio::test]
async fn memory_connector_read_as_a_feed_passes_the_conformance_suite() {
    let mut fixture = MemoryFixture { feed: true, ..MemoryFixture::new() };
    testkit::run_all(&mut fixture, &["incremental_read"]).await;
}

/// The memory fixture, but one whose system refuses nothing, so `rejected_write` skips.
struct RefusesNothing(MemoryFixture);

impl Fixture for RefusesNothing {
    type Connector = MemoryConnector;

    async fn open(&mut self, records: &[TestRecord]) -> MemoryConnector {
        self.0.open(records).await
    }

    async fn edit(&mut self, key: &str, path: &str, value: serde_json::Value) {
        self.0.edit(key, path, value).await;
    }

    fn rejected_value(&self) -> Option<RejectedValue> {
        None
    }

    fn typed_paths(&self) -> Option<TypedPaths> {
        self.0.typed_paths()
    }
}

#[tokio::test]
#[should_panic(expected = "skipped without being expected: [\"rejected_write\"]")]
async fn a_skip_the_connector_did_not_declare_fails_the_suite() {
    testkit::run_all(&mut RefusesNothing(MemoryFixture::new()), &["sequence_read"]).await;
}

#[tokio::test]
#[should_panic(expected = "expected to skip ran: [\"incremental_read\"]")]
async fn a_declared_skip_that_runs_fails_the_suite() {
    testkit::run_all(&mut MemoryFixture::new(), &["sequence_read", "incremental_read"]).await;
}
