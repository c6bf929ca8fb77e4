//! One run of a link, the seven steps of the product brief in order: detect, merge, guard,
//! plan (committed in one transaction), deliver, and record the run in the history.

use std::collections::{HashMap, HashSet};

use fieldsync_connector::{Capabilities, Connector, Sequence, Since};
use fieldsync_model::{RecordId, RecordKey, Side};
use fieldsync_store::{
    Baseline, BaselineWrite, CursorState, Lease, LinkLayout, ListQuery, NewOutboxEntry, Operation,
    OutboxStatus, PlanChunk, PlanPublication, Review, RunEnd, RunStatus, SeenDigest, StateStore, StoreError,
};
use jiff::Timestamp;

use tokio_util::sync::CancellationToken;

use crate::blocking::blocking;
use crate::clock::Clock;
use crate::detect::{Candidate, Chunk, Detector, Presence};
use crate::error::{EngineError, error_chain};
use crate::guard::{Planned, guard_stop};
use crate::plan::{BaselineChange, Payload, Planner, RecordPlan, ReviewChange};
use crate::progress::Progress;
use crate::report::{FailureOutcome, ReadMode, RunReport};
use crate::spec::{LinkSpec, SidePair};

/// How to run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunOptions {
    /// Read both sides in full.
    pub full: bool,
    /// Plan only: read, merge and report, but write nothing anywhere.
    pub dry_run: bool,
    /// Go on even when the guard would stop the run.
    pub force: bool,
    /// A seed for the retry jitter (a random one when `None`).
    pub seed: Option<u64>,
    /// Only deliver due outbox entries: no reads, no merge (the service's retry timer).
    pub deliver_only: bool,
    /// How long the run's lease lasts without a commit (every commit renews it);
    /// `DEFAULT_LEASE_TIMEOUT` when `None`. Past it, another run may take the link over, and this one can commit
    /// nothing more.
    pub lease_timeout: Option<std::time::Duration>,
    /// At most this many runs at once across every process sharing the state store (each run
    /// holds its link's lease); `None`: no limit. A run refused for it fails with
    /// `StoreError::AtCapacity` before it reads anything.
    pub max_running: Option<usize>,
    /// Run only if no run of the link that read both sides (`RunRow::read_both_sides`) started
    /// at or after this time; else fail with `EngineError::AlreadyRan` before reading. Checked
    /// under the link's lease, so of several processes given the same scheduled slot exactly
    /// one runs it, and a slot whose run was cancelled or failed is run again.
    pub unless_ran_since: Option<Timestamp>,
    /// With `deliver_only`: run only if an outbox entry is due once the link is held; else fail
    /// with `EngineError::NothingDue` before recording a run. Checked under the link's lease,
    /// so a retry another process delivered while this one waited for the link leaves no empty
    /// run behind.
    pub only_if_due: bool,
}

/// What a run of a link is given besides its connectors and its state store.
pub struct LinkRun<'run, K, P> {
    /// The link.
    pub spec: &'run LinkSpec,
    /// The connectors' names, for the report and its messages.
    pub names: &'run SidePair<String>,
    /// How to run.
    pub options: RunOptions,
    /// The time.
    pub clock: &'run K,
    /// Where the run tells how far it got.
    pub progress: &'run P,
    /// Stops the run between two commits when cancelled.
    pub cancel: &'run CancellationToken,
    /// A targeted run: only these records are read, by their ids on each side (those a webhook
    /// named), and merged, planned and written as in any run; no cursor moves. `None`: the
    /// sides are listed, in full or incrementally.
    pub targets: Option<&'run SidePair<Vec<RecordId>>>,
}

// By hand: derived, they would ask the clock and the progress display to be `Copy` too.
impl<K, P> Clone for LinkRun<'_, K, P> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<K, P> Copy for LinkRun<'_, K, P> {}

