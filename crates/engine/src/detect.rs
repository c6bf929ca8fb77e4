//! Detection: read both sides a page at a time, both at once, skip records whose values hash to
//! their baseline's digest, and hand every other record to the planner, a chunk at a time,
//! together with the other side's current state — so that a run never holds more than the
//! records still waiting for their counterpart.
//!
//! A changed record needs its counterpart. When the other side's listing may still bring it
//! (a full read that has not reached its key, or an incremental read not finished), the record
//! waits for it; otherwise the counterpart is looked up by id (or by link key). Two listings in
//! the same key order meet page by page, so little waits. Records a full read never listed,
//! and records with a live review or an unfinished write, are looked up at the end.

use std::cell::Cell;
use std::collections::BTreeSet;
use std::time::Duration;

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};

use fieldsync_connector::{
    Capabilities, Connector, ConnectorError, ConnectorRecord, Lookup, Page, PageToken, ReadRequest,
};
use fieldsync_model::{
    NormaliseError, Reading, RecordDigest, RecordId, RecordKey, Side, Value, digest_raw, digest_values,
};
use fieldsync_store::{DigestEntry, LinkLayout, StateStore};
use jiff::Timestamp;

use crate::report::{ReadMode, RunReport};
use crate::spec::{LinkSpec, SidePair};
use crate::{Clock, EngineError, Progress};

/// How often a failed read is tried before the run gives up.
const READ_ATTEMPTS: u32 = 3;

/// How many ids or keys one look-up asks for.
const LOOKUP_CHUNK: usize = 500;

/// How many candidates are handed to the planner at once (more may come with one page).
pub(crate) const CHUNK: usize = 1_000;

/// One record on one side, normalised.
#[derive(Clone, Debug)]
pub(crate) struct SideRecord {
    pub id: RecordId,
    /// Raw values of the fields, in field order (the link key excluded).
    pub raw: Vec<serde_json::Value>,
    /// Normalised values, in field order (errors boxed: they are rare, and candidates are many).
    pub values: Vec<Result<Value, Box<NormaliseError>>>,
    /// Fields whose value no rule reads and which copy it verbatim (`invalid = "copy"`), with
    /// why: the planner warns when it writes one. Empty, without allocating, in the common case.
    pub copied: Vec<(usize, Box<NormaliseError>)>,
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

/// A record whose state on both sides is known: ready to be merged and planned.
pub(crate) struct Candidate {
    pub key: RecordKey,
    pub presence: SidePair<Presence>,
    /// Whether the state store held a baseline digest for it: a baseline that then cannot be
    /// read is damaged, and reported.
    pub had_baseline: bool,
}

/// What detection hands the planner at a time.
#[derive(Default)]
pub(crate) struct Chunk {
    pub candidates: Vec<Candidate>,
    /// Raw digests of records found equal to their baselines the slow way (see
    /// `fieldsync_model::digest_raw`), to be recorded for the next run's fast path.
    pub seen: Vec<(RecordKey, Side, RecordDigest)>,
}

/// How the reading went, once it is over: for the cursors and the guard.
pub(crate) struct Summary {
    pub modes: SidePair<ReadMode>,
    /// Where each side's cursor may move: the latest modification time seen, held back to the
    /// time of any record that changed while the run was reading it (so the next run reads it).
    pub cursor: SidePair<Option<Timestamp>>,
    /// Records with a baseline that a full read did not list.
    pub vanished: SidePair<u64>,
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
        let mut copied = Vec::new();
        let values = spec
            .fields
            .iter()
            .zip(&self.raw)
            .enumerate()
            .map(|(index, (field, raw))| match field.normalisers.get(side).read(raw) {
                Reading::Valid(value) => Ok(value),
                Reading::Copied(value, error) => {
                    copied.push((index, Box::new(error)));
                    Ok(value)
                }
                Reading::Invalid(error) => Err(Box::new(error)),
            })
            .collect();
        SideRecord { id: self.id, raw: self.raw, values, copied, modified: self.modified }
    }
}

/// Normalises records on every core: normalising (phone numbers above all) is the costliest
/// part of a scan. The order is kept.
pub(crate) fn normalise_all(spec: &LinkSpec, side: Side, mut raws: Vec<RawRecord>) -> Vec<SideRecord> {
    /// Below this many records per thread, starting threads costs more than it saves.
    const PER_THREAD: usize = 64;
    // Asked once: the answer comes from the cgroup files, read anew at every call.
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let cores = *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, std::num::NonZero::get));
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
    // The link key is read last (`LinkSpec::read_paths`).
    let key_value = raw.pop().unwrap_or_default();
    let Some(key) = link_key(&key_value) else {
        return Err(format!(
            "record {} on the {side} side has no link key at {}",
            record.id,
            spec.key.get(side)
        ));
    };
    Ok((key, RawRecord { id: record.id, raw, modified: record.modified }))
}

