//! Detection's I/O: `Detector` reads both sides a page at a time, both at once, with retries,
//! looks records up, reads the state store's digests and normalises, and feeds what it read to
//! the pure `pairing::Pairing`, which decides what waits, what is looked up and what is
//! unchanged; candidates go to the planner a chunk at a time. Also `SideRecord`, `Presence`,
//! `Candidate`, and `normalise_all` (records normalised off the runtime's workers).

mod pairing;

use std::time::{Duration, Instant};

use foldhash::{HashMap, HashMapExt, HashSet};

use fieldsync_connector::{
    Capabilities, Connector, ConnectorError, ConnectorRecord, Lookup, Page, PageToken, ReadRequest, Sequence,
};
use fieldsync_model::{NormaliseError, Reading, RecordDigest, RecordId, RecordKey, Side, Value};
use fieldsync_store::{DigestEntry, Lease, LinkLayout, StateStore};
use jiff::Timestamp;

use self::pairing::{Lookups, Pairing};
use crate::blocking::blocking;
use crate::report::{ReadMode, RunReport};
use crate::run::{LinkRun, RunContext};
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
    /// The point of each side's change feed its listing reached (`Page::sequence`), if its
    /// connector gave one.
    pub sequence: SidePair<Option<Sequence>>,
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

/// Normalises records in place, off the runtime's workers as the store's calls are
/// (`blocking`). Measured on two cores, this is faster and leaner than splitting a page across
/// tokio's blocking pool: the records stay with the thread that allocated them.
pub(crate) fn normalise_all(spec: &LinkSpec, side: Side, raws: Vec<RawRecord>) -> Vec<SideRecord> {
    blocking(|| raws.into_iter().map(|raw| raw.normalise(spec, side)).collect())
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

/// The next page of a listing, with retries; for a side of a targeted run, the records `named`,
/// looked up by id, as its one page.
async fn fetch<C: Connector, K: Clock>(
    connector: &mut C,
    request: &ReadRequest,
    token: Option<&PageToken>,
    named: Option<&[RecordId]>,
    clock: &K,
) -> Result<Page, ConnectorError> {
    if let Some(ids) = named {
        let mut records = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(LOOKUP_CHUNK) {
            records.extend(look_up(connector, &request.paths, &Lookup::Ids(chunk.to_vec()), clock).await?);
        }
        return Ok(Page::new(records, None));
    }
    let mut retries = Retries::default();
    loop {
        match connector.read_page(request, token).await {
            Ok(page) => return Ok(page),
            Err(error) => retries.wait_or_fail(error, clock).await?,
        }
    }
}

/// Records, looked up with retries.
async fn look_up<C: Connector, K: Clock>(
    connector: &mut C,
    paths: &[String],
    lookup: &Lookup,
    clock: &K,
) -> Result<Vec<ConnectorRecord>, ConnectorError> {
    let mut retries = Retries::default();
    loop {
        match connector.lookup(paths, lookup).await {
            Ok(records) => return Ok(records),
            Err(error) => retries.wait_or_fail(error, clock).await?,
        }
    }
}

/// The retries of one read: a plain loop at each call rather than a helper taking an async
/// closure, whose future the compiler cannot prove `Send`.
#[derive(Default)]
struct Retries {
    tries: u32,
}

impl Retries {
    /// Waits before the next try when `error` may pass and tries are left; else fails with it.
    async fn wait_or_fail<K: Clock>(
        &mut self,
        error: ConnectorError,
        clock: &K,
    ) -> Result<(), ConnectorError> {
        self.tries += 1;
        if !error.is_retryable() || self.tries >= READ_ATTEMPTS {
            return Err(error);
        }
        let wait = error.retry_after().unwrap_or(Duration::from_millis(500 * (1 << self.tries)));
        tracing::warn!(%error, tries = self.tries, "Retrying a read.");
        clock.sleep(wait.min(Duration::from_secs(30))).await;
        Ok(())
    }
}

/// Reads both sides of a link and yields candidates a chunk at a time: the I/O of detection
/// (pages, retries, look-ups, the state store's digests), feeding a `Pairing` that decides.
pub(crate) struct Detector<'a> {
    spec: &'a LinkSpec,
    layout: &'a LinkLayout,
    names: &'a SidePair<String>,
    requests: SidePair<ReadRequest>,
    /// For a targeted run, the ids of the records to read on each side (in place of listings).
    named: SidePair<Option<&'a [RecordId]>>,
    capabilities: SidePair<Capabilities>,
    tokens: SidePair<Option<PageToken>>,
    pairing: Pairing,
    leftovers_done: bool,
    /// The point of each side's change feed its listing has reached, if its connector says.
    sequence: SidePair<Option<Sequence>>,
    /// The run's lease (none for a dry run), renewed as pages are read (`keep_lease`).
    lease: Option<&'a Lease>,
    /// When the lease was last renewed.
    renewed: Instant,
}

