//! `StoreLocation`: where one kind of state store lives, read from the configuration's `state`
//! (`sqlite://PATH`), and how to open it. Each store crate implements it for its own location
//! type; the app's list of store kinds wires them, as it wires connector kinds.

use std::fmt;
use std::path::Path;

use crate::{StateStore, StoreError};

/// Where a state store of one kind lives. Its `Display` is how messages name the store, and
/// never shows a password.
pub trait StoreLocation: Clone + fmt::Debug + fmt::Display + PartialEq + Send + Sync + 'static {
    /// The URL schemes that name this kind in `state = "SCHEME://…"`; the first is the one
    /// messages suggest.
    const SCHEMES: &'static [&'static str];

    /// How to write a location of this kind, for messages (`"sqlite://PATH"`).
    const EXAMPLE: &'static str;

    /// The store this location opens.
    type Store: StateStore + Send;

    /// Reads what follows `SCHEME://` (for the default kind, also a whole `state` written
    /// without a scheme), resolving a relative file path against `base_dir`, the
    /// configuration file's directory. Touches nothing.
    ///
    /// # Errors
    ///
    /// Says what is wrong with it, without repeating a password.
    fn parse(rest: &str, base_dir: &Path) -> Result<Self, LocationError>;

    /// Opens the store, creating it or bringing its schema up to date.
    ///
    /// # Errors
    ///
    /// Fails when the store cannot be reached, created or migrated, or was written by a newer
    /// fieldsync.
    fn open(&self) -> Result<Self::Store, StoreError>;
}

/// A `state` that names no store of its kind: what is wrong, and how to write it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LocationError(pub String);
