//! fieldsync's application layer: the configuration file read into a validated `Config`
//! (whose links are the engine's `LinkSpec`s), the registry that opens each configured
//! connector as an `AnyConnector`, and the use cases over both (`Workspace`).
//!
//! Architecture Invariant: only this crate knows connectors by kind; the engine sees a `Connector`.

pub mod config;
pub mod members;
pub mod registry;
pub mod workspace;

pub use config::{
    Config, ConfigError, ConnectorConfig, ConnectorKind, LinkConfig, Location, Problem, StateLocation, load,
    load_offline, parse, parse_with_env,
};
pub use registry::{AnyConnector, AnyStore, open_connector, open_store};
pub use workspace::{Workspace, WorkspaceError};
