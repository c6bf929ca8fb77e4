//! Delivery: send due outbox entries to their side in batches, verify each write by reading
//! it back, and close each verified entry in the same transaction that moves its baseline.
//! Transient failures wait out an exponential backoff with jitter; permanent ones become
//! dead entries carrying the target's message; a target that moved is planned again.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use fieldsync_connector::{
    Connector, ConnectorError, ConnectorRecord, FieldWrite, Lookup, Sequence, Write, WriteResults,
};
use fieldsync_model::{Reading, RecordId, Side, Value, digest_raw, digest_values};
use fieldsync_store::{
    AuditEntry, AuditEvent, AuditValues, Baseline, BaselineWrite, BatchClose, EntryOutcome, Lease,
    LinkLayout, Operation, Origin, OutboxEntry, OutboxStatus, SeenDigest, StateStore,
};

use crate::blocking::blocking;
use crate::plan::Payload;
use crate::report::{FailureOutcome, RunReport, WriteFailure};
use crate::run::{LinkRun, RunContext};
use crate::spec::{LinkSpec, SidePair};
use crate::{Clock, EngineError, Progress};

/// How many entries one batch sends.
const BATCH: usize = 500;

/// How a batch's attempts ended: each entry's outcome, and the send that marked the entries
/// that went out (their attempts are counted as they are closed).
struct Attempts {
    outcomes: Vec<Attempt>,
    send: Option<fieldsync_store::SendId>,
    sent: Vec<bool>,
}

/// One side's batch of due entries, with their payloads read.
struct Batch<'batch> {
    side: Side,
    entries: &'batch [&'batch OutboxEntry],
    payloads: &'batch [Result<Payload, String>],
}

/// What closing batches tells: the report, the jitter's randomness, each entry's latest
/// failure in this run, and the records of each side its writes left clean.
struct Closing<'run> {
    report: &'run mut RunReport,
    rng: &'run mut fastrand::Rng,
    final_outcomes: &'run mut HashMap<i64, WriteFailure>,
    own: &'run mut SidePair<OwnWrites>,
}

/// The records of one side that this run's verified writes left clean: read back holding
/// exactly the baseline they moved (or deleted), so that a change feed's row of that write
/// tells the next run nothing it does not know. A record written again and left otherwise (an
/// edit of another field came in between) is not clean, whatever an earlier write left.
#[derive(Default)]
struct OwnWrites {
    clean: HashSet<RecordId>,
    dirty: HashSet<RecordId>,
}

impl OwnWrites {
    fn add(&mut self, id: RecordId, clean: bool) {
        if clean && !self.dirty.contains(&id) {
            self.clean.insert(id);
        } else {
            self.clean.remove(&id);
            self.dirty.insert(id);
        }
    }
}

/// How one entry's attempt ended.
enum Attempt {
    /// Written and read back as intended, with the raw values of the tracked fields read back
    /// (none for a delete).
    Verified { id: RecordId, raw: Option<Vec<serde_json::Value>> },
    /// Failed; maybe retryable.
    Failed(ConnectorError),
    /// Written, but the target holds something else.
    Mismatch(String),
    /// The payload cannot be read (written by a newer fieldsync, or damaged).
    Damaged(String),
}

fn to_write(entry: &OutboxEntry, payload: &Payload) -> Result<Write, String> {
    let fields = || {
        payload
            .fields
            .iter()
            .map(|field| FieldWrite {
                path: field.path.clone(),
                value: field.raw.clone(),
                expected: field.expected.clone(),
            })
            .collect()
    };
    match entry.write.operation {
        Operation::Update => {
            let id = entry.write.record_id.clone().ok_or("an update without a record id")?;
            Ok(Write::Update { id, fields: fields() })
        }
        Operation::Create => Ok(Write::Create { fields: fields() }),
        Operation::Delete => {
            Ok(Write::Delete { id: entry.write.record_id.clone().ok_or("a delete without a record id")? })
        }
    }
}

fn raw_equal(written: &serde_json::Value, read: &serde_json::Value) -> bool {
    let text = |value: &serde_json::Value| match value {
        serde_json::Value::String(text) => text.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    };
    written == read || text(written) == text(read)
}

