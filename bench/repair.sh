#!/usr/bin/env bash
# Anti-entropy cost on a local 3-node cluster: n3 misses 10% of 1,000,000
# keys (1 KiB values) and one ring run repairs it while foreground PUTs run;
# then the cost of verifying the equal replicas. Needs ~6 GB of free disk.
# BENCH_REPAIR_LIMIT=<bytes/s> runs it under a repair bandwidth limit.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
./target/release/hearsay bench --scenario repair --keys "${BENCH_KEYS:-1000000}" --missing-percent 10 --value-size 1024 --duration "${BENCH_SECS:-10}" --repair-max-bytes-per-sec "${BENCH_REPAIR_LIMIT:-0}"
