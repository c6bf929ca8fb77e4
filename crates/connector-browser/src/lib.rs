//! The browser connector: a member admin that has no API, kept in step by driving its web
//! forms in headless Chromium through WebDriver, as carefully as a person would.

mod browser;
mod config;
mod connector;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use browser::{Browser, BrowserOptions};
pub use config::{BrowserConfig, Field, FieldKind, Listing, Login, MemberPage, Secret};
pub use connector::BrowserConnector;