/// Reads a raw link key: trimmed text or a number; anything else (null, empty) is no key.
pub(crate) fn link_key(raw: &serde_json::Value) -> Option<RecordKey> {
    match raw {
        serde_json::Value::String(text) if !text.trim().is_empty() => Some(RecordKey::new(text.trim())),
        serde_json::Value::Number(number) => Some(RecordKey::new(number.to_string())),
        _ => None,
    }
}

fn side_digest(record: &SideRecord) -> Option<RecordDigest> {
    let values = record.valid_values()?;
    Some(digest_values(values.into_iter().map(Some)))
}

/// A 64-bit digest of raw values alone, to tell two versions of one record apart; never 0.
fn version_of(raw: &[serde_json::Value]) -> u64 {
    let bytes = digest_raw(RecordDigest::new(0), 0, raw).to_bytes();
    u64::from_le_bytes(bytes[..8].try_into().unwrap_or_default()).max(1)
}

/// A short fingerprint of a record id, to tell a record listed again from another record
/// with the same link key.
/// Never 0, which stands for no record.
fn id_hash(id: &str) -> u64 {
    use std::hash::{Hash as _, Hasher as _};
    let mut hasher = std::hash::DefaultHasher::new();
    id.hash(&mut hasher);
    hasher.finish().max(1)
}