/// Compares what was written with what the target holds now.
fn verify(
    spec: &LinkSpec,
    side: Side,
    payload: &Payload,
    paths: &[String],
    record: &ConnectorRecord,
) -> Result<(), String> {
    for field in &payload.fields {
        let Some(position) = paths.iter().position(|path| *path == field.path) else { continue };
        let read = &record.values[position];
        let matches = match (&field.name, &field.value) {
            (Some(name), Some(value)) => match spec.fields.iter().find(|spec_field| spec_field.name == *name)
            {
                // Reading back exactly what was written needs no normalising.
                Some(spec_field) => {
                    read == &field.raw
                        || spec_field.normalisers.get(side).normalise(read).as_ref() == Ok(value)
                }
                None => true,
            },
            _ => raw_equal(&field.raw, read),
        };
        if !matches {
            return Err(format!("wrote {} at {}, read back {}", field.raw, field.path, read));
        }
    }
    Ok(())
}

/// Delivers every due outbox entry of the link, waiting for retries due within the link's
/// `wait_in_run`.
pub(crate) async fn deliver<C: Connector, K: Clock, P: Progress, S: StateStore>(
    run: &RunContext<'_, K, P>,
    lease: &Lease,
    connectors: &mut SidePair<C>,
    store: &mut S,
    report: &mut RunReport,
    rng: &mut fastrand::Rng,
) -> Result<(), EngineError> {
    let LinkRun { spec, clock, progress, cancel, .. } = run.given;
    let link = spec.name.as_str();
    let mut final_outcomes: HashMap<i64, WriteFailure> = HashMap::new();
    let mut own = SidePair::new(OwnWrites::default(), OwnWrites::default());
    progress.phase("writing", None);
    // However often entries fail and fall due again, the run waits for them only until this.
    let deadline = clock.now() + spec.retry.wait_in_run;
    // Pages through the due entries by id; each pass ends with a new one from the start, which
    // finds the entries whose retry fell due since.
    let mut after = 0;
    // Cancelled, the run stops between two batches: what was closed stays closed, the rest
    // waits for the next run.
    while !cancel.is_cancelled() {
        let now = clock.now();
        let due = blocking(|| store.due_outbox(link, now, after, BATCH))?;
        if due.is_empty() {
            if after > 0 {
                after = 0;
                continue;
            }
            let Some(next) = blocking(|| store.next_due(link))? else { break };
            let wait = next.duration_since(now).unsigned_abs();
            if next > now && next <= deadline {
                tokio::select! {
                    () = clock.sleep(wait + Duration::from_millis(1)) => {}
                    () = cancel.cancelled() => {}
                }
                continue;
            }
            break;
        }
        after = due.last().map_or(after, |entry| entry.id);
        for side in Side::BOTH {
            let entries: Vec<&OutboxEntry> = due.iter().filter(|entry| entry.write.side == side).collect();
            if entries.is_empty() {
                continue;
            }
            let payloads: Vec<Result<Payload, String>> =
                entries.iter().map(|entry| Payload::from_text(&entry.write.payload)).collect();
            let batch = Batch { side, entries: &entries, payloads: &payloads };
            let outcomes = attempt_batch(run, lease, &batch, connectors.get_mut(side), store).await?;
            let mut closing = Closing {
                report: &mut *report,
                rng: &mut *rng,
                final_outcomes: &mut final_outcomes,
                own: &mut own,
            };
            close_batch(run, lease, &batch, store, outcomes, &mut closing)?;
            progress.advance(entries.len() as u64);
        }
    }
    for side in Side::BOTH {
        past_own_writes(run, lease, side, connectors.get_mut(side), store, &own.get(side).clean).await?;
    }
    report.failures = final_outcomes.into_values().collect();
    report.failures.sort_by_key(|failure| failure.outbox_id);
    report.stats.writes_retrying =
        report.failures.iter().filter(|failure| failure.outcome == FailureOutcome::Retrying).count() as u64;
    run.go_on()
}

