//! `LinkSpec`: a link as the engine runs it, validated and resolved from the configuration
//! (paths per side, a normaliser per field and side, the policies). The engine never reads
//! the configuration file itself.

use std::time::Duration;

use fieldsync_model::{LinkName, Normaliser, Side};
use fieldsync_store::AuditValues;

/// A pair of things, one per side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SidePair<T> {
    /// The left side's.
    pub left: T,
    /// The right side's.
    pub right: T,
}

impl<T> SidePair<T> {
    /// Builds a pair from its two halves.
    pub fn new(left: T, right: T) -> Self {
        Self { left, right }
    }

    /// The half of one side.
    pub fn get(&self, side: Side) -> &T {
        side.pick(&self.left, &self.right)
    }

    /// The half of one side, mutably.
    pub fn get_mut(&mut self, side: Side) -> &mut T {
        side.pick(&mut self.left, &mut self.right)
    }
}

/// Which way a field flows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Direction {
    /// Edits on either side reach the other.
    #[default]
    Both,
    /// The right side follows the left; edits on the right are reverted.
    LeftToRight,
    /// The left side follows the right; edits on the left are reverted.
    RightToLeft,
}

impl Direction {
    /// The source side of a one-way field.
    pub fn source(self) -> Option<Side> {
        match self {
            Direction::Both => None,
            Direction::LeftToRight => Some(Side::Left),
            Direction::RightToLeft => Some(Side::Right),
        }
    }
}

/// One tracked field of a link.
#[derive(Clone, Debug)]
pub struct FieldSpec {
    /// The field's name (`email`).
    pub name: String,
    /// Where the field lives on each side (a column, a JSON pointer).
    pub paths: SidePair<String>,
    /// How each side's raw values are read and written.
    pub normalisers: SidePair<Normaliser>,
    /// Which way it flows.
    pub direction: Direction,
}

/// Who settles a tie inside the grace window of `last_write_wins`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tie {
    /// This side wins.
    Side(Side),
    /// A person decides.
    Review,
}

/// How a conflict (both sides changed a field to different values) is settled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConflictStrategy {
    /// The later edit wins; edits closer than `grace` are a tie.
    LastWriteWins {
        /// The clock-drift tolerance.
        grace: Duration,
        /// Who settles a tie.
        tie: Tie,
    },
    /// This side always wins.
    Prefer(Side),
    /// A person decides; nobody writes the field until then.
    Review,
}

/// How differing fields of a record seen on both sides with no baseline are settled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FirstSyncStrategy {
    /// This side's values win.
    Prefer(Side),
    /// A person decides each differing field.
    Review,
}

/// In which directions records that exist on one side only are created on the other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Creates {
    /// Both ways.
    Both,
    /// Left records are created on the right.
    LeftToRight,
    /// Right records are created on the left.
    RightToLeft,
    /// Never.
    None,
}

impl Creates {
    /// Whether records may be created on side `target`.
    pub fn allows(self, target: Side) -> bool {
        matches!(
            (self, target),
            (Creates::Both, _) | (Creates::LeftToRight, Side::Right) | (Creates::RightToLeft, Side::Left)
        )
    }
}

/// What happens to a record on one side when it was deleted on the other.
#[derive(Clone, Debug, PartialEq)]
pub enum DeletePolicy {
    /// Delete it there too.
    Propagate,
    /// Set a value at a path (`status = "inactive"`) instead of deleting.
    Soft {
        /// The path on each side.
        paths: SidePair<String>,
        /// The raw value to write.
        value: serde_json::Value,
    },
    /// Leave it; remember the delete so the record is not created again.
    Ignore,
    /// A person decides.
    Review,
}

/// A limit of the guard: a share of one side's records, or a count.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Limit {
    /// A share between 0 and 1.
    Share(f64),
    /// A number of records.
    Count(u64),
}

impl Limit {
    /// Whether `count` out of `total` records exceeds the limit.
    pub fn exceeded(self, count: u64, total: u64) -> bool {
        match self {
            Limit::Share(share) => total > 0 && count as f64 > share * total as f64,
            Limit::Count(limit) => count > limit,
        }
    }
}

