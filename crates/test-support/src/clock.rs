//! A clock the test controls: `sleep` moves it forward at once, so backoffs and waits cost
//! nothing. It may carry two memory systems whose own clocks follow it, each at an offset.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use fieldsync_connector::MemorySystem;
use fieldsync_engine::{Clock, SidePair};
use fieldsync_model::Side;
use jiff::{SignedDuration, Timestamp};

/// The engine's clock in a test; clones share one time.
#[derive(Clone, Debug)]
pub struct FakeClock(Arc<Mutex<ClockState>>);

#[derive(Debug)]
struct ClockState {
    /// True time.
    now: Timestamp,
    /// How long every reading of the clock takes (a slow system); zero by default.
    latency: Duration,
    /// Systems whose clocks follow this one, each at its offset from true time.
    systems: Option<SidePair<MemorySystem>>,
    offsets: SidePair<SignedDuration>,
}

impl ClockState {
    fn sync(&self) {
        if let Some(systems) = &self.systems {
            for side in Side::BOTH {
                systems.get(side).set_now(self.now + *self.offsets.get(side));
            }
        }
    }

    fn advance(&mut self, duration: Duration) {
        self.now += duration;
        self.sync();
    }
}

impl FakeClock {
    /// A clock at `now` that moves only when told, or when the engine sleeps.
    pub fn new(now: Timestamp) -> Self {
        Self(Arc::new(Mutex::new(ClockState {
            now,
            latency: Duration::ZERO,
            systems: None,
            offsets: SidePair::new(SignedDuration::ZERO, SignedDuration::ZERO),
        })))
    }

    /// A clock at `now` that `systems` follow: whenever it moves (by [`FakeClock::set`],
    /// [`FakeClock::advance`] or the engine's sleep), their clocks move with it.
    pub fn followed_by(now: Timestamp, systems: SidePair<MemorySystem>) -> Self {
        let clock = Self::new(now);
        {
            let mut state = clock.state();
            state.systems = Some(systems);
            state.sync();
        }
        clock
    }

    fn state(&self) -> MutexGuard<'_, ClockState> {
        // A test that panicked while holding the lock has failed already; its time is still good.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// True time, without the latency a reading through [`Clock::now`] costs.
    pub fn time(&self) -> Timestamp {
        self.state().now
    }

    /// Sets true time.
    pub fn set(&self, now: Timestamp) {
        let mut state = self.state();
        state.now = now;
        state.sync();
    }

    /// Moves true time forward.
    pub fn advance(&self, duration: Duration) {
        self.state().advance(duration);
    }

    /// How far one side's system clock is from true time.
    pub fn offset(&self, side: Side) -> SignedDuration {
        *self.state().offsets.get(side)
    }

    /// Sets how far one side's system clock is from true time.
    pub fn set_offset(&self, side: Side, offset: SignedDuration) {
        let mut state = self.state();
        *state.offsets.get_mut(side) = offset;
        state.sync();
    }

    /// Makes every reading of the clock take `latency` (time passes as the engine asks).
    pub fn set_latency(&self, latency: Duration) {
        self.state().latency = latency;
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Timestamp {
        let mut state = self.state();
        let latency = state.latency;
        state.advance(latency);
        state.now
    }

    async fn sleep(&self, duration: Duration) {
        self.advance(duration);
    }
}

/// Stamps for the edits a test makes on a real system that keeps whole seconds: each one a
/// whole second past every stamp before it, and never before now.
#[derive(Clone, Copy, Debug)]
pub struct SecondStamps(Timestamp);

impl SecondStamps {
    /// Stamps from now on.
    pub fn new() -> Self {
        Self(Timestamp::now())
    }

    /// The next stamp.
    ///
    /// # Panics
    ///
    /// Only past the year 9999.
    pub fn stamp(&mut self) -> Timestamp {
        let now = Timestamp::now().max(self.0);
        self.0 =
            Timestamp::from_second(now.as_second()).expect("a whole second") + SignedDuration::from_secs(1);
        self.0
    }
}

impl Default for SecondStamps {
    fn default() -> Self {
        Self::new()
    }
}
