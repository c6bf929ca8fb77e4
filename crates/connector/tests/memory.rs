//! Runs the conformance suite (`testkit`) against `MemoryConnector`, the reference every
//! other connector's behaviour is compared with.

#![cfg(feature = "testkit")]

use fieldsync_connector::testkit::{self, Fixture, RejectedValue, TestPaths, TestRecord};
use fieldsync_connector::{MemoryConnector, MemoryFault, MemorySystem};
use jiff::{SignedDuration, Timestamp};

/// Fresh `MemorySystem`s whose clock ticks one second per user edit.
struct MemoryFixture {
    system: MemorySystem,
}

impl MemoryFixture {
    fn new() -> Self {
        Self { system: MemorySystem::new("key") }
    }
}

fn rejected() -> serde_json::Value {
    serde_json::Value::from("not-an-email")
}

impl Fixture for MemoryFixture {
    type Connector = MemoryConnector;

    async fn open(&mut self, records: &[TestRecord]) -> MemoryConnector {
        self.system = MemorySystem::new("key");
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
}

#[tokio::test]
async fn memory_connector_passes_the_conformance_suite() {
    testkit::run_all(&mut MemoryFixture::new()).await;
}
