//! The `StateStore` trait: what the engine and a person's use cases ask of a state store,
//! whatever database holds it — reads, and writes that are each one use case's commit.
//! Every implementation passes `testkit::run_all`.

use std::collections::HashMap;

use fieldsync_model::{RecordId, RecordKey, RunId, Side};
use jiff::Timestamp;

use crate::StoreError;
use crate::commits::{BatchClose, PlanChunk, PlanPublication, RunEnd};
use crate::types::{
    AuditEntry, Baseline, CursorState, Decision, DigestEntry, ErasedRecord, Lease, LinkLayout, ListPage,
    ListQuery, NamedRecords, NewWebhook, OutboxEntry, OutboxId, OutboxQuery, OutboxStatus, PurgedHistory,
    Review, ReviewId, ReviewQuery, ReviewStatus, RunQuery, RunRow, SendId,
};

/// A state store: baselines, cursors, the outbox, reviews, audit and runs of every link.
///
/// Reads are methods of the store; every write is one use case's commit (a run's start, a
/// chunk of its plan, the plan's publication, a send, a batch closed, the run's end, a
/// person's decision or retry), all of it or nothing of it, so that a baseline moves in the
/// same commit that closes its outbox entry. How a store makes its commits is its own.
///
/// Every write of a run is made under the run's [`Lease`]: the commit checks the lease's token
/// and renews it, and fails with `StoreError::LeaseLost` (keeping nothing) when another holder
/// took the lease over. A lease that expired but that nobody took over is still its holder's
/// (a long read between commits is not a lost lease): the token fences, the expiry only lets
/// another holder take over.
///
/// Collation contract: record keys compare as byte strings (UTF-8 code units, which is
/// code point order), exactly as `RecordKey`'s `Ord`. Every method that pages or lists in
/// "key order" uses that order, whatever the database's own collation (a PostgreSQL store
/// compares with `COLLATE "C"`); the engine's detection relies on it.
pub trait StateStore {
    /// Takes the lease of `link` for `owner`, for `ttl`: granted when nobody holds it, or its
    /// holder's lease expired (a store may also know that its holder is gone, as SQLite does
    /// when it gets the holder's lock file); the new lease has a new token.
    ///
    /// # Errors
    ///
    /// `StoreError::Locked` (a conflict) when another holder's lease is live.
    fn lease(&mut self, link: &str, owner: &str, ttl: std::time::Duration) -> Result<Lease, StoreError> {
        self.lease_within(link, owner, ttl, None)
    }

    /// `lease`, granted only while fewer than `max_running` other links' leases are live
    /// (`None`: no limit): the limit on runs at once holds across every process sharing the
    /// store, since each run holds its link's lease. Leases are taken one at a time for this
    /// count, so two processes cannot both take the last place.
    ///
    /// # Errors
    ///
    /// `StoreError::Locked` when another holder's lease of `link` is live,
    /// `StoreError::AtCapacity` when `max_running` leases of other links are; both conflicts.
    fn lease_within(
        &mut self,
        link: &str,
        owner: &str,
        ttl: std::time::Duration,
        max_running: Option<usize>,
    ) -> Result<Lease, StoreError>;

    /// Renews `lease` for its `ttl` from now, as every commit under it does: for a run that
    /// goes on without committing (reading a large side), so that it keeps its link while it
    /// makes progress and loses it only when it stalls.
    ///
    /// # Errors
    ///
    /// `StoreError::LeaseLost` when another holder took the link over.
    fn renew(&self, lease: &Lease) -> Result<(), StoreError>;

    /// Gives up `lease` so that the link may be leased at once; a lease already taken over is
    /// left to its new holder.
    ///
    /// # Errors
    ///
    /// Fails on a database error.
    fn release(&mut self, lease: Lease) -> Result<(), StoreError>;

    /// Registers the current field list of `link`, returning its layout.
    ///
    /// # Errors
    ///
    /// Fails on a database error.
    fn layout(&mut self, link: &str, fields: &[String]) -> Result<LinkLayout, StoreError>;

    /// Records the start of a run of `link`: first discards the plans of the link's earlier
    /// runs that never published (they died planning) and counts the attempt of the sends a
    /// crash left open (see `start_send`). A run that plans nothing (`published`: it only
    /// delivers) is published at once, so that what it delivers and audits is never taken for
    /// a dead run's plan. One commit.
    ///
    /// # Errors
    ///
    /// `StoreError::LeaseLost` when `lease` was taken over; a database error.
    fn start_run(
        &mut self,
        lease: &Lease,
        mode: &str,
        published: bool,
        now: Timestamp,
    ) -> Result<RunId, StoreError>;

