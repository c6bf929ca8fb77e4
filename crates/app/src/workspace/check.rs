//! `check`: opens every connector and asks it about the paths the links read from it, and
//! says how each last-write-wins link times its conflicts. Touches no state store.

use std::collections::BTreeMap;
use std::path::PathBuf;

use fieldsync_connector::{Connector as _, Probe};
use fieldsync_engine::ConflictStrategy;
use fieldsync_model::Side;
use serde::Serialize;

use super::Workspace;
use crate::open_connector;

/// What `check` found.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CheckReport {
    /// The configuration file.
    pub config: PathBuf,
    /// The links' names.
    pub links: Vec<String>,
    /// Each connector by name.
    pub connectors: BTreeMap<String, ConnectorCheck>,
    /// Per last-write-wins link, how its conflicts are timed.
    pub conflict_timing: BTreeMap<String, String>,
}

impl CheckReport {
    /// Whether every connector answered.
    pub fn ok(&self) -> bool {
        self.connectors.values().all(|check| check.ok)
    }
}

/// One connector's answer.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ConnectorCheck {
    /// Whether it opened and answered.
    pub ok: bool,
    /// What it said about itself, when it answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe: Option<Probe>,
    /// Why not, when it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Workspace {
    /// Opens every connector and asks it about every path any link reads from it.
    /// A connector that fails is in the report (`ok` false), not an error.
    pub async fn check(&self) -> CheckReport {
        let config = &self.config;
        let links: BTreeMap<&String, &crate::LinkConfig> =
            config.links.iter().filter(|(_, link)| self.shows(link)).collect();
        let mut connectors = BTreeMap::new();
        for (name, connector_config) in &config.connectors {
            let mut paths: Vec<String> = Vec::new();
            let mut used = false;
            for link in links.values() {
                for side in Side::BOTH {
                    if link.connectors.get(side) == name {
                        used = true;
                        paths.extend(link.spec.read_paths(side));
                    }
                }
            }
            // Limited to an organisation, only the connectors of its links.
            if self.organisation.is_some() && !used {
                continue;
            }
            paths.sort();
            paths.dedup();
            let outcome = match open_connector(connector_config, config.base_dir()) {
                Ok(mut connector) => connector.check(&paths).await,
                Err(error) => Err(error),
            };
            let check = match outcome {
                Ok(probe) => ConnectorCheck { ok: true, probe: Some(probe), error: None },
                Err(error) => ConnectorCheck { ok: false, probe: None, error: Some(error.to_string()) },
            };
            connectors.insert(name.clone(), check);
        }
        // Last-write-wins needs modification times, and a side whose records carry none has
        // its changes timed when a run first sees them.
        let mut conflict_timing = BTreeMap::new();
        for (name, link) in &links {
            if let ConflictStrategy::LastWriteWins { grace, .. } = link.spec.conflicts {
                let note = format!(
                    "last_write_wins compares the records' modification times (grace {}s); a side whose records \
                     carry none has its changes timed when a run first sees them, so its edits count as later \
                     than any the other side made before that run, and between two such sides every conflict \
                     falls inside the grace and goes to the tie",
                    grace.as_secs()
                );
                conflict_timing.insert((*name).clone(), note);
            }
        }
        CheckReport {
            config: config.path.clone(),
            links: links.keys().map(|name| (*name).clone()).collect(),
            connectors,
            conflict_timing,
        }
    }
}
