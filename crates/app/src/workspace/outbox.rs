//! Outbox entries: listed a page at a time, and a dead one put back in line or dropped by a
//! person. Reads and writes the state store only.

use fieldsync_model::{RecordKey, RunId, Side};
use fieldsync_store::StateStore as _;
use fieldsync_store::{ListQuery, Operation, OutboxEntry, OutboxStatus};
use jiff::Timestamp;
use serde::Serialize;

use super::{Page, Workspace, WorkspaceError};

/// An outbox entry as the use cases show it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OutboxEntryView {
    /// Its number.
    pub id: i64,
    /// The link.
    pub link: String,
    /// The link key of the record.
    pub key: RecordKey,
    /// The side written.
    pub side: Side,
    /// The operation.
    pub operation: Operation,
    /// Where it stands.
    pub status: OutboxStatus,
    /// How many attempts were started.
    pub attempts: u32,
    /// When the next attempt is due.
    pub next_attempt_at: Timestamp,
    /// The last failure's message.
    pub last_error: Option<String>,
    /// The run that planned it.
    pub run_id: RunId,
    /// The engine's description of the write (`None` if it is not JSON).
    pub write: Option<serde_json::Value>,
}

impl From<OutboxEntry> for OutboxEntryView {
    fn from(entry: OutboxEntry) -> Self {
        Self {
            write: serde_json::from_str(&entry.write.payload).ok(),
            id: entry.id,
            link: entry.link,
            key: entry.write.key,
            side: entry.write.side,
            operation: entry.write.operation,
            status: entry.status,
            attempts: entry.attempts,
            next_attempt_at: entry.next_attempt_at,
            last_error: entry.last_error,
            run_id: entry.run_id,
        }
    }
}

impl Workspace {
    /// A page of outbox entries, newest first, in one status or (`None`) all; `limit` 0 for
    /// all.
    ///
    /// # Errors
    ///
    /// When the state store cannot be opened or read.
    pub fn outbox(
        &mut self,
        status: Option<OutboxStatus>,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Page<OutboxEntryView>, WorkspaceError> {
        let scope = self.scope();
        let links = scope.as_deref();
        let page = self.store()?.outbox_page(ListQuery { link: None, links, status, before, limit })?;
        Ok(Page::new(page.rows.into_iter().map(OutboxEntryView::from).collect(), page.more, |entry| entry.id))
    }

    /// Puts a dead entry back in line; the next run tries it again.
    ///
    /// # Errors
    ///
    /// `NotFound` when there is no such entry or it is not dead; `Store` when the state store
    /// fails.
    pub fn retry_outbox_entry(&mut self, id: i64) -> Result<(), WorkspaceError> {
        self.settle_dead_entry(id, DeadEntry::Retry)
    }

    /// Drops a dead entry for good.
    ///
    /// # Errors
    ///
    /// `NotFound` when there is no such entry or it is not dead; `Store` when the state store
    /// fails.
    pub fn drop_outbox_entry(&mut self, id: i64) -> Result<(), WorkspaceError> {
        self.settle_dead_entry(id, DeadEntry::Drop)
    }

    fn settle_dead_entry(&mut self, id: i64, settle: DeadEntry) -> Result<(), WorkspaceError> {
        // An entry that does not exist at all is told as such, not as one that is not dead.
        let entry = self.store()?.outbox_entry(id)?;
        self.in_scope(&entry.link, "outbox entry", id)?;
        let store = self.store()?;
        match settle {
            DeadEntry::Retry => store.retry_dead(&[id], Timestamp::now())?,
            DeadEntry::Drop => store.drop_dead(id, Timestamp::now())?,
        }
        Ok(())
    }
}

/// What a person does with a dead outbox entry.
enum DeadEntry {
    /// Put it back in line.
    Retry,
    /// Drop it for good.
    Drop,
}