    /// Commits one chunk of `run`'s plan at once: its outbox entries (undeliverable until the
    /// plan is published), agreed baselines (with `layout`), reviews (each opened, or the live
    /// one for the same record and field refreshed: new values reopen a resolved one), audit,
    /// and then the raw digests.
    ///
    /// # Errors
    ///
    /// `StoreError::LeaseLost` when `lease` was taken over (nothing is kept); a database error.
    fn commit_plan_chunk(
        &mut self,
        lease: &Lease,
        run: RunId,
        layout: &LinkLayout,
        chunk: PlanChunk,
        now: Timestamp,
    ) -> Result<(), StoreError>;

    /// Drops what `run` planned and never published (the guard stopped it, or it died while
    /// planning): its writes, the reviews it opened and its audit entries, which tell of
    /// decisions that were never carried out. Returns how many writes were dropped.
    ///
    /// # Errors
    ///
    /// `StoreError::LeaseLost` when `lease` was taken over; a database error.
    fn discard_plan(&mut self, lease: &Lease, run: RunId) -> Result<usize, StoreError>;

    /// Makes `run`'s plan deliverable, with what it settles (`PlanPublication`), in one commit.
    ///
    /// # Errors
    ///
    /// `StoreError::LeaseLost` when `lease` was taken over (nothing is kept); a database error.
    fn publish_plan(
        &mut self,
        lease: &Lease,
        run: RunId,
        layout: &LinkLayout,
        publication: PlanPublication,
        now: Timestamp,
    ) -> Result<(), StoreError>;

    /// Marks a batch of entries as being sent, in one commit: until `close_batch` ends the
    /// send, every reader sees them `sending` with one more attempt, and after a crash before
    /// it the link's next `start_run` counts that attempt on each of them.
    ///
    /// # Errors
    ///
    /// `StoreError::LeaseLost` when `lease` was taken over; a database error.
    fn start_send(&mut self, lease: &Lease, ids: Vec<OutboxId>, now: Timestamp)
    -> Result<SendId, StoreError>;

    /// Closes a delivered batch in one commit: ends its send, moves (or forgets) the baselines
    /// of verified writes with `layout`, then records the raw digests, appends the audit, sets
    /// each entry's outcome (counting the attempts that were made), and forgets the last full
    /// scan of `full_scan_of`.
    ///
    /// # Errors
    ///
    /// `StoreError::LeaseLost` when `lease` was taken over (nothing is kept); a database error.
    fn close_batch(
        &mut self,
        lease: &Lease,
        layout: &LinkLayout,
        batch: BatchClose,
        now: Timestamp,
    ) -> Result<(), StoreError>;

    /// Moves the change-feed sequence of `side`'s cursor of the lease's link from `from` to
    /// `to`, in one commit, if it still stands at `from`: the feed holds nothing between them
    /// but the link's own verified writes (`Connector::feed_past_own_writes`), so the next run
    /// need not read them back. Whether it moved.
    ///
    /// # Errors
    ///
    /// `StoreError::LeaseLost` when `lease` was taken over; a database error.
    fn move_sequence(&mut self, lease: &Lease, side: Side, from: &str, to: &str) -> Result<bool, StoreError>;

    /// Records how a run ended, in one commit.
    ///
    /// # Errors
    ///
    /// `StoreError::LeaseLost` when `lease` was taken over; a database error.
    fn finish_run(&mut self, lease: &Lease, end: RunEnd) -> Result<(), StoreError>;

    /// Records a person's decision on an open or resolved review of `link`, with its audit, in
    /// one commit.
    ///
    /// # Errors
    ///
    /// `StoreError::NotFound` when there is no such live review.
    fn decide_review(
        &mut self,
        link: &str,
        id: ReviewId,
        decision: &Decision,
        audit: &AuditEntry,
        now: Timestamp,
    ) -> Result<(), StoreError>;

    /// Puts dead entries back in line: pending, due now, attempts reset; in one commit.
    ///
    /// # Errors
    ///
    /// `StoreError::NotFound` when one of them is not a dead entry (then none is retried).
    fn retry_dead(&mut self, ids: &[OutboxId], now: Timestamp) -> Result<(), StoreError>;

