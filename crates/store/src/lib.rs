//! The state store: what fieldsync remembers between runs. Baselines (one compact row per
//! record), cursors, the durable outbox, reviews, the audit trail and the run history, in
//! one SQLite file (WAL) with migrations applied in one transaction.
//!
//! The store knows links, records and fields by name but nothing of connectors or merging;
//! outbox payloads and run statistics are opaque JSON written by the engine.

mod error;
mod schema;
mod sqlite;
mod types;

pub use error::StoreError;
pub use sqlite::{LinkLock, StateStore, Transaction};
pub use types::{
    AuditEntry, AuditEvent, Baseline, BaselineField, CursorState, Decision, DigestEntry, LinkLayout,
    NewOutboxEntry, NewReview, Operation, Origin, OutboxEntry, OutboxId, OutboxStatus, Review, ReviewId,
    ReviewKind, ReviewStatus, RunRow, RunStatus, SendId,
};
