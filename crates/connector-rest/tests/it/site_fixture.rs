//! What the conformance suite's fixtures on real sites (`django`, `wordpress`) share: one site
//! for the whole suite, emptied and filled again for each property, and the stamps of its
//! edits.

use fieldsync_test_support::SecondStamps;
use jiff::{SignedDuration, Timestamp};

/// One real site for the whole conformance suite, emptied and filled again for each property.
/// The sites ask for or keep modification times to the second, so each edit is stamped a whole
/// second past everything before it.
pub(crate) struct SiteFixture<S> {
    /// The site.
    pub(crate) site: S,
    clock: SecondStamps,
}

impl<S> SiteFixture<S> {
    /// A fixture on `site`, its stamps starting now.
    pub(crate) fn new(site: S) -> Self {
        Self { site, clock: SecondStamps::new() }
    }

    /// The stamp of an edit: a whole second past every stamp before it.
    pub(crate) fn edit_stamp(&mut self) -> Timestamp {
        self.clock.stamp()
    }

    /// The stamp of the records a property starts from: a second before every edit to come.
    pub(crate) fn fill_stamp(&mut self) -> Timestamp {
        self.clock.stamp() - SignedDuration::from_secs(1)
    }
}
