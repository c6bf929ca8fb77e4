//! A [`World`]: two memory systems, a real state store (SQLite in a temporary directory, or a
//! schema of its own on PostgreSQL with `FIELDSYNC_TEST_STORE=postgres`), the link between them
//! and the engine's clock — the engine tests' and the simulation's stage.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use fieldsync_connector::{Connector, MemoryConnector, MemorySystem};
use fieldsync_engine::{
    CancellationToken, ConflictStrategy, Creates, DeletePolicy, Direction, EngineError, FieldSpec,
    FirstSyncStrategy, Guard, LinkRun, LinkSpec, NoProgress, RetryPolicy, RunOptions, RunReport, SidePair,
    SystemClock,
};
use fieldsync_model::{FieldType, LinkName, Normaliser, RecordId, RecordKey, Side};
use fieldsync_store::{
    AuditEntry, AuditValues, Baseline, OutboxEntry, Review, ReviewStatus, StateStore, StoreError,
};
use jiff::Timestamp;
use serde_json::Value as Json;

use crate::clock::FakeClock;
use crate::run::run_link;
use crate::store::{StoreHome, StoreKind, TestStore};

/// A field whose path is its name on both sides, normalised as `field_type` on both.
pub fn field_spec(name: &str, field_type: FieldType) -> FieldSpec {
    FieldSpec {
        name: name.into(),
        paths: SidePair::new(name.into(), name.into()),
        normalisers: SidePair::new(Normaliser::new(field_type), Normaliser::new(field_type)),
        direction: Direction::Both,
    }
}

/// The link `members` keyed by `key_path` on both sides, tracking `fields` (see
/// [`field_spec`]) with `conflicts`, and the defaults the engine tests start from: first syncs
/// reviewed, creates both ways, deletes propagated, the default guard, a full scan a day, an
/// overlap of a second, retries that do not wait inside a run, and values kept in full in the
/// history.
pub fn link_spec(key_path: &str, fields: &[(&str, FieldType)], conflicts: ConflictStrategy) -> LinkSpec {
    LinkSpec {
        name: LinkName::new("members"),
        key: SidePair::new(key_path.into(), key_path.into()),
        fields: fields.iter().map(|(name, field_type)| field_spec(name, *field_type)).collect(),
        conflicts,
        first_sync: FirstSyncStrategy::Review,
        creates: Creates::Both,
        deletes: DeletePolicy::Propagate,
        guard: Guard::default(),
        full_scan_every: Duration::from_secs(86_400),
        overlap: SidePair::new(Duration::from_secs(1), Duration::from_secs(1)),
        retry: RetryPolicy { wait_in_run: Duration::ZERO, ..RetryPolicy::default() },
        audit: AuditValues::Full,
    }
}

/// The records of one system, keyed by id, field by path.
pub type Snapshot = BTreeMap<String, BTreeMap<String, Json>>;

/// Which clock a world's runs see.
#[derive(Clone, Copy, Debug)]
pub enum Time {
    /// The real clock; the systems keep their own time, which the test sets.
    System,
    /// The world's [`FakeClock`], starting at `start`, with both systems set to it. When
    /// `systems_follow` holds, the systems' clocks move whenever the fake clock moves (the
    /// engine's sleeps too); otherwise only [`World::set_time`] moves them.
    Fake {
        /// Where the clock starts.
        start: Timestamp,
        /// Whether the systems' clocks follow every move of the fake clock.
        systems_follow: bool,
    },
}

/// Two memory systems (left and right, keyed by the link's key paths), a real state store, the
/// link between them and the engine's clock. The store is SQLite in a temporary directory, or
/// with `FIELDSYNC_TEST_STORE=postgres` a fresh schema on the test binary's PostgreSQL server
/// (see [`StoreKind::from_env`]).
#[derive(Debug)]
pub struct World {
    /// The left system.
    pub left: MemorySystem,
    /// The right system.
    pub right: MemorySystem,
    /// The state store.
    pub store: TestStore,
    /// The link; a test may change it between runs.
    pub spec: LinkSpec,
    /// The fake clock (under [`Time::System`] it exists but runs do not read it).
    pub clock: FakeClock,
    time: Time,
    names: SidePair<String>,
    home: StoreHome,
    _dir: tempfile::TempDir,
}

