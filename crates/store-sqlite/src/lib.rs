//! The state store on SQLite: one file in WAL mode, the schema an append-only list of
//! migrations (`schema.rs`) applied in one transaction, and a lock file per link. Implements
//! `fieldsync_store::StateStore` and passes its conformance suite.

mod checkpoint;
mod context;
mod location;
mod schema;
mod store;

pub use location::SqliteLocation;
pub use store::{SqliteLock, SqliteStore};