/// Runs one link once, unless `run.cancel` is cancelled first: the run then stops at the next
/// point between two commits (between chunks of detection and planning, between delivery
/// batches, or in a wait for a retry), leaving what a kill there would — what is committed
/// stays committed, an unpublished plan is discarded by the next run — but cleanly: the run is
/// recorded as `cancelled` and its lease released. Its report says `cancelled`.
///
/// # Errors
///
/// Fails when the state store fails, when a side cannot be read even after retries, or when
/// another run of the link holds its lease. Failed writes are not errors: they are in the
/// report, and stay in the outbox.
pub async fn run_link<C: Connector, S: StateStore, K: Clock, P: Progress>(
    run: LinkRun<'_, K, P>,
    connectors: &mut SidePair<C>,
    store: &mut S,
) -> Result<RunReport, EngineError> {
    let LinkRun { spec, names, options, clock, .. } = run;
    let lease_ttl = options.lease_timeout.unwrap_or(DEFAULT_LEASE_TIMEOUT);
    let link = spec.name.as_str();
    let held = if options.dry_run {
        None
    } else {
        Some(blocking(|| {
            store.lease_within(link, &fieldsync_store::lease_owner(), lease_ttl, options.max_running)
        })?)
    };
    if held.is_some()
        && let Some(refusal) = blocking(|| done_elsewhere(store, link, &options, clock.now()))?
    {
        if let Some(held) = held {
            blocking(|| store.release(held))?;
        }
        return Err(refusal);
    }
    let lease = held.as_ref();
    // A run starts once it holds its link: its history never overlaps another's.
    let started = clock.now();
    let layout = blocking(|| store.layout(link, &spec.field_names()))?;

    let mut modes = SidePair::new(ReadMode::Full, ReadMode::Full);
    let mut since = SidePair::new(None, None);
    let mut cursors = SidePair::new(CursorState::default(), CursorState::default());
    for side in Side::BOTH {
        let cursor = blocking(|| store.cursor(link, side))?;
        let full_due = cursor.last_full_scan.is_none_or(|last| {
            started.duration_since(last).unsigned_abs() >= spec.full_scan_every || last > started
        });
        if run.targets.is_some() {
            *modes.get_mut(side) = ReadMode::Targeted;
        } else if let (false, false, Some(from)) = (
            options.full,
            full_due,
            resume_from(connectors.get(side).capabilities(), &cursor, *spec.overlap.get(side)),
        ) {
            *modes.get_mut(side) = ReadMode::Incremental;
            *since.get_mut(side) = Some(from);
        }
        *cursors.get_mut(side) = cursor;
    }
    let mut report = RunReport::new(spec.name.clone(), names.clone(), options.dry_run);
    report.stats.left.mode = modes.left;
    report.stats.right.mode = modes.right;
    let mode_name = if options.deliver_only {
        "deliver"
    } else if modes.left == ReadMode::Full || modes.right == ReadMode::Full {
        "full"
    } else {
        modes.left.as_str()
    };
    if let Some(lease) = lease {
        // A run that only delivers plans nothing: it is published at once, so that what it
        // delivers and audits is never taken for the unpublished plan of a run that died.
        report.run_id = Some(blocking(|| store.start_run(lease, mode_name, options.deliver_only, started))?);
    }
    let run = RunContext { given: run, lease, layout: &layout, modes, since, cursors };
    let result = run_steps(&run, connectors, store, &mut report).await;
    let cancelled = matches!(result, Err(EngineError::Cancelled));
    let result = if cancelled { Ok(()) } else { result };
    let finished = clock.now();
    report.elapsed_ms = u64::try_from(finished.duration_since(started).as_millis()).unwrap_or(0);
    let error_text = result.as_ref().err().map(|error| error_chain(error));
    report.status = match (&result, &report.guard) {
        (Err(_), _) => RunStatus::Failed,
        (Ok(()), _) if cancelled => RunStatus::Cancelled,
        (Ok(()), Some(_)) => RunStatus::Guarded,
        (Ok(()), None) if report.failures.iter().any(|failure| failure.outcome != FailureOutcome::Moved) => {
            RunStatus::Partial
        }
        (Ok(()), None) => RunStatus::Done,
    };
    if let (Some(run), Some(lease)) = (report.run_id, lease) {
        let stats = serde_json::to_value(&report.stats).unwrap_or_default();
        let end = RunEnd {
            run,
            status: report.status,
            mode: mode_name.into(),
            stats,
            error: error_text,
            at: finished,
        };
        blocking(|| store.finish_run(lease, end))?;
    }
    if let Some(held) = held {
        blocking(|| store.release(held))?;
    }
    result.map(|()| report)
}

/// The fixed parts of one run, which its steps borrow: the link and how it runs, its clock and
/// progress, the lease it holds (none for a dry run), the layout its baselines are written
/// with, and how each side is read. What the steps change (the connectors, the store, the
/// report) they take apart.
pub(crate) struct RunContext<'run, K, P> {
    /// What the run was given.
    pub given: LinkRun<'run, K, P>,
    /// The link's lease; none for a dry run, which writes nothing.
    pub lease: Option<&'run Lease>,
    /// The field list baselines are read and written with.
    pub layout: &'run LinkLayout,
    /// How each side is read.
    pub modes: SidePair<ReadMode>,
    /// Where an incremental read of each side starts.
    pub since: SidePair<Option<Since>>,
    /// Each side's cursor as the run found it.
    pub cursors: SidePair<CursorState>,
}