impl World {
    /// A world for `spec` whose runs see `time`.
    ///
    /// # Panics
    ///
    /// When no temporary directory or state store can be made, or under
    /// `FIELDSYNC_TEST_STORE=postgres` when PostgreSQL is missing and `FIELDSYNC_REQUIRE_ALL`
    /// is set (without it, the world holds a SQLite store after a `SKIPPED:` line).
    pub fn new(spec: LinkSpec, time: Time) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let home = StoreHome::new(dir.path());
        let store = home.open().expect("a new state store");
        let left = MemorySystem::new(spec.key.left.as_str());
        let right = MemorySystem::new(spec.key.right.as_str());
        let clock = match time {
            Time::Fake { start, systems_follow: true } => {
                FakeClock::followed_by(start, SidePair::new(left.clone(), right.clone()))
            }
            Time::Fake { start, systems_follow: false } => {
                left.set_now(start);
                right.set_now(start);
                FakeClock::new(start)
            }
            Time::System => FakeClock::new(Timestamp::UNIX_EPOCH),
        };
        let names = SidePair::new("left".to_string(), "right".to_string());
        World { left, right, store, spec, clock, time, names, home, _dir: dir }
    }

    /// One side's system.
    pub fn system(&self, side: Side) -> &MemorySystem {
        match side {
            Side::Left => &self.left,
            Side::Right => &self.right,
        }
    }

    /// Moves the engine's clock and both systems' clocks to `now`.
    pub fn set_time(&self, now: Timestamp) {
        self.clock.set(now);
        self.left.set_now(now);
        self.right.set_now(now);
    }

    /// A connector to each system.
    pub fn connectors(&self) -> SidePair<MemoryConnector> {
        SidePair::new(self.left.connector(), self.right.connector())
    }

    /// One run over `connectors` (of this world's systems, wrapped as the test likes).
    ///
    /// # Errors
    ///
    /// Whatever the run returns (see [`run_link`]).
    pub async fn try_run_with<C: Connector>(
        &mut self,
        connectors: &mut SidePair<C>,
        options: RunOptions,
    ) -> Result<RunReport, EngineError> {
        match self.time {
            Time::System => {
                run_link(&self.spec, &self.names, connectors, &mut self.store, options, &SystemClock).await
            }
            Time::Fake { .. } => {
                run_link(&self.spec, &self.names, connectors, &mut self.store, options, &self.clock).await
            }
        }
    }

    /// One run over the world's own connectors.
    ///
    /// # Errors
    ///
    /// Whatever the run returns (see [`run_link`]).
    pub async fn try_run(&mut self, options: RunOptions) -> Result<RunReport, EngineError> {
        let mut connectors = self.connectors();
        self.try_run_with(&mut connectors, options).await
    }

    /// One run over `connectors` that must not fail.
    ///
    /// # Panics
    ///
    /// When the run fails.
    pub async fn run_with<C: Connector>(
        &mut self,
        connectors: &mut SidePair<C>,
        options: RunOptions,
    ) -> RunReport {
        match self.try_run_with(connectors, options).await {
            Ok(report) => report,
            Err(error) => panic!("the run failed: {error:?}"),
        }
    }

    /// One run over the world's own connectors that must not fail.
    ///
    /// # Panics
    ///
    /// When the run fails.
    pub async fn run(&mut self, options: RunOptions) -> RunReport {
        let mut connectors = self.connectors();
        self.run_with(&mut connectors, options).await
    }

    /// A targeted run over the world's own connectors, on the system clock, that must not
    /// fail: only the records `targets` names on each side are read, by id, as a webhook names
    /// them.
    ///
    /// # Panics
    ///
    /// When the run fails.
    pub async fn run_targeted(&mut self, targets: &SidePair<Vec<RecordId>>) -> RunReport {
        let mut connectors = self.connectors();
        let never = CancellationToken::new();
        let (spec, names, options, clock, targets) =
            (&self.spec, &self.names, RunOptions::default(), &SystemClock, Some(targets));
        let run = LinkRun { spec, names, options, clock, progress: &NoProgress, cancel: &never, targets };
        match crate::run::run_link_watched(run, &mut connectors, &mut self.store).await {
            Ok(report) => report,
            Err(error) => panic!("the run failed: {error:?}"),
        }
    }

    /// A run killed at its `commit`-th state-store commit (after the commit lands when
    /// `committed`), and the store opened again as the next process would open it.
    ///
    /// # Panics
    ///
    /// When the run does not fail, or the store does not open again.
    pub async fn crashed_run(&mut self, commit: u32, committed: bool, options: RunOptions) {
        self.store.crash_at_commit(commit, committed);
        let result = self.try_run(options).await;
        assert!(result.is_err(), "the run was to crash at commit {commit}: {result:?}");
        self.reopen();
    }

    /// Opens the state store again, as the next process after a crash would, and drops the
    /// old handle (for PostgreSQL: a new connection to the same schema). The crashed run's
    /// lease no longer holds the link: on SQLite its lock file died with it; on PostgreSQL,
    /// which has no such lock, every live lease is let expire, as `lease_timeout` after a
    /// crash would.
    ///
    /// # Errors
    ///
    /// When the store cannot be opened.
    pub fn try_reopen(&mut self) -> Result<(), StoreError> {
        let store = self.home.open()?;
        drop(std::mem::replace(&mut self.store, store));
        self.home.after_crash();
        Ok(())
    }

    /// Another handle on the world's state store, as another process would open it (for
    /// PostgreSQL, a connection of its own).
    ///
    /// # Panics
    ///
    /// When the store cannot be opened.
    pub fn open_store(&self) -> TestStore {
        self.home.open().expect("the state store opens again")
    }

    /// Which kind of state store the world holds.
    pub fn store_kind(&self) -> StoreKind {
        self.store.kind()
    }

    /// The SQLite store's file, for a test of what only SQLite has; `None` on PostgreSQL.
    pub fn sqlite_path(&self) -> Option<&Path> {
        self.home.sqlite_path()
    }

    /// Runs one SQL statement on the state store's tables directly, around the store, as
    /// damage or a person with a database client would; how many rows it changed. The
    /// statement must mean the same in SQLite and PostgreSQL (the tables and columns are
    /// named alike in both).
    ///
    /// # Panics
    ///
    /// When the statement fails.
    pub fn execute_in_store(&self, sql: &str) -> u64 {
        self.home.execute(sql)
    }

    /// Every row of the state store's `table`, each as a line of text, sorted: to compare the
    /// store's contents before and after a run.
    ///
    /// # Panics
    ///
    /// When the table cannot be read.
    pub fn store_rows(&self, table: &str) -> Vec<String> {
        self.home.rows(table)
    }

    /// Opens the state store again (see [`World::try_reopen`]).
    ///
    /// # Panics
    ///
    /// When the store cannot be opened.
    pub fn reopen(&mut self) {
        self.try_reopen().expect("the state store opens again");
    }

    /// The baseline of the record with link key `key` under the link's fields.
    ///
    /// # Panics
    ///
    /// When the state store fails.
    pub fn baseline(&mut self, key: &str) -> Option<Baseline> {
        let link = self.spec.name.as_str();
        let layout = self.store.layout(link, &self.spec.field_names()).expect("the link's layout");
        let key = RecordKey::new(key);
        self.store.baselines(link, &layout, std::slice::from_ref(&key)).expect("baselines").remove(&key)
    }

    /// Every outbox entry of the link.
    ///
    /// # Panics
    ///
    /// When the state store fails.
    pub fn outbox(&self) -> Vec<OutboxEntry> {
        self.store.list_outbox(Some(self.spec.name.as_str()), None, 10_000).expect("the outbox")
    }

    /// The link's reviews with `status` (every one with `None`).
    ///
    /// # Panics
    ///
    /// When the state store fails.
    pub fn reviews(&self, status: Option<ReviewStatus>) -> Vec<Review> {
        self.store.list_reviews(Some(self.spec.name.as_str()), status, 10_000).expect("the reviews")
    }

    /// The audit entries of the run that made `report`.
    ///
    /// # Panics
    ///
    /// When the run was not recorded or the state store fails.
    pub fn audit(&self, report: &RunReport) -> Vec<AuditEntry> {
        self.store.audit_for_run(report.run_id.expect("a recorded run")).expect("the run's audit")
    }

    /// How many writes both systems applied.
    pub fn writes(&self) -> u64 {
        self.left.writes_applied() + self.right.writes_applied()
    }

    /// Every record of one side.
    pub fn snapshot(&self, side: Side) -> Snapshot {
        self.system(side)
            .records()
            .into_iter()
            .map(|(id, record)| (id.as_str().to_string(), record.fields))
            .collect()
    }
}