impl<'a> Detector<'a> {
    /// Prepares to read both sides as `run` says; loads every baseline digest when a side is
    /// read in full.
    ///
    /// # Errors
    ///
    /// Fails when the state store cannot be read.
    pub fn new<C: Connector, S: StateStore, K, P>(
        run: &RunContext<'a, K, P>,
        connectors: &SidePair<C>,
        store: &S,
    ) -> Result<Self, EngineError> {
        let RunContext {
            given: LinkRun { spec, names, targets, .. }, layout, modes, ref since, lease, ..
        } = *run;
        let any_full = modes.left == ReadMode::Full || modes.right == ReadMode::Full;
        // Sized once from the count of live baselines the store keeps.
        let baselines = if any_full {
            usize::try_from(blocking(|| store.baseline_count(spec.name.as_str()))?).unwrap_or(0)
        } else {
            0
        };
        let request = |side: Side| ReadRequest {
            paths: spec.read_paths(side),
            since: if *modes.get(side) == ReadMode::Incremental { since.get(side).clone() } else { None },
        };
        let fingerprints = SidePair::new(spec.fingerprint(Side::Left), spec.fingerprint(Side::Right));
        Ok(Self {
            spec,
            layout,
            names,
            requests: SidePair::new(request(Side::Left), request(Side::Right)),
            named: SidePair::new(
                targets.map(|targets| targets.left.as_slice()),
                targets.map(|targets| targets.right.as_slice()),
            ),
            capabilities: SidePair::new(connectors.left.capabilities(), connectors.right.capabilities()),
            tokens: SidePair::new(None, None),
            pairing: Pairing::new(modes, fingerprints, baselines),
            leftovers_done: false,
            sequence: SidePair::new(None, None),
            lease,
            renewed: Instant::now(),
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
        while self.pairing.wants_more() {
            let finished =
                SidePair::new(self.pairing.finished(Side::Left), self.pairing.finished(Side::Right));
            if !finished.left && !finished.right {
                // Both listings go on: their next pages are read at once (a connector that
                // blocks does so on a thread of its own), then sorted out left first.
                let SidePair { left, right } = &mut *connectors;
                let (left_page, right_page) = tokio::join!(
                    fetch(left, &self.requests.left, self.tokens.left.as_ref(), self.named.left, clock),
                    fetch(right, &self.requests.right, self.tokens.right.as_ref(), self.named.right, clock),
                );
                let right_page = right_page.map_err(self.read_error(Side::Right));
                let left_page = left_page.map_err(self.read_error(Side::Left))?;
                self.read_page(Side::Left, left_page, connectors, store, clock, progress, report).await?;
                self.read_page(Side::Right, right_page?, connectors, store, clock, progress, report).await?;
            } else if !(finished.left && finished.right) {
                let side = if finished.left { Side::Right } else { Side::Left };
                let page = fetch(
                    connectors.get_mut(side),
                    self.requests.get(side),
                    self.tokens.get(side).as_ref(),
                    *self.named.get(side),
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
            self.keep_lease(store)?;
        }
        Ok(self.pairing.take_chunk())
    }

    /// Renews the run's lease when a quarter of it has passed since it was last renewed: a run
    /// that reads a large side for longer than its lease, committing nothing meanwhile, keeps
    /// its link as long as pages come, and loses it when they stop.
    ///
    /// # Errors
    ///
    /// `StoreError::LeaseLost` when another run took the link over: this one stops.
    fn keep_lease<S: StateStore>(&mut self, store: &S) -> Result<(), EngineError> {
        let Some(lease) = self.lease else { return Ok(()) };
        if self.renewed.elapsed() >= lease.ttl / 4 {
            blocking(|| store.renew(lease))?;
            self.renewed = Instant::now();
        }
        Ok(())
    }

    /// How the reading went; call once `next` has returned `None`.
    pub fn summary(self) -> Summary {
        Summary { sequence: self.sequence, ..self.pairing.summary() }
    }

    fn read_error(&self, side: Side) -> impl Fn(ConnectorError) -> EngineError + use<> {
        let connector = self.names.get(side).clone();
        move |source| EngineError::Read { side, connector: connector.clone(), source }
    }

    /// Loads the baselines' digest entries the pairing wants, up to `key` (every one with
    /// `None`).
    fn load_baselines<S: StateStore>(
        &mut self,
        store: &S,
        key: Option<&RecordKey>,
    ) -> Result<(), EngineError> {
        let link = self.spec.name.as_str();
        while let Some(page) = self.pairing.baselines_wanted(key) {
            let mut entries = Vec::with_capacity(page.size);
            // The store hands them out in key order, checked (`StateStore::digest_page`).
            let last = blocking(|| {
                store.digest_page(link, self.layout, page.after.as_ref(), page.size, |key, entry| {
                    entries.push((key, entry));
                })
            })?;
            self.pairing.baselines_loaded(entries, last);
        }
        Ok(())
    }

    /// Reads a page of `side` into the pairing: its records split from their link keys,
    /// their baselines' digest entries loaded, sorted out, normalised where needed, paired;
    /// then the look-ups the pairing asks for.
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
        *self.tokens.get_mut(side) = page.next.clone();
        if page.sequence.is_some() {
            *self.sequence.get_mut(side) = page.sequence;
        }
        let latest = page.records.iter().filter_map(|record| record.modified).max();
        let mut split = Vec::with_capacity(page.records.len());
        let mut unkeyed = Vec::new();
        for record in page.records {
            let deleted = record.deleted;
            if deleted && record.values.last().and_then(link_key).is_none() {
                // A change feed's delete names only its record's id.
                unkeyed.push(record);
                continue;
            }
            match split_record(spec, side, record) {
                Ok((key, raw)) => split.push((key, raw, deleted)),
                Err(problem) => report.problems.push(problem),
            }
        }
        if !unkeyed.is_empty() {
            // Its key is its baseline's; a record fieldsync never paired has nothing to delete.
            let ids: Vec<RecordId> = unkeyed.iter().map(|record| record.id.clone()).collect();
            let keys = blocking(|| store.keys_of_ids(spec.name.as_str(), side, &ids))?;
            for record in unkeyed {
                if let Some(key) = keys.get(&record.id) {
                    let raw = vec![serde_json::Value::Null; spec.fields.len()];
                    split.push((
                        key.clone(),
                        RawRecord { id: record.id, raw, modified: record.modified },
                        true,
                    ));
                }
            }
        }
        report.stats.side_mut(side).read += split.len() as u64;
        progress.advance(split.len() as u64);
        let digests = if self.pairing.loads_every_baseline() {
            if let Some(last) = split.iter().map(|(key, _, _)| key).max() {
                self.load_baselines(store, Some(last))?;
            }
            std::collections::HashMap::new()
        } else {
            let keys: Vec<RecordKey> = split.iter().map(|(key, _, _)| key.clone()).collect();
            blocking(|| store.digests(spec.name.as_str(), self.layout, &keys))?
        };
        let mut sorted = self.pairing.sort_page(side, latest, split, &digests, report);
        // Normalised for the whole page at once, off the runtime's workers.
        let records = normalise_all(self.spec, side, std::mem::take(&mut sorted.raws));
        let lookups = self.pairing.pair_page(sorted, records, report);
        if page.next.is_none() {
            let pending = self.pairing.finish_listing(side);
            self.resolve(pending, connectors, clock, report).await?;
        }
        self.resolve(lookups, connectors, clock, report).await
    }

    /// Looks up what the pairing asks for and hands it the answers.
    async fn resolve<C: Connector, K: Clock>(
        &mut self,
        lookups: Lookups,
        connectors: &mut SidePair<C>,
        clock: &K,
        report: &mut RunReport,
    ) -> Result<(), EngineError> {
        if lookups.is_empty() {
            return Ok(());
        }
        let found = self.look_up(lookups.side(), &lookups.wanted(), connectors, clock, report).await?;
        self.pairing.looked_up(lookups, found);
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
        let full = self.pairing.mode(side) == ReadMode::Full;
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
            records.extend(look_up(connector, &paths, &lookup, clock).await.map_err(&read_error)?);
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
            by_key_records.extend(look_up(connector, &paths, &lookup, clock).await.map_err(&read_error)?);
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
        for (key, record) in keys.into_iter().zip(normalise_all(self.spec, side, raws)) {
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
        self.load_baselines(store, None)?;
        let mut keys = self.pairing.vanished(report);
        keys.extend(blocking(|| store.keys_with_live_reviews(link))?);
        keys.extend(blocking(|| store.open_outbox_keys(link))?);
        let keys = self.pairing.unhandled(keys);
        if keys.is_empty() {
            return Ok(());
        }
        let entries: HashMap<RecordKey, DigestEntry> = match self.pairing.known_entries(&keys) {
            Some(entries) => entries,
            None => blocking(|| store.digests(link, self.layout, &keys))?.into_iter().collect(),
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
                let presence = SidePair::new(
                    found.left.remove(key).unwrap_or(Presence::Unknown),
                    found.right.remove(key).unwrap_or(Presence::Unknown),
                );
                self.pairing.found_leftover(key.clone(), presence, entries.contains_key(key));
            }
        }
        Ok(())
    }
}
