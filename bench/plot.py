#!/usr/bin/env python3
"""Draws bench/scaling.png from the results `fieldsync-bench` wrote (bench/results.json).

Left: wall time against the number of members, per scenario, with the raw SQLite floor of
each scenario dashed. Right: wall time against the number of changes per side, incremental
and full, at each size.

    pip install matplotlib && python3 bench/plot.py [results.json] [out.png]
"""

import json
import statistics
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).resolve().parent


def median_seconds(samples):
    return statistics.median(sample["wall_ms"] for sample in samples) / 1000.0


def main():
    results_path = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "results.json"
    out_path = Path(sys.argv[2]) if len(sys.argv) > 2 else HERE / "scaling.png"
    results = json.loads(results_path.read_text())
    outcomes = results["outcomes"]

    figure, (by_size, by_changes) = plt.subplots(1, 2, figsize=(13, 5.5))

    scenarios = ["initial_create", "initial_equal", "nochange_full", "nochange_incremental"]
    for scenario in scenarios:
        rows = sorted((o for o in outcomes if o["scenario"] == scenario), key=lambda o: o["members"])
        if not rows:
            continue
        sizes = [row["members"] for row in rows]
        line = by_size.plot(sizes, [median_seconds(row["engine"]) for row in rows], marker="o", label=scenario)
        by_size.plot(
            sizes,
            [median_seconds(row["floor"]) for row in rows],
            linestyle="--",
            color=line[0].get_color(),
            alpha=0.6,
        )
    by_size.set_xscale("log")
    by_size.set_yscale("log")
    by_size.set_xlabel("members (N)")
    by_size.set_ylabel("wall time, s (median)")
    by_size.set_title("Cost against N (dashed: raw SQLite floor)")
    by_size.grid(True, which="both", alpha=0.3)
    by_size.legend()

    deltas = [o for o in outcomes if o["scenario"].startswith("delta_")]
    for members in sorted({o["members"] for o in deltas}):
        for scenario, style in (("delta_incremental", "-"), ("delta_full", ":")):
            rows = sorted(
                (o for o in deltas if o["members"] == members and o["scenario"] == scenario),
                key=lambda o: o["changes_per_side"],
            )
            if not rows:
                continue
            by_changes.plot(
                [row["changes_per_side"] for row in rows],
                [median_seconds(row["engine"]) for row in rows],
                marker="o",
                linestyle=style,
                label=f"{scenario.removeprefix('delta_')}, N = {members:,}",
            )
    by_changes.set_xscale("log")
    by_changes.set_yscale("log")
    by_changes.set_xlabel("changes per side (10 % conflicting)")
    by_changes.set_ylabel("wall time, s (median)")
    by_changes.set_title("Cost against the number of changes")
    by_changes.grid(True, which="both", alpha=0.3)
    by_changes.legend()

    machine = results.get("machine", {})
    figure.suptitle(
        f"fieldsync-bench, {machine.get('cores', '?')} cores, {machine.get('cpu', '')}".strip(", "),
        fontsize=10,
    )
    figure.tight_layout()
    figure.savefig(out_path, dpi=110)
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
