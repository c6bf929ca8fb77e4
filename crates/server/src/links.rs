//! One worker per link: it runs the link when its schedule says, when the API asks, and when
//! an outbox entry is due for a retry (delivering only), one run at a time; requests that come
//! while it runs fold into one follow-up run. A link that cannot run (a side unreachable) is
//! probed again after a growing pause, and runs as soon as it can.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use fieldsync_app::workspace::{CancellationToken, RunScope, RunsOutcome, Unobserved, error_chain};
use fieldsync_app::{Config, LinkConfig, Workspace, WorkspaceError};
use jiff::Timestamp;
use serde::Serialize;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;

use crate::reports::Mailer;
use crate::shared::SharedWorkspace;

/// The first pause before probing a link that could not run; it doubles up to `PROBE_CAP`.
const PROBE_FIRST: Duration = Duration::from_secs(1);

/// The longest pause between two probes of a link that cannot run.
const PROBE_CAP: Duration = Duration::from_secs(5 * 60);

/// The longest random delay added to a scheduled run, so that links on the same schedule do
/// not all start at once; a tenth of the schedule's period when that is shorter.
const JITTER_CAP: Duration = Duration::from_secs(10);

/// The first pause before trying again a run that found its link busy (another process runs
/// it) or every place taken (`max_concurrent_runs` runs going on across the processes
/// sharing the state store); it doubles up to `BUSY_CAP`, with a random part.
const BUSY_FIRST: Duration = Duration::from_secs(1);

/// The longest pause before trying a busy link again.
const BUSY_CAP: Duration = Duration::from_secs(30);

/// What the service knows of a link beyond the state store: for the API's link list.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LinkState {
    /// A run of the link is going on.
    pub running: bool,
    /// A run was asked for (or came due) while one was going on: it follows.
    pub queued: bool,
    /// When the link runs next, by its schedule, a retry or a probe.
    pub next_run: Option<Timestamp>,
    /// Since when the link has been unable to run (a side unreachable), if it is.
    pub waiting_since: Option<Timestamp>,
    /// The connector it waits for, when a side could not be opened or read.
    pub waiting_for: Option<String>,
    /// Why it could not run the last time, if it could not.
    pub last_error: Option<String>,
}

/// Why a worker runs its link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Why {
    /// Its schedule's slot due at this time.
    Scheduled(Timestamp),
    /// The API asked (in full when `full`).
    Asked { full: bool },
    /// An outbox entry is due: deliver only.
    Retry,
    /// It could not run before: try again; for the slot of its schedule due at this time, when
    /// that was the run that could not run (so that a slot another process ran since is not
    /// run twice).
    Probe(Option<Timestamp>),
    /// A webhook told that a side changed.
    Hooked,
}

/// One link's worker, as the API sees it.
struct Worker {
    /// Wakes the worker for a run asked for; several wakes while it runs make one run.
    wake: Notify,
    /// Whether the run asked for reads in full.
    full_asked: Mutex<bool>,
    /// What the API shows.
    state: Mutex<LinkState>,
}

/// The links' workers.
pub struct Links {
    workers: BTreeMap<String, Arc<Worker>>,
    tasks: tokio::sync::Mutex<JoinSet<()>>,
}

impl Links {
    /// Starts a worker for every link of `config`; `stop` stops them and cancels their runs.
    pub fn start(
        config: Arc<Config>,
        workspace: SharedWorkspace,
        stop: CancellationToken,
        mailer: Option<Arc<Mailer>>,
    ) -> Arc<Self> {
        let permits = Arc::new(Semaphore::new(config.server.max_concurrent_runs));
        let mut workers = BTreeMap::new();
        let mut tasks = JoinSet::new();
        for name in config.links.keys() {
            let worker = Arc::new(Worker {
                wake: Notify::new(),
                full_asked: Mutex::new(false),
                state: Mutex::new(LinkState::default()),
            });
            workers.insert(name.clone(), Arc::clone(&worker));
            let job = Job {
                config: Arc::clone(&config),
                workspace: workspace.clone(),
                name: name.clone(),
                worker,
                permits: Arc::clone(&permits),
                stop: stop.clone(),
                mailer: mailer.clone(),
            };
            tasks.spawn(job.work());
        }
        Arc::new(Self { workers, tasks: tokio::sync::Mutex::new(tasks) })
    }

