//! The vocabulary every fieldsync crate shares: records, fields, values, sides and the
//! normalisers that turn what a system stores into one canonical value per field type.
//!
//! This crate does no I/O and knows nothing of connectors, state stores or runs.

mod ids;
mod normalise;
mod phone;
mod value;

pub use ids::{LinkName, RecordId, RecordKey, RunId, Side};
pub use normalise::{FieldType, Invalid, NORMALISER_VERSION, NormaliseError, Normaliser, Reading};
pub use value::{RecordDigest, Value, digest_raw, digest_values};