/// Moves `side`'s change-feed cursor past this run's own writes, where its feed holds nothing
/// after the stored sequence but the `clean` records as written: otherwise the next run would
/// read back every record this one wrote (all of them, after a first sync). A connector that
/// cannot tell, or a feed that cannot be read now, leaves the cursor where it was: the next
/// run reads those writes back and finds them known.
async fn past_own_writes<C: Connector, K, P, S: StateStore>(
    run: &RunContext<'_, K, P>,
    lease: &Lease,
    side: Side,
    connector: &mut C,
    store: &mut S,
    clean: &HashSet<RecordId>,
) -> Result<(), EngineError> {
    let link = run.given.spec.name.as_str();
    if clean.is_empty() || !connector.capabilities().sequences {
        return Ok(());
    }
    let Some(from) = blocking(|| store.cursor(link, side))?.sequence else { return Ok(()) };
    match connector.feed_past_own_writes(&Sequence(from.clone()), clean).await {
        Ok(Some(to)) => {
            let moved = blocking(|| store.move_sequence(lease, side, &from, &to.0))?;
            tracing::info!(link, %side, from, to = to.0, moved, "Change feed cursor past fieldsync's own writes.");
        }
        Ok(None) => {}
        Err(error) => {
            tracing::warn!(link, %side, error = %error, "Could not read the change feed past fieldsync's own writes; the next run reads them back.");
        }
    }
    Ok(())
}

