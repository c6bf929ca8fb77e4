//! `MemoryConnector`: a connector over records held in memory, for tests and simulations.
//!
//! A `MemorySystem` is the system itself, shared: a test edits it "as a user would" while the
//! engine holds a `MemoryConnector` on it. Faults can be queued to make the next calls fail,
//! or set to stay in force (rejected values, a target that stores text its own way), so that
//! a simulation can play every misbehaviour of a real system against the engine.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use fieldsync_model::RecordId;
use jiff::Timestamp;

use crate::{
    Capabilities, Connector, ConnectorError, ConnectorRecord, Lookup, Page, PageToken, Probe, ReadRequest,
    Sequence, Write, WriteOutcome, WriteResults,
};

const PAGE_SIZE: usize = 100;

/// A fault the next matching call of a `MemoryConnector` meets; the last three stay in force
/// until `MemorySystem::clear_faults`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemoryFault {
    /// The next read (page or lookup) fails as unavailable.
    ReadUnavailable,
    /// The next write fails as unavailable, without being applied.
    WriteUnavailable,
    /// The next write is applied, but its answer is lost (a timeout after the fact).
    WriteLostAnswer,
    /// The next write call is delivered twice: its updates and deletes are applied once more
    /// just before the connector's following call (a retried request whose first copy landed).
    DuplicateDelivery,
    /// On the next write call, this user edit lands first: between the engine's read and its
    /// write. It is skipped when the record no longer exists.
    EditBeforeWrite {
        /// The record.
        id: String,
        /// The path edited.
        path: String,
        /// The value the user sets.
        value: serde_json::Value,
    },
    /// The next page that would list this record leaves it out, once (a listing that shifted
    /// under its paging).
    OmitFromListing(String),
    /// Every write that would set this value is rejected permanently.
    RejectValue(serde_json::Value),
    /// Text the connector writes at this path is stored upper-cased (the target's own
    /// normalisation).
    StoreUpperCase(String),
    /// Text the connector writes at this path is stored cut to `length` characters.
    Truncate {
        /// The path.
        path: String,
        /// How many characters are kept.
        length: usize,
    },
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

/// A write the connector applied, as the system stored it.
#[derive(Clone, Debug, PartialEq)]
pub struct AppliedWrite {
    /// The write as the connector received it.
    pub write: Write,
    /// The record written (for a create, the id the system gave it).
    pub id: RecordId,
    /// The record before the write (`None` for a create).
    pub before: Option<MemoryRecord>,
    /// The record after the write (`None` for a delete).
    pub after: Option<MemoryRecord>,
    /// Whether this was the second copy of a write delivered twice (`DuplicateDelivery`).
    pub duplicate: bool,
}

/// A user edit that an `EditBeforeWrite` fault made.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultEdit {
    /// The record.
    pub id: RecordId,
    /// The path edited.
    pub path: String,
    /// The value set.
    pub value: serde_json::Value,
    /// The value the path held before (`Null` when none).
    pub previous: serde_json::Value,
    /// The time it was stamped with.
    pub at: Timestamp,
}

