//! The rows of the state store as Rust types: baselines, cursors, outbox entries, reviews,
//! audit entries and runs.

use std::fmt;

use fieldsync_model::{RecordDigest, RecordId, RecordKey, RunId, Side, Value};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

macro_rules! text_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vdoc])* $variant),+ }

        impl $name {
            /// The stored and printed name.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// Reads a stored name.
            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str(self.as_str())
            }
        }
    };
}

/// The field list of a link at some time. Baselines name the layout they were written with,
/// so adding, removing or reordering fields in the configuration never misreads a baseline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkLayout {
    /// The layout's id in the store.
    pub id: i64,
    /// The link's field names, in configuration order.
    pub fields: Vec<String>,
}

text_enum!(
    /// Where an agreed value came from.
    Origin {
        /// Copied from the left side.
        Left => "left",
        /// Copied from the right side.
        Right => "right",
        /// Both sides held it (a first sync or a false conflict).
        Both => "both",
        /// A person decided it in a review.
        Person => "person",
    }
);

impl From<Side> for Origin {
    fn from(side: Side) -> Self {
        match side {
            Side::Left => Origin::Left,
            Side::Right => Origin::Right,
        }
    }
}

/// The agreed state of one field of one record.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct BaselineField {
    /// The last value both sides agreed on; `None` when they never agreed (a field added to
    /// the configuration, a first sync held for review).
    pub value: Option<Value>,
    /// When the left side last took a new value of this field, if known.
    pub left_changed: Option<Timestamp>,
    /// When the right side last took a new value of this field, if known.
    pub right_changed: Option<Timestamp>,
    /// Where the agreed value came from.
    pub origin: Option<Origin>,
}

/// The baseline of one record: the merge base of every field, and the record's ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Baseline {
    /// The link key.
    pub key: RecordKey,
    /// The left connector's id of the record.
    pub left_id: Option<RecordId>,
    /// The right connector's id of the record.
    pub right_id: Option<RecordId>,
    /// One entry per field of the current layout.
    pub fields: Vec<BaselineField>,
    /// The side on which the record was deleted while the other kept it (a soft or ignored
    /// delete): it must not be created there again.
    pub tombstone: Option<Side>,
}

impl Baseline {
    /// A baseline with no agreed field yet.
    pub fn empty(key: RecordKey, field_count: usize) -> Self {
        Self {
            key,
            left_id: None,
            right_id: None,
            fields: vec![BaselineField::default(); field_count],
            tombstone: None,
        }
    }

    /// The id on one side.
    pub fn id(&self, side: Side) -> Option<&RecordId> {
        side.pick(&self.left_id, &self.right_id).as_ref()
    }

    /// Sets the id on one side.
    pub fn set_id(&mut self, side: Side, id: RecordId) {
        *side.pick(&mut self.left_id, &mut self.right_id) = Some(id);
    }

    /// The digest of the agreed values, comparable with the digest of a side's values.
    pub fn digest(&self) -> RecordDigest {
        fieldsync_model::digest_values(self.fields.iter().map(|field| field.value.as_ref()))
    }
}

/// What the fast path needs of a baseline: its digest, ids and tombstone. A full scan keeps
/// one per baseline in memory, so it is compact: an id that is the link key itself (as most
/// connectors have it) is not stored twice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DigestEntry {
    /// The digest of the agreed values; `None` when the baseline was written with another
    /// layout, so that its record is compared in full.
    pub digest: Option<RecordDigest>,
    ids: [StoredId; 2],
    /// See `Baseline::tombstone`.
    pub tombstone: Option<Side>,
    /// The raw digest of the left record when it was last found equal to this baseline
    /// (`fieldsync_model::digest_raw`); `None` when not known.
    pub left_seen: Option<RecordDigest>,
    /// The same on the right.
    pub right_seen: Option<RecordDigest>,
}

/// A record id as a `DigestEntry` keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum StoredId {
    Absent,
    /// The same text as the link key.
    Key,
    Other(RecordId),
}

impl DigestEntry {
    /// An entry for the baseline of `key`.
    pub fn new(
        key: &RecordKey,
        digest: Option<RecordDigest>,
        ids: [Option<&str>; 2],
        tombstone: Option<Side>,
        seen: [Option<RecordDigest>; 2],
    ) -> Self {
        let stored = |id: Option<&str>| match id {
            None => StoredId::Absent,
            Some(id) if id == key.as_str() => StoredId::Key,
            Some(id) => StoredId::Other(RecordId::new(id)),
        };
        let [left_id, right_id] = ids;
        let [left_seen, right_seen] = seen;
        Self { digest, ids: [stored(left_id), stored(right_id)], tombstone, left_seen, right_seen }
    }

