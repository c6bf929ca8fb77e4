//! The border between the engine and the systems it keeps in step: the `Connector` trait,
//! what a connector reads (`ConnectorRecord`, `Page`) and writes (`Write`), its
//! `Capabilities`, and `ConnectorError` with its retry classification.
//!
//! Connectors know nothing of baselines, conflicts or the state store; they read and write
//! raw JSON values at paths (a column name, a JSON pointer) and say what they can do.

mod dispatch;
mod error;
mod feed;
mod kind;
#[cfg(feature = "testkit")]
pub mod loopback;
#[cfg(feature = "testkit")]
mod memory;
mod settings;
#[cfg(feature = "testkit")]
pub mod testkit;

use std::collections::HashSet;
use std::future::Future;

use fieldsync_model::RecordId;
use jiff::Timestamp;
use serde::Serialize;

pub use error::ConnectorError;
pub use feed::{BoxFuture, ChangeFeed, FeedOpener};
/// The model's record id, for `dispatch_connector!`'s expansion in crates that name it otherwise.
#[doc(hidden)]
pub use fieldsync_model::RecordId as DispatchRecordId;
pub use kind::{ConnectorSettings, PathError};
#[cfg(feature = "testkit")]
pub use memory::{AppliedWrite, FaultEdit, MemoryConnector, MemoryFault, MemoryRecord, MemorySystem};
pub use settings::{DurationError, Pace, Secret, SettingError, check_table_columns, duration};

/// What a connector can do; the engine plans around it rather than around its name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Capabilities {
    /// Reads only the records modified at or after an instant (`ReadRequest::since`).
    pub incremental: bool,
    /// Finds records by the value at a path (`Lookup::Key`), not only by id.
    pub lookup_by_key: bool,
    /// Refuses an update whose `FieldWrite::expected` value no longer holds, atomically.
    pub conditional_writes: bool,
    /// Creates records.
    pub create: bool,
    /// Deletes records (hard, or through the connector's soft-delete column).
    pub delete: bool,
    /// Reads only the changes after a `Sequence` it gave (`Since::Sequence`), deletes
    /// included, as a change feed does; and gives the sequence a listing reached
    /// (`Page::sequence`).
    pub sequences: bool,
}

impl Capabilities {
    /// What a table offers, as the database connectors' tables and the CSV file do: lookups by
    /// key, conditional writes, creates and deletes, and incremental reads when `incremental`
    /// (the table has a modification time).
    pub fn table(incremental: bool) -> Self {
        Self {
            incremental,
            lookup_by_key: true,
            conditional_writes: true,
            create: true,
            delete: true,
            sequences: false,
        }
    }
}

/// What to read: the paths of the values wanted, and optionally only recent records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadRequest {
    /// The paths to read, in order; every `ConnectorRecord::values` has one value per path.
    pub paths: Vec<String>,
    /// When set, only the records changed since then are needed; a connector reads
    /// everything when it cannot read the changes since that kind of point (without
    /// `Capabilities::incremental` for a time, without `Capabilities::sequences` for a
    /// sequence).
    pub since: Option<Since>,
}

impl ReadRequest {
    /// The instant of a `Since::Time`, if the request has one.
    pub fn since_time(&self) -> Option<Timestamp> {
        match &self.since {
            Some(Since::Time(time)) => Some(*time),
            _ => None,
        }
    }

    /// The sequence of a `Since::Sequence`, if the request has one.
    pub fn since_sequence(&self) -> Option<&Sequence> {
        match &self.since {
            Some(Since::Sequence(sequence)) => Some(sequence),
            _ => None,
        }
    }
}

/// Where an incremental read starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Since {
    /// The records modified at or after this instant (a modification-time column).
    Time(Timestamp),
    /// The changes after this point of the system's change feed, a sequence the connector
    /// gave in `Page::sequence`.
    Sequence(Sequence),
}

/// A point in a system's change feed, as the system spells it (CouchDB's update sequence);
/// opaque to the engine, which keeps the last one a run's listing reached and hands it back
/// to the next run.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
pub struct Sequence(pub String);

/// Which records a `Connector::lookup` wants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Records by the connector's own ids.
    Ids(Vec<RecordId>),
    /// Records whose value at `path` is one of `values` (compared as text).
    Key {
        /// The path holding the key.
        path: String,
        /// The key values wanted.
        values: Vec<String>,
    },
}

/// One record as a connector holds it: its id, the raw values at the requested paths, and
/// its modification time where the system keeps one.
#[derive(Clone, Debug, PartialEq)]
pub struct ConnectorRecord {
    /// The connector's own id of the record.
    pub id: RecordId,
    /// Raw values, one per requested path, `Null` where the record has none.
    pub values: Vec<serde_json::Value>,
    /// When the system last modified the record, if it says.
    pub modified: Option<Timestamp>,
    /// Whether the record is marked deleted (a soft-delete column); it still has values.
    pub deleted: bool,
}

/// An opaque position in a listing, handed back to `Connector::read_page` for the next page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageToken(pub String);

