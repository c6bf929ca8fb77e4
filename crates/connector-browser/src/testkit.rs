//! For tests (the `testkit` feature): the fixture member-administration site the browser
//! connector's tests and the command line's browser test run against.

pub mod site;
