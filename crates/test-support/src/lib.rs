//! What fieldsync's tests share, used only as a dev-dependency: a [`World`] of two memory
//! systems and a real SQLite state store, a [`FakeClock`], [`run_link`] (the one place a test
//! runs the engine), [`Fieldsync`] (the binary as a user runs it) and the member schema
//! (`members`, the app's, which the demo shares).

mod binary;
mod clock;
mod run;
mod world;

pub use binary::{Fieldsync, RunOutput, json};
pub use clock::{FakeClock, SecondStamps};
/// The member schema, from the app, where the demo uses it too.
pub use fieldsync_app::members;
pub use run::{run_link, run_link_watched};
pub use world::{Snapshot, Time, World, field_spec, link_spec};