/// Sends one batch of one side: looks up uncertain creates and reads uncertain updates and
/// deletes first, re-reads targets without conditional writes, marks the batch as being sent,
/// applies the writes and reads them back.
async fn attempt_batch<C: Connector, K: Clock, P, S: StateStore>(
    run: &RunContext<'_, K, P>,
    lease: &Lease,
    batch: &Batch<'_>,
    connector: &mut C,
    store: &mut S,
) -> Result<Attempts, EngineError> {
    let LinkRun { spec, clock, .. } = run.given;
    let Batch { side, entries, payloads } = *batch;
    let capabilities = connector.capabilities();
    let mut paths = spec.read_paths(side);
    let mut outcomes: Vec<Option<Attempt>> = Vec::with_capacity(entries.len());
    for payload in payloads {
        match payload {
            Ok(payload) => {
                for field in &payload.fields {
                    if !paths.contains(&field.path) {
                        paths.push(field.path.clone());
                    }
                }
                outcomes.push(None);
            }
            Err(message) => outcomes.push(Some(Attempt::Damaged(message.clone()))),
        }
    }
    let payloads: Vec<Option<&Payload>> = payloads.iter().map(|payload| payload.as_ref().ok()).collect();

    // A create that may already have happened (its earlier attempt never reported back) is
    // looked up by its link key first, so that a crash can never make a duplicate.
    let uncertain_creates: Vec<usize> = (0..entries.len())
        .filter(|&index| {
            outcomes[index].is_none()
                && entries[index].write.operation == Operation::Create
                && entries[index].attempts > 0
        })
        .collect();
    if !uncertain_creates.is_empty() && capabilities.lookup_by_key {
        let values =
            uncertain_creates.iter().map(|&index| entries[index].write.key.as_str().to_string()).collect();
        let lookup = Lookup::Key { path: spec.key.get(side).clone(), values };
        let found = match connector.lookup(&paths, &lookup).await {
            Ok(found) => found,
            Err(error) => {
                // Not knowing whether the earlier attempt landed, sending it again could make
                // a duplicate: try again later.
                let what = "the target (looking for an earlier create)";
                fail_unavailable(&mut outcomes, &uncertain_creates, what, &error);
                Vec::new()
            }
        };
        for record in found.into_iter().filter(|record| !record.deleted) {
            let key = record.values.get(spec.fields.len()).and_then(crate::detect::link_key);
            if let Some(&index) =
                uncertain_creates.iter().find(|&&index| Some(&entries[index].write.key) == key.as_ref())
            {
                let payload = payloads[index].unwrap_or_else(|| unreachable!("only readable payloads"));
                outcomes[index] = Some(match verify(spec, side, payload, &paths, &record) {
                    Ok(()) => Attempt::Verified { raw: Some(tracked(spec, &record)), id: record.id },
                    Err(_) => Attempt::Failed(ConnectorError::AlreadyExists { id: record.id }),
                });
            }
        }
    }

    // Likewise an update or delete that may already have happened is read first: when the
    // target already holds what it would write (or the record is gone), the entry is closed
    // as verified instead of being sent again — a conditional write would refuse it as moved,
    // and the audit would never say that it was written.
    let uncertain: Vec<usize> = (0..entries.len())
        .filter(|&index| {
            outcomes[index].is_none()
                && entries[index].write.operation != Operation::Create
                && entries[index].attempts > 0
        })
        .collect();
    let ids: Vec<RecordId> =
        uncertain.iter().filter_map(|&index| entries[index].write.record_id.clone()).collect();
    if !ids.is_empty()
        && let Ok(found) = connector.lookup(&paths, &Lookup::Ids(ids)).await
    {
        let found: HashMap<RecordId, ConnectorRecord> = found
            .into_iter()
            .filter(|record| !record.deleted)
            .map(|record| (record.id.clone(), record))
            .collect();
        for index in uncertain {
            let Some(id) = entries[index].write.record_id.clone() else { continue };
            let payload = payloads[index].unwrap_or_else(|| unreachable!("only readable payloads"));
            let done = match (entries[index].write.operation, found.get(&id)) {
                (Operation::Delete, None) => Some(None),
                (Operation::Update, Some(record)) => {
                    verify(spec, side, payload, &paths, record).is_ok().then(|| Some(tracked(spec, record)))
                }
                _ => None,
            };
            if let Some(raw) = done {
                outcomes[index] = Some(Attempt::Verified { id, raw });
            }
        }
    }

    // Without conditional writes, the target-moved guard is a re-read just before writing;
    // deletes carry no condition on any connector, so they are always read again.
    let reread = |index: usize| {
        outcomes[index].is_none()
            && match entries[index].write.operation {
                Operation::Update => !capabilities.conditional_writes,
                Operation::Delete => true,
                Operation::Create => false,
            }
    };
    let reread: Vec<usize> = (0..entries.len()).filter(|&index| reread(index)).collect();
    let ids: Vec<RecordId> =
        reread.iter().filter_map(|&index| entries[index].write.record_id.clone()).collect();
    if !ids.is_empty() {
        let current = connector.lookup(&paths, &Lookup::Ids(ids)).await;
        let current: HashMap<RecordId, ConnectorRecord> = match current {
            Ok(records) => records.into_iter().map(|record| (record.id.clone(), record)).collect(),
            Err(error) => {
                fail_unavailable(&mut outcomes, &reread, "the target", &error);
                HashMap::new()
            }
        };
        for &index in &reread {
            if outcomes[index].is_some() {
                continue;
            }
            let Some(id) = entries[index].write.record_id.clone() else { continue };
            let payload = payloads[index].unwrap_or_else(|| unreachable!("only readable payloads"));
            let moved = match current.get(&id) {
                None => Some(ConnectorError::NotFound { id: id.clone() }),
                Some(record) => payload
                    .fields
                    .iter()
                    .any(|field| {
                        let position = paths.iter().position(|path| *path == field.path);
                        match (&field.expected, position) {
                            (Some(expected), Some(position)) => {
                                !raw_equal(expected, &record.values[position])
                            }
                            _ => false,
                        }
                    })
                    .then(|| ConnectorError::TargetMoved { id: id.clone() }),
            };
            if let Some(error) = moved {
                outcomes[index] = Some(Attempt::Failed(error));
            }
        }
    }

    let mut writes = Vec::new();
    let mut sent = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        if outcomes[index].is_some() {
            continue;
        }
        let payload = payloads[index].unwrap_or_else(|| unreachable!("only readable payloads"));
        match to_write(entry, payload) {
            Ok(write) => {
                writes.push(write);
                sent.push(index);
            }
            Err(message) => outcomes[index] = Some(Attempt::Damaged(message.to_string())),
        }
    }
    let mut send = None;
    if !sent.is_empty() {
        let ids: Vec<i64> = sent.iter().map(|&index| entries[index].id).collect();
        send = Some(blocking(|| store.start_send(lease, ids, clock.now()))?);
        let results: WriteResults = match connector.apply(&writes).await {
            Ok(results) => results,
            Err(error) => {
                let message = error.to_string();
                let retryable = error.is_retryable();
                let retry_after = error.retry_after();
                sent.iter()
                    .map(|_| {
                        Err(if retryable {
                            ConnectorError::Unavailable {
                                what: "the target".into(),
                                message: message.clone(),
                                retry_after,
                            }
                        } else {
                            ConnectorError::Rejected { message: message.clone() }
                        })
                    })
                    .collect()
            }
        };
        let mut written: Vec<(usize, RecordId)> = Vec::new();
        for (&index, result) in sent.iter().zip(results) {
            match result {
                Ok(outcome) => written.push((index, outcome.id)),
                Err(error) => outcomes[index] = Some(Attempt::Failed(error)),
            }
        }
        // Read back every successful write.
        if !written.is_empty() {
            let ids = written.iter().map(|(_, id)| id.clone()).collect();
            match connector.lookup(&paths, &Lookup::Ids(ids)).await {
                Ok(records) => {
                    let records: HashMap<RecordId, ConnectorRecord> =
                        records.into_iter().map(|record| (record.id.clone(), record)).collect();
                    for (index, id) in written {
                        let payload =
                            payloads[index].unwrap_or_else(|| unreachable!("only readable payloads"));
                        let record = records.get(&id).filter(|record| !record.deleted);
                        outcomes[index] = Some(match (entries[index].write.operation, record) {
                            (Operation::Delete, None) => Attempt::Verified { id, raw: None },
                            (Operation::Delete, Some(_)) => {
                                Attempt::Mismatch("deleted, but the record is still there".into())
                            }
                            (_, None) => {
                                Attempt::Mismatch("written, but the record cannot be read back".into())
                            }
                            (_, Some(record)) => match verify(spec, side, payload, &paths, record) {
                                Ok(()) => Attempt::Verified { raw: Some(tracked(spec, record)), id },
                                Err(message) => Attempt::Mismatch(message),
                            },
                        });
                    }
                }
                Err(error) => {
                    // The writes happened but cannot be verified now: try again later; the
                    // redelivery's conditional write or create look-up keeps it idempotent.
                    for (index, _) in written {
                        outcomes[index] = Some(Attempt::Failed(ConnectorError::Unavailable {
                            what: "the target (verifying)".into(),
                            message: error.to_string(),
                            retry_after: error.retry_after(),
                        }));
                    }
                }
            }
        }
    }
    let mut was_sent = vec![false; entries.len()];
    for index in sent {
        was_sent[index] = true;
    }
    Ok(Attempts {
        outcomes: outcomes
            .into_iter()
            .map(|outcome| outcome.unwrap_or_else(|| Attempt::Damaged("no outcome".into())))
            .collect(),
        send,
        sent: was_sent,
    })
}

