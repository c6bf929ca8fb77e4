//! The guard, a pure function: whether a run's plan deletes or changes more of one side's
//! records than the link's limits allow (`max_delete`, `max_change`), weighed against the
//! live baselines there were before the run. Key function: `guard_stop`.

use fieldsync_model::Side;

use crate::report::{GuardKind, GuardStop, ReadMode, RunStats};
use crate::spec::{Guard, Limit, SidePair};

/// What a run's plan comes to, as the guard weighs it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Planned<'a> {
    /// The run's statistics: records read, updates and deletes planned, per side.
    pub stats: &'a RunStats,
    /// Per side, the records with a baseline that a full read did not list.
    pub vanished: SidePair<u64>,
    /// How each side was read.
    pub modes: SidePair<ReadMode>,
}

/// Why the run must stop, when `planned` exceeds `limits` on a side (deletes before changes,
/// the left side first); `None` within them or when `force` overrides the guard. `baselines`
/// is the number of live baselines before the run.
pub(crate) fn guard_stop(
    planned: Planned<'_>,
    baselines: u64,
    limits: Guard,
    force: bool,
) -> Option<GuardStop> {
    if force {
        return None;
    }
    for side in Side::BOTH {
        let stats = planned.stats.side(side);
        let deletes = stats.deletes_planned.max(*planned.vanished.get(side));
        // Deletes touch only records with a baseline; changes also touch records seen on both
        // sides for the first time, so a side read in full weighs them against all the
        // records it listed (a first sync could otherwise read "880 of 338").
        let listed = if *planned.modes.get(side) == ReadMode::Full { stats.read } else { 0 };
        let checks = [
            (GuardKind::Delete, deletes, limits.max_delete, baselines),
            (GuardKind::Change, stats.updates_planned, limits.max_change, baselines.max(listed)),
        ];
        for (kind, count, limit, total) in checks {
            if limit.exceeded(count, total) {
                let limit = match limit {
                    Limit::Share(share) => format!("{}%", share * 100.0),
                    Limit::Count(count) => count.to_string(),
                };
                return Some(GuardStop { side, kind, count, total, limit });
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::SideStats;

    const FULL: SidePair<ReadMode> = SidePair { left: ReadMode::Full, right: ReadMode::Full };
    const INCREMENTAL: SidePair<ReadMode> =
        SidePair { left: ReadMode::Incremental, right: ReadMode::Incremental };

    fn limits(max_delete: Limit, max_change: Limit) -> Guard {
        Guard { max_delete, max_change }
    }

    /// Statistics with `read` records read and `updates` and `deletes` planned on the right.
    fn right(read: u64, updates: u64, deletes: u64) -> RunStats {
        let side =
            SideStats { read, updates_planned: updates, deletes_planned: deletes, ..SideStats::default() };
        RunStats { right: side, ..RunStats::default() }
    }

    fn stop(
        stats: &RunStats,
        vanished: SidePair<u64>,
        modes: SidePair<ReadMode>,
        total: u64,
        guard: Guard,
    ) -> Option<GuardStop> {
        guard_stop(Planned { stats, vanished, modes }, total, guard, false)
    }

    const NONE_VANISHED: SidePair<u64> = SidePair { left: 0, right: 0 };

    #[test]
    fn a_share_is_exceeded_only_above_it() {
        let guard = limits(Limit::Share(0.10), Limit::Share(0.50));
        // Exactly at the limit: 10 of 100 deletes, 50 of 100 changes.
        assert_eq!(stop(&right(0, 50, 10), NONE_VANISHED, INCREMENTAL, 100, guard), None);
        let over = stop(&right(0, 0, 11), NONE_VANISHED, INCREMENTAL, 100, guard).unwrap();
        assert_eq!(
            over,
            GuardStop {
                side: Side::Right,
                kind: GuardKind::Delete,
                count: 11,
                total: 100,
                limit: "10%".into()
            }
        );
        let over = stop(&right(0, 51, 0), NONE_VANISHED, INCREMENTAL, 100, guard).unwrap();
        assert_eq!((over.kind, over.count, over.limit.as_str()), (GuardKind::Change, 51, "50%"));
    }

    #[test]
    fn a_count_is_exceeded_only_above_it_whatever_the_total() {
        let guard = limits(Limit::Count(3), Limit::Count(5));
        assert_eq!(stop(&right(0, 5, 3), NONE_VANISHED, INCREMENTAL, 1_000_000, guard), None);
        let over = stop(&right(0, 0, 4), NONE_VANISHED, INCREMENTAL, 1_000_000, guard).unwrap();
        assert_eq!((over.kind, over.count, over.limit.as_str()), (GuardKind::Delete, 4, "3"));
        let over = stop(&right(0, 6, 0), NONE_VANISHED, INCREMENTAL, 0, guard).unwrap();
        assert_eq!((over.kind, over.count, over.total), (GuardKind::Change, 6, 0));
    }

    #[test]
    fn an_empty_store_stops_no_share_and_a_full_read_weighs_changes_against_what_it_listed() {
        let guard = limits(Limit::Share(0.10), Limit::Share(0.50));
        // A first sync: no baselines, so no share of them can be exceeded...
        assert_eq!(stop(&right(0, 880, 0), NONE_VANISHED, INCREMENTAL, 0, guard), None);
        // ...but a side read in full weighs its changes against the records it listed.
        let over = stop(&right(1_000, 880, 0), NONE_VANISHED, FULL, 0, guard).unwrap();
        assert_eq!((over.kind, over.count, over.total), (GuardKind::Change, 880, 1_000));
        assert_eq!(stop(&right(2_000, 880, 0), NONE_VANISHED, FULL, 0, guard), None);
    }

    #[test]
    fn vanished_records_count_as_deletes_and_the_left_side_is_weighed_first() {
        let guard = limits(Limit::Share(0.10), Limit::Share(0.50));
        let vanished = SidePair::new(20, 30);
        let over = stop(&RunStats::default(), vanished, FULL, 100, guard).unwrap();
        assert_eq!((over.side, over.kind, over.count), (Side::Left, GuardKind::Delete, 20));
    }

    #[test]
    fn force_overrides_every_limit() {
        let guard = limits(Limit::Count(0), Limit::Count(0));
        let stats = right(10, 10, 10);
        let planned = Planned { stats: &stats, vanished: SidePair::new(5, 5), modes: FULL };
        assert!(guard_stop(planned, 10, guard, false).is_some());
        assert_eq!(guard_stop(planned, 10, guard, true), None);
    }
}