/// The next page of a listing, with retries.
async fn fetch<C: Connector, K: Clock>(
    connector: &mut C,
    request: &ReadRequest,
    token: Option<&PageToken>,
    clock: &K,
) -> Result<Page, ConnectorError> {
    with_retries(clock, async || connector.read_page(request, token).await).await
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

/// A baseline's digest entry, and whether each side's full read listed its record.
struct Known {
    entry: DigestEntry,
    listed: SidePair<bool>,
}

/// Every baseline's digest entry, for a run that reads a side in full, sorted by link key
/// and loaded a page at a time, as far as the listings have come.
///
/// A sorted vector rather than a hash map: a million entries take less than half the
/// memory (a map rounds its table up to a power of two, and the kernel zeroes every page of
/// it), load without rehashing, and a listing that comes in key order, as most do, finds
/// each entry right after the one it found last instead of missing the cache on a random
/// slot; a listing in another order finds its entries by binary search. Loading as the
/// listings go, rather than all before the first page, lets the connectors read their next
/// pages meanwhile.
struct KnownBaselines {
    entries: Vec<(RecordKey, Known)>,
    /// Where the next look-up looks first: right after the last entry found.
    next: Cell<usize>,
    /// The key of the last baseline loaded, once any was.
    loaded_through: Option<RecordKey>,
    /// Whether every baseline is loaded.
    complete: bool,
    /// How many baselines the next page loads: few at first, so that the listings start
    /// soon, then more.
    page: usize,
}

impl KnownBaselines {
    /// How many baselines the first page loads, and the most one page loads.
    const PAGES: (usize, usize) = (256, 16_384);

    fn new<S: StateStore>(store: &S, link: &str) -> Result<Self, EngineError> {
        // Sized once from the count of live baselines the store keeps.
        let capacity = usize::try_from(store.baseline_count(link)?).unwrap_or(0);
        Ok(Self {
            entries: Vec::with_capacity(capacity),
            next: Cell::new(0),
            loaded_through: None,
            complete: false,
            page: Self::PAGES.0,
        })
    }

    /// Loads the baselines up to `key` (every one with `None`), so that the look-ups of
    /// keys up to it are answered.
    fn load_through<S: StateStore>(
        &mut self,
        store: &S,
        link: &str,
        layout: &LinkLayout,
        key: Option<&RecordKey>,
    ) -> Result<(), EngineError> {
        while !self.complete
            && key.is_none_or(|key| self.loaded_through.as_ref().is_none_or(|loaded| loaded < key))
        {
            let entries = &mut self.entries;
            // The store hands them out in key order, checked (`StateStore::digest_page`).
            let last =
                store.digest_page(link, layout, self.loaded_through.as_ref(), self.page, |key, entry| {
                    entries.push((key, Known { entry, listed: SidePair::new(false, false) }));
                })?;
            self.page = (self.page * 2).min(Self::PAGES.1);
            match last {
                Some(last) => self.loaded_through = Some(last),
                None => self.complete = true,
            }
        }
        Ok(())
    }

    fn position(&self, key: &RecordKey) -> Option<usize> {
        let hint = self.next.get();
        let found = match self.entries.get(hint) {
            Some((hinted, _)) if hinted == key => hint,
            _ => self.entries.binary_search_by(|(probe, _)| probe.cmp(key)).ok()?,
        };
        self.next.set(found + 1);
        Some(found)
    }

    fn get(&self, key: &RecordKey) -> Option<&Known> {
        self.position(key).map(|index| &self.entries[index].1)
    }

    fn get_mut(&mut self, key: &RecordKey) -> Option<&mut Known> {
        self.position(key).map(|index| &mut self.entries[index].1)
    }

    fn contains_key(&self, key: &RecordKey) -> bool {
        self.position(key).is_some()
    }

    /// Every baseline; call `load_through(None)` first.
    fn iter(&self) -> impl Iterator<Item = (&RecordKey, &Known)> {
        self.entries.iter().map(|(key, known)| (key, known))
    }
}

/// A changed (or deleted) record waiting for its counterpart's listing.
struct Waiting {
    /// `Present`, or `Absent` for a record marked deleted.
    presence: Presence,
    id: RecordId,
    /// The baseline's digest entry, when there is one.
    entry: Option<DigestEntry>,
}

/// A record already handed to the planner: which record of each side it was planned with,
/// and which version, so that a later listing of it is told apart from a new change.
#[derive(Clone, Copy, Default)]
struct Handled {
    /// Per side, `id_hash` of the record it was planned with (0: none).
    ids: SidePair<u64>,
    /// Per side, `version_of` that record (0: none).
    versions: SidePair<u64>,
}

/// What one listed record turned out to be.
enum Listed {
    /// Equal to its baseline (normalised: its counterpart waits for it, or its raw values
    /// were new).
    Unchanged(SideRecord),
    /// Different from its baseline, or without one.
    Changed(SideRecord),
    /// Marked deleted by its system.
    Deleted(RecordId),
}

/// A listed record to normalise, with its baseline's digest entry and, when it has one, the
/// baseline digest to compare with and the record's raw digest.
struct ToNormalise {
    key: RecordKey,
    entry: Option<DigestEntry>,
    raw: RawRecord,
    check: Option<(RecordDigest, RecordDigest)>,
}

/// A record of one side whose counterpart must be looked up on the other.
struct Pending {
    key: RecordKey,
    presence: Presence,
    id: Option<RecordId>,
    entry: Option<DigestEntry>,
}

/// Reads both sides of a link and yields candidates a chunk at a time.
pub(crate) struct Detector<'a> {
    spec: &'a LinkSpec,
    layout: &'a LinkLayout,
    names: &'a SidePair<String>,
    modes: SidePair<ReadMode>,
    requests: SidePair<ReadRequest>,
    capabilities: SidePair<Capabilities>,
    fingerprints: SidePair<u64>,
    tokens: SidePair<Option<PageToken>>,
    finished: SidePair<bool>,
    /// Every baseline's digest entry when a side is read in full (its listing is checked
    /// against them for records that vanished); `None` when both sides are incremental.
    known: Option<KnownBaselines>,
    waiting: SidePair<HashMap<RecordKey, Waiting>>,
    handled: HashMap<RecordKey, Handled>,
    /// The keys an incremental read listed, with their record ids (a full read's are in
    /// `known`, `waiting` and `handled`).
    listed: SidePair<HashMap<RecordKey, u64>>,
    max_modified: SidePair<Option<Timestamp>>,
    cursor_cap: SidePair<Option<Timestamp>>,
    vanished: SidePair<u64>,
    /// Candidates found but not yet handed out.
    ready: Vec<Candidate>,
    seen: Vec<(RecordKey, Side, RecordDigest)>,
    leftovers_done: bool,
}

