//! The `fieldsync` binary end to end, as a user runs it, in one test binary: on SQLite files
//! (`cli`), killed at any instant (`crash`), against real Django and WordPress sites (`django`,
//! `wordpress`) and through web admins without an API (`browser`, `browser_django`).

mod browser;
mod browser_django;
mod cli;
mod crash;
mod django;
mod serve;
mod support;
mod wordpress;