/// One page of a listing.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Page {
    /// The records of this page.
    pub records: Vec<ConnectorRecord>,
    /// Where the next page starts; `None` after the last page.
    pub next: Option<PageToken>,
    /// For a connector with `Capabilities::sequences`: the point of the change feed the
    /// listing has reached once this page is read, from which the next run's read may start
    /// (on a full read, a point taken before the listing began, so that nothing changed
    /// during it is missed). The last one a listing gives is kept.
    pub sequence: Option<Sequence>,
}

impl Page {
    /// A page of `records` followed by the page at `next`, with no sequence.
    pub fn new(records: Vec<ConnectorRecord>, next: Option<PageToken>) -> Self {
        Self { records, next, sequence: None }
    }
}

/// One value to write at one path, with the raw value the engine read there.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct FieldWrite {
    /// Where to write.
    pub path: String,
    /// The raw value to write.
    pub value: serde_json::Value,
    /// The raw value the target held when it was read. A connector with
    /// `Capabilities::conditional_writes` refuses the whole write with
    /// `ConnectorError::TargetMoved` when the target no longer holds it; `None` writes
    /// unconditionally.
    pub expected: Option<serde_json::Value>,
}

/// A write to one record.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Write {
    /// Change some values of an existing record.
    Update {
        /// The record.
        id: RecordId,
        /// The values to change; the others are left as they are.
        fields: Vec<FieldWrite>,
    },
    /// Make a new record holding these values (always including the link key).
    Create {
        /// The values of the new record.
        fields: Vec<FieldWrite>,
    },
    /// Delete a record (or mark it deleted, where the connector has a soft-delete column).
    Delete {
        /// The record.
        id: RecordId,
    },
}

/// What a successful write reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteOutcome {
    /// The id of the record written; for a create, the id the system gave it.
    pub id: RecordId,
}

/// What [`Connector::apply`] answers: one result per write, in the order of the writes.
pub type WriteResults = Vec<Result<WriteOutcome, ConnectorError>>;

/// What `Connector::check` found: enough for an operator to see the connector works.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Probe {
    /// The connector's kind (`sqlite`, `csv`, …).
    pub kind: &'static str,
    /// Where it points, with no secrets (a file path, a base URL).
    pub target: String,
    /// How many records it holds, if it can say cheaply.
    pub records: Option<u64>,
    /// What it can do.
    pub capabilities: Capabilities,
}

/// The code that reads and writes records in one system.
///
/// Implementations are driven by one task at a time; a connector may hold a connection or
/// a browser session across calls. Every error is classified by
/// `ConnectorError::is_retryable`. A connector and the futures of its calls are `Send`, so
/// that a run can move between the threads of a service's runtime.
pub trait Connector: Send {
    /// What this connector can do.
    fn capabilities(&self) -> Capabilities;

    /// Connects and reports what the connector sees, without changing anything.
    ///
    /// # Errors
    ///
    /// Fails when the system cannot be reached or does not look as configured (a missing
    /// table or column, an unreadable file).
    fn check(&mut self, paths: &[String]) -> impl Future<Output = Result<Probe, ConnectorError>> + Send;

    /// Reads one page of records, starting at `token` (the first page when `None`).
    ///
    /// # Errors
    ///
    /// Fails when the system cannot be read; the engine retries retryable errors.
    fn read_page(
        &mut self,
        request: &ReadRequest,
        token: Option<&PageToken>,
    ) -> impl Future<Output = Result<Page, ConnectorError>> + Send;

    /// Reads the records matching `lookup`, in any order; records that do not exist are
    /// simply absent from the answer. Deleted (soft-deleted) records are returned with
    /// `deleted` set.
    ///
    /// # Errors
    ///
    /// Fails when the system cannot be read.
    fn lookup(
        &mut self,
        paths: &[String],
        lookup: &Lookup,
    ) -> impl Future<Output = Result<Vec<ConnectorRecord>, ConnectorError>> + Send;

    /// Applies writes, each on its own: one write's failure does not undo or stop another.
    /// The answer has one result per write, in order.
    ///
    /// # Errors
    ///
    /// The outer error means nothing was written (the system could not be reached at all).
    fn apply(
        &mut self,
        writes: &[Write],
    ) -> impl Future<Output = Result<WriteResults, ConnectorError>> + Send;

    /// How far past `since` this system's change feed holds nothing but this connector's own
    /// writes (since it was opened: the engine opens its connectors for each run) of the
    /// records `mine` names, each as it wrote it: the point a run that read the
    /// feed up to `since` and then made those writes may resume from, so that the next run does
    /// not read them back. A change of anything else, or a later change of one of them, ends
    /// the stretch. `None` when the stretch is empty or the connector cannot tell (the default,
    /// and what a connector without `Capabilities::sequences` answers).
    ///
    /// # Errors
    ///
    /// Fails when the feed cannot be read; the engine then leaves its cursor where it was.
    fn feed_past_own_writes(
        &mut self,
        since: &Sequence,
        mine: &HashSet<RecordId>,
    ) -> impl Future<Output = Result<Option<Sequence>, ConnectorError>> + Send {
        let _ = (since, mine);
        std::future::ready(Ok(None))
    }
}