#[derive(Debug)]
struct State {
    records: BTreeMap<RecordId, MemoryRecord>,
    key_path: String,
    now: Timestamp,
    faults: VecDeque<MemoryFault>,
    standing: Vec<MemoryFault>,
    writes_applied: u64,
    /// `Some(prefix)`: creates get ids the system assigns, and link keys need not be unique.
    assigned_ids: Option<String>,
    next_id: u64,
    /// Writes delivered a second time before the next call.
    echo: Vec<Write>,
    applied: Vec<AppliedWrite>,
    fault_edits: Vec<FaultEdit>,
    /// Whether the system reads as a change feed (`MemorySystem::read_as_feed`).
    feed: bool,
    /// The system's change counter: every edit, write and removal takes the next number.
    sequence: u64,
    /// The number of each record's latest change, removed records included.
    changed: BTreeMap<RecordId, u64>,
    /// Records served by listings, for tests that count what a read cost.
    served: u64,
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
            standing: Vec::new(),
            writes_applied: 0,
            assigned_ids: None,
            next_id: 0,
            echo: Vec::new(),
            applied: Vec::new(),
            fault_edits: Vec::new(),
            feed: false,
            sequence: 0,
            changed: BTreeMap::new(),
            served: 0,
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
        MemoryConnector { system: self.clone(), own: HashMap::new() }
    }

    /// From now on the system gives records created through the connector ids of its own
    /// (`prefix` and a number) and, like a table without a unique constraint, lets two
    /// records hold the same link key: a create sent twice makes a duplicate.
    pub fn assign_ids(&self, prefix: &str) {
        self.state().assigned_ids = Some(prefix.to_string());
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
        user_edit(&mut state, id, path, value, now);
    }

    /// Removes a record for good, as a user would.
    pub fn remove(&self, id: &str) {
        let mut state = self.state();
        if state.records.remove(&RecordId::new(id)).is_some() {
            state.touch(&RecordId::new(id));
        }
    }

    /// From now on the system reads as a change feed does (CouchDB's `_changes`): its
    /// connector has `Capabilities::sequences` and no time cursor; a listing gives the system's
    /// change number as its `Page::sequence` (taken before a full listing starts), and a read
    /// since a sequence lists the records changed after it, and those removed as deleted
    /// records with no values.
    pub fn read_as_feed(&self) {
        self.state().feed = true;
    }

    /// How many records the listings have served so far.
    pub fn records_served(&self) -> u64 {
        self.state().served
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

    /// Queues a fault for the next matching call; `RejectValue`, `StoreUpperCase` and
    /// `Truncate` stay in force until `clear_faults`.
    pub fn inject(&self, fault: MemoryFault) {
        let mut state = self.state();
        match fault {
            MemoryFault::RejectValue(_) | MemoryFault::StoreUpperCase(_) | MemoryFault::Truncate { .. } => {
                state.standing.push(fault);
            }
            other => state.faults.push_back(other),
        }
    }

    /// Removes every queued and standing fault (a duplicate already on its way still lands).
    pub fn clear_faults(&self) {
        let mut state = self.state();
        state.faults.clear();
        state.standing.clear();
    }

    /// The faults queued for coming calls, in order (the standing ones aside).
    pub fn pending_faults(&self) -> Vec<MemoryFault> {
        self.state().faults.iter().cloned().collect()
    }

    /// How many writes the connector has applied to this system.
    pub fn writes_applied(&self) -> u64 {
        self.state().writes_applied
    }

    /// The writes applied since the last call, oldest first, as the system stored them.
    pub fn take_applied_writes(&self) -> Vec<AppliedWrite> {
        std::mem::take(&mut self.state().applied)
    }

    /// The user edits `EditBeforeWrite` faults made since the last call, oldest first.
    pub fn take_fault_edits(&self) -> Vec<FaultEdit> {
        std::mem::take(&mut self.state().fault_edits)
    }
}

fn user_edit(state: &mut State, id: &str, path: &str, value: serde_json::Value, now: Timestamp) {
    let key_path = state.key_path.clone();
    let record = state.records.entry(RecordId::new(id)).or_insert_with(|| MemoryRecord {
        fields: BTreeMap::from([(key_path, serde_json::Value::String(id.to_string()))]),
        modified: now,
        deleted: false,
    });
    record.fields.insert(path.to_string(), value);
    record.modified = now;
    state.touch(&RecordId::new(id));
}

impl State {
    /// Gives `id`'s latest change the next number.
    fn touch(&mut self, id: &RecordId) {
        self.sequence += 1;
        self.changed.insert(id.clone(), self.sequence);
    }
}

/// A page of a system read as a change feed: in id order, the records (and, since a sequence,
/// the removals) changed after the request's sequence, or every record on a full read. The
/// token carries the change number the listing started at, which every page gives as its
/// sequence: whatever changes during the listing is read again by the next.
fn feed_page(state: &mut State, request: &ReadRequest, token: Option<&PageToken>) -> Page {
    let (started, after) = match token.and_then(|token| token.0.split_once(' ')) {
        Some((started, after)) => (started.parse().unwrap_or(0), Some(RecordId::new(after))),
        None => (state.sequence, None),
    };
    let since: Option<u64> = request.since_sequence().and_then(|sequence| sequence.0.parse().ok());
    let mut records = Vec::new();
    let mut next = None;
    let candidates = state
        .changed
        .iter()
        .filter(|(id, _)| after.as_ref().is_none_or(|after| *id > after))
        .filter(|(_, changed)| since.is_none_or(|since| **changed > since));
    for (id, _) in candidates {
        if records.len() == PAGE_SIZE {
            next =
                records.last().map(|record: &ConnectorRecord| PageToken(format!("{started} {}", record.id)));
            break;
        }
        match state.records.get(id) {
            Some(record) => records.push(to_connector_record(id, record, &request.paths)),
            None if since.is_some() => records.push(ConnectorRecord {
                id: id.clone(),
                values: vec![serde_json::Value::Null; request.paths.len()],
                modified: None,
                deleted: true,
            }),
            None => {}
        }
    }
    state.served += records.len() as u64;
    Page { records, next, sequence: Some(Sequence(started.to_string())) }
}

