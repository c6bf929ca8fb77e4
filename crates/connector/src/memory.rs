//! `MemoryConnector`: a connector over records held in memory, for tests and simulations.
//!
//! A `MemorySystem` is the system itself, shared: a test edits it "as a user would" while the
//! engine holds a `MemoryConnector` on it. Faults can be queued to make the next calls fail.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use fieldsync_model::RecordId;
use jiff::Timestamp;

use crate::{
    Capabilities, Connector, ConnectorError, ConnectorRecord, Lookup, Page, PageToken, Probe, ReadRequest,
    Write, WriteOutcome,
};

const PAGE_SIZE: usize = 100;

/// A fault the next matching call of a `MemoryConnector` meets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemoryFault {
    /// The next read (page or lookup) fails as unavailable.
    ReadUnavailable,
    /// The next write fails as unavailable, without being applied.
    WriteUnavailable,
    /// The next write is applied, but its answer is lost (a timeout after the fact).
    WriteLostAnswer,
    /// Every write that would set this value is rejected permanently.
    RejectValue(serde_json::Value),
}

/// One record held by a `MemorySystem`.
#[derive(Clone, Debug, PartialEq)]
pub struct MemoryRecord {
    /// Values by path.
    pub fields: BTreeMap<String, serde_json::Value>,
    /// When it was last modified.
    pub modified: Timestamp,
    /// Whether it is marked deleted.
    pub deleted: bool,
}

#[derive(Debug)]
struct State {
    records: BTreeMap<RecordId, MemoryRecord>,
    key_path: String,
    now: Timestamp,
    faults: VecDeque<MemoryFault>,
    rejected_values: Vec<serde_json::Value>,
    writes_applied: u64,
}

/// A system of records in memory, shared between the test that plays its users and the
/// connector the engine drives.
#[derive(Clone, Debug)]
pub struct MemorySystem {
    state: Arc<Mutex<State>>,
}

