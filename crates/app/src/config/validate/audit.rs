//! A link's `audit` table checked: what its history keeps of values (`values`) and for how long
//! (`keep`).

use std::time::Duration;

use fieldsync_store::AuditValues;
use toml::Spanned;

use super::Validator;
use crate::config::raw::RawAudit;

/// What `audit.values` may say.
const VALUES: &[(&str, AuditValues)] =
    &[("full", AuditValues::Full), ("hashed", AuditValues::Hashed), ("none", AuditValues::None)];

impl Validator<'_> {
    /// What the history of a link keeps of values (`full` when not said) and how long it is
    /// kept (`None`: for ever); `None` when a setting is wrong (the problem is kept).
    pub(super) fn audit(
        &mut self,
        audit: Option<&Spanned<RawAudit>>,
    ) -> Option<(AuditValues, Option<Duration>)> {
        let Some(audit) = audit.map(Spanned::get_ref) else { return Some((AuditValues::Full, None)) };
        let values = self.choose_or(audit.values.as_ref(), AuditValues::Full, "audit values", VALUES);
        let keep = match &audit.keep {
            None => Some(None),
            Some(keep) => self.duration(keep, "audit keep").and_then(|duration| {
                if duration.is_zero() {
                    self.problem(
                        keep.span(),
                        "audit keep must be longer than zero; leave it out to keep the history for ever",
                    );
                    return None;
                }
                Some(Some(duration))
            }),
        };
        Some((values?, keep?))
    }
}