/// Fails the attempts of the entries at `indexes` as unavailable, to be tried again later: a
/// look-up of `what` that their sending depends on failed with `error`.
fn fail_unavailable(outcomes: &mut [Option<Attempt>], indexes: &[usize], what: &str, error: &ConnectorError) {
    for &index in indexes {
        outcomes[index] = Some(Attempt::Failed(ConnectorError::Unavailable {
            what: what.into(),
            message: error.to_string(),
            retry_after: error.retry_after(),
        }));
    }
}

/// The raw values of a record's tracked fields, as detection reads them (the link key and any
/// other path left out).
fn tracked(spec: &LinkSpec, record: &ConnectorRecord) -> Vec<serde_json::Value> {
    record.values.iter().take(spec.fields.len()).cloned().collect()
}

/// The raw digests that a verified write leaves known, so that the next scan does not
/// normalise what fieldsync wrote: the target's, when what it read back normalises to the
/// moved `baseline` (a value read back exactly as written is the value written, as `verify`
/// takes it), and the source's, when what it held at planning normalises to it.
fn seen_after(
    spec: &LinkSpec,
    side: Side,
    fingerprint: u64,
    entry: &OutboxEntry,
    payload: &Payload,
    baseline: &Baseline,
    raw: Option<Vec<serde_json::Value>>,
) -> Vec<SeenDigest> {
    let basis = baseline.digest();
    let mut seen = Vec::with_capacity(2);
    if let Some(raw) = raw
        && raw.len() == spec.fields.len()
        && read_back_digest(spec, side, payload, &raw) == Some(basis)
    {
        seen.push(SeenDigest {
            key: entry.write.key.clone(),
            side,
            digest: digest_raw(basis, fingerprint, &raw),
        });
    }
    if let Some(source) = entry.write.source.filter(|source| source.basis == basis) {
        seen.push(SeenDigest { key: entry.write.key.clone(), side: side.other(), digest: source.raw });
    }
    seen
}