    /// Drops a dead entry: it will never be tried again.
    ///
    /// # Errors
    ///
    /// `StoreError::NotFound` when there is no dead entry with this id.
    fn drop_dead(&mut self, id: OutboxId, now: Timestamp) -> Result<(), StoreError>;

    /// Deletes the history of `link` older than `before`, in one commit: audit entries written
    /// before it, runs that ended before it, and finished outbox entries (done, superseded,
    /// dropped) and closed reviews last changed before it, which hold the values they wrote or
    /// asked about. It keeps what fieldsync still needs: a run still planning (its plan neither
    /// published nor discarded: the link's next run discards what it planned), the link's
    /// last run that read both sides (`RunRow::read_both_sides`: a schedule counts from it),
    /// and every unfinished outbox entry and live review. Like a person's decision, it takes
    /// no lease: a run going on meanwhile writes only newer rows.
    ///
    /// # Errors
    ///
    /// Fails on a database error.
    fn purge_history(&mut self, link: &str, before: Timestamp) -> Result<PurgedHistory, StoreError>;

    /// Erases the record `key` of `link` from the store, for a person's right to erasure: its
    /// baseline, outbox entries, reviews and audit entries are removed, its ids struck from the
    /// webhooks that name it (a webhook naming nothing else removed), and its key, ids and
    /// values (as its rows held them) struck from the messages that quote them (`codec::Traces`), in
    /// one commit that also writes the erasure's own audit entry (`ErasedRecord::audit`, by
    /// `by` at `now`: named by the key's digest, with no value). Then the store's files are
    /// written anew so that the removed bytes are nowhere in them (`ErasedRecord::wiped`). Like
    /// a person's decision it takes no lease; a run of the link going on meanwhile may write
    /// the record again from what it read, as the next run does while a system still holds it.
    ///
    /// # Errors
    ///
    /// Fails on a database error (then nothing was erased).
    fn erase_record(
        &mut self,
        link: &str,
        key: &RecordKey,
        by: &str,
        now: Timestamp,
    ) -> Result<ErasedRecord, StoreError>;

    /// Keeps an accepted webhook until a run of its link has read what it told of, in one
    /// commit; `false`, keeping nothing, when a webhook with the same id came for the same
    /// link and side at `seen_since` or later (a replay).
    ///
    /// # Errors
    ///
    /// Fails on a database error.
    fn accept_webhook(&mut self, hook: &NewWebhook, seen_since: Timestamp) -> Result<bool, StoreError>;

    /// Marks the webhooks of `link` that came before `read_at` as read (a run that started at
    /// `read_at` read both sides after them), and forgets read ones that came before
    /// `forget_before`, whose ids a replay check no longer needs.
    ///
    /// # Errors
    ///
    /// Fails on a database error.
    fn settle_webhooks(
        &mut self,
        link: &str,
        read_at: Timestamp,
        forget_before: Timestamp,
    ) -> Result<(), StoreError>;

    /// When the oldest webhook of `link` that no run has read yet came, if one waits.
    ///
    /// # Errors
    ///
    /// Fails on a database error.
    fn waiting_webhook(&self, link: &str) -> Result<Option<Timestamp>, StoreError>;

    /// The webhooks of `link` that no run has read yet, and the records they name, each once
    /// with its side: what a targeted run reads. `None` when one of them names no record, or
    /// more than `limit` wait: then the sides must be read. Empty when none waits.
    ///
    /// # Errors
    ///
    /// Fails on a database error or a damaged row.
    fn webhook_records(&self, link: &str, limit: usize) -> Result<Option<NamedRecords>, StoreError>;

    /// Marks the webhooks `ids` (of `webhook_records`) as read: a targeted run read the records
    /// they name. Webhooks that came since stay waiting, whenever they came.
    ///
    /// # Errors
    ///
    /// Fails on a database error.
    fn settle_named_webhooks(&mut self, ids: &[i64]) -> Result<(), StoreError>;

    /// The digests of every baseline of `link`, for a full scan's fast path.
    ///
    /// # Errors
    ///
    /// Fails on a database error or a damaged row.
    fn all_digests(
        &self,
        link: &str,
        layout: &LinkLayout,
    ) -> Result<HashMap<RecordKey, DigestEntry>, StoreError> {
        let mut digests = HashMap::new();
        self.for_each_digest(link, layout, |key, entry| {
            digests.insert(key, entry);
        })?;
        Ok(digests)
    }