impl<'a> Detector<'a> {
    /// Prepares to read both sides; loads every baseline digest when a side is read in full.
    ///
    /// # Errors
    ///
    /// Fails when the state store cannot be read.
    #[allow(clippy::too_many_arguments)]
    pub fn new<C: Connector, S: StateStore>(
        spec: &'a LinkSpec,
        layout: &'a LinkLayout,
        names: &'a SidePair<String>,
        connectors: &SidePair<C>,
        modes: SidePair<ReadMode>,
        since: SidePair<Option<Timestamp>>,
        store: &S,
    ) -> Result<Self, EngineError> {
        let any_full = modes.left == ReadMode::Full || modes.right == ReadMode::Full;
        let known = if any_full { Some(KnownBaselines::new(store, spec.name.as_str())?) } else { None };
        let request = |side: Side| ReadRequest {
            paths: spec.read_paths(side),
            since: if *modes.get(side) == ReadMode::Incremental { *since.get(side) } else { None },
        };
        Ok(Self {
            spec,
            layout,
            names,
            modes,
            requests: SidePair::new(request(Side::Left), request(Side::Right)),
            capabilities: SidePair::new(connectors.left.capabilities(), connectors.right.capabilities()),
            fingerprints: SidePair::new(spec.fingerprint(Side::Left), spec.fingerprint(Side::Right)),
            tokens: SidePair::new(None, None),
            finished: SidePair::new(false, false),
            known,
            waiting: SidePair::default(),
            handled: HashMap::new(),
            listed: SidePair::default(),
            max_modified: SidePair::new(None, None),
            cursor_cap: SidePair::new(None, None),
            vanished: SidePair::new(0, 0),
            ready: Vec::new(),
            seen: Vec::new(),
            leftovers_done: false,
        })
    }

    /// The next chunk of candidates, or `None` when both sides are read and every candidate
    /// was handed out.
    ///
    /// # Errors
    ///
    /// Fails when a side cannot be read even after retries, or the state store fails.
    pub async fn next<C: Connector, K: Clock, P: Progress, S: StateStore>(
        &mut self,
        connectors: &mut SidePair<C>,
        store: &S,
        clock: &K,
        progress: &P,
        report: &mut RunReport,
    ) -> Result<Option<Chunk>, EngineError> {
        // Raw digests pile up too when nothing changes but many records were normalised (a
        // new normaliser version): they are handed out in chunks as well.
        while self.ready.len() < CHUNK && self.seen.len() < 10 * CHUNK {
            if !self.finished.left && !self.finished.right {
                // Both listings go on: their next pages are read at once (a connector that
                // blocks does so on a thread of its own), then sorted out left first.
                let SidePair { left, right } = &mut *connectors;
                let (left_page, right_page) = tokio::join!(
                    fetch(left, &self.requests.left, self.tokens.left.as_ref(), clock),
                    fetch(right, &self.requests.right, self.tokens.right.as_ref(), clock),
                );
                let right_page = right_page.map_err(self.read_error(Side::Right));
                self.read_page(
                    Side::Left,
                    left_page.map_err(self.read_error(Side::Left))?,
                    connectors,
                    store,
                    clock,
                    progress,
                    report,
                )
                .await?;
                self.read_page(Side::Right, right_page?, connectors, store, clock, progress, report).await?;
            } else if !(self.finished.left && self.finished.right) {
                let side = if self.finished.left { Side::Right } else { Side::Left };
                let page = fetch(
                    connectors.get_mut(side),
                    self.requests.get(side),
                    self.tokens.get(side).as_ref(),
                    clock,
                )
                .await
                .map_err(self.read_error(side))?;
                self.read_page(side, page, connectors, store, clock, progress, report).await?;
            } else if !self.leftovers_done {
                self.leftovers_done = true;
                self.leftovers(connectors, store, clock, report).await?;
            } else {
                break;
            }
        }
        if self.ready.is_empty() && self.seen.is_empty() {
            return Ok(None);
        }
        Ok(Some(Chunk { candidates: std::mem::take(&mut self.ready), seen: std::mem::take(&mut self.seen) }))
    }

    /// How the reading went; call once `next` has returned `None`.
    pub fn summary(self) -> Summary {
        let cursor = |side: Side| match (*self.max_modified.get(side), *self.cursor_cap.get(side)) {
            (Some(seen), Some(cap)) => Some(seen.min(cap)),
            (seen, _) => seen,
        };
        Summary {
            modes: self.modes,
            cursor: SidePair::new(cursor(Side::Left), cursor(Side::Right)),
            vanished: self.vanished,
        }
    }

    fn read_error(&self, side: Side) -> impl Fn(ConnectorError) -> EngineError + use<> {
        let connector = self.names.get(side).clone();
        move |source| EngineError::Read { side, connector: connector.clone(), source }
    }

