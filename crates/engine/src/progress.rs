//! How far a run got, told as it goes: `Progress`, which the command line draws as bars and a
//! service could stream, and `NoProgress`, which shows nothing.

/// Where a run tells how far it got; the CLI draws progress bars from it.
pub trait Progress {
    /// A new phase starts, with its size if known.
    fn phase(&self, _name: &str, _total: Option<u64>) {}
    /// `count` more units of the current phase are done.
    fn advance(&self, _count: u64) {}
}

/// A `Progress` that shows nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}