impl MemorySystem {
    /// An empty system whose records are identified by their value at `key_path`.
    pub fn new(key_path: &str) -> Self {
        let state = State {
            records: BTreeMap::new(),
            key_path: key_path.to_string(),
            now: Timestamp::UNIX_EPOCH,
            faults: VecDeque::new(),
            rejected_values: Vec::new(),
            writes_applied: 0,
        };
        Self { state: Arc::new(Mutex::new(state)) }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while the lock is held can only come from a failing test; its data is
        // still the best account of the system.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A connector on this system.
    pub fn connector(&self) -> MemoryConnector {
        MemoryConnector { system: self.clone() }
    }

    /// Sets the system's clock, which stamps every later edit and write.
    pub fn set_now(&self, now: Timestamp) {
        self.state().now = now;
    }

    /// The system's clock.
    pub fn now(&self) -> Timestamp {
        self.state().now
    }

    /// Sets one value of a record as a user would, creating the record if needed, and stamps
    /// it with the system's clock.
    pub fn edit(&self, id: &str, path: &str, value: serde_json::Value) {
        let mut state = self.state();
        let now = state.now;
        let key_path = state.key_path.clone();
        let record = state.records.entry(RecordId::new(id)).or_insert_with(|| MemoryRecord {
            fields: BTreeMap::from([(key_path, serde_json::Value::String(id.to_string()))]),
            modified: now,
            deleted: false,
        });
        record.fields.insert(path.to_string(), value);
        record.modified = now;
    }

    /// Removes a record for good, as a user would.
    pub fn remove(&self, id: &str) {
        self.state().records.remove(&RecordId::new(id));
    }

    /// A record, if it exists.
    pub fn record(&self, id: &str) -> Option<MemoryRecord> {
        self.state().records.get(&RecordId::new(id)).cloned()
    }

    /// All records by id.
    pub fn records(&self) -> BTreeMap<RecordId, MemoryRecord> {
        self.state().records.clone()
    }

    /// The value of one record at one path (`Null` when absent).
    pub fn value(&self, id: &str, path: &str) -> serde_json::Value {
        self.record(id).and_then(|record| record.fields.get(path).cloned()).unwrap_or(serde_json::Value::Null)
    }

    /// Queues a fault for the next matching call; `RejectValue` stays in force.
    pub fn inject(&self, fault: MemoryFault) {
        let mut state = self.state();
        match fault {
            MemoryFault::RejectValue(value) => state.rejected_values.push(value),
            other => state.faults.push_back(other),
        }
    }

    /// How many writes the connector has applied to this system.
    pub fn writes_applied(&self) -> u64 {
        self.state().writes_applied
    }
}

fn take_fault(state: &mut State, wanted: &[MemoryFault]) -> Option<MemoryFault> {
    let position = state.faults.iter().position(|fault| wanted.contains(fault))?;
    state.faults.remove(position)
}

fn unavailable() -> ConnectorError {
    ConnectorError::Unavailable {
        what: "memory system".into(),
        message: "injected fault".into(),
        retry_after: None,
    }
}

fn to_connector_record(id: &RecordId, record: &MemoryRecord, paths: &[String]) -> ConnectorRecord {
    ConnectorRecord {
        id: id.clone(),
        values: paths
            .iter()
            .map(|path| record.fields.get(path).cloned().unwrap_or(serde_json::Value::Null))
            .collect(),
        modified: Some(record.modified),
        deleted: record.deleted,
    }
}

fn key_text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// The connector over a `MemorySystem`.
#[derive(Clone, Debug)]
pub struct MemoryConnector {
    system: MemorySystem,
}

impl MemoryConnector {
    fn apply_one(state: &mut State, write: &Write) -> Result<WriteOutcome, ConnectorError> {
        let fields = match write {
            Write::Update { fields, .. } | Write::Create { fields } => fields.as_slice(),
            Write::Delete { .. } => &[],
        };
        if let Some(field) = fields.iter().find(|field| state.rejected_values.contains(&field.value)) {
            return Err(ConnectorError::Rejected {
                message: format!("value {} is not allowed at {}", field.value, field.path),
            });
        }
        let now = state.now;
        match write {
            Write::Update { id, fields } => {
                let record = state
                    .records
                    .get_mut(id)
                    .filter(|record| !record.deleted)
                    .ok_or_else(|| ConnectorError::NotFound { id: id.clone() })?;
                for field in fields {
                    let current = record.fields.get(&field.path).unwrap_or(&serde_json::Value::Null);
                    if let Some(expected) = &field.expected
                        && expected != current
                    {
                        return Err(ConnectorError::TargetMoved { id: id.clone() });
                    }
                }
                for field in fields {
                    record.fields.insert(field.path.clone(), field.value.clone());
                }
                record.modified = now;
                Ok(WriteOutcome { id: id.clone() })
            }
            Write::Create { fields } => {
                let key_path = state.key_path.clone();
                let key = fields
                    .iter()
                    .find(|field| field.path == key_path)
                    .map(|field| key_text(&field.value))
                    .ok_or_else(|| ConnectorError::Rejected {
                        message: format!("a new record needs a value at {key_path}"),
                    })?;
                let id = RecordId::new(key);
                if state.records.get(&id).is_some_and(|record| !record.deleted) {
                    return Err(ConnectorError::AlreadyExists { id });
                }
                let record = MemoryRecord {
                    fields: fields.iter().map(|field| (field.path.clone(), field.value.clone())).collect(),
                    modified: now,
                    deleted: false,
                };
                state.records.insert(id.clone(), record);
                Ok(WriteOutcome { id })
            }
            Write::Delete { id } => {
                state.records.remove(id).ok_or_else(|| ConnectorError::NotFound { id: id.clone() })?;
                Ok(WriteOutcome { id: id.clone() })
            }
        }
    }
}

impl Connector for MemoryConnector {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            incremental: true,
            lookup_by_key: true,
            conditional_writes: true,
            create: true,
            delete: true,
        }
    }

    async fn check(&mut self, _paths: &[String]) -> Result<Probe, ConnectorError> {
        Ok(Probe {
            kind: "memory",
            target: "memory".into(),
            records: Some(self.system.state().records.len() as u64),
            capabilities: self.capabilities(),
        })
    }

    async fn read_page(
        &mut self,
        request: &ReadRequest,
        token: Option<&PageToken>,
    ) -> Result<Page, ConnectorError> {
        let mut state = self.system.state();
        if take_fault(&mut state, &[MemoryFault::ReadUnavailable]).is_some() {
            return Err(unavailable());
        }
        let start = token.map(|token| RecordId::new(token.0.as_str()));
        let mut records = Vec::new();
        let mut last = None;
        let range = state.records.iter().filter(|(id, _)| start.as_ref().is_none_or(|start| *id > start));
        for (id, record) in range {
            if records.len() == PAGE_SIZE {
                return Ok(Page { records, next: last.map(PageToken) });
            }
            last = Some(id.to_string());
            if request.since.is_none_or(|since| record.modified >= since) {
                records.push(to_connector_record(id, record, &request.paths));
            }
        }
        Ok(Page { records, next: None })
    }

    async fn lookup(
        &mut self,
        paths: &[String],
        lookup: &Lookup,
    ) -> Result<Vec<ConnectorRecord>, ConnectorError> {
        let mut state = self.system.state();
        if take_fault(&mut state, &[MemoryFault::ReadUnavailable]).is_some() {
            return Err(unavailable());
        }
        let found = match lookup {
            Lookup::Ids(ids) => ids
                .iter()
                .filter_map(|id| state.records.get(id).map(|record| to_connector_record(id, record, paths)))
                .collect(),
            Lookup::Key { path, values } => state
                .records
                .iter()
                .filter(|(_, record)| {
                    record.fields.get(path).is_some_and(|value| values.contains(&key_text(value)))
                })
                .map(|(id, record)| to_connector_record(id, record, paths))
                .collect(),
        };
        Ok(found)
    }

    async fn apply(
        &mut self,
        writes: &[Write],
    ) -> Result<Vec<Result<WriteOutcome, ConnectorError>>, ConnectorError> {
        let mut state = self.system.state();
        if take_fault(&mut state, &[MemoryFault::WriteUnavailable]).is_some() {
            return Err(unavailable());
        }
        let mut results = Vec::with_capacity(writes.len());
        for write in writes {
            let result = Self::apply_one(&mut state, write);
            if result.is_ok() {
                state.writes_applied += 1;
            }
            results.push(result);
        }
        if take_fault(&mut state, &[MemoryFault::WriteLostAnswer]).is_some() {
            return Err(unavailable());
        }
        Ok(results)
    }
}
