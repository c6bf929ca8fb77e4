//! What each commit of a run writes, as owned plain data: a chunk of plans (`PlanChunk`), a
//! run's plan made deliverable (`PlanPublication`), a delivered batch closed (`BatchClose`),
//! and how a run ended (`RunEnd`). A store writes each at once, or nothing of it.

use fieldsync_model::{RecordDigest, RecordKey, RunId, Side};
use jiff::Timestamp;

use crate::types::{
    AuditEntry, Baseline, CursorState, NewOutboxEntry, NewReview, OutboxId, OutboxStatus, ReviewId,
    RunStatus, SendId,
};

/// The raw digest of what one side holds for a record, found (or written and read back)
/// equal to its baseline: the next scan skips normalising it while its raw values stay the
/// same. Written after the commit's baselines, since writing a baseline forgets its digests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenDigest {
    /// The record.
    pub key: RecordKey,
    /// The side that holds it.
    pub side: Side,
    /// `fieldsync_model::digest_raw` of its raw values, bound to the baseline's digest.
    pub digest: RecordDigest,
}

/// A baseline written or forgotten by a commit, in the order the engine decided them.
#[derive(Clone, Debug, PartialEq)]
pub enum BaselineWrite {
    /// Writes the record's baseline (replacing any) with the commit's layout.
    Put(Baseline),
    /// Forgets the record's baseline: it is gone from both sides.
    Forget(RecordKey),
}

/// One chunk of a run's plan, committed at once but not deliverable until the run's plan is
/// published (`StateStore::publish_plan`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PlanChunk {
    /// New outbox entries, pending and due at once (after publication).
    pub entries: Vec<NewOutboxEntry>,
    /// Baselines agreed by both sides already.
    pub baselines: Vec<Baseline>,
    /// Reviews opened or refreshed (see `StateStore::commit_plan_chunk`).
    pub reviews: Vec<NewReview>,
    /// The audit of the chunk's plans, in order.
    pub audit: Vec<AuditEntry>,
    /// Raw digests found equal to their (possibly new) baselines.
    pub seen: Vec<SeenDigest>,
}

/// What a run's plan settles once it passed the guard, published in one commit with the
/// cursors: before it nothing of the run is deliverable, after it all of it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PlanPublication {
    /// Where each side's incremental reading stands now.
    pub cursors: Vec<(Side, CursorState)>,
    /// Reviews whose decisions the plan applies (or whose sides came to agree).
    pub closed_reviews: Vec<ReviewId>,
    /// Waiting entries a newer plan replaces.
    pub superseded: Vec<OutboxId>,
    /// Entries refused as moved that the plan makes again: due again at once.
    pub resent: Vec<OutboxId>,
    /// Entries whose write an earlier attempt made: done.
    pub landed: Vec<OutboxId>,
    /// Audit of what the publication settles (the landed writes), in order.
    pub audit: Vec<AuditEntry>,
    /// Baselines that record deletes (tombstones, forgotten records).
    pub baselines: Vec<BaselineWrite>,
}

impl PlanPublication {
    /// The outcomes of the entries the publication settles, none of them an attempt: the
    /// superseded ones (with why), the resent ones (pending, due at `now`) and the landed ones
    /// (done).
    pub fn settled_outcomes(&self, now: Timestamp) -> Vec<EntryOutcome> {
        let settled = [
            (
                &self.superseded,
                OutboxStatus::Superseded,
                None,
                Some("replaced by a newer plan from fresh reads"),
            ),
            (&self.resent, OutboxStatus::Pending, Some(now), None),
            (&self.landed, OutboxStatus::Done, None, None),
        ];
        settled
            .into_iter()
            .flat_map(|(ids, status, next_attempt_at, error)| {
                ids.iter().map(move |&id| EntryOutcome {
                    id,
                    status,
                    next_attempt_at,
                    error: error.map(str::to_string),
                    attempted: false,
                })
            })
            .collect()
    }
}

/// How one outbox entry of a delivered batch ends its attempt.
#[derive(Clone, Debug, PartialEq)]
pub struct EntryOutcome {
    /// The entry.
    pub id: OutboxId,
    /// Its new status.
    pub status: OutboxStatus,
    /// When it is due again, if it is (otherwise unchanged).
    pub next_attempt_at: Option<Timestamp>,
    /// Why it failed, if it did (otherwise the last error is kept).
    pub error: Option<String>,
    /// Whether this was an attempt to count: the entry went out, or failed on the way.
    pub attempted: bool,
}

/// A delivered batch of one side, closed at once: each entry's outcome with the baselines its
/// verified writes move, their audit and the raw digests of what was written.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BatchClose {
    /// The send that marked the batch's entries (`StateStore::start_send`), ended now.
    pub send: Option<SendId>,
    /// Each entry's outcome.
    pub outcomes: Vec<EntryOutcome>,
    /// Baselines moved by verified writes (or forgotten by verified deletes), in order.
    pub baselines: Vec<BaselineWrite>,
    /// Raw digests of the sides that hold the moved baselines, as read back or as read by the
    /// run that planned the writes.
    pub seen: Vec<SeenDigest>,
    /// The audit of the batch, in order.
    pub audit: Vec<AuditEntry>,
    /// A side to read in full next time: a write to it was refused as moved, and the record
    /// that moved may carry a time older than the cursor window.
    pub full_scan_of: Option<Side>,
}

/// How a run ended, for the history.
#[derive(Clone, Debug, PartialEq)]
pub struct RunEnd {
    /// The run.
    pub run: RunId,
    /// Its status.
    pub status: RunStatus,
    /// `full` or `incremental`.
    pub mode: String,
    /// The engine's statistics.
    pub stats: serde_json::Value,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// When it ended.
    pub at: Timestamp,
}
