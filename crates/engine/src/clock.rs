//! The time, injected: `Clock` (now, and a way to wait) and `SystemClock`, the real one, so
//! that tests run retries and backoffs with a fake clock.

use std::future::Future;
use std::time::Duration;

use jiff::Timestamp;

/// The time, and a way to wait; injected so that tests can run retries with a fake clock.
pub trait Clock {
    /// Now.
    fn now(&self) -> Timestamp;
    /// Waits for `duration`; `Send`, so that a run's future is.
    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send;
}

/// The real clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }

    async fn sleep(&self, duration: Duration) {
        tokio::time::sleep(duration).await;
    }
}