/// The digest of a record's values read back from `side`, normalised as detection would.
fn read_back_digest(
    spec: &LinkSpec,
    side: Side,
    payload: &Payload,
    raw: &[serde_json::Value],
) -> Option<fieldsync_model::RecordDigest> {
    let mut values = Vec::with_capacity(raw.len());
    for (field, read) in spec.fields.iter().zip(raw) {
        let written = payload
            .fields
            .iter()
            .find(|written| written.name.as_deref() == Some(field.name.as_str()) && &written.raw == read)
            .and_then(|written| written.value.clone());
        let value = match written {
            Some(value) => value,
            None => match field.normalisers.get(side).read(read) {
                Reading::Valid(value) | Reading::Copied(value, _) => value,
                Reading::Invalid(_) => return None,
            },
        };
        values.push(value);
    }
    Some(digest_values(values.iter().map(Some)))
}

/// Moves a baseline as a verified write to `side` says: the target's id (and the source's,
/// for a create), a soft delete's tombstone, and each written field's value, origin and change
/// times. Returns the tracked fields written, with their values.
pub(crate) fn move_baseline(
    baseline: &mut Baseline,
    side: Side,
    id: RecordId,
    payload: &Payload,
    layout: &LinkLayout,
    now: jiff::Timestamp,
) -> Vec<(String, Value)> {
    baseline.set_id(side, id);
    if let Some(source_id) = &payload.source_id {
        baseline.set_id(side.other(), source_id.clone());
    }
    if let Some(deleted_on) = payload.soft_delete_of {
        baseline.tombstone = Some(deleted_on);
    }
    let mut written = Vec::new();
    for field in &payload.fields {
        let (Some(name), Some(value)) = (&field.name, &field.value) else { continue };
        let Some(index) = layout.fields.iter().position(|known| known == name) else {
            continue;
        };
        // A value a person typed in a review is not one side's: it may be written to both, and
        // one verified write says nothing of the other side. It becomes the baseline when a
        // plan reads it on both sides.
        let decided_value = field.origin == Some(Origin::Person) && field.changed_at.is_none();
        if !decided_value {
            let base_field = &mut baseline.fields[index];
            base_field.value = Some(value.clone());
            base_field.origin = field.origin;
            let (target_changed, source_changed) = match side {
                Side::Left => (&mut base_field.left_changed, &mut base_field.right_changed),
                Side::Right => (&mut base_field.right_changed, &mut base_field.left_changed),
            };
            *target_changed = Some(now);
            if field.changed_at.is_some() {
                *source_changed = field.changed_at;
            }
        }
        written.push((name.clone(), value.clone()));
    }
    written
}

