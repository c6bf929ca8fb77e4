//! Detection: read each side (incrementally from its cursor where it can, in full on
//! schedule), normalise every value, skip records whose digest equals their baseline's, and
//! gather the rest — with the other side's current state — for the merge.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use fieldsync_connector::{Connector, ConnectorError, ConnectorRecord, Lookup, ReadRequest};
use fieldsync_model::{
    NormaliseError, RecordDigest, RecordId, RecordKey, Side, Value, digest_raw, digest_values,
};
use fieldsync_store::{DigestEntry, LinkLayout, StateStore};
use jiff::Timestamp;

use crate::report::{ReadMode, RunReport};
use crate::spec::{LinkSpec, SidePair};
use crate::{Clock, EngineError, Progress};

/// How often a failed read is tried before the run gives up.
const READ_ATTEMPTS: u32 = 3;

/// One record on one side, normalised.
#[derive(Clone, Debug)]
pub(crate) struct SideRecord {
    pub id: RecordId,
    /// Raw values of the fields, in field order (the link key excluded).
    pub raw: Vec<serde_json::Value>,
    /// Normalised values, in field order (errors boxed: they are rare, and candidates are many).
    pub values: Vec<Result<Value, Box<NormaliseError>>>,
    pub modified: Option<Timestamp>,
}

impl SideRecord {
    /// The normalised values when every one is valid.
    pub fn valid_values(&self) -> Option<Vec<&Value>> {
        self.values.iter().map(|value| value.as_ref().ok()).collect()
    }
}

/// What a side holds for a record after detection.
#[derive(Clone, Debug)]
pub(crate) enum Presence {
    Present(SideRecord),
    Absent,
    /// Not known: the side was read incrementally and cannot look the record up by key.
    Unknown,
}

/// Everything detection found.
pub(crate) struct Detection {
    pub modes: SidePair<ReadMode>,
    /// Records to compare field by field, with both sides' state.
    pub candidates: Vec<(RecordKey, SidePair<Presence>)>,
    /// The latest modification time seen on each side.
    pub max_modified: SidePair<Option<Timestamp>>,
    /// Keys whose records vanished from a fully read side.
    pub vanished: SidePair<u64>,
    /// Candidate keys the state store holds a baseline digest for.
    pub with_baseline: std::collections::HashSet<RecordKey>,
    /// Raw digests of records found equal to their baselines the slow way (see
    /// `fieldsync_model::digest_raw`), to be recorded for the next run's fast path.
    pub seen: Vec<(RecordKey, Side, RecordDigest)>,
}

/// A connector record with its link key taken out, not yet normalised.
pub(crate) struct RawRecord {
    pub id: RecordId,
    /// Raw values of the fields, in field order (the link key excluded).
    pub raw: Vec<serde_json::Value>,
    pub modified: Option<Timestamp>,
}

impl RawRecord {
    /// Normalises every field.
    pub fn normalise(self, spec: &LinkSpec, side: Side) -> SideRecord {
        let values = spec
            .fields
            .iter()
            .zip(&self.raw)
            .map(|(field, raw)| field.normalisers.get(side).normalise(raw).map_err(Box::new))
            .collect();
        SideRecord { id: self.id, raw: self.raw, values, modified: self.modified }
    }
}