    /// Sorts the records of a page of `side` out, and readies what can be planned.
    #[allow(clippy::too_many_arguments)]
    async fn read_page<C: Connector, K: Clock, P: Progress, S: StateStore>(
        &mut self,
        side: Side,
        page: Page,
        connectors: &mut SidePair<C>,
        store: &S,
        clock: &K,
        progress: &P,
        report: &mut RunReport,
    ) -> Result<(), EngineError> {
        let spec = self.spec;
        let link = spec.name.as_str();
        *self.tokens.get_mut(side) = page.next.clone();
        let mut split = Vec::with_capacity(page.records.len());
        for record in page.records {
            if let Some(modified) = record.modified {
                let max = self.max_modified.get_mut(side);
                *max = Some(max.map_or(modified, |max: Timestamp| max.max(modified)));
            }
            let deleted = record.deleted;
            match split_record(spec, side, record) {
                Ok((key, raw)) => split.push((key, raw, deleted)),
                Err(problem) => report.problems.push(problem),
            }
        }
        report.stats.side_mut(side).read += split.len() as u64;
        progress.advance(split.len() as u64);
        let page_digests = match &mut self.known {
            Some(known) => {
                let last = split.iter().map(|(key, _, _)| key).max();
                if last.is_some() {
                    known.load_through(store, link, self.layout, last)?;
                }
                std::collections::HashMap::new()
            }
            None => {
                let keys: Vec<RecordKey> = split.iter().map(|(key, _, _)| key.clone()).collect();
                store.digests(link, self.layout, &keys)?
            }
        };

        // Sort each record out: listed before, marked deleted, equal to its baseline by its raw
        // values, or to be normalised (with the baseline digest to compare with and its raw
        // digest), which is done for the whole page at once, on every core.
        let fingerprint = *self.fingerprints.get(side);
        let mut in_page: HashSet<RecordKey> = HashSet::with_capacity(split.len());
        let mut listed: Vec<(RecordKey, Option<DigestEntry>, Listed)> = Vec::new();
        let mut to_normalise: Vec<ToNormalise> = Vec::new();
        for (key, raw, deleted) in split {
            // One look-up of the baseline's digest per record: the map may hold a million.
            let known = self.known.as_mut().and_then(|known| known.get_mut(&key));
            let (listed_before, baseline_id) = match &known {
                Some(known) => (*known.listed.get(side), known.entry.id_str(side, &key).map(id_hash)),
                None => (false, None),
            };
            // What the baseline's own record is checked against. A record made again under a
            // new id has none: it is compared anew, so that its baseline follows the id.
            let basis_of = |entry: &DigestEntry| {
                entry.digest.filter(|_| entry.id_str(side, &key).is_none_or(|id| id == raw.id.as_str()))
            };
            let (basis, seen) = match &known {
                Some(known) => (basis_of(&known.entry), known.entry.seen(side)),
                None => match page_digests.get(&key) {
                    Some(entry) => (basis_of(entry), entry.seen(side)),
                    None => (None, None),
                },
            };
            if let Some(known) = known {
                *known.listed.get_mut(side) = true;
            }
            if in_page.contains(&key) {
                report.problems.push(format!(
                    "link key {key} appears more than once on the {side} side; record {} ignored",
                    raw.id
                ));
                continue;
            }
            if !self.first_listing(side, &key, &raw, listed_before, baseline_id, report) {
                continue;
            }
            // The fast path: the same raw values as when last found equal to this baseline.
            // Normalised only if its counterpart waits for it.
            let raw_digest = basis.map(|basis| digest_raw(basis, fingerprint, &raw.raw));
            if !deleted && raw_digest.is_some() && raw_digest == seen {
                report.stats.side_mut(side).unchanged_raw += 1;
                if !self.waiting.get(side.other()).contains_key(&key) {
                    self.note_listed(side, &key, &raw.id);
                    in_page.insert(key);
                    continue;
                }
            }
            in_page.insert(key.clone());
            let entry = match &self.known {
                Some(known) => known.get(&key).map(|known| known.entry.clone()),
                None => page_digests.get(&key).cloned(),
            };
            if deleted {
                listed.push((key, entry, Listed::Deleted(raw.id)));
                continue;
            }
            let check = basis.zip(raw_digest);
            to_normalise.push(ToNormalise { key, entry, raw, check });
        }
        let (checks, raws): (Vec<_>, Vec<_>) =
            to_normalise.into_iter().map(|item| ((item.key, item.entry, item.check), item.raw)).unzip();
        for ((key, entry, check), record) in checks.into_iter().zip(normalise_all(spec, side, raws)) {
            match check {
                Some((basis, raw_digest)) if side_digest(&record) == Some(basis) => {
                    if entry.as_ref().and_then(|entry| entry.seen(side)) != Some(raw_digest) {
                        self.seen.push((key.clone(), side, raw_digest));
                    }
                    listed.push((key, entry, Listed::Unchanged(record)));
                }
                _ => {
                    report.stats.side_mut(side).changed += 1;
                    listed.push((key, entry, Listed::Changed(record)));
                }
            }
        }

        // Pair what can be paired; let the rest wait for the other listing or look it up.
        let other = side.other();
        let mut lookups: Vec<Pending> = Vec::new();
        for (key, entry, outcome) in listed {
            let (presence, id) = match outcome {
                Listed::Unchanged(record) => {
                    if let Some(waiting) = self.waiting.get_mut(other).remove(&key) {
                        let id = record.id.clone();
                        self.pair(key, side, Presence::Present(record), Some(id), waiting);
                    } else {
                        self.note_listed(side, &key, &record.id);
                    }
                    continue;
                }
                Listed::Changed(record) => {
                    let id = record.id.clone();
                    (Presence::Present(record), id)
                }
                Listed::Deleted(id) => (Presence::Absent, id),
            };
            if let Some(waiting) = self.waiting.get_mut(other).remove(&key) {
                self.pair(key, side, presence, Some(id), waiting);
                continue;
            }
            let other_may_list = !*self.finished.get(other)
                && match (*self.modes.get(other), &self.known) {
                    // A full read lists every record: unless it has already listed this one.
                    (ReadMode::Full, Some(known)) => {
                        !known.get(&key).is_some_and(|known| *known.listed.get(other))
                    }
                    (ReadMode::Full, None) => true,
                    // An incremental one lists it if it changed there too.
                    (ReadMode::Incremental, _) => true,
                };
            if other_may_list {
                self.waiting.get_mut(side).insert(key, Waiting { presence, id, entry });
            } else {
                lookups.push(Pending { key, presence, id: Some(id), entry });
            }
        }
        if page.next.is_none() {
            *self.finished.get_mut(side) = true;
            // What still waits for this side will not be listed by it any more.
            let waiting = std::mem::take(self.waiting.get_mut(other));
            let mut pending: Vec<Pending> = waiting
                .into_iter()
                .map(|(key, waiting)| Pending {
                    key,
                    presence: waiting.presence,
                    id: Some(waiting.id),
                    entry: waiting.entry,
                })
                .collect();
            pending.sort_by(|a, b| a.key.cmp(&b.key));
            self.resolve(side, pending, connectors, clock, report).await?;
        }
        self.resolve(other, lookups, connectors, clock, report).await
    }

