//! The postgres connector: records in one table of a PostgreSQL database, keyed by a column,
//! optionally read through a view, with an optional modified column for incremental reads
//! and an optional soft-delete column.
//!
//! `PostgresConfig` is what the user writes; `PostgresConnector` is what runs; `values` says
//! how each column type is read and written.

mod config;
mod connector;
mod feed;
mod values;

pub use config::{DEFAULT_BATCH_SIZE, DEFAULT_SCHEMA, PostgresConfig};
pub use connector::PostgresConnector;
pub use fieldsync_postgres::DatabaseUrl;
