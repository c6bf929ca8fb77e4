//! Webhooks kept until a run reads what they told of: an accepted one kept durably (a replay of
//! its id refused), and what a link's runs have still to read.

use fieldsync_model::Side;
use fieldsync_store::{NewWebhook, StateStore as _};
use jiff::{SignedDuration, Timestamp};

use super::{Workspace, WorkspaceError};

/// How long a webhook a run has read is kept, so that a replay of its id is still known: the
/// longest `tolerance` a configuration may set.
const REMEMBERED: SignedDuration = SignedDuration::from_hours(24);

impl Workspace {
    /// Keeps a webhook from `side` of `link` until a run reads what it told of; `false`,
    /// keeping nothing, when one with the same id came within `tolerance` (a replay).
    ///
    /// # Errors
    ///
    /// When the state store cannot be opened or written.
    pub fn accept_webhook(
        &mut self,
        link: &str,
        side: Side,
        hook_id: &str,
        records: Vec<String>,
        tolerance: std::time::Duration,
    ) -> Result<bool, WorkspaceError> {
        let now = Timestamp::now();
        let seen_since = now - SignedDuration::try_from(tolerance).unwrap_or(REMEMBERED).min(REMEMBERED);
        let hook = NewWebhook { link: link.into(), side, hook_id: hook_id.into(), received_at: now, records };
        Ok(self.store()?.accept_webhook(&hook, seen_since)?)
    }

    /// When the oldest webhook of `link` that no run has read yet came, if one waits.
    ///
    /// # Errors
    ///
    /// When the state store cannot be opened or read.
    pub fn waiting_webhook(&mut self, link: &str) -> Result<Option<Timestamp>, WorkspaceError> {
        Ok(self.store()?.waiting_webhook(link)?)
    }

    /// Marks the webhooks of `link` that came before a run started at `started` as read.
    ///
    /// # Errors
    ///
    /// When the state store cannot be opened or written.
    pub fn settle_webhooks(&mut self, link: &str, started: Timestamp) -> Result<(), WorkspaceError> {
        Ok(self.store()?.settle_webhooks(link, started, started - REMEMBERED)?)
    }
}
