//! `SqliteLocation`: the state store's file, as `state = "sqlite://PATH"` (or a bare path)
//! names it, resolved against the configuration file's directory.

use std::fmt;
use std::path::{Path, PathBuf};

use fieldsync_store::{LocationError, StoreError, StoreLocation};

use crate::SqliteStore;

/// The file of an SQLite state store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SqliteLocation {
    path: PathBuf,
}

impl SqliteLocation {
    /// The state file at `path`, as given.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The state file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl fmt::Display for SqliteLocation {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.path.display().fmt(formatter)
    }
}

impl StoreLocation for SqliteLocation {
    const SCHEMES: &'static [&'static str] = &["sqlite"];
    const EXAMPLE: &'static str = "sqlite://PATH";
    type Store = SqliteStore;

    fn parse(rest: &str, base_dir: &Path) -> Result<Self, LocationError> {
        if rest.is_empty() {
            return Err(LocationError("state has no path; write \"sqlite://PATH\" or a bare path".into()));
        }
        Ok(Self::new(base_dir.join(rest)))
    }

    fn open(&self) -> Result<SqliteStore, StoreError> {
        SqliteStore::open(&self.path)
    }
}
