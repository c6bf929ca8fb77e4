#!/usr/bin/env bash
# Builds fieldsync and its benchmark in release mode, runs every scenario (arguments go to
# fieldsync-bench, e.g. --sizes 10000,100000 --runs 3), writes bench/results.json, prints the
# Markdown table, and draws bench/scaling.png (needs Python with matplotlib).
# `bash bench/run.sh postgres [ARGS]` runs the PostgreSQL scenarios instead (fieldsync-bench
# postgres: a real PostgreSQL from the system's postgresql package) and writes bench/postgres.md.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p fieldsync-cli -p fieldsync-bench
if [[ "${1:-}" == postgres ]]; then
    shift
    target/release/fieldsync-bench postgres "$@" | tee bench/postgres.md
    exit
fi
target/release/fieldsync-bench --out bench/results.json "$@" | tee bench/results.md
if python3 -c "import matplotlib" 2>/dev/null; then
    python3 bench/plot.py bench/results.json bench/scaling.png
else
    echo "matplotlib is missing: pip install matplotlib, then python3 bench/plot.py" >&2
fi