/// The guard: a run that would delete or change more than this writes nothing.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Guard {
    /// The most records of one side a run may delete.
    pub max_delete: Limit,
    /// The most records of one side a run may change.
    pub max_change: Limit,
}

impl Default for Guard {
    fn default() -> Self {
        Self { max_delete: Limit::Share(0.10), max_change: Limit::Share(0.50) }
    }
}

/// How delivery retries transient failures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts before an entry is dead.
    pub attempts: u32,
    /// The first backoff.
    pub initial: Duration,
    /// The longest backoff.
    pub max: Duration,
    /// A run waits for retries due within this long before it returns; later ones are left
    /// to the next run or the service's timer.
    pub wait_in_run: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 8,
            initial: Duration::from_secs(1),
            max: Duration::from_secs(3600),
            wait_in_run: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The backoff after `attempts` failed attempts: exponential, capped, with up to a
    /// quarter of jitter either way (`jitter` in 0..1).
    pub fn backoff(&self, attempts: u32, jitter: f64) -> Duration {
        let exponent = attempts.saturating_sub(1).min(30);
        let base = self.initial.saturating_mul(1u32 << exponent).min(self.max);
        base.mul_f64(0.75 + jitter.clamp(0.0, 1.0) * 0.5)
    }
}

/// A link as the engine runs it.
#[derive(Clone, Debug)]
pub struct LinkSpec {
    /// Its name.
    pub name: LinkName,
    /// The path of the link key on each side.
    pub key: SidePair<String>,
    /// The tracked fields, in configuration order.
    pub fields: Vec<FieldSpec>,
    /// How conflicts are settled.
    pub conflicts: ConflictStrategy,
    /// How a first sync settles differing fields.
    pub first_sync: FirstSyncStrategy,
    /// Where records may be created.
    pub creates: Creates,
    /// What deletes do.
    pub deletes: DeletePolicy,
    /// The guard.
    pub guard: Guard,
    /// How often a side is read in full even when it can be read incrementally.
    pub full_scan_every: Duration,
    /// How far before the cursor each side's incremental read starts, so that equal
    /// timestamps and late commits are never missed.
    pub overlap: SidePair<Duration>,
    /// How delivery retries.
    pub retry: RetryPolicy,
    /// What the history keeps of the values it tells of (`audit.values`): every audit entry
    /// is made to keep only that before it is stored (`AuditValues::keep`).
    pub audit: AuditValues,
}

impl LinkSpec {
    /// The field names, in order.
    pub fn field_names(&self) -> Vec<String> {
        self.fields.iter().map(|field| field.name.clone()).collect()
    }

    /// A fingerprint of one side's normalisers (`Normaliser::fingerprint`).
    pub fn fingerprint(&self, side: Side) -> u64 {
        Normaliser::fingerprint(self.fields.iter().map(|field| field.normalisers.get(side)))
    }

    /// The paths read on one side: every field, then the link key (last, so that taking it
    /// out of a record's values moves nothing).
    pub fn read_paths(&self, side: Side) -> Vec<String> {
        self.fields
            .iter()
            .map(|field| field.paths.get(side).clone())
            .chain(std::iter::once(self.key.get(side).clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        let retry = RetryPolicy {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
            ..Default::default()
        };
        assert_eq!(retry.backoff(1, 0.5), Duration::from_secs(1));
        assert_eq!(retry.backoff(3, 0.5), Duration::from_secs(4));
        assert_eq!(retry.backoff(20, 0.5), Duration::from_secs(60));
        assert_eq!(retry.backoff(3, 0.0), Duration::from_secs(3));
        assert_eq!(retry.backoff(3, 1.0), Duration::from_secs(5));
    }

    #[test]
    fn guard_limits() {
        assert!(Limit::Share(0.1).exceeded(11, 100));
        assert!(!Limit::Share(0.1).exceeded(10, 100));
        assert!(!Limit::Share(0.1).exceeded(5, 0));
        assert!(Limit::Count(3).exceeded(4, 1000));
    }
}