    /// Whether this is the first time `side`'s listing brings this key with this record: a
    /// record listed again (it changed while the listing went on) replaces a waiting one, is
    /// listed anew when it was seen unchanged, and holds the cursor back when it was planned
    /// already with another version. Another record with the same key is reported and ignored.
    /// `listed_before` and `baseline_id` come from the baseline's digest entry, when a full
    /// read has one.
    fn first_listing(
        &mut self,
        side: Side,
        key: &RecordKey,
        raw: &RawRecord,
        listed_before: bool,
        baseline_id: Option<u64>,
        report: &mut RunReport,
    ) -> bool {
        let id = id_hash(raw.id.as_str());
        let duplicate = |report: &mut RunReport| {
            report.problems.push(format!(
                "link key {key} appears more than once on the {side} side; record {} ignored",
                raw.id
            ));
            false
        };
        if let Some(waiting) = self.waiting.get(side).get(key) {
            if id_hash(waiting.id.as_str()) != id {
                return duplicate(report);
            }
            self.waiting.get_mut(side).remove(key);
            return true;
        }
        if let Some(handled) = self.handled.get(key) {
            if *handled.ids.get(side) != 0 && *handled.ids.get(side) != id {
                return duplicate(report);
            }
            if *handled.versions.get(side) != version_of(&raw.raw) {
                // Changed (or made) after it was planned: the next run reads it again.
                if let Some(modified) = raw.modified {
                    let cap = self.cursor_cap.get_mut(side);
                    *cap = Some(cap.map_or(modified, |cap: Timestamp| cap.min(modified)));
                }
            }
            return false;
        }
        if listed_before {
            // A full read lists each record once, unless it changed meanwhile: then it is the
            // baseline's record again, and read anew.
            return if baseline_id.is_some_and(|baseline| baseline != id) { duplicate(report) } else { true };
        }
        if self.listed.get(side).get(key).is_some_and(|listed| *listed != id) {
            return duplicate(report);
        }
        true
    }

    /// Remembers a listed record that needs no planning, for duplicate checks.
    fn note_listed(&mut self, side: Side, key: &RecordKey, id: &RecordId) {
        if *self.modes.get(side) == ReadMode::Incremental {
            self.listed.get_mut(side).insert(key.clone(), id_hash(id.as_str()));
        }
    }

