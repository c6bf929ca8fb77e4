//! The csv connector: records in a CSV file with a header row, one record per line, keyed
//! by a column; read whole, and rewritten atomically (temporary file and rename) on writes.
//!
//! `CsvConfig` is what the user writes; `CsvConnector` is what runs.

mod config;
mod connector;

pub use config::CsvConfig;
pub use connector::CsvConnector;