    /// What the service knows of `link`, if it has that link.
    pub fn state(&self, link: &str) -> Option<LinkState> {
        self.workers.get(link).map(|worker| lock(&worker.state).clone())
    }

    /// Asks for a run of `link` (in full when `full`); `false` when there is no such link.
    /// A run asked for while one goes on follows it; several asked for make one.
    pub fn ask(&self, link: &str, full: bool) -> bool {
        let Some(worker) = self.workers.get(link) else { return false };
        if full {
            *lock(&worker.full_asked) = true;
        }
        lock(&worker.state).queued = true;
        worker.wake.notify_one();
        true
    }

    /// Wakes the worker of `link` to look at the state store again (a webhook was kept): it
    /// runs if what it finds there asks for a run, once however many pokes came.
    pub fn poke(&self, link: &str) {
        if let Some(worker) = self.workers.get(link) {
            worker.wake.notify_one();
        }
    }

    /// Waits for every worker to end (after `stop`).
    pub async fn stopped(&self) {
        let mut tasks = self.tasks.lock().await;
        while tasks.join_next().await.is_some() {}
    }
}

/// A slot of a link's schedule: when it is due, and when this process runs it (due, or now
/// when it passed, plus a random delay).
#[derive(Clone, Copy, Debug)]
struct Slot {
    /// When the slot is due, the same in every process sharing the state store: the one that
    /// runs it first is the one that runs it (`Workspace::run_scheduled`).
    due: Timestamp,
    /// When this process runs it.
    at: Timestamp,
}

/// A run to try again because its link was busy.
#[derive(Clone, Copy, Debug)]
struct Busy {
    /// When to try again.
    at: Timestamp,
    /// The run to try.
    why: Why,
    /// How many times in a row the link was busy.
    times: u32,
}

/// What one worker needs.
struct Job {
    config: Arc<Config>,
    /// For what is due: the last run, the next retry, webhooks waiting.
    workspace: SharedWorkspace,
    name: String,
    worker: Arc<Worker>,
    permits: Arc<Semaphore>,
    stop: CancellationToken,
    /// Sends a report after runs, when `[reports]` says.
    mailer: Option<Arc<Mailer>>,
}

impl Job {
    fn link(&self) -> &LinkConfig {
        &self.config.links[&self.name]
    }