    /// Readies a candidate from a record of `side` and the other side's waiting record.
    fn pair(
        &mut self,
        key: RecordKey,
        side: Side,
        presence: Presence,
        id: Option<RecordId>,
        waiting: Waiting,
    ) {
        let had_baseline = waiting.entry.is_some() || self.has_baseline(&key);
        let mut pair = SidePair::new(Presence::Unknown, Presence::Unknown);
        let mut ids = SidePair::new(None, None);
        *pair.get_mut(side) = presence;
        *ids.get_mut(side) = id;
        *pair.get_mut(side.other()) = waiting.presence;
        *ids.get_mut(side.other()) = Some(waiting.id);
        self.ready_candidate(key, pair, ids, had_baseline);
    }

    fn has_baseline(&self, key: &RecordKey) -> bool {
        self.known.as_ref().is_some_and(|known| known.contains_key(key))
    }

    /// Hands a candidate out and remembers what it was planned with.
    fn ready_candidate(
        &mut self,
        key: RecordKey,
        presence: SidePair<Presence>,
        ids: SidePair<Option<RecordId>>,
        had_baseline: bool,
    ) {
        let mut handled = Handled::default();
        for side in Side::BOTH {
            if let Presence::Present(record) = presence.get(side) {
                *handled.versions.get_mut(side) = version_of(&record.raw);
            }
            *handled.ids.get_mut(side) = ids.get(side).as_ref().map_or(0, |id| id_hash(id.as_str()));
        }
        self.handled.insert(key.clone(), handled);
        self.ready.push(Candidate { key, presence, had_baseline });
    }

    /// Looks up on `side` the counterparts of `pending` (records of the other side) and
    /// readies them.
    async fn resolve<C: Connector, K: Clock>(
        &mut self,
        side: Side,
        pending: Vec<Pending>,
        connectors: &mut SidePair<C>,
        clock: &K,
        report: &mut RunReport,
    ) -> Result<(), EngineError> {
        if pending.is_empty() {
            return Ok(());
        }
        let wanted: Vec<(RecordKey, Option<RecordId>)> = pending
            .iter()
            .map(|pending| {
                let id = pending.entry.as_ref().and_then(|entry| entry.id(side, &pending.key));
                (pending.key.clone(), id)
            })
            .collect();
        let mut found = self.look_up(side, &wanted, connectors, clock, report).await?;
        for pending in pending {
            let presence = found.remove(&pending.key).unwrap_or(Presence::Unknown);
            let had_baseline = pending.entry.is_some() || self.has_baseline(&pending.key);
            let mut pair = SidePair::new(Presence::Unknown, Presence::Unknown);
            let mut ids = SidePair::new(None, None);
            let id = match &presence {
                Presence::Present(record) => Some(record.id.clone()),
                _ => None,
            };
            *pair.get_mut(side) = presence;
            *ids.get_mut(side) = id;
            *pair.get_mut(side.other()) = pending.presence;
            *ids.get_mut(side.other()) = pending.id;
            self.ready_candidate(pending.key, pair, ids, had_baseline);
        }
        Ok(())
    }