fn take_fault(state: &mut State, wanted: impl Fn(&MemoryFault) -> bool) -> Option<MemoryFault> {
    let position = state.faults.iter().position(wanted)?;
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

/// The value the system stores when the connector writes `value` at `path`.
fn stored(state: &State, path: &str, value: &serde_json::Value) -> serde_json::Value {
    let mut value = value.clone();
    for fault in &state.standing {
        if let serde_json::Value::String(text) = &value {
            match fault {
                MemoryFault::StoreUpperCase(at) if at == path => {
                    value = serde_json::Value::String(text.to_uppercase());
                }
                MemoryFault::Truncate { path: at, length } if at == path => {
                    value = serde_json::Value::String(text.chars().take(*length).collect());
                }
                _ => {}
            }
        }
    }
    value
}

/// The connector over a `MemorySystem`.
#[derive(Clone, Debug)]
pub struct MemoryConnector {
    system: MemorySystem,
    /// The change number of each record's latest write through this connector, for
    /// `feed_past_own_writes`.
    own: HashMap<RecordId, u64>,
}

impl MemoryConnector {
    fn apply_one(state: &mut State, write: &Write, duplicate: bool) -> Result<WriteOutcome, ConnectorError> {
        let fields = match write {
            Write::Update { fields, .. } | Write::Create { fields } => fields.as_slice(),
            Write::Delete { .. } => &[],
        };
        let rejected =
            |value: &serde_json::Value| state.standing.contains(&MemoryFault::RejectValue(value.clone()));
        if let Some(field) = fields.iter().find(|field| rejected(&field.value)) {
            return Err(ConnectorError::Rejected {
                message: format!("value {} is not allowed at {}", field.value, field.path),
            });
        }
        let now = state.now;
        let (id, before) = match write {
            Write::Update { id, fields } => {
                let values: Vec<serde_json::Value> =
                    fields.iter().map(|field| stored(state, &field.path, &field.value)).collect();
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
                let before = record.clone();
                for (field, value) in fields.iter().zip(values) {
                    record.fields.insert(field.path.clone(), value);
                }
                record.modified = now;
                (id.clone(), Some(before))
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
                let id = match &state.assigned_ids {
                    Some(prefix) => {
                        state.next_id += 1;
                        RecordId::new(format!("{prefix}{}", state.next_id))
                    }
                    None => {
                        let id = RecordId::new(key);
                        if state.records.get(&id).is_some_and(|record| !record.deleted) {
                            return Err(ConnectorError::AlreadyExists { id });
                        }
                        id
                    }
                };
                let record = MemoryRecord {
                    fields: fields
                        .iter()
                        .map(|field| (field.path.clone(), stored(state, &field.path, &field.value)))
                        .collect(),
                    modified: now,
                    deleted: false,
                };
                state.records.insert(id.clone(), record);
                (id, None)
            }
            Write::Delete { id } => {
                let before =
                    state.records.remove(id).ok_or_else(|| ConnectorError::NotFound { id: id.clone() })?;
                (id.clone(), Some(before))
            }
        };
        state.writes_applied += 1;
        state.touch(&id);
        let after = state.records.get(&id).cloned();
        state.applied.push(AppliedWrite { write: write.clone(), id: id.clone(), before, after, duplicate });
        Ok(WriteOutcome { id })
    }

    /// The system's state, after any duplicate still on its way has landed.
    fn state(&self) -> MutexGuard<'_, State> {
        let mut state = self.system.state();
        for write in std::mem::take(&mut state.echo) {
            // A duplicate's answer goes nowhere; most are refused (the target moved).
            let _ = Self::apply_one(&mut state, &write, true);
        }
        state
    }
}

impl Connector for MemoryConnector {
    fn capabilities(&self) -> Capabilities {
        if self.system.state().feed {
            Capabilities { incremental: false, sequences: true, ..Capabilities::table(false) }
        } else {
            Capabilities::table(true)
        }
    }

    async fn check(&mut self, _paths: &[String]) -> Result<Probe, ConnectorError> {
        // Counted before `capabilities` takes the system's lock again.
        let records = self.state().records.len() as u64;
        Ok(Probe {
            kind: "memory",
            target: "memory".into(),
            records: Some(records),
            capabilities: self.capabilities(),
        })
    }

