//! Personal data kept no longer than needed: each link's history older than its `audit.keep`
//! deleted (`Workspace::purge_history`, what `fieldsync purge` and, once a day, `fieldsync serve`
//! do), and one record erased from the state store for a person's right to erasure
//! (`Workspace::erase_record`). Reads and writes the state store only.

use std::time::Duration;

use fieldsync_model::RecordKey;
use fieldsync_store::StateStore as _;
use fieldsync_store::{ErasedRecord, PurgedHistory, key_digest};
use jiff::Timestamp;
use serde::Serialize;

use super::{Workspace, WorkspaceError};

/// What a purge of one link's history did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LinkPurge {
    /// The link.
    pub link: String,
    /// How long its history is kept (`audit.keep`, as `400d` or `36h`); `None`: for ever, and
    /// nothing was purged.
    pub keep: Option<String>,
    /// What was older than this was deleted; `None` when the history is kept for ever.
    pub before: Option<Timestamp>,
    /// What was deleted.
    #[serde(flatten)]
    pub purged: PurgedHistory,
}

/// A record erased from the state store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Erasure {
    /// The link.
    pub link: String,
    /// The digest of the record's key (`sha256:…`), which names it in the erasure's audit entry:
    /// the key itself is kept nowhere.
    pub key_digest: String,
    /// What was removed, and whether the store's files were written anew without it.
    #[serde(flatten)]
    pub erased: ErasedRecord,
}

impl Workspace {
    /// Deletes, for `link` or for every configured link, the history older than the link's
    /// `audit.keep` before `now`: audit entries, runs that ended, finished outbox entries and
    /// closed reviews (never what fieldsync still needs: see `StateStore::purge_history`). A
    /// link without `keep` keeps its history for ever and is listed with nothing purged.
    ///
    /// # Errors
    ///
    /// `UnknownLink` when `link` is not configured; `Store` when the state store fails (the
    /// links purged before it stay purged).
    pub fn purge_history(
        &mut self,
        link: Option<&str>,
        now: Timestamp,
    ) -> Result<Vec<LinkPurge>, WorkspaceError> {
        // The links to purge with their `keep`: the one asked for (also an organisation no
        // longer listed), or every link shown.
        let targets: Vec<(String, Option<Duration>)> = match link {
            Some(name) => vec![(name.to_string(), self.link_named(name)?.keep)],
            None => self
                .config
                .links
                .iter()
                .filter(|(_, link)| self.shows(link))
                .map(|(name, link)| (name.clone(), link.keep))
                .collect(),
        };
        let Workspace { config, store, .. } = self;
        let mut purges = Vec::new();
        for (name, keep) in targets {
            let Some(keep) = keep else {
                purges.push(LinkPurge {
                    link: name.clone(),
                    keep: None,
                    before: None,
                    purged: PurgedHistory::default(),
                });
                continue;
            };
            let before = jiff::SignedDuration::try_from(keep)
                .ok()
                .and_then(|keep| now.checked_sub(keep).ok())
                .unwrap_or(Timestamp::MIN);
            let store = super::open_store(config, store)?;
            let purged = store.purge_history(&name, before)?;
            purges.push(LinkPurge {
                link: name.clone(),
                keep: Some(duration_text(keep)),
                before: Some(before),
                purged,
            });
        }
        Ok(purges)
    }

    /// Erases the record `key` of `link` from the state store: its baseline, outbox entries,
    /// reviews and audit entries, its ids in webhooks and its key and values in other rows'
    /// messages, and then the old bytes from the store's files (`StateStore::erase_record`).
    /// The erasure is audited by the key's digest, naming who erased it: the API token `token`,
    /// or a person on the command line. The systems of record are not touched: a run reads the
    /// record again from a system that still holds it.
    ///
    /// # Errors
    ///
    /// `UnknownLink` when `link` is not configured; `Store` when the state store fails (then
    /// nothing was erased).
    pub fn erase_record(
        &mut self,
        link: &str,
        key: &str,
        token: Option<&str>,
    ) -> Result<Erasure, WorkspaceError> {
        self.link_named(link)?;
        let by = token.map_or_else(|| "a person".to_string(), |name| format!("token {name:?}"));
        let key = RecordKey::new(key);
        let erased = self.store()?.erase_record(link, &key, &by, Timestamp::now())?;
        Ok(Erasure { link: link.to_string(), key_digest: key_digest(link, &key), erased })
    }

    /// The configuration of `link`, when the use cases may act on it (an organisation's only
    /// when limited to one). An organisation no longer listed keeps its state and history
    /// under its instance's name (`LINK/ID`) until purged: its link has the settings of the
    /// `for_each` link's other instances.
    fn link_named(&self, link: &str) -> Result<&crate::LinkConfig, WorkspaceError> {
        let configured = self.config.links.get(link).filter(|config| self.shows(config));
        let removed = || {
            let definition = crate::config::definition(link)?;
            let for_each = &self.config.organisations.as_ref()?.for_each;
            if !for_each.contains(definition)
                || self.scope().is_some_and(|own| !own.iter().any(|name| name == link))
            {
                return None;
            }
            self.config.links.values().find(|config| {
                config.organisation.is_some()
                    && crate::config::definition(config.spec.name.as_str()) == Some(definition)
            })
        };
        configured.or_else(removed).ok_or_else(|| WorkspaceError::UnknownLink {
            name: link.to_string(),
            known: self
                .config
                .links
                .iter()
                .filter(|(_, config)| self.shows(config))
                .map(|(name, _)| name.clone())
                .collect(),
        })
    }
}

/// A retention as people write it: whole days as `400d`, else jiff's friendly form (`36h`).
fn duration_text(duration: Duration) -> String {
    const DAY: u64 = 86_400;
    if duration.subsec_nanos() == 0 && duration.as_secs() > 0 && duration.as_secs().is_multiple_of(DAY) {
        return format!("{}d", duration.as_secs() / DAY);
    }
    jiff::SignedDuration::try_from(duration)
        .map_or_else(|_| format!("{duration:?}"), |duration| format!("{duration:#}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retention_reads_as_it_is_written() {
        assert_eq!(duration_text(Duration::from_secs(400 * 86_400)), "400d");
        assert_eq!(duration_text(Duration::from_secs(36 * 3600)), "36h");
        assert_eq!(duration_text(Duration::from_secs(90)), "1m 30s");
    }
}