impl<K, P> RunContext<'_, K, P> {
    /// Whether the run goes on from here.
    ///
    /// # Errors
    ///
    /// `EngineError::Cancelled` when it was cancelled.
    pub fn go_on(&self) -> Result<(), EngineError> {
        if self.given.cancel.is_cancelled() { Err(EngineError::Cancelled) } else { Ok(()) }
    }
}

/// How long a run's lease lasts unless `RunOptions::lease_timeout` says; every commit renews
/// it, and so does reading a page (at most every quarter of it). A run that makes no progress
/// for this long (a connector hanging, a process stopped) loses its link to the next run.
pub const DEFAULT_LEASE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30 * 60);

/// What a run that holds its link finds another process did meanwhile, leaving it nothing to
/// do: ran its scheduled slot (`RunOptions::unless_ran_since`: `AlreadyRan`), or delivered what
/// a delivery-only run was for (`RunOptions::only_if_due`: `NothingDue`).
fn done_elsewhere<S: StateStore>(
    store: &S,
    link: &str,
    options: &RunOptions,
    now: Timestamp,
) -> Result<Option<EngineError>, StoreError> {
    if let Some(since) = options.unless_ran_since
        && let Some(started) = ran_since(store, link, since)?
    {
        return Ok(Some(EngineError::AlreadyRan { link: link.to_string(), started }));
    }
    if options.deliver_only && options.only_if_due && store.next_due(link)?.is_none_or(|due| due > now) {
        return Ok(Some(EngineError::NothingDue { link: link.to_string() }));
    }
    Ok(None)
}

/// When the latest run of `link` that read both sides and started at or after `since` started,
/// if one did.
///
/// # Errors
///
/// When the state store cannot be read.
fn ran_since<S: StateStore>(
    store: &S,
    link: &str,
    since: Timestamp,
) -> Result<Option<Timestamp>, StoreError> {
    let mut before = None;
    loop {
        let page =
            store.runs_page(ListQuery { link: Some(link), links: None, status: None, before, limit: 100 })?;
        if let Some(run) =
            page.rows.iter().take_while(|run| run.started_at >= since).find(|run| run.read_both_sides())
        {
            return Ok(Some(run.started_at));
        }
        match page.rows.last() {
            Some(last) if page.more > 0 && last.started_at >= since => before = Some(last.id),
            _ => return Ok(None),
        }
    }
}

/// What a plan settles only once it is published: reviews its decisions close, baselines that
/// record deletes, and the closing of the waiting entries it replaces or finds landed.
#[derive(Default)]
struct Deferred {
    publication: PlanPublication,
    /// Writes found landed: counted as done once published.
    landed: u64,
}