    async fn read_page(
        &mut self,
        request: &ReadRequest,
        token: Option<&PageToken>,
    ) -> Result<Page, ConnectorError> {
        let mut state = self.state();
        if take_fault(&mut state, |fault| *fault == MemoryFault::ReadUnavailable).is_some() {
            return Err(unavailable());
        }
        if state.feed {
            return Ok(feed_page(&mut state, request, token));
        }
        let start = token.map(|token| RecordId::new(token.0.as_str()));
        let mut records = Vec::new();
        let mut omitted = Vec::new();
        let mut last = None;
        let mut next = None;
        let range = state.records.iter().filter(|(id, _)| start.as_ref().is_none_or(|start| *id > start));
        for (id, record) in range {
            if records.len() + omitted.len() == PAGE_SIZE {
                next = last.map(PageToken);
                break;
            }
            last = Some(id.to_string());
            if request.since_time().is_none_or(|since| record.modified >= since) {
                let omit = state
                    .faults
                    .iter()
                    .any(|fault| matches!(fault, MemoryFault::OmitFromListing(omit) if omit == id.as_str()));
                if omit {
                    omitted.push(id.to_string());
                } else {
                    records.push(to_connector_record(id, record, &request.paths));
                }
            }
        }
        for id in omitted {
            take_fault(
                &mut state,
                |fault| matches!(fault, MemoryFault::OmitFromListing(omit) if *omit == id),
            );
        }
        state.served += records.len() as u64;
        Ok(Page::new(records, next))
    }

