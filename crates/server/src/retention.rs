//! Retention: each link's history past its `audit.keep` deleted once a day
//! (`Workspace::purge_history`), the first time shortly after the configuration starts (at the
//! service's start and at each reload), by one task per configuration that ends with it.

use std::time::Duration;

use fieldsync_app::Config;
use fieldsync_app::workspace::{CancellationToken, Timestamp, error_chain};
use tokio::task::JoinSet;

use crate::shared::SharedWorkspace;

/// How long after the configuration starts the first purge comes: once the runs a start sets
/// off (missed schedules, waiting webhooks) have had their turn at the state store.
const FIRST_PASS: Duration = Duration::from_secs(60);

/// How often the history is purged after the first time.
const EVERY: Duration = Duration::from_secs(24 * 3600);

/// Starts the purging of `config`'s links that keep their history for a while (none: no task),
/// on `workspace`; it ends with `stop`, or when the set is dropped.
pub(crate) fn start(config: &Config, workspace: SharedWorkspace, stop: CancellationToken) -> JoinSet<()> {
    let mut tasks = JoinSet::new();
    if config.links.values().all(|link| link.keep.is_none()) {
        return tasks;
    }
    tasks.spawn(async move {
        let mut next = tokio::time::Instant::now() + FIRST_PASS;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep_until(next) => {}
            }
            purge(&workspace).await;
            next = tokio::time::Instant::now() + EVERY;
        }
    });
    tasks
}

/// Deletes every link's history past its `keep` now, and logs what went.
async fn purge(workspace: &SharedWorkspace) {
    match workspace.call(|workspace| workspace.purge_history(None, Timestamp::now())).await {
        Ok(purges) => {
            for purge in purges.iter().filter(|purge| purge.before.is_some()) {
                let counts = &purge.purged;
                tracing::info!(
                    link = %purge.link,
                    keep = purge.keep.as_deref().unwrap_or_default(),
                    runs = counts.runs,
                    audit_entries = counts.audit_entries,
                    outbox_entries = counts.outbox_entries,
                    reviews = counts.reviews,
                    "purged the history past its keep"
                );
            }
        }
        Err(error) => {
            tracing::warn!(error = %error_chain(&error), "the history could not be purged; trying again tomorrow");
        }
    }
}

#[cfg(test)]
mod tests {
    use fieldsync_app::Workspace;
    use fieldsync_app::workspace::{RunScope, Unobserved};

    use super::*;

    /// A configuration of two CSV files of one member each, linked with `audit`, in `dir`.
    fn config(dir: &std::path::Path, audit: &str) -> Config {
        for (file, email) in [("left.csv", "anna@club.nl"), ("right.csv", "anna@club.nl")] {
            std::fs::write(dir.join(file), format!("id,email\nM1,{email}\n")).unwrap();
        }
        let text = format!(
            "state = \"state.db\"\n\n[connectors.left]\nkind = \"csv\"\npath = \"left.csv\"\nkey = \"id\"\n\n\
             [connectors.right]\nkind = \"csv\"\npath = \"right.csv\"\nkey = \"id\"\n\n[links.members]\n\
             left = \"left\"\nright = \"right\"\nkey = {{ left = \"id\", right = \"id\" }}\n{audit}\n\n\
             [[links.members.fields]]\nname = \"email\"\nleft = \"email\"\nright = \"email\"\n"
        );
        fieldsync_app::config::parse(&text, &dir.join("fieldsync.toml")).unwrap()
    }

    #[test]
    fn the_history_past_its_keep_is_purged_shortly_after_the_start() {
        let started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let dir = std::env::temp_dir().join(format!("fieldsync-retention-{}-{started}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
        runtime.block_on(async {
            // Kept for ever: no task.
            let forever = config(&dir, "");
            assert!(start(&forever, SharedWorkspace::new(&forever), CancellationToken::new()).is_empty());

            let config = config(&dir, "audit = { keep = \"1ms\" }");
            let mut workspace = Workspace::new(config.clone());
            workspace.run(&RunScope::default(), false, &mut Unobserved).await.unwrap();
            let run = workspace.runs(None, 1).unwrap().items[0].id.0;
            assert!(!workspace.run_history(run).unwrap().audit.is_empty(), "a first sync is audited");
            std::thread::sleep(Duration::from_millis(5));

            let stop = CancellationToken::new();
            let shared = SharedWorkspace::new(&config);
            let mut tasks = start(&config, shared.clone(), stop.clone());
            tokio::time::sleep(FIRST_PASS - Duration::from_secs(1)).await;
            let audit = shared.call(move |workspace| workspace.run_history(run)).await.unwrap().audit;
            assert!(!audit.is_empty(), "not purged before the first pass");
            tokio::time::sleep(Duration::from_secs(2)).await;
            let history = shared.call(move |workspace| workspace.run_history(run)).await.unwrap();
            assert!(history.audit.is_empty(), "purged by the first pass: {:?}", history.audit);
            assert_eq!(history.run.id.0, run, "the last run that read both sides stays");
            stop.cancel();
            assert!(
                tasks.join_next().await.is_some_and(|ended| ended.is_ok()),
                "the task ends with its stop"
            );
        });
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