/// Normalises records on every core: normalising (phone numbers above all) is the costliest
/// part of a scan. The order is kept.
pub(crate) fn normalise_all(spec: &LinkSpec, side: Side, mut raws: Vec<RawRecord>) -> Vec<SideRecord> {
    /// Below this many records per thread, starting threads costs more than it saves.
    const PER_THREAD: usize = 64;
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let threads = cores.min(raws.len() / PER_THREAD).max(1);
    if threads == 1 {
        return raws.into_iter().map(|raw| raw.normalise(spec, side)).collect();
    }
    let size = raws.len().div_ceil(threads);
    let mut parts = Vec::with_capacity(threads);
    while raws.len() > size {
        parts.push(raws.split_off(raws.len() - size));
    }
    parts.push(raws);
    parts.reverse();
    std::thread::scope(|scope| {
        let workers: Vec<_> = parts
            .into_iter()
            .map(|part| {
                scope.spawn(move || part.into_iter().map(|raw| raw.normalise(spec, side)).collect::<Vec<_>>())
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| worker.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
            .collect()
    })
}

/// Takes a connector record's link key out; fails when it has none or too few values.
pub(crate) fn split_record(
    spec: &LinkSpec,
    side: Side,
    record: ConnectorRecord,
) -> Result<(RecordKey, RawRecord), String> {
    let mut raw = record.values;
    if raw.len() != spec.fields.len() + 1 {
        return Err(format!(
            "record {} came back with {} values, expected {}",
            record.id,
            raw.len(),
            spec.fields.len() + 1
        ));
    }
    let key_value = raw.remove(0);
    let Some(key) = link_key(&key_value) else {
        return Err(format!(
            "record {} on the {side} side has no link key at {}",
            record.id,
            spec.key.get(side)
        ));
    };
    Ok((key, RawRecord { id: record.id, raw, modified: record.modified }))
}

/// Normalises a connector record: its link key and field values.
pub(crate) fn normalise_record(
    spec: &LinkSpec,
    side: Side,
    record: ConnectorRecord,
) -> Result<(RecordKey, SideRecord), String> {
    let (key, raw) = split_record(spec, side, record)?;
    Ok((key, raw.normalise(spec, side)))
}

/// Reads a raw link key: trimmed text or a number; anything else (null, empty) is no key.
pub(crate) fn link_key(raw: &serde_json::Value) -> Option<RecordKey> {
    match raw {
        serde_json::Value::String(text) if !text.trim().is_empty() => Some(RecordKey::new(text.trim())),
        serde_json::Value::Number(number) => Some(RecordKey::new(number.to_string())),
        _ => None,
    }
}

fn side_digest(record: &SideRecord) -> Option<fieldsync_model::RecordDigest> {
    let values = record.valid_values()?;
    Some(digest_values(values.into_iter().map(Some)))
}

async fn with_retries<T, C: Clock>(
    clock: &C,
    mut attempt: impl AsyncFnMut() -> Result<T, ConnectorError>,
) -> Result<T, ConnectorError> {
    let mut tries = 0;
    loop {
        tries += 1;
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(error) if error.is_retryable() && tries < READ_ATTEMPTS => {
                let wait = error.retry_after().unwrap_or(Duration::from_millis(500 * (1 << tries)));
                tracing::warn!(%error, tries, "Retrying a read.");
                clock.sleep(wait.min(Duration::from_secs(30))).await;
            }
            Err(error) => return Err(error),
        }
    }
}

/// A side's records that differ from their baselines, as read.
struct SideScan {
    changed: HashMap<RecordKey, SideRecord>,
    /// Keys read and found equal to their baseline.
    unchanged: BTreeSet<RecordKey>,
    deleted: BTreeSet<RecordKey>,
    max_modified: Option<Timestamp>,
    /// Raw digests of records found equal to their baselines the slow way, to be recorded.
    seen: Vec<(RecordKey, RecordDigest)>,
}

#[allow(clippy::too_many_arguments)]
async fn scan_side<C: Connector, K: Clock, P: Progress>(
    spec: &LinkSpec,
    side: Side,
    connector: &mut C,
    names: &SidePair<String>,
    mode: ReadMode,
    since: Option<Timestamp>,
    store: &StateStore,
    layout: &LinkLayout,
    all_digests: Option<&HashMap<RecordKey, DigestEntry>>,
    clock: &K,
    progress: &P,
    report: &mut RunReport,
) -> Result<SideScan, EngineError> {
    let request = ReadRequest {
        paths: spec.read_paths(side),
        since: if mode == ReadMode::Incremental { since } else { None },
    };
    let link = spec.name.as_str();
    let mut scan = SideScan {
        changed: HashMap::new(),
        unchanged: BTreeSet::new(),
        deleted: BTreeSet::new(),
        max_modified: None,
        seen: Vec::new(),
    };
    let fingerprint = spec.fingerprint(side);
    let mut token = None;
    progress.phase(&format!("reading {side} ({})", names.get(side)), None);
    loop {
        let page = with_retries(clock, async || connector.read_page(&request, token.as_ref()).await)
            .await
            .map_err(|source| EngineError::Read { side, connector: names.get(side).clone(), source })?;
        let mut split = Vec::with_capacity(page.records.len());
        for record in page.records {
            if let Some(modified) = record.modified {
                scan.max_modified =
                    Some(scan.max_modified.map_or(modified, |max: Timestamp| max.max(modified)));
            }
            let deleted = record.deleted;
            match split_record(spec, side, record) {
                Ok((key, raw)) => split.push((key, raw, deleted)),
                Err(problem) => report.problems.push(problem),
            }
        }
        let page_digests;
        let digests = match all_digests {
            Some(digests) => digests,
            None => {
                let keys: Vec<RecordKey> = split.iter().map(|(key, _, _)| key.clone()).collect();
                page_digests = store.digests(link, layout, &keys)?;
                &page_digests
            }
        };
        let stats = report.stats.side_mut(side);
        stats.read += split.len() as u64;
        progress.advance(split.len() as u64);
        // Records that need normalising, with the baseline digest to compare with and their raw
        // digest; normalised together below, on every core.
        let mut pending: Vec<(RecordKey, Option<(RecordDigest, RecordDigest)>)> = Vec::new();
        let mut pending_raw: Vec<RawRecord> = Vec::new();
        let mut in_page: HashSet<RecordKey> = HashSet::new();
        for (key, raw, deleted) in split {
            let seen_before = scan.changed.contains_key(&key)
                || scan.unchanged.contains(&key)
                || scan.deleted.contains(&key);
            if seen_before || !in_page.insert(key.clone()) {
                report.problems.push(format!(
                    "link key {key} appears more than once on the {side} side; record {} ignored",
                    raw.id
                ));
                continue;
            }
            if deleted {
                scan.deleted.insert(key);
                continue;
            }
            let entry = digests.get(&key);
            let check = match entry.and_then(|entry| entry.digest) {
                None => None,
                Some(basis) => {
                    // The fast path: the same raw values as when last found equal to this baseline.
                    let raw_digest = digest_raw(basis, fingerprint, &raw.raw);
                    if entry.and_then(|entry| entry.seen(side)) == Some(raw_digest) {
                        stats.unchanged_raw += 1;
                        scan.unchanged.insert(key);
                        continue;
                    }
                    Some((basis, raw_digest))
                }
            };
            pending.push((key, check));
            pending_raw.push(raw);
        }
        for ((key, check), record) in pending.into_iter().zip(normalise_all(spec, side, pending_raw)) {
            match check {
                Some((basis, raw_digest)) if side_digest(&record) == Some(basis) => {
                    scan.seen.push((key.clone(), raw_digest));
                    scan.unchanged.insert(key);
                }
                _ => {
                    stats.changed += 1;
                    scan.changed.insert(key, record);
                }
            }
        }
        match page.next {
            Some(next) => token = Some(next),
            None => break,
        }
    }
    Ok(scan)
}

/// Reads both sides and gathers every record that needs a field-by-field look.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn detect<C: Connector, K: Clock, P: Progress>(
    spec: &LinkSpec,
    connectors: &mut SidePair<C>,
    names: &SidePair<String>,
    modes: SidePair<ReadMode>,
    since: SidePair<Option<Timestamp>>,
    store: &StateStore,
    layout: &LinkLayout,
    clock: &K,
    progress: &P,
    report: &mut RunReport,
) -> Result<Detection, EngineError> {
    let link = spec.name.as_str();
    let any_full = modes.left == ReadMode::Full || modes.right == ReadMode::Full;
    let all_digests = if any_full { Some(store.all_digests(link, layout)?) } else { None };
    let mut scans = Vec::with_capacity(2);
    for side in Side::BOTH {
        let scan = scan_side(
            spec,
            side,
            connectors.get_mut(side),
            names,
            *modes.get(side),
            *since.get(side),
            store,
            layout,
            all_digests.as_ref(),
            clock,
            progress,
            report,
        )
        .await?;
        scans.push(scan);
    }
    let right_scan = scans.pop().unwrap_or_else(|| unreachable!("two scans were pushed"));
    let left_scan = scans.pop().unwrap_or_else(|| unreachable!("two scans were pushed"));
    let mut scans = SidePair::new(left_scan, right_scan);

    // Which keys need a look: changed on a side, deleted, vanished from a full scan, or with
    // a live review or an unfinished write (their plan must be renewed from fresh reads).
    let mut keys: BTreeSet<RecordKey> = BTreeSet::new();
    for side in Side::BOTH {
        let scan = scans.get(side);
        keys.extend(scan.changed.keys().cloned());
        keys.extend(scan.deleted.iter().cloned());
    }
    let mut vanished = SidePair::new(0, 0);
    if let Some(digests) = &all_digests {
        for side in Side::BOTH {
            if *modes.get(side) != ReadMode::Full {
                continue;
            }
            let scan = scans.get(side);
            for (key, entry) in digests {
                let seen = scan.changed.contains_key(key) || scan.unchanged.contains(key);
                if !seen && entry.tombstone != Some(side) {
                    if !scan.deleted.contains(key) {
                        *vanished.get_mut(side) += 1;
                    }
                    keys.insert(key.clone());
                }
            }
            report.stats.side_mut(side).deleted = *vanished.get(side);
        }
    }
    keys.extend(store.keys_with_live_reviews(link)?);
    let open_keys: Vec<RecordKey> = store.open_outbox_keys(link)?;
    keys.extend(open_keys);
    let keys: Vec<RecordKey> = keys.into_iter().collect();
    let digests = match &all_digests {
        Some(digests) => {
            keys.iter().filter_map(|key| digests.get(key).map(|entry| (key.clone(), entry.clone()))).collect()
        }
        None => store.digests(link, layout, &keys)?,
    };

    // Settle what each side holds for each key; look up what the scans did not keep.
    let mut presences: HashMap<RecordKey, SidePair<Presence>> =
        keys.iter().map(|key| (key.clone(), SidePair::new(Presence::Unknown, Presence::Unknown))).collect();
    for side in Side::BOTH {
        let full = *modes.get(side) == ReadMode::Full;
        let scan = scans.get_mut(side);
        let connector = connectors.get_mut(side);
        let capabilities = connector.capabilities();
        let mut by_id: Vec<(RecordKey, RecordId)> = Vec::new();
        let mut by_key: Vec<RecordKey> = Vec::new();
        for key in &keys {
            let presence = presences.get_mut(key).unwrap_or_else(|| unreachable!("every key has a presence"));
            let slot = presence.get_mut(side);
            if let Some(record) = scan.changed.remove(key) {
                *slot = Presence::Present(record);
            } else if scan.deleted.contains(key) {
                *slot = Presence::Absent;
            } else if let Some(id) = digests.get(key).and_then(|entry| entry.id(side)) {
                // Also when missing from a full read: a listing can skip a record (its paging
                // shifted under it), and only a look-up tells a skipped record from a deleted one.
                by_id.push((key.clone(), id.clone()));
            } else if full && !capabilities.lookup_by_key {
                *slot = Presence::Absent;
            } else {
                by_key.push(key.clone());
            }
        }
        let paths = spec.read_paths(side);
        let read_error = |source| EngineError::Read { side, connector: names.get(side).clone(), source };
        let mut found: Vec<ConnectorRecord> = Vec::new();
        for chunk in by_id.chunks(500) {
            let lookup = Lookup::Ids(chunk.iter().map(|(_, id)| id.clone()).collect());
            found.extend(
                with_retries(clock, async || connector.lookup(&paths, &lookup).await)
                    .await
                    .map_err(read_error)?,
            );
        }
        if capabilities.lookup_by_key {
            // A record whose id changed (made again, or created by a write whose bookkeeping a
            // crash lost) is not gone: it is found by its link key.
            let found_ids: HashSet<&RecordId> =
                found.iter().filter(|record| !record.deleted).map(|record| &record.id).collect();
            let missing: Vec<RecordKey> =
                by_id.iter().filter(|(_, id)| !found_ids.contains(id)).map(|(key, _)| key.clone()).collect();
            by_key.extend(missing);
        }
        if capabilities.lookup_by_key {
            for chunk in by_key.chunks(500) {
                let lookup = Lookup::Key {
                    path: spec.key.get(side).clone(),
                    values: chunk.iter().map(|key| key.as_str().to_string()).collect(),
                };
                found.extend(
                    with_retries(clock, async || connector.lookup(&paths, &lookup).await)
                        .await
                        .map_err(read_error)?,
                );
            }
        }
        // Everything looked up and not found is absent; what could not be looked up stays unknown.
        for (key, _) in &by_id {
            if let Some(presence) = presences.get_mut(key) {
                *presence.get_mut(side) = Presence::Absent;
            }
        }
        if capabilities.lookup_by_key {
            for key in &by_key {
                if let Some(presence) = presences.get_mut(key) {
                    *presence.get_mut(side) = Presence::Absent;
                }
            }
        }
        for record in found {
            if record.deleted {
                continue;
            }
            match normalise_record(spec, side, record) {
                Ok((key, side_record)) => {
                    if let Some(presence) = presences.get_mut(&key) {
                        *presence.get_mut(side) = Presence::Present(side_record);
                    }
                }
                Err(problem) => report.problems.push(problem),
            }
        }
    }
    let with_baseline = digests.keys().cloned().collect();
    let candidates =
        keys.into_iter().filter_map(|key| presences.remove(&key).map(|presence| (key, presence))).collect();
    let mut seen = Vec::new();
    for side in Side::BOTH {
        seen.extend(scans.get_mut(side).seen.drain(..).map(|(key, digest)| (key, side, digest)));
    }
    Ok(Detection {
        seen,
        modes,
        candidates,
        max_modified: SidePair::new(scans.left.max_modified, scans.right.max_modified),
        vanished,
        with_baseline,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use fieldsync_model::{FieldType, LinkName, Normaliser};

    use super::*;
    use crate::spec::{
        ConflictStrategy, Creates, DeletePolicy, Direction, FieldSpec, FirstSyncStrategy, Guard, RetryPolicy,
    };

    #[test]
    fn normalising_on_every_core_keeps_the_order() {
        let email = Normaliser::new(FieldType::Email);
        let spec = LinkSpec {
            name: LinkName::new("members"),
            key: SidePair::new("id".into(), "id".into()),
            fields: vec![FieldSpec {
                name: "email".into(),
                paths: SidePair::new("email".into(), "email".into()),
                normalisers: SidePair::new(email.clone(), email),
                direction: Direction::Both,
            }],
            conflicts: ConflictStrategy::Review,
            first_sync: FirstSyncStrategy::Review,
            creates: Creates::Both,
            deletes: DeletePolicy::Review,
            guard: Guard::default(),
            full_scan_every: Duration::from_secs(60),
            overlap: SidePair::new(Duration::ZERO, Duration::ZERO),
            retry: RetryPolicy::default(),
        };
        for count in [0, 1, 63, 200, 1_001] {
            let raws = (0..count)
                .map(|n| RawRecord {
                    id: RecordId::new(format!("r{n}")),
                    raw: vec![serde_json::json!(format!("M{n}@Club.NL"))],
                    modified: None,
                })
                .collect();
            let records = normalise_all(&spec, Side::Left, raws);
            assert_eq!(records.len(), count);
            for (n, record) in records.iter().enumerate() {
                assert_eq!(record.id.as_str(), format!("r{n}"));
                assert_eq!(
                    record.values[0].as_ref().ok(),
                    Some(&Value::from(format!("m{n}@club.nl").as_str()))
                );
            }
        }
    }
}