    /// Runs the link until `stop`.
    async fn work(self) {
        let mut scheduled = self.next_slot().await;
        let mut probe: Option<(Timestamp, u32, Option<Timestamp>)> = None;
        let mut busy: Option<Busy> = None;
        let mut floor = Timestamp::now();
        loop {
            let retry = self.store_read(|workspace, link| workspace.next_retry(link)).await.flatten();
            let retry = retry.map(|retry| retry.max(floor));
            let hooked = self.store_read(|workspace, link| workspace.waiting_webhook(link)).await.flatten();
            if let Some(tried) = busy
                && tried.why == Why::Retry
            {
                // A delivery that found its link busy waits for an entry still due, not for the
                // pause alone: the run that held the link may have delivered them all (another
                // process's run, whose entries this worker saw waiting while it went on).
                busy = retry.map(|due| Busy { at: tried.at.max(due), ..tried });
            }
            // What is due first: a probe replaces the schedule while the link cannot run, and
            // a run that found the link busy is tried again before anything else.
            let (at, why) = match (busy, probe) {
                (Some(busy), _) => (Some(busy.at), busy.why),
                (None, Some((at, _, slot))) => (Some(at), Why::Probe(slot)),
                (None, None) if hooked.is_some() => (Some(Timestamp::now()), Why::Hooked),
                (None, None) => match (scheduled, retry) {
                    (Some(slot), Some(retry)) if retry < slot.at => (Some(retry), Why::Retry),
                    (Some(slot), _) => (Some(slot.at), Why::Scheduled(slot.due)),
                    (None, Some(retry)) => (Some(retry), Why::Retry),
                    (None, None) => (None, Why::Retry),
                },
            };
            lock(&self.worker.state).next_run = at;
            let why = tokio::select! {
                biased;
                () = self.stop.cancelled() => return,
                () = self.worker.wake.notified() => {
                    // A poke, or a wake stored while a run went on that took up what was
                    // asked: look at the store again.
                    if !lock(&self.worker.state).queued {
                        continue;
                    }
                    Why::Asked { full: std::mem::take(&mut *lock(&self.worker.full_asked)) }
                }
                () = sleep_until(at) => why,
            };
            let retried = busy.take();
            let permit = tokio::select! {
                biased;
                () = self.stop.cancelled() => return,
                permit = self.permits.acquire() => permit,
            };
            let Ok(_permit) = permit else { return };
            {
                let mut state = lock(&self.worker.state);
                state.running = true;
                state.queued = false;
            }
            let started = Timestamp::now();
            let result = self.run(why).await;
            if result.is_ok() && !matches!(why, Why::Retry | Why::Hooked) {
                // A run that read both sides read what every webhook before it told of (a run
                // for webhooks marks those it read itself).
                self.store_read(move |workspace, link| workspace.settle_webhooks(link, started)).await;
            }
            // The link's state is locked in a block of its own: nothing is awaited under it.
            let busy_again = {
                let mut state = lock(&self.worker.state);
                state.running = false;
                match result {
                    Err(error) if error.ran_already() => {
                        // Another process sharing the state store ran this slot: the link can run.
                        tracing::debug!(link = %self.name, ?why, "the slot was run by another process");
                        probe = None;
                        state.waiting_since = None;
                        state.waiting_for = None;
                        state.last_error = None;
                        None
                    }
                    Err(error) if error.is_busy() => {
                        // Another process runs the link, or every place is taken: not a failure of
                        // the link's, so no probe; the same run is tried again after a pause.
                        let times = retried.map_or(0, |busy| busy.times) + 1;
                        let pause = BUSY_FIRST.saturating_mul(1 << times.min(8)).min(BUSY_CAP) / 2;
                        let pause = pause + pause.mul_f64(fastrand::f64());
                        tracing::info!(link = %self.name, ?why, error = %error_chain(&error), ?pause, "the link is busy");
                        Some(Busy { at: Timestamp::now() + pause, why, times })
                    }
                    Ok(outcome) => {
                        for report in &outcome.reports {
                            crate::metrics::run_ended(&self.name, report);
                            if let Some(mailer) = &self.mailer {
                                mailer.send_later(report.clone(), &self.link().report_to);
                            }
                        }
                        probe = None;
                        state.waiting_since = None;
                        state.waiting_for = None;
                        state.last_error = None;
                        tracing::info!(link = %self.name, ?why, outcome = ?outcome.outcome, "run ended");
                        None
                    }
                    Err(error) => {
                        crate::metrics::run_failed(&self.name);
                        let failures = probe.map_or(0, |(_, failures, _)| failures) + 1;
                        let pause = PROBE_FIRST.saturating_mul(1 << failures.min(16)).min(PROBE_CAP);
                        let slot = match why {
                            Why::Scheduled(due) | Why::Probe(Some(due)) => Some(due),
                            _ => None,
                        };
                        probe = Some((Timestamp::now() + pause, failures, slot));
                        state.waiting_since.get_or_insert(started);
                        state.waiting_for = error.unreachable_connector().map(str::to_string);
                        let error = error_chain(&error);
                        tracing::warn!(link = %self.name, ?why, %error, ?pause, "the link could not run");
                        state.last_error = Some(error);
                        None
                    }
                }
            };
            if busy_again.is_some() {
                busy = busy_again;
                continue;
            }
            if matches!(why, Why::Scheduled(_) | Why::Probe(_)) {
                // A run that came due (or ran in place of one) moves the schedule on; a run
                // asked for does not.
                scheduled = self.next_slot().await;
            }
            // Never two runs back to back for retries alone: an entry a delivery left due
            // waits a moment.
            floor = Timestamp::now() + PROBE_FIRST;
        }
    }