/// Adds one record's plan to its chunk: its outbox entries (an identical waiting one is kept,
/// others superseded, landed ones closed, when the plan is published), its baseline change,
/// reviews, audit entries and raw digests.
fn add_plan(
    planner: &Planner<'_>,
    chunk: &mut PlanChunk,
    plan: RecordPlan,
    mut existing: Vec<fieldsync_store::OutboxEntry>,
    landed: &HashSet<i64>,
    deferred: &mut Deferred,
) {
    let (run_id, now) = (planner.run_id, planner.now);
    for write in plan.writes {
        let same = existing.iter().position(|entry| {
            entry.write.side == write.side
                && entry.write.operation == write.operation
                && Payload::from_text(&entry.write.payload).is_ok_and(|payload| {
                    // One refused as moved, or still waiting, is the same write only if planned
                    // from the same reads: a target that changed since (even to a spelling that
                    // means the same, `""` for a null) would refuse its expectations, so the
                    // fresh plan replaces it. A dead one waits for a person as it is.
                    match entry.status {
                        OutboxStatus::Moved | OutboxStatus::Pending => {
                            entry.write.record_id == write.record_id
                                && payload.same_write_and_expectations(&write.payload)
                        }
                        _ => payload.same_write(&write.payload),
                    }
                })
        });
        if let Some(position) = same {
            // The same write is already waiting (or dead, waiting for a person): keep it. One
            // its target refused as moved is sent again, its attempts counted on.
            let kept = existing.remove(position);
            if kept.status == OutboxStatus::Moved {
                deferred.publication.resent.push(kept.id);
            }
            continue;
        }
        chunk.entries.push(NewOutboxEntry {
            key: plan.key.clone(),
            side: write.side,
            operation: write.operation,
            record_id: write.record_id,
            payload: write.payload.to_text(),
            source: *plan.sources.get(write.side.other()),
        });
    }
    // Entries a newer plan replaces, and writes found landed, are closed when the plan is
    // published: a guarded run leaves them as they were (still pulling their record in).
    for stale in existing {
        if landed.contains(&stale.id) {
            deferred.publication.audit.push(fieldsync_store::AuditEntry {
                run_id,
                key: plan.key.clone(),
                field: None,
                event: fieldsync_store::AuditEvent::Written,
                side: Some(stale.write.side),
                base: None,
                left: None,
                right: None,
                value: None,
                reason: format!(
                    "written to the {} side by an earlier attempt, found there",
                    stale.write.side
                ),
                at: now,
                values: fieldsync_store::AuditValues::Full,
            });
            deferred.publication.landed.push(stale.id);
            deferred.landed += 1;
        } else {
            deferred.publication.superseded.push(stale.id);
        }
    }
    match plan.baseline {
        BaselineChange::Keep => {}
        // What a delete settles (a tombstone, a record forgotten) waits for the plan to be
        // published, like the writes: a guarded run must not record a mass delete as settled.
        BaselineChange::Put(baseline) if baseline.tombstone.is_some() => {
            deferred.publication.baselines.push(BaselineWrite::Put(baseline));
        }
        BaselineChange::Delete => {
            deferred.publication.baselines.push(BaselineWrite::Forget(plan.key.clone()))
        }
        BaselineChange::Put(baseline) => chunk.baselines.push(baseline),
    }
    for review in plan.reviews {
        match review {
            ReviewChange::Put(review) => chunk.reviews.push(review),
            // Closed when the plan is published: a decision is applied by the writes it planned.
            ReviewChange::Close(id) => deferred.publication.closed_reviews.push(id),
        }
    }
    chunk.audit.extend(plan.audit);
    chunk.seen.extend(plan.seen.into_iter().map(|(side, digest)| SeenDigest {
        key: plan.key.clone(),
        side,
        digest,
    }));
}

/// The baseline as it stands if `entry`, an update an earlier attempt may have made, landed:
/// the target holds every value it writes. `None` when it did not (or cannot be told).
fn landed_write(
    spec: &LinkSpec,
    layout: &fieldsync_store::LinkLayout,
    entry: &fieldsync_store::OutboxEntry,
    presence: &SidePair<Presence>,
    baseline: Option<&Baseline>,
    now: Timestamp,
) -> Option<Baseline> {
    let tried = entry.attempts > 0 || entry.status == OutboxStatus::Sending;
    if entry.write.operation != Operation::Update || !tried {
        return None;
    }
    let payload = Payload::from_text(&entry.write.payload).ok()?;
    let Presence::Present(record) = presence.get(entry.write.side) else { return None };
    let mut tracked = 0;
    for field in &payload.fields {
        let (Some(name), Some(value)) = (&field.name, &field.value) else { continue };
        let index = spec.fields.iter().position(|known| &known.name == name)?;
        if record.values.get(index)?.as_ref().ok()? != value {
            return None;
        }
        tracked += 1;
    }
    if tracked == 0 {
        return None;
    }
    let mut next =
        baseline.cloned().unwrap_or_else(|| Baseline::empty(entry.write.key.clone(), layout.fields.len()));
    crate::deliver::move_baseline(&mut next, entry.write.side, record.id.clone(), &payload, layout, now);
    Some(next)
}

