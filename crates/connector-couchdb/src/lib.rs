//! The couchdb connector: the documents of one kind in a database of a server speaking
//! CouchDB's replication API (CouchDB, pouchdb-server, Couchbase Sync Gateway). Full reads page
//! through `_all_docs` and give the update sequence taken before them; incremental reads follow
//! `_changes` from the sequence the last read reached, deletes included; writes go whole, with
//! their `_rev`, through `_bulk_docs`, so that a document changed since it was read is not
//! overwritten and fields fieldsync does not track (and attachments) stay.
//!
//! `CouchConfig` is what the user writes; `CouchConnector` is what runs.

mod config;
mod connector;
mod http;
mod pointer;
mod selector;

pub use config::{CouchConfig, DEFAULT_BATCH_SIZE, ServerUrl};
pub use connector::CouchConnector;
pub use fieldsync_connector_rest::Auth;
