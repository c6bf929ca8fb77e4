//! What both stores know of the kinds of row they list, page and find by id (outbox entries,
//! reviews, runs): the table each lives in, what it is called in errors, and its id.

use crate::types::{OutboxEntry, Review, RunRow};

/// A kind of row a store lists, pages and finds by id; how rows of it are read is the
/// store's own.
pub trait Listing {
    /// The table the rows live in.
    const TABLE: &'static str;
    /// What one row is called when it is not found.
    const ONE: &'static str;
    /// What reading rows of it is called in an error.
    const READING: &'static str;

    /// The row's id.
    fn id(&self) -> i64;
}

impl Listing for OutboxEntry {
    const TABLE: &'static str = "outbox";
    const ONE: &'static str = "outbox entry";
    const READING: &'static str = "reading the outbox";

    fn id(&self) -> i64 {
        self.id
    }
}

impl Listing for Review {
    const TABLE: &'static str = "reviews";
    const ONE: &'static str = "review";
    const READING: &'static str = "reading reviews";

    fn id(&self) -> i64 {
        self.id
    }
}

impl Listing for RunRow {
    const TABLE: &'static str = "runs";
    const ONE: &'static str = "run";
    const READING: &'static str = "reading the run history";

    fn id(&self) -> i64 {
        self.id.0
    }
}
