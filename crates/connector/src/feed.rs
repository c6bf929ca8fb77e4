//! `ChangeFeed`: notices a system sends as its records change (a PostgreSQL `NOTIFY`, a
//! changes feed), which `fieldsync serve` listens to so that a link runs when its records
//! change rather than at its next slot. A connector kind declares one through
//! `ConnectorSettings::change_feed`; the service knows no kind by name.

use std::future::Future;
use std::pin::Pin;

use crate::ConnectorError;

/// A boxed future that may move between threads.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What opens a connector's change feed (again, after it ended).
pub type FeedOpener =
    Box<dyn Fn() -> BoxFuture<'static, Result<Box<dyn ChangeFeed>, ConnectorError>> + Send + Sync>;

/// An open feed of change notices.
pub trait ChangeFeed: Send {
    /// The next notice: the ids of the records it names (empty when it names none: something
    /// changed), or `None` once the feed ended (its connection dropped), after which notices
    /// may have been missed and the feed is opened again.
    fn next(&mut self) -> BoxFuture<'_, Option<Vec<String>>>;
}
