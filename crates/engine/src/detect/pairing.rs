//! The pairing of detection: a pure, synchronous state machine fed what the listings, the
//! look-ups and the state store's digests brought. It says which record waits for which,
//! what must be looked up, what is unchanged and what is ready to merge; `Detector` does the
//! reading and feeds it. Key types: `Pairing`, `SortedPage`, `Lookups`, `KnownBaselines`.

use std::cell::Cell;
use std::collections::BTreeSet;

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};

use fieldsync_model::{RecordDigest, RecordId, RecordKey, Side, digest_raw, digest_values};
use fieldsync_store::DigestEntry;
use jiff::Timestamp;

use super::{CHUNK, Candidate, Chunk, Presence, RawRecord, SideRecord, Summary};
use crate::report::{ReadMode, RunReport};
use crate::spec::SidePair;

/// The digest of a record's normalised values, when every one is valid.
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
/// with the same link key. Never 0, which stands for no record.
fn id_hash(id: &str) -> u64 {
    use std::hash::{Hash as _, Hasher as _};
    let mut hasher = std::hash::DefaultHasher::new();
    id.hash(&mut hasher);
    hasher.finish().max(1)
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

    fn new(capacity: usize) -> Self {
        Self {
            entries: Vec::with_capacity(capacity),
            next: Cell::new(0),
            loaded_through: None,
            complete: false,
            page: Self::PAGES.0,
        }
    }

    /// Whether the baselines up to `key` (every one with `None`) are not all loaded yet.
    fn short_of(&self, key: Option<&RecordKey>) -> bool {
        !self.complete && key.is_none_or(|key| self.loaded_through.as_ref().is_none_or(|loaded| loaded < key))
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
}

/// A page of baselines the pairing asks for: those after `after`, at most `size` of them,
/// in key order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BaselinePage {
    pub after: Option<RecordKey>,
    pub size: usize,
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

/// A listed record to normalise: its key, its baseline's digest entry and, when it has a
/// baseline to compare with, that baseline's digest and the record's raw digest.
struct Check {
    key: RecordKey,
    entry: Option<DigestEntry>,
    digests: Option<(RecordDigest, RecordDigest)>,
}

/// A page of one side sorted out before normalising: what its system marked deleted, and
/// the records that must be normalised to be told apart from their baselines.
pub(crate) struct SortedPage {
    side: Side,
    deleted: Vec<(RecordKey, Option<DigestEntry>, RecordId)>,
    checks: Vec<Check>,
    /// The records to normalise; `Pairing::pair_page` takes them back normalised, in order.
    pub raws: Vec<RawRecord>,
}

/// A record of one side whose counterpart must be looked up on the other.
struct Pending {
    key: RecordKey,
    presence: Presence,
    id: Option<RecordId>,
    entry: Option<DigestEntry>,
}

/// Records whose counterparts must be looked up on one side before they can be merged.
pub(crate) struct Lookups {
    side: Side,
    pending: Vec<Pending>,
}

impl Lookups {
    /// The side to look on.
    pub fn side(&self) -> Side {
        self.side
    }

    /// Whether there is nothing to look up.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// What to look up: each key, with the id its baseline knows on the side, if any.
    pub fn wanted(&self) -> Vec<(RecordKey, Option<RecordId>)> {
        self.pending
            .iter()
            .map(|pending| {
                let id = pending.entry.as_ref().and_then(|entry| entry.id(self.side, &pending.key));
                (pending.key.clone(), id)
            })
            .collect()
    }
}

/// Pairs the records both listings bring, as they come. Fed pages (`sort_page`, then
/// `pair_page` with the records normalised), the ends of the listings (`finish_listing`),
/// look-up results (`looked_up`) and the baselines' digest entries (`baselines_loaded`); it
/// hands out what is ready to merge (`take_chunk`).
pub(crate) struct Pairing {
    modes: SidePair<ReadMode>,
    /// `LinkSpec::fingerprint` of each side: part of every raw digest.
    fingerprints: SidePair<u64>,
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
}

impl Pairing {
    /// A pairing of two listings read as `modes` says; `baselines` is how many live baselines
    /// the link has (a side read in full loads every one's digest entry, see
    /// `baselines_wanted`).
    pub fn new(modes: SidePair<ReadMode>, fingerprints: SidePair<u64>, baselines: usize) -> Self {
        let any_full = modes.left == ReadMode::Full || modes.right == ReadMode::Full;
        Self {
            modes,
            fingerprints,
            finished: SidePair::new(false, false),
            known: any_full.then(|| KnownBaselines::new(baselines)),
            waiting: SidePair::default(),
            handled: HashMap::new(),
            listed: SidePair::default(),
            max_modified: SidePair::new(None, None),
            cursor_cap: SidePair::new(None, None),
            vanished: SidePair::new(0, 0),
            ready: Vec::new(),
            seen: Vec::new(),
        }
    }

    /// How `side` is read.
    pub fn mode(&self, side: Side) -> ReadMode {
        *self.modes.get(side)
    }

    /// Whether `side`'s listing has ended.
    pub fn finished(&self, side: Side) -> bool {
        *self.finished.get(side)
    }

    /// Whether the pairing holds every baseline's digest entry itself (a side is read in
    /// full), loaded through `baselines_wanted`; otherwise a page's entries come with it.
    pub fn loads_every_baseline(&self) -> bool {
        self.known.is_some()
    }

    /// The next page of baselines to load so that those up to `key` (every one with `None`)
    /// are known; `None` when they are.
    pub fn baselines_wanted(&self, key: Option<&RecordKey>) -> Option<BaselinePage> {
        let known = self.known.as_ref().filter(|known| known.short_of(key))?;
        Some(BaselinePage { after: known.loaded_through.clone(), size: known.page })
    }

    /// Takes the page of baselines asked for by `baselines_wanted`, in key order; `last` is
    /// the key of its last entry (`None`: there were no more).
    pub fn baselines_loaded(&mut self, entries: Vec<(RecordKey, DigestEntry)>, last: Option<RecordKey>) {
        let Some(known) = &mut self.known else { return };
        known.entries.extend(
            entries
                .into_iter()
                .map(|(key, entry)| (key, Known { entry, listed: SidePair::new(false, false) })),
        );
        known.page = (known.page * 2).min(KnownBaselines::PAGES.1);
        match last {
            Some(last) => known.loaded_through = Some(last),
            None => known.complete = true,
        }
    }

    /// Whether fewer candidates (and raw digests) are ready than make a chunk.
    pub fn wants_more(&self) -> bool {
        self.ready.len() < CHUNK && self.seen.len() < 10 * CHUNK
    }

    /// What is ready to merge, and the raw digests found, handed out at once; `None` when
    /// there is neither.
    pub fn take_chunk(&mut self) -> Option<Chunk> {
        if self.ready.is_empty() && self.seen.is_empty() {
            return None;
        }
        Some(Chunk { candidates: std::mem::take(&mut self.ready), seen: std::mem::take(&mut self.seen) })
    }

    /// How the reading went, once it is over.
    pub fn summary(self) -> Summary {
        let cursor = |side: Side| match (*self.max_modified.get(side), *self.cursor_cap.get(side)) {
            (Some(seen), Some(cap)) => Some(seen.min(cap)),
            (seen, _) => seen,
        };
        Summary {
            modes: self.modes,
            cursor: SidePair::new(cursor(Side::Left), cursor(Side::Right)),
            vanished: self.vanished,
            sequence: SidePair::new(None, None),
        }
    }

    /// Sorts a page of `side` out: records listed before, marked deleted, equal to their
    /// baselines by their raw values (the fast path: not normalised unless a counterpart waits
    /// for them), or to be normalised. `latest` is the page's latest modification time;
    /// `digests` the page's baseline entries when the pairing does not load every baseline
    /// (`loads_every_baseline`), which must be loaded through the page's last key otherwise.
    pub fn sort_page(
        &mut self,
        side: Side,
        latest: Option<Timestamp>,
        records: Vec<(RecordKey, RawRecord, bool)>,
        digests: &std::collections::HashMap<RecordKey, DigestEntry>,
        report: &mut RunReport,
    ) -> SortedPage {
        if let Some(latest) = latest {
            let max = self.max_modified.get_mut(side);
            *max = Some(max.map_or(latest, |max: Timestamp| max.max(latest)));
        }
        let fingerprint = *self.fingerprints.get(side);
        let mut sorted = SortedPage {
            side,
            deleted: Vec::new(),
            checks: Vec::new(),
            raws: Vec::with_capacity(records.len()),
        };
        let mut in_page: HashSet<RecordKey> = HashSet::with_capacity(records.len());
        for (key, raw, deleted) in records {
            // One look-up of the baseline's digest per record: there may be a million.
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
                None => match digests.get(&key) {
                    Some(entry) => (basis_of(entry), entry.seen(side)),
                    None => (None, None),
                },
            };
            if let Some(known) = known {
                *known.listed.get_mut(side) = true;
            }
            if in_page.contains(&key) {
                report.problems.push(duplicate_problem(&key, side, &raw.id));
                continue;
            }
            if !self.first_listing(side, &key, &raw, listed_before, baseline_id, report) {
                continue;
            }
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
                None => digests.get(&key).cloned(),
            };
            if deleted {
                sorted.deleted.push((key, entry, raw.id));
                continue;
            }
            sorted.checks.push(Check { key, entry, digests: basis.zip(raw_digest) });
            sorted.raws.push(raw);
        }
        sorted
    }

    /// Takes a sorted page back with its records normalised (in the order of its `raws`):
    /// tells the changed from the unchanged, pairs each record whose counterpart waits, lets
    /// the others wait for the other listing when it may still bring their counterparts, and
    /// returns the rest, to be looked up on the other side.
    pub fn pair_page(
        &mut self,
        page: SortedPage,
        records: Vec<SideRecord>,
        report: &mut RunReport,
    ) -> Lookups {
        let side = page.side;
        let mut listed: Vec<(RecordKey, Option<DigestEntry>, Listed)> =
            page.deleted.into_iter().map(|(key, entry, id)| (key, entry, Listed::Deleted(id))).collect();
        for (check, record) in page.checks.into_iter().zip(records) {
            let Check { key, entry, digests } = check;
            match digests {
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
        let mut lookups = Lookups { side: side.other(), pending: Vec::new() };
        for (key, entry, outcome) in listed {
            if let Some(pending) = self.pair_or_wait(side, key, entry, outcome) {
                lookups.pending.push(pending);
            }
        }
        lookups
    }

    /// Pairs one sorted record of `side` with its waiting counterpart, or lets it wait for
    /// the other listing; returns it when its counterpart must be looked up instead.
    fn pair_or_wait(
        &mut self,
        side: Side,
        key: RecordKey,
        entry: Option<DigestEntry>,
        outcome: Listed,
    ) -> Option<Pending> {
        let other = side.other();
        let (presence, id) = match outcome {
            Listed::Unchanged(record) => {
                if let Some(waiting) = self.waiting.get_mut(other).remove(&key) {
                    let id = record.id.clone();
                    self.pair(key, side, Presence::Present(record), Some(id), waiting);
                } else {
                    self.note_listed(side, &key, &record.id);
                }
                return None;
            }
            Listed::Changed(record) => {
                let id = record.id.clone();
                (Presence::Present(record), id)
            }
            Listed::Deleted(id) => (Presence::Absent, id),
        };
        if let Some(waiting) = self.waiting.get_mut(other).remove(&key) {
            self.pair(key, side, presence, Some(id), waiting);
            return None;
        }
        if self.may_list(other, &key) {
            self.waiting.get_mut(side).insert(key, Waiting { presence, id, entry });
            return None;
        }
        Some(Pending { key, presence, id: Some(id), entry })
    }

    /// Whether `side`'s listing may still bring `key`.
    fn may_list(&self, side: Side, key: &RecordKey) -> bool {
        !*self.finished.get(side)
            && match (*self.modes.get(side), &self.known) {
                // A full read lists every record: unless it has already listed this one.
                (ReadMode::Full, Some(known)) => !known.get(key).is_some_and(|known| *known.listed.get(side)),
                (ReadMode::Full, None) => true,
                // An incremental (or targeted) one lists it if it changed there too (and was
                // named).
                (ReadMode::Incremental | ReadMode::Targeted, _) => true,
            }
    }

    /// `side`'s listing has ended: what still waits for it will not be listed by it any
    /// more, and is to be looked up on it, in key order.
    pub fn finish_listing(&mut self, side: Side) -> Lookups {
        *self.finished.get_mut(side) = true;
        let waiting = std::mem::take(self.waiting.get_mut(side.other()));
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
        Lookups { side, pending }
    }

    /// Takes what the side of `lookups` holds for each of its keys (a key missing from
    /// `found` is `Unknown`) and readies each record with its counterpart.
    pub fn looked_up(&mut self, lookups: Lookups, mut found: HashMap<RecordKey, Presence>) {
        let side = lookups.side;
        for pending in lookups.pending {
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
    }

    /// After both listings, with every baseline loaded: the keys of the records with a
    /// baseline that a full read did not list (deleted, or skipped by a listing whose paging
    /// shifted: only a look-up tells), counted as deleted in the report.
    pub fn vanished(&mut self, report: &mut RunReport) -> BTreeSet<RecordKey> {
        let mut keys = BTreeSet::new();
        let Some(known) = &self.known else { return keys };
        for side in Side::BOTH {
            if *self.modes.get(side) != ReadMode::Full {
                continue;
            }
            let mut vanished = 0;
            for (key, known) in &known.entries {
                if !*known.listed.get(side) && known.entry.tombstone != Some(side) {
                    vanished += 1;
                    keys.insert(key.clone());
                }
            }
            *self.vanished.get_mut(side) = vanished;
            report.stats.side_mut(side).deleted = vanished;
        }
        keys
    }

    /// The keys of `keys` not yet handed out, in order.
    pub fn unhandled(&self, keys: BTreeSet<RecordKey>) -> Vec<RecordKey> {
        keys.into_iter().filter(|key| !self.handled.contains_key(key)).collect()
    }

    /// The digest entries of `keys` when the pairing holds every baseline's; `None` when the
    /// state store must be asked.
    pub fn known_entries(&self, keys: &[RecordKey]) -> Option<HashMap<RecordKey, DigestEntry>> {
        let known = self.known.as_ref()?;
        Some(
            keys.iter()
                .filter_map(|key| known.get(key).map(|known| (key.clone(), known.entry.clone())))
                .collect(),
        )
    }

    /// Readies a record neither listing brought in this run, as both sides' look-ups found it.
    pub fn found_leftover(&mut self, key: RecordKey, presence: SidePair<Presence>, had_baseline: bool) {
        let mut ids = SidePair::new(None, None);
        for side in Side::BOTH {
            if let Presence::Present(record) = presence.get(side) {
                *ids.get_mut(side) = Some(record.id.clone());
            }
        }
        self.ready_candidate(key, presence, ids, had_baseline);
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
            report.problems.push(duplicate_problem(key, side, &raw.id));
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
        if *self.modes.get(side) != ReadMode::Full {
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
}

/// The problem a second record with a link key already listed on its side makes.
fn duplicate_problem(key: &RecordKey, side: Side, id: &RecordId) -> String {
    format!("link key {key} appears more than once on the {side} side; record {id} ignored")
}

#[cfg(test)]
mod tests {
    use fieldsync_model::{LinkName, Value};
    use serde_json::json;

    use super::*;

    const FULL: ReadMode = ReadMode::Full;
    const INCREMENTAL: ReadMode = ReadMode::Incremental;
    const FINGERPRINTS: SidePair<u64> = SidePair { left: 11, right: 22 };

    fn report() -> RunReport {
        RunReport::new(LinkName::new("members"), SidePair::new("left".into(), "right".into()), false)
    }

    /// A pairing of two full reads of a link with no baselines yet, and its report.
    fn first_sync() -> (Pairing, RunReport) {
        let mut pairing = Pairing::new(SidePair::new(FULL, FULL), FINGERPRINTS, 0);
        load_all(&mut pairing, Vec::new());
        (pairing, report())
    }

    fn key(text: &str) -> RecordKey {
        RecordKey::new(text)
    }

    fn raw(id: &str, value: &str) -> RawRecord {
        RawRecord { id: RecordId::new(id), raw: vec![json!(value)], modified: None }
    }

    /// What normalising does to a record of one text field.
    fn normalised(raw: RawRecord) -> SideRecord {
        let values =
            raw.raw.iter().map(|value| Ok(Value::from(value.as_str().unwrap_or_default()))).collect();
        SideRecord { id: raw.id, raw: raw.raw, values, copied: Vec::new(), modified: raw.modified }
    }

    /// A baseline entry agreeing on `value`, with both sides' raw digests as `seen` says.
    fn entry(key_text: &str, ids: [&str; 2], value: &str, seen: SidePair<bool>) -> DigestEntry {
        let digest = digest_values([Some(&Value::from(value))]);
        let raw_digest =
            |side: Side| seen.get(side).then(|| digest_raw(digest, *FINGERPRINTS.get(side), &[json!(value)]));
        DigestEntry::new(
            &key(key_text),
            Some(digest),
            [Some(ids[0]), Some(ids[1])],
            None,
            [raw_digest(Side::Left), raw_digest(Side::Right)],
        )
    }

    /// Feeds one page of `side` through sorting, normalising and pairing; returns the
    /// look-ups it asks for on the other side and, when `last`, those on `side` itself.
    fn page(
        pairing: &mut Pairing,
        side: Side,
        records: Vec<(&str, RawRecord)>,
        last: bool,
        report: &mut RunReport,
    ) -> (Lookups, Option<Lookups>) {
        let latest = records.iter().filter_map(|(_, raw)| raw.modified).max();
        let records = records.into_iter().map(|(key_text, raw)| (key(key_text), raw, false)).collect();
        let mut sorted = pairing.sort_page(side, latest, records, &std::collections::HashMap::new(), report);
        let records = std::mem::take(&mut sorted.raws).into_iter().map(normalised).collect();
        let lookups = pairing.pair_page(sorted, records, report);
        (lookups, last.then(|| pairing.finish_listing(side)))
    }

    fn load_all(pairing: &mut Pairing, entries: Vec<(&str, DigestEntry)>) {
        let entries: Vec<(RecordKey, DigestEntry)> =
            entries.into_iter().map(|(key_text, entry)| (key(key_text), entry)).collect();
        let last = entries.last().map(|(key, _)| key.clone());
        pairing.baselines_loaded(entries, last);
        pairing.baselines_loaded(Vec::new(), None);
    }

    fn candidates(pairing: &mut Pairing) -> Vec<Candidate> {
        pairing.take_chunk().map(|chunk| chunk.candidates).unwrap_or_default()
    }

    /// What each side holds for a candidate, in a word.
    fn shapes(candidate: &Candidate) -> (&'static str, &'static str) {
        let shape = |presence: &Presence| match presence {
            Presence::Present(_) => "present",
            Presence::Absent => "absent",
            Presence::Unknown => "unknown",
        };
        (shape(&candidate.presence.left), shape(&candidate.presence.right))
    }

    /// The shapes of every candidate ready now, in order.
    fn ready_shapes(pairing: &mut Pairing) -> Vec<(&'static str, &'static str)> {
        candidates(pairing).iter().map(shapes).collect()
    }

    /// The pairing holds no `Rc` or borrow across the driver's awaits: a run's future stays
    /// `Send` whenever its connectors' futures are.
    #[test]
    fn the_pairing_and_what_it_hands_out_can_cross_threads() {
        fn send<T: Send>() {}
        send::<Pairing>();
        send::<SortedPage>();
        send::<Lookups>();
        send::<Chunk>();
        send::<super::super::Detector<'static>>();
    }

    #[test]
    fn a_record_listed_on_one_side_waits_for_the_other_listing() {
        let (mut pairing, mut report) = first_sync();
        let (lookups, _) =
            page(&mut pairing, Side::Left, vec![("K1", raw("L1", "anna"))], false, &mut report);
        assert!(lookups.is_empty(), "the right listing may still bring K1");
        assert!(pairing.take_chunk().is_none(), "nothing is ready before its counterpart comes");
        let (lookups, end) =
            page(&mut pairing, Side::Right, vec![("K1", raw("R1", "anna"))], true, &mut report);
        assert!(lookups.is_empty() && end.is_some_and(|end| end.is_empty()));
        let ready = candidates(&mut pairing);
        assert_eq!(ready.len(), 1);
        assert_eq!(ready[0].key, key("K1"));
        assert_eq!(shapes(&ready[0]), ("present", "present"));
        assert!(!ready[0].had_baseline);
        assert_eq!((report.stats.left.changed, report.stats.right.changed), (1, 1));
    }

    #[test]
    fn a_record_only_on_one_side_is_looked_up_when_the_other_listing_ends_without_it() {
        let (mut pairing, mut report) = first_sync();
        page(&mut pairing, Side::Left, vec![("K1", raw("L1", "anna"))], false, &mut report);
        let (_, end) = page(&mut pairing, Side::Right, vec![], true, &mut report);
        let end = end.unwrap();
        assert_eq!(end.side(), Side::Right);
        assert_eq!(end.wanted(), vec![(key("K1"), None)]);
        let mut found = HashMap::new();
        found.insert(key("K1"), Presence::Absent);
        pairing.looked_up(end, found);
        assert_eq!(ready_shapes(&mut pairing), [("present", "absent")]);
    }

    #[test]
    fn a_change_is_looked_up_at_once_when_the_other_side_is_read_incrementally_and_done() {
        let mut report = report();
        let mut pairing = Pairing::new(SidePair::new(INCREMENTAL, INCREMENTAL), FINGERPRINTS, 0);
        assert!(!pairing.loads_every_baseline());
        page(&mut pairing, Side::Right, vec![], true, &mut report);
        let (lookups, _) =
            page(&mut pairing, Side::Left, vec![("K1", raw("L1", "anna"))], false, &mut report);
        assert_eq!((lookups.side(), lookups.wanted()), (Side::Right, vec![(key("K1"), None)]));
        // Not found: an incremental side that cannot tell leaves it unknown.
        pairing.looked_up(lookups, HashMap::new());
        assert_eq!(ready_shapes(&mut pairing), [("present", "unknown")]);
    }

    #[test]
    fn a_record_whose_raw_values_are_unchanged_is_not_normalised() {
        let mut report = report();
        let mut pairing = Pairing::new(SidePair::new(FULL, FULL), FINGERPRINTS, 1);
        load_all(&mut pairing, vec![("K1", entry("K1", ["L1", "R1"], "anna", SidePair::new(true, false)))]);
        let records = vec![(key("K1"), raw("L1", "anna"), false)];
        let sorted =
            pairing.sort_page(Side::Left, None, records, &std::collections::HashMap::new(), &mut report);
        assert!(sorted.raws.is_empty(), "the fast path normalises nothing");
        assert_eq!(report.stats.left.unchanged_raw, 1);
        // Its raw digest not yet known on the right: normalised, found equal, and its raw digest
        // handed out for the next run's fast path.
        let records = vec![(key("K1"), raw("R1", "anna"), false)];
        let mut sorted =
            pairing.sort_page(Side::Right, None, records, &std::collections::HashMap::new(), &mut report);
        assert_eq!(sorted.raws.len(), 1);
        let records = std::mem::take(&mut sorted.raws).into_iter().map(normalised).collect();
        assert!(pairing.pair_page(sorted, records, &mut report).is_empty());
        let chunk = pairing.take_chunk().unwrap();
        assert!(chunk.candidates.is_empty(), "an unchanged record is not planned");
        assert_eq!(chunk.seen.len(), 1);
        assert_eq!((&chunk.seen[0].0, chunk.seen[0].1), (&key("K1"), Side::Right));
        assert_eq!(report.stats.right.changed, 0);
    }

    #[test]
    fn an_unchanged_record_whose_counterpart_changed_is_paired_with_it() {
        let mut report = report();
        let mut pairing = Pairing::new(SidePair::new(FULL, FULL), FINGERPRINTS, 1);
        load_all(&mut pairing, vec![("K1", entry("K1", ["L1", "R1"], "anna", SidePair::new(true, true)))]);
        page(&mut pairing, Side::Left, vec![("K1", raw("L1", "anne"))], false, &mut report);
        page(&mut pairing, Side::Right, vec![("K1", raw("R1", "anna"))], false, &mut report);
        let ready = candidates(&mut pairing);
        assert_eq!(ready.len(), 1);
        assert!(ready[0].had_baseline);
        assert_eq!((report.stats.left.changed, report.stats.right.unchanged_raw), (1, 1));
    }

    #[test]
    fn a_record_listed_again_replaces_its_waiting_version_and_one_planned_holds_the_cursor_back() {
        let (mut pairing, mut report) = first_sync();
        page(&mut pairing, Side::Left, vec![("K1", raw("L1", "anna"))], false, &mut report);
        // It changed while the listing went on, and moved to a later page.
        page(&mut pairing, Side::Left, vec![("K1", raw("L1", "anne"))], false, &mut report);
        page(&mut pairing, Side::Right, vec![("K1", raw("R1", "anna"))], false, &mut report);
        let ready = candidates(&mut pairing);
        assert_eq!(ready.len(), 1);
        let Presence::Present(left) = &ready[0].presence.left else { panic!("K1 is on the left") };
        assert_eq!(left.raw, vec![json!("anne")]);
        // Listed once more after it was planned, with other values, on a page reaching later
        // times: the cursor stays at its time, so that the next run reads it again.
        let time = |text: &str| -> Option<Timestamp> { Some(text.parse().unwrap()) };
        let again = RawRecord { modified: time("2025-01-01T00:00:00Z"), ..raw("L1", "annie") };
        let other = RawRecord { modified: time("2025-02-01T00:00:00Z"), ..raw("L9", "zeno") };
        page(&mut pairing, Side::Left, vec![("K1", again), ("K9", other)], false, &mut report);
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert_eq!(pairing.summary().cursor.left, time("2025-01-01T00:00:00Z"));
    }

    #[test]
    fn another_record_with_a_key_already_listed_is_reported_and_ignored() {
        let (mut pairing, mut report) = first_sync();
        let twice = vec![("K1", raw("L1", "anna")), ("K1", raw("L2", "bert"))];
        page(&mut pairing, Side::Left, twice, false, &mut report);
        page(&mut pairing, Side::Left, vec![("K1", raw("L3", "carl"))], false, &mut report);
        assert_eq!(report.problems.len(), 2, "{:?}", report.problems);
        assert!(report.problems[0].contains("record L2 ignored"));
        assert!(report.problems[1].contains("record L3 ignored"));
    }

    #[test]
    fn a_vanished_record_is_counted_and_looked_up_at_the_end() {
        let mut report = report();
        let mut pairing = Pairing::new(SidePair::new(FULL, INCREMENTAL), FINGERPRINTS, 2);
        let both = SidePair::new(true, true);
        load_all(
            &mut pairing,
            vec![
                ("K1", entry("K1", ["L1", "R1"], "anna", both)),
                ("K2", entry("K2", ["L2", "R2"], "bert", both)),
            ],
        );
        page(&mut pairing, Side::Left, vec![("K1", raw("L1", "anna"))], true, &mut report);
        page(&mut pairing, Side::Right, vec![], true, &mut report);
        let vanished = pairing.vanished(&mut report);
        assert_eq!(vanished.iter().collect::<Vec<_>>(), vec![&key("K2")]);
        assert_eq!((report.stats.left.deleted, report.stats.right.deleted), (1, 0));
        let keys = pairing.unhandled(vanished);
        let entries = pairing.known_entries(&keys).unwrap();
        assert_eq!(entries[&key("K2")].id(Side::Right, &key("K2")), Some(RecordId::new("R2")));
        let presence = SidePair::new(Presence::Absent, Presence::Present(normalised(raw("R2", "bert"))));
        pairing.found_leftover(key("K2"), presence, true);
        assert_eq!(ready_shapes(&mut pairing), [("absent", "present")]);
        assert_eq!(pairing.summary().vanished, SidePair::new(1, 0));
    }

    #[test]
    fn baselines_are_asked_for_a_page_at_a_time_as_far_as_the_listings_have_come() {
        let mut pairing = Pairing::new(SidePair::new(FULL, FULL), FINGERPRINTS, 4);
        let first = pairing.baselines_wanted(Some(&key("K2"))).unwrap();
        assert_eq!(first, BaselinePage { after: None, size: KnownBaselines::PAGES.0 });
        let both = SidePair::new(true, true);
        pairing.baselines_loaded(
            vec![
                (key("K1"), entry("K1", ["L1", "R1"], "a", both)),
                (key("K2"), entry("K2", ["L2", "R2"], "b", both)),
            ],
            Some(key("K2")),
        );
        assert_eq!(pairing.baselines_wanted(Some(&key("K2"))), None, "loaded through K2");
        let next = pairing.baselines_wanted(Some(&key("K3"))).unwrap();
        assert_eq!(next, BaselinePage { after: Some(key("K2")), size: 2 * KnownBaselines::PAGES.0 });
        pairing.baselines_loaded(Vec::new(), None);
        assert_eq!(pairing.baselines_wanted(None), None, "every baseline is loaded");
    }

    #[test]
    fn counterparts_on_later_pages_meet_and_chunks_hand_out_what_is_ready() {
        let (mut pairing, mut report) = first_sync();
        let both = vec![("K1", raw("L1", "a")), ("K2", raw("L2", "b"))];
        page(&mut pairing, Side::Left, both, false, &mut report);
        page(&mut pairing, Side::Right, vec![("K1", raw("R1", "a"))], false, &mut report);
        assert_eq!(candidates(&mut pairing).len(), 1, "K1 met; K2 waits for the next right page");
        page(&mut pairing, Side::Left, vec![], true, &mut report);
        page(&mut pairing, Side::Right, vec![("K2", raw("R2", "b"))], true, &mut report);
        let ready = candidates(&mut pairing);
        assert_eq!(ready.iter().map(|candidate| candidate.key.clone()).collect::<Vec<_>>(), vec![key("K2")]);
        assert!(pairing.wants_more());
    }
}
