//! The `fieldsync` binary end to end, as a user runs it, in one test binary: on SQLite files
//! (`cli`), killed at any instant (`crash`), against real Django and WordPress sites (`django`,
//! `wordpress`), with PostgreSQL as a side and as the state store (`postgres`), and through web
//! admins without an API (`browser`, `browser_django`), against a CouchDB API (`couchdb`), the
//! dashboard of `fieldsync serve` in a real browser (`dashboard`), one link for each of a
//! federation's clubs (`organisations`), and personal data hashed in the history and erased from
//! the state store (`purge`).

mod browser;
mod browser_django;
mod cli;
mod couchdb;
mod crash;
mod dashboard;
mod django;
mod fleet;
mod organisations;
mod postgres;
mod purge;
mod serve;
mod support;
mod wordpress;