    /// The raw digest last seen on one side.
    pub fn seen(&self, side: Side) -> Option<RecordDigest> {
        side.pick(self.left_seen, self.right_seen)
    }

    /// The id on one side, as text; `key` is the entry's own link key.
    pub fn id_str<'a>(&'a self, side: Side, key: &'a RecordKey) -> Option<&'a str> {
        match &self.ids[usize::from(side == Side::Right)] {
            StoredId::Absent => None,
            StoredId::Key => Some(key.as_str()),
            StoredId::Other(id) => Some(id.as_str()),
        }
    }

    /// The id on one side; `key` is the entry's own link key.
    pub fn id(&self, side: Side, key: &RecordKey) -> Option<RecordId> {
        self.id_str(side, key).map(RecordId::new)
    }
}

/// Where incremental reading of one side stands.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CursorState {
    /// The latest modification time seen on the side.
    pub cursor: Option<Timestamp>,
    /// When the side was last read in full.
    pub last_full_scan: Option<Timestamp>,
    /// The point of the side's change feed the last listing reached, as its connector spells
    /// it, for a connector that reads changes after a sequence.
    pub sequence: Option<String>,
}

/// The number of an outbox entry.
pub type OutboxId = i64;

/// The number of a send: a batch of outbox entries being sent (`StateStore::start_send`).
pub type SendId = i64;

text_enum!(
    /// What an outbox entry does to its record.
    Operation {
        /// Change values of an existing record.
        Update => "update",
        /// Make the record.
        Create => "create",
        /// Delete the record.
        Delete => "delete",
    }
);

text_enum!(
    /// Where an outbox entry stands.
    OutboxStatus {
        /// Waiting for its next attempt.
        Pending => "pending",
        /// An attempt started and has not finished (after a crash: may or may not have happened).
        Sending => "sending",
        /// Written and verified; its baseline moved in the same transaction.
        Done => "done",
        /// Failed for good; waits for a person to retry or drop it.
        Dead => "dead",
        /// Refused by its target as moved (changed since it was read, not found, already
        /// there): waits for the next run's plan from fresh reads, which sends it again (its
        /// attempts counted on) when it plans the same write, or supersedes it.
        Moved => "moved",
        /// Replaced by a newer plan for the same record and side, or found moot.
        Superseded => "superseded",
        /// Dropped by a person.
        Dropped => "dropped",
    }
);

/// A planned write, before it is stored.
#[derive(Clone, Debug, PartialEq)]
pub struct NewOutboxEntry {
    /// The link key of the record.
    pub key: RecordKey,
    /// The side written.
    pub side: Side,
    /// The operation.
    pub operation: Operation,
    /// The target's id of the record (none for a create).
    pub record_id: Option<RecordId>,
    /// The engine's description of the write, as versioned JSON.
    pub payload: String,
    /// What the write's source side held when it was planned (see `SourceDigest`).
    pub source: Option<SourceDigest>,
}

/// What the source side of a planned write held when the write was planned: the digest of its
/// normalised values (`basis`) and its raw digest bound to that basis
/// (`fieldsync_model::digest_raw`). Once the write is verified and the record's baseline has
/// the digest `basis`, the source side holds that baseline, and `raw` is its fast path: the
/// next scan does not normalise a record fieldsync copied from while it stays the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceDigest {
    /// The digest of the source's normalised values.
    pub basis: RecordDigest,
    /// The source's raw digest, bound to `basis`.
    pub raw: RecordDigest,
}

/// A durable planned write to one side, with its attempts.
#[derive(Clone, Debug, PartialEq)]
pub struct OutboxEntry {
    /// Its number.
    pub id: OutboxId,
    /// The link.
    pub link: String,
    /// The run that planned it.
    pub run_id: RunId,
    /// The write, as planned.
    pub write: NewOutboxEntry,
    /// Where it stands.
    pub status: OutboxStatus,
    /// How many attempts were started.
    pub attempts: u32,
    /// When the next attempt is due.
    pub next_attempt_at: Timestamp,
    /// The last failure's message.
    pub last_error: Option<String>,
    /// When it was planned.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
}

