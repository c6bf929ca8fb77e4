//! The sqlite connector: records in one table of an SQLite file, keyed by a column, with an
//! optional modified column for incremental reads and an optional soft-delete column.
//!
//! `SqliteConfig` is what the user writes; `SqliteConnector` is what runs.

mod config;
mod connector;

pub use config::{DEFAULT_BATCH_SIZE, ModifiedFormat, SqliteConfig};
pub use connector::{DEFAULT_BUSY_TIMEOUT, SqliteConnector};