/// Steps 1 to 7 after the run is recorded: detect and plan, then deliver (or only deliver).
async fn run_steps<C: Connector, K: Clock, P: Progress, S: StateStore>(
    run: &RunContext<'_, K, P>,
    connectors: &mut SidePair<C>,
    store: &mut S,
    report: &mut RunReport,
) -> Result<(), EngineError> {
    let mut rng = match run.given.options.seed {
        Some(seed) => fastrand::Rng::with_seed(seed),
        None => fastrand::Rng::new(),
    };
    if run.given.options.deliver_only {
        // A dry run holds no lease and delivers nothing.
        let Some(lease) = run.lease else { return Ok(()) };
        return crate::deliver::deliver(run, lease, connectors, store, report, &mut rng).await;
    }
    let link = run.given.spec.name.as_str();

    // 1–6. Detect, merge and plan a chunk at a time; guard; publish.
    let started = std::time::Instant::now();
    let planned = detect_and_plan(run, connectors, store, report).await?;
    tracing::info!(link, phase = "plan", ms = started.elapsed().as_millis(), "Phase done.");
    let Some(lease) = run.lease.filter(|_| planned) else {
        return Ok(());
    };

    // 6–7. Deliver, verify, and move baselines with each closed entry.
    let started = std::time::Instant::now();
    let delivered = crate::deliver::deliver(run, lease, connectors, store, report, &mut rng).await;
    tracing::info!(link, phase = "deliver", ms = started.elapsed().as_millis(), "Phase done.");
    delivered
}

/// Steps 1 to 6: reads both sides and plans every candidate as detection hands them out, a
/// chunk at a time, each chunk committed at once (so neither records nor plans pile up in
/// memory) but undeliverable until the whole plan is published. Then the guard: over its
/// limits, the run's planned writes are discarded; within them, the plan is published with the
/// cursors. Whether there is anything to deliver (not when guarded or a dry run).
async fn detect_and_plan<C: Connector, K: Clock, P: Progress, S: StateStore>(
    run: &RunContext<'_, K, P>,
    connectors: &mut SidePair<C>,
    store: &mut S,
    report: &mut RunReport,
) -> Result<bool, EngineError> {
    let RunContext {
        given: LinkRun { spec, options, clock, progress, .. }, lease, layout, ref cursors, ..
    } = *run;
    let link = spec.name.as_str();
    let now = clock.now();
    let fingerprints = SidePair::new(spec.fingerprint(Side::Left), spec.fingerprint(Side::Right));
    let planner = Planner { spec, run_id: report.run_id, now, fingerprints };
    // The guard weighs the run's deletes and changes against the live baselines there were
    // before it (the store keeps them counted: no scan), read before any chunk of the plan
    // commits baselines of its own — and a plan, which commits none, sees the same count.
    let total = blocking(|| store.baseline_count(link))?;
    let mut detector = Detector::new(run, connectors, store)?;
    let mut deferred = Deferred::default();
    progress.phase("reading and planning", None);
    // Cancelled between two chunks, the run leaves what a kill there would: the chunks planned
    // so far are committed but never published, and the next run discards them.
    while let Some(chunk) = detector.next(connectors, store, clock, progress, report).await? {
        run.go_on()?;
        plan_chunk(run, store, &planner, chunk, report, &mut deferred)?;
    }
    run.go_on()?;
    let summary = detector.summary();

    // 5. Guard.
    let planned = Planned { stats: &report.stats, vanished: summary.vanished, modes: summary.modes };
    report.guard = guard_stop(planned, total, spec.guard, options.force);
    if report.guard.is_some() {
        if let (Some(run_id), Some(lease)) = (report.run_id, lease) {
            blocking(|| store.discard_plan(lease, run_id))?;
        }
        return Ok(false);
    }
    let (Some(run_id), Some(lease)) = (report.run_id, lease.filter(|_| !options.dry_run)) else {
        return Ok(false);
    };

    // 6. Publish the plan, with the cursors and the reviews its decisions settle, in one
    // commit: a crash before it leaves nothing deliverable, after it the whole plan.
    let mut publication = deferred.publication;
    for side in Side::BOTH.into_iter().filter(|side| *summary.modes.get(*side) != ReadMode::Targeted) {
        let old = cursors.get(side);
        let cursor = match (old.cursor, *summary.cursor.get(side)) {
            (Some(old), Some(seen)) => Some(old.max(seen)),
            (old, seen) => old.or(seen),
        };
        let last_full_scan =
            if *summary.modes.get(side) == ReadMode::Full { Some(now) } else { old.last_full_scan };
        // The feed's point the listing reached; where it gave none, the one it started from.
        let sequence = summary.sequence.get(side).as_ref().map(|sequence| sequence.0.clone());
        let sequence = sequence.or_else(|| old.sequence.clone());
        publication.cursors.push((side, CursorState { cursor, last_full_scan, sequence }));
    }
    spec.audit.keep_all(spec.name.as_str(), &mut publication.audit);
    blocking(|| store.publish_plan(lease, run_id, layout, publication, now))?;
    // Counted as done only now: a guarded run leaves the entry open for the next one.
    report.stats.writes_done += deferred.landed;
    Ok(true)
}