    /// The link's next scheduled slot: the first after the start of its last run that read
    /// both sides (by any process sharing the state store), run at once when it passed (after
    /// downtime, once, not once per slot missed). A link on an interval that never ran has its
    /// slot at the epoch, the same in every process, so that only one of them runs it.
    /// `None`: only when asked.
    async fn next_slot(&self) -> Option<Slot> {
        let schedule = self.link().schedule.as_ref()?;
        let now = Timestamp::now();
        let anchor = self.store_read(|workspace, link| workspace.last_run_started(link)).await.flatten();
        // A link's slots fall its `slot_offset` after the schedule's, so that links (and an
        // organisation's instances of one) with `spread` do not all start at once.
        let offset = self.link().slot_offset;
        let shifted = |at: Timestamp| -> Option<Timestamp> {
            let before = at.checked_sub(offset).ok()?;
            schedule.next_after(before)?.checked_add(offset).ok()
        };
        let due = match (anchor, schedule) {
            (Some(anchor), _) => shifted(anchor)?,
            (None, fieldsync_app::config::Schedule::Every(_)) => Timestamp::UNIX_EPOCH,
            (None, fieldsync_app::config::Schedule::Cron { .. }) => shifted(now)?,
        };
        Some(Slot { due, at: due.max(now) + self.jitter(now) })
    }

    /// A random delay up to a tenth of the schedule's period, at most `JITTER_CAP`.
    fn jitter(&self, now: Timestamp) -> Duration {
        let period = self.link().schedule.as_ref().map_or(Duration::ZERO, |schedule| schedule.period(now));
        let cap = (period / 10).min(JITTER_CAP);
        cap.mul_f64(fastrand::f64())
    }

    /// Runs the link once, for `why`.
    async fn run(&self, why: Why) -> Result<RunsOutcome, WorkspaceError> {
        let mut workspace = Workspace::serving((*self.config).clone(), self.stop.clone());
        let full = matches!(why, Why::Asked { full: true });
        let scope = RunScope { link: Some(self.name.clone()), full };
        let mut observer = Unobserved;
        match why {
            Why::Retry => workspace.deliver(&scope, &mut observer).await,
            Why::Hooked => workspace.run_hooked(&self.name, &mut observer).await,
            Why::Scheduled(due) | Why::Probe(Some(due)) => {
                workspace.run_scheduled(&self.name, due, &mut observer).await
            }
            _ => workspace.run(&scope, false, &mut observer).await,
        }
    }

    /// Reads what is due from the state store; a failure is logged and read as `None`.
    async fn store_read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&mut Workspace, &str) -> Result<T, WorkspaceError> + Send + 'static,
    ) -> Option<T> {
        let name = self.name.clone();
        match self.workspace.call(move |workspace| read(workspace, &name)).await {
            Ok(value) => Some(value),
            Err(error) => {
                tracing::warn!(link = %self.name, error = %error_chain(&error), "reading the state store");
                None
            }
        }
    }
}

/// Sleeps until `at` (not at all when it has passed); forever when there is nothing to wait for.
async fn sleep_until(at: Option<Timestamp>) {
    match at {
        Some(at) => {
            let wait = at.duration_since(Timestamp::now());
            tokio::time::sleep(Duration::try_from(wait).unwrap_or(Duration::ZERO)).await;
        }
        None => std::future::pending().await,
    }
}

/// Locks a mutex whose holder cannot leave it half-changed (each holds it for one assignment).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
