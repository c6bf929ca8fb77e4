//! The state store on PostgreSQL: fieldsync's tables in one schema of a database (several
//! deployments may share a database, each in its own schema), the schema an append-only list of
//! migrations (`schema.rs`) applied once however many workers open it at once, and leases in a
//! table that fence workers on several machines by the database's clock. Implements
//! `fieldsync_store::StateStore` and passes its conformance suite.

mod context;
mod location;
mod schema;
mod store;

pub use location::PostgresLocation;
pub use store::PostgresStore;