/// The number of a review.
pub type ReviewId = i64;

text_enum!(
    /// Why a person must decide.
    ReviewKind {
        /// Both sides changed a field to different values.
        Conflict => "conflict",
        /// A record seen on both sides for the first time differs in a field.
        FirstSync => "first_sync",
        /// A record was deleted on one side (and maybe edited on the other).
        Delete => "delete",
    }
);

text_enum!(
    /// Where a review stands.
    ReviewStatus {
        /// Waiting for a person; nobody writes the field.
        Open => "open",
        /// A person decided; the next run applies the decision.
        Resolved => "resolved",
        /// Done with: the decision was applied, or the sides came to agree by themselves.
        Closed => "closed",
    }
);

/// A person's decision on a review.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Keep one side's value (or, for a delete, that side's state).
    Keep(Side),
    /// Use this value on both sides.
    Value(Value),
}

/// A review to open, or to refresh when one is already open for the same field.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NewReview {
    /// The link key of the record.
    pub key: RecordKey,
    /// The field; `None` for a review of the whole record (a delete).
    pub field: Option<String>,
    /// Why.
    pub kind: ReviewKind,
    /// The baseline value, if any.
    pub base: Option<Value>,
    /// The left value; `None` when the record is absent on the left.
    pub left: Option<Value>,
    /// The right value; `None` when the record is absent on the right.
    pub right: Option<Value>,
    /// When the left record last changed, as its connector reported it; `None` when it gives
    /// no modification time or the record is absent.
    pub left_changed: Option<Timestamp>,
    /// When the right record last changed, as `left_changed`.
    pub right_changed: Option<Timestamp>,
    /// A sentence for the person.
    pub reason: String,
}

/// A conflict, first-sync difference or delete held for a person. As JSON its `review`'s
/// members stand beside its own (`key`, `field`, … beside `id`, `status`, …).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Review {
    /// Its number.
    pub id: ReviewId,
    /// The link.
    pub link: String,
    /// What it is about.
    #[serde(flatten)]
    pub review: NewReview,
    /// Where it stands.
    pub status: ReviewStatus,
    /// The person's decision, once resolved.
    pub decision: Option<Decision>,
    /// The run that opened it.
    pub run_id: Option<RunId>,
    /// When it was opened.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
}

text_enum!(
    /// What an audit entry records.
    AuditEvent {
        /// A change was detected on a side.
        Detected => "detected",
        /// A conflict was settled by a strategy.
        Resolved => "resolved",
        /// A conflict or delete was held for a person.
        Review => "review",
        /// Both sides agreed without a write (a false conflict, a first sync).
        Agreed => "agreed",
        /// A write was verified and the baseline moved.
        Written => "written",
        /// A write failed for good.
        Failed => "failed",
        /// A one-way field's target was put back to its source's value.
        Reverted => "reverted",
        /// A value could not be normalised; the field was left alone.
        Invalid => "invalid",
        /// A record was deleted on a side and the delete policy applied.
        Deleted => "deleted",
        /// A person decided a review.
        Decided => "decided",
        /// A record was erased from the state store (`StateStore::erase_record`); the entry
        /// names it by its key's digest only.
        Erased => "erased",
    }
);

text_enum!(
    /// What the history keeps of the values it tells of: a link's `audit.values`, and what one
    /// audit entry kept when it was written.
    AuditValues {
        /// The values themselves.
        Full => "full",
        /// A digest of each value (`value_digest`): equal values of one link's field give
        /// equal digests, and no value can be read back from one.
        Hashed => "hashed",
        /// No value at all: what happened, to which field, on which side, and why.
        None => "none",
    }
);

/// One line of the audit trail.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AuditEntry {
    /// The run, if the entry came from one.
    pub run_id: Option<RunId>,
    /// The link key of the record.
    pub key: RecordKey,
    /// The field, if the entry is about one.
    pub field: Option<String>,
    /// What happened.
    pub event: AuditEvent,
    /// The side it happened on, if one.
    pub side: Option<Side>,
    /// The baseline value.
    pub base: Option<Value>,
    /// The left value.
    pub left: Option<Value>,
    /// The right value.
    pub right: Option<Value>,
    /// The value written or decided.
    pub value: Option<Value>,
    /// Why, in a sentence.
    pub reason: String,
    /// When.
    pub at: Timestamp,
    /// What the entry keeps of its values (`AuditValues::keep` turns a `full` one into what a
    /// link's policy keeps).
    pub values: AuditValues,
}