/// Closes one batch in one commit: each entry's outcome, the baselines its verified writes
/// move, their audit and raw digests; tells the report what failed.
fn close_batch<K: Clock, P, S: StateStore>(
    run: &RunContext<'_, K, P>,
    lease: &Lease,
    batch: &Batch<'_>,
    store: &mut S,
    attempts: Attempts,
    closing: &mut Closing<'_>,
) -> Result<(), EngineError> {
    let (LinkRun { spec, clock, .. }, layout) = (run.given, run.layout);
    let Batch { side, entries, payloads } = *batch;
    let Closing { report, rng, final_outcomes, own } = closing;
    let link = spec.name.as_str();
    let now = clock.now();
    let keys: Vec<_> = entries.iter().map(|entry| entry.write.key.clone()).collect();
    // Baselines are written only under the link's lease: read now, they are what the closing
    // commit changes.
    let mut baselines = blocking(|| store.baselines(link, layout, &keys))?;
    let mut batch = BatchClose { send: attempts.send, ..BatchClose::default() };
    let fingerprint = spec.fingerprint(side);
    let mut outcomes = Vec::with_capacity(entries.len());
    for (((entry, outcome), payload), sent) in
        entries.iter().zip(attempts.outcomes).zip(payloads).zip(attempts.sent)
    {
        // An entry that went out has one more attempt to count, and so has one that failed on
        // the way (a look-up or re-read before its write): otherwise its backoff never grows and
        // it never reaches the retry limit.
        let counted = sent || matches!(outcome, Attempt::Failed(_));
        let mut set_status = |status, next_attempt_at, error: Option<&str>| {
            outcomes.push(EntryOutcome {
                id: entry.id,
                status,
                next_attempt_at,
                error: error.map(str::to_string),
                attempted: counted,
            });
        };
        let audit = |event: AuditEvent, reason: String, value: Option<Value>| AuditEntry {
            run_id: report.run_id,
            key: entry.write.key.clone(),
            field: None,
            event,
            side: Some(side),
            base: None,
            left: None,
            right: None,
            value,
            reason,
            at: now,
            values: AuditValues::Full,
        };
        let failure = |outcome: FailureOutcome, message: String| WriteFailure {
            outbox_id: entry.id,
            key: entry.write.key.clone(),
            side,
            outcome,
            message,
        };
        match outcome {
            Attempt::Verified { id, raw } => {
                let payload = payload
                    .as_ref()
                    .unwrap_or_else(|_| unreachable!("a verified entry had a readable payload"));
                let mut baseline = baselines
                    .remove(&entry.write.key)
                    .unwrap_or_else(|| Baseline::empty(entry.write.key.clone(), layout.fields.len()));
                match entry.write.operation {
                    Operation::Delete => {
                        own.get_mut(side).add(id, true);
                        batch.baselines.push(BaselineWrite::Forget(entry.write.key.clone()));
                    }
                    _ => {
                        let target = id.clone();
                        let written = move_baseline(&mut baseline, side, id, payload, layout, now);
                        // A create is audited once, below, rather than field by field.
                        if entry.write.operation != Operation::Create {
                            for (name, value) in written {
                                let mut written = audit(
                                    AuditEvent::Written,
                                    format!("written to the {side} side and read back"),
                                    Some(value),
                                );
                                written.field = Some(name);
                                batch.audit.push(written);
                            }
                        }
                        if entry.write.operation == Operation::Create || payload.soft_delete_of.is_some() {
                            let what = if entry.write.operation == Operation::Create {
                                "created"
                            } else {
                                "soft-deleted"
                            };
                            let reason = format!("{what} on the {side} side and read back");
                            batch.audit.push(audit(AuditEvent::Written, reason, None));
                        }
                        let seen = seen_after(spec, side, fingerprint, entry, payload, &baseline, raw);
                        own.get_mut(side).add(target, seen.iter().any(|seen| seen.side == side));
                        batch.seen.extend(seen);
                        batch.baselines.push(BaselineWrite::Put(baseline));
                    }
                }
                if entry.write.operation == Operation::Delete {
                    batch.audit.push(audit(AuditEvent::Written, format!("deleted on the {side} side"), None));
                }
                set_status(OutboxStatus::Done, None, None);
                report.stats.writes_done += 1;
                final_outcomes.remove(&entry.id);
            }
            Attempt::Failed(error) if error.is_retryable() => {
                let attempts = entry.attempts + 1;
                let message = error.to_string();
                if attempts >= spec.retry.attempts {
                    set_status(OutboxStatus::Dead, None, Some(&message));
                    batch.audit.push(audit(
                        AuditEvent::Failed,
                        format!("gave up after {attempts} attempts: {message}"),
                        None,
                    ));
                    report.stats.writes_dead += 1;
                    final_outcomes.insert(entry.id, failure(FailureOutcome::Dead, message));
                } else {
                    let backoff = spec.retry.backoff(attempts, rng.f64());
                    let wait = error.retry_after().map_or(backoff, |asked| asked.max(backoff));
                    let next = now + wait;
                    set_status(OutboxStatus::Pending, Some(next), Some(&message));
                    tracing::warn!(link, key = %entry.write.key, %side, attempts, error = %message, "Retrying outbox entry.");
                    final_outcomes.insert(entry.id, failure(FailureOutcome::Retrying, message));
                }
            }
            Attempt::Failed(
                error @ (ConnectorError::TargetMoved { .. }
                | ConnectorError::NotFound { .. }
                | ConnectorError::AlreadyExists { .. }),
            ) => {
                // The next run plans the record again from fresh reads. When that plan makes the
                // same write, this entry is sent again with its attempts counted on: a write its
                // target refuses the same way run after run (a record the listing shows but
                // the target says does not exist) is a failure, and dead at the retry limit.
                let attempts = entry.attempts + 1;
                if attempts >= spec.retry.attempts {
                    let message = format!("{error}; refused the same way {attempts} times");
                    set_status(OutboxStatus::Dead, None, Some(&message));
                    batch.audit.push(audit(AuditEvent::Failed, message.clone(), None));
                    report.stats.writes_dead += 1;
                    final_outcomes.insert(entry.id, failure(FailureOutcome::Dead, message));
                } else if attempts > 1 {
                    let message = format!(
                        "{error}; refused the same way {attempts} times, it will be planned again from a \
                         fresh read"
                    );
                    set_status(OutboxStatus::Moved, None, Some(&message));
                    tracing::warn!(link, key = %entry.write.key, %side, attempts, error = %message, "Outbox entry refused again.");
                    final_outcomes.insert(entry.id, failure(FailureOutcome::Retrying, message));
                } else {
                    let message = format!("{error}; it will be planned again from a fresh read");
                    set_status(OutboxStatus::Moved, None, Some(&message));
                    report.stats.writes_moved += 1;
                    final_outcomes.insert(entry.id, failure(FailureOutcome::Moved, message));
                }
                batch.full_scan_of = Some(side);
            }
            Attempt::Failed(error) => {
                let message = error.to_string();
                set_status(OutboxStatus::Dead, None, Some(&message));
                batch.audit.push(audit(AuditEvent::Failed, message.clone(), None));
                report.stats.writes_dead += 1;
                final_outcomes.insert(entry.id, failure(FailureOutcome::Dead, message));
            }
            Attempt::Mismatch(message) | Attempt::Damaged(message) => {
                set_status(OutboxStatus::Dead, None, Some(&message));
                batch.audit.push(audit(AuditEvent::Failed, message.clone(), None));
                report.stats.writes_dead += 1;
                final_outcomes.insert(entry.id, failure(FailureOutcome::Dead, message));
            }
        }
    }
    // A record that moved may carry a time older than the cursor window (its change can be an
    // earlier write of ours whose answer was lost): reading this side in full next time is what
    // plans it again (`full_scan_of`).
    batch.outcomes = outcomes;
    spec.audit.keep_all(link, &mut batch.audit);
    blocking(|| store.close_batch(lease, layout, batch, now))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::raw_equal;

    /// A value read back counts as what was written when it is the same JSON, or the same
    /// text: a column that keeps numbers as text, or an empty value as `""`.
    #[test]
    fn read_backs_compare_as_json_or_as_text() {
        for (written, read) in [
            (json!("M1"), json!("M1")),
            (json!(17), json!("17")),
            (json!("17"), json!(17)),
            (json!(true), json!("true")),
            (json!(null), json!("")),
            (json!(""), json!(null)),
        ] {
            assert!(raw_equal(&written, &read), "{written} and {read}");
        }
        for (written, read) in [
            (json!("M1"), json!("M2")),
            (json!(17), json!(18)),
            (json!(null), json!("x")),
            (json!(true), json!(1)),
        ] {
            assert!(!raw_equal(&written, &read), "{written} and {read}");
        }
    }
}