    /// Hands every baseline digest of `link` to `each`, in link key order.
    ///
    /// # Errors
    ///
    /// Fails on a database error.
    fn for_each_digest(
        &self,
        link: &str,
        layout: &LinkLayout,
        mut each: impl FnMut(RecordKey, DigestEntry),
    ) -> Result<(), StoreError> {
        let mut after = None;
        while let Some(last) = self.digest_page(link, layout, after.as_ref(), 10_000, &mut each)? {
            after = Some(last);
        }
        Ok(())
    }

    /// Hands the digests of up to `limit` baselines of `link` whose keys follow `after` to
    /// `each`, in link key order (byte order, as `RecordKey` compares), holding none of them:
    /// the caller keeps what it needs, as compactly as it likes. Returns the last key of the
    /// page, to pass as `after` for the next one, or `None` when there are no more.
    ///
    /// # Errors
    ///
    /// Fails on a database error.
    fn digest_page(
        &self,
        link: &str,
        layout: &LinkLayout,
        after: Option<&RecordKey>,
        limit: usize,
        each: impl FnMut(RecordKey, DigestEntry),
    ) -> Result<Option<RecordKey>, StoreError>;

    /// The digests of the baselines of some records (absent keys have none).
    ///
    /// # Errors
    ///
    /// Fails on a database error or a damaged row.
    fn digests(
        &self,
        link: &str,
        layout: &LinkLayout,
        keys: &[RecordKey],
    ) -> Result<HashMap<RecordKey, DigestEntry>, StoreError>;

    /// The full baselines of some records, mapped onto `layout` by field name. A damaged
    /// baseline is left out, as if it were lost.
    ///
    /// # Errors
    ///
    /// Fails on a database error or a damaged row.
    fn baselines(
        &self,
        link: &str,
        layout: &LinkLayout,
        keys: &[RecordKey],
    ) -> Result<HashMap<RecordKey, Baseline>, StoreError>;

    /// How many records `link` has a baseline for (not counting tombstones), as the store's
    /// triggers keep count.
    ///
    /// # Errors
    ///
    /// Fails on a database error.
    fn baseline_count(&self, link: &str) -> Result<u64, StoreError>;

    /// Where incremental reading of one side of `link` stands.
    ///
    /// # Errors
    ///
    /// Fails on a database error.
    fn cursor(&self, link: &str, side: Side) -> Result<CursorState, StoreError>;

    /// The link keys of the records of `link` whose baselines hold one of `ids` as their id on
    /// `side`, by id: how a change feed's delete, which names only the record's id, finds its
    /// record. Ids no baseline holds are absent.
    ///
    /// # Errors
    ///
    /// Fails on a database error.
    fn keys_of_ids(
        &self,
        link: &str,
        side: Side,
        ids: &[RecordId],
    ) -> Result<HashMap<RecordId, RecordKey>, StoreError>;