    async fn lookup(
        &mut self,
        paths: &[String],
        lookup: &Lookup,
    ) -> Result<Vec<ConnectorRecord>, ConnectorError> {
        let mut state = self.state();
        if take_fault(&mut state, |fault| *fault == MemoryFault::ReadUnavailable).is_some() {
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

    async fn apply(&mut self, writes: &[Write]) -> Result<WriteResults, ConnectorError> {
        let mut state = self.state();
        if let Some(MemoryFault::EditBeforeWrite { id, path, value }) =
            take_fault(&mut state, |fault| matches!(fault, MemoryFault::EditBeforeWrite { .. }))
        {
            let record_id = RecordId::new(id.as_str());
            if state.records.get(&record_id).is_some_and(|record| !record.deleted) {
                let now = state.now;
                let previous =
                    state.records.get(&record_id).and_then(|record| record.fields.get(&path).cloned());
                user_edit(&mut state, &id, &path, value.clone(), now);
                let previous = previous.unwrap_or(serde_json::Value::Null);
                state.fault_edits.push(FaultEdit { id: record_id, path, value, previous, at: now });
            }
        }
        if take_fault(&mut state, |fault| *fault == MemoryFault::WriteUnavailable).is_some() {
            return Err(unavailable());
        }
        let mut results = Vec::with_capacity(writes.len());
        let mut own = Vec::new();
        for write in writes {
            let result = Self::apply_one(&mut state, write, false);
            if let Ok(outcome) = &result {
                own.push((outcome.id.clone(), state.sequence));
            }
            results.push(result);
        }
        if take_fault(&mut state, |fault| *fault == MemoryFault::DuplicateDelivery).is_some() {
            state.echo.extend(writes.iter().filter(|write| !matches!(write, Write::Create { .. })).cloned());
        }
        let lost = take_fault(&mut state, |fault| *fault == MemoryFault::WriteLostAnswer).is_some();
        drop(state);
        self.own.extend(own);
        if lost {
            return Err(unavailable());
        }
        Ok(results)
    }

    async fn feed_past_own_writes(
        &mut self,
        since: &Sequence,
        mine: &HashSet<RecordId>,
    ) -> Result<Option<Sequence>, ConnectorError> {
        let state = self.state();
        let Ok(since) = since.0.parse::<u64>() else { return Ok(None) };
        if !state.feed {
            return Ok(None);
        }
        let mut changes: Vec<(u64, &RecordId)> = state
            .changed
            .iter()
            .filter(|(_, changed)| **changed > since)
            .map(|(id, changed)| (*changed, id))
            .collect();
        changes.sort_unstable();
        let past = changes
            .iter()
            .take_while(|(changed, id)| mine.contains(*id) && self.own.get(*id) == Some(changed))
            .last()
            .map(|(changed, _)| Sequence(changed.to_string()));
        Ok(past)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::FieldWrite;

    fn system() -> MemorySystem {
        let system = MemorySystem::new("key");
        system.set_now(Timestamp::from_second(1_700_000_000).expect("a valid instant"));
        system.edit("a", "name", json!("Ann"));
        system.edit("b", "name", json!("Bob"));
        system
    }

    fn update(id: &str, value: &str, expected: &str) -> Write {
        Write::Update {
            id: RecordId::new(id),
            fields: vec![FieldWrite {
                path: "name".into(),
                value: json!(value),
                expected: Some(json!(expected)),
            }],
        }
    }

    fn create(key: &str) -> Write {
        Write::Create {
            fields: vec![
                FieldWrite { path: "key".into(), value: json!(key), expected: None },
                FieldWrite { path: "name".into(), value: json!("new"), expected: None },
            ],
        }
    }

    fn listed(connector: &mut MemoryConnector) -> Vec<String> {
        let request = ReadRequest { paths: vec!["name".into()], since: None };
        let page = ready(connector.read_page(&request, None)).expect("a page");
        page.records.into_iter().map(|record| record.id.to_string()).collect()
    }

    /// The connector's futures never wait, so one poll completes them.
    fn ready<F: std::future::Future>(future: F) -> F::Output {
        let mut future = std::pin::pin!(future);
        let mut context = std::task::Context::from_waker(std::task::Waker::noop());
        match future.as_mut().poll(&mut context) {
            std::task::Poll::Ready(output) => output,
            std::task::Poll::Pending => unreachable!("memory connector futures are ready at once"),
        }
    }

    #[test]
    fn an_edit_before_the_write_makes_a_conditional_write_fail_as_moved() {
        let system = system();
        system.inject(MemoryFault::EditBeforeWrite {
            id: "a".into(),
            path: "name".into(),
            value: json!("Anna"),
        });
        let results = ready(system.connector().apply(&[update("a", "Annie", "Ann")])).unwrap();
        assert!(matches!(results[0], Err(ConnectorError::TargetMoved { .. })));
        assert_eq!(system.value("a", "name"), json!("Anna"));
        let edits = system.take_fault_edits();
        assert_eq!(edits.len(), 1);
        assert_eq!(edits[0].value, json!("Anna"));
        assert!(system.take_applied_writes().is_empty());
    }

    #[test]
    fn an_omitted_record_is_left_out_of_one_listing() {
        let system = system();
        let mut connector = system.connector();
        system.inject(MemoryFault::OmitFromListing("a".into()));
        assert_eq!(listed(&mut connector), ["b"]);
        assert_eq!(listed(&mut connector), ["a", "b"]);
    }

    #[test]
    fn a_duplicate_lands_before_the_next_call() {
        let system = system();
        let mut connector = system.connector();
        system.inject(MemoryFault::DuplicateDelivery);
        ready(connector.apply(&[update("a", "Annie", "Ann")])).unwrap().remove(0).unwrap();
        // A user puts the old value back; the late copy of the write lands again.
        system.edit("a", "name", json!("Ann"));
        assert_eq!(system.take_applied_writes().len(), 1);
        listed(&mut connector);
        assert_eq!(system.value("a", "name"), json!("Annie"));
        assert_eq!(system.take_applied_writes().len(), 1);
        assert_eq!(system.writes_applied(), 2);
    }

    #[test]
    fn a_target_stores_text_its_own_way_until_faults_are_cleared() {
        let system = system();
        let mut connector = system.connector();
        system.inject(MemoryFault::StoreUpperCase("name".into()));
        ready(connector.apply(&[update("a", "Annie", "Ann")])).unwrap().remove(0).unwrap();
        assert_eq!(system.value("a", "name"), json!("ANNIE"));
        system.clear_faults();
        system.inject(MemoryFault::Truncate { path: "name".into(), length: 2 });
        ready(connector.apply(&[update("b", "Bobby", "Bob")])).unwrap().remove(0).unwrap();
        assert_eq!(system.value("b", "name"), json!("Bo"));
        let applied = system.take_applied_writes();
        assert_eq!(
            applied[1].before.as_ref().map(|record| record.fields["name"].clone()),
            Some(json!("Bob"))
        );
        assert_eq!(applied[1].after.as_ref().map(|record| record.fields["name"].clone()), Some(json!("Bo")));
    }

    #[test]
    fn assigned_ids_let_a_create_sent_twice_make_a_duplicate() {
        let system = system();
        let mut connector = system.connector();
        assert!(matches!(
            ready(connector.apply(&[create("a")])).unwrap()[0],
            Err(ConnectorError::AlreadyExists { .. })
        ));
        system.assign_ids("R");
        let first = ready(connector.apply(&[create("c")])).unwrap().remove(0).unwrap();
        let second = ready(connector.apply(&[create("c")])).unwrap().remove(0).unwrap();
        assert_eq!((first.id.as_str(), second.id.as_str()), ("R1", "R2"));
        let lookup = Lookup::Key { path: "key".into(), values: vec!["c".into()] };
        assert_eq!(ready(connector.lookup(&["name".into()], &lookup)).unwrap().len(), 2);
    }
}