impl AuditEntry {
    /// The audit of a person's `decision` on `review` at `at`: the review's values, and the
    /// value decided (the kept side's, or the one given).
    pub fn decided(review: &Review, decision: &Decision, at: Timestamp) -> Self {
        Self::decided_by(review, decision, "a person", at)
    }

    /// `decided`, naming who decided in its reason (`token "ops"`).
    pub fn decided_by(review: &Review, decision: &Decision, by: &str, at: Timestamp) -> Self {
        let asked = &review.review;
        Self {
            run_id: None,
            key: asked.key.clone(),
            field: asked.field.clone(),
            event: AuditEvent::Decided,
            side: None,
            base: asked.base.clone(),
            left: asked.left.clone(),
            right: asked.right.clone(),
            value: match decision {
                Decision::Value(value) => Some(value.clone()),
                Decision::Keep(Side::Left) => asked.left.clone(),
                Decision::Keep(Side::Right) => asked.right.clone(),
            },
            reason: format!("decided by {by}: {}", serde_json::to_string(decision).unwrap_or_default()),
            at,
            values: AuditValues::Full,
        }
    }
}

text_enum!(
    /// How a run ended.
    RunStatus {
        /// Still going (or killed: a run row left `running` by a dead process).
        Running => "running",
        /// Every planned write was made and verified.
        Done => "done",
        /// Some writes failed and will be retried, or are dead.
        Partial => "partial",
        /// Stopped by the guard before writing anything.
        Guarded => "guarded",
        /// Stopped by an error before finishing.
        Failed => "failed",
        /// Cancelled (Ctrl-C, a service shutting down): stopped between two commits, leaving
        /// what a kill there would, cleanly; the next run carries on.
        Cancelled => "cancelled",
    }
);

/// One run in the history.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunRow {
    /// Its number.
    pub id: RunId,
    /// The link.
    pub link: String,
    /// `full` or `incremental`; `deliver` for a run that only delivered due outbox entries.
    pub mode: String,
    /// How it ended.
    pub status: RunStatus,
    /// When it started.
    pub started_at: Timestamp,
    /// When it ended.
    pub finished_at: Option<Timestamp>,
    /// The engine's statistics.
    pub stats: serde_json::Value,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

impl RunRow {
    /// A count in the run's statistics at a JSON pointer (`/writes_done`, `/left/read`), 0
    /// when it has none.
    pub fn stat(&self, pointer: &str) -> u64 {
        self.stats.pointer(pointer).and_then(serde_json::Value::as_u64).unwrap_or(0)
    }

    /// Whether the run read both sides and came to its end (done, partial, or stopped by the
    /// guard; not cancelled, failed, only delivering or targeted at the records webhooks
    /// named): the runs a schedule counts.
    pub fn read_both_sides(&self) -> bool {
        !matches!(self.mode.as_str(), "deliver" | "targeted")
            && matches!(self.status, RunStatus::Done | RunStatus::Partial | RunStatus::Guarded)
    }
}

/// A link's lease: at most one holder runs a link at a time. It names its owner, lasts until
/// `expires_at` (each commit under it renews it by `ttl`), and carries the token every commit
/// under it checks: a commit by a holder whose lease was taken over (possible once it expired)
/// fails with `StoreError::LeaseLost`. Dropping it gives up the store's own hold (SQLite: its lock file).
pub struct Lease {
    /// The link leased.
    pub link: String,
    /// Who holds it (a process, a worker).
    pub owner: String,
    /// Changes whenever the lease changes hands.
    pub token: i64,
    /// When the lease ends unless a commit renews it.
    pub expires_at: Timestamp,
    /// How long each renewal lasts.
    pub ttl: std::time::Duration,
    /// What the store holds besides (an OS lock), released on drop.
    hold: Option<Box<dyn std::any::Any + Send + Sync>>,
}

impl Lease {
    /// A lease as a store grants it; `hold` is released when the lease is dropped.
    pub fn new(
        link: &str,
        owner: &str,
        token: i64,
        expires_at: Timestamp,
        ttl: std::time::Duration,
        hold: Option<Box<dyn std::any::Any + Send + Sync>>,
    ) -> Self {
        Self { link: link.to_string(), owner: owner.to_string(), token, expires_at, ttl, hold }
    }
}