    /// What `side` holds for each key: looked up by its baseline id where there is one (and
    /// by link key when that id is gone: a record made again has a new id), else by link key.
    /// A key that cannot be looked up is `Unknown`, or `Absent` when the side was read in full.
    async fn look_up<C: Connector, K: Clock>(
        &mut self,
        side: Side,
        wanted: &[(RecordKey, Option<RecordId>)],
        connectors: &mut SidePair<C>,
        clock: &K,
        report: &mut RunReport,
    ) -> Result<HashMap<RecordKey, Presence>, EngineError> {
        let spec = self.spec;
        let capabilities = *self.capabilities.get(side);
        let full = *self.modes.get(side) == ReadMode::Full;
        let read_error = self.read_error(side);
        let connector = connectors.get_mut(side);
        let paths = spec.read_paths(side);
        let mut presences: HashMap<RecordKey, Presence> = HashMap::with_capacity(wanted.len());
        let mut by_id: Vec<(&RecordKey, &RecordId)> = Vec::new();
        let mut by_key: Vec<&RecordKey> = Vec::new();
        for (key, id) in wanted {
            match id {
                Some(id) => by_id.push((key, id)),
                None if capabilities.lookup_by_key => by_key.push(key),
                None => {
                    let presence = if full { Presence::Absent } else { Presence::Unknown };
                    presences.insert(key.clone(), presence);
                }
            }
        }
        let mut records: Vec<ConnectorRecord> = Vec::new();
        for chunk in by_id.chunks(LOOKUP_CHUNK) {
            let lookup = Lookup::Ids(chunk.iter().map(|(_, id)| (*id).clone()).collect());
            records.extend(
                with_retries(clock, async || connector.lookup(&paths, &lookup).await)
                    .await
                    .map_err(&read_error)?,
            );
        }
        if capabilities.lookup_by_key {
            let found_ids: HashSet<&RecordId> =
                records.iter().filter(|record| !record.deleted).map(|record| &record.id).collect();
            by_key.extend(by_id.iter().filter(|(_, id)| !found_ids.contains(id)).map(|(key, _)| *key));
        }
        let mut by_key_records = Vec::new();
        for chunk in by_key.chunks(LOOKUP_CHUNK) {
            let lookup = Lookup::Key {
                path: spec.key.get(side).clone(),
                values: chunk.iter().map(|key| key.as_str().to_string()).collect(),
            };
            by_key_records.extend(
                with_retries(clock, async || connector.lookup(&paths, &lookup).await)
                    .await
                    .map_err(&read_error)?,
            );
        }
        // Everything looked up and not found is absent.
        for (key, _) in &by_id {
            presences.insert((*key).clone(), Presence::Absent);
        }
        for key in &by_key {
            presences.insert((*key).clone(), Presence::Absent);
        }
        let mut raws = Vec::new();
        let mut keys = Vec::new();
        for record in records.into_iter().chain(by_key_records) {
            if record.deleted {
                continue;
            }
            match split_record(spec, side, record) {
                Ok((key, raw)) if presences.contains_key(&key) => {
                    keys.push(key);
                    raws.push(raw);
                }
                Ok(_) => {}
                Err(problem) => report.problems.push(problem),
            }
        }
        for (key, record) in keys.into_iter().zip(normalise_all(spec, side, raws)) {
            presences.insert(key, Presence::Present(record));
        }
        Ok(presences)
    }

    /// After both listings: records a full read did not list (deleted, or skipped by a
    /// listing whose paging shifted: only a look-up tells), and records with a live review or
    /// an unfinished write, whose plans are renewed from fresh reads every run.
    async fn leftovers<C: Connector, K: Clock, S: StateStore>(
        &mut self,
        connectors: &mut SidePair<C>,
        store: &S,
        clock: &K,
        report: &mut RunReport,
    ) -> Result<(), EngineError> {
        let link = self.spec.name.as_str();
        let mut keys: BTreeSet<RecordKey> = BTreeSet::new();
        if let Some(known) = &mut self.known {
            known.load_through(store, link, self.layout, None)?;
        }
        if let Some(known) = &self.known {
            for side in Side::BOTH {
                if *self.modes.get(side) != ReadMode::Full {
                    continue;
                }
                let mut vanished = 0;
                for (key, known) in known.iter() {
                    if !*known.listed.get(side) && known.entry.tombstone != Some(side) {
                        vanished += 1;
                        keys.insert(key.clone());
                    }
                }
                *self.vanished.get_mut(side) = vanished;
                report.stats.side_mut(side).deleted = vanished;
            }
        }
        keys.extend(store.keys_with_live_reviews(link)?);
        keys.extend(store.open_outbox_keys(link)?);
        keys.retain(|key| !self.handled.contains_key(key));
        if keys.is_empty() {
            return Ok(());
        }
        let keys: Vec<RecordKey> = keys.into_iter().collect();
        let entries: HashMap<RecordKey, DigestEntry> = match &self.known {
            Some(known) => keys
                .iter()
                .filter_map(|key| known.get(key).map(|known| (key.clone(), known.entry.clone())))
                .collect(),
            None => store.digests(link, self.layout, &keys)?.into_iter().collect(),
        };
        for chunk in keys.chunks(CHUNK) {
            let mut found = SidePair::new(HashMap::new(), HashMap::new());
            for side in Side::BOTH {
                let wanted: Vec<(RecordKey, Option<RecordId>)> = chunk
                    .iter()
                    .map(|key| (key.clone(), entries.get(key).and_then(|entry| entry.id(side, key))))
                    .collect();
                *found.get_mut(side) = self.look_up(side, &wanted, connectors, clock, report).await?;
            }
            for key in chunk {
                let mut presence = SidePair::new(Presence::Unknown, Presence::Unknown);
                let mut ids = SidePair::new(None, None);
                for side in Side::BOTH {
                    let state = found.get_mut(side).remove(key).unwrap_or(Presence::Unknown);
                    if let Presence::Present(record) = &state {
                        *ids.get_mut(side) = Some(record.id.clone());
                    }
                    *presence.get_mut(side) = state;
                }
                self.ready_candidate(key.clone(), presence, ids, entries.contains_key(key));
            }
        }
        Ok(())
    }
}
