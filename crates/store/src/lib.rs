//! The state store's contract: what fieldsync remembers between runs (baselines, cursors,
//! the durable outbox, reviews, the audit trail and the run history) as domain types, what
//! each commit writes, the `StateStore` trait (reads and use-case commits, no table-level
//! writes), the classified `StoreError`, what the history keeps of values (a link's `AuditValues`,
//! the digests that stand for values), and (feature `testkit`) the conformance
//! suite every store passes. No database lives here.

mod audit;
pub mod codec;
mod commits;
#[doc(hidden)]
pub mod dispatch;
mod error;
mod listing;
mod location;
mod state_store;
mod types;

/// The error a run's history shows for a run whose process died or lost its lease before it
/// ended: the next run of its link records it, with the time it took the link over.
pub const ABANDONED: &str = "abandoned: its process stopped or lost the link's lease before the run ended";

mod owner;

pub use audit::{key_digest, value_digest};
pub use commits::{BaselineWrite, BatchClose, EntryOutcome, PlanChunk, PlanPublication, RunEnd, SeenDigest};
pub use error::{ErrorClass, StoreError};
pub use listing::Listing;
pub use location::{LocationError, StoreLocation};
pub use owner::{lease_owner, owner_is_gone};
pub use state_store::StateStore;
pub use types::{
    AuditEntry, AuditEvent, AuditValues, Baseline, BaselineField, CursorState, Decision, DigestEntry,
    ErasedRecord, Lease, LinkLayout, ListPage, ListQuery, NamedRecords, NewOutboxEntry, NewReview,
    NewWebhook, Operation, Origin, OutboxEntry, OutboxId, OutboxQuery, OutboxStatus, PurgedHistory, Review,
    ReviewId, ReviewKind, ReviewQuery, ReviewStatus, RunQuery, RunRow, RunStatus, SendId, SourceDigest,
};

#[cfg(feature = "testkit")]
pub mod testkit;