    /// The outbox entries of `link` that are due: pending, or left `sending` by a crash, with
    /// their next attempt at or before `now` — at most `limit` of them with ids above `after`,
    /// oldest first (pass the last id seen to page through them).
    ///
    /// # Errors
    ///
    /// Fails on a database error or a damaged row.
    fn due_outbox(
        &self,
        link: &str,
        now: Timestamp,
        after: OutboxId,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError>;

    /// The earliest next attempt of `link`'s pending entries, if any.
    ///
    /// # Errors
    ///
    /// Fails on a database error.
    fn next_due(&self, link: &str) -> Result<Option<Timestamp>, StoreError>;

    /// The unfinished (pending, sending, moved or dead) outbox entries of some records.
    ///
    /// # Errors
    ///
    /// Fails on a database error or a damaged row.
    fn open_outbox_for(&self, link: &str, keys: &[RecordKey]) -> Result<Vec<OutboxEntry>, StoreError>;

    /// The keys of `link`'s records with unfinished (pending, sending, moved or dead) outbox
    /// entries.
    ///
    /// # Errors
    ///
    /// Fails on a database error.
    fn open_outbox_keys(&self, link: &str) -> Result<Vec<RecordKey>, StoreError>;

    /// Outbox entries, newest first, optionally of one link and status.
    ///
    /// # Errors
    ///
    /// Fails on a database error or a damaged row.
    fn list_outbox(
        &self,
        link: Option<&str>,
        status: Option<OutboxStatus>,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        first_page(limit, |limit| {
            self.outbox_page(ListQuery { link, links: None, status, before: None, limit })
        })
    }

    /// A page of the outbox entries `query` asks for.
    ///
    /// # Errors
    ///
    /// Fails on a database error or a damaged row.
    fn outbox_page(&self, query: OutboxQuery<'_>) -> Result<ListPage<OutboxEntry>, StoreError>;

    /// One outbox entry.
    ///
    /// # Errors
    ///
    /// `StoreError::NotFound` when there is none with this id.
    fn outbox_entry(&self, id: OutboxId) -> Result<OutboxEntry, StoreError>;

    /// How many outbox entries of `link` are in each status.
    ///
    /// # Errors
    ///
    /// Fails on a database error.
    fn outbox_counts(&self, link: &str) -> Result<HashMap<OutboxStatus, u64>, StoreError>;

    /// The open and resolved (not yet applied) reviews of some records.
    ///
    /// # Errors
    ///
    /// Fails on a database error or a damaged row.
    fn live_reviews_for(&self, link: &str, keys: &[RecordKey]) -> Result<Vec<Review>, StoreError>;

    /// The keys of `link` that have open or resolved reviews.
    ///
    /// # Errors
    ///
    /// Fails on a database error.
    fn keys_with_live_reviews(&self, link: &str) -> Result<Vec<RecordKey>, StoreError>;

    /// Reviews, newest first, optionally of one link and status.
    ///
    /// # Errors
    ///
    /// Fails on a database error or a damaged row.
    fn list_reviews(
        &self,
        link: Option<&str>,
        status: Option<ReviewStatus>,
        limit: usize,
    ) -> Result<Vec<Review>, StoreError> {
        first_page(limit, |limit| {
            self.reviews_page(ListQuery { link, links: None, status, before: None, limit })
        })
    }

    /// A page of the reviews `query` asks for.
    ///
    /// # Errors
    ///
    /// Fails on a database error or a damaged row.
    fn reviews_page(&self, query: ReviewQuery<'_>) -> Result<ListPage<Review>, StoreError>;

    /// One review.
    ///
    /// # Errors
    ///
    /// `StoreError::NotFound` when there is none with this id.
    fn review(&self, id: ReviewId) -> Result<Review, StoreError>;

    /// Runs, newest first, optionally of one link.
    ///
    /// # Errors
    ///
    /// Fails on a database error or a damaged row.
    fn list_runs(&self, link: Option<&str>, limit: usize) -> Result<Vec<RunRow>, StoreError> {
        first_page(limit, |limit| {
            self.runs_page(ListQuery { link, links: None, status: None, before: None, limit })
        })
    }

    /// A page of the runs `query` asks for.
    ///
    /// # Errors
    ///
    /// Fails on a database error or a damaged row.
    fn runs_page(&self, query: RunQuery<'_>) -> Result<ListPage<RunRow>, StoreError>;

    /// One run.
    ///
    /// # Errors
    ///
    /// `StoreError::NotFound` when there is none with this id.
    fn run(&self, id: RunId) -> Result<RunRow, StoreError>;

    /// The runs of every link started at or after `since`, newest first: what a chart of the
    /// last days counts.
    ///
    /// # Errors
    ///
    /// Fails on a database error or a damaged row.
    fn runs_since(&self, since: Timestamp) -> Result<Vec<RunRow>, StoreError>;

    /// The audit entries of a run, in order.
    ///
    /// # Errors
    ///
    /// Fails on a database error or a damaged row.
    fn audit_for_run(&self, id: RunId) -> Result<Vec<AuditEntry>, StoreError>;

    /// The audit entries of one record, in order.
    ///
    /// # Errors
    ///
    /// Fails on a database error or a damaged row.
    fn audit_for_record(&self, link: &str, key: &RecordKey) -> Result<Vec<AuditEntry>, StoreError>;
}

/// The newest `limit` rows a listing asks for, read as the first page of `page` (nothing when
/// `limit` is `0`, which asks a page for all of them).
fn first_page<T>(
    limit: usize,
    page: impl FnOnce(usize) -> Result<ListPage<T>, StoreError>,
) -> Result<Vec<T>, StoreError> {
    if limit == 0 { Ok(Vec::new()) } else { Ok(page(limit)?.rows) }
}
