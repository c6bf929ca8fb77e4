//! What fieldsync's tests share, used only as a dev-dependency: a [`World`] of two memory
//! systems and a real state store (a [`TestStore`]: SQLite, or PostgreSQL when
//! `FIELDSYNC_TEST_STORE=postgres`), a [`FakeClock`], [`run_link`] (the one place a test
//! runs the engine), [`Fieldsync`] (the binary as a user runs it), [`readme_blocks`] (the
//! README's examples) and the member schema (`members`, the app's, which the demo shares).

mod binary;
mod clock;
mod readme;
mod run;
mod store;
mod world;

pub use binary::{Fieldsync, RunOutput, json};
pub use clock::{FakeClock, SecondStamps};
/// The member schema, from the app, where the demo uses it too.
pub use fieldsync_app::members;
pub use readme::readme_blocks;
pub use run::{run_link, run_link_watched};
pub use store::{STORE_VARIABLE, StoreKind, TestStore};
pub use world::{Snapshot, Time, World, field_spec, link_spec};