impl fmt::Debug for Lease {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Lease")
            .field("link", &self.link)
            .field("owner", &self.owner)
            .field("token", &self.token)
            .field("expires_at", &self.expires_at)
            .field("ttl", &self.ttl)
            .field("held", &self.hold.is_some())
            .finish()
    }
}

/// What a listing of outbox entries, reviews or runs asks for: newest first, of one link (or
/// all), in one status (or all), older than `before` (the id of the previous page's last row)
/// when given, at most `limit` rows (all when `0`).
#[derive(Clone, Copy, Debug)]
pub struct ListQuery<'a, Status, Id> {
    /// Only this link's rows.
    pub link: Option<&'a str>,
    /// Only the rows of these links (an organisation's).
    pub links: Option<&'a [String]>,
    /// Only rows in this status.
    pub status: Option<Status>,
    /// Only rows older than this one.
    pub before: Option<Id>,
    /// At most this many rows; `0` for all.
    pub limit: usize,
}

impl<'a, Status, Id> ListQuery<'a, Status, Id> {
    /// The query as a store's SQL takes it: the status as its text and `before` as a row id.
    pub fn in_rows(
        self,
        status: fn(Status) -> &'static str,
        id: fn(Id) -> i64,
    ) -> ListQuery<'a, &'static str, i64> {
        let ListQuery { link, links, status: wanted, before, limit } = self;
        ListQuery { link, links, status: wanted.map(status), before: before.map(id), limit }
    }
}

/// What a listing of outbox entries asks for.
pub type OutboxQuery<'a> = ListQuery<'a, OutboxStatus, OutboxId>;

/// What a listing of reviews asks for.
pub type ReviewQuery<'a> = ListQuery<'a, ReviewStatus, ReviewId>;

/// What a listing of runs asks for.
pub type RunQuery<'a> = ListQuery<'a, RunStatus, RunId>;

/// A page of a listing: its rows, newest first, and how many more match after the last.
#[derive(Clone, Debug, PartialEq)]
pub struct ListPage<T> {
    /// The rows.
    pub rows: Vec<T>,
    /// How many more rows match the query after the page's last (pass its id as `before`).
    pub more: u64,
}

/// What the webhooks a link's runs have still to read name, for a targeted run: the webhooks
/// (their ids in the store, for `StateStore::settle_named_webhooks`) and the records they name,
/// each once with its side.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NamedRecords {
    /// The webhooks read.
    pub webhooks: Vec<i64>,
    /// The records they name.
    pub records: Vec<(Side, String)>,
}

/// A webhook accepted: a side of a link changed, as its sender told, under the sender's own
/// id for the message (which a replay repeats).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewWebhook {
    /// The link.
    pub link: String,
    /// The side that changed.
    pub side: Side,
    /// The sender's id of the message.
    pub hook_id: String,
    /// When it came.
    pub received_at: Timestamp,
    /// The ids of the records it named, if it named any.
    pub records: Vec<String>,
}

/// What `StateStore::purge_history` deleted of a link's history.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PurgedHistory {
    /// Runs, with their statistics and errors.
    pub runs: u64,
    /// Audit entries.
    pub audit_entries: u64,
    /// Finished outbox entries (done, superseded or dropped), with their values.
    pub outbox_entries: u64,
    /// Closed reviews, with their values.
    pub reviews: u64,
}

/// What `StateStore::erase_record` removed of a record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ErasedRecord {
    /// Whether it had a baseline.
    pub baseline: bool,
    /// Its outbox entries, whatever their status.
    pub outbox_entries: u64,
    /// Its reviews, whatever their status.
    pub reviews: u64,
    /// Its audit entries.
    pub audit_entries: u64,
    /// Webhooks that named it, its ids struck from them (or they removed, when they named
    /// nothing else).
    pub webhooks: u64,
    /// Messages about other records and runs (a run's error, a failed write's message) that
    /// quoted its key, one of its ids or one of its values, struck from them.
    pub messages: u64,
    /// Whether the store's files were written anew without what was removed (SQLite: the file
    /// rebuilt and its write-ahead log emptied; PostgreSQL: the tables rewritten). `false`
    /// when another process kept the old bytes in use: the rows are gone all the same, and a
    /// later erasure (of any record) rewrites the files.
    pub wiped: bool,
}