/// Where an incremental read of a side with `capabilities` may start, by its stored `cursor`:
/// after the sequence its change feed last reached, or at its latest modification time less
/// `overlap`; `None` when it must be read in full.
fn resume_from(
    capabilities: Capabilities,
    cursor: &CursorState,
    overlap: std::time::Duration,
) -> Option<Since> {
    if capabilities.sequences {
        cursor.sequence.clone().map(|sequence| Since::Sequence(Sequence(sequence)))
    } else if capabilities.incremental {
        cursor.cursor.map(|at| Since::Time(at - overlap))
    } else {
        None
    }
}

/// Plans one chunk of candidates and, unless it is a dry run, commits the plans with the raw
/// digests detection found, in one transaction.
fn plan_chunk<K, P, S: StateStore>(
    run: &RunContext<'_, K, P>,
    store: &mut S,
    planner: &Planner<'_>,
    chunk: Chunk,
    report: &mut RunReport,
    deferred: &mut Deferred,
) -> Result<(), EngineError> {
    let RunContext { given: LinkRun { spec, options, .. }, lease, layout, .. } = *run;
    let now = planner.now;
    let link = spec.name.as_str();
    let keys: Vec<RecordKey> = chunk.candidates.iter().map(|candidate| candidate.key.clone()).collect();
    let mut reviews: HashMap<RecordKey, Vec<Review>> = HashMap::new();
    let mut open_entries: HashMap<RecordKey, Vec<fieldsync_store::OutboxEntry>> = HashMap::new();
    if !keys.is_empty() {
        for review in blocking(|| store.live_reviews_for(link, &keys))? {
            reviews.entry(review.review.key.clone()).or_default().push(review);
        }
        for entry in blocking(|| store.open_outbox_for(link, &keys))? {
            open_entries.entry(entry.write.key.clone()).or_default().push(entry);
        }
    }
    // Baselines are written only under the link's lease, so reading them before the commit
    // that writes the chunk reads what that commit changes. A dry run writes nothing.
    let baselines = blocking(|| store.baselines(link, layout, &keys))?;
    let mut planned = PlanChunk::default();
    for Candidate { key, presence, had_baseline } in chunk.candidates {
        let baseline = baselines.get(&key);
        if baseline.is_none() && had_baseline {
            report.problems.push(format!(
                "the baseline of record {key} is damaged and was treated as lost: its differences follow first_sync"
            ));
        }
        // A write that an earlier attempt may have made, and that the target now holds,
        // landed: its baseline moves first, so the engine's own write is not taken for an edit.
        let existing = open_entries.remove(&key).unwrap_or_default();
        let mut moved = None;
        let mut landed = HashSet::new();
        for entry in &existing {
            let current = moved.as_ref().or(baseline);
            if let Some(next) = landed_write(spec, layout, entry, &presence, current, now) {
                moved = Some(next);
                landed.insert(entry.id);
            }
        }
        // A create of ours that was tried and now stands on its target with no baseline was
        // made there, perhaps in part, before its attempt failed: complete it from its source.
        let created_from = existing
            .iter()
            .find(|entry| {
                entry.write.operation == Operation::Create
                    && (entry.attempts > 0 || entry.status == OutboxStatus::Sending)
                    && matches!(presence.get(entry.write.side), Presence::Present(_))
                    && matches!(presence.get(entry.write.side.other()), Presence::Present(_))
            })
            .map(|entry| entry.write.side.other());
        let record_reviews = reviews.get(&key).map(Vec::as_slice).unwrap_or_default();
        let mut plan = planner.plan_record(
            key,
            presence,
            moved.as_ref().or(baseline),
            record_reviews,
            created_from,
            report,
        );
        if let (Some(moved), BaselineChange::Keep) = (moved, &plan.baseline) {
            plan.baseline = BaselineChange::Put(moved);
        }
        add_plan(planner, &mut planned, plan, existing, &landed, deferred);
    }
    if let (Some(run_id), Some(lease)) = (report.run_id, lease.filter(|_| !options.dry_run)) {
        planned.seen.extend(chunk.seen.into_iter().map(|(key, side, digest)| SeenDigest {
            key,
            side,
            digest,
        }));
        // The history keeps of values what the link says, from the moment they are stored.
        planner.spec.audit.keep_all(planner.spec.name.as_str(), &mut planned.audit);
        blocking(|| store.commit_plan_chunk(lease, run_id, layout, planned, now))?;
    }
    Ok(())
}
